"""chat/mnist.py on the real 5k MNIST digits: data, IDX files, training, stop, divergence, sketches, checkpoints."""
from __future__ import annotations

import gzip
import io
import json
import struct
import threading
import time

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from chat.mnist import __main__ as mnist_cli, data as mnist_data, model as mnist_model, sketch, train as mnist
from chat.training.run import TrainingError


@pytest.fixture(scope="module")
def data() -> mnist_data.MnistData:
    return mnist_data.load_data()


@pytest.fixture(scope="module")
def trained(data) -> mnist.TrainingRun:
    """One epoch of the fast preset: the shared trained model of this module (~4 s)."""
    run = mnist.new_run(mnist.preset("fast", epochs=1, time_limit_s=0), data)
    for _ in mnist.train(run):
        pass
    return run


# --- data ---------------------------------------------------------------------------------------------------


def test_5k_digits_split_into_4000_train_and_1000_test_with_every_digit_equally_often(data):
    assert data.train_images.shape == (4000, 1, 28, 28) and data.test_images.shape == (1000, 1, 28, 28)
    assert data.train_labels.bincount().tolist() == [400] * 10
    assert data.test_labels.bincount().tolist() == [100] * 10
    assert data.train_images.dtype == torch.float32 and data.train_labels.dtype == torch.int64


def test_digits_are_normalised_with_mnist_mean_and_std(data):
    assert data.train_images.min().item() == pytest.approx(mnist_data.BACKGROUND, abs=1e-5)
    assert data.train_images.max().item() == pytest.approx((1 - mnist_data.MNIST_MEAN) / mnist_data.MNIST_STD, abs=1e-5)
    assert abs(data.train_images.mean().item()) < 0.05 and 0.95 < data.train_images.std().item() < 1.05


def test_split_is_the_same_on_every_load(data):
    again = mnist_data.load_mnist_5k()
    assert torch.equal(again.test_images, data.test_images) and torch.equal(again.train_labels, data.train_labels)
    assert not torch.equal(mnist_data.load_mnist_5k(seed=1).test_images, data.test_images)


def test_data_loader_batches_cover_the_training_set_once_per_epoch(data):
    loader = mnist_data.make_loader(mnist_data.DigitDataset(data.train_images, data.train_labels), 64, shuffle=True)
    batches = list(loader)
    assert len(batches) == 63 and batches[0][0].shape == (64, 1, 28, 28) and batches[-1][0].shape[0] == 32
    assert torch.cat([labels for _, labels in batches]).bincount().tolist() == [400] * 10


# --- IDX files ----------------------------------------------------------------------------------------------


def _idx_images(images: np.ndarray, magic: int = 2051) -> bytes:
    return struct.pack(">iiii", magic, len(images), 28, 28) + images.astype(np.uint8).tobytes()


def _idx_labels(labels: np.ndarray, magic: int = 2049) -> bytes:
    return struct.pack(">ii", magic, len(labels)) + labels.astype(np.uint8).tobytes()


def _write_mnist(folder, train: int = 30, test: int = 10, gz: bool = False):
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "train-images-idx3-ubyte": _idx_images(rng.integers(0, 256, (train, 28, 28))),
        "train-labels-idx1-ubyte": _idx_labels(np.arange(train) % 10),
        "t10k-images-idx3-ubyte": _idx_images(rng.integers(0, 256, (test, 28, 28))),
        "t10k-labels-idx1-ubyte": _idx_labels(np.arange(test) % 10),
    }
    for name, raw in files.items():
        if gz:
            (folder / (name + ".gz")).write_bytes(gzip.compress(raw))
        else:
            (folder / name).write_bytes(raw)


@pytest.mark.parametrize("gz", [False, True])
def test_idx_reader_reads_valid_images_and_labels(tmp_path, gz):
    _write_mnist(tmp_path, gz=gz)
    suffix = ".gz" if gz else ""
    images = mnist_data.read_idx_images(tmp_path / f"train-images-idx3-ubyte{suffix}")
    labels = mnist_data.read_idx_labels(tmp_path / f"train-labels-idx1-ubyte{suffix}")
    assert images.shape == (30, 28, 28) and images.dtype == np.uint8
    assert labels.tolist() == [i % 10 for i in range(30)]


def test_full_mnist_folder_loads_also_in_torchvision_layout(tmp_path):
    _write_mnist(tmp_path / "MNIST" / "raw", gz=True)
    data = mnist_data.load_mnist_dir(tmp_path)
    assert data.train_images.shape == (30, 1, 28, 28) and data.test_labels.shape == (10,)
    assert "MNIST IDX" in data.source


def test_idx_reader_rejects_a_bad_magic_number_naming_the_file(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(_idx_images(np.zeros((2, 28, 28)), magic=2049))
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte: bad magic number 2049, expected 2051"):
        mnist_data.read_idx_images(path)


def test_idx_reader_rejects_truncated_files_naming_the_file(tmp_path):
    path = tmp_path / "t10k-images-idx3-ubyte"
    path.write_bytes(_idx_images(np.zeros((5, 28, 28)))[:-100])
    with pytest.raises(ValueError, match="t10k-images-idx3-ubyte: truncated"):
        mnist_data.read_idx_images(path)
    path.write_bytes(b"\x00\x00\x08")
    with pytest.raises(ValueError, match="truncated header"):
        mnist_data.read_idx_images(path)
    gz = tmp_path / "t10k-labels-idx1-ubyte.gz"
    gz.write_bytes(gzip.compress(_idx_labels(np.arange(10)))[:-12])
    with pytest.raises(ValueError, match="t10k-labels-idx1-ubyte.gz"):
        mnist_data.read_idx_labels(gz)


def test_idx_reader_rejects_images_that_are_not_28x28_and_mismatched_counts(tmp_path):
    path = tmp_path / "images"
    path.write_bytes(struct.pack(">iiii", 2051, 1, 32, 32) + bytes(32 * 32))
    with pytest.raises(ValueError, match="32x32, expected 28x28"):
        mnist_data.read_idx_images(path)
    _write_mnist(tmp_path / "full")
    (tmp_path / "full" / "t10k-labels-idx1-ubyte").write_bytes(_idx_labels(np.arange(9) % 10))
    with pytest.raises(ValueError, match="10 images but .* 9 labels"):
        mnist_data.load_mnist_dir(tmp_path / "full")
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
        mnist_data.load_mnist_dir(tmp_path / "empty")


# --- model, settings, training --------------------------------------------------------------------------------


def test_the_network_is_seed_000s_cnn():
    net = mnist_model.Net()
    shapes = [tuple(p.shape) for p in net.parameters()]
    assert shapes == [(32, 1, 5, 5), (32,), (64, 32, 5, 5), (64,), (512, 1024), (512,), (10, 512), (10,)]
    assert net(torch.zeros(3, 1, 28, 28)).shape == (3, 10)
    assert mnist.PRESETS["seed"] == mnist.TrainConfig(epochs=10, batch_size=64, lr=0.01, optimizer="sgd",
                                                      momentum=0.5)


@pytest.mark.parametrize("setting, value", [("batch_size", 0), ("epochs", 10_000), ("epochs", 2.5), ("epochs", None),
                                            ("lr", 0.0), ("lr", float("nan")),
                                            ("seed", -1), ("time_limit_s", -5.0), ("optimizer", "lbfgs")])
def test_absurd_settings_are_rejected_with_the_allowed_range(setting, value):
    with pytest.raises(TrainingError, match=f"{setting} must be") as error:
        mnist.preset("seed", **{setting: value})
    assert error.value.code == "setting" and error.value.details["name"] == setting


def test_a_short_run_learns_far_better_than_chance(trained):
    epoch, train_accuracy, test_accuracy = trained.accuracies[-1]
    assert trained.status == "done" and epoch == 1.0
    assert test_accuracy > 0.85  # chance is 0.10
    assert trained.losses[-1][1] < trained.losses[0][1] / 3
    assert trained.images_per_second > 0 and trained.snapshot is not None


def test_training_yields_progress_and_each_session_trains_its_own_model(data):
    a = mnist.new_run(mnist.preset("seed", time_limit_s=0.6), data)
    b = mnist.new_run(mnist.preset("seed", time_limit_s=0.6), data)
    untouched = [p.clone() for p in b.model.parameters()]
    updates = sum(1 for _ in mnist.train(a, update_every_s=0.01))
    assert updates >= 2 and a.step > 0 and a.status == "timeout"  # its 0.6 s ran out before its 10 epochs
    assert all(torch.equal(p, q) for p, q in zip(untouched, b.model.parameters()))


def test_stop_ends_the_run_within_a_second_and_keeps_the_model_and_curves(data):
    run = mnist.new_run(mnist.preset("seed", epochs=50), data)
    stopped_at = []

    def stop():
        stopped_at.append(time.perf_counter())
        run.stop.set()

    threading.Timer(1.0, stop).start()
    reported = None
    for _ in mnist.train(run, update_every_s=0.1):
        if run.status == "evaluating" and reported is None:
            reported, steps = time.perf_counter(), run.step
    assert reported - stopped_at[0] < 1.0 and run.step == steps
    assert run.status == "stopped" and run.epoch < 50
    assert run.snapshot is not None and run.losses and run.accuracies
    assert 0 < run.accuracies[-1][0] < 50


def test_closing_the_training_generator_stops_the_run(data):
    run = mnist.new_run(mnist.preset("seed"), data)
    updates = mnist.train(run, update_every_s=0.01)
    next(updates)
    updates.close()
    assert run.status == "stopped" and run.stop.is_set()


def test_learning_rate_100_stops_with_a_nan_inf_message(data):
    run = mnist.new_run(mnist.preset("seed", lr=100.0), data)
    for _ in mnist.train(run):
        pass
    assert run.status == "diverged"
    assert "loss became NaN/inf" in run.message and "epoch 1" in run.message
    assert run.step < 10 and run.snapshot is None


def test_the_cli_prints_epochs_and_a_json_summary(capsys):
    assert mnist_cli.main(["--preset", "fast", "--epochs", "1", "--time-limit", "1", "--json"]) == 0
    out = capsys.readouterr()
    summary = json.loads(out.out.strip().splitlines()[-1])
    assert {"test_accuracy", "train_seconds", "images_per_second", "epochs"} <= summary.keys()
    assert summary["train_seconds"] < 3 and "test" in out.err  # 1 s limit + the batch in flight
    assert mnist_cli.main(["--batch-size", "0"]) == 2
    assert "batch_size must be between 1 and 4096, got 0" in capsys.readouterr().err


# --- sketches -------------------------------------------------------------------------------------------------


def _canvas(draw) -> Image.Image:
    picture = Image.new("RGB", (400, 400), "white")
    draw(ImageDraw.Draw(picture))
    return picture


def _ink(digit: torch.Tensor) -> np.ndarray:
    return (digit[0, 0] * mnist_data.MNIST_STD + mnist_data.MNIST_MEAN).numpy()


def _centre_of_mass(ink: np.ndarray) -> tuple[float, float]:
    rows, cols = np.indices(ink.shape)
    return (rows * ink).sum() / ink.sum(), (cols * ink).sum() / ink.sum()


def test_a_drawn_one_lands_centred_and_20_pixels_tall():
    one = _canvas(lambda d: d.line([(300, 60), (290, 340)], fill="black", width=24))  # off-centre, right side
    ink = _ink(sketch.sketch_to_mnist(one))
    rows, cols = np.flatnonzero(ink.max(1) > 0.05), np.flatnonzero(ink.max(0) > 0.05)
    assert rows[-1] - rows[0] + 1 == 20 and cols[-1] - cols[0] + 1 <= 6
    cy, cx = _centre_of_mass(ink)
    assert abs(cy - 13.5) <= 0.6 and abs(cx - 13.5) <= 0.6


def test_a_drawn_zero_lands_centred_and_scaled_to_fit_20x20():
    zero = _canvas(lambda d: d.ellipse([20, 40, 180, 300], outline="black", width=22))  # top-left corner
    ink = _ink(sketch.sketch_to_mnist(zero))
    rows, cols = np.flatnonzero(ink.max(1) > 0.05), np.flatnonzero(ink.max(0) > 0.05)
    assert rows[-1] - rows[0] + 1 == 20 and 11 <= cols[-1] - cols[0] + 1 <= 14  # 260 x 160 keeps its aspect
    cy, cx = _centre_of_mass(ink)
    assert abs(cy - 13.5) <= 0.6 and abs(cx - 13.5) <= 0.6
    assert ink[13, 13] < 0.1  # the hole stays a hole


def test_sketchpad_values_and_mnist_style_pictures_give_the_same_digit():
    zero = _canvas(lambda d: d.ellipse([100, 60, 300, 340], outline="black", width=22))
    expected = sketch.sketch_to_mnist(zero)
    transparent = np.zeros((400, 400, 4), dtype=np.uint8)  # a Sketchpad layer: black strokes on transparency
    transparent[..., 3] = 255 - np.asarray(zero.convert("L"))
    editor_value = {"background": None, "layers": [transparent], "composite": np.asarray(zero.convert("RGBA"))}
    inverted = Image.fromarray(255 - np.asarray(zero.convert("L")))  # white on black, like MNIST itself
    for picture in (editor_value, {"background": None, "layers": [transparent], "composite": None}, inverted):
        assert torch.allclose(sketch.sketch_to_mnist(picture), expected, atol=0.05)


@pytest.mark.parametrize("blank", [
    Image.new("RGB", (400, 400), "white"),
    np.zeros((400, 400, 4), dtype=np.uint8),
    {"background": None, "layers": [], "composite": None},
    {"background": None, "layers": [], "composite": np.full((400, 400, 4), 255, dtype=np.uint8)},
])
def test_a_blank_sketch_is_a_clear_message_not_a_guess(blank, trained):
    with pytest.raises(sketch.BlankSketchError, match="the sketch is empty: draw a digit first"):
        sketch.classify(trained.snapshot, blank)


def test_a_test_digit_drawn_back_is_read_correctly(trained, data):
    i = int(torch.nonzero(trained.test_predictions == data.test_labels)[0])
    picture = Image.fromarray(255 - np.asarray(mnist.digit_image(data.test_images[i], size=280).convert("L")))
    guesses = sketch.classify(trained.snapshot, picture)
    assert list(guesses)[0] == str(int(data.test_labels[i]))
    assert sum(guesses.values()) == pytest.approx(1.0, abs=1e-4) and len(guesses) == 10


# --- server's latest model, checkpoints, views -----------------------------------------------------------------


def test_classify_digit_uses_the_latest_trained_model_or_says_there_is_none(trained, monkeypatch):
    one = _canvas(lambda d: d.line([(200, 60), (200, 340)], fill="black", width=24))
    monkeypatch.setattr(mnist, "_latest_model", None)
    with pytest.raises(mnist.NoModelError, match="no MNIST model has been trained"):
        mnist.classify_with_latest(one)
    mnist.publish_latest(trained.snapshot)
    assert list(mnist.classify_with_latest(one))[0] == "1"


def test_checkpoint_round_trip_keeps_the_predictions(trained, data, tmp_path):
    path = tmp_path / "mnist.pt"
    mnist.save_checkpoint(trained, path)
    model, meta = mnist.load_checkpoint(path)
    assert meta["format"] == mnist.CHECKPOINT_FORMAT and meta["config"]["optimizer"] == "adamw"
    assert torch.equal(mnist_model.predict(model, data.test_images), mnist_model.predict(trained.snapshot, data.test_images))
    loaded = mnist.run_from_checkpoint(path, data)
    assert loaded.status == "loaded" and loaded.test_accuracy == trained.test_accuracy


@pytest.mark.parametrize("content", [b"hello, not weights", b"PK\x03\x04broken zip", "tensor", "dict", "wrong shapes"])
def test_a_file_that_is_not_a_checkpoint_is_a_clear_error(content, tmp_path):
    path = tmp_path / "weights.pt"
    if content == "tensor":
        torch.save(torch.zeros(3), path)
    elif content == "dict":
        torch.save({"state_dict": mnist_model.Net().state_dict()}, path)  # no format marker
    elif content == "wrong shapes":
        torch.save({"format": mnist.CHECKPOINT_FORMAT, "state_dict": {"fc2.weight": torch.zeros(2)}}, path)
    else:
        path.write_bytes(content)
    with pytest.raises(mnist.CheckpointError, match="weights.pt"):
        mnist.load_checkpoint(path)


def test_a_pickle_that_would_run_code_is_refused(tmp_path):
    import os
    import pickle

    class Evil:
        def __reduce__(self):
            return os.system, ("echo pwned",)

    path = tmp_path / "evil.pt"
    torch.save({"format": mnist.CHECKPOINT_FORMAT, "payload": Evil()}, path, pickle_module=pickle)
    with pytest.raises(mnist.CheckpointError, match="not a ChatLab MNIST checkpoint"):
        mnist.load_checkpoint(io.BytesIO(path.read_bytes()))


def test_views_show_curves_digits_and_a_confusion_matrix(trained):
    assert list(mnist.loss_frame(trained).columns) == ["epoch", "loss"]
    accuracy = mnist.accuracy_frame(trained)
    assert sorted(accuracy["split"]) == ["test", "train"] and accuracy["accuracy"].max() <= 100
    matrix = mnist.confusion_matrix(trained)
    assert matrix.sum() == 1000 and matrix.sum(1).tolist() == [100] * 10
    assert np.trace(matrix) / 1000 == pytest.approx(trained.test_accuracy)
    wrong = mnist.test_digits(trained, 40, only_wrong=True)
    assert all(p != t for _, p, t in wrong) and len(wrong) == min(40, 1000 - np.trace(matrix))
    assert mnist.test_digits(trained, 5)[0][0].size == (56, 56)


# --- pictures from strangers, seeds that are the run's own ---------------------------------------------------------


def test_a_small_png_of_a_huge_image_is_refused_from_its_header_before_decoding(tmp_path, monkeypatch):
    path = tmp_path / "huge.png"
    Image.new("1", (10_000, 10_000), 1).save(path)  # 100 M pixels in a few kB
    assert path.stat().st_size < 200_000
    monkeypatch.setattr(Image.Image, "load", lambda self: pytest.fail("decoded"))
    from PIL import ImageFile

    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: pytest.fail("decoded"))
    # ChatLab's own header check, or (once app.py has set PIL's limit to 2x ours, as the e2e tests' app does) PIL's
    # bomb check on the same header: refused before decoding either way
    with pytest.raises(sketch.ImageError, match="10000x10000 pixels|100,000,000 pixels"):
        mnist.classify_with_latest(str(path))


@pytest.mark.parametrize("content, name", [(b"hello, not an image", "notes.txt"), (b"\x89PNG\r\n\x1a\n" + b"\0" * 40,
                                                                                  "broken.png")])
def test_a_file_that_is_not_an_image_is_a_clear_error(content, name, tmp_path):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(sketch.ImageError, match=name):
        sketch.sketch_to_mnist(str(path))


def test_a_dark_digit_on_a_transparent_background_is_read_from_its_file(tmp_path, trained):
    picture = Image.new("RGBA", (280, 280), (0, 0, 0, 0))
    ImageDraw.Draw(picture).line([(140, 40), (135, 240)], fill=(0, 0, 0, 255), width=22)
    picture.save(tmp_path / "one.png")
    mnist.publish_latest(trained.snapshot)
    assert list(mnist.classify_with_latest(str(tmp_path / "one.png")))[0] == "1"


def test_a_large_photo_is_shrunk_before_its_pixels_become_arrays(tmp_path):
    picture = Image.new("RGB", (4000, 3000), "white")
    ImageDraw.Draw(picture).line([(2000, 300), (1950, 2700)], fill="black", width=250)
    picture.save(tmp_path / "photo.jpg")
    assert sketch.ink_of(str(tmp_path / "photo.jpg")).shape[1] <= sketch.WORKING_SIZE
    assert sketch.sketch_to_mnist(str(tmp_path / "photo.jpg")).shape == (1, 1, 28, 28)


def test_a_run_is_seeded_without_touching_torchs_global_generator(data):
    before = torch.random.get_rng_state()
    first = mnist.new_run(mnist.preset("seed", seed=3), data)
    assert torch.equal(torch.random.get_rng_state(), before)
    torch.manual_seed(12345)  # another thread reseeding the global generator changes nothing for the run
    second = mnist.new_run(mnist.preset("seed", seed=3), data)
    assert all(torch.equal(p, q) for p, q in zip(first.model.parameters(), second.model.parameters()))


def test_the_same_seed_trains_the_same_curve_while_others_use_the_global_generator(data):
    def losses(disturb: bool) -> list:
        run = mnist.new_run(mnist.preset("seed", seed=5, epochs=1), data)
        for step, _ in enumerate(mnist.train_epoch(run, update_every_s=0.0)):
            if disturb:
                torch.manual_seed(step)  # what a seeded request elsewhere did to the old, shared stream
                torch.rand(1000)
            if run.step >= 20:
                break
        return run.losses

    assert losses(False) == losses(True)
