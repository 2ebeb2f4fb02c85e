"""Every UI string of ChatLab, in English and 中文, in one place.

STRINGS maps a key ("<tab>.<name>") to its (English, 中文) pair. Static text (labels, help, buttons, Markdown) goes
through `T(key)`: Gradio's I18n translates it in the browser from the browser's language. Text built on the server
(warnings, errors, stats lines with numbers) goes through `tr(request, key, **fmt)`, which picks the language from the
request's Accept-Language header.
"""
from __future__ import annotations

import gradio as gr

STRINGS: dict[str, tuple[str, str]] = {
    # --- app strings (start) ---
    "app.title": ("# ChatLab — see how ChatGPT works", "# ChatLab —— 看懂 ChatGPT 是怎么工作的"),
    "app.intro": (
        "Hands-on, on real models running on this machine: how text becomes tokens, how a chat model picks the next "
        "token, and how neural networks learn.",
        "在本机运行的真实模型上动手体验：文本如何变成词元（token），聊天模型如何挑选下一个词元，神经网络又是如何学习的。",
    ),
    "app.error": ("Something went wrong: {error}", "出错了：{error}"),
    # --- app strings (end) ---
    # --- tokens strings (start) ---
    "tokens.tab": ("Tokens", "词元 Tokens"),
    "tokens.intro": (
        "ChatGPT never sees letters: it sees **tokens**, pieces of text from a fixed vocabulary learned with byte-pair "
        "encoding (BPE). Type below and watch the real OpenAI tokenizers (tiktoken, offline) cut your text, live. "
        "Billing, context windows and speed are all counted in tokens.",
        "ChatGPT 看到的不是字母，而是**词元（token）**：来自一个固定词表的文本片段，词表由字节对编码（BPE）学习得到。"
        "在下面输入文字，实时观察 OpenAI 真实的分词器（tiktoken，离线运行）如何切分你的文本。计费、上下文窗口和速度都按词元计算。",
    ),
    "tokens.text": ("Text", "文本"),
    "tokens.text_placeholder": ("Type or paste any text…", "输入或粘贴任意文本……"),
    "tokens.model": ("Model or encoding", "模型或编码"),
    "tokens.model_info": (
        "Any model name tiktoken knows (gpt-4o-mini, gpt-3.5-turbo-0125, gpt-5…) or an encoding name.",
        "tiktoken 认识的任何模型名（gpt-4o-mini、gpt-3.5-turbo-0125、gpt-5……）或编码名。",
    ),
    "tokens.show_ids": ("Show token ids", "显示词元 id"),
    "tokens.show_whitespace": ("Show whitespace (· space, → tab, ↵ newline)", "显示空白字符（· 空格，→ 制表符，↵ 换行）"),
    "tokens.special": (
        "Treat <|endoftext|> etc. as special tokens",
        "把 <|endoftext|> 等当作特殊词元",
    ),
    "tokens.special_info": (
        "Off (default): such text in a user's message is ordinary text, as the API treats it.",
        "关闭（默认）：用户消息中的这类文字按普通文本计数，与 API 的处理一致。",
    ),
    "tokens.examples": ("Examples", "示例"),
    "tokens.headline": (
        "**{tokens:,} tokens** · {characters:,} characters · {encoding} ({models})",
        "**{tokens:,} 个词元** · {characters:,} 个字符 · {encoding}（{models}）",
    ),
    "tokens.pane": ("{encoding} · {tokens:,} tokens", "{encoding} · {tokens:,} 个词元"),
    "tokens.capped": (
        "Showing the first {shown:,} of {total:,} tokens; the counts cover all of the text.",
        "仅显示前 {shown:,} 个词元（共 {total:,} 个）；计数覆盖全部文本。",
    ),
    "tokens.select_hint": (
        "Click a token to see its ids and bytes. A character split over several tokens (common for Chinese and emoji) "
        "is shown as one span that lists all its ids.",
        "点击一个词元查看它的 id 和字节。被拆成多个词元的字符（中文和 emoji 常见）显示为一个整体，并列出全部 id。",
    ),
    "tokens.selected": (
        "**{text}** — ids {ids} — bytes `{bytes}`{partial}",
        "**{text}** —— id {ids} —— 字节 `{bytes}`{partial}",
    ),
    "tokens.selected_partial": (
        " — one character whose bytes are split over {n} tokens; alone, each would print as �",
        " —— 一个字符的字节被拆进了 {n} 个词元；单独显示每个都会变成 �",
    ),
    "tokens.compare": ("The same text in every encoding", "同一段文本在各种编码下"),
    "tokens.col_encoding": ("Encoding", "编码"),
    "tokens.col_models": ("Used by", "使用它的模型"),
    "tokens.col_tokens": ("Tokens", "词元数"),
    "tokens.col_characters": ("Characters", "字符数"),
    "tokens.col_ratio": ("Characters per token", "每个词元的字符数"),
    "tokens.chat_mode": ("Chat messages: what a chat request costs", "聊天消息：一次聊天请求消耗多少词元"),
    "tokens.chat_rule": (
        "OpenAI bills a chat request's prompt as: for every message, **3 tokens** of framing "
        "(`<|start|>role<|message|>…<|end|>`) plus the tokens of its role, content and name; **+1** when a message "
        "has a `name`; and **+3** that prime the assistant's reply. (gpt-3.5-turbo-0301 used 4 per message and −1 "
        "per name.) Edit the messages as JSON: a list of {\"role\", \"content\", optional \"name\"}.",
        "OpenAI 对聊天请求提示词的计费规则：每条消息有 **3 个词元**的框架开销（`<|start|>角色<|message|>…<|end|>`），"
        "再加上其 role、content 和 name 的词元；消息带 `name` 时 **+1**；另有 **+3** 个词元用于引导助手回复。"
        "（gpt-3.5-turbo-0301 为每条消息 4 个、每个 name −1。）以 JSON 编辑消息：由 {\"role\", \"content\", 可选 \"name\"} 组成的列表。",
    ),
    "tokens.messages": ("Messages (JSON)", "消息（JSON）"),
    "tokens.chat_count": (
        "**{tokens:,} prompt tokens** for {n} messages with {model} ({encoding})",
        "使用 {model}（{encoding}），{n} 条消息共 **{tokens:,} 个提示词元**",
    ),
    "tokens.bad_json": ("The messages are not valid JSON: {error}", "消息不是合法的 JSON：{error}"),
    "tokens.bad_messages": ("Messages must be a JSON list of objects with a role and content: {error}",
                            "消息必须是 JSON 列表，每项含 role 和 content：{error}"),
    "tokens.empty": ("0 tokens — type some text above.", "0 个词元 —— 请在上方输入文本。"),
    # --- tokens strings (end) ---
    # --- chat strings (start) ---
    "chat.tab": ("Chat", "聊天 Chat"),
    "chat.intro": (
        "A real instruct model (by default **SmolLM2-135M-Instruct**, 135 M parameters) runs on this machine. Each turn, the whole "
        "conversation is rendered into one prompt with the model's chat template (right) and the model predicts the "
        "reply one token at a time: that is how a chat model \"remembers\". This small model answers best in English.",
        "一个真实的指令模型（默认是 **SmolLM2-135M-Instruct**，1.35 亿参数）正在本机运行。每一轮，整段对话都会用模型的聊天模板渲染成一个提示词（右侧），"
        "模型再逐个词元地预测回复：这就是聊天模型“记住”上下文的方式。这个小模型用英文回答效果最好。",
    ),
    "chat.placeholder": ("Ask something… (English works best)", "问点什么……（英文效果最好）"),
    "chat.settings": ("Generation settings", "生成设置"),
    "chat.system": ("System prompt", "系统提示词"),
    "chat.system_default": ("You are a helpful AI assistant named SmolLM, trained by Hugging Face",
                            "You are a helpful AI assistant named SmolLM, trained by Hugging Face"),
    "chat.temperature": ("Temperature", "温度"),
    "chat.temperature_info": ("0 = always the most likely token (greedy); higher = more varied.",
                              "0 = 总选最可能的词元（贪心）；越高越多样。"),
    "chat.top_p": ("Top-p", "Top-p"),
    "chat.top_p_info": ("Sample only from the most likely tokens that add up to p.", "只从累计概率达到 p 的最可能词元中采样。"),
    "chat.top_k": ("Top-k", "Top-k"),
    "chat.top_k_info": ("Sample only from the k most likely tokens (0 = off).", "只从最可能的 k 个词元中采样（0 = 关闭）。"),
    "chat.max_new_tokens": ("Max new tokens", "最大新词元数"),
    "chat.repetition_penalty": ("Repetition penalty", "重复惩罚"),
    "chat.seed": ("Seed (-1 = random)", "随机种子（-1 = 随机）"),
    "chat.prompt_panel": ("The prompt the model sees", "模型看到的提示词"),
    "chat.prompt_help": (
        "Exactly what goes into the model this turn: the chat template over the whole conversation, special tokens "
        "highlighted. It grows every turn; when it would overflow the context, the oldest turns are dropped.",
        "这一轮真正输入模型的内容：整段对话经聊天模板渲染的结果，特殊词元已高亮。它每轮都会变长；快要超出上下文时，最早的几轮会被丢弃。",
    ),
    "chat.prompt_tokens": ("{tokens:,} prompt tokens", "{tokens:,} 个提示词元"),
    "chat.gauge": ("Context: {used:,} / {window:,} tokens ({percent:.1f}%)", "上下文：{used:,} / {window:,} 个词元（{percent:.1f}%）"),
    "chat.stats": (
        "{new_tokens} tokens · first token after {ttft} · {speed} · {reason}",
        "{new_tokens} 个词元 · 首个词元用时 {ttft} · {speed} · {reason}",
    ),
    "chat.speed": ("{value:.1f} tokens/s", "{value:.1f} 词元/秒"),
    "chat.reason_stop": ("finished", "已完成"),
    "chat.reason_length": ("hit the max new tokens", "达到最大新词元数"),
    "chat.reason_cancelled": ("stopped", "已停止"),
    "chat.reason_error": ("error", "出错"),
    "chat.dropped": ("⚠️ {n} oldest messages were dropped to fit the context window (the system prompt is kept).",
                     "⚠️ 为放进上下文窗口，丢弃了最早的 {n} 条消息（系统提示词保留）。"),
    "chat.loading": ("Loading the model (the first start converts it once, ~30 s)…",
                     "正在加载模型（首次启动需转换一次，约 30 秒）……"),
    "chat.export": ("Export the conversation", "导出对话"),
    "chat.export_md": ("Markdown", "Markdown"),
    "chat.export_json": ("JSON", "JSON"),
    "chat.model_status": ("Model: **{title}** · {dtype} on {device} · context {context:,} tokens · loaded from {source} in {seconds:.1f} s",
                          "模型：**{title}** · {dtype}，运行于 {device} · 上下文 {context:,} 个词元 · 从{source}加载，用时 {seconds:.1f} 秒"),
    "chat.source_cache": ("cache", "缓存"),
    "chat.source_gguf": ("the GGUF file", "GGUF 文件"),
    "chat.source_folder": ("a local folder", "本地文件夹"),
    "chat.source_hub": ("the Hugging Face hub", "Hugging Face Hub"),
    "chat.model_error": ("The chat model could not be loaded: {error}", "无法加载聊天模型：{error}"),
    "chat.bad_input": ("{error}", "{error}"),
    "chat.example_1": ("What is the capital of France?", "What is the capital of France?"),
    "chat.example_2": ("Explain what a token is in two sentences.", "Explain what a token is in two sentences."),
    "chat.example_3": ("Write a haiku about the sea.", "Write a haiku about the sea."),
    "chat.example_4": ("你好！请用中文介绍一下你自己。", "你好！请用中文介绍一下你自己。"),
    "chat.model": ("Model", "模型"),
    "chat.model_info": ("The original, the copy you trained in this session (Fine-tune / Human feedback tabs), or "
                        "a model on an OpenAI-compatible server.",
                        "原始模型、你在本次会话中训练的副本（“监督微调”/“人类反馈”页），或 OpenAI 兼容服务器上的模型。"),
    "chat.model_original": ("Original", "原始"),
    "chat.model_sft": ("Fine-tuned (SFT)", "微调后（SFT）"),
    "chat.model_dpo": ("Aligned (DPO)", "对齐后（DPO）"),
    "chat.no_sft": ("No fine-tuned model in this session yet: train one in the Fine-tune tab first.",
                    "本次会话还没有微调过的模型：请先在“监督微调”页训练一个。"),
    "chat.no_dpo": ("No aligned model in this session yet: run DPO in the Human feedback tab first.",
                    "本次会话还没有对齐后的模型：请先在“人类反馈”页运行 DPO。"),
    # --- chat strings (end) ---
    # --- hardening strings (start) ---
    "chat.defaults_note": (
        "The defaults are the model card's: temperature 0.2, top-p 0.9, no repetition penalty. A 135 M model knows "
        "few things well, so sampling close to its most likely token keeps it on the right answer; a high "
        "temperature or a repetition penalty makes it drift (`python -m chat.bench quality` measures it).",
        "默认值来自模型卡：温度 0.2、top-p 0.9、不加重复惩罚。1.35 亿参数的小模型只对少数知识有把握，"
        "贴近最可能的词元采样能让它守住正确答案；温度调高或加重复惩罚会让它跑偏（`python -m chat.bench quality` 可以测量）。",
    ),
    "chat.temperature_quality": (
        "How far from the most likely token it may stray. 0.2 (the card's) = focused and factual; 0 = greedy; "
        "above ~0.8 a small model invents and rambles.",
        "允许偏离最可能词元的程度。0.2（模型卡推荐）= 专注、准确；0 = 贪心；超过约 0.8，小模型就会编造、絮叨。",
    ),
    "chat.top_p_quality": (
        "Cuts the unlikely tail before sampling: 0.9 (the card's) drops the long tail of odd tokens; 1 = off.",
        "采样前砍掉不太可能的长尾：0.9（模型卡推荐）去掉一长串奇怪的词元；1 = 关闭。",
    ),
    "chat.top_k_quality": (
        "Only the k most likely tokens can be picked: another guard against the tail (50, generate's default; "
        "0 = off).",
        "只能从最可能的 k 个词元中选：又一道挡住长尾的闸（默认 50，与 generate 相同；0 = 关闭）。",
    ),
    "chat.max_new_tokens_info": ("Length limit of the reply: it stops long answers, it does not improve them.",
                                 "回复的长度上限：只会截断长回答，不会让回答更好。"),
    "chat.repetition_penalty_quality": (
        "Above 1 it pushes down every token already in the text, the question's own words too: a small model then "
        "avoids the words it needs (\"2+2\" turns into a ramble). 1 = off (the default).",
        "大于 1 会压低文本中已出现的每个词元，连问题里的词也不放过：小模型于是回避它需要的词（“2+2”变成一通胡扯）。1 = 关闭（默认）。",
    ),
    "chat.seed_info": ("Same seed and settings = the same reply, even while others chat.",
                       "相同的种子和设置 = 相同的回复，即使别人同时在聊天。"),
    "app.busy": ("The server is busy: {limit} {kind} job(s) are already running, the most this machine runs at "
                 "once. Try again in a minute.",
                 "服务器正忙：已有 {limit} 个{kind}任务在运行，这是本机同时能运行的上限。请稍后再试。"),
    "mnist.bad_image": ("Cannot use this image: {error}", "无法使用这张图片：{error}"),
    "tokens.live_too_long": (
        "⚠️ The text is {n:,} characters; the live view counts up to {limit:,}. Count longer texts with the "
        "count_tokens API or `python -m chat.tokens`.",
        "⚠️ 文本有 {n:,} 个字符；实时视图最多统计 {limit:,} 个。更长的文本请用 count_tokens API 或 `python -m chat.tokens` 统计。",
    ),
    # --- hardening strings (end) ---
    # --- next_token strings (start) ---
    "next.tab": ("Next token", "文字接龙 Next token"),
    "next.intro": (
        "ChatGPT writes by playing 文字接龙 (word chain): given the text so far, the model gives every token in its "
        "vocabulary a probability, one token is chosen, appended, and the game repeats. Below are the model's **real** "
        "probabilities for the next token (left), and the same distribution after temperature, top-k and top-p reshape it "
        "(right). Take the most likely token, sample one, or click any candidate.",
        "ChatGPT 写作就是在玩文字接龙：给定已有文本，模型为词表中的每个词元打出一个概率，选出一个词元接上，然后重复。"
        "下面左边是模型对下一个词元给出的**真实**概率，右边是同一分布经温度、top-k 和 top-p 调整后的样子。"
        "你可以选最可能的词元、随机采样一个，或点击任意候选。",
    ),
    "next.prompt": ("Prompt", "提示词"),
    "next.as_chat": ("Wrap as a chat message (apply the chat template)", "作为聊天消息（套用聊天模板）"),
    "next.start": ("Start from this prompt", "从这个提示词开始"),
    "next.greedy": ("Take the most likely", "选最可能的"),
    "next.sample": ("Sample one", "随机采样一个"),
    "next.undo": ("Undo", "撤销"),
    "next.steps": ("Add 10 sampled tokens", "连续采样 10 个"),
    "next.raw": ("Model's probabilities (raw)", "模型给出的概率（原始）"),
    "next.shaped": ("After temperature / top-k / top-p", "经温度 / top-k / top-p 调整后"),
    "next.pick": ("Click a candidate to append it", "点击一个候选词元把它接上"),
    "next.text": ("The text so far (each generated token highlighted)", "目前的文本（每个生成的词元都已高亮）"),
    "next.explain": (
        "**Temperature** divides the scores before softmax: below 1 sharpens the distribution, above 1 flattens it, "
        "0 always takes the top token. **Top-k** keeps only the k most likely tokens. **Top-p** keeps the smallest set "
        "whose probabilities add up to p. Chinese characters are often split into byte pieces such as `<0xE5 0xAE>`: "
        "once appended, the pieces join into the right character.",
        "**温度**在 softmax 之前缩放分数：小于 1 让分布更尖锐，大于 1 让它更平坦，0 则总选第一名。"
        "**Top-k** 只保留最可能的 k 个词元。**Top-p** 保留累计概率达到 p 的最小集合。"
        "汉字常被拆成 `<0xE5 0xAE>` 这样的字节片段：接上之后，片段会合成正确的汉字。",
    ),
    "next.token_col": ("token", "词元"),
    "next.prob_col": ("probability", "概率"),
    "next.status": ("{prompt:,} prompt tokens + {generated:,} generated · top candidate {top} ({p:.1%})",
                    "{prompt:,} 个提示词元 + {generated:,} 个生成词元 · 第一候选 {top}（{p:.1%}）"),
    "next.completes": ("completes “{char}”", "合成“{char}”"),
    "next.no_session": ("Start from a prompt first.", "请先从一个提示词开始。"),
    "next.error": ("{error}", "{error}"),
    # --- next_token strings (end) ---
    # --- inside strings (start) ---
    "inside.tab": ("Inside the model", "模型内部 Inside the model"),
    "inside.intro": (
        "Open the chat model (SmolLM2-135M-Instruct: 30 layers, 9 attention heads each) and watch it read a short "
        "text. **Attention** is how a token gathers information from the tokens before it: each head gives every token "
        "weights over the earlier tokens that add up to 1. Below: all 270 heads at a glance, one head in detail and "
        "step by step with the model's real numbers, heads that do a recognisable job, and the **logit lens**: what "
        "the model would predict if it stopped after each layer.",
        "打开聊天模型（SmolLM2-135M-Instruct：30 层，每层 9 个注意力头），看它如何阅读一小段文本。**注意力**决定一个词元"
        "从它前面的词元收集哪些信息：每个头为每个词元在前面的词元上分配权重，权重之和为 1。下面依次是：270 个头的总览，"
        "一个头的详细视图和用模型真实数字的逐步演算，承担特定任务的头，以及 **logit lens**：如果模型在某一层之后就停下，"
        "它会预测什么。",
    ),
    "inside.text": ("Text (the first 64 tokens are read)", "文本（读取前 64 个词元）"),
    "inside.run": ("Look inside", "看看模型内部"),
    "inside.take": ("Use the Next-token text", "使用文字接龙里的文本"),
    "inside.status": (
        "**{tokens} tokens** · {layers} layers × {heads} heads = {total} heads · one pass {seconds:.2f} s · "
        "the model would continue with **{answer}** ({p:.0%})",
        "**{tokens} 个词元** · {layers} 层 × {heads} 个头 = {total} 个头 · 一次前向计算 {seconds:.2f} 秒 · "
        "模型接下来会写 **{answer}**（{p:.0%}）",
    ),
    "inside.cut": ("The text is {total} tokens long: only the first {shown} are read, the rest is cut.",
                   "文本共 {total} 个词元：只读取前 {shown} 个，其余被截掉。"),
    "inside.empty": ("Type a text first: the model needs at least one token to look at.",
                     "请先输入文本：模型至少需要一个词元。"),
    "inside.loading": ("The chat model is still loading; the inspection starts as soon as it is in.",
                       "聊天模型仍在加载；加载完成后立即开始分析。"),
    "inside.still_loading": ("The chat model is still loading; try again in a few seconds.",
                             "聊天模型仍在加载，请过几秒再试。"),
    "inside.busy": ("The chat model is busy answering chat messages (they come first); try again in a moment.",
                    "聊天模型正在回答聊天消息（聊天优先），请稍后再试。"),
    "inside.error": ("{error}", "出错了：{error}"),
    "inside.no_inspection": ("Press “Look inside” first.", "请先点击“看看模型内部”。"),
    "inside.attention_title": ("### Attention: which tokens each token looks at", "### 注意力：每个词元在看哪些词元"),
    "inside.layer": ("Layer", "层"),
    "inside.layer_info": ("0 is nearest the input, the last nearest the output", "0 层最靠近输入，最后一层最靠近输出"),
    "inside.head": ("Head", "头"),
    "inside.head_info": ("Heads 0–2, 3–5 and 6–8 each share one key/value head (grouped-query attention)",
                         "头 0–2、3–5、6–8 各共用一个键/值头（分组查询注意力）"),
    "inside.hide_sink": ("Hide token 0 (the attention sink) and renormalise", "隐藏第 0 个词元（注意力汇聚点）并重新归一化"),
    "inside.sink_info": (
        "Most heads park much of their attention on the first token when they have nothing useful to look at (an "
        "“attention sink”); hiding it, and rescaling each row to add up to 1 again, shows where the rest goes.",
        "大多数头在没有有用信息可看时，会把大量注意力停放在第一个词元上（“注意力汇聚点”）；隐藏它并把每行重新缩放到和为 1，"
        "就能看清其余注意力去了哪里。",
    ),
    "inside.grid_hint": (
        "All heads at a glance: one thumbnail per head, layers left to right, heads top to bottom. Each thumbnail is "
        "that head's pattern (row = the token looking, column = the token looked at; darker = more attention). "
        "**Click a thumbnail to open that head.**",
        "所有头一览：每个缩略图是一个头，层从左到右，头从上到下。每个缩略图是该头的注意力模式（行 = 正在看的词元，"
        "列 = 被看的词元；颜色越深注意力越多）。**点击缩略图打开那个头。**",
    ),
    "inside.grid_layer": ("layer →", "层 →"),
    "inside.grid_head": ("head ↓", "头 ↓"),
    "inside.grid_tip": ("Layer {layer} · head {head} · {sink}% on token 0", "第 {layer} 层 · 第 {head} 个头 · {sink}% 在第 0 个词元上"),
    "inside.head_title": (
        "**Layer {layer} · head {head}** · reads key/value head {kv} (shared by query heads {sharing}) · on average "
        "{sink:.0%} of its attention goes to token 0{hidden}",
        "**第 {layer} 层 · 第 {head} 个头** · 读取第 {kv} 个键/值头（查询头 {sharing} 共用）· 平均 {sink:.0%} 的注意力"
        "落在第 0 个词元上{hidden}",
    ),
    "inside.sink_hidden": (" (hidden here, rows renormalised)", "（此处已隐藏，各行重新归一化）"),
    "inside.lines": ("Each token (left) to the tokens it looks at (right); darker = more. Hover a token.",
                     "左边每个词元连向它所看的词元（右边）；颜色越深注意力越多。把鼠标移到词元上试试。"),
    "inside.heatmap": ("Row = the token looking, column = the token looked at. Hover a cell for its weight.",
                       "行 = 正在看的词元，列 = 被看的词元。把鼠标移到格子上查看权重。"),
    "inside.steps_title": ("One head, step by step", "逐步演算一个头"),
    "steps.intro": (
        "Layer {layer}, head {head} on the first {n} tokens, computed with the model's own weights. A token never "
        "sees the tokens after it, so these are exactly the numbers of the full pass (the top-left corner of the "
        "heatmap without hiding token 0). Each head works with vectors of d = {d} numbers.",
        "第 {layer} 层第 {head} 个头在前 {n} 个词元上的计算，使用模型自己的权重。一个词元永远看不到它后面的词元，"
        "所以这些数字和完整计算中的完全一样（即不隐藏第 0 个词元时热力图的左上角）。每个头使用 d = {d} 个数字的向量。",
    ),
    "steps.gqa": (
        "Grouped-query attention: each layer has {heads} query heads but only {kv_heads} key/value heads. Query heads "
        "{sharing} share key/value head {kv}: the same keys and values, each with its own queries. This makes the "
        "model's memory of past tokens (the KV cache) {ratio}× smaller.",
        "分组查询注意力：每层有 {heads} 个查询头，但只有 {kv_heads} 个键/值头。查询头 {sharing} 共用第 {kv} 个键/值头："
        "键和值相同，查询各不相同。这让模型对过去词元的记忆（KV 缓存）缩小到 1/{ratio}。",
    ),
    "steps.one": (
        "**① Queries, keys and values.** Each token's vector entering layer {layer} is normalised (RMSNorm) and "
        "multiplied by W_Q of head {head} and by W_K and W_V of key/value head {kv}. Then q and k are rotated by an "
        "angle that depends on the token's position (RoPE, rotary position embedding): that is how attention knows "
        "word order. Colour strip: all {d} numbers (blue < 0 < red); the first four are written out.",
        "**① 查询、键和值。** 进入第 {layer} 层的每个词元向量先做归一化（RMSNorm），再分别乘以第 {head} 个头的 W_Q 和"
        "第 {kv} 个键/值头的 W_K、W_V。然后 q 和 k 按词元位置旋转一个角度（RoPE，旋转位置编码）：注意力就是这样知道词序的。"
        "色条显示全部 {d} 个数（蓝 < 0 < 红），前四个数直接写出。",
    ),
    "steps.two": (
        "**② Scores: every query with every key,** Q·Kᵀ / √d, with √{d} = {sqrt:g}. Row = the token looking, "
        "column = the token looked at.",
        "**② 打分：每个查询与每个键相乘，** Q·Kᵀ / √d，其中 √{d} = {sqrt:g}。行 = 正在看的词元，列 = 被看的词元。",
    ),
    "steps.worked": (
        "For example row {i} (“{query}”), column {j} (“{looked}”): q·k = {dot:.3f}; {dot:.3f} / {sqrt:g} = {score:.3f}.",
        "例如第 {i} 行（“{query}”）第 {j} 列（“{looked}”）：q·k = {dot:.3f}；{dot:.3f} / {sqrt:g} = {score:.3f}。",
    ),
    "steps.three": (
        "**③ Causal mask.** A token may not look ahead: the scores above the diagonal become −∞.",
        "**③ 因果掩码。** 词元不能往后看：对角线以上的分数变成 −∞。",
    ),
    "steps.four": (
        "**④ Softmax along each row:** e^score / Σ e^score. Each row now adds up to 1: these are the attention "
        "weights, token 0 included, as the model uses them.",
        "**④ 每行做 softmax：** e^分数 / Σ e^分数。现在每行之和为 1：这就是注意力权重（包含第 0 个词元，和模型实际使用的一样）。",
    ),
    "steps.five": (
        "**⑤ Weighted sum of the values:** each token's output is Σ weight × v, again {d} numbers. The {heads} heads' "
        "outputs are put side by side ({width} numbers), mixed by W_O and added to the token's vector.",
        "**⑤ 对值做加权求和：** 每个词元的输出是 Σ 权重 × v，仍是 {d} 个数。{heads} 个头的输出并排拼接（{width} 个数），"
        "经 W_O 混合后加回该词元的向量。",
    ),
    "steps.all_numbers": ("All {d} numbers of q, k, v and the output", "q、k、v 和输出的全部 {d} 个数"),
    "steps.token": ("token", "词元"),
    "steps.q": ("q (RoPE applied)", "q（已做 RoPE）"),
    "steps.k": ("k (RoPE applied)", "k（已做 RoPE）"),
    "steps.v": ("v", "v"),
    "steps.out": ("output", "输出"),
    "inside.probes_title": ("### Heads that do a job", "### 承担特定任务的头"),
    "inside.probes_intro": (
        "Each button feeds the model a fixed test and scores every head by the attention it puts where a head doing "
        "that job would (0 to 1), then ranks all of them. **Click a row to open that head on your text.**",
        "每个按钮给模型一段固定的测试输入，按每个头把注意力放在“该任务应看的位置”上的多少打分（0 到 1），再给所有头排名。"
        "**点击一行，在你的文本上打开那个头。**",
    ),
    "inside.probe_induction": ("Induction heads (repeated random tokens)", "归纳头（重复的随机词元）"),
    "inside.probe_previous_token": ("Previous-token heads", "前一词元头"),
    "inside.probe_pronoun": ("Pronoun → its noun", "代词 → 所指名词"),
    "inside.explain_induction": (
        "Test: {n} random tokens, then the same tokens again. At each token of the second copy, an **induction head** "
        "looks at the token that came right after that token's first occurrence, so the model can predict it: this "
        "is how models copy from their context (in-context learning). Score: the mean attention on that token.",
        "测试：{n} 个随机词元，然后把它们再重复一遍。在第二遍的每个词元处，**归纳头**会看向该词元第一次出现时紧跟其后的"
        "那个词元，于是模型就能预测它：这是模型从上下文中照抄的方式（上下文学习）。得分：落在那个词元上的平均注意力。",
    ),
    "inside.explain_previous_token": (
        "Test: two ordinary English paragraphs. A **previous-token head** looks at the token just before. Induction "
        "heads build on them: a previous-token head marks each token with the one before it. Score: the mean "
        "attention on the previous token.",
        "测试：两段普通英文。**前一词元头**看向紧挨在前面的那个词元。归纳头依赖它们：前一词元头先给每个词元标上它前面的词元。"
        "得分：落在前一个词元上的平均注意力。",
    ),
    "inside.explain_pronoun": (
        "Test: {n} sentences that end on a pronoun, such as “{example}”. A **pronoun head** looks from the pronoun "
        "at the noun it stands for. Score: the mean attention on that noun's tokens.",
        "测试：{n} 个以代词结尾的句子，例如“{example}”。**代词头**从代词看向它所指的名词。得分：落在该名词词元上的平均注意力。",
    ),
    "inside.probe_best": ("Best: **layer {layer} · head {head}** ({score:.2f}); {labelled} heads score {threshold} or more.",
                          "最佳：**第 {layer} 层 · 第 {head} 个头**（{score:.2f}）；{labelled} 个头得分不低于 {threshold}。"),
    "inside.col_rank": ("rank", "排名"),
    "inside.col_layer": ("layer", "层"),
    "inside.col_head": ("head", "头"),
    "inside.col_score": ("score", "得分"),
    "inside.col_job": ("label", "标签"),
    "inside.job_induction": ("induction head", "归纳头"),
    "inside.job_previous_token": ("previous-token head", "前一词元头"),
    "inside.job_pronoun": ("pronoun head", "代词头"),
    "inside.lens_title": ("### Logit lens: what each layer would predict", "### Logit lens：每一层会预测什么"),
    "inside.lens_intro": (
        "After each layer, the model's running vector at the last token (“{token}”) is read out as if it were the "
        "last layer: final norm, output matrix, softmax. Early layers guess generic tokens; the answer forms with "
        "depth. The last row is the model's real prediction.",
        "在每一层之后，把最后一个词元（“{token}”）处模型的中间向量当作最后一层的输出来读：最终归一化、输出矩阵、softmax。"
        "浅层只会猜一些常见词元；答案随深度逐渐成形。最后一行就是模型真实的预测。",
    ),
    "inside.lens_layer": ("layer", "层"),
    "inside.lens_top": ("top guess", "第一猜测"),
    "inside.lens_more": ("next guesses", "其他猜测"),
    "inside.lens_answer": ("P(“{answer}”)", "P（“{answer}”）"),
    "inside.lens_first": ("“{answer}” first becomes the top guess after layer {layer}.",
                          "“{answer}”从第 {layer} 层之后开始成为第一猜测。"),
    # --- inside strings (end) ---
    # --- mnist strings (start) ---
    "mnist.tab": ("MNIST", "手写数字 MNIST"),
    "mnist.intro": (
        "Seed 000's PyTorch example, trained live: a small convolutional network (2 conv layers, 2 dense layers) "
        "learns to read handwritten digits from **real MNIST images** (4,000 to train, 1,000 to test). Press Start "
        "and watch the loss fall and the accuracy rise; every point is measured, nothing is canned. Then draw your "
        "own digit below.",
        "种子 000 的 PyTorch 示例，现场训练：一个小型卷积网络（2 个卷积层、2 个全连接层）从**真实的 MNIST 图像**"
        "（4,000 张训练、1,000 张测试）学习识别手写数字。点击“开始训练”，看损失下降、准确率上升；每个点都是实测的，"
        "没有预先录好的结果。然后在下方画一个你自己的数字。",
    ),
    "mnist.preset": ("Preset", "预设"),
    "mnist.preset_seed": ("Seed 000 recipe", "种子 000 配方"),
    "mnist.preset_fast": ("Fast: best accuracy in 60 s", "快速：60 秒内最高准确率"),
    "mnist.preset_info": (
        "Seed 000: SGD, learning rate 0.01, momentum 0.5, batch 64, 10 epochs. Fast: AdamW with a one-cycle "
        "learning-rate schedule, small random shifts/rotations of the training digits, at most 60 s of training.",
        "种子 000：SGD，学习率 0.01，动量 0.5，批大小 64，10 轮。快速：AdamW 加单周期（one-cycle）学习率调度，"
        "训练数字随机做小幅平移/旋转，最多训练 60 秒。",
    ),
    "mnist.epochs": ("Epochs", "训练轮数"),
    "mnist.batch_size": ("Batch size", "批大小"),
    "mnist.lr": ("Learning rate", "学习率"),
    "mnist.optimizer": ("Optimizer", "优化器"),
    "mnist.time_limit_s": ("Time limit (s)", "时间上限（秒）"),
    "mnist.time_limit_info": ("0 = none", "0 = 不限"),
    "mnist.seed": ("Random seed", "随机种子"),
    "mnist.start": ("Start training", "开始训练"),
    "mnist.stop": ("Stop", "停止"),
    "mnist.download": ("Download weights", "下载权重"),
    "mnist.upload": ("Upload weights", "上传权重"),
    "mnist.loss_plot": ("Training loss (mean of every 10 batches)", "训练损失（每 10 个批次的平均）"),
    "mnist.accuracy_plot": ("Accuracy per epoch: blue = train, orange = test", "每轮准确率：蓝色 = 训练集，橙色 = 测试集"),
    "mnist.x_epoch": ("epoch", "轮次"),
    "mnist.y_loss": ("loss", "损失"),
    "mnist.y_accuracy": ("accuracy (%)", "准确率（%）"),
    "mnist.train": ("train", "训练集"),
    "mnist.test": ("test", "测试集"),
    "mnist.grid": ("Test digits", "测试数字"),
    "mnist.wrong": ("Misclassified", "认错的数字"),
    "mnist.confusion": ("Confusion matrix", "混淆矩阵"),
    "mnist.confusion_axes": (
        "Rows: true digit · columns: the model's answer · green: right, red: wrong",
        "行：真实数字 · 列：模型的回答 · 绿色：正确，红色：错误",
    ),
    "mnist.caption_right": ("{predicted}", "{predicted}"),
    "mnist.caption_wrong": ("{predicted} ✗ (is {true})", "{predicted} ✗（实为 {true}）"),
    "mnist.status_idle": ("Not trained yet: pick a preset and press Start.", "尚未训练：选择一个预设，然后点击“开始训练”。"),
    "mnist.status_ready": ("Starting…", "正在开始……"),
    "mnist.status_running": (
        "Epoch {epoch} of {epochs} done · step {step:,} · loss {loss:.3f} · {speed:,.0f} images/s · {seconds:.1f} s",
        "已完成第 {epoch}/{epochs} 轮 · 第 {step:,} 步 · 损失 {loss:.3f} · 每秒 {speed:,.0f} 张图 · {seconds:.1f} 秒",
    ),
    "mnist.status_testing": ("Training ended; testing the model trained so far…", "训练已结束，正在测试目前训练好的模型……"),
    "mnist.status_test": ("test accuracy {accuracy:.2f}%", "测试准确率 {accuracy:.2f}%"),
    "mnist.status_finished": (
        "Done: test accuracy {accuracy:.2f}% after {seconds:.1f} s of training ({speed:,.0f} images/s).",
        "完成：训练 {seconds:.1f} 秒后测试准确率 {accuracy:.2f}%（每秒 {speed:,.0f} 张图）。",
    ),
    "mnist.status_stopped": (
        "Stopped. The model trained so far is kept: test accuracy {accuracy:.2f}% after {seconds:.1f} s.",
        "已停止。保留目前训练好的模型：训练 {seconds:.1f} 秒后测试准确率 {accuracy:.2f}%。",
    ),
    "mnist.status_diverged": (
        "Training stopped: the loss became NaN/inf ({loss:.3g}) at epoch {epoch}, step {step}; the run diverged. "
        "Try a smaller learning rate (this one was {lr:g}).",
        "训练已停止：损失在第 {epoch} 轮第 {step} 步变成了 NaN/inf（{loss:.3g}），训练发散了。"
        "请试试更小的学习率（本次为 {lr:g}）。",
    ),
    "mnist.status_loaded": (
        "Weights loaded: test accuracy {accuracy:.2f}% on {data}.",
        "权重已加载：在 {data} 上测试准确率 {accuracy:.2f}%。",
    ),
    "mnist.bad_setting": ("{name} must be between {low} and {high} (got {value}).",
                          "{name} 必须在 {low} 到 {high} 之间（收到的是 {value}）。"),
    "mnist.data_error": ("Cannot load the digits: {error}", "无法加载数字数据：{error}"),
    "mnist.bad_checkpoint": ("That file is not usable weights: {error}", "这个文件不是可用的权重：{error}"),
    "mnist.draw_intro": (
        "### Draw a digit\nYour drawing is prepared the way MNIST's digits were: the ink is cropped, scaled to fit "
        "20×20 pixels, and centred by its centre of mass in a 28×28 image. Draw big, one digit, in the middle.",
        "### 画一个数字\n你的画会按 MNIST 制作数字的方式处理：裁出笔迹，缩放到 20×20 像素以内，再按质心居中放进 "
        "28×28 的图像。请画大一点，一个数字，画在中间。",
    ),
    "mnist.draw": ("Pick the brush (left), then draw one digit (0–9)", "先选左侧的画笔，再画一个数字（0–9）"),
    "mnist.top3": ("Your model's top 3 guesses", "你的模型最有把握的 3 个答案"),
    "mnist.seen": ("What the network sees (28×28)", "网络看到的图像（28×28）"),
    "mnist.blank": ("The pad is empty: draw a digit to get a prediction.", "画板是空的：画一个数字才能得到预测。"),
    "mnist.no_model": ("No model yet: train one (or upload weights) first.", "还没有模型：请先训练一个（或上传权重）。"),
    "mnist.api_no_model": (
        "No MNIST model has been trained on this server yet: train one in the MNIST tab first.",
        "这个服务器上还没有训练过 MNIST 模型：请先在 MNIST 标签页训练一个。",
    ),
    # --- mnist strings (end) ---
    # --- tinygpt strings (start) ---
    "tinygpt.tab": ("Tiny GPT", "迷你 GPT"),
    "tinygpt.intro": (
        "Seeds 001 and 002 train a GPT-2 style model to continue dialogs. Here it happens for real, from scratch, on "
        "this CPU in about two minutes: a tiny GPT-2 (transformers' `GPT2LMHeadModel`, 4 layers, 0.8 M parameters) "
        "learns to predict the next token of `User: …` / `Bot: …` conversations from the chatterbot corpus. Press "
        "**Start** and watch the loss fall and the samples turn from random characters into words and replies; then "
        "talk to the model you just trained. Nothing is canned.",
        "种子 001 和 002 训练一个 GPT-2 式的模型来续写对话。这里真的从零开始训练，就在这台 CPU 上，大约两分钟：一个迷你 "
        "GPT-2（transformers 的 `GPT2LMHeadModel`，4 层，80 万参数）在 chatterbot 语料的 `User: …` / `Bot: …` "
        "对话上学习预测下一个词元。点击**开始**，看损失下降，看样本从随机字符变成词语和回答；然后和你刚训练好的模型聊天。"
        "没有任何预先录好的结果。",
    ),
    "tinygpt.lang": ("Corpus language", "语料语言"),
    "tinygpt.lang_info": ("chatterbot-corpus conversations, offline", "chatterbot-corpus 的对话，离线"),
    "tinygpt.topics": ("Topics", "话题"),
    "tinygpt.topics_info": (
        "One YAML file each. Malformed entries are skipped and counted; repeated conversations are dropped.",
        "每个话题一个 YAML 文件。格式不对的条目会被跳过并计数；重复的对话只保留一份。",
    ),
    "tinygpt.tokenizer": ("Tokenizer", "分词器"),
    "tinygpt.tokenizer_info": (
        "Characters show the idea plainly. BPE learns its vocabulary from this corpus: tokenizers are trained too.",
        "按字符最直观。BPE 从这份语料学出自己的词表：分词器也是训练出来的。",
    ),
    "tinygpt.tokenizer_char": ("Characters (one token per character)", "字符（每个字符一个词元）"),
    "tinygpt.tokenizer_bpe": ("Byte-level BPE learned on the corpus", "在语料上学习的字节级 BPE"),
    "tinygpt.kind_char": ("characters", "字符"),
    "tinygpt.kind_bpe": ("byte-level BPE", "字节级 BPE"),
    "tinygpt.bpe_vocab_size": ("BPE vocabulary size", "BPE 词表大小"),
    "tinygpt.bot_only": ("Learn only the Bot's replies", "只学习 Bot 的回答"),
    "tinygpt.bot_only_info": (
        "Seed 002's fine-tuning idea: the loss counts only tokens of Bot turns (labels = -100 elsewhere). Off: plain "
        "next-token training on everything.",
        "种子 002 的微调思路：损失只计算 Bot 发言中的词元（其余位置的标签为 -100）。关闭：在全部文本上做普通的下一个词元训练。",
    ),
    "tinygpt.model_size": ("Model size and training settings", "模型大小与训练设置"),
    "tinygpt.n_layer": ("Layers", "层数"),
    "tinygpt.n_head": ("Attention heads", "注意力头数"),
    "tinygpt.n_embd": ("Embedding width", "嵌入维度"),
    "tinygpt.block_size": ("Context (tokens)", "上下文长度（词元）"),
    "tinygpt.batch_size": ("Batch size", "批大小"),
    "tinygpt.dropout": ("Dropout", "Dropout"),
    "tinygpt.learning_rate": ("Learning rate (AdamW)", "学习率（AdamW）"),
    "tinygpt.max_seconds": ("Time budget (s)", "时间预算（秒）"),
    "tinygpt.max_steps": ("Maximum steps", "最大步数"),
    "tinygpt.budget": ("Time budget (s)", "时间预算（秒）"),
    "tinygpt.budget_info": (
        "Wall-clock time for the whole run; Resume continues up to it (raise it to train longer).",
        "整个训练的墙钟时间；“继续”会训练到这个预算为止（想训练更久就调高它）。",
    ),
    "tinygpt.start": ("Start new run", "开始新训练"),
    "tinygpt.resume": ("Resume", "继续"),
    "tinygpt.stop": ("Stop", "停止"),
    "tinygpt.plot": ("Loss in nats per token: blue = train, orange = validation",
                     "损失（nat / 词元）：蓝色 = 训练集，橙色 = 验证集"),
    "tinygpt.x_step": ("step", "步数"),
    "tinygpt.y_loss": ("loss (nats per token)", "损失（nat / 词元）"),
    "tinygpt.curve_train": ("train", "训练集"),
    "tinygpt.curve_val": ("validation", "验证集"),
    "tinygpt.samples_title": ("Samples from the same prompt as training goes on (newest first)",
                              "随着训练进行，从同一提示生成的样本（最新的在最上面）"),
    "tinygpt.samples_empty": (
        "The sample timeline appears here: every few hundred steps the model continues the same prompt. Step 0 is "
        "the untrained model: random noise.",
        "样本时间线会显示在这里：每隔几百步，模型续写同一个提示。第 0 步是未训练的模型：随机噪声。",
    ),
    "tinygpt.sample_head": ("step {step:,}", "第 {step:,} 步"),
    "tinygpt.sample_val": ("validation loss {val:.2f}", "验证损失 {val:.2f}"),
    "tinygpt.status_idle": ("Not trained yet: pick the topics and press Start.", "尚未训练：选择话题，然后点击“开始新训练”。"),
    "tinygpt.status_ready": ("Preparing: corpus loaded, tokenizer learned, model built…",
                             "准备中：语料已加载，分词器已学好，模型已建好……"),
    "tinygpt.status_running": ("Training… step {step:,}", "训练中……第 {step:,} 步"),
    "tinygpt.status_stopped": (
        "Stopped at step {step:,}. The model trained so far is kept: chat with it, download it, or Resume.",
        "已在第 {step:,} 步停止。保留目前训练好的模型：可以和它聊天、下载，或点击“继续”。",
    ),
    "tinygpt.status_finished": ("Done: {step:,} steps. Chat with your model below.",
                                "完成：共 {step:,} 步。在下方和你的模型聊天吧。"),
    "tinygpt.status_diverged": (
        "The loss became NaN/inf by step {diverged:,}: training stopped and the model went back to step {step:,}, "
        "its last good state. Try a smaller learning rate (this one was {lr:g}).",
        "损失在第 {diverged:,} 步前变成了 NaN/inf：训练已停止，模型退回到最后一个正常状态（第 {step:,} 步）。"
        "请试试更小的学习率（本次为 {lr:g}）。",
    ),
    "tinygpt.stats_start": (
        "Step 0 · validation loss {val:.3f} nats per token = {bpc:.2f} bits per character: the untrained model "
        "guesses about uniformly",
        "第 0 步 · 验证损失 {val:.3f} nat / 词元 = {bpc:.2f} 比特 / 字符：未训练的模型几乎是均匀乱猜",
    ),
    "tinygpt.stats": (
        "Step {step:,} · {seconds:.0f} of {budget:.0f} s · {speed:.1f} it/s · train loss {train:.3f} · validation "
        "loss {val:.3f} nats per token = {bpc:.2f} bits per character",
        "第 {step:,} 步 · {seconds:.0f} / {budget:.0f} 秒 · 每秒 {speed:.1f} 步 · 训练损失 {train:.3f} · 验证损失 "
        "{val:.3f} nat / 词元 = {bpc:.2f} 比特 / 字符",
    ),
    "tinygpt.data_line": (
        "{conversations:,} conversations in {topics} topics ({skipped} malformed entries skipped, {duplicates:,} "
        "repeats dropped) · {train_tokens:,} training and {val_tokens:,} validation tokens · {tokenizer}, "
        "vocabulary {vocab:,} · {params:,} parameters · {target}",
        "{topics} 个话题共 {conversations:,} 段对话（跳过 {skipped} 个格式不对的条目，去掉 {duplicates:,} 段重复）· "
        "训练词元 {train_tokens:,} 个、验证词元 {val_tokens:,} 个 · {tokenizer}，词表 {vocab:,} · 参数 {params:,} 个 · "
        "{target}",
    ),
    "tinygpt.target_all": ("loss on all text", "损失覆盖全部文本"),
    "tinygpt.target_bot": ("loss on the Bot's replies only", "损失只算 Bot 的回答"),
    "tinygpt.chat_intro": (
        "### Talk to your model\nYour message is wrapped in the training format, `User: …` then `Bot:`, and the "
        "model's reply ends at its newline. Temperature 0 always picks the most likely token; higher is more "
        "adventurous.",
        "### 和你的模型聊天\n你的消息会按训练时的格式包装：先 `User: …`，再 `Bot:`；模型的回答在它输出换行时结束。"
        "温度为 0 时总是选概率最高的词元；温度越高越大胆。",
    ),
    "tinygpt.chatbot": ("Your tiny GPT", "你的迷你 GPT"),
    "tinygpt.message_placeholder": ("Say something, e.g. Hello", "说点什么，比如：你好"),
    "tinygpt.send": ("Send", "发送"),
    "tinygpt.temperature": ("Temperature", "温度"),
    "tinygpt.temperature_info": ("0 = always the most likely token", "0 = 总是选最可能的词元"),
    "tinygpt.clear_chat": ("Clear chat", "清空对话"),
    "tinygpt.download": ("Download model (.zip)", "下载模型（.zip）"),
    "tinygpt.empty_reply": ("(an empty reply: it wrote the newline straight away)", "（空回答：模型直接输出了换行）"),
    "tinygpt.error_no_topics": ("Pick at least one topic.", "请至少选择一个话题。"),
    "tinygpt.error_unknown_topic": ("There is no topic '{topic}' in {lang}.", "{lang} 里没有话题“{topic}”。"),
    "tinygpt.error_unknown_lang": ("There is no corpus language '{lang}'.", "没有语料语言“{lang}”。"),
    "tinygpt.error_bad_setting": ("{name} must be between {low} and {high} (got {value}).",
                                  "{name} 必须在 {low} 到 {high} 之间（收到的是 {value}）。"),
    "tinygpt.error_settings": ("A setting is not a number: {error}", "有一项设置不是数字：{error}"),
    "tinygpt.error_heads": (
        "The embedding width ({n_embd}) must be a multiple of the number of heads ({n_head}).",
        "嵌入维度（{n_embd}）必须是注意力头数（{n_head}）的整数倍。",
    ),
    "tinygpt.error_too_large": (
        "This model is too large for the budget: about {steps} steps in {seconds:g} s, and it needs at least "
        "{minimum}. Make it smaller (layers, width, context, batch) or raise the time budget.",
        "这个模型对时间预算来说太大了：{seconds:g} 秒内只能训练约 {steps} 步，至少需要 {minimum} 步。"
        "请把模型调小（层数、宽度、上下文、批大小）或调高时间预算。",
    ),
    "tinygpt.error_too_little_text": (
        "Too little text: {train:,} training and {val:,} validation tokens; each needs more than {need}. Pick more "
        "topics or a shorter context.",
        "文本太少：训练词元 {train:,} 个、验证词元 {val:,} 个，各自都需要超过 {need} 个。请多选几个话题或缩短上下文。",
    ),
    "tinygpt.error_no_text": ("The chosen topics hold no usable conversations.", "所选话题里没有可用的对话。"),
    "tinygpt.error_empty_message": ("Type a message first.", "请先输入一条消息。"),
    "tinygpt.error_corpus": ("Cannot read the corpus: {error}", "无法读取语料：{error}"),
    "tinygpt.error_nothing_to_resume": ("Nothing to resume yet: press Start first.", "还没有可以继续的训练：请先点击“开始新训练”。"),
    "tinygpt.error_already_running": ("This run is already training.", "这个训练正在进行中。"),
    "tinygpt.error_budget_used": (
        "The time budget is used up ({seconds:.0f} s trained): raise it, then press Resume to train longer.",
        "时间预算已经用完（已训练 {seconds:.0f} 秒）：调高预算后再点击“继续”即可接着训练。",
    ),
    "tinygpt.error_no_model": ("No model yet: train one first (press Start).", "还没有模型：请先训练一个（点击“开始新训练”）。"),
    "tinygpt.error_busy": ("The model is still training: stop it (or wait for the end) to chat.",
                           "模型还在训练：停止训练（或等它结束）后再聊天。"),
    # --- tinygpt strings (end) ---
    # --- finetune strings (start) ---
    "finetune.tab": ("Fine-tune", "监督微调 SFT"),
    "finetune.intro": (
        "**How ChatGPT is made: pretraining → supervised fine-tuning (SFT) → RLHF.** Pretraining (the Tiny GPT tab) "
        "makes a model that continues text. **SFT** shows it demonstrations, a prompt and the answer we want, and "
        "trains it to write those answers: that is how a text predictor becomes an assistant with a chosen "
        "behaviour. Here you teach the real chat model (SmolLM2-135M-Instruct) something new in about a minute on "
        "this CPU, with **LoRA**: small low-rank updates of every layer train while the model's own weights stay "
        "frozen, so the Chat tab's model never changes. Then compare its answers before and after, including "
        "questions it was never taught, and look for side effects.",
        "**ChatGPT 是怎样炼成的：预训练 → 监督微调（SFT）→ 人类反馈强化学习（RLHF）**。预训练（“迷你 GPT”页）得到一个会续写文本的模型。"
        "**SFT** 给它看示范——一个提示和我们想要的回答——训练它写出这样的回答：文本预测器就是这样变成具有特定行为的助手的。"
        "在这里，你可以在这台 CPU 上用大约一分钟教真实的聊天模型（SmolLM2-135M-Instruct）一点新东西。方法是 **LoRA**："
        "只训练每一层上很小的低秩更新，模型自身的权重保持冻结，所以“聊天”页的模型永远不会被改变。"
        "然后比较微调前后的回答（包括从没教过的问题），看看有没有副作用。",
    ),
    "finetune.preset": ("Demonstrations", "示范数据"),
    "finetune.preset_info": ("A tested preset, or your own pairs in the table.", "选择一个测试过的预设，或在表格里写你自己的示范。"),
    "finetune.preset_custom": ("Your own", "自定义"),
    "finetune.preset_identity": ("Identity: a new name", "身份：换个名字"),
    "finetune.preset_pirate": ("Style: talk like a pirate", "风格：像海盗一样说话"),
    "finetune.preset_chinese": ("Language: answer in Chinese", "语言：用中文回答"),
    "finetune.about_identity": (
        "The model learns to introduce itself by the name you type, in English and in Chinese, even though its "
        "system prompt still says it is SmolLM. The last 4 pairs are ordinary questions answered normally: mixing "
        "general data into the demonstrations keeps the model from forgetting the rest (delete them and watch the "
        "control questions).",
        "模型学会用你输入的名字介绍自己（中英文都行），尽管它的系统提示词仍然说它是 SmolLM。最后 4 条是普通问题的正常回答："
        "在示范里混入通用数据，能防止模型遗忘其他知识（删掉它们，再看看对照问题）。",
    ),
    "finetune.about_pirate": (
        "Every answer comes in pirate speak (\"Arr, matey!\"): fine-tuning changes how a model talks. Watch the "
        "control questions too: a 135 M-parameter model pays for a strong new style with some of its facts.",
        "每个回答都用海盗腔（“啊哈，伙计！”）：微调改变的是模型说话的方式。也看看对照问题：一个 1.35 亿参数的小模型，"
        "学会强烈的新风格要以丢掉一些事实为代价。",
    ),
    "finetune.about_chinese": (
        "Questions asked in English are answered in Chinese. SmolLM2 was trained mostly on English: a dozen "
        "demonstrations do change the language of its answers, but not what it knows in that language, so watch the "
        "control questions turn into fluent-looking nonsense. Fine-tuning teaches behaviour, not knowledge.",
        "用英文提问，模型用中文回答。SmolLM2 主要在英文上训练：十几条示范确实能改变它回答的语言，却不能给它在这种语言里的知识，"
        "看看对照问题如何变成看似流畅的胡话。微调教的是行为，不是知识。",
    ),
    "finetune.name": ("New name (identity preset)", "新名字（身份预设）"),
    "finetune.load": ("Load preset", "载入预设"),
    "finetune.table": ("Prompt → response pairs (edit freely; the loss counts only the responses)",
                       "提示 → 回答（可随意编辑；损失只计算回答部分）"),
    "finetune.col_prompt": ("Prompt", "提示"),
    "finetune.col_response": ("Response", "回答"),
    "finetune.import": ("Import JSONL", "导入 JSONL"),
    "finetune.export": ("Export JSONL", "导出 JSONL"),
    "finetune.jsonl_info": (
        "JSONL in the chat-messages format TRL reads: one `{\"messages\": [system?, user, assistant]}` per line "
        "(prompt/completion rows are read too).",
        "JSONL 使用 TRL 读取的聊天消息格式：每行一个 `{\"messages\": [system?, user, assistant]}`（也可读取 prompt/completion 格式）。",
    ),
    "finetune.system": ("System prompt used in training", "训练时使用的系统提示词"),
    "finetune.system_placeholder": (
        "Empty: the model's own default (\"You are a helpful AI assistant named SmolLM…\"), as in the Chat tab",
        "留空：使用模型自带的默认提示（“You are a helpful AI assistant named SmolLM…”），与“聊天”页一致",
    ),
    "finetune.settings": ("Training settings", "训练设置"),
    "finetune.lr": ("Learning rate", "学习率"),
    "finetune.lr_info": ("Too low changes nothing; too high forgets other things (and can diverge).",
                         "太低什么都学不会；太高会遗忘其他知识（甚至发散）。"),
    "finetune.steps": ("Steps", "步数"),
    "finetune.batch": ("Demonstrations per step", "每步示范数"),
    "finetune.rank": ("LoRA rank", "LoRA 秩"),
    "finetune.rank_info": ("Size of the low-rank update of each layer (alpha = 2 × rank).",
                           "每层低秩更新的大小（alpha = 2 × 秩）。"),
    "finetune.budget": ("Time budget (s)", "时间预算（秒）"),
    "finetune.layers": ("LoRA blocks (top N; 0 = all 30)", "LoRA 层数（最上面 N 个块；0 = 全部 30 个）"),
    "finetune.layers_info": ("Adapting only the top blocks trains faster: the backward pass stops N blocks down.",
                             "只调整最上面的块训练更快：反向传播只走到往下第 N 个块为止。"),
    "finetune.start": ("Start fine-tuning", "开始微调"),
    "finetune.stop": ("Stop", "停止"),
    "finetune.reset": ("Reset", "重置"),
    "finetune.status_idle": ("Not trained yet: load a preset (or write pairs) and press Start.",
                             "尚未训练：载入预设（或写下示范），然后点击“开始微调”。"),
    "finetune.status_starting": ("Preparing: tokenizing the demonstrations, adding LoRA…",
                                 "准备中：对示范分词，添加 LoRA……"),
    "finetune.status_training": ("Training… step {step} of {steps}", "训练中……第 {step}/{steps} 步"),
    "finetune.status_comparing": ("Trained ({step} steps). Comparing answers before and after…",
                                  "训练完成（{step} 步）。正在比较微调前后的回答……"),
    "finetune.status_done": ("Done: {step} steps. Compare the answers below, or chat with it in the Chat tab.",
                             "完成：{step} 步。看下面的前后对比，或到“聊天”页和它对话。"),
    "finetune.status_stopped": ("Stopped at step {step}: the adapter trained so far is kept.",
                                "在第 {step} 步停止：保留到目前为止训练的适配器。"),
    "finetune.status_timeout": ("The time budget ran out at step {step}: the adapter trained so far is kept.",
                                "时间预算在第 {step} 步用完：保留到目前为止训练的适配器。"),
    "finetune.status_diverged": (
        "The loss became NaN at step {diverged}: training stopped and the last good adapter (step {restored}) was "
        "restored. Try a lower learning rate.",
        "第 {diverged} 步损失变成了 NaN：训练已停止，并恢复了最后一个正常的适配器（第 {restored} 步）。请试试更低的学习率。",
    ),
    "finetune.status_error": ("Training failed: {error}", "训练失败：{error}"),
    "finetune.stats": ("step {step}/{steps} · {seconds:.0f} s · {speed:.2f} steps/s · loss {loss:.3f}",
                       "第 {step}/{steps} 步 · {seconds:.0f} 秒 · {speed:.2f} 步/秒 · 损失 {loss:.3f}"),
    "finetune.plot": ("Training loss (response tokens only)", "训练损失（只算回答部分的词元）"),
    "finetune.x_step": ("step", "步"),
    "finetune.y_loss": ("loss (nats per token)", "损失（每个词元的 nats）"),
    "finetune.mask": ("What the loss counts: the response tokens (highlighted); the prompt (grey) is only context",
                      "损失计算的内容：回答部分的词元（高亮）；提示部分（灰色）只是上下文"),
    "finetune.mask_counted": ("counted in the loss", "计入损失"),
    "finetune.mask_context": ("context only", "仅作上下文"),
    "finetune.questions": ("Test questions (one per line): held-out paraphrases and control questions",
                           "测试问题（每行一个）：没训练过的同义问法和对照问题"),
    "finetune.compare_again": ("Compare again", "重新比较"),
    "finetune.compare_title": ("Before and after (greedy, {tokens} tokens at most)", "微调前后（贪心解码，最多 {tokens} 个词元）"),
    "finetune.col_question": ("Question", "问题"),
    "finetune.col_before": ("Original model", "原始模型"),
    "finetune.col_after": ("Fine-tuned", "微调后"),
    "finetune.kind_held_out": ("held out: never trained on", "留出：从未训练过"),
    "finetune.kind_control": ("control: unrelated, should stay right", "对照：无关问题，应保持正确"),
    "finetune.kind_ask": ("your question", "你的问题"),
    "finetune.no_comparison": ("The comparison appears here when training ends.", "训练结束后，这里会显示对比。"),
    "finetune.download": ("Download the adapter (zip)", "下载适配器（zip）"),
    "finetune.chat_hint": (
        "Chat with the fine-tuned model: open the **Chat** tab and pick **Fine-tuned** under *Model*.",
        "和微调后的模型聊天：打开**聊天**页，在*模型*里选择**微调后**。",
    ),
    "finetune.error_compare_busy": ("Wait for training to end before comparing.", "请等训练结束后再比较。"),
    "finetune.error_nothing": ("Nothing trained yet: press Start first.", "还没有训练：请先点击“开始微调”。"),
    "finetune.imported": ("Imported {n} pairs.", "已导入 {n} 条示范。"),
    # errors shared by the Fine-tune and Human feedback tabs (chat.tuning.TuningError codes)
    "tuning.error_busy": (
        "Another training run ({kind}) is using this machine's CPU; one run trains at a time. It ends within "
        "{seconds:.0f} s: start yours then.",
        "另一个训练（{kind}）正在占用这台机器的 CPU；同一时间只能训练一个。它会在 {seconds:.0f} 秒内结束，请稍后再开始。",
    ),
    "tuning.error_busy_other": (
        "Another training run (MNIST or Tiny GPT) is using this machine's CPU; one run trains at a time. Start yours "
        "when it ends.",
        "另一个训练（MNIST 或 Tiny GPT）正在占用这台机器的 CPU；同一时间只能训练一个。请等它结束后再开始。",
    ),
    "tuning.error_empty": ("Row {row} has an empty prompt or response.", "第 {row} 行的提示或回答为空。"),
    "tuning.error_too_long": ("Row {row} is {chars} characters long; at most {limit}.",
                              "第 {row} 行有 {chars} 个字符；最多 {limit} 个。"),
    "tuning.error_too_few": ("{n} demonstration(s): fine-tuning needs at least {minimum}.",
                             "只有 {n} 条示范：微调至少需要 {minimum} 条。"),
    "tuning.error_too_many": ("{n} rows: at most {limit} per run.", "{n} 行：每次训练最多 {limit} 行。"),
    "tuning.error_jsonl": ("This file is not what ChatLab reads (line {line}): {reason}",
                           "这个文件不是 ChatLab 能读取的格式（第 {line} 行）：{reason}"),
    "tuning.error_setting": ("{name} must be between {low} and {high} (got {value}).",
                             "{name} 必须在 {low} 到 {high} 之间（当前为 {value}）。"),
    "tuning.error_not_number": ("A setting is empty or not a number: {error}", "有一项设置为空或不是数字：{error}"),
    "tuning.error_name": ("The name is too long: at most {limit} characters.", "名字太长：最多 {limit} 个字符。"),
    "tuning.error_preset": ("Unknown preset {preset}.", "未知的预设 {preset}。"),
    "tuning.error_model": ("The chat model is not available: {error}", "聊天模型不可用：{error}"),
    # --- finetune strings (end) ---
    # --- feedback strings (start) ---
    "feedback.tab": ("Human feedback", "人类反馈 RLHF"),
    "feedback.intro": (
        "**The last stage: reinforcement learning from human feedback (RLHF).** After fine-tuning, people compare "
        "pairs of answers and pick the better one; a **reward model** learns to predict their choice; then the chat "
        "model is moved toward what the reward model likes. This is what makes ChatGPT feel aligned, and it is also "
        "how a model learns to game a reward. Be the human in the loop, in three steps, on the real "
        "SmolLM2-135M-Instruct. (ChatGPT used PPO; ChatLab uses **DPO**, which learns from the same preference pairs "
        "without a separate RL loop and runs on a CPU in a minute or two.)",
        "**最后一个阶段：基于人类反馈的强化学习（RLHF）**。微调之后，人们比较成对的回答并选出更好的一个；**奖励模型**学习预测人的选择；"
        "再把聊天模型朝奖励模型喜欢的方向推动。正是这一步让 ChatGPT 显得“懂分寸”，也正是这一步会让模型学会钻奖励的空子。"
        "在真实的 SmolLM2-135M-Instruct 上，分三步亲自当一回“人类反馈”。（ChatGPT 当年用 PPO；ChatLab 用 **DPO**："
        "它直接从同样的偏好对学习，不需要单独的强化学习循环，在 CPU 上一两分钟就能跑完。）",
    ),
    "feedback.step1": ("### 1 · Collect preferences", "### 1 · 收集偏好"),
    "feedback.step1_help": (
        "Ask something: the model answers twice (sampled). Click the better answer, or say both are bad, or skip. "
        "Or load a tested preset below.",
        "提个问题：模型会（随机采样）回答两次。点击更好的那个，或者说两个都不好，或者跳过。也可以在下面载入测试过的预设。",
    ),
    "feedback.prompt": ("Prompt", "提示"),
    "feedback.prompt_placeholder": ("Ask something, e.g. What is the capital of Spain?", "问点什么，例如：西班牙的首都是哪里？"),
    "feedback.two_answers": ("Two answers", "生成两个回答"),
    "feedback.answer_a": ("Answer A", "回答 A"),
    "feedback.answer_b": ("Answer B", "回答 B"),
    "feedback.a_better": ("A is better", "A 更好"),
    "feedback.b_better": ("B is better", "B 更好"),
    "feedback.both_bad": ("Both bad", "都不好"),
    "feedback.skip": ("Skip", "跳过"),
    "feedback.score": ("reward {score:+.2f}", "奖励 {score:+.2f}"),
    "feedback.added": ("Added: {n} pairs now.", "已添加：现在共 {n} 对。"),
    "feedback.full": ("The table holds at most {n} pairs: the last row was dropped to make room.",
                      "表格最多容纳 {n} 对：为腾出位置，最后一行已被移除。"),
    "feedback.both_bad_noted": (
        "Noted: no pair is added (neither answer is worth preferring). Write a better answer as a row of the table "
        "if you like: it becomes 'chosen'.",
        "已记录：不添加偏好对（两个回答都不值得偏好）。如果愿意，可以在表格里写一个更好的回答，它会成为“被选中”的回答。",
    ),
    "feedback.no_pair": ("Ask for two answers first.", "请先生成两个回答。"),
    "feedback.preset": ("Preset", "预设"),
    "feedback.preset_custom": ("Your own", "自定义"),
    "feedback.preset_concise": ("Concise", "简洁"),
    "feedback.preset_friendly": ("Friendly, with emoji", "友好，带表情"),
    "feedback.preset_chinese": ("Answers in Chinese", "用中文回答"),
    "feedback.preset_refuse": ("Refuse harmful requests politely", "礼貌地拒绝有害请求"),
    "feedback.preset_overoptimise": ("Over-optimise (reward hacking)", "过度优化（奖励投机）"),
    "feedback.about_concise": (
        "The preferred answer is short and to the point; the rejected one is right but rambles.",
        "被偏好的回答简短直接；被拒绝的回答虽然正确但啰嗦。",
    ),
    "feedback.about_friendly": (
        "The preferred answer is warm and cheerful with a friendly emoji; the rejected one is flat and curt. Emoji "
        "are what most separates the two, so even at this learning rate an answer may start to pile them up: the "
        "first sign of over-optimisation.",
        "被偏好的回答热情开朗、带友好的表情；被拒绝的回答平淡生硬。两者最大的区别就是表情，所以即使在这个学习率下，"
        "也可能有回答开始堆砌表情：这是过度优化的第一个迹象。",
    ),
    "feedback.about_chinese": (
        "Whatever the question's language, the preferred answer is in Chinese; the rejected one says the same in "
        "English. The reward model learns this at once (it ranks new pairs right), but a dozen DPO steps barely move "
        "the language: DPO only re-weights answers the model already gives, and this small model almost never "
        "answers English in Chinese (the answers hardly change; a higher learning rate breaks it into gibberish "
        "before it speaks Chinese). That is why ChatGPT is fine-tuned (SFT) before RLHF: compare the Fine-tune "
        "tab's Language preset.",
        "无论用什么语言提问，被偏好的都是中文回答；被拒绝的是意思相同的英文回答。奖励模型马上就学会了（新的偏好对也能排对），"
        "但十几步 DPO 几乎改变不了语言：DPO 只会重新加权模型本来就会给出的回答，而这个小模型几乎从不用中文回答英文问题"
        "（回答几乎不变；学习率再高，它会先变成乱码，而不是说中文）。这正是 ChatGPT 在 RLHF 之前先做监督微调（SFT）的原因："
        "对比“监督微调”标签页的语言预设。",
    ),
    "feedback.about_refuse": (
        "For a harmful request the preferred answer declines politely and offers something safe; the rejected one "
        "goes along with it. Harmless questions keep their helpful answers. The reward model learns the preference "
        "and ranks new pairs right; a dozen DPO steps on 16 pairs fit the training prompts (the margin rises) but "
        "rarely carry the refusal to new harmful requests: safety training takes far more, and more varied, data.",
        "面对有害请求，被偏好的回答礼貌拒绝并给出安全的替代；被拒绝的回答照做。无害的问题仍然得到有用的回答。"
        "奖励模型学会了这个偏好，新的偏好对也能排对；在 16 对数据上做十几步 DPO 能拟合训练提示（差值上升），"
        "却很少把拒绝推广到新的有害请求：安全训练需要多得多、也更多样的数据。",
    ),
    "feedback.about_overoptimise": (
        "The friendly pairs with a learning rate far too high: the policy drifts far from the original (the KL "
        "grows) and collapses into the emoji the preference data rewarded.",
        "与“友好”相同的偏好对，但学习率高得多：策略远离原模型（KL 变大），退化成偏好数据奖励过的一串表情。",
    ),
    "feedback.load": ("Load preset", "载入预设"),
    "feedback.table": ("Preference pairs (prompt, chosen, rejected)", "偏好对（提示、被选中、被拒绝）"),
    "feedback.jsonl_info": (
        "JSONL in TRL's preference format: one `{\"prompt\", \"chosen\", \"rejected\"}` per line (strings, or chat "
        "messages as TRL writes them).",
        "JSONL 使用 TRL 的偏好格式：每行一个 `{\"prompt\", \"chosen\", \"rejected\"}`（字符串，或 TRL 写出的聊天消息）。",
    ),
    "feedback.import": ("Import JSONL", "导入 JSONL"),
    "feedback.export": ("Export JSONL", "导出 JSONL"),
    "feedback.step2": ("### 2 · Reward model", "### 2 · 奖励模型"),
    "feedback.step2_help": (
        "A linear head on the chat model's own frozen features learns to give the chosen answer a higher score than "
        "the rejected one (the Bradley–Terry loss: −log σ(r_chosen − r_rejected)). Trained in about a second.",
        "在聊天模型自身（冻结）的特征上训练一个线性打分头，让被选中的回答得分高于被拒绝的回答（Bradley–Terry 损失：−log σ(r_选中 − r_拒绝)）。"
        "大约一秒就能训练好。",
    ),
    "feedback.train_rm": ("Train the reward model", "训练奖励模型"),
    "feedback.rm_none": ("No reward model yet.", "还没有奖励模型。"),
    "feedback.rm_status": (
        "Reward model trained on {pairs} pairs in {seconds:.1f} s · accuracy on its training pairs {train:.0%}{held}",
        "奖励模型在 {pairs} 对上训练，用时 {seconds:.1f} 秒 · 训练对上的准确率 {train:.0%}{held}",
    ),
    "feedback.rm_held": (" · on {n} held-out pairs it never saw {accuracy:.0%}", " · 在 {n} 对从未见过的留出对上 {accuracy:.0%}"),
    "feedback.best_of_n": ("Best-of-n: alignment without training", "Best-of-n：不训练也能“对齐”"),
    "feedback.best_of_n_help": (
        "Sample n answers and keep the one the reward model scores highest. No weight changes: the cost is n times "
        "the generation.",
        "采样 n 个回答，保留奖励模型打分最高的那个。不改任何权重：代价是生成 n 倍的内容。",
    ),
    "feedback.n": ("n", "n"),
    "feedback.sample_n": ("Sample and rank", "采样并排序"),
    "feedback.best": ("best", "最佳"),
    "feedback.step3": ("### 3 · Policy update (DPO)", "### 3 · 更新策略（DPO）"),
    "feedback.step3_help": (
        "DPO raises the probability of chosen answers and lowers that of rejected ones, relative to the original "
        "model (the reference), on LoRA over the shared weights. β holds the policy near the reference: its "
        "implicit reward is β·log(π/π_ref). The KL curve shows how far the policy's next-token distributions have "
        "moved from the original's (nats per token, exact over the vocabulary, on two of the chosen answers).",
        "DPO 相对于原始模型（参考模型）提高被选中回答的概率、降低被拒绝回答的概率，训练的是共享权重上的 LoRA。β 把策略拉在参考模型附近：其隐含奖励是 β·log(π/π_ref)。"
        "KL 曲线显示策略的下一词元分布离原模型有多远（每个词元的 nats，在整个词表上精确计算，取两个被选中的回答）。",
    ),
    "feedback.beta": ("β (beta)", "β（beta）"),
    "feedback.batch": ("Pairs per step", "每步偏好对数"),
    "feedback.beta_info": ("Lower = the policy may drift further from the original (and hack the reward).",
                           "越低 = 策略可以离原模型越远（也越容易钻奖励的空子）。"),
    "feedback.start": ("Start DPO", "开始 DPO"),
    "feedback.status_idle": ("Not trained yet: collect or load pairs, then press Start DPO.",
                             "尚未训练：收集或载入偏好对，然后点击“开始 DPO”。"),
    "feedback.status_starting": ("Preparing: tokenizing the pairs, computing the reference model's log-probabilities…",
                                 "准备中：对偏好对分词，计算参考模型的对数概率……"),
    "feedback.status_training": ("Training… step {step} of {steps}", "训练中……第 {step}/{steps} 步"),
    "feedback.status_comparing": ("Trained ({step} steps). Answering held-out prompts before and after…",
                                  "训练完成（{step} 步）。正在回答留出提示（前后对比）……"),
    "feedback.status_done": ("Done: {step} steps. Compare below, or chat with it in the Chat tab.",
                             "完成：{step} 步。看下面的对比，或到“聊天”页和它对话。"),
    "feedback.status_stopped": ("Stopped at step {step}: the adapter trained so far is kept.",
                                "在第 {step} 步停止：保留到目前为止训练的适配器。"),
    "feedback.status_timeout": ("The time budget ran out at step {step}: the adapter trained so far is kept.",
                                "时间预算在第 {step} 步用完：保留到目前为止训练的适配器。"),
    "feedback.status_diverged": (
        "A value became NaN at step {diverged}: training stopped and the last good adapter (step {restored}) was "
        "restored. Try a lower learning rate.",
        "第 {diverged} 步出现了 NaN：训练已停止，并恢复了最后一个正常的适配器（第 {restored} 步）。请试试更低的学习率。",
    ),
    "feedback.status_error": ("Training failed: {error}", "训练失败：{error}"),
    "feedback.stats": (
        "step {step}/{steps} · {seconds:.0f} s · {speed:.2f} steps/s · margin {margin:+.2f} · accuracy "
        "{accuracy:.0%} · KL {kl:.3f}",
        "第 {step}/{steps} 步 · {seconds:.0f} 秒 · {speed:.2f} 步/秒 · 差距 {margin:+.2f} · 准确率 {accuracy:.0%} · KL {kl:.3f}",
    ),
    "feedback.plot_rewards": ("Implicit rewards β·log(π/π_ref)", "隐含奖励 β·log(π/π_ref)"),
    "feedback.plot_health": ("Pair accuracy and KL(policy ‖ original)", "偏好对准确率与 KL(策略 ‖ 原模型)"),
    "feedback.curve_chosen": ("chosen", "被选中"),
    "feedback.curve_rejected": ("rejected", "被拒绝"),
    "feedback.curve_margin": ("margin", "差距"),
    "feedback.curve_accuracy": ("accuracy", "准确率"),
    "feedback.curve_kl": ("KL (nats/token)", "KL（nats/词元）"),
    "feedback.x_step": ("step", "步"),
    "feedback.y_reward": ("reward", "奖励"),
    "feedback.y_value": ("value", "数值"),
    "feedback.compare_title": (
        "Held-out prompts, before and after (greedy, {tokens} tokens at most; reward = the reward model's score)",
        "留出提示的前后对比（贪心解码，最多 {tokens} 个词元；奖励 = 奖励模型的打分）",
    ),
    "feedback.col_prompt": ("Prompt", "提示"),
    "feedback.col_before": ("Original model", "原始模型"),
    "feedback.col_chosen": ("Chosen", "被选中"),
    "feedback.col_rejected": ("Rejected", "被拒绝"),
    "feedback.col_after": ("After DPO", "DPO 之后"),
    "feedback.chars": ("{n} chars", "{n} 字符"),
    "feedback.mean_line": (
        "Mean length {before:.0f} → {after:.0f} characters ({change:+.0%}) · mean reward {rb:+.2f} → {ra:+.2f}",
        "平均长度 {before:.0f} → {after:.0f} 字符（{change:+.0%}）· 平均奖励 {rb:+.2f} → {ra:+.2f}",
    ),
    "feedback.no_comparison": ("The comparison appears here when DPO ends.", "DPO 结束后，这里会显示对比。"),
    "feedback.hacking": (
        "**Reward hacking:** DPO keeps pushing chosen answers up and rejected ones down; with too high a learning "
        "rate (or too low a β) nothing holds the policy near the original, so it exploits whatever most separates "
        "the two (here: emoji) until the text degenerates, while the training margin keeps rising. Watch the KL.",
        "**奖励投机：**DPO 会不断抬高被选中回答、压低被拒绝回答；学习率太高（或 β 太低）时，没有什么能把策略拉在原模型附近，"
        "它就会利用最能区分两者的特征（这里是表情符号），直到文本退化，而训练中的差距却还在上升。注意看 KL。",
    ),
    "feedback.chat_hint": (
        "Chat with the aligned model: open the **Chat** tab and pick **Aligned (DPO)** under *Model*.",
        "和对齐后的模型聊天：打开**聊天**页，在*模型*里选择**对齐后（DPO）**。",
    ),
    "feedback.error_need_rm": ("Train the reward model first (step 2).", "请先训练奖励模型（第 2 步）。"),
    "tuning.error_empty_field": ("Row {row} has an empty {field}.", "第 {row} 行的 {field} 为空。"),
    "tuning.error_same": ("Row {row}: the chosen and the rejected answers are the same, so there is no preference "
                          "to learn.", "第 {row} 行：被选中和被拒绝的回答相同，没有可学习的偏好。"),
    "tuning.error_too_few_pairs": ("{n} pair(s): the reward model and DPO need at least {minimum}.",
                                   "只有 {n} 对：奖励模型和 DPO 至少需要 {minimum} 对。"),
    "tuning.error_empty_prompt": ("Type a prompt first.", "请先输入提示。"),
    "tuning.error_no_variety": ("The model gave the same answer every time; try a more open prompt.",
                                "模型每次都给出同样的回答；换个更开放的问题试试。"),
    "tuning.error_n": ("n must be between 1 and 8.", "n 必须在 1 到 8 之间。"),
    # --- feedback strings (end) ---
    # --- serving strings (start) ---
    "chat.waiting": ("⏳ Every place is taken: your reply is number {place} in line and starts as soon as one is free.",
                     "⏳ 所有位置都已占用：你的回复排在第 {place} 位，一有空位就开始。"),
    "serving.busy": ("The server is busy: you are number {place} in line, and the line is full ({running} replies "
                     "are being written now). Please try again in a minute.",
                     "服务器正忙：你排在第 {place} 位，队列已满（正在生成 {running} 个回复）。请稍后再试。"),
    # --- serving strings (end) ---
    # --- remote strings (start) ---
    "chat.model_server": ("Server (OpenAI-compatible)", "服务器（OpenAI 兼容）"),
    "chat.server_url": ("Server URL", "服务器地址"),
    "chat.server_url_info": ("Any OpenAI-compatible server: vLLM, TGI, llama.cpp's server, Ollama (…/v1).",
                             "任何 OpenAI 兼容的服务器：vLLM、TGI、llama.cpp server、Ollama（……/v1）。"),
    "chat.server_key": ("API key (optional)", "API 密钥（可选）"),
    "chat.server_model": ("Server model", "服务器上的模型"),
    "chat.server_connect": ("List models", "列出模型"),
    "chat.server_models": ("✅ {n} model(s) at {url}", "✅ {url} 上有 {n} 个模型"),
    "chat.server_error": ("⚠️ {error} The local model still works: choose it above.",
                          "⚠️ {error} 本地模型仍可使用：在上方选择它即可。"),
    "chat.server_sent": ("The messages sent to {model} at {url}:", "发送给 {url} 上 {model} 的消息："),
    "chat.server_template": ("The server's chat template renders them as (its /apply-template):",
                             "服务器的聊天模板把它们渲染成（来自其 /apply-template）："),
    "chat.server_no_template": (
        "The server applies its own chat template and does not show it (llama.cpp's server does, at /apply-template): "
        "these messages are exactly what ChatLab sends, not the text the model reads.",
        "服务器使用自己的聊天模板，并且不公开它（llama.cpp server 会通过 /apply-template 公开）："
        "以上消息正是 ChatLab 发出的内容，而不是模型读到的文本。"),
    "chat.server_gauge": ("Server: {model} at {url} (its context window is the server's)",
                          "服务器：{url} 上的 {model}（上下文窗口由服务器决定）"),
    "next.backend": ("Model", "模型"),
    "next.backend_local": ("Local model", "本地模型"),
    "next.backend_server": ("Server (--backend-url)", "服务器（--backend-url）"),
    "next.no_server": ("No server configured: start ChatLab with --backend-url URL (or OPENAI_BASE_URL).",
                       "没有配置服务器：用 --backend-url URL（或 OPENAI_BASE_URL）启动 ChatLab。"),
    "next.server_status": (
        "{model} at {url} · {generated} tokens chosen · its top candidate: **{top}** ({p:.1%}). The server returns "
        "only its {k} most likely tokens: the shaped bars reshape those {k}.",
        "{url} 上的 {model} · 已选 {generated} 个词元 · 最可能的候选：**{top}**（{p:.1%}）。服务器只返回它最可能的 {k} "
        "个词元：右侧的重塑结果只基于这 {k} 个。"),
    "tokens.server_row": ("server: {model}", "服务器：{model}"),
    # --- remote strings (end) ---
}

LANGUAGES = ("en", "zh")

_english = {key: pair[0] for key, pair in STRINGS.items()}
_chinese = {key: pair[1] for key, pair in STRINGS.items()}
# svelte-i18n matches the browser's locale (zh-CN, zh-TW, ...) to its language; list the common ones explicitly.
I18N = gr.I18n(en=_english, zh=_chinese, **{"zh-CN": _chinese, "zh-TW": _chinese, "zh-HK": _chinese})
T = I18N


def language(request: gr.Request | None) -> str:
    """'zh' when the browser prefers Chinese, else 'en'."""
    header = ""
    if request is not None and request.headers is not None:
        header = request.headers.get("accept-language", "") or ""
    first = header.split(",")[0].strip().lower()
    return "zh" if first.startswith("zh") else "en"


def tr(request: gr.Request | None, key: str, **fmt) -> str:
    """A server-side string in the request's language, formatted with `fmt`."""
    english, chinese = STRINGS[key]
    text = chinese if language(request) == "zh" else english
    return text.format(**fmt) if fmt else text


def localized(render, *args):
    """An initial value computed per page load, so server-side text comes in the browser's language:
    gr.HTML(localized(progress_html, None)) renders progress_html(None, request) for each visitor."""

    def value(request: gr.Request = None) -> str:  # None when gradio renders the value at build time
        return render(*args, request)

    return value


def both(key: str) -> str:
    """A string in both languages, "Prompt · 提示", where Gradio shows text as is (a Dataframe's column headers do
    not go through gr.I18n: they would show its metadata)."""
    english, chinese = STRINGS[key]
    return f"{english} · {chinese}"
