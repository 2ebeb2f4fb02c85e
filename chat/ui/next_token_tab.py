"""The Next-token tab (文字接龙): the model's real next-token probabilities, reshaped live, then step, sample or pick."""
from __future__ import annotations

from dataclasses import asdict

import gradio as gr
import pandas as pd

from chat import budget
from chat.llm import backends, models, remote
from chat.llm.next_token import Candidate, shaping
from chat.settings import Settings
from chat.ui import limits
from chat.ui.handlers import bind
from chat.ui.i18n import T, tr

TOP = 12  # candidates shown
SESSION_TTL_S = 1800  # a game untouched for 30 minutes is forgotten (its KV cache freed), even if the client never left
EXAMPLES = [["The capital of France is"], ["Once upon a time, there was a"], ["我爱北京天"],
            ["def fibonacci(n):"], ["人工智能是"]]
VISIBLE = str.maketrans({" ": "␣", "\n": "↵", "\t": "→"})


def next_token(text: str, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, model: str = "local",
               settings: Settings = Settings()) -> list[dict]:
    """The chat model's 12 most likely next tokens for `text` (raw text, continued as is): id, label, raw and shaped
    probabilities, most likely first. The parameters are checked before the model runs.

    Args:
        text: the text to continue.
        temperature: reshapes the distribution (0 = all on the most likely token; up to 2, flatter).
        top_k: keep only the k most likely tokens in the shaped distribution (0 = off).
        top_p: keep the smallest set of tokens whose probabilities add up to top_p (0.01-1; 1 = off).
        model: "local" (ChatLab's own model) or "server" (the OpenAI-compatible server ChatLab was started with:
            its /v1/completions logprobs; id is then the rank, and shaped is over its 12 tokens).
    """
    if model not in ("local", "server"):
        raise gr.Error(f'model must be "local" or "server", got {model!r}')
    session = None
    try:
        shaping(temperature, top_k, top_p)  # checked before the model runs
        session = _backend(model, settings, None).next_token_session(text, chat=False, k=TOP)
        return [asdict(c) for c in session.candidates(temperature, top_k, top_p, TOP)]
    except (ValueError, models.ModelLoadError, remote.RemoteError) as error:
        raise gr.Error(str(error)) from None
    except budget.BusyError as error:
        raise limits.busy(None, error) from None
    finally:
        if session is not None:
            session.close()


def close_session(session) -> None:
    """gr.State's delete callback: the game expired or its page closed; free its KV cache now."""
    if session is not None:
        session.close()


def _knobs(temperature, top_k, top_p, request):
    try:
        shaped = shaping(temperature, top_k, top_p)
    except ValueError as error:
        raise gr.Error(tr(request, "next.error", error=error)) from None
    return shaped.temperature, shaped.top_k, shaped.top_p


def _label(candidate: Candidate, rank: int) -> str:
    shown = candidate.label if candidate.partial else candidate.label.translate(VISIBLE)
    return f"{rank}. {shown}"


def _backend(model: str, settings: Settings, request) -> backends.ChatBackend:
    """"local": the chat model; "server": the OpenAI-compatible server ChatLab was started with."""
    try:
        return backends.backend_for("original" if model == "local" else "server", settings.model,
                                    servers=settings.server)
    except backends.NoSuchModel:
        raise gr.Error(tr(request, "next.no_server")) from None


def _text_view(session) -> list[tuple[str, str | None]]:
    """The prompt, then each chosen token's text, coloured in turns."""
    return [(session.prompt_text, None)] + [(piece, "even" if step % 2 == 0 else "odd")
                                            for step, piece in enumerate(session.pieces())]


def views(session, temperature: float, top_k: int, top_p: float, request: gr.Request):
    """Bar charts (raw and shaped), the clickable candidates, the growing text and a status line."""
    if session is None:
        empty = pd.DataFrame({"token": [], "probability": []})
        return empty, empty, gr.update(choices=[], value=None), [], tr(request, "next.no_session")
    temperature, top_k, top_p = _knobs(temperature, top_k, top_p, request)
    found = session.candidates(temperature, top_k, top_p, TOP)
    labels = [_label(c, rank) for rank, c in enumerate(found, 1)]
    raw = pd.DataFrame({"token": labels, "probability": [c.raw_prob for c in found]})
    shaped = pd.DataFrame({"token": labels, "probability": [c.shaped_prob for c in found]})
    choices = []
    for label, c in zip(labels, found):
        extra = f" ({tr(request, 'next.completes', char=c.completes)})" if c.completes else ""
        choices.append((f"{label}{extra} · {c.raw_prob:.1%} → {c.shaped_prob:.1%}", str(c.token_id)))
    top, chosen = found[0], len(session.pieces())
    if session.limited:  # a server: only its k most likely tokens
        status = tr(request, "next.server_status", model=remote.short_name(session.backend.model),
                    url=session.backend.url, generated=chosen, top=labels[0].split(". ", 1)[1], p=top.raw_prob,
                    k=len(labels))
    else:
        status = tr(request, "next.status", prompt=session.prompt_len, generated=chosen,
                    top=labels[0].split(". ", 1)[1], p=top.raw_prob)
    return raw, shaped, gr.update(choices=choices, value=None), _text_view(session), status


def start(previous, prompt: str, as_chat: bool, backend: str, temperature: float, top_k: int, top_p: float,
          request: gr.Request, settings: Settings = Settings()):
    """A new game from the prompt (the knobs checked first), on the local model or the server; the previous game's
    KV cache is freed."""
    temperature, top_k, top_p = _knobs(temperature, top_k, top_p, request)
    try:
        chosen = _backend("server" if backend == "server" else "local", settings, request)
        session = chosen.next_token_session(prompt or "", chat=bool(as_chat), k=TOP)
    except (ValueError, models.ModelLoadError, remote.RemoteError) as error:
        raise gr.Error(tr(request, "next.error", error=error)) from None
    except budget.BusyError as error:
        raise limits.busy(request, error) from None
    close_session(previous)
    return session, *views(session, temperature, top_k, top_p, request)


def _step(action):
    def handler(session, temperature: float, top_k: int, top_p: float, request: gr.Request):
        if session is None:
            raise gr.Error(tr(request, "next.no_session"))
        temperature, top_k, top_p = _knobs(temperature, top_k, top_p, request)
        try:
            action(session, temperature, top_k, top_p)
        except (ValueError, remote.RemoteError) as error:
            gr.Warning(tr(request, "next.error", error=error))
        except budget.BusyError as error:
            raise limits.busy(request, error) from None
        return session, *views(session, temperature, top_k, top_p, request)
    return handler


def _sample_ten(session, temperature, top_k, top_p):
    for _ in range(10):
        session.sample(temperature, top_k, top_p)


def _token_id(choice) -> int:
    try:
        return int(choice)
    except (TypeError, ValueError):
        raise ValueError(f"{choice!r} is not a token id.") from None


def pick(session, choice: str | None, temperature: float, top_k: int, top_p: float, request: gr.Request):
    if choice is None:
        return session, *views(session, temperature, top_k, top_p, request)
    return _step(lambda s, *_: s.append(_token_id(choice)))(session, temperature, top_k, top_p, request)


def open_tab(session, prompt: str, as_chat: bool, backend: str, temperature: float, top_k: int, top_p: float,
             request: gr.Request, settings: Settings = Settings()):
    """Opening the tab starts the game on the default prompt, unless a game is already going."""
    if session is not None:
        return session, *views(session, temperature, top_k, top_p, request)
    return start(None, prompt, as_chat, backend, temperature, top_k, top_p, request, settings)


def build(settings: Settings) -> None:
    begin, opened = bind(start, settings=settings), bind(open_tab, settings=settings)

    with gr.Tab(T("next.tab"), id="next_token") as tab:
        gr.Markdown(T("next.intro"))
        session = gr.State(None, time_to_live=SESSION_TTL_S, delete_callback=close_session)
        with gr.Row():
            with gr.Column(scale=3):
                prompt = gr.Textbox(EXAMPLES[0][0], label=T("next.prompt"), lines=2, elem_id="next-prompt")
                gr.Examples(EXAMPLES, inputs=[prompt])
                as_chat = gr.Checkbox(label=T("next.as_chat"))
                backend = gr.Radio([(T("next.backend_local"), "local"), (T("next.backend_server"), "server")],
                                   value="local", label=T("next.backend"), visible=remote.configured(settings.server) is not None,
                                   elem_id="next-backend")
            with gr.Column(scale=2):
                temperature = limits.setting("temperature", 1.0, label=T("chat.temperature"),
                                             info=T("chat.temperature_info"), elem_id="next-temperature")
                top_k = limits.setting("top_k", 0, label=T("chat.top_k"), info=T("chat.top_k_info"),
                                       elem_id="next-top-k")
                top_p = limits.setting("top_p", 1.0, label=T("chat.top_p"), info=T("chat.top_p_info"),
                                       elem_id="next-top-p")
        with gr.Row():
            start_btn = gr.Button(T("next.start"), variant="primary", elem_id="next-start")
            greedy_btn = gr.Button(T("next.greedy"), elem_id="next-greedy")
            sample_btn = gr.Button(T("next.sample"), elem_id="next-sample")
            ten_btn = gr.Button(T("next.steps"), elem_id="next-ten")
            undo_btn = gr.Button(T("next.undo"), elem_id="next-undo")
        status = gr.Markdown(elem_id="next-status")
        text = gr.HighlightedText(label=T("next.text"), color_map={"even": "#a7f3d0", "odd": "#bfdbfe"},
                                  show_legend=False, show_inline_category=False, elem_id="next-text",
                                  elem_classes="token-pane")
        with gr.Row():
            raw_plot = gr.BarPlot(x="token", y="probability", label=T("next.raw"), sort="-y", y_lim=[0, 1],
                                  x_label_angle=-40, height=340, elem_id="next-raw")
            shaped_plot = gr.BarPlot(x="token", y="probability", label=T("next.shaped"), sort="-y", y_lim=[0, 1],
                                     x_label_angle=-40, height=340, elem_id="next-shaped")
        candidates = gr.Radio([], label=T("next.pick"), elem_id="next-candidates")
        gr.Markdown(T("next.explain"))

        knobs = [temperature, top_k, top_p]
        shown = [raw_plot, shaped_plot, candidates, text, status]
        common = dict(api_visibility="private", show_progress="minimal", **limits.heavy("model"))
        tab.select(opened, [session, prompt, as_chat, backend, *knobs], [session, *shown], **common)
        start_btn.click(begin, [session, prompt, as_chat, backend, *knobs], [session, *shown], **common)
        prompt.submit(begin, [session, prompt, as_chat, backend, *knobs], [session, *shown], **common)
        backend.input(begin, [session, prompt, as_chat, backend, *knobs], [session, *shown], **common)
        greedy_btn.click(_step(lambda s, *_: s.greedy()), [session, *knobs], [session, *shown], **common)
        sample_btn.click(_step(lambda s, t, k, p: s.sample(t, k, p)), [session, *knobs], [session, *shown], **common)
        ten_btn.click(_step(_sample_ten), [session, *knobs], [session, *shown], **common)
        undo_btn.click(_step(lambda s, *_: s.undo()), [session, *knobs], [session, *shown], **common)
        candidates.input(pick, [session, candidates, *knobs], [session, *shown], **common)
        for knob in knobs:  # reshape live as a slider moves or a number is typed (no model pass: not "model" work)
            knob.change(views, [session, *knobs], shown, trigger_mode="always_last", api_visibility="private",
                        show_progress="minimal")
        gr.api(bind(next_token, settings=settings), api_name="next_token", **limits.heavy("model"))
