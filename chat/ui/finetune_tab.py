"""The Fine-tune tab (SFT): demonstrations in a table, LoRA training live, the loss's tokens, answers before/after."""
from __future__ import annotations

import html
from collections.abc import Iterator
import json
from pathlib import Path

import gradio as gr
import pandas as pd

from chat import downloads
from chat.finetune import data as sft_data, train as sft
from chat.finetune.data import Demonstration, SFTSettings
from chat.llm import models
from chat.llm.backends import TUNED
from chat.settings import Settings
from chat.training import lora
from chat.training.run import Busy, TrainingError
from chat.ui import limits
from chat.ui.handlers import bind
from chat.ui.i18n import STRINGS, T, both, localized, tr

DEFAULT = sft_data.preset("identity")
CUSTOM = "custom"
UPDATE_S = 0.5  # seconds between screen updates while training
RUN_TTL_S = 7200  # a session's run (its tuned adapter) is released 2 hours after its last update


def error_text(request: gr.Request | None, error: TrainingError | Busy) -> str:
    """A TrainingError (or a refused run) in the page's language (its English text when no translation fits)."""
    if isinstance(error, Busy):
        return tr(request, "tuning.error_busy", kind=error.holder.kind if error.holder else "?",
                  seconds=error.seconds)
    key = f"tuning.error_{error.code}"
    try:
        return tr(request, key, **error.details) if key in STRINGS else str(error)
    except (KeyError, ValueError):
        return str(error)


def _session(request: gr.Request | None) -> str | None:
    return getattr(request, "session_hash", None)


# --- demonstrations -------------------------------------------------------------------------------------------------


def pairs_frame(pairs: list[Demonstration]) -> list[list[str]]:
    """The table's rows (a plain list keeps the table's headers; a DataFrame would bring its own)."""
    return [[p.prompt, p.response] for p in pairs]


def frame_pairs(frame) -> list[Demonstration]:
    """The table's rows as pairs (Gradio hands over a DataFrame, or lists through the API)."""
    if frame is None:
        return []
    rows = frame.values.tolist() if isinstance(frame, pd.DataFrame) else list(frame.get("data", frame)
                                                                                 if isinstance(frame, dict) else frame)
    pairs = []
    for row in rows:
        cells = ["" if cell is None or (isinstance(cell, float) and cell != cell) else str(cell) for cell in row]
        pairs.append(Demonstration(*(cells + ["", ""])[:2]))
    return pairs


def questions_text(p: sft_data.Preset) -> str:
    return "\n".join([*p.held_out, *(q for q, _ in p.controls)])


def load_preset(key: str, name: str, request: gr.Request):
    """The preset's pairs, tested settings and test questions."""
    if key == CUSTOM:
        return (gr.skip(),) * 9
    try:
        p = sft_data.preset(key, name)
    except TrainingError as error:
        raise gr.Error(error_text(request, error)) from None
    s = p.settings
    return (pairs_frame(p.pairs), s.learning_rate, s.max_steps, s.batch_size, s.lora_r, s.lora_layers,
            s.max_seconds, questions_text(p), _about(key, request))


def _about(key: str, request: gr.Request | None) -> str:
    return tr(request, f"finetune.about_{key}") if key in sft_data.PRESETS else ""


def import_jsonl(file, request: gr.Request):
    """A JSONL file of chat messages into the table (and its system prompt)."""
    if file is None:
        return gr.skip(), gr.skip(), gr.skip()
    path = Path(file if isinstance(file, str) else getattr(file, "name", file))
    try:
        if path.stat().st_size > 2_000_000:
            raise TrainingError("jsonl", "The file is over 2 MB.", line=0, reason="over 2 MB")
        pairs, system = sft_data.from_jsonl(path.read_text(encoding="utf-8"))
        sft_data.validate_pairs(pairs) if len(pairs) > sft_data.MAX_PAIRS else None
    except UnicodeDecodeError:
        raise gr.Error(error_text(request, TrainingError("jsonl", "not UTF-8 text", line=0,
                                                       reason="not UTF-8 text"))) from None
    except TrainingError as error:
        raise gr.Error(error_text(request, error)) from None
    gr.Info(tr(request, "finetune.imported", n=len(pairs)))
    return pairs_frame(pairs), system, CUSTOM


def export_jsonl(frame, system: str, request: gr.Request):
    pairs = [p for p in frame_pairs(frame) if p.prompt.strip() or p.response.strip()]
    path = downloads.folder("finetune", _session(request)) / "demonstrations.jsonl"
    path.write_text(sft_data.to_jsonl(pairs, system or ""), encoding="utf-8")
    return str(path)


# --- training -----------------------------------------------------------------------------------------------------


def _questions(text: str, key: str, name: str) -> tuple[list[tuple[str, str, list[str] | None]], dict | None]:
    """Each line a question; the preset's own held-out and control questions get its checks."""
    lines = [line.strip() for line in str(text or "").splitlines() if line.strip()][:12]
    p = None
    if key in sft_data.PRESETS:
        try:
            p = sft_data.preset(key, name)
        except TrainingError:
            p = None
    controls = dict(p.controls) if p else {}
    held_out = set(p.held_out) if p else set()
    found = []
    for q in lines:
        if q in controls:
            found.append(("control", q, controls[q]))
        else:
            found.append(("held_out" if q in held_out else "ask", q, None))
    return found, (p.expect if p else None)


def _status(run: sft.SFTRun | None, request: gr.Request | None) -> str:
    if run is None:
        return "idle", tr(request, "finetune.status_idle")
    status = run.status
    if status == "error":
        return status, tr(request, "finetune.status_error", error=run.error)
    return status, tr(request, f"finetune.status_{status}", step=run.step, steps=run.max_steps,
                      diverged=run.diverged_at, restored=run.good_step)


def progress_html(run: sft.SFTRun | None, request: gr.Request | None) -> str:
    status, line = _status(run, request)
    step = run.step if run else 0
    stats = ""
    if run is not None and run.logs:
        stats = tr(request, "finetune.stats", step=run.step, steps=run.max_steps, seconds=run.seconds,
                   speed=run.steps_per_second, loss=run.last("loss"))
    fraction = min(1.0, step / run.max_steps) if run else 0.0
    color = "#dc2626" if status in ("diverged", "error") else "#2563eb"
    return (f'<div style="height:10px;border-radius:5px;background:#e5e7eb;overflow:hidden">'
            f'<div style="height:100%;width:{100 * fraction:.1f}%;background:{color}"></div></div>'
            f'<p id="finetune-status-line" data-status="{status}" data-step="{step}" style="margin:6px 0 2px">'
            f'<b>{html.escape(line)}</b></p><p id="finetune-stats" style="margin:2px 0">{html.escape(stats)}</p>')


def loss_frame(run: sft.SFTRun | None) -> pd.DataFrame | None:
    if run is None or not run.logs:
        return None
    return pd.DataFrame({"step": [e["step"] for e in run.logs], "loss": [e["loss"] for e in run.logs]})


def mask_view(run: sft.SFTRun | None, request: gr.Request | None):
    if run is None or not run.loss_tokens:
        return []
    counted, context = tr(request, "finetune.mask_counted"), tr(request, "finetune.mask_context")
    spans = []
    for number, example in enumerate(run.loss_tokens):
        if number:
            spans.append(("\n\n", None))
        spans += [(text, counted if on else context) for text, on in example]
    return gr.update(value=spans, color_map={counted: "#86efac", context: "#e5e7eb"})


def _mark(ok) -> str:
    return "" if ok is None else (" ✅" if ok else " ❌")


def comparison_html(run: sft.SFTRun | None, request: gr.Request | None) -> str:
    if run is None or not run.comparisons:
        return f'<p id="finetune-compare-empty">{html.escape(tr(request, "finetune.no_comparison"))}</p>'
    head = "".join(f"<th>{html.escape(tr(request, k))}</th>" for k in
                   ("finetune.col_question", "finetune.col_before", "finetune.col_after"))
    rows = []
    for row in run.comparisons:
        kind = html.escape(tr(request, f"finetune.kind_{row['kind']}"))
        rows.append(
            f'<tr class="finetune-row" data-kind="{row["kind"]}" data-after-ok="{row.get("after_ok", "")}">'
            f'<td><b>{html.escape(row["question"])}</b><br><small style="opacity:.7">{kind}</small></td>'
            f'<td>{html.escape(row["before"])}{_mark(row.get("before_ok"))}</td>'
            f'<td>{html.escape(row["after"])}{_mark(row.get("after_ok"))}</td></tr>')
    title = html.escape(tr(request, "finetune.compare_title", tokens=sft.ANSWER_TOKENS))
    return (f'<div id="finetune-compare"><p><b>{title}</b></p><table style="width:100%;font-size:0.92em">'
            f'<thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table></div>')


def _download(run: sft.SFTRun | None, request: gr.Request | None):
    if run is None or run.running or not run.trained:
        return gr.update(value=None, interactive=False)
    path = downloads.folder("finetune", _session(request)) / "adapter.zip"
    notes = {"chatlab.json": json.dumps(sft.summary(run), ensure_ascii=False, indent=2)}
    lora.zip_adapter(run.model, path, notes)
    return gr.update(value=str(path), interactive=True)


def render(run: sft.SFTRun | None, request: gr.Request | None, final: bool = False):
    """Every output of a training update: state, progress, loss plot, loss tokens, comparison, download."""
    plot = gr.update(value=loss_frame(run), x_title=tr(request, "finetune.x_step"),
                     y_title=tr(request, "finetune.y_loss"))
    return (run, progress_html(run, request), plot, mask_view(run, request), comparison_html(run, request),
            _download(run, request) if final else gr.skip())


def start(frame, system, key, name, lr, steps, batch, rank, layers, budget, questions, previous,
          request: gr.Request, settings: Settings = Settings()):
    """Train on the table's pairs with the settings; live updates until the comparison is in."""
    if previous is not None and not previous.finished:
        previous.stop.set()
        previous.wait(30)
    try:
        chosen = SFTSettings(learning_rate=float(lr), max_steps=int(steps), batch_size=int(batch),
                             lora_r=int(rank), lora_layers=int(layers), max_seconds=float(budget))
        found, expect = _questions(questions, key, name)
        run = sft.start_run(frame_pairs(frame), str(system or ""), chosen, base=models.get_model(settings.model),
                            session=_session(request), preset_key=key if key != CUSTOM else "",
                            name=name if key == "identity" else "", questions=found, expect=expect)
    except (TrainingError, Busy) as error:
        raise gr.Error(error_text(request, error)) from None
    except (TypeError, ValueError) as error:  # an emptied number box
        raise gr.Error(tr(request, "tuning.error_not_number", error=error)) from None
    except models.ModelLoadError as error:
        raise gr.Error(tr(request, "tuning.error_model", error=error)) from None
    yield from watch(run, lambda: render(run, request), lambda: render(run, request, final=True),
                     lambda: _status(run, request)[1])


def watch(run, live, last, status_line):
    """A tab's view of a training run: `live()` every UPDATE_S while it trains, then `last()`, with a warning if
    it diverged. A browser that goes away abandons the run: nothing keeps training (or comparing) for nobody."""
    finished = False
    try:
        while run.thread.is_alive():
            yield live()
            run.wait(UPDATE_S)
        finished = True
        if run.status == "diverged":
            gr.Warning(status_line())
        yield last()
    finally:
        if not finished:
            run.abandon()


def stop(run) -> None:
    if run is not None:
        run.stop.set()


def reset(run, request: gr.Request):
    """Forget this session's fine-tuned model (the Chat tab goes back to the original)."""
    if run is not None:
        run.stop.set()
    TUNED.drop(_session(request), "sft")
    return render(None, request, final=True)


def compare_again(run, questions, key, name, request: gr.Request, settings: Settings = Settings()):
    if run is None or not run.trained:
        raise gr.Error(tr(request, "finetune.error_nothing"))
    if run.thread is not None and run.thread.is_alive():
        raise gr.Error(tr(request, "finetune.error_compare_busy"))
    found, expect = _questions(questions, key, name)
    run.comparisons = sft.compare(models.get_model(settings.model), run.model, found, run.system, expect)
    return comparison_html(run, request)


def finetune_api(preset: str = "identity", name: str = "Nova", jsonl: str = "", steps: int = 0,
                 max_seconds: float = 90, request: gr.Request = None, settings: Settings = Settings()
                 ) -> Iterator[dict]:
    """Fine-tune the chat model (SFT with LoRA) for this API session and compare its answers before and after.

    One run trains at a time on this machine; a second is refused, not queued. When training ends, `chat` with
    model="sft" answers with the tuned model of this session.

    Args:
        preset: "identity", "pirate" or "chinese" (the demonstrations and tested settings), or "custom" with `jsonl`.
        name: the new name the identity preset teaches (at most 40 characters).
        jsonl: demonstrations in TRL's chat-messages JSONL ({"messages": [system?, user, assistant]} per line,
            2 to 64 of them); used instead of the preset's when given.
        steps: optimizer steps (0 = the preset's; at most 200).
        max_seconds: time budget for training, 5 to 300 seconds.

    Returns:
        Progress while training, then a summary: steps, seconds, loss at the start and the end, and for each
        held-out and control question the answers before and after.
    """
    try:
        known = preset in sft_data.PRESETS  # a custom run's table is its own: no name to check
        chosen = sft_data.preset(preset if known else "identity", name if known else None)
        pairs, system = sft_data.from_jsonl(jsonl) if str(jsonl or "").strip() else (chosen.pairs, "")
        if preset not in sft_data.PRESETS and not str(jsonl or "").strip():
            raise TrainingError("preset", f"Unknown preset {preset!r}: use one of {', '.join(sft_data.PRESETS)}",
                                preset=preset)
        run_settings = SFTSettings(**{**chosen.settings.__dict__, "max_seconds": float(max_seconds),
                                      **({"max_steps": int(steps)} if steps else {})})
        custom = bool(str(jsonl or "").strip())
        run = sft.start_run(pairs, system, run_settings, base=models.get_model(settings.model),
                            session=_session(request), preset_key="" if custom else chosen.key,
                            name="" if custom else chosen.name,
                            questions=[] if custom else sft_data.preset_questions(chosen),
                            expect=None if custom else chosen.expect)
    except (TrainingError, Busy) as error:
        raise gr.Error(error_text(request, error)) from None
    except (TypeError, ValueError) as error:
        raise gr.Error(tr(request, "tuning.error_not_number", error=error)) from None
    yield from follow(run, sft.summary)


def follow(run, summary, head: dict | None = None) -> Iterator[dict]:
    """An API call's stream: the run's summary every 2 s while it trains, then with the before/after answers.
    A caller who disconnects abandons the run (it stops within a step and frees the machine)."""
    head = head or {}
    finished = False
    try:
        while run.thread.is_alive():
            yield head | summary(run)
            run.wait(2.0)
        finished = True
        yield head | summary(run) | {"answers": run.comparisons}
    finally:
        if not finished:
            run.abandon()


def release(run) -> None:
    """Gradio calls this when the session's state expires (an hour after the tab closed): forget everything."""
    if run is not None:
        run.abandon()


def build(settings: Settings) -> None:
    with gr.Tab(T("finetune.tab"), id="finetune"):
        gr.Markdown(T("finetune.intro"))
        run = gr.State(None, time_to_live=RUN_TTL_S, delete_callback=release)
        s = DEFAULT.settings
        with gr.Row(equal_height=False):
            with gr.Column(scale=5, min_width=360):
                with gr.Row():
                    key = gr.Dropdown([(T(f"finetune.preset_{k}"), k) for k in sft_data.PRESETS]
                                      + [(T("finetune.preset_custom"), CUSTOM)],
                                      value="identity", label=T("finetune.preset"), info=T("finetune.preset_info"),
                                      elem_id="finetune-preset", scale=2)
                    name = gr.Textbox(DEFAULT.name, label=T("finetune.name"), max_length=sft_data.MAX_NAME,
                                      elem_id="finetune-name", scale=1)
                about = gr.Markdown(T("finetune.about_identity"), elem_id="finetune-about")
                load = gr.Button(T("finetune.load"), size="sm", elem_id="finetune-load")
                table = gr.Dataframe(pairs_frame(DEFAULT.pairs),
                                     headers=[both("finetune.col_prompt"), both("finetune.col_response")],
                                     column_count=2, interactive=True, wrap=True,
                                     label=T("finetune.table"), max_height=360, elem_id="finetune-table")
                with gr.Row():
                    upload = gr.UploadButton(T("finetune.import"), file_types=[".jsonl", ".json", ".txt"],
                                             size="sm", elem_id="finetune-import")
                    export = gr.DownloadButton(T("finetune.export"), size="sm", elem_id="finetune-export")
                gr.Markdown(T("finetune.jsonl_info"))
                system = gr.Textbox("", label=T("finetune.system"), placeholder=T("finetune.system_placeholder"),
                                    lines=1, max_length=lora.MAX_CHARS, elem_id="finetune-system")
                with gr.Accordion(T("finetune.settings"), open=False):
                    with gr.Row():
                        lr = gr.Number(s.learning_rate, label=T("finetune.lr"), info=T("finetune.lr_info"),
                                       minimum=sft_data.LIMITS["learning_rate"][0],
                                       maximum=sft_data.LIMITS["learning_rate"][1], elem_id="finetune-lr")
                        steps = gr.Slider(*sft_data.LIMITS["max_steps"], value=s.max_steps, step=1,
                                          label=T("finetune.steps"), elem_id="finetune-steps")
                    with gr.Row():
                        batch = gr.Slider(*sft_data.LIMITS["batch_size"], value=s.batch_size, step=1,
                                          label=T("finetune.batch"), elem_id="finetune-batch")
                        rank = gr.Slider(*lora.LIMITS["lora_r"], value=s.lora_r, step=1, label=T("finetune.rank"),
                                         info=T("finetune.rank_info"), elem_id="finetune-rank")
                    with gr.Row():
                        layers = gr.Slider(0, 30, value=s.lora_layers, step=1, label=T("finetune.layers"),
                                           info=T("finetune.layers_info"), elem_id="finetune-layers")
                        budget = gr.Slider(*sft_data.LIMITS["max_seconds"], value=s.max_seconds, step=5,
                                           label=T("finetune.budget"), elem_id="finetune-budget")
            with gr.Column(scale=6, min_width=400):
                with gr.Row():
                    start_btn = gr.Button(T("finetune.start"), variant="primary", elem_id="finetune-start", scale=2)
                    stop_btn = gr.Button(T("finetune.stop"), variant="stop", elem_id="finetune-stop", scale=1)
                    reset_btn = gr.Button(T("finetune.reset"), elem_id="finetune-reset", scale=1)
                progress = gr.HTML(localized(progress_html, None), elem_id="finetune-progress")
                plot = gr.LinePlot(x="step", y="loss", label=T("finetune.plot"), height=240, elem_id="finetune-plot")
                mask = gr.HighlightedText(label=T("finetune.mask"), show_legend=True, combine_adjacent=True,
                                          elem_id="finetune-mask", elem_classes="token-pane")
                questions = gr.Textbox(questions_text(DEFAULT), label=T("finetune.questions"), lines=4,
                                       max_lines=12, elem_id="finetune-questions")
                compare_btn = gr.Button(T("finetune.compare_again"), size="sm", elem_id="finetune-compare-again")
                comparison = gr.HTML(localized(comparison_html, None), elem_id="finetune-comparison")
                download = gr.DownloadButton(T("finetune.download"), interactive=False, size="sm",
                                             elem_id="finetune-download")
                gr.Markdown(T("finetune.chat_hint"))

        preset_outputs = [table, lr, steps, batch, rank, layers, budget, questions, about]
        load.click(load_preset, [key, name], preset_outputs, api_visibility="private")
        key.change(load_preset, [key, name], preset_outputs, api_visibility="private")
        upload.upload(import_jsonl, upload, [table, system, key], api_visibility="private")
        export.click(export_jsonl, [table, system], export, api_visibility="private")
        outputs = [run, progress, plot, mask, comparison, download]
        knobs = [lr, steps, batch, rank, layers, budget]
        start_btn.click(bind(start, settings=settings), [table, system, key, name, *knobs, questions, run], outputs,
                        show_progress="hidden", concurrency_limit=2, concurrency_id="chatlab-tuning",
                        api_visibility="private")
        stop_btn.click(stop, run, None, queue=False, api_visibility="private")
        reset_btn.click(reset, run, outputs, api_visibility="private")
        # two queue slots: a second caller reaches the one training slot (chat.training.run.claim, which is also
        # the server's "training" slot of chat.budget) and is refused with a clear message, not queued for minutes
        gr.api(bind(finetune_api, settings=settings), api_name="finetune", concurrency_limit=2,
               concurrency_id="chatlab-tuning-api")
        compare_btn.click(bind(compare_again, settings=settings), [run, questions, key, name], comparison, api_visibility="private",
                          **limits.heavy("model"))

