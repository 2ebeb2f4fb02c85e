"""The one benchmark entry point: `python -m chat.bench <what> [--json]`.

Each benchmark measures ChatLab against its anchor in the same run and returns a dict of figures; the ratio is ours
divided by the anchor's. Speed lives here, not in timed tests. One module per benchmark, each with a `run(args)`;
common.py holds what they share. Nothing here imports gradio or chat.ui: what needs the UI drives the real app,
started as a subprocess, over HTTP.
"""
from __future__ import annotations

# benchmark name -> its module under chat.bench (imported only when it runs, so --help is instant)
BENCHMARKS = {
    "tokens": "tokens",
    "chat": "chat",
    "rounding": "rounding",
    "quality": "quality",
    "hardening": "hardening",
    "serve": "serve",
    "mnist": "mnist",
    "tinygpt": "tinygpt",
    "recipe": "recipe",
    "finetune": "finetune",
    "feedback": "feedback",
    "reward": "reward",
    "inside": "inside",
    "remote": "remote",
}
