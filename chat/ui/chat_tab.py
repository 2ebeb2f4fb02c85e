"""The Chat tab: streaming chat with a local instruct model, a stop that really stops, stats, and the exact prompt."""
from __future__ import annotations

import json
import re
import threading
import time
from typing import Iterator

import gradio as gr

from chat import budget, downloads
from chat.llm import backends, generation, models, prompt as prompt_module, remote
from chat.llm.params import LIMITS, GenerationParams
from chat.settings import Settings
from chat.ui import chat_probabilities as probabilities, limits
from chat.ui.handlers import bind
from chat.ui.i18n import STRINGS, T, tr

SPECIAL = re.compile(r"(<\|[a-z_]+\|>)")  # <|im_start|>, <|im_end|>, <|endoftext|> ...
_CANCELS: dict[str, threading.Event] = {}  # session -> the cancel event of its reply in progress
_CANCELS_LOCK = threading.Lock()


def model_status(request: gr.Request, settings: Settings = Settings()) -> str:
    try:
        loaded = models.get_model(settings.model)
    except models.ModelLoadError as error:
        return "⚠️ " + tr(request, "chat.model_error", error=error)
    return tr(request, "chat.model_status", title=loaded.title, dtype=str(loaded.dtype).replace("torch.", ""),
              device=loaded.device.type, context=loaded.context_window,
              source=tr(request, f"chat.source_{loaded.source}"),
              seconds=loaded.load_seconds)


def prompt_view(prompt_text: str) -> list[tuple[str, str | None]]:
    """The rendered template as spans, special tokens labelled so they stand out."""
    return [(part, "special" if SPECIAL.fullmatch(part) else None) for part in SPECIAL.split(prompt_text) if part]


def gauge(used: int, window: int, request: gr.Request | None) -> str:
    percent = 100 * used / window if window else 0
    filled = min(20, round(percent / 5))
    return f"`{'█' * filled}{'░' * (20 - filled)}` " + tr(request, "chat.gauge", used=used, window=window,
                                                        percent=percent)


def stats_line(stats: generation.ReplyStats, request: gr.Request | None) -> str:
    ttft = f"{stats.ttft_s:.2f} s" if stats.ttft_s is not None else "–"
    speed = tr(request, "chat.speed", value=stats.tokens_per_s) if stats.tokens_per_s else "–"
    reason = tr(request, f"chat.reason_{stats.finish_reason or 'stop'}")
    return "📊 " + tr(request, "chat.stats", new_tokens=stats.new_tokens, ttft=ttft, speed=speed, reason=reason)


def conversation(history: list[dict], system: str, message: str | None = None) -> list[dict]:
    """The turns the model should see: system prompt, the history without stats notes, then the new message.
    ValueError for a history that is not a list of messages (an API client's history=5)."""
    if system is not None and not isinstance(system, str):
        raise ValueError(f"The system prompt must be text, got {type(system).__name__}.")
    turns = [{"role": "system", "content": system}] if system and system.strip() else []
    turns += prompt_module.normalize_messages([item for item in prompt_module.check_history(history) if not (
        isinstance(item, dict) and (item.get("metadata") or {}).get("title"))])  # the stats notes left out
    if message is not None:
        turns.append({"role": "user", "content": message})
    return prompt_module.normalize_messages(turns)


def refresh_interval() -> float:
    """Seconds between two screen updates of one reply, given how many replies are streaming now (the server's
    ~25 updates a second are shared: see generation.pace)."""
    with _CANCELS_LOCK:
        streaming = len(_CANCELS)
    return generation.pace(streaming)


def backend(variant: str, url: str | None, model: str | None, key: str | None, settings: Settings,
            request: gr.Request | None) -> backends.ChatBackend:
    """The model this reply comes from: the shared chat model, the one this session trained (Fine-tune tab: "sft",
    Human feedback tab: "dpo"), or a server (the URL typed in the tab, else the one ChatLab was started with)."""
    try:
        server = None
        if variant == "server" and url and url.strip():
            server = remote.backend_for(settings.server, url, model or "", key or "")
        elif variant == "server" and (model or "").strip() and remote.configured(settings.server) is not None:
            configured = remote.configured(settings.server)
            server = remote.Backend(configured.url, model.strip(), configured.key, configured.timeout)
        return backends.backend_for(variant, settings.model, getattr(request, "session_hash", None), server,
                                    settings.server)
    except remote.RemoteError as error:
        raise gr.Error(tr(request, "chat.server_error", error=error)) from None
    except backends.NoSuchModel as error:
        key = f"chat.no_{error.variant}"
        raise gr.Error(tr(request, key) if key in STRINGS else
                       tr(request, "chat.server_error", error=error)) from None
    except ValueError as error:
        raise gr.Error(tr(request, "chat.bad_input", error=error)) from None


def list_server_models(url: str, key: str, current: str | None, request: gr.Request, settings: Settings = Settings()):
    """The "List models" button: the server's GET /v1/models in the dropdown, or why not."""
    try:
        chosen = backend("server", url, "", key, settings, request)
        names = remote.list_models(chosen.server, fresh=True)
    except gr.Error as error:
        return gr.update(), f"{error.message}"
    except remote.RemoteError as error:
        return gr.update(), tr(request, "chat.server_error", error=error)
    value = current if current in names else names[0]
    return (gr.update(choices=[(remote.short_name(n), n) for n in names], value=value),
            tr(request, "chat.server_models", n=len(names), url=chosen.where))


def prompt_panel(prompt, chosen: backends.ChatBackend, request) -> dict:
    """The exact prompt: the rendered template where it is known (special tokens highlighted, with its token count),
    else the messages as sent, then the server's rendering of them where it shows it."""
    if prompt.ids:
        return gr.update(value=prompt_view(prompt.text), label=tr(request, "chat.prompt_tokens", tokens=len(prompt.ids)))
    sent = json.dumps(prompt.messages, ensure_ascii=False, indent=1)
    spans = [(tr(request, "chat.server_sent", model=chosen.title, url=chosen.where) + "\n", None), (sent + "\n\n", None)]
    if prompt.text is None:
        spans.append((tr(request, "chat.server_no_template"), None))
    else:
        spans += [(tr(request, "chat.server_template") + "\n", None), *prompt_view(prompt.text)]
    return gr.update(value=spans, label=T("chat.prompt_panel"))


def gauge_now(stream, chosen: backends.ChatBackend, request) -> str:
    """The context gauge: prompt + reply so far against the context window, or the server's line (its window is its
    own business)."""
    if chosen.context_window is None:
        return tr(request, "chat.server_gauge", model=chosen.title, url=chosen.where)
    return gauge(len(stream.prompt.ids) + stream.tokens, chosen.context_window, request)


def respond(message: str, history: list[dict], system: str, temperature: float, top_p: float, top_k: int,
            max_new_tokens: int, repetition_penalty: float, seed: int, variant: str = "original",
            server_url: str = "", server_model: str = "", server_key: str = "", show_probs: bool = False,
            request: gr.Request = None, settings: Settings = Settings()):
    """Stream a reply: yields (messages, stats, context gauge, prompt view, token view, tokens) as tokens arrive.
    Every input is checked before the model runs; a bad one is a clear gr.Error."""
    params = (temperature, top_p, top_k, max_new_tokens, repetition_penalty, seed)
    yield from _reply(message, history, system, params, (variant, server_url, server_model, server_key), show_probs,
                      [], request, settings)


def continue_reply(history: list[dict], system: str, temperature: float, top_p: float, top_k: int,
                   max_new_tokens: int, repetition_penalty: float, seed: int, variant: str, server_url: str,
                   server_model: str, server_key: str, tokens: list[dict], index: int | None,
                   alternative: int | None, request: gr.Request = None, settings: Settings = Settings()):
    """"Continue from here with this one": the last reply again, its tokens kept up to the clicked one, that one
    replaced by the chosen alternative, the rest written anew (with max new tokens more at most)."""
    kept_ids = probabilities.prefix(tokens, index, alternative, request)
    turns = list(history or [])
    while turns and isinstance(turns[-1], dict) and turns[-1].get("role") == "assistant":
        turns.pop()  # the reply (and its stats note) being rewritten
    if not turns:
        raise gr.Error(tr(request, "chat.prob_pick_token"))
    _, text, prob = tokens[index]["alternatives"][int(alternative)]
    kept = tokens[:index] + [{"id": kept_ids[-1], "text": text, "prob": prob, "model_prob": prob,
                              "alternatives": tokens[index]["alternatives"], "picked": True}]
    params = (temperature, top_p, top_k, max_new_tokens, repetition_penalty, seed)
    for answer, *rest in _reply(turns[-1]["content"], turns[:-1], system, params,
                                (variant, server_url, server_model, server_key), True, kept, request, settings):
        yield (turns + (answer if isinstance(answer, list) else [{"role": "assistant", "content": answer}]), *rest)


def _reply(message, history: list[dict], system: str, sampling: tuple, where: tuple, show_probs: bool,
           kept: list[dict], request: gr.Request | None, settings: Settings):
    """The reply both of the above stream: `sampling` the six generation settings, `where` (variant, server url,
    model, key), `kept` the tokens of a reply it continues (their records, as the token view keeps them)."""
    if message is not None and not isinstance(message, (str, dict, list)):
        raise gr.Error(tr(request, "chat.bad_input", error=f"The message must be text, got {type(message).__name__}."))
    message = prompt_module.flatten_content(message)
    if not message.strip():
        raise gr.Error(tr(request, "chat.bad_input", error="Type a message first."))
    variant, server_url, server_model, server_key = where
    cancel = threading.Event()
    key = getattr(request, "session_hash", None) or str(id(cancel))
    with _CANCELS_LOCK:  # the stop button can stop the prompt's trimming too
        _CANCELS[key] = cancel
    try:
        params = GenerationParams.from_inputs(*sampling)
        turns = conversation(history, system, message)
        if variant == "original" and not models.is_loaded(settings.model):
            gr.Info(tr(request, "chat.loading"))
        chosen = backend(variant, server_url, server_model, server_key, settings, request)
        stream = chosen.stream_chat(turns, params, cancel, probabilities.ALTERNATIVES if show_probs else 0,
                                    [t["id"] for t in kept])
    except remote.RemoteError as error:
        _forget(key, cancel)
        raise gr.Error(tr(request, "chat.server_error", error=error)) from None
    except models.ModelLoadError as error:
        _forget(key, cancel)
        raise gr.Error(tr(request, "chat.model_error", error=error)) from None
    except ValueError as error:
        _forget(key, cancel)
        raise gr.Error(tr(request, "chat.bad_input", error=error)) from None
    except prompt_module.CancelledError:
        _forget(key, cancel)
        return
    except gr.Error:  # no such model for this session
        _forget(key, cancel)
        raise
    notes = tr(request, "chat.dropped", n=stream.prompt.dropped) if stream.prompt.dropped else ""
    header = prompt_panel(stream.prompt, chosen, request)
    view = gr.update(value=None)  # the last reply's token view is cleared at once, filled when this one ends
    try:
        answer, shown_at, interval = "", 0.0, generation.REFRESH_S
        for delta in stream:
            if not delta:  # no token yet: say where the reply stands, and let Gradio close this if the user has gone
                place = stream.place
                waiting = tr(request, "chat.waiting", place=place) if place else notes
                yield answer, waiting, gauge_now(stream, chosen, request), header, view, gr.skip()
                header = view = gr.skip()
                continue
            answer += delta
            now = time.monotonic()
            if now - shown_at >= interval:  # the first token at once, then ~25 updates/s (fewer when crowded)
                yield answer, notes, gauge_now(stream, chosen, request), header, view, gr.skip()
                header = view = gr.skip()  # the prompt view is sent once
                shown_at, interval = now, refresh_interval()
    except remote.RemoteError as error:
        raise gr.Error(tr(request, "chat.server_error", error=error)) from None
    except RuntimeError as error:
        if isinstance(error.__cause__, budget.BusyError):
            raise limits.busy(request, error.__cause__) from None
        raise gr.Error(tr(request, "chat.bad_input", error=error)) from None
    finally:
        _forget(key, cancel)
    line = stats_line(stream.stats, request)
    messages = [{"role": "assistant", "content": answer},
                {"role": "assistant", "content": "", "metadata": {"title": line, "status": "done"}}]
    tokens = kept + probabilities.record(stream.choices) if show_probs else []
    if show_probs and not stream.choices and stream.stats.new_tokens and chosen.where:
        notes = tr(request, "chat.prob_server_none", model=chosen.title)  # a server that sends no logprobs
    yield (messages, notes, gauge_now(stream, chosen, request), header,
           probabilities.spans(tokens) if show_probs else None, tokens)


def _forget(key: str, cancel: threading.Event) -> None:
    with _CANCELS_LOCK:
        if _CANCELS.get(key) is cancel:
            del _CANCELS[key]


def chat_endpoint(settings: Settings):
    """The public `chat` API function, its defaults the chat model's own (see models.chat_defaults)."""
    d = models.chat_defaults(settings.model.name)

    def chat(message: str, history: list[dict] | None = None, system: str = STRINGS["chat.system_default"][0],
             temperature: float = d.temperature, top_p: float = d.top_p, top_k: int = d.top_k,
             max_new_tokens: int = d.max_new_tokens, repetition_penalty: float = d.repetition_penalty,
             seed: int = -1, model: str = "original", request: gr.Request = None) -> Iterator[str]:
        """Stream the chat model's reply to `message` after `history`: yields the answer so far. The sampling
        defaults are the model's own (SmolLM2: its card's temperature 0.2, top-p 0.9).

        Args:
            message: the user's new message.
            history: the earlier turns, oldest first, as [{"role": "user" or "assistant", "content": "..."}].
            system: the system prompt ("" for none).
            temperature: 0 = always the most likely token (greedy); up to 2, higher = more varied.
            top_p: sample only from the most likely tokens whose probabilities add up to top_p (0.01-1; 1 = off).
            top_k: sample only from the top_k most likely tokens (0 = off).
            max_new_tokens: length limit of the reply, in tokens (1-4096).
            repetition_penalty: above 1 discourages tokens already in the text (0.5-2; 1 = off).
            seed: -1 = random; any other seed gives the same reply for the same inputs.
            model: "original" (the chat model), "sft" / "dpo" (the model this API session fine-tuned or aligned),
                or "server" (the OpenAI-compatible server ChatLab was started with, --backend-url).
        """
        for answer, *_ in respond(message, history, system, temperature, top_p, top_k, max_new_tokens,
                                  repetition_penalty, seed, model, "", "", "", False, request, settings):
            yield answer if isinstance(answer, str) else answer[0]["content"]

    return chat


def stop_reply(request: gr.Request) -> None:
    """The stop button: halt this session's generate() right away (Gradio's cancel alone leaves the thread running)."""
    with _CANCELS_LOCK:
        cancel = _CANCELS.get(getattr(request, "session_hash", None))
    if cancel is not None:
        cancel.set()


def export(history: list[dict], system: str, request: gr.Request = None):
    """Markdown and JSON files of the conversation (stats notes left out); not while a reply is still streaming
    (the chatbot changes ~25 times a second then, and writing files each time would slow the model down)."""
    with _CANCELS_LOCK:
        streaming = getattr(request, "session_hash", None) in _CANCELS
    if streaming:
        return gr.skip(), gr.skip()
    try:
        turns = conversation(history, system)
    except ValueError:
        return gr.skip(), gr.skip()
    folder = downloads.folder("chat", getattr(request, "session_hash", None))  # one per session, rewritten
    markdown = "\n\n".join(f"**{t['role']}**:\n\n{t['content']}" for t in turns) + "\n"
    (folder / "conversation.md").write_text(markdown, encoding="utf-8")
    (folder / "conversation.json").write_text(json.dumps(turns, ensure_ascii=False, indent=2), encoding="utf-8")
    return str(folder / "conversation.md"), str(folder / "conversation.json")


def build(settings: Settings) -> None:
    defaults = models.chat_defaults(settings.model.name)

    with gr.Tab(T("chat.tab"), id="chat"):
        gr.Markdown(T("chat.intro"))
        status = gr.Markdown(elem_id="chat-model-status")
        # The prompt panel is declared first (ChatInterface needs its outputs to exist); CSS shows it on the right.
        with gr.Row(equal_height=False, elem_classes="chat-row"):
            with gr.Column(scale=2):
                context = gr.Markdown(elem_id="chat-gauge")
                gr.Markdown(T("chat.prompt_help"))
                prompt = gr.HighlightedText(label=T("chat.prompt_panel"), color_map={"special": "#fbbf24"},
                                            show_legend=False, show_inline_category=False, elem_id="chat-prompt",
                                            elem_classes="token-pane")
                with gr.Accordion(T("chat.export"), open=False):
                    with gr.Row():
                        export_md = gr.DownloadButton(T("chat.export_md"), elem_id="chat-export-md")
                        export_json = gr.DownloadButton(T("chat.export_json"), elem_id="chat-export-json")
            with gr.Column(scale=3):
                with gr.Accordion(T("chat.settings"), open=False):
                    gr.Markdown(T("chat.defaults_note"), elem_id="chat-defaults-note")
                    system = gr.Textbox(STRINGS["chat.system_default"][0], label=T("chat.system"), lines=2,
                                        elem_id="chat-system")
                    with gr.Row():
                        temperature = limits.setting("temperature", defaults.temperature, label=T("chat.temperature"),
                                                     info=T("chat.temperature_quality"), elem_id="chat-temperature")
                        top_p = limits.setting("top_p", defaults.top_p, label=T("chat.top_p"),
                                               info=T("chat.top_p_quality"), elem_id="chat-top-p")
                        top_k = limits.setting("top_k", defaults.top_k, label=T("chat.top_k"),
                                               info=T("chat.top_k_quality"), elem_id="chat-top-k")
                    with gr.Row():
                        max_new_tokens = limits.setting("max_new_tokens", defaults.max_new_tokens,
                                                        label=T("chat.max_new_tokens"),
                                                        info=T("chat.max_new_tokens_info"),
                                                        elem_id="chat-max-new-tokens")
                        repetition_penalty = limits.setting("repetition_penalty", defaults.repetition_penalty,
                                                            label=T("chat.repetition_penalty"),
                                                            info=T("chat.repetition_penalty_quality"),
                                                            elem_id="chat-repetition-penalty")
                        seed = gr.Number(-1, precision=0, label=T("chat.seed"), info=T("chat.seed_info"), minimum=-1,
                                         maximum=LIMITS["seed"][1], elem_id="chat-seed")
                variant = gr.Radio([(T("chat.model_original"), "original"), (T("chat.model_sft"), "sft"),
                                    (T("chat.model_dpo"), "dpo"), (T("chat.model_server"), "server")],
                                   value="original", label=T("chat.model"), info=T("chat.model_info"),
                                   elem_id="chat-model")
                configured = remote.configured(settings.server)
                with gr.Group(visible=False, elem_id="chat-server") as server_box:
                    with gr.Row():
                        server_url = gr.Textbox(configured.url if configured else "", label=T("chat.server_url"),
                                                info=T("chat.server_url_info"), scale=3,
                                                placeholder="http://127.0.0.1:8080/v1", elem_id="chat-server-url")
                        server_key = gr.Textbox(label=T("chat.server_key"), type="password", scale=1,
                                                elem_id="chat-server-key")
                    with gr.Row():
                        server_model = gr.Dropdown(
                            [(remote.short_name(configured.model), configured.model)] if configured and
                            configured.model else [], value=configured.model if configured and configured.model
                            else None, allow_custom_value=True, label=T("chat.server_model"), scale=3,
                            elem_id="chat-server-model")
                        connect = gr.Button(T("chat.server_connect"), scale=1, elem_id="chat-server-connect")
                    server_status = gr.Markdown(elem_id="chat-server-status")
                notes = gr.Markdown(elem_id="chat-notes")
                show_probs = gr.Checkbox(False, label=T("chat.prob_show"), info=T("chat.prob_show_info"),
                                         elem_id="chat-show-probs")
                token_view = gr.HighlightedText(label=T("chat.prob_view"), color_map=probabilities.COLORS,
                                                show_legend=True, show_inline_category=False, combine_adjacent=False,
                                                elem_id="chat-token-view", elem_classes="token-pane", render=False)
                tokens = gr.State([])  # the last reply's tokens, probabilities and alternatives
                chatbot = gr.Chatbot(height=460, elem_id="chat-chatbot", buttons=["copy"], label="SmolLM2")
                first_event = limits.next_event_id()
                interface = gr.ChatInterface(
                    bind(respond, settings=settings), chatbot=chatbot, editable=True, api_name="chat_ui", api_visibility="undocumented",
                    textbox=gr.Textbox(placeholder=T("chat.placeholder"), elem_id="chat-input", submit_btn=True,
                                       stop_btn=True),
                    additional_inputs=[system, temperature, top_p, top_k, max_new_tokens, repetition_penalty, seed,
                                       variant, server_url, server_model, server_key, show_probs],
                    additional_outputs=[notes, context, prompt, token_view, tokens],
                    examples=[[STRINGS[f"chat.example_{i}"][0]] for i in range(1, 5)],
                    run_examples_on_click=True, concurrency_limit=budget.limit("chat"), fill_height=False,
                )
                # its submit, retry, edit, example and API events run the model: they join the "chat" group
                limits.join("chat", [fn for fn in limits.events_since(first_event)
                                     if fn.concurrency_limit == budget.limit("chat")])
                with gr.Group(visible=False, elem_id="chat-probs") as probs_box:
                    token_view.render()
                    gr.Markdown(T("chat.prob_help"))
                    with gr.Row(equal_height=False):
                        top = gr.Label(label=T("chat.prob_top"), show_label=True, elem_id="chat-prob-top", scale=1)
                        with gr.Column(scale=1):
                            detail = gr.Markdown(elem_id="chat-prob-detail")
                            alternative = gr.Radio([], label=T("chat.prob_alternative"), type="value",
                                                   elem_id="chat-prob-alternative")
                            again = gr.Button(T("chat.prob_continue"), elem_id="chat-prob-continue")
                selected = gr.State(None)  # the clicked token's index
        gr.api(chat_endpoint(settings), api_name="chat", **limits.heavy("chat"))
        interface.textbox.stop(stop_reply, None, None, queue=False, api_visibility="private")
        chatbot.change(export, [chatbot, system], [export_md, export_json], api_visibility="private",
                       show_progress="hidden", trigger_mode="always_last")
        gr.on([chatbot.clear], lambda: ("", "", [], None, []), None, [notes, context, prompt, token_view, tokens],
              api_visibility="private")
        show_probs.change(lambda on: gr.update(visible=on), show_probs, probs_box, queue=False,
                          api_visibility="private")

        def clicked(tokens_now: list[dict], evt: gr.SelectData, request: gr.Request):
            return probabilities.detail(tokens_now, evt.index if isinstance(evt.index, int) else -1, request)

        token_view.select(clicked, tokens, [top, detail, alternative, selected], api_visibility="private",
                          queue=False)
        gr.on([token_view.change], lambda: (None, "", gr.update(choices=[], value=None), None), None,
              [top, detail, alternative, selected], api_visibility="private", queue=False)
        again.click(bind(continue_reply, settings=settings),
                    [chatbot, system, temperature, top_p, top_k, max_new_tokens, repetition_penalty, seed, variant,
                     server_url, server_model, server_key, tokens, selected, alternative],
                    [chatbot, notes, context, prompt, token_view, tokens], api_visibility="private",
                    **limits.heavy("chat")).then(lambda value: (value, value), chatbot,
                                                 [interface.chatbot_state, interface.chatbot_value], queue=False,
                                                 api_visibility="private")
        variant.change(lambda chosen: gr.update(visible=chosen == "server"), variant, server_box, queue=False,
                       api_visibility="private")
        gr.on([connect.click, server_url.submit], bind(list_server_models, settings=settings), [server_url, server_key, server_model],
              [server_model, server_status], api_visibility="private")
        # On page load (no inputs): shows the model once it is ready; app.py preloads it at start-up.
        gr.on(None, bind(model_status, settings=settings), None, status, api_visibility="private", concurrency_limit=None,
              show_progress="minimal")
