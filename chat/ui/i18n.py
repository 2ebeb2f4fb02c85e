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
