"""`python -m chat.finetune`: fine-tune the chat model on a preset (or a JSONL file) and compare its answers."""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

from chat.finetune.data import PRESETS, SFTSettings, from_jsonl, preset, preset_questions
from chat.finetune.train import start_run, summary
from chat.training.run import TrainingError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Fine-tune the chat model (LoRA, TRL's SFTTrainer) on a preset and "
                                     "compare its answers before and after.")
    parser.add_argument("--preset", default="identity", choices=list(PRESETS),
                        help="demonstrations (default: identity)")
    parser.add_argument("--name", default=None, help="the identity preset's new name (default: Nova)")
    parser.add_argument("--jsonl", help="train on this JSONL file of chat messages instead of the preset's pairs")
    parser.add_argument("--max-seconds", type=float, default=None, help="time budget (default: 90)")
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps (default: the preset's)")
    parser.add_argument("--lr", type=float, default=None, help="learning rate (default: the preset's)")
    parser.add_argument("--ask", action="append", default=[], help="a question answered before and after (repeat)")
    parser.add_argument("--save", help="save the adapter (PEFT's folder) here: python -m chat.feedback "
                        "--from-finetune DIR starts DPO from it")
    parser.add_argument("--json", action="store_true", help="print one JSON object last")
    args = parser.parse_args(argv)
    try:
        chosen = preset(args.preset, args.name)
        pairs, system = (from_jsonl(Path(args.jsonl).read_text(encoding="utf-8")) if args.jsonl
                         else (chosen.pairs, ""))
        settings = SFTSettings(**{**asdict(chosen.settings), **{k: v for k, v in {
            "max_seconds": args.max_seconds, "max_steps": args.steps, "learning_rate": args.lr}.items()
            if v is not None}})
        questions = [("ask", q, None) for q in args.ask] + ([] if args.jsonl else preset_questions(chosen))
        started = time.perf_counter()
        run = start_run(pairs, system, settings, preset_key="" if args.jsonl else args.preset, name=chosen.name,
                        questions=questions, expect=None if args.jsonl else chosen.expect)
        while not run.finished:
            run.wait(1.0)
            if not args.json and run.logs:
                print(f"step {run.step}/{run.max_steps}  loss {run.last('loss'):.3f}  {run.seconds:.0f} s",
                      file=sys.stderr)
        run.wait()
    except TrainingError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.save and run.trained:
        run.model.save_pretrained(args.save)
    rows = {kind: [r for r in run.comparisons if r["kind"] == kind] for kind in ("ask", "held_out", "control")}
    result = summary(run) | {
        "wall_seconds": round(time.perf_counter() - started, 2),
        "asks": [{k: r[k] for k in ("question", "before", "after")} for r in rows["ask"]],
        "held_out": rows["held_out"], "controls": rows["control"],
        "taught": sum(bool(r.get("after_ok")) for r in rows["held_out"]),
        "controls_right_before": sum(bool(r.get("before_ok")) for r in rows["control"]),
        "controls_right_after": sum(bool(r.get("after_ok")) for r in rows["control"]),
    }
    if args.json:
        print(json.dumps(result, ensure_ascii=False))
    else:
        for row in run.comparisons:
            print(f"\nQ ({row['kind']}): {row['question']}\n  before: {row['before']}\n  after:  {row['after']}")
        print(json.dumps({k: v for k, v in result.items() if k not in ("asks", "held_out", "controls")},
                         ensure_ascii=False, indent=2))
    return 0 if run.status in ("done", "timeout", "stopped") else 1


if __name__ == "__main__":
    raise SystemExit(main())
