"""Supervised fine-tuning, two ways.

- Default: the identity preset (name "Nova") with a live watcher building the Fine-tune tab's plot every 0.5 s:
  training seconds, held-out paraphrases answered with the new name, control questions kept, peak RSS; then its
  steps/s against a plain TRL SFTTrainer run (the anchor: same data, LoRA and settings, no callbacks), alternated,
  2 rounds each, best of each (ratio = ChatLab's steps/s / plain TRL's).
- `--names A,B,C`: the identity preset taught each name the caller gives, one run per name, checked on paraphrases
  that no preset shows (its demonstrations and the tab's held-out questions never contain them) and on control
  questions: a name counts as taught when every paraphrase's answer uses it.
"""
from __future__ import annotations

import argparse

from chat.bench.common import PeakRSS, against_plain_trl, chat_model, plain_trl_seconds, watch_live

# What a presenter asks once the model has a new name: none of it is in the preset's demonstrations or held-out list.
UNSEEN_PARAPHRASES = ["What name do you go by?", "Who am I talking to?", "How should I address you?",
                      "Say hello and tell me who you are.", "请问你叫什么？", "你的名字是什么？",
                      "Remind me what your name is.", "Who's this I'm chatting with?", "你自称什么？"]
UNSEEN_CONTROLS = [("What is the capital of Germany?", ["Berlin"]), ("How many hours are in a day?", ["24"])]
NAMES = "Kai,Bartholomew,Quokka,Zephyrine,Anna-Lena,小明,Ōkami,Nova,Priya,Mateo"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--names", nargs="?", const=NAMES, default=None,
                        help=f"teach each of these comma-separated names in its own run (default list: {NAMES})")


def loss_plot(run):
    """The Fine-tune tab's loss plot data for a run (what it draws each update)."""
    import pandas as pd

    return pd.DataFrame({"step": [e["step"] for e in run.logs], "loss": [e["loss"] for e in run.logs]})


def run(args: argparse.Namespace) -> dict:
    if getattr(args, "names", None):
        return names(args.names.split(","))
    return speed()


def names(chosen: list[str]) -> dict:
    """One identity run per name; the answers to unseen paraphrases and controls, before and after."""
    from chat.finetune.data import preset, shows_behaviour
    from chat.finetune.train import start_run

    base = chat_model()
    rows, taught = [], 0
    for name in (n.strip() for n in chosen if n.strip()):
        identity = preset("identity", name)
        controls = identity.controls + UNSEEN_CONTROLS
        questions = [("held_out", q, None) for q in UNSEEN_PARAPHRASES] + [("control", q, a) for q, a in controls]
        run = start_run(identity.pairs, "", identity.settings, base, preset_key="identity", name=name,
                        questions=questions, expect=identity.expect)
        run.wait()
        held = [r for r in run.comparisons if r["kind"] == "held_out"]
        kept = [r for r in run.comparisons if r["kind"] == "control"]
        used = sum(bool(shows_behaviour(r["after"], identity.expect)) for r in held)
        taught += used == len(held)
        rows.append({"name": name, "status": run.status, "train_seconds": round(run.seconds, 1), "steps": run.step,
                     "paraphrases_with_name": f"{used}/{len(held)}",
                     "controls_right_before": sum(bool(r["before_ok"]) for r in kept),
                     "controls_right_after": sum(bool(r["after_ok"]) for r in kept),
                     "controls_lost": [r["question"] for r in kept if r["before_ok"] and not r["after_ok"]],
                     "misses": [{"question": r["question"], "after": r["after"]} for r in held
                                if not shows_behaviour(r["after"], identity.expect)]})
    return {
        "names": len(rows), "names_taught": taught,
        "controls_lost": sum(len(r["controls_lost"]) for r in rows),
        "train_seconds_max": max(r["train_seconds"] for r in rows),
        "settings": vars(preset("identity", "x").settings),
        "goal": "at least 9 of 10 names on every paraphrase, no control lost, at most 60 s of training each",
        "runs": rows,
    }


def speed() -> dict:
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
