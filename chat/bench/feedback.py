"""Human feedback (DPO), two ways.

- `--unseen`: the "concise" preset's reward model and DPO run, judged on prompts no preset shows (facts,
  explanations, advice, lists, Chinese): mean length before/after, facts kept, answers that loop, DPO's seconds.
- Default: the "concise" preset end to end: the reward model's accuracy on held-out pairs, DPO with a
live watcher building the Human feedback tab's two plots every 0.5 s (seconds, held-out answers' mean length and
correctness before/after, reward scores), peak RSS; then DPO's steps/s against a plain TRL DPOTrainer run (the
anchor: same data, LoRA and settings, no callbacks), alternated, best of each (ratio = ChatLab's / plain TRL's)."""
from __future__ import annotations

import argparse

from chat.bench.common import PeakRSS, against_plain_trl, chat_model, plain_trl_seconds, watch_live

# Prompts of several kinds that no preset shows (pairs, held-out pairs, held-out prompts), with a right answer's
# words where there is one: does "concise" reach what a presenter types?
UNSEEN = [
    ("What is the capital of France?", ["Paris"]), ("What is the capital of Canada?", ["Ottawa"]),
    ("How many legs does an insect have?", ["six", "6"]), ("Who painted The Starry Night?", ["Gogh"]),
    ("What is the tallest mountain in the world?", ["Everest"]), ("法国的首都是哪里？", ["巴黎"]),
    ("Why do leaves change colour in autumn?", None), ("How does a rainbow form?", None),
    ("Why do we need sleep?", None), ("Give me a tip for learning a new language.", None),
    ("What should I cook for dinner tonight?", None), ("How can I stay focused while studying?", None),
    ("List three kinds of renewable energy.", None), ("Name four musical instruments.", None),
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--unseen", action="store_true",
                        help="judge the concise preset's DPO on prompts no preset shows (length, facts, loops)")


PLOTTED = ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies", "kl")  # the tab's curves


def curves(run):
    """The Human feedback tab's plot data for a run: every plotted series, long form (step, value, curve)."""
    import math

    import pandas as pd

    return pd.DataFrame([{"step": entry["step"], "value": entry[key], "curve": key} for entry in run.logs
                         for key in PLOTTED if key in entry and math.isfinite(entry[key])])


def unseen() -> dict:
    """The concise preset's reward model and DPO as the tab runs them, then before/after on UNSEEN."""
    import time

    from chat.feedback.dpo import start_run, train_reward_model
    from chat.feedback.preferences import preset

    base = chat_model()
    chosen = preset("concise")
    shown = {p.prompt for p in chosen.pairs + chosen.held_out_pairs} | {q for q, _ in chosen.held_out}
    assert not shown & {q for q, _ in UNSEEN}, "an unseen prompt is in the preset"
    start = time.perf_counter()
    rm = train_reward_model(chosen.pairs, "", base)
    rm_seconds = time.perf_counter() - start
    run = start_run(chosen.pairs, "", chosen.settings, base, preset_key="concise", reward_model=rm, questions=UNSEEN)
    run.wait()
    rows = run.comparisons
    before, after = sum(r["before_chars"] for r in rows), sum(r["after_chars"] for r in rows)
    facts = [r for r in rows if "before_ok" in r]
    return {
        "prompts": len(rows), "factual": len(facts), "status": run.status, "dpo_steps": run.step,
        "dpo_seconds": round(run.seconds, 1), "reward_model_seconds": round(rm_seconds, 1),
        "settings": vars(chosen.settings), "pairs": len(chosen.pairs),
        "mean_chars_before": round(before / len(rows), 1), "mean_chars_after": round(after / len(rows), 1),
        "length_cut": round(1 - after / before, 3),
        "shorter": sum(r["after_chars"] < r["before_chars"] for r in rows),
        "facts_right_before": sum(r["before_ok"] for r in facts), "facts_right_after": sum(r["after_ok"] for r in facts),
        "facts_lost": [r["question"] for r in facts if r["before_ok"] and not r["after_ok"]],
        "loops_before": sum(r["before_loops"] for r in rows), "loops_after": sum(r["after_loops"] for r in rows),
        "goal": "answers at least 30% shorter, facts kept, no loop, at most 150 s",
        "answers": [{k: r[k] for k in ("question", "before", "after", "before_chars", "after_chars")} for r in rows],
    }


def run(args: argparse.Namespace) -> dict:
    if getattr(args, "unseen", False):
        return unseen()
    import statistics
    import time

    from trl import DPOConfig, DPOTrainer

    from chat.feedback import reward
    from chat.feedback.dpo import loss_args, start_run, train_reward_model
    from chat.feedback.preferences import dpo_rows, preset, triples

    base = chat_model()
    chosen = preset("concise")
    s = chosen.settings
    with PeakRSS() as rss:
        start = time.perf_counter()
        rm = train_reward_model(chosen.pairs, "", base)
        rm_seconds = time.perf_counter() - start
        rm_accuracy = reward.accuracy(rm, base.model, base.tokenizer, triples(chosen.held_out_pairs))
        run = start_run(chosen.pairs, "", s, base, preset_key="concise", reward_model=rm, questions=chosen.held_out)
        updates = watch_live(run, curves)
    rows = run.comparisons
    mean = statistics.mean
    before, after = mean(r["before_chars"] for r in rows), mean(r["after_chars"] for r in rows)
    ours, plain = [run.steps_per_second], []
    trl_args = dict(learning_rate=s.learning_rate, max_steps=s.max_steps, per_device_train_batch_size=s.batch_size,
                    seed=s.seed, data_seed=s.seed, beta=s.beta, max_length=512, precompute_ref_log_probs=True,
                    precompute_ref_batch_size=8, **loss_args(s))
    for round_ in range(2):  # alternated, so a change in the machine's load hits both alike
        plain.append(s.max_steps / plain_trl_seconds(DPOTrainer, DPOConfig, dpo_rows(chosen.pairs), base, s,
                                                     trl_args))
        if round_ == 0:
            again = start_run(chosen.pairs, "", s, base)
            watch_live(again, curves)
            ours.append(again.steps_per_second)
    return {
        "reward_model_accuracy": round(rm_accuracy, 3),
        "reward_model_seconds": round(rm_seconds, 2),
        "held_out_pairs": len(chosen.held_out_pairs),
        "dpo_seconds": round(run.seconds, 1),
        "dpo_steps": run.step,
        "status": run.status,
        "margin_end": round(run.last("rewards/margins"), 3),
        "kl_end": round(run.last("kl"), 4),
        "mean_chars_before": round(before, 1),
        "mean_chars_after": round(after, 1),
        "length_cut": round(1 - after / before, 3),
        "right_before": f"{sum(bool(r.get('before_ok')) for r in rows)}/{len(rows)}",
        "right_after": f"{sum(bool(r.get('after_ok')) for r in rows)}/{len(rows)}",
        "mean_reward_before": round(mean(r["before_reward"] for r in rows), 3),
        "mean_reward_after": round(mean(r["after_reward"] for r in rows), 3),
        "answers": [{k: r[k] for k in ("question", "before", "after")} for r in rows],
    } | against_plain_trl(ours, plain, rss.peak, updates)
