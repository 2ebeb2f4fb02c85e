"""Tiny GPT training speed: nanoGPT's CPU shape (4 layers, 4 heads, 128 wide, block 64, batch 12) on Tiny Shakespeare
in characters (nanoGPT's shakespeare_char), the Tiny GPT tab's loop (evaluations, samples and its per-update plot data
included) against a bare loop of the same model, optimizer and batches, alternated in one run so both see the same
machine load (ratio = the tab's it/s / the bare loop's); and against nanoGPT's own figure for that shape on a CPU (the
anchor, 21 it/s)."""
from __future__ import annotations

import argparse

from chat.bench.common import CpuLoad

NANOGPT_IT_PER_S = 21.0


def run(args: argparse.Namespace) -> dict:
    import os
    import time

    import torch
    from transformers.utils import logging

    from chat.tinygpt.train import TinyGPTConfig, loss_frame, new_run, train, train_plain

    logging.set_verbosity_error()
    phase_s, rounds = 30.0, 2  # each loop runs 2 x 30 s, alternating: one 2-minute run in all
    load = CpuLoad()
    run = new_run(TinyGPTConfig(corpus="shakespeare", tokenizer="char", meter_samples=0, max_seconds=3600))
    train_plain(run, 2.0)  # warm-up (allocator, kernels)
    plain_steps = plain_s = app_steps = app_s = updates = 0.0
    for _ in range(rounds):
        start = time.perf_counter()
        speed = train_plain(run, phase_s)
        elapsed = time.perf_counter() - start
        plain_steps, plain_s = plain_steps + speed * elapsed, plain_s + elapsed
        run.max_seconds = run.seconds + phase_s  # train() resumes within this budget
        for _ in train(run, update_every_s=0.5):
            # the tab's per-update work: the loss plot's data, serialised as a plot's payload is (the tab's HTML
            # and Gradio's own postprocessing are not run: chat.bench does not import the UI)
            loss_frame(run).to_dict(orient="split")
            updates += 1
        app_steps += run.segment_steps
        app_s += run.segment_seconds
    plain = plain_steps / plain_s
    app = app_steps / app_s
    return {
        "shape": "4 layers, 4 heads, 128 wide, block 64, batch 12; Tiny Shakespeare in characters",
        "params": run.params,
        "torch_threads": torch.get_num_threads(),
        "plain_it_per_s": round(plain, 2),
        "app_it_per_s": round(app, 2),
        "ratio": round(app / plain, 3),
        "anchor_nanogpt_it_per_s": NANOGPT_IT_PER_S,
        "app_vs_anchor": round(app / NANOGPT_IT_PER_S, 3),
        "ui_updates": int(updates),
        "val_loss": round(run.val_losses[-1][1], 3),
        "other_processes_cpu_percent": load.others_percent(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default"),
    }
