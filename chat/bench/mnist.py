"""MNIST training speed: one epoch of seed 000's recipe (same model init, data, batch 64) with a plain PyTorch loop
(the anchor: pytorch/examples' loop) and with the MNIST tab's loop plus its live updates' data (both plots, every
0.5 s), best of 3 alternating runs each (ratio = the app's images/s / the plain loop's); then the fast preset trained
for its 60 s and tested on the 1,000 test digits."""
from __future__ import annotations

import argparse


def run(args: argparse.Namespace) -> dict:
    import time

    import torch

    from chat.mnist.data import load_data
    from chat.mnist.model import seeded_net
    from chat.mnist.train import accuracy_frame, loss_frame, new_run, preset, train, train_epoch, train_plain

    data = load_data()
    config = preset("seed", epochs=1)
    images = len(data.train_labels)

    def plain() -> float:
        model = seeded_net(torch.Generator().manual_seed(config.seed))  # the app's init for this seed
        return train_plain(model, data, config.batch_size, config.lr, config.momentum, config.seed)

    def app() -> float:
        run = new_run(config, data)
        start = time.perf_counter()
        for _ in train_epoch(run):
            # the data of the tab's two plots, for each update it sends (the tab's progress HTML and Gradio's
            # updates are not built: chat.bench does not import the UI)
            loss_frame(run)
            accuracy_frame(run)
        return images / (time.perf_counter() - start)

    plain()  # warm-up: first-call allocations and kernel selection
    plain_speeds, app_speeds = [], []
    for _ in range(3):
        plain_speeds.append(plain())
        app_speeds.append(app())
    fast = new_run(preset("fast"), data)
    for _ in train(fast):
        pass
    return {
        "plain_images_per_s": round(max(plain_speeds), 1),
        "app_images_per_s": round(max(app_speeds), 1),
        "ratio": round(max(app_speeds) / max(plain_speeds), 3),
        "fast_preset_test_accuracy": round(fast.test_accuracy, 4),
        "fast_preset_train_seconds": round(fast.seconds, 1),
        "fast_preset_epochs": fast.accuracies[-1][0],
        "torch_threads": torch.get_num_threads(),
    }
