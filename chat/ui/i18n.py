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
    # --- chat strings (end) ---
    # --- next_token strings (start) ---
    # --- next_token strings (end) ---
    # --- mnist strings (start) ---
    # --- mnist strings (end) ---
    # --- tinygpt strings (start) ---
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
