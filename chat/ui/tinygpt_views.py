"""What the Tiny GPT tab shows of a run, as plain renderers: the status lines, the plots' frames, the tables of
samples and answers, for pretraining, fine-tuning and RL; and the gr.Error that explains a refused action in the
page's language. The handlers and the layout are in tinygpt_tab.py, the comparison step in tinygpt_compare.py."""
from __future__ import annotations

import html
import math

import gradio as gr
import pandas as pd

from chat.budget import BusyError
from chat.tinygpt import rl, sft, stages
from chat.tinygpt import train as tinygpt
from chat.training.run import Busy, TrainingError
from chat.ui import limits
from chat.ui.i18n import STRINGS, tr

COLORS = {"train": "#2563eb", "val": "#f97316", "uniform": "#9ca3af", "bigram": "#a855f7", "smollm2": "#16a34a",
          "mean": "#2563eb", "spread": "#93c5fd", "kl": "#dc2626", "floor": "#6b7280", "length": "#0d9488"}
ASKS = 4  # default questions in the before/after tables


def explain(request: gr.Request | None, error: Exception) -> gr.Error:
    """A TrainingError or a refused run as a gr.Error in the page's language."""
    if isinstance(error, Busy):
        return gr.Error(tr(request, "tinygpt.error_busy_machine", seconds=error.seconds))
    if isinstance(error, BusyError):
        return limits.busy(request, error)
    details = dict(getattr(error, "details", {}))
    if "name" in details and f"tinygpt.{details['name']}" in STRINGS:
        details["name"] = tr(request, f"tinygpt.{details['name']}")
    if "stage" in details:
        details["stage"] = tr(request, f"tinygpt.stage_{details['stage']}")
    key = f"tinygpt.error_{getattr(error, 'code', '')}"
    try:
        return gr.Error(tr(request, key, **details) if key in STRINGS else str(error))
    except (KeyError, ValueError):
        return gr.Error(str(error))


def read_questions(text: str, request: gr.Request | None) -> list[str]:
    lines = [line.strip() for line in str(text or "").splitlines() if line.strip()]
    if len(lines) > sft.MAX_ASKS:
        raise gr.Error(tr(request, "tinygpt.error_too_many_asks", limit=sft.MAX_ASKS))
    try:
        return [stages.check_question(q) for q in lines]
    except TrainingError as error:
        raise explain(request, error) from None


def progress_bar(fraction: float, color: str = "#2563eb") -> str:
    return (f'<div style="height:10px;border-radius:5px;background:#e5e7eb;overflow:hidden">'
            f'<div style="height:100%;width:{100 * min(1.0, fraction):.1f}%;background:{color}"></div></div>')


def status_html(prefix: str, status: str, line: str, stats: str = "", step: int = 0) -> str:
    return (f'<p id="{prefix}-status-line" data-status="{status}" data-step="{step}" style="margin:6px 0 2px">'
            f'<b>{html.escape(line)}</b></p><p id="{prefix}-stats" style="margin:2px 0">{html.escape(stats)}</p>')


def line_plot(frame: pd.DataFrame | None, request, y_title: str, names: dict[str, str]):
    """A LinePlot update in long form (step, value, curve), curves renamed and coloured."""
    if frame is not None and frame.empty:
        frame = None  # an empty frame would fix the plot's axes as categories
    if frame is not None:
        frame = frame.assign(curve=frame["curve"].map(names))
    colors = {names[k]: COLORS[k] for k in names}
    return gr.update(value=frame, x_title=tr(request, "tinygpt.x_step"), y_title=y_title, color_title=" ",
                     color_map=colors)


def html_table(head: list[str], rows: list[list[str]], elem_id: str, row_class: str = "") -> str:
    """An HTML table of already escaped cells."""
    header = "".join(f"<th>{h}</th>" for h in head)
    body = "".join(f'<tr class="{row_class}">' + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return (f'<table id="{elem_id}" style="width:100%;font-size:0.92em"><thead><tr>{header}</tr></thead>'
            f"<tbody>{body}</tbody></table>")


def asks_html(asks: list[dict], request, before: str, after: str, elem_id: str) -> str:
    if not asks:
        return f'<p id="{elem_id}-empty">{html.escape(tr(request, "tinygpt.asks_empty"))}</p>'
    rows = [[f"<b>{html.escape(a['question'])}</b>", html.escape(a["before"] or "∅"), html.escape(a["after"] or "∅")]
            for a in asks]
    return html_table([html.escape(tr(request, k)) for k in ("tinygpt.col_question", before, after)], rows, elem_id,
                  "tinygpt-ask")


# --- 1. pretraining --------------------------------------------------------------------------------------------


def pretrain_html(run: tinygpt.TrainingRun | None, request: gr.Request | None) -> str:
    if run is None:
        return status_html("tinygpt", "idle", tr(request, "tinygpt.status_idle"))
    line = tr(request, f"tinygpt.status_{run.status}", step=run.step, diverged=run.diverged_at or 0,
              lr=run.config.learning_rate)
    val = run.val_losses[-1] if run.val_losses else (0, math.nan, math.nan)
    train = run.train_losses[-1][2] if run.train_losses else math.nan
    stats = ""
    if run.val_losses:
        stats = tr(request, "tinygpt.stats" if run.step else "tinygpt.stats_start", step=run.step,
                   seconds=run.seconds, budget=run.max_seconds, speed=run.iterations_per_second, train=train,
                   val=val[2], passes=run.passes)
    sticks = {k: v for k, v in run.yardsticks.items() if v is not None}
    yard = tr(request, "tinygpt.yardsticks", **{k: sticks.get(k, math.nan) for k in ("uniform", "bigram")})
    if "smollm2" in sticks:
        yard += " · " + tr(request, "tinygpt.yardstick_smollm2", smollm2=sticks["smollm2"])
    meter = ""
    if run.memorisation and not run.running:
        meter = tr(request, "tinygpt.meter", words=run.memorisation["words_in_training_text"],
                   copied=run.memorisation["copied_8grams"], ngrams=run.memorisation["ngrams"])
    text = run.text
    where = tr(request, f"tinygpt.corpus_{text.corpus}")
    held = ", ".join(text.held_out) if text.held_out else tr(request, "tinygpt.held_out_hash")
    data = tr(request, "tinygpt.data_line", corpus=where, chars=len(text.train_text()), held_out=held,
              train_tokens=len(run.train_ids), val_tokens=len(run.val_ids), vocab=run.tokenizer.vocab_size,
              tokenizer=tr(request, f"tinygpt.kind_{run.tokenizer.kind}"), params=run.params)
    return (progress_bar(run.progress, "#dc2626" if run.status == "diverged" else "#2563eb")
            + status_html("tinygpt", run.status, line, stats, run.step)
            + f'<p style="margin:2px 0">{html.escape(yard)}</p>'
            + (f'<p id="tinygpt-meter" style="margin:2px 0">{html.escape(meter)}</p>' if meter else "")
            + f'<p style="margin:2px 0;font-size:0.85em;opacity:0.8">{html.escape(data)}</p>')


def samples_html(run: tinygpt.TrainingRun | None, request: gr.Request | None) -> str:
    """The sample timeline, newest first: the fixed prompt (muted) and what the model wrote after it (bold)."""
    if run is None or not run.samples:
        return f'<div id="tinygpt-samples"><p>{html.escape(tr(request, "tinygpt.samples_empty"))}</p></div>'
    val_at = {step: per_char for step, _, per_char in run.val_losses}
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


# --- 2. fine-tuning --------------------------------------------------------------------------------------------


def sft_html(run: sft.TinySFTRun | None, request: gr.Request | None) -> str:
    if run is None:
        return status_html("tinygpt-sft", "idle", tr(request, "tinygpt.sft_idle"))
    if run.status == "error":
        return status_html("tinygpt-sft", "error", tr(request, "tinygpt.status_error", error=run.error))
    line = tr(request, f"tinygpt.sft_status_{run.status}", step=run.step, restored=run.good_step)
    stats = tr(request, "tinygpt.sft_stats", step=run.step, seconds=run.seconds, budget=run.max_seconds,
               speed=run.steps_per_second, loss=run.last("loss"), before=run.bot_val_loss_before)
    if math.isfinite(run.bot_val_loss_after):
        stats += " · " + tr(request, "tinygpt.sft_after", after=run.bot_val_loss_after)
    return progress_bar(run.progress) + status_html("tinygpt-sft", run.status, line, stats, run.step)


def sft_frame(run: sft.TinySFTRun | None) -> pd.DataFrame | None:
    if run is None or not run.logs:
        return None
    rows = [(e["step"], e["loss"], "train") for e in run.logs]
    return pd.DataFrame(rows, columns=["step", "loss", "curve"])


def mask_view(run: sft.TinySFTRun | None, request: gr.Request | None):
    if run is None or not run.loss_tokens:
        return []
    counted, context = tr(request, "tinygpt.mask_counted"), tr(request, "tinygpt.mask_context")
    spans = []
    for number, example in enumerate(run.loss_tokens):
        if number:
            spans.append(("\n", None))
        spans += [(text, counted if on else context) for text, on in example]
    return gr.update(value=spans, color_map={counted: "#86efac", context: "#e5e7eb"})


# --- 3. reinforcement learning ---------------------------------------------------------------------------------


def rl_html(run: rl.RLRun | None, request: gr.Request | None) -> str:
    if run is None:
        return status_html("tinygpt-rl", "idle", tr(request, "tinygpt.rl_idle"))
    line = tr(request, f"tinygpt.rl_status_{run.status}", step=run.step, restored=run.good_step)
    stats = ""
    if run.history:
        last = run.history[-1]
        floor = run.floor(last["reward_mean"])
        stats = tr(request, "tinygpt.rl_stats", step=run.step, seconds=run.seconds, budget=run.max_seconds,
                   speed=run.steps_per_second, reward=last["reward_mean"], base=run.base_rate, kl=last["kl"],
                   length=last["length"])
        if floor is not None:
            stats += " · " + tr(request, "tinygpt.rl_floor", floor=floor)
    if math.isfinite(run.val_loss_after):
        stats += " · " + tr(request, "tinygpt.rl_val", before=run.val_loss_before, after=run.val_loss_after)
    return progress_bar(run.progress) + status_html("tinygpt-rl", run.status, line, stats, run.step)


def rl_frames(run: rl.RLRun | None) -> tuple:
    """(reward mean and spread, KL and its floor, reply length) in long form."""
    if run is None or not run.history:
        return None, None, None
    reward, kl, length = [], [], []
    for r in run.history:
        reward += [(r["step"], r["reward_mean"], "mean"), (r["step"], r["reward_std"], "spread")]
        kl.append((r["step"], r["kl"], "kl"))
        floor = run.floor(r["reward_mean"])
        if floor is not None:
            kl.append((r["step"], floor, "floor"))
        length.append((r["step"], r["length"], "length"))
    columns = ["step", "value", "curve"]
    return tuple(pd.DataFrame(rows, columns=columns) for rows in (reward, kl, length))


def rl_samples_html(run: rl.RLRun | None, request: gr.Request | None, steps: int = 3) -> str:
    """The last steps' samples: each reply with its reward and advantage."""
    if run is None or not run.history:
        return f'<div id="tinygpt-rl-samples"><p>{html.escape(tr(request, "tinygpt.rl_samples_empty"))}</p></div>'
    blocks = []
    for record in reversed(run.history[-steps:]):
        rows = [[html.escape(s["reply"] or "∅"), f'{s["reward"]:.2f}',
                 f'<span style="color:{"#16a34a" if s["advantage"] > 0 else "#dc2626"}">{s["advantage"]:+.2f}</span>']
                for s in record["samples"]]
        head = html.escape(tr(request, "tinygpt.rl_sample_head", step=record["step"], prompt=record["prompt"]))
        blocks.append(f'<div class="tinygpt-rl-step" data-step="{record["step"]}"><p style="margin:6px 0 2px">'
                      f'<b>{head}</b></p>' + html_table([html.escape(tr(request, k)) for k in (
                          "tinygpt.col_reply", "tinygpt.col_reward", "tinygpt.col_advantage")], rows,
                          f'tinygpt-rl-step-{record["step"]}') + "</div>")
    return f'<div id="tinygpt-rl-samples" style="max-height:420px;overflow-y:auto">{"".join(blocks)}</div>'
