"""`python -m chat.bench <what> [--json] [--verbose]`: run one benchmark and print its figures."""
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
    args = parser.parse_args(argv)
    figures = importlib.import_module(f"chat.bench.{BENCHMARKS[args.what]}").run(args)
    if args.json:
        print(json.dumps(figures))
    else:
        width = max(len(k) for k in figures)
        for key, value in figures.items():
            shown = f"{value:.4g}" if isinstance(value, float) else value
            print(f"{key:<{width}}  {shown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
