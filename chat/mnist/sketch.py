"""A drawing or a picture -> an MNIST-like digit (the ink cropped, scaled into 20x20 and centred by its centre of
mass, as MNIST itself was made) -> the probability of each digit."""
from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from PIL import Image

from chat.mnist.data import MNIST_MEAN, MNIST_STD
from chat.mnist.model import predict



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


