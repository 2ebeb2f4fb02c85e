"""Training seed 000's CNN live, as pytorch/examples' mnist/main.py does (a training loop, a test pass, the same
defaults), with the loop written as a generator so the tab can watch it: `train(run)` yields the run at most every
`update_every_s` seconds and at each epoch end, and stops within one batch of `run.stop` being set.
"""
from __future__ import annotations

import copy
import dataclasses
import io
import math
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image, ImageDraw

from chat.training.run import Run, TrainingError, check_settings, exclusive
from chat.mnist.data import MNIST_MEAN, MNIST_STD, BACKGROUND, DigitDataset, MnistData, load_data, make_loader
from chat.mnist.model import Net, predict, seeded_net
from chat.mnist.sketch import digit_probabilities, sketch_to_mnist

CHECKPOINT_FORMAT = "chatlab-mnist-cnn"
LOSS_EVERY = 10  # batches averaged into one point of the loss curve
# A batch loss above this counts as NaN/inf: chance is ln 10 = 2.3, and a loss of 1e4 means logits 1e4 apart,
# weights that have blown up (lr 100 gives ~1e30, finite in float32 but never coming back).
DIVERGED_LOSS = 1e4



@dataclass
class TrainConfig:
    epochs: int = 10  # passes over the training set
    batch_size: int = 64  # images per optimizer step
    lr: float = 0.01  # learning rate (the peak of the one-cycle schedule)
    optimizer: str = "sgd"  # "sgd" (with momentum), "adam" or "adamw"
    momentum: float = 0.5  # SGD only
    weight_decay: float = 0.0  # decoupled for adamw, L2 for sgd / adam
    schedule: str = "constant"  # "constant" or "onecycle" (warm up, then cosine down to ~0)
    augment: bool = False  # random small shift / rotation / scale of every training batch
    time_limit_s: float = 0.0  # end the run after this much training time (0 = none); onecycle paces itself on it
    seed: int = 0  # weights init, shuffling, augmentation


PRESETS = {
    # seed 000's script as it is
    "seed": TrainConfig(),
    # best test accuracy within 60 s of training on 2 CPU cores (docs/mnist.md)
    "fast": TrainConfig(
        epochs=15, batch_size=128, lr=3e-3, optimizer="adamw", weight_decay=1e-4,
        schedule="onecycle", augment=True, time_limit_s=60.0,
    ),
}
OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "onecycle")
# (min, max) of each numeric setting; outside -> TrainingError("setting"). lr 100 is allowed: divergence is caught.
LIMITS = {
    "epochs": (1, 200),
    "batch_size": (1, 4096),
    "lr": (1e-6, 1000.0),
    "momentum": (0.0, 0.999),
    "weight_decay": (0.0, 1.0),
    "time_limit_s": (0.0, 3600.0),
    "seed": (0, 2**31 - 1),
}


def validate(config: TrainConfig) -> TrainConfig:
    """The config, or TrainingError("setting") naming the first setting out of its range (or choices)."""
    check_settings(config, LIMITS)
    for name, choices in (("optimizer", OPTIMIZERS), ("schedule", SCHEDULES)):
        if getattr(config, name) not in choices:
            raise TrainingError("setting", f"{name} must be one of {', '.join(choices)}, got "
                                f"{getattr(config, name)!r}", name=name, low=choices[0], high=choices[-1],
                                value=getattr(config, name))
    return config


def preset(name: str, **overrides) -> TrainConfig:
    """A preset's config with some fields replaced, validated; integer fields are made int."""
    if name not in PRESETS:
        raise TrainingError("preset", f"unknown preset {name!r}; choose from {', '.join(PRESETS)}", preset=name)
    config = dataclasses.replace(PRESETS[name], **overrides)
    for f in fields(config):
        value = getattr(config, f.name)
        if f.type == "int" and isinstance(value, float) and value.is_integer():
            setattr(config, f.name, int(value))
    return validate(config)


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                               weight_decay=config.weight_decay)
    if config.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)


def one_cycle_factor(progress: float, warmup: float = 0.15) -> float:
    """Multiplier of the peak lr at `progress` in [0, 1] of the run: linear warm-up from 0.04, cosine to 0."""
    if progress < warmup:
        return 0.04 + 0.96 * progress / warmup
    t = min(1.0, (progress - warmup) / (1 - warmup))
    return 0.5 * (1 + math.cos(math.pi * t))


def augment_batch(images: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Random affine per image: rotation +-10 degrees, scale 0.9-1.1, shift +-2 px. (B,1,28,28) -> same."""
    b = images.shape[0]
    u = torch.rand(b, 4, generator=g) * 2 - 1  # uniform in [-1, 1]
    angle, scale, shift = u[:, 0] * math.radians(10), 1 + 0.1 * u[:, 1], u[:, 2:] * (2 * 2 / 28)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)  # (B, 28, 28, 2)
    # sample the image minus its background so that pixels shifted in are blank, not black-ish
    return F.grid_sample(images - BACKGROUND, grid, align_corners=False) + BACKGROUND


@dataclass(eq=False, kw_only=True)
class TrainingRun(Run):
    """One user's training run: the model being trained and its history (`seconds` counts the training steps only;
    the test passes after each epoch are not in it). Its last good state is the tested snapshot."""

    kind: str = "mnist"
    config: TrainConfig
    data: MnistData
    model: Net
    optimizer: torch.optim.Optimizer
    diverged_epoch: int | None = None  # the epoch where the loss became NaN/inf (its step: diverged_at)
    diverged_loss: float | None = None  # that loss
    epoch: int = 0  # completed passes
    images_seen: int = 0
    losses: list[tuple[float, float]] = field(default_factory=list)  # (epoch, mean loss of LOSS_EVERY batches)
    accuracies: list[tuple[float, float, float]] = field(default_factory=list)  # (epoch, train acc, test acc)
    test_predictions: torch.Tensor | None = None  # (M,) snapshot's predicted digit for each test image
    generator: torch.Generator = field(default_factory=torch.Generator)  # augmentation randomness

    def __post_init__(self):
        self.max_seconds = float(self.config.time_limit_s)
        self.max_steps = self.config.epochs * self.batches_per_epoch

    @property
    def snapshot(self) -> Net | None:
        """The eval-mode copy of the last tested model: what the sketchpad and downloads use."""
        return self.good_state

    @property
    def images_per_second(self) -> float:
        return self.images_seen / self.seconds if self.seconds > 0 else 0.0

    @property
    def batches_per_epoch(self) -> int:
        return math.ceil(len(self.data.train_labels) / self.config.batch_size)

    @property
    def test_accuracy(self) -> float | None:
        return self.accuracies[-1][2] if self.accuracies else None


def new_run(config: TrainConfig, data: MnistData | None = None) -> TrainingRun:
    validate(config)
    data = data or load_data()
    generator = torch.Generator().manual_seed(config.seed)  # weights, then augmentation and dropout
    model = seeded_net(generator)
    return TrainingRun(config=config, data=data, model=model, optimizer=make_optimizer(model, config),
                       generator=generator)


def train_epoch(run: TrainingRun, update_every_s: float = 0.5) -> Iterator[TrainingRun]:
    """One pass over the training set: the app's training loop. Yields `run` at most every `update_every_s`
    seconds so a caller can show progress; returns early when `run.stop` is set, the time limit is reached,
    or the loss becomes NaN/inf (then `run.status == "diverged"`). Returns the epoch's train accuracy."""
    config, model, optimizer = run.config, run.model, run.optimizer
    loader = make_loader(DigitDataset(run.data.train_images, run.data.train_labels), config.batch_size,
                         shuffle=True, seed=config.seed * 1000 + run.epoch)
    model.train()
    correct = seen = 0
    loss_sum, loss_count = 0.0, 0
    last_update = time.perf_counter()
    for images, labels in loader:
        if run.stop.is_set() or run.out_of_time:
            break
        t0 = time.perf_counter()
        if config.schedule == "onecycle":
            for group in optimizer.param_groups:
                group["lr"] = config.lr * one_cycle_factor(run.progress)
        if config.augment:
            images = augment_batch(images, run.generator)
        logits = model(images)
        loss = F.cross_entropy(logits, labels)
        loss_value = loss.item()
        if not math.isfinite(loss_value) or loss_value > DIVERGED_LOSS:
            run.diverged_epoch, run.diverged_loss = run.epoch + 1, loss_value
            run.diverge(f"loss became NaN/inf ({loss_value:.3g}) at epoch {run.epoch + 1}, step {run.step + 1}: the "
                        f"run diverged; try a smaller learning rate than {config.lr:g}")
            run.diverged_at = run.step + 1  # the step that was not taken
            break
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        run.step += 1
        run.images_seen += len(labels)
        correct += (logits.argmax(1) == labels).sum().item()
        seen += len(labels)
        loss_sum, loss_count = loss_sum + loss_value, loss_count + 1
        if loss_count == LOSS_EVERY:
            run.losses.append((run.epoch + seen / len(run.data.train_labels), loss_sum / loss_count))
            loss_sum, loss_count = 0.0, 0
        now = time.perf_counter()
        run.seconds += now - t0
        if now - last_update >= update_every_s:
            last_update = now
            yield run
    if loss_count:
        run.losses.append((run.epoch + seen / len(run.data.train_labels), loss_sum / loss_count))
    return correct / seen if seen else 0.0

def evaluate(run: TrainingRun, train_accuracy: float) -> None:
    """Test the current model, keep an eval-mode copy of it as the run's snapshot, and publish it as the
    server's latest model. Epoch in the log may be fractional when the run stopped mid-epoch."""
    snapshot = copy.deepcopy(run.model).eval()
    run.test_predictions = predict(snapshot, run.data.test_images).argmax(1)
    test_accuracy = (run.test_predictions == run.data.test_labels).float().mean().item()
    epoch = run.losses[-1][0] if run.losses else float(run.epoch)
    run.accuracies.append((round(epoch, 3), train_accuracy, test_accuracy))
    run.keep(snapshot)
    publish_latest(snapshot)


@exclusive
def train(run: TrainingRun, update_every_s: float = 0.5) -> Iterator[TrainingRun]:
    """The whole run: epochs of `train_epoch`, a test pass after each. Yields the run for progress (at most
    every `update_every_s`, and after each epoch's test). When training ends (last epoch, stop, time limit) it
    yields at once with status "evaluating", tests the model, and ends as done, timeout or stopped (or diverged).
    If the consumer closes the generator (e.g. the browser went away), the run stops where it is."""
    run.status = "running"
    run.stop.clear()
    try:
        while True:
            seen_before = run.images_seen
            train_accuracy = yield from train_epoch(run, update_every_s)
            if run.status == "diverged":
                return
            trained = run.images_seen - seen_before
            if trained == len(run.data.train_labels):
                run.epoch += 1
            last = run.stop.is_set() or run.out_of_time or run.epoch >= run.config.epochs
            if last:  # say so at once: the test pass takes a moment
                run.status = "evaluating"
                yield run
            if trained:  # else the model is the one tested after the previous epoch
                evaluate(run, train_accuracy)
            if last:
                run.status = "stopped" if run.stop.is_set() else "timeout" if run.epoch < run.config.epochs \
                    else "done"
                yield run
                return
            yield run
    finally:
        if run.running:  # generator closed mid-epoch
            run.status = "stopped"
            run.stop.set()


def train_plain(model: nn.Module, data: MnistData, batch_size: int, lr: float, momentum: float, seed: int = 0
                ) -> float:
    """pytorch/examples' loop for one epoch, nothing else (the benchmark's reference). Returns images/s."""
    loader = make_loader(DigitDataset(data.train_images, data.train_labels), batch_size, shuffle=True, seed=seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    model.train()
    t0 = time.perf_counter()
    for images, labels in loader:
        optimizer.zero_grad()
        loss = F.cross_entropy(model(images), labels)
        loss.backward()
        optimizer.step()
    return len(data.train_labels) / (time.perf_counter() - t0)


# -----------------------------------------------------------------------------
# What the tab shows


def loss_frame(run: TrainingRun) -> pd.DataFrame:
    """Loss curve: one row per LOSS_EVERY batches. Float columns even when empty: a plot keeps the axis types
    (numbers or categories) of the first data it was sent."""
    return pd.DataFrame(run.losses, columns=["epoch", "loss"], dtype=float)


def accuracy_frame(run: TrainingRun) -> pd.DataFrame:
    """Train / test accuracy (in %) per epoch, long format (epoch, accuracy, split) for a two-line plot."""
    rows = [(e, 100 * a, "train") for e, a, _ in run.accuracies] + [(e, 100 * a, "test") for e, _, a in run.accuracies]
    rows = [row for row in rows if not math.isnan(row[1])]  # uploaded weights have no train accuracy
    return pd.DataFrame(rows, columns=["epoch", "accuracy", "split"]).astype(
        {"epoch": float, "accuracy": float, "split": str})


def confusion_matrix(run: TrainingRun) -> np.ndarray:
    """(10, 10) counts: row = true digit, column = predicted digit, for the snapshot on the test set."""
    matrix = np.zeros((10, 10), dtype=np.int64)
    if run.test_predictions is not None:
        np.add.at(matrix, (run.data.test_labels.numpy(), run.test_predictions.numpy()), 1)
    return matrix


def digit_image(image: torch.Tensor, size: int = 56, wrong: bool = False) -> Image.Image:
    """Normalised (1, 28, 28) digit -> RGB picture, white ink on black like MNIST; a red frame if `wrong`."""
    pixels = ((image[0] * MNIST_STD + MNIST_MEAN).clamp(0, 1) * 255).to(torch.uint8).numpy()
    picture = Image.fromarray(pixels, "L").resize((size, size), Image.NEAREST).convert("RGB")
    if wrong:
        ImageDraw.Draw(picture).rectangle([0, 0, size - 1, size - 1], outline=(230, 40, 40), width=3)
    return picture


def test_digits(run: TrainingRun, count: int = 40, only_wrong: bool = False
                ) -> list[tuple[Image.Image, int, int]]:
    """(picture, predicted, true) for the first `count` test digits (or the misclassified ones)."""
    if run.test_predictions is None:
        return []
    predicted, true = run.test_predictions, run.data.test_labels
    indices = torch.nonzero(predicted != true).flatten() if only_wrong else torch.arange(len(true))
    return [(digit_image(run.data.test_images[i], wrong=bool(predicted[i] != true[i])), int(predicted[i]),
             int(true[i])) for i in indices[:count].tolist()]


# -----------------------------------------------------------------------------
# The server's latest trained model (for the classify_digit API) and checkpoints


class NoModelError(RuntimeError):
    def __init__(self):
        super().__init__("no MNIST model has been trained on this server yet: train one in the MNIST tab first")


_latest_lock = threading.Lock()
_latest_model: Net | None = None


def publish_latest(model: Net) -> None:
    """Make `model` (an eval-mode snapshot nobody trains further) the server's latest trained model."""
    global _latest_model
    with _latest_lock:
        _latest_model = model


def latest_model() -> Net | None:
    with _latest_lock:
        return _latest_model


def classify_with_latest(image) -> dict[str, float]:
    """classify_digit: digit probabilities from the most recently trained model on this server."""
    digit = sketch_to_mnist(image)  # the picture is checked first: a bad file says so even before any training
    model = latest_model()
    if model is None:
        raise NoModelError()
    return digit_probabilities(model, digit)


class CheckpointError(ValueError):
    pass


def save_checkpoint(run: TrainingRun, path: str | Path | io.BytesIO) -> None:
    """The snapshot's weights plus what produced them, as a torch.save dict marked with CHECKPOINT_FORMAT."""
    if run.snapshot is None:
        raise NoModelError()
    torch.save({
        "format": CHECKPOINT_FORMAT,
        "version": 1,
        "state_dict": run.snapshot.state_dict(),
        "config": asdict(run.config),
        "epochs": run.accuracies[-1][0] if run.accuracies else run.epoch,
        "test_accuracy": run.test_accuracy,
        "data": run.data.source,
    }, path)


def load_checkpoint(path: str | Path | io.BytesIO) -> tuple[Net, dict]:
    """-> (eval-mode model, the checkpoint's other fields). Anything else -> CheckpointError.
    weights_only=True: a checkpoint is data, never code to run."""
    name = getattr(path, "name", None) or (path if isinstance(path, (str, Path)) else "the file")
    name = Path(name).name  # not the server's temp folder
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # not a zip / pickle, or a pickle that would run code
        raise CheckpointError(f"{name} is not a ChatLab MNIST checkpoint ({type(e).__name__})") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{name} is not a ChatLab MNIST checkpoint (no '{CHECKPOINT_FORMAT}' marker)")
    model = Net()
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except (KeyError, RuntimeError, TypeError) as e:
        raise CheckpointError(f"{name}: weights don't fit the MNIST CNN ({str(e).splitlines()[0]})") from None
    return model.eval(), {k: v for k, v in checkpoint.items() if k != "state_dict"}


def run_from_checkpoint(path: str | Path | io.BytesIO, data: MnistData | None = None) -> TrainingRun:
    """A finished-looking run around uploaded weights, tested on the data so the grids can show it."""
    model, meta = load_checkpoint(path)
    known = {f.name for f in fields(TrainConfig)}
    try:
        config = validate(TrainConfig(**{k: v for k, v in (meta.get("config") or {}).items() if k in known}))
    except (TypeError, ValueError):
        config = TrainConfig()
    data = data or load_data()
    run = TrainingRun(config=config, data=data, model=model, optimizer=make_optimizer(model, config),
                      status="loaded")
    run.keep(model)
    run.test_predictions = predict(model, data.test_images).argmax(1)
    accuracy = (run.test_predictions == data.test_labels).float().mean().item()
    run.accuracies.append((float(meta.get("epochs") or 0), float("nan"), accuracy))
    return run


