"""The one benchmark entry point: `python -m chat.bench <what> [--json]`.

Each benchmark measures ChatLab against its anchor in the same run and returns a dict of figures; the ratio is ours
divided by the anchor's. Speed lives here, not in timed tests.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Callable

BENCHMARKS: dict[str, Callable[[argparse.Namespace], dict]] = {}


# --- tokens benchmark (start) ---
def _mixed_text(size: int) -> str:
    """Deterministic English / Chinese / code text of exactly `size` characters."""
    parts = [
        "ChatGPT reads text as tokens, pieces learned by byte-pair encoding; long words split, common ones don't. ",
        "大型语言模型把文本切分成词元，再逐个预测下一个词元，这就是文字接龙。",
        "def count(xs):\n    return sum(1 for x in xs if x % 2 == 0)  # even numbers\n",
        "Prices: $19.99, 2026-11-22, 3.14159, user@example.com\n",
    ]
    text, n = [], 0
    while n < size:
        piece = parts[len(text) % len(parts)] + f"{len(text)} "
        text.append(piece)
        n += len(piece)
    return "".join(text)[:size]


def _best_seconds(fn, repeat: int) -> float:
    import time

    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def bench_tokens(args: argparse.Namespace) -> dict:
    """tiktoken's raw encoder vs ChatLab's count_tokens on 1 MB, and the Tokens tab's highlight for 20k characters."""
    import tiktoken

    from chat import tokens
    from chat.ui import tokens_tab

    text = _mixed_text(1 << 20)
    megabytes = len(text.encode()) / 1e6
    tokens.count_tokens("warm up", "gpt-4o")
    encoding = tiktoken.get_encoding("o200k_base")
    raw = _best_seconds(lambda: len(encoding.encode_ordinary(text)), 5)
    ours = _best_seconds(lambda: tokens.count_tokens(text, "gpt-4o"), 5)
    short = text[:20_000]
    highlight = _best_seconds(lambda: tokens_tab.highlight(short, "gpt-4o", False, False, False), 5)
    return {
        "text_mb": round(megabytes, 3),
        "tiktoken_mb_per_s": round(megabytes / raw, 2),
        "count_tokens_mb_per_s": round(megabytes / ours, 2),
        "ratio": round(raw / ours, 3),
        "highlight_20k_ms": round(highlight * 1000, 1),
    }


BENCHMARKS["tokens"] = bench_tokens
# --- tokens benchmark (end) ---

# --- chat benchmark (start) ---
# --- chat benchmark (end) ---

# --- mnist benchmark (start) ---
# --- mnist benchmark (end) ---

# --- tinygpt benchmark (start) ---
# --- tinygpt benchmark (end) ---


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chat.bench", description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=sorted(BENCHMARKS), help="which benchmark to run")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = parser.parse_args(argv)
    figures = BENCHMARKS[args.what](args)
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
