"""`python -m chat.bench <what> [--json] [options of that benchmark]`: run one benchmark and print its figures."""
from __future__ import annotations

import argparse
import importlib
import json
import sys

import chat.bench
from chat.bench import BENCHMARKS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chat.bench", description=chat.bench.__doc__.splitlines()[0])
    parser.add_argument("what", choices=sorted(BENCHMARKS), help="which benchmark to run")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--verbose", action="store_true", help="quality: also print every reply")
    known, _ = parser.parse_known_args(argv)
    module = importlib.import_module(f"chat.bench.{BENCHMARKS[known.what]}")
    if hasattr(module, "add_arguments"):  # a benchmark's own options (finetune --names, serve --cold, ...)
        module.add_arguments(parser)
    figures = module.run(parser.parse_args(argv))
    if known.json:
        print(json.dumps(figures, ensure_ascii=False))
        return 0
    width = max(len(k) for k in figures)
    for key, value in figures.items():
        shown = f"{value:.4g}" if isinstance(value, float) else value
        print(f"{key:<{width}}  {shown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
