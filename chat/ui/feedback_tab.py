"""The Human feedback tab (RLHF): pick the better answer, fit a reward model, best-of-n, then DPO live."""
from __future__ import annotations

import html
from collections.abc import Iterator
import math
import time
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import pandas as pd

from chat import downloads
from chat.feedback import dpo, preferences, reward
from chat.feedback.preferences import DPOSettings, Preference
from chat.llm import models
from chat.llm.backends import TUNED
from chat.settings import Settings
from chat.training import lora, run as runs
from chat.training.run import Busy, TrainingError
from chat.ui import limits
from chat.ui.finetune_tab import RUN_TTL_S, error_text, follow, release, stop, watch
from chat.ui.handlers import bind
from chat.ui.i18n import T, both, localized, tr

DEFAULT = preferences.preset("concise")
CUSTOM = "custom"
COLORS = {"chosen": "#16a34a", "rejected": "#dc2626", "margin": "#2563eb", "accuracy": "#7c3aed", "kl": "#f97316"}


@dataclass
class TrainedReward:
    model: reward.RewardModel
    seconds: float
    held_out: int  # held-out pairs it was tested on (0: none)
    held_out_accuracy: float


def _session(request: gr.Request | None) -> str | None:
    return getattr(request, "session_hash", None)


def _fail(request: gr.Request | None, error: Exception):
    if isinstance(error, (TrainingError, Busy)):
        raise gr.Error(error_text(request, error)) from None
    if isinstance(error, models.ModelLoadError):
        raise gr.Error(tr(request, "tuning.error_model", error=error)) from None
    raise error


# --- pairs ------------------------------------------------------------------------------------------------------------


def pairs_frame(pairs: list[Preference]) -> list[list[str]]:
    """The table's rows (a plain list keeps the table's headers)."""
    return [[p.prompt, p.chosen, p.rejected] for p in pairs]


def frame_pairs(frame) -> list[Preference]:
    if frame is None:
        return []
    rows = frame.values.tolist() if isinstance(frame, pd.DataFrame) else list(frame)
    out = []
    for row in rows:
        cells = ["" if cell is None or (isinstance(cell, float) and cell != cell) else str(cell) for cell in row]
        out.append(Preference(*(cells + ["", "", ""])[:3]))
    return [p for p in out if p.prompt.strip() or p.chosen.strip() or p.rejected.strip()]


def load_preset(key: str, request: gr.Request):
    if key == CUSTOM:
        return (gr.skip(),) * 9
    try:
        p = preferences.preset(key)
    except TrainingError as error:
        _fail(request, error)
    s = p.settings
    about = tr(request, f"feedback.about_{key}")
    return (pairs_frame(p.pairs), s.beta, s.learning_rate, s.max_steps, s.batch_size, s.lora_layers, s.max_seconds,
            s.sft_weight, about)


def import_jsonl(file, request: gr.Request):
    if file is None:
        return gr.skip(), gr.skip()
    path = Path(file if isinstance(file, str) else getattr(file, "name", file))
    try:
        if path.stat().st_size > 2_000_000:
            raise TrainingError("jsonl", "The file is over 2 MB.", line=0, reason="over 2 MB")
        pairs, _ = preferences.from_jsonl(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        _fail(request, TrainingError("jsonl", "not UTF-8 text", line=0, reason="not UTF-8 text"))
    except TrainingError as error:
        _fail(request, error)
    return pairs_frame(pairs[:preferences.MAX_PAIRS]), CUSTOM


def export_jsonl(frame, request: gr.Request):
    path = downloads.folder("feedback", _session(request)) / "preferences.jsonl"
    path.write_text(preferences.to_jsonl(frame_pairs(frame)), encoding="utf-8")
    return str(path)


# --- 1. collect -----------------------------------------------------------------------------------------------------


def _score_label(rm: TrainedReward | None, prompt: str, answer: str, request, base) -> str:
    if rm is None or not answer:
        return ""
    score = reward.scores(rm.model, base.model, base.tokenizer, [(prompt, answer)])[0]
    return tr(request, "feedback.score", score=score)


def two_answers(prompt: str, rm: TrainedReward | None, request: gr.Request, settings: Settings = Settings()):
    """Two sampled answers side by side (and their reward scores once a reward model exists)."""
    try:
        base = models.get_model(settings.model)
        a, b = preferences.two_answers(prompt, loaded=base)
    except (TrainingError, models.ModelLoadError) as error:
        _fail(request, error)
    pending = (prompt.strip(), a, b)
    return (pending, a, b, _score_label(rm, prompt, a, request, base), _score_label(rm, prompt, b, request, base))


def pick(which: str, pending, frame, request: gr.Request):
    """Record the user's choice as a pair (A over B, B over A); 'both bad' and 'skip' add nothing."""
    if not pending:
        raise gr.Error(tr(request, "feedback.no_pair"))
    prompt, a, b = pending
    pairs = frame_pairs(frame)
    if which in ("a", "b"):
        chosen, rejected = (a, b) if which == "a" else (b, a)
        pairs.insert(0, Preference(prompt, chosen, rejected))  # on top, where the user sees it land
        if len(pairs) > preferences.MAX_PAIRS:
            gr.Warning(tr(request, "feedback.full", n=preferences.MAX_PAIRS))
        gr.Info(tr(request, "feedback.added", n=min(len(pairs), preferences.MAX_PAIRS)))
    elif which == "both_bad":
        gr.Info(tr(request, "feedback.both_bad_noted"))
    return None, "", "", "", "", pairs_frame(pairs[:preferences.MAX_PAIRS]), CUSTOM


# --- 2. reward model ------------------------------------------------------------------------------------------------


def train_reward(frame, key: str, request: gr.Request, settings: Settings = Settings()):
    try:
        pairs = preferences.validate_pairs(frame_pairs(frame))
        base = models.get_model(settings.model)
        started = time.perf_counter()
        rm = dpo.train_reward_model(pairs, "", base)
        seconds = time.perf_counter() - started
        held = preferences.triples(preferences.preset(key).held_out_pairs) if key in preferences.PRESETS else []
        accuracy = reward.accuracy(rm, base.model, base.tokenizer, held) if held else math.nan
    except (TrainingError, models.ModelLoadError) as error:
        _fail(request, error)
    trained = TrainedReward(rm, seconds, len(held), accuracy)
    return trained, reward_status(trained, request)


def reward_status(rm: TrainedReward | None, request: gr.Request | None) -> str:
    if rm is None:
        return f'<p id="feedback-rm-status" data-trained="0">{html.escape(tr(request, "feedback.rm_none"))}</p>'
    held = tr(request, "feedback.rm_held", n=rm.held_out, accuracy=rm.held_out_accuracy) if rm.held_out else ""
    line = tr(request, "feedback.rm_status", pairs=rm.model.pairs, seconds=rm.seconds, train=rm.model.train_accuracy,
              held=held)
    accuracy = "" if math.isnan(rm.held_out_accuracy) else f"{rm.held_out_accuracy:.3f}"
    return (f'<p id="feedback-rm-status" data-trained="1" data-held-out-accuracy="{accuracy}">'
            f'<b>{html.escape(line)}</b></p>')


def best_of_n(prompt: str, n: int, rm: TrainedReward | None, request: gr.Request, settings: Settings = Settings()) -> str:
    if rm is None:
        raise gr.Error(tr(request, "feedback.error_need_rm"))
    try:
        ranked = dpo.best_of_n(prompt, rm.model, int(n), loaded=models.get_model(settings.model))
    except (TrainingError, models.ModelLoadError) as error:
        _fail(request, error)
    items = []
    for item in ranked:
        badge = f' <b style="color:#16a34a">★ {html.escape(tr(request, "feedback.best"))}</b>' if item["best"] else ""
        items.append(f'<li class="feedback-candidate" data-best="{int(item["best"])}" style="margin-bottom:6px">'
                     f'<code>{item["reward"]:+.2f}</code>{badge}<br>{html.escape(item["answer"])}</li>')
    return f'<ol id="feedback-best-of-n">{"".join(items)}</ol>'


# --- 3. DPO -------------------------------------------------------------------------------------------------------


def _status(run: dpo.DPORun | None, request: gr.Request | None) -> tuple[str, str]:
    if run is None:
        return "idle", tr(request, "feedback.status_idle")
    status = run.status
    if status == "error":
        return status, tr(request, "feedback.status_error", error=run.error)
    return status, tr(request, f"feedback.status_{status}", step=run.step, steps=run.max_steps,
                      diverged=run.diverged_at, restored=run.good_step)


def _nan(value: float) -> float:
    return value if isinstance(value, float) and math.isfinite(value) else 0.0


def progress_html(run: dpo.DPORun | None, request: gr.Request | None) -> str:
    status, line = _status(run, request)
    step = run.step if run else 0
    stats = ""
    if run is not None and run.logs:
        stats = tr(request, "feedback.stats", step=run.step, steps=run.max_steps, seconds=run.seconds,
                   speed=run.steps_per_second, margin=_nan(run.last("rewards/margins")),
                   accuracy=_nan(run.last("rewards/accuracies")), kl=_nan(run.last("kl")))
    fraction = min(1.0, step / run.max_steps) if run else 0.0
    color = "#dc2626" if status in ("diverged", "error") else "#2563eb"
    return (f'<div style="height:10px;border-radius:5px;background:#e5e7eb;overflow:hidden">'
            f'<div style="height:100%;width:{100 * fraction:.1f}%;background:{color}"></div></div>'
            f'<p id="feedback-status-line" data-status="{status}" data-step="{step}" style="margin:6px 0 2px">'
            f'<b>{html.escape(line)}</b></p><p id="feedback-stats" style="margin:2px 0">{html.escape(stats)}</p>')


def curves(run: dpo.DPORun | None, keys: dict[str, str], request: gr.Request | None):
    """(frame, color map) of the logged series `keys` ({log key: curve name}) over the steps."""
    rows = []
    for entry in (run.logs if run else []):
        for key, curve in keys.items():
            if key in entry and math.isfinite(entry[key]):
                rows.append({"step": entry["step"], "value": entry[key],
                             "curve": tr(request, f"feedback.curve_{curve}")})
    colors = {tr(request, f"feedback.curve_{c}"): COLORS[c] for c in keys.values()}
    return (pd.DataFrame(rows) if rows else None), colors


def comparison_html(run: dpo.DPORun | None, request: gr.Request | None) -> str:
    if run is None or not run.comparisons:
        return f'<p id="feedback-compare-empty">{html.escape(tr(request, "feedback.no_comparison"))}</p>'

    def cell(text: str, chars: int, score, ok, looped: bool = False) -> str:
        mark = ("" if ok is None else (" ✅" if ok else " ❌")) + (f" 🔁 {tr(request, 'feedback.loops')}" if looped else "")
        extra = tr(request, "feedback.chars", n=chars) + (f" · {tr(request, 'feedback.score', score=score)}"
                                                          if score is not None else "")
        return f'<td>{html.escape(text)}{mark}<br><small style="opacity:.7">{html.escape(extra)}</small></td>'

    head = "".join(f"<th>{html.escape(tr(request, k))}</th>" for k in
                   ("feedback.col_prompt", "feedback.col_before", "feedback.col_after"))
    yours = tr(request, "feedback.yours")
    rows = [f'<tr class="feedback-row{" feedback-own" if r["question"] in run.own else ""}"><td><b>'
            f'{html.escape(r["question"])}</b>{f"<br><small>{html.escape(yours)}</small>" if r["question"] in run.own else ""}'
            f'</td>{cell(r["before"], r["before_chars"], r["before_reward"], r.get("before_ok"), r.get("before_loops"))}'
            f'{cell(r["after"], r["after_chars"], r["after_reward"], r.get("after_ok"), r.get("after_loops"))}</tr>'
            for r in run.comparisons]
    n = len(run.comparisons)
    before = sum(r["before_chars"] for r in run.comparisons) / n
    after = sum(r["after_chars"] for r in run.comparisons) / n
    rewards_b = [r["before_reward"] for r in run.comparisons if r["before_reward"] is not None]
    rewards_a = [r["after_reward"] for r in run.comparisons if r["after_reward"] is not None]
    mean = tr(request, "feedback.mean_line", before=before, after=after, change=(after - before) / max(before, 1),
              rb=sum(rewards_b) / len(rewards_b) if rewards_b else 0.0,
              ra=sum(rewards_a) / len(rewards_a) if rewards_a else 0.0)
    title = html.escape(tr(request, "feedback.compare_title", tokens=dpo.ANSWER_TOKENS))
    reach = carry_over(run, request)
    return (f'<div id="feedback-compare" data-mean-before="{before:.1f}" data-mean-after="{after:.1f}">'
            f'<p><b>{title}</b></p><p>{html.escape(mean)}</p>{reach}<table style="width:100%;font-size:0.92em">'
            f'<thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table></div>')


CARRIED = -0.10  # the presenter's prompts count as moved when their answers got at least 10% shorter


def _change(rows: list[dict]) -> float:
    before = sum(r["before_chars"] for r in rows)
    return (sum(r["after_chars"] for r in rows) - before) / max(before, 1)


def carry_over(run: dpo.DPORun, request: gr.Request | None) -> str:
    """Whether the change reached the presenter's own prompts, and why not when it did not. Said for pairs whose
    chosen answers are clearly shorter (the concise preset, and a table grown from it), where the effect is a length:
    DPO moves what its pairs show, and little beyond."""
    own = [r for r in run.comparisons if r["question"] in run.own]
    preset_rows = [r for r in run.comparisons if r["question"] not in run.own]
    about_length = sum(len(p.chosen) for p in run.pairs) < 0.7 * sum(len(p.rejected) for p in run.pairs)
    if not own or not preset_rows or not about_length:
        return ""
    mine, theirs = _change(own), _change(preset_rows)
    key = "feedback.carried" if mine <= CARRIED else "feedback.not_carried"
    state = "yes" if mine <= CARRIED else "no"
    return (f'<p id="feedback-carry" data-carried="{state}">'
            f'{html.escape(tr(request, key, mine=mine, preset=theirs))}</p>')


def render(run: dpo.DPORun | None, request: gr.Request | None):
    rewards, reward_colors = curves(run, {"rewards/chosen": "chosen", "rewards/rejected": "rejected",
                                          "rewards/margins": "margin"}, request)
    health, health_colors = curves(run, {"rewards/accuracies": "accuracy", "kl": "kl"}, request)
    return (run, progress_html(run, request),
            gr.update(value=rewards, color_map=reward_colors, x_title=tr(request, "feedback.x_step"),
                      y_title=tr(request, "feedback.y_reward"), color_title=" "),
            gr.update(value=health, color_map=health_colors, x_title=tr(request, "feedback.x_step"),
                      y_title=tr(request, "feedback.y_value"), color_title=" "),
            comparison_html(run, request))


def start(frame, key, beta, lr, steps, batch, layers, budget, sft_weight, own_text, rm: TrainedReward | None,
          previous, request: gr.Request, settings: Settings = Settings()):
    if previous is not None and not previous.finished:
        previous.stop.set()
        previous.wait(30)
    try:
        chosen = DPOSettings(beta=float(beta), learning_rate=float(lr), max_steps=int(steps),
                             batch_size=int(batch), lora_layers=int(layers), max_seconds=float(budget),
                             sft_weight=float(sft_weight))
        own = preferences.own_prompts(own_text)
        held = preferences.preset(key if key in preferences.PRESETS else "concise").held_out
        questions = held + [(p, None) for p in own if p not in {q for q, _ in held}]
        run = dpo.start_run(frame_pairs(frame), "", chosen, base=models.get_model(settings.model),
                            session=_session(request), preset_key=key if key != CUSTOM else "",
                            reward_model=rm.model if rm else None, questions=questions)
        run.own = own
    except (TrainingError, Busy, models.ModelLoadError) as error:
        _fail(request, error)
    except (TypeError, ValueError) as error:  # an emptied number box
        raise gr.Error(tr(request, "tuning.error_not_number", error=error)) from None
    yield from watch(run, lambda: render(run, request), lambda: render(run, request), lambda: _status(run, request)[1])


def reset(run, request: gr.Request):
    if run is not None:
        run.stop.set()
    TUNED.drop(_session(request), "dpo")
    return render(None, request)


def feedback_api(preset: str = "concise", jsonl: str = "", steps: int = 0, max_seconds: float = 150,
                 request: gr.Request = None, settings: Settings = Settings()) -> Iterator[dict]:
    """RLHF for this API session: fit a reward model on preference pairs, run DPO, compare answers before and after.

    One run trains at a time on this machine; a second is refused, not queued. When DPO ends, `chat` with
    model="dpo" answers with the aligned model of this session.

    Args:
        preset: "concise", "friendly", "chinese", "refuse" or "overoptimise" (pairs and tested settings), or
            "custom" with `jsonl`.
        jsonl: preference pairs in TRL's format ({"prompt", "chosen", "rejected"} per line, 4 to 64 of them); used
            instead of the preset's when given.
        steps: DPO steps (0 = the preset's; at most 200).
        max_seconds: time budget for DPO, 5 to 300 seconds.

    Returns:
        Progress while training, then a summary: the reward model's accuracy on held-out pairs (presets), DPO steps
        and seconds, the final margin and KL, and for each held-out prompt the answers before and after with their
        reward scores.
    """
    custom = bool(str(jsonl or "").strip())
    try:
        if not custom and preset not in preferences.PRESETS:
            raise TrainingError("preset", f"Unknown preset {preset!r}: use one of {', '.join(preferences.PRESETS)}",
                                preset=preset)
        chosen = preferences.preset(preset if preset in preferences.PRESETS else "concise")
        pairs, system = preferences.from_jsonl(jsonl) if custom else (chosen.pairs, "")
        run_settings = DPOSettings(**{**chosen.settings.__dict__, "max_seconds": float(max_seconds),
                                      **({"max_steps": int(steps)} if steps else {})})
        runs.refuse_if_busy()
        base = models.get_model(settings.model)
        rm = dpo.train_reward_model(pairs, system, base)
        held = [] if custom else preferences.triples(chosen.held_out_pairs)
        accuracy = reward.accuracy(rm, base.model, base.tokenizer, held) if held else None
        run = dpo.start_run(pairs, system, run_settings, base, session=_session(request),
                            preset_key="" if custom else chosen.key, reward_model=rm,
                            questions=[] if custom else chosen.held_out)
    except (TrainingError, Busy, models.ModelLoadError) as error:
        _fail(request, error)
    except (TypeError, ValueError) as error:
        raise gr.Error(tr(request, "tuning.error_not_number", error=error)) from None
    head = {"reward_model_accuracy": accuracy, "reward_model_train_accuracy": rm.train_accuracy}
    yield from follow(run, dpo.summary, head)


def build(settings: Settings) -> None:
    with gr.Tab(T("feedback.tab"), id="feedback"):
        gr.Markdown(T("feedback.intro"))
        pending = gr.State(None)  # (prompt, answer A, answer B) waiting for a choice
        rm = gr.State(None)
        run = gr.State(None, time_to_live=RUN_TTL_S, delete_callback=release)
        s = DEFAULT.settings

        gr.Markdown(T("feedback.step1"))
        gr.Markdown(T("feedback.step1_help"))
        with gr.Row():
            prompt = gr.Textbox(label=T("feedback.prompt"), placeholder=T("feedback.prompt_placeholder"), scale=4,
                                max_length=lora.MAX_CHARS, elem_id="feedback-prompt")
            ask = gr.Button(T("feedback.two_answers"), variant="primary", scale=1, elem_id="feedback-ask")
        with gr.Row(equal_height=True):
            with gr.Column():
                answer_a = gr.Textbox(label=T("feedback.answer_a"), lines=5, interactive=False,
                                      elem_id="feedback-answer-a")
                score_a = gr.Markdown(elem_id="feedback-score-a")
                pick_a = gr.Button(T("feedback.a_better"), elem_id="feedback-pick-a")
            with gr.Column():
                answer_b = gr.Textbox(label=T("feedback.answer_b"), lines=5, interactive=False,
                                      elem_id="feedback-answer-b")
                score_b = gr.Markdown(elem_id="feedback-score-b")
                pick_b = gr.Button(T("feedback.b_better"), elem_id="feedback-pick-b")
        with gr.Row():
            both_bad = gr.Button(T("feedback.both_bad"), size="sm", elem_id="feedback-both-bad")
            skip = gr.Button(T("feedback.skip"), size="sm", elem_id="feedback-skip")
        with gr.Row():
            key = gr.Dropdown([(T(f"feedback.preset_{k}"), k) for k in preferences.PRESETS]
                              + [(T("feedback.preset_custom"), CUSTOM)], value="concise", label=T("feedback.preset"),
                              elem_id="feedback-preset", scale=2)
            load = gr.Button(T("feedback.load"), size="sm", scale=1, elem_id="feedback-load")
        about = gr.Markdown(T("feedback.about_concise"), elem_id="feedback-about")
        table = gr.Dataframe(pairs_frame(DEFAULT.pairs), column_count=3, interactive=True, wrap=True,
                             headers=[both("feedback.col_prompt"), both("feedback.col_chosen"),
                                      both("feedback.col_rejected")],
                             label=T("feedback.table"), max_height=320, elem_id="feedback-table")
        with gr.Row():
            upload = gr.UploadButton(T("feedback.import"), file_types=[".jsonl", ".json", ".txt"], size="sm",
                                     elem_id="feedback-import")
            export = gr.DownloadButton(T("feedback.export"), size="sm", elem_id="feedback-export")
        gr.Markdown(T("feedback.jsonl_info"))

        gr.Markdown(T("feedback.step2"))
        gr.Markdown(T("feedback.step2_help"))
        with gr.Row(equal_height=True):
            train_rm = gr.Button(T("feedback.train_rm"), variant="primary", scale=1, elem_id="feedback-train-rm")
            rm_status = gr.HTML(localized(reward_status, None), elem_id="feedback-rm")
        with gr.Accordion(T("feedback.best_of_n"), open=True):
            gr.Markdown(T("feedback.best_of_n_help"))
            with gr.Row():
                bon_prompt = gr.Textbox(label=T("feedback.prompt"), scale=4, max_length=lora.MAX_CHARS,
                                        elem_id="feedback-bon-prompt")
                n = gr.Slider(2, 8, value=4, step=1, label=T("feedback.n"), scale=1, elem_id="feedback-n")
                bon = gr.Button(T("feedback.sample_n"), scale=1, elem_id="feedback-bon")
            bon_out = gr.HTML(elem_id="feedback-bon-out")

        gr.Markdown(T("feedback.step3"))
        gr.Markdown(T("feedback.step3_help"))
        with gr.Row():
            beta = gr.Slider(*preferences.LIMITS["beta"], value=s.beta, step=0.01, label=T("feedback.beta"),
                             info=T("feedback.beta_info"), elem_id="feedback-beta")
            lr = gr.Number(s.learning_rate, label=T("finetune.lr"), info=T("finetune.lr_info"),
                           minimum=preferences.LIMITS["learning_rate"][0], maximum=preferences.LIMITS["learning_rate"][1],
                           elem_id="feedback-lr")
            steps = gr.Slider(*preferences.LIMITS["max_steps"], value=s.max_steps, step=1, label=T("finetune.steps"),
                              elem_id="feedback-steps")
            batch = gr.Slider(*preferences.LIMITS["batch_size"], value=s.batch_size, step=1, label=T("feedback.batch"),
                              elem_id="feedback-batch")
        with gr.Row():
            layers = gr.Slider(0, 30, value=s.lora_layers, step=1, label=T("finetune.layers"),
                               info=T("finetune.layers_info"), elem_id="feedback-layers")
            budget = gr.Slider(*preferences.LIMITS["max_seconds"], value=s.max_seconds, step=5,
                               label=T("finetune.budget"), elem_id="feedback-budget")
            sft_weight = gr.Slider(*preferences.LIMITS["sft_weight"], value=s.sft_weight, step=0.1,
                                   label=T("feedback.sft_weight"), info=T("feedback.sft_weight_info"),
                                   elem_id="feedback-sft-weight")
        own_prompts = gr.Textbox(label=T("feedback.own_prompts"), info=T("feedback.own_prompts_info"), lines=2,
                                 max_lines=preferences.MAX_OWN_PROMPTS, elem_id="feedback-own-prompts",
                                 max_length=preferences.MAX_OWN_PROMPTS * (lora.MAX_CHARS + 1))
        with gr.Row():
            start_btn = gr.Button(T("feedback.start"), variant="primary", scale=2, elem_id="feedback-start")
            stop_btn = gr.Button(T("finetune.stop"), variant="stop", scale=1, elem_id="feedback-stop")
            reset_btn = gr.Button(T("finetune.reset"), scale=1, elem_id="feedback-reset")
        progress = gr.HTML(localized(progress_html, None), elem_id="feedback-progress")
        with gr.Row():
            rewards_plot = gr.LinePlot(x="step", y="value", color="curve", label=T("feedback.plot_rewards"),
                                       height=240, elem_id="feedback-rewards-plot")
            health_plot = gr.LinePlot(x="step", y="value", color="curve", label=T("feedback.plot_health"),
                                      height=240, elem_id="feedback-health-plot")
        comparison = gr.HTML(localized(comparison_html, None), elem_id="feedback-comparison")
        gr.Markdown(T("feedback.hacking"))
        gr.Markdown(T("feedback.chat_hint"))

        heavy = dict(api_visibility="private", **limits.heavy("model"))  # the server's "model" group (chat.budget)
        answers = bind(two_answers, settings=settings)
        ask.click(answers, [prompt, rm], [pending, answer_a, answer_b, score_a, score_b], **heavy)
        prompt.submit(answers, [prompt, rm], [pending, answer_a, answer_b, score_a, score_b], **heavy)
        picked = [pending, answer_a, answer_b, score_a, score_b, table, key]
        for button, which in ((pick_a, "a"), (pick_b, "b"), (both_bad, "both_bad"), (skip, "skip")):
            button.click(_picker(which), [pending, table], picked, api_visibility="private")
        preset_outputs = [table, beta, lr, steps, batch, layers, budget, sft_weight, about]
        load.click(load_preset, key, preset_outputs, api_visibility="private")
        key.change(load_preset, key, preset_outputs, api_visibility="private")
        upload.upload(import_jsonl, upload, [table, key], api_visibility="private")
        export.click(export_jsonl, table, export, api_visibility="private")
        train_rm.click(bind(train_reward, settings=settings), [table, key], [rm, rm_status], **heavy)
        bon.click(bind(best_of_n, settings=settings), [bon_prompt, n, rm], bon_out, **heavy)
        outputs = [run, progress, rewards_plot, health_plot, comparison]
        start_btn.click(bind(start, settings=settings),
                        [table, key, beta, lr, steps, batch, layers, budget, sft_weight, own_prompts, rm, run],
                        outputs, show_progress="hidden", concurrency_limit=2, concurrency_id="chatlab-tuning",
                        api_visibility="private")
        stop_btn.click(stop, run, None, queue=False, api_visibility="private")
        reset_btn.click(reset, run, outputs, api_visibility="private")
        # two queue slots: a second caller reaches the one training slot (chat.training.run.claim, which is also
        # the server's "training" slot of chat.budget) and is refused with a clear message, not queued for minutes
        gr.api(bind(feedback_api, settings=settings), api_name="feedback", concurrency_limit=2,
               concurrency_id="chatlab-tuning-api")


def _picker(which: str):
    def handler(pending, frame, request: gr.Request):
        return pick(which, pending, frame, request)

    return handler
