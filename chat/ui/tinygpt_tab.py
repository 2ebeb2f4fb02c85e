"""The Tiny GPT tab: train a small GPT-2 on dialogs from scratch, live (curves, sample timeline), then chat with it."""
from __future__ import annotations

import html
import math

import gradio as gr

from chat import downloads
from chat.budget import BusyError
from chat.llm.prompt import flatten_content
from chat.settings import Settings
from chat.tinygpt import data as corpora, model as gpt, sample, train as tinygpt
from chat.tinygpt.train import TinyGPTConfig
from chat.training.run import TrainingError
from chat.ui import limits
from chat.ui.i18n import STRINGS, T, tr

DEFAULTS = TinyGPTConfig()
TRAIN_COLOR, VAL_COLOR = "#2563eb", "#f97316"  # blue, orange: named in the plot's label


def _error_text(request: gr.Request | None, error: TrainingError) -> str:
    details = dict(error.details)
    if "name" in details and f"tinygpt.{details['name']}" in STRINGS:
        details["name"] = tr(request, f"tinygpt.{details['name']}")
    key = f"tinygpt.error_{error.code}"
    return tr(request, key, **details) if key in STRINGS else str(error)


def topics_for(lang: str):
    """A language's topics, all ticked."""
    try:
        topics = corpora.list_topics(lang)
    except (TrainingError, FileNotFoundError):
        topics = []
    return gr.update(choices=topics, value=topics)


def _progress_html(run: tinygpt.TrainingRun | None, request: gr.Request | None) -> str:
    """Progress bar, a status line, the figures of the run, and what it trains on."""
    if run is None:
        return f'<p id="tinygpt-status-line" data-status="idle">{html.escape(tr(request, "tinygpt.status_idle"))}</p>'
    status = tr(request, f"tinygpt.status_{run.status}", step=run.step, diverged=run.diverged_at or 0,
                lr=run.config.learning_rate)
    val = run.val_losses[-1] if run.val_losses else (0, math.nan, math.nan)
    train = run.train_losses[-1][1] if run.train_losses else math.nan
    figures = dict(step=run.step, seconds=run.seconds, budget=run.max_seconds,
                   speed=run.iterations_per_second, train=train, val=val[1], bpc=val[2])
    stats = ""
    if run.val_losses:
        stats = tr(request, "tinygpt.stats" if run.train_losses else "tinygpt.stats_start", **figures)
    corpus = run.corpus
    data = tr(request, "tinygpt.data_line", conversations=corpus.conversations, topics=len(corpus.topics),
              skipped=corpus.skipped, duplicates=corpus.duplicates, train_tokens=len(run.train_ids),
              val_tokens=len(run.val_ids), vocab=run.tokenizer.vocab_size,
              tokenizer=tr(request, f"tinygpt.kind_{run.tokenizer.kind}"), params=run.params,
              target=tr(request, "tinygpt.target_bot" if run.config.bot_only else "tinygpt.target_all"))
    color = "#dc2626" if run.status == "diverged" else "#2563eb"
    return (f'<div style="height:10px;border-radius:5px;background:#e5e7eb;overflow:hidden">'
            f'<div style="height:100%;width:{100 * run.progress:.1f}%;background:{color}"></div></div>'
            f'<p id="tinygpt-status-line" data-status="{run.status}" data-step="{run.step}" style="margin:6px 0 2px">'
            f'<b>{html.escape(status)}</b></p>'
            f'<p id="tinygpt-stats" style="margin:2px 0">{html.escape(stats)}</p>'
            f'<p style="margin:2px 0;font-size:0.85em;opacity:0.8">{html.escape(data)}</p>')


def _plot(run: tinygpt.TrainingRun | None, request: gr.Request | None):
    frame = tinygpt.loss_frame(run) if run else None
    if frame is not None and frame.empty:
        frame = None  # an empty frame would fix the plot's axes as categories
    names = {"train": tr(request, "tinygpt.curve_train"), "val": tr(request, "tinygpt.curve_val")}
    if frame is not None:
        frame["curve"] = frame["curve"].map(names)
    # fixed colours, named in the label: Gradio's plot legend doesn't render reliably
    colors = {names["train"]: TRAIN_COLOR, names["val"]: VAL_COLOR}
    return gr.update(value=frame, x_title=tr(request, "tinygpt.x_step"), y_title=tr(request, "tinygpt.y_loss"),
                     color_title=" ", color_map=colors)


def _samples_html(run: tinygpt.TrainingRun | None, request: gr.Request | None) -> str:
    """The sample timeline, newest first: the fixed prompt (muted) and what the model wrote after it (bold)."""
    if run is None or not run.samples:
        return f'<div id="tinygpt-samples"><p>{html.escape(tr(request, "tinygpt.samples_empty"))}</p></div>'
    val_at = {step: loss for step, loss, _ in run.val_losses}
    prompt = html.escape(run.sample_prompt)
    items = []
    for step, text in reversed(run.samples):
        head = tr(request, "tinygpt.sample_head", step=step)
        if step in val_at and math.isfinite(val_at[step]):
            head += " · " + tr(request, "tinygpt.sample_val", val=val_at[step])
        items.append(f'<div class="tinygpt-sample" data-step="{step}" style="margin-bottom:6px">'
                     f'<div style="font-size:0.8em;opacity:0.7">{html.escape(head)}</div>'
                     f'<pre style="white-space:pre-wrap;word-break:break-word;margin:0;padding:4px 6px;'
                     f'border-radius:4px;background:rgba(127,127,127,0.08)"><span style="opacity:0.55">{prompt}</span>'
                     f'<b>{html.escape(text)}</b></pre></div>')
    title = html.escape(tr(request, "tinygpt.samples_title"))
    return (f'<div id="tinygpt-samples"><p style="margin:0 0 4px"><b>{title}</b></p>'
            f'<div style="max-height:360px;overflow-y:auto">{"".join(items)}</div></div>')


def _download(run: tinygpt.TrainingRun):
    if not run.trained:
        return gr.update(value=None, interactive=False)
    folder = downloads.folder("tinygpt", id(run))
    for older in folder.glob("tinygpt-*.zip"):  # Gradio serves its own copy of the last one
        older.unlink(missing_ok=True)
    path = gpt.export_zip(run, folder / f"tinygpt-step{run.step}.zip")
    return gr.update(value=str(path), interactive=True)


def render(run: tinygpt.TrainingRun | None, request: gr.Request | None, download: bool = False):
    """Every output of the start / resume handlers: state, progress, loss plot, samples, download button.
    (The benchmark calls this too: it is the per-update work of the live view.)"""
    return (run, _progress_html(run, request), _plot(run, request), _samples_html(run, request),
            _download(run) if download else gr.skip())


def _stream(run: tinygpt.TrainingRun, request: gr.Request | None):
    """Train and show it: an update at most every 0.5 s, then the final state with the model to download."""
    steps = tinygpt.train(run, update_every_s=0.5)
    try:
        try:
            for _ in steps:
                if run.running:
                    yield render(run, request)
        except BusyError as error:  # every training slot is taken (the queue lets this happen only outside it)
            raise limits.busy(request, error) from None
        if run.status == "diverged":
            gr.Warning(tr(request, "tinygpt.status_diverged", diverged=run.diverged_at, step=run.step,
                          lr=run.config.learning_rate))
        yield render(run, request, download=True)
    finally:
        steps.close()
        run.stop.set()  # the browser went away (generator closed) or the run ended: nothing keeps training


def start_training(lang, topics, tokenizer, bpe_vocab_size, bot_only, n_layer, n_head, n_embd, block_size,
                   batch_size, learning_rate, dropout, budget, previous: tinygpt.TrainingRun | None,
                   request: gr.Request):
    """A fresh run for this session (the previous one, if still training, stops) and its live view."""
    if previous is not None:
        previous.stop.set()
    if not topics:
        raise gr.Error(tr(request, "tinygpt.error_no_topics"))
    try:
        config = TinyGPTConfig(lang=lang, topics=tuple(topics), tokenizer=tokenizer,
                               bpe_vocab_size=int(bpe_vocab_size), bot_only=bool(bot_only), n_layer=int(n_layer),
                               n_head=int(n_head), n_embd=int(n_embd), block_size=int(block_size),
                               batch_size=int(batch_size), learning_rate=float(learning_rate),
                               dropout=float(dropout), max_seconds=float(budget))
        run = tinygpt.new_run(config)
    except TrainingError as error:
        raise gr.Error(_error_text(request, error)) from None
    except (TypeError, ValueError) as error:  # an emptied number box
        raise gr.Error(tr(request, "tinygpt.error_settings", error=error)) from None
    except FileNotFoundError as error:
        raise gr.Error(tr(request, "tinygpt.error_corpus", error=error)) from None
    yield render(run, request, download=True)
    yield from _stream(run, request)


def resume_training(budget, run: tinygpt.TrainingRun | None, request: gr.Request):
    """Continue this session's run (same model, optimizer state, step counter, curves) up to the budget."""
    if run is None:
        raise gr.Error(tr(request, "tinygpt.error_nothing_to_resume"))
    if run.running:
        gr.Warning(tr(request, "tinygpt.error_already_running"))
        return
    low, high = tinygpt.LIMITS["max_seconds"]
    run.max_seconds = min(max(float(budget or 0), low), high)
    if run.progress >= 1.0:
        gr.Warning(tr(request, "tinygpt.error_budget_used", seconds=run.seconds))
        return
    yield from _stream(run, request)


RUN_TTL_S = 7200  # a session's run (model, optimizer) is forgotten 2 hours after its last update


def stop_training(run: tinygpt.TrainingRun | None) -> None:
    if run is not None:
        run.stop.set()


def _exchanges(history) -> list[tuple[str, str]]:
    """(user, bot) pairs of the chat so far."""
    pairs, user = [], None
    for message in history or []:
        role = message.get("role") if isinstance(message, dict) else getattr(message, "role", None)
        text = flatten_content(message.get("content") if isinstance(message, dict) else getattr(message, "content", ""))
        if role == "user":
            user = text
        elif role == "assistant" and user is not None:
            pairs.append((user, text))
            user = None
    return pairs


def chat(message: str, history, temperature, run: tinygpt.TrainingRun | None, request: gr.Request):
    """The trained model's reply, prompted in its training format (`User: ...\\nBot:`)."""
    history = list(history or [])
    if run is None or run.step == 0:
        gr.Warning(tr(request, "tinygpt.error_no_model"))
        return history, message
    if run.running:
        gr.Warning(tr(request, "tinygpt.error_busy"))
        return history, message
    if not (message or "").strip():
        return history, ""
    answer = sample.reply(run.model, run.tokenizer, _exchanges(history), message, float(temperature))
    answer = answer or tr(request, "tinygpt.empty_reply")
    return history + [{"role": "user", "content": message}, {"role": "assistant", "content": answer}], ""


def build(settings: Settings) -> None:
    with gr.Tab(T("tinygpt.tab"), id="tinygpt"):
        gr.Markdown(T("tinygpt.intro"))
        run = gr.State(None, time_to_live=RUN_TTL_S, delete_callback=stop_training)
        try:
            languages, topics = corpora.list_languages(), corpora.list_topics(DEFAULTS.lang)
        except FileNotFoundError:  # corpus package missing: the tab still builds, Start explains
            languages, topics = [DEFAULTS.lang], []
        with gr.Row(equal_height=False):
            with gr.Column(scale=1, min_width=300):
                lang = gr.Dropdown(languages, value=DEFAULTS.lang, label=T("tinygpt.lang"),
                                   info=T("tinygpt.lang_info"), elem_id="tinygpt-lang")
                topic_box = gr.CheckboxGroup(topics, value=topics, label=T("tinygpt.topics"),
                                             info=T("tinygpt.topics_info"), elem_id="tinygpt-topics")
                tokenizer = gr.Radio([(T("tinygpt.tokenizer_char"), "char"), (T("tinygpt.tokenizer_bpe"), "bpe")],
                                     value=DEFAULTS.tokenizer, label=T("tinygpt.tokenizer"),
                                     info=T("tinygpt.tokenizer_info"), elem_id="tinygpt-tokenizer")
                bpe_vocab = gr.Slider(*tinygpt.LIMITS["bpe_vocab_size"], value=DEFAULTS.bpe_vocab_size, step=8,
                                      label=T("tinygpt.bpe_vocab_size"), elem_id="tinygpt-bpe-vocab")
                bot_only = gr.Checkbox(DEFAULTS.bot_only, label=T("tinygpt.bot_only"), info=T("tinygpt.bot_only_info"),
                                       elem_id="tinygpt-bot-only")
                with gr.Accordion(T("tinygpt.model_size"), open=False):
                    with gr.Row():
                        n_layer = gr.Slider(*tinygpt.LIMITS["n_layer"], value=DEFAULTS.n_layer, step=1,
                                            label=T("tinygpt.n_layer"), min_width=120, elem_id="tinygpt-n-layer")
                        n_head = gr.Slider(*tinygpt.LIMITS["n_head"], value=DEFAULTS.n_head, step=1,
                                           label=T("tinygpt.n_head"), min_width=120, elem_id="tinygpt-n-head")
                    with gr.Row():
                        n_embd = gr.Slider(32, 384, value=DEFAULTS.n_embd, step=32, label=T("tinygpt.n_embd"),
                                           min_width=120, elem_id="tinygpt-n-embd")
                        block_size = gr.Slider(32, 256, value=DEFAULTS.block_size, step=32,
                                               label=T("tinygpt.block_size"), min_width=120,
                                               elem_id="tinygpt-block-size")
                    with gr.Row():
                        batch_size = gr.Slider(4, 64, value=DEFAULTS.batch_size, step=4,
                                               label=T("tinygpt.batch_size"), min_width=120,
                                               elem_id="tinygpt-batch-size")
                        dropout = gr.Slider(*tinygpt.LIMITS["dropout"], value=DEFAULTS.dropout, step=0.05,
                                            label=T("tinygpt.dropout"), min_width=120, elem_id="tinygpt-dropout")
                    learning_rate = gr.Number(DEFAULTS.learning_rate, label=T("tinygpt.learning_rate"),
                                              minimum=tinygpt.LIMITS["learning_rate"][0],
                                              maximum=tinygpt.LIMITS["learning_rate"][1], elem_id="tinygpt-lr")
            with gr.Column(scale=2):
                with gr.Row(equal_height=True):
                    budget = gr.Slider(10, 600, value=DEFAULTS.max_seconds, step=5, label=T("tinygpt.budget"),
                                       info=T("tinygpt.budget_info"), scale=3, elem_id="tinygpt-budget")
                    with gr.Column(scale=2, min_width=240):
                        start = gr.Button(T("tinygpt.start"), variant="primary", elem_id="tinygpt-start")
                        with gr.Row():
                            resume = gr.Button(T("tinygpt.resume"), min_width=100, elem_id="tinygpt-resume")
                            stop = gr.Button(T("tinygpt.stop"), variant="stop", min_width=100, elem_id="tinygpt-stop")
                progress = gr.HTML(_progress_html(None, None), elem_id="tinygpt-progress")
                plot = gr.LinePlot(x="step", y="loss", color="curve", label=T("tinygpt.plot"), height=300,
                                   elem_id="tinygpt-plot")
                samples = gr.HTML(_samples_html(None, None), elem_id="tinygpt-samples-box")
        gr.Markdown(T("tinygpt.chat_intro"))
        with gr.Row(equal_height=False):
            with gr.Column(scale=3):
                chatbot = gr.Chatbot(label=T("tinygpt.chatbot"), height=300, elem_id="tinygpt-chatbot")
                with gr.Row():
                    message = gr.Textbox(placeholder=T("tinygpt.message_placeholder"), show_label=False, scale=4,
                                         elem_id="tinygpt-message")
                    send = gr.Button(T("tinygpt.send"), scale=1, elem_id="tinygpt-send")
            with gr.Column(scale=1, min_width=220):
                temperature = gr.Slider(0.0, 1.5, value=0.8, step=0.05, label=T("tinygpt.temperature"),
                                        info=T("tinygpt.temperature_info"), elem_id="tinygpt-temperature")
                gr.ClearButton([message, chatbot], value=T("tinygpt.clear_chat"), size="sm")
                download = gr.DownloadButton(T("tinygpt.download"), interactive=False, size="sm",
                                             elem_id="tinygpt-download")

        outputs = [run, progress, plot, samples, download]
        settings = [lang, topic_box, tokenizer, bpe_vocab, bot_only, n_layer, n_head, n_embd, block_size, batch_size,
                    learning_rate, dropout, budget]
        lang.change(topics_for, lang, topic_box, api_visibility="private")
        # training runs share the server's "training" limit with the other tabs' (chat.budget); more wait in line
        start.click(start_training, [*settings, run], outputs, show_progress="hidden", api_visibility="private",
                    **limits.heavy("training"))
        resume.click(resume_training, [budget, run], outputs, show_progress="hidden", api_visibility="private",
                     **limits.heavy("training"))
        stop.click(stop_training, run, None, queue=False, api_visibility="private")
        for event in (message.submit, send.click):
            event(chat, [message, chatbot, temperature, run], [chatbot, message], api_visibility="private")
