"""`python -m chat.tinygpt`: train a tiny GPT on dialogs from the command line."""
from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import fields

from chat.training.run import TrainingError
from chat.tinygpt.model import save_model
from chat.tinygpt.tokenizer import TOKENIZERS
from chat.tinygpt.train import TinyGPTConfig, new_run, summary, train


def main(argv: list[str] | None = None) -> int:
    defaults = TinyGPTConfig()
    parser = argparse.ArgumentParser(prog="python -m chat.tinygpt", description=__doc__.splitlines()[0])
    parser.add_argument("--lang", default=defaults.lang, help=f"corpus language (default: {defaults.lang})")
    parser.add_argument("--topics", default="", help="comma-separated topics (default: all)")
    parser.add_argument("--tokenizer", choices=sorted(TOKENIZERS), default=defaults.tokenizer,
                        help=f"char: one token per character; bpe: byte-level BPE learned on the corpus "
                             f"(default: {defaults.tokenizer})")
    parser.add_argument("--bpe-vocab-size", type=int, default=defaults.bpe_vocab_size,
                        help=f"BPE vocabulary to learn (default: {defaults.bpe_vocab_size})")
    parser.add_argument("--bot-only", action="store_true", help="learn only the Bot's replies (masked loss)")
    parser.add_argument("--max-seconds", type=float, default=defaults.max_seconds,
                        help=f"training budget in seconds (default: {defaults.max_seconds:g})")
    parser.add_argument("--max-steps", type=int, default=defaults.max_steps,
                        help="stop after this many steps too; 0 = no limit (default: 0)")
    numbers = {"n_layer": "transformer blocks", "n_head": "attention heads", "n_embd": "embedding width",
               "block_size": "context length in tokens", "batch_size": "windows per step",
               "learning_rate": "AdamW learning rate", "dropout": "dropout probability",
               "eval_interval": "steps between validation losses", "sample_interval": "steps between samples",
               "seed": "random seed"}
    for name, what in numbers.items():
        default = getattr(defaults, name)
        parser.add_argument("--" + name.replace("_", "-"), type=type(default), default=default,
                            help=f"{what} (default: {default:g})")
    parser.add_argument("--save", default="", help="save the trained model to this folder")
    parser.add_argument("--json", action="store_true", help="print one JSON object at the end instead of progress")
    args = parser.parse_args(argv)
    names = {f.name for f in fields(TinyGPTConfig)}
    values = {k: v for k, v in vars(args).items() if k in names}
    values["topics"] = tuple(t.strip() for t in args.topics.split(",") if t.strip())
    try:
        run = new_run(TinyGPTConfig(**values))
    except (TrainingError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if not args.json:
        print(f"{run.corpus.conversations} conversations ({run.corpus.skipped} malformed entries skipped, "
              f"{run.corpus.duplicates} repeats dropped), "
              f"{run.tokenizer.kind} vocabulary {run.tokenizer.vocab_size}, {len(run.train_ids):,} training tokens, "
              f"{run.params:,} parameters")
    shown = 0
    for _ in train(run, update_every_s=2.0):
        if args.json:
            continue
        val = run.val_losses[-1] if run.val_losses else (0, math.nan, math.nan)
        train_loss = run.train_losses[-1][1] if run.train_losses else math.nan
        print(f"step {run.step:5d} | {run.seconds:6.1f} s | {run.iterations_per_second:5.1f} it/s | "
              f"train {train_loss:.3f} | val {val[1]:.3f} ({val[2]:.3f} bits/char)")
        for step, text in run.samples[shown:]:
            print(f"  sample @ {step}: {text!r}")
        shown = len(run.samples)
    if args.save:
        save_model(run, args.save)
    if args.json:
        print(json.dumps(summary(run), ensure_ascii=False))
    else:
        print(run.message)
    return 1 if run.status == "diverged" else 0


if __name__ == "__main__":
    sys.exit(main())
