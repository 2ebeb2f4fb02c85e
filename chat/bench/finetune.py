"""Supervised fine-tuning: the identity preset (name "Nova") with a live watcher building the Fine-tune tab's plot
every 0.5 s: training seconds, held-out paraphrases answered with the new name, control questions kept, peak RSS;
then its steps/s against a plain TRL SFTTrainer run (the anchor: same data, LoRA and settings, no callbacks),
alternated, 2 rounds each, best of each (ratio = ChatLab's steps/s / plain TRL's)."""
from __future__ import annotations

import argparse

from chat.bench.common import PeakRSS, against_plain_trl, chat_model, plain_trl_seconds, watch_live


def loss_plot(run):
    """The Fine-tune tab's loss plot data for a run (what it draws each update)."""
    import pandas as pd

    return pd.DataFrame({"step": [e["step"] for e in run.logs], "loss": [e["loss"] for e in run.logs]})


def run(args: argparse.Namespace) -> dict:
    from trl import SFTConfig, SFTTrainer

    from chat.finetune.data import preset, preset_questions, sft_rows
    from chat.finetune.train import start_run

    base = chat_model()
    chosen = preset("identity", "Nova")
    s = chosen.settings
    with PeakRSS() as rss:
        run = start_run(chosen.pairs, "", s, base, preset_key="identity", name="Nova",
                        questions=preset_questions(chosen), expect=chosen.expect)
        updates = watch_live(run, loss_plot)
    held = [r for r in run.comparisons if r["kind"] == "held_out"]
    controls = [r for r in run.comparisons if r["kind"] == "control"]
    ours, plain = [run.steps_per_second], []
    rows = sft_rows(chosen.pairs)
    trl_args = dict(learning_rate=s.learning_rate, max_steps=s.max_steps, per_device_train_batch_size=s.batch_size,
                    seed=s.seed, data_seed=s.seed, max_length=512, completion_only_loss=True)
    for round_ in range(2):  # alternated, so a change in the machine's load hits both alike
        plain.append(s.max_steps / plain_trl_seconds(SFTTrainer, SFTConfig, rows, base, s, trl_args))
        if round_ == 0:
            again = start_run(chosen.pairs, "", s, base)
            watch_live(again, loss_plot)
            ours.append(again.steps_per_second)
    return {
        "train_seconds": round(run.seconds, 1),
        "steps": run.step,
        "status": run.status,
        "loss_start": round(run.first("loss"), 3),
        "loss_end": round(run.last("loss"), 3),
        "held_out_with_new_name": f"{sum(bool(r['after_ok']) for r in held)}/{len(held)}",
        "held_out_with_new_name_before": f"{sum(bool(r['before_ok']) for r in held)}/{len(held)}",
        "controls_right_before": f"{sum(bool(r['before_ok']) for r in controls)}/{len(controls)}",
        "controls_right_after": f"{sum(bool(r['after_ok']) for r in controls)}/{len(controls)}",
        "answers": [{k: r[k] for k in ("kind", "question", "before", "after")} for r in run.comparisons],
    } | against_plain_trl(ours, plain, rss.peak, updates)
