"""Token counting: ChatLab's count_tokens on 1 MB of mixed English / Chinese / code text against tiktoken's raw
encoder on the same text (the anchor; ratio = its time / ours); and the Tokens tab's per-keystroke work for 20k
characters (every tokenizer's encoding, then the three panes' token groups, capped as the tab caps them)."""
from __future__ import annotations

import argparse

from chat.bench.common import best_seconds, mixed_text

VIEW_LIMIT = 5000  # tokens the Tokens tab draws per pane (chat.ui.tokens_tab.VIEW_LIMIT); counts cover everything


def highlight_work(text: str) -> None:
    """What the tab's highlight computes for a text, without building Gradio updates: the text encoded once by
    every registered tokenizer (not waiting for one still loading, as the tab does), then the token groups of
    each tiktoken pane up to VIEW_LIMIT tokens."""
    from chat import tokens

    encoded = {e.encoding: e for e in tokens.encode_all(text, False, wait=False)}
    for name in tokens.TIKTOKEN_ENCODINGS:  # the tab's panes
        tokens.group_tokens(encoded[name].ids, tokens.get_tokenizer(name).token_bytes, VIEW_LIMIT)


def run(args: argparse.Namespace) -> dict:
    import tiktoken

    from chat import tokens

    text = mixed_text(1 << 20)
    megabytes = len(text.encode()) / 1e6
    tokens.count_tokens("warm up", "gpt-4o")
    encoding = tiktoken.get_encoding("o200k_base")
    raw = best_seconds(lambda: len(encoding.encode_ordinary(text)), 5)
    ours = best_seconds(lambda: tokens.count_tokens(text, "gpt-4o"), 5)
    short = text[:20_000]
    highlight_work(short)  # warm-up: every pane's tokenizer loaded
    highlight = best_seconds(lambda: highlight_work(short), 5)
    return {
        "text_mb": round(megabytes, 3),
        "tiktoken_mb_per_s": round(megabytes / raw, 2),
        "count_tokens_mb_per_s": round(megabytes / ours, 2),
        "ratio": round(raw / ours, 3),
        # the tab's service-level work (encode_all + the panes' group_tokens); it no longer includes building the
        # Gradio updates and the comparison table, which chat.bench cannot import
        "highlight_20k_ms": round(highlight * 1000, 1),
    }
