"""The Tokens tab: live token highlighting and exact counts for ChatGPT's encodings, side by side."""
from __future__ import annotations

import json

import gradio as gr
import pandas as pd

from chat import tokens
from chat.llm import remote
from chat.settings import ServerSettings, Settings
from chat.ui.i18n import T, tr

VIEW_LIMIT = 5000  # tokens rendered per pane; counts always cover the whole text
LIVE_MAX_CHARS = 1_000_000  # the live view (every keystroke, every tokenizer) counts texts up to this size
PANES = tuple(tokens.TIKTOKEN_ENCODINGS)  # o200k_base, cl100k_base, gpt2 side by side
PALETTE = ("#fde68a", "#a7f3d0", "#bfdbfe", "#fbcfe8", "#ddd6fe", "#fed7aa")
MODEL_CHOICES = ["gpt-5", "gpt-4.1", "gpt-4o", "gpt-4o-mini", "o3", "gpt-4", "gpt-3.5-turbo",
                 "text-embedding-3-small", "davinci", "o200k_base", "cl100k_base", "gpt2"]
EXAMPLES = [
    ["这是一段示例文本。"],
    ["ChatGPT doesn't read letters: it reads tokens, chunks of text learned by byte-pair encoding."],
    ["我爱北京天安门，天安门上太阳升。"],
    ["def fib(n):\n\tif n < 2:\n\t\treturn n\n\treturn fib(n - 1) + fib(n - 2)\n"],
    ["Emoji cost more than you think: 👩‍💻🎉🇨🇳 and <|endoftext|> is just text here."],
]
DEFAULT_MESSAGES = json.dumps(
    [{"role": "system", "content": "You are a helpful assistant."},
     {"role": "user", "content": "这是一段示例文本。How many tokens is it?", "name": "alice"}],
    ensure_ascii=False, indent=2)
WHITESPACE = str.maketrans({" ": "·", "\t": "→", "\n": "↵\n"})


def count_tokens(text: str, model: str = "gpt-4o") -> int:
    """ChatGPT's exact token count of `text`, with OpenAI's own tokenizer (tiktoken) for that model.

    Args:
        text: the text to count.
        model: an OpenAI model name (gpt-4o, gpt-4.1, gpt-3.5-turbo, text-embedding-3-small, ...) or an encoding name
            (o200k_base, cl100k_base, gpt2).
    """
    try:
        return tokens.count_tokens(text, model)
    except (ValueError, TypeError) as error:
        raise gr.Error(str(error)) from error


def _pane(encoded: tokens.Encoded, show_ids: bool, show_whitespace: bool, request: gr.Request | None):
    tokenizer = tokens.get_tokenizer(encoded.encoding)
    view = tokens.group_tokens(encoded.ids, tokenizer.token_bytes, VIEW_LIMIT)
    spans, color_map = [], {}
    for position, segment in enumerate(view):
        shown = segment.text.translate(WHITESPACE) if show_whitespace else segment.text
        # Without ids the label only picks a colour; with ids it is the ids, shown inline after the token.
        label = " ".join(map(str, segment.ids)) if show_ids else str(position % len(PALETTE))
        color_map.setdefault(label, PALETTE[position % len(PALETTE)])
        spans.append((shown, label))
    label = tr(request, "tokens.pane", encoding=encoded.encoding, tokens=encoded.tokens)
    return gr.update(value=spans, color_map=color_map, show_inline_category=show_ids, label=label)


SERVER_COUNT_TIMEOUT_S = 3.0  # the live count never waits longer for the server's tokenizer


def server_rows(text: str, server: ServerSettings, request) -> list[list]:
    """The comparison row of the server ChatLab was started with (--backend-url), counted by the server's own
    tokenizer endpoint; none when there is no server, it has no such endpoint, or it does not answer."""
    configured = remote.configured(server)
    if configured is None:
        return []
    backend = remote.Backend(configured.url, configured.model, configured.key, SERVER_COUNT_TIMEOUT_S)
    try:
        count = remote.count_tokens(backend, text)
        model = remote.resolve_model(backend).model if count is not None else ""  # the server's list, cached
    except remote.RemoteError:
        return []
    if count is None:
        return []
    name = tr(request, "tokens.server_row", model=remote.short_name(model))
    return [[name, backend.url, count, len(text), round(len(text) / count, 2) if count else 0.0]]


def highlight(text: str, model: str, show_ids: bool, show_whitespace: bool, special: bool,
              server: ServerSettings = ServerSettings(), request: gr.Request | None = None):
    """Everything the tab shows for a text: headline count, one highlighted pane per encoding, comparison table."""
    text = text if isinstance(text, str) else ""
    if len(text) > LIVE_MAX_CHARS:  # 10 MB through every tokenizer on each keystroke would hold the server for seconds
        note = tr(request, "tokens.live_too_long", n=len(text), limit=LIVE_MAX_CHARS)
        return note, *[gr.update(value=[]) for _ in PANES], gr.update(value="", visible=False), None
    encoded = {e.encoding: e for e in tokens.encode_all(text, special, wait=False)}  # never wait for the chat model
    try:
        name = tokens.encoding_name_for(model or "gpt-4o")
        headline = tr(request, "tokens.headline", tokens=encoded[name].tokens, characters=len(text),
                      encoding=name, models=tokens.tokenizer_models(name))
    except ValueError as error:
        headline = f"⚠️ {error}"
    longest = max(e.tokens for e in encoded.values())
    note = tr(request, "tokens.capped", shown=VIEW_LIMIT, total=longest) if longest > VIEW_LIMIT else ""
    table = pd.DataFrame(
        [[e.encoding, e.models, e.tokens, e.characters, e.chars_per_token or 0.0] for e in encoded.values()]
        + server_rows(text, server, request),
        columns=[tr(request, key) for key in ("tokens.col_encoding", "tokens.col_models", "tokens.col_tokens",
                                              "tokens.col_characters", "tokens.col_ratio")])
    panes = [_pane(encoded[name], show_ids, show_whitespace, request) for name in PANES]
    return headline, *panes, gr.update(value=note, visible=bool(note)), table


def _selected(encoding: str):
    def select(text: str, special: bool, event: gr.SelectData, request: gr.Request):
        view = tokens.segments(text or "", encoding, special, VIEW_LIMIT)
        if event.index is None or not 0 <= event.index < len(view):
            return ""
        segment = view[event.index]
        partial = tr(request, "tokens.selected_partial", n=len(segment.ids)) if segment.partial else ""
        return tr(request, "tokens.selected", text=json.dumps(segment.text, ensure_ascii=False), partial=partial,
                  ids=", ".join(map(str, segment.ids)), bytes=tokens.describe_bytes(segment.raw))
    return select


def count_messages(messages_json: str, model: str, request: gr.Request):
    try:
        messages = json.loads(messages_json or "[]")
    except json.JSONDecodeError as error:
        return "⚠️ " + tr(request, "tokens.bad_json", error=error)
    try:
        total = tokens.count_chat_tokens(messages, model or "gpt-4o")
    except (ValueError, TypeError) as error:
        return "⚠️ " + tr(request, "tokens.bad_messages", error=error)
    return tr(request, "tokens.chat_count", tokens=total, n=len(messages), model=model,
              encoding=tokens.encoding_name_for(model or "gpt-4o"))


def build(settings: Settings) -> None:
    def live(text: str, model: str, show_ids: bool, show_whitespace: bool, special: bool, request: gr.Request):
        return highlight(text, model, show_ids, show_whitespace, special, settings.server, request)

    with gr.Tab(T("tokens.tab"), id="tokens"):
        gr.Markdown(T("tokens.intro"))
        with gr.Row():
            with gr.Column(scale=3):
                text = gr.Textbox(label=T("tokens.text"), placeholder=T("tokens.text_placeholder"), lines=5,
                                  max_lines=12, value=EXAMPLES[0][0], elem_id="tokens-text")
                gr.Examples(EXAMPLES, inputs=[text], label=T("tokens.examples"))
            with gr.Column(scale=1, min_width=260):
                model = gr.Dropdown(MODEL_CHOICES, value="gpt-4o", allow_custom_value=True, label=T("tokens.model"),
                                    info=T("tokens.model_info"), elem_id="tokens-model")
                show_ids = gr.Checkbox(label=T("tokens.show_ids"), elem_id="tokens-show-ids")
                show_whitespace = gr.Checkbox(label=T("tokens.show_whitespace"), elem_id="tokens-show-ws")
                special = gr.Checkbox(label=T("tokens.special"), info=T("tokens.special_info"),
                                      elem_id="tokens-special")
        headline = gr.Markdown(elem_id="tokens-headline")
        note = gr.Markdown(visible=False, elem_id="tokens-capped")
        with gr.Row(equal_height=False):
            panes = [gr.HighlightedText(label=name, show_legend=False, show_inline_category=False, combine_adjacent=False,
                                        elem_id=f"tokens-pane-{name}", elem_classes="token-pane")
                     for name in PANES]
        selected = gr.Markdown(T("tokens.select_hint"), elem_id="tokens-selected")
        table = gr.Dataframe(label=T("tokens.compare"), interactive=False, elem_id="tokens-compare")
        with gr.Accordion(T("tokens.chat_mode"), open=False):
            gr.Markdown(T("tokens.chat_rule"))
            with gr.Row():
                messages = gr.Code(DEFAULT_MESSAGES, language="json", label=T("tokens.messages"), interactive=True,
                                   scale=3, elem_id="tokens-messages")
                with gr.Column(scale=1):
                    chat_model = gr.Dropdown(MODEL_CHOICES, value="gpt-4o", allow_custom_value=True,
                                             label=T("tokens.model"))
                    chat_count = gr.Markdown(elem_id="tokens-chat-count")

        inputs = [text, model, show_ids, show_whitespace, special]
        outputs = [headline, *panes, note, table]
        # triggers=None: on page load and whenever any input changes (live, no button).
        gr.on(None, live, inputs, outputs, trigger_mode="always_last", show_progress="hidden",
              api_visibility="private")
        for name, pane in zip(PANES, panes):
            pane.select(_selected(name), [text, special], selected, api_visibility="private")
        gr.on(None, count_messages, [messages, chat_model], chat_count, trigger_mode="always_last",
              show_progress="hidden", api_visibility="private")
        gr.api(count_tokens, api_name="count_tokens")
