"""`python -m chat.feedback`: fit the reward model on a preset's pairs, run DPO, compare answers before and after."""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

from chat.feedback import reward
from chat.feedback.dpo import DPOSettings, start_run, summary, train_reward_model
from chat.feedback.preferences import PRESETS, from_jsonl, preset, triples
from chat.training.run import TrainingError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="RLHF on a preset: fit the reward model, run DPO (LoRA, TRL), and "
                                     "compare answers before and after with their reward scores.")
    parser.add_argument("--preset", default="concise", choices=list(PRESETS),
                        help="preference pairs (default: concise)")
    parser.add_argument("--jsonl", help="train on this JSONL file of prompt/chosen/rejected rows instead")
    parser.add_argument("--max-seconds", type=float, default=None, help="DPO time budget (default: 150)")
    parser.add_argument("--steps", type=int, default=None, help="DPO steps (default: the preset's)")
    parser.add_argument("--lr", type=float, default=None, help="learning rate (default: the preset's)")
    parser.add_argument("--beta", type=float, default=None, help="DPO beta (default: the preset's)")
    parser.add_argument("--ask", action="append", default=[], help="a prompt answered before and after (repeat)")
    parser.add_argument("--from-finetune", metavar="DIR",
                        help="start from a fine-tuned model: the adapter saved by python -m chat.finetune --save DIR "
                             "(or the Fine-tune tab's adapter.zip), merged into the chat model; it is then DPO's "
                             "reference and the 'before' answers")
    parser.add_argument("--json", action="store_true", help="print one JSON object last")
    args = parser.parse_args(argv)
    from chat.llm.models import get_model

    try:
        chosen = preset(args.preset)
        pairs, system = (from_jsonl(Path(args.jsonl).read_text(encoding="utf-8")) if args.jsonl
                         else (chosen.pairs, ""))
        settings = DPOSettings(**{**asdict(chosen.settings), **{k: v for k, v in {
            "max_seconds": args.max_seconds, "max_steps": args.steps, "learning_rate": args.lr,
            "beta": args.beta}.items() if v is not None}})
        base = get_model()
        if args.from_finetune:
            from chat.training.lora import load_adapter

            base = load_adapter(base, args.from_finetune)
        started = time.perf_counter()
        rm = train_reward_model(pairs, system, base)
        rm_seconds = time.perf_counter() - started
        held_out = [] if args.jsonl else triples(chosen.held_out_pairs)
        rm_accuracy = reward.accuracy(rm, base.model, base.tokenizer, held_out)
        run = start_run(pairs, system, settings, base, preset_key="" if args.jsonl else args.preset,
                        reward_model=rm, questions=[(q, None) for q in args.ask])
        while not run.finished:
            run.wait(1.0)
            if not args.json and run.logs:
                print(f"step {run.step}/{run.max_steps}  loss {run.last('loss'):.3f}  margin "
                      f"{run.last('rewards/margins'):.2f}  {run.seconds:.0f} s", file=sys.stderr)
        run.wait()
    except TrainingError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    result = {"reward_model_accuracy": round(rm_accuracy, 3) if held_out else None,
              "reward_model_train_accuracy": round(rm.train_accuracy, 3),
              "reward_model_seconds": round(rm_seconds, 2), "held_out_pairs": len(held_out),
              "started_from": base.title}
    result |= summary(run) | {"asks": [{k: r[k] for k in ("question", "before", "after", "before_reward",
                                                            "after_reward")} for r in run.comparisons]}
    if args.json:
        print(json.dumps(result, ensure_ascii=False))
    else:
        for row in result["asks"]:
            print(f"\nQ: {row['question']}\n  before ({row['before_reward']}): {row['before']}\n"
                  f"  after  ({row['after_reward']}): {row['after']}")
        print(json.dumps({k: v for k, v in result.items() if k != "asks"}, ensure_ascii=False, indent=2))
    return 0 if run.status in ("done", "timeout", "stopped") else 1


if __name__ == "__main__":
    raise SystemExit(main())
