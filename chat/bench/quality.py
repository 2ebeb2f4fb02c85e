"""Answer quality of the Chat tab's defaults: 18 simple questions with known answers, 3 seeds each, 64 new tokens;
the hit rate (share of replies containing the answer) with ChatLab's defaults, with the tab's former defaults, and
with llama.cpp's own chat defaults on the same GGUF (the anchor, when $CHATLAB_LLAMA_PYTHON names a Python with
llama-cpp-python; ratio = ChatLab's hit rate / llama.cpp's)."""
from __future__ import annotations

import argparse
import json
import sys

from chat.bench.common import chat_model, gguf_path

# a reply is right when it contains the answer (a regex, case-insensitive)
QUESTIONS = [
    ("What is the capital of France?", r"\bparis\b"),
    ("What is 2+2? Answer with the number.", r"\b4\b|\bfour\b"),
    ("What is the capital of Japan?", r"\btokyo\b"),
    ("How many days are there in a week?", r"\b7\b|\bseven\b"),
    ("What color is the sky on a clear day?", r"\bblue\b"),
    ("What is the largest planet in our solar system?", r"\bjupiter\b"),
    ("Who wrote 'Romeo and Juliet'?", r"\bshakespeare\b"),
    ("What is the chemical formula of water?", r"\bh2o\b|\bh₂o\b"),
    ("How many legs does a spider have?", r"\b8\b|\beight\b"),
    ("At what temperature in degrees Celsius does water freeze?", r"(?<![\w.\-])0(?![.,]?\d)|\bzero\b"),  # not -18.0
    ("What is the capital of Italy?", r"\brome\b"),
    ("What is 10 minus 3? Answer with the number.", r"\b7\b|\bseven\b"),
    ("Which animal is called the king of the jungle?", r"\blions?\b"),
    ("What language is spoken in Spain?", r"\bspanish\b"),
    ("How many continents are there on Earth?", r"\b7\b|\bseven\b"),
    ("Which gas do plants take in from the air for photosynthesis?", r"carbon dioxide|\bco2\b|\bco₂\b"),
    ("What is the opposite of hot?", r"\bcold\b"),
    ("What is the boiling point of water in degrees Celsius at sea level?", r"\b100\b"),
]
SEEDS = (0, 1, 2)
NEW_TOKENS = 64
# the Chat tab's former defaults: the comparison that shows what the model card's near-greedy settings buy
OLD_CHAT_DEFAULTS = {"temperature": 0.7, "top_p": 0.9, "top_k": 50, "repetition_penalty": 1.1}

# llama.cpp's side: its own chat defaults (create_chat_completion with no sampling arguments: temperature 0.2, top-p
# 0.95, top-k 40, min-p 0.05, no repeat penalty), the GGUF's own chat template, a seed per reply. Reads {"gguf",
# "questions", "seeds", "new_tokens"} on stdin, prints one JSON list of replies (questions x seeds, in order).
LLAMA_CHAT_SCRIPT = r"""
import json, sys
from llama_cpp import Llama
job = json.load(sys.stdin)
llm = Llama(model_path=job["gguf"], n_ctx=2048, n_threads=2, verbose=False)
replies = []
for question in job["questions"]:
    for seed in job["seeds"]:
        out = llm.create_chat_completion([{"role": "user", "content": question}], seed=seed,
                                         max_tokens=job["new_tokens"])
        replies.append(out["choices"][0]["message"]["content"] or "")
print(json.dumps(replies))
"""


def hit_rate(replies: list[str]) -> float:
    import re

    patterns = [pattern for _, pattern in QUESTIONS for _ in SEEDS]
    return sum(bool(re.search(p, r.lower())) for p, r in zip(patterns, replies)) / len(patterns)


def chatlab_replies(loaded, defaults) -> list[str]:
    import dataclasses

    from chat.llm.generation import chat_reply

    replies = []
    for question, _ in QUESTIONS:
        for seed in SEEDS:
            params = dataclasses.replace(defaults, seed=seed, max_new_tokens=NEW_TOKENS)
            replies.append(chat_reply([{"role": "user", "content": question}], params, loaded)[0])
    return replies


def llama_cpp_replies() -> list[str] | None:
    import os
    import subprocess

    python = os.environ.get("CHATLAB_LLAMA_PYTHON")
    if not python:
        return None
    job = {"gguf": gguf_path(), "questions": [q for q, _ in QUESTIONS], "seeds": list(SEEDS),
           "new_tokens": NEW_TOKENS}
    out = subprocess.run([python, "-c", LLAMA_CHAT_SCRIPT], input=json.dumps(job), capture_output=True, text=True,
                         check=False)
    if out.returncode != 0:
        print(f"llama.cpp run failed: {out.stderr.strip()[-500:]}", file=sys.stderr)
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(args: argparse.Namespace) -> dict:
    from chat.llm.models import chat_defaults
    from chat.llm.params import GenerationParams

    loaded = chat_model()
    defaults = chat_defaults()
    ours = chatlab_replies(loaded, defaults)
    old = chatlab_replies(loaded, GenerationParams(**OLD_CHAT_DEFAULTS))
    theirs = llama_cpp_replies()
    figures = {
        "questions": len(QUESTIONS), "seeds": len(SEEDS), "new_tokens": NEW_TOKENS,
        "chatlab_defaults": {k: getattr(defaults, k) for k in ("temperature", "top_p", "top_k", "repetition_penalty")},
        "chatlab_hit_rate": round(hit_rate(ours), 3),
        "chatlab_old_defaults_hit_rate": round(hit_rate(old), 3),
        "llama_cpp_hit_rate": round(hit_rate(theirs), 3) if theirs else None,
        "ratio": round(hit_rate(ours) / hit_rate(theirs), 3) if theirs and hit_rate(theirs) else None,
        "fast_path": loaded.fast.kind if loaded.fast else "off",
    }
    if getattr(args, "verbose", False):
        figures["replies"] = {"chatlab": ours, "chatlab_old": old, "llama_cpp": theirs}
    return figures
