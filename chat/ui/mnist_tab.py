"""The MNIST tab: seed 000's CNN trained live (curves, digits, confusion matrix), and a pad to draw digits on."""
from __future__ import annotations

import html
import math

import gradio as gr
import numpy as np

from chat import budget, downloads
from chat.mnist import data as mnist_data, sketch as drawing, train as mnist
from chat.settings import Settings
from chat.training.run import TrainingError
from chat.ui import limits
from chat.ui.handlers import bind
from chat.ui.i18n import STRINGS, T, tr

SETTINGS = ("epochs", "batch_size", "lr", "optimizer", "time_limit_s")  # the controls a preset fills in
TRAIN_COLOR, TEST_COLOR = "#2563eb", "#ea580c"  # the accuracy plot's lines; its label names them
GRID_SIZE = 32  # test digits in the prediction grid and the misclassified gallery (4 rows of 8)


def apply_preset(name: str):
    config = mnist.PRESETS[name]
    return [getattr(config, setting) for setting in SETTINGS]


def _progress_html(run: mnist.TrainingRun | None, request: gr.Request | None) -> str:
    """The progress bar and one status line under it."""
    if run is None:
        return f"<p>{html.escape(tr(request, 'mnist.status_idle'))}</p>"
    fraction = 1.0 if run.status in ("done", "loaded") else run.progress
    accuracy = 100 * run.test_accuracy if run.test_accuracy is not None else float("nan")
    numbers = dict(epoch=run.epoch, epochs=run.config.epochs, step=run.step, speed=run.images_per_second,
                   seconds=run.seconds, accuracy=accuracy, loss=run.losses[-1][1] if run.losses else math.nan,
                   data=run.data.source, lr=run.config.lr, limit=run.config.time_limit_s)
    if run.status == "diverged":
        numbers["epoch"], numbers["step"] = run.diverged_epoch, run.diverged_at
        numbers["loss"] = run.diverged_loss
    line = tr(request, f"mnist.status_{run.status}", **numbers)
    if run.status == "running" and run.test_accuracy is not None:
        line += " · " + tr(request, "mnist.status_test", accuracy=accuracy)
    color = "#dc2626" if run.status == "diverged" else "#2563eb"
    return (f'<div style="height:10px;border-radius:5px;background:#e5e7eb;overflow:hidden">'
            f'<div style="height:100%;width:{100 * fraction:.1f}%;background:{color}"></div></div>'
            f'<p id="mnist-status-line" data-status="{run.status}">{html.escape(line)}</p>')


def _plots(run: mnist.TrainingRun | None, request: gr.Request | None):
    """The loss curve and the accuracy plot, with axis titles in the user's language. No data is None, never an
    empty table: a plot first drawn from an empty table draws no coloured lines afterwards."""
    loss = mnist.loss_frame(run) if run and run.losses else None
    accuracy = mnist.accuracy_frame(run) if run and run.accuracies else None
    names = {split: tr(request, f"mnist.{split}") for split in ("train", "test")}
    if accuracy is not None:
        accuracy["split"] = accuracy["split"].map(names)
    epoch = tr(request, "mnist.x_epoch")
    return (gr.update(value=loss, x_title=epoch, y_title=tr(request, "mnist.y_loss")),
            gr.update(value=accuracy, x_title=epoch, y_title=tr(request, "mnist.y_accuracy"), color_title=" ",
                      color_map={names["train"]: TRAIN_COLOR, names["test"]: TEST_COLOR}))


def _confusion_html(run: mnist.TrainingRun, request: gr.Request | None) -> str:
    """10x10 table, cells shaded by count: green on the diagonal (right), red off it (wrong)."""
    matrix = mnist.confusion_matrix(run)
    biggest_right = max(1, matrix.diagonal().max())
    biggest_wrong = max(1, (matrix - np.diag(matrix.diagonal())).max())
    head = "".join(f"<th>{d}</th>" for d in range(10))
    rows = []
    for true in range(10):
        cells = []
        for predicted in range(10):
            n = int(matrix[true, predicted])
            if true == predicted:
                background = f"rgba(22,163,74,{0.15 + 0.75 * n / biggest_right:.2f})"
            else:
                background = f"rgba(220,38,38,{0.85 * n / biggest_wrong:.2f})" if n else "transparent"
            cells.append(f'<td style="background:{background};text-align:center;padding:2px 6px">{n or ""}</td>')
        rows.append(f"<tr><th>{true}</th>{''.join(cells)}</tr>")
    caption = html.escape(tr(request, "mnist.confusion_axes"))
    return (f'<table id="mnist-confusion" style="border-collapse:collapse;font-variant-numeric:tabular-nums">'
            f"<caption style='caption-side:bottom;font-size:0.85em'>{caption}</caption>"
            f"<tr><th></th>{head}</tr>{''.join(rows)}</table>")


def _digit_views(run: mnist.TrainingRun, request: gr.Request | None):
    """Prediction grid, misclassified gallery, confusion matrix."""
    def caption(predicted: int, true: int) -> str:
        if predicted == true:
            return tr(request, "mnist.caption_right", predicted=predicted)
        return tr(request, "mnist.caption_wrong", predicted=predicted, true=true)

    grid = [(picture, caption(p, t)) for picture, p, t in mnist.test_digits(run, GRID_SIZE)]
    wrong = [(picture, caption(p, t)) for picture, p, t in mnist.test_digits(run, GRID_SIZE, only_wrong=True)]
    return grid, wrong, _confusion_html(run, request)


def _weights_file(run: mnist.TrainingRun, request: gr.Request | None):
    if run.snapshot is None:
        return gr.update(value=None, interactive=False)
    path = downloads.folder("mnist", getattr(request, "session_hash", None) or id(run)) / "chatlab-mnist-cnn.pt"
    mnist.save_checkpoint(run, path)
    return gr.update(value=str(path), interactive=True)


def training_view(run, request, digits: bool = False, weights: bool = False):
    """Every output of the start / upload handlers: state, progress, 2 plots, grid, gallery, matrix, download.
    The digits (a test pass's results) and the weights file only when asked: they change once per epoch / run."""
    extra = _digit_views(run, request) if digits else (gr.skip(), gr.skip(), gr.skip())
    return run, _progress_html(run, request), *_plots(run, request), *extra, (
        _weights_file(run, request) if weights else gr.skip())


def start_training(preset: str, epochs, batch_size, lr, optimizer: str, time_limit_s, seed,
                   previous: mnist.TrainingRun | None, request: gr.Request, settings: Settings = Settings()):
    """Start a fresh run for this session and stream its progress (at most every 0.5 s, and at epoch ends)."""
    if previous is not None:
        previous.stop.set()
    try:
        config = mnist.preset(preset or "seed", epochs=epochs, batch_size=batch_size, lr=lr, optimizer=optimizer,
                              time_limit_s=time_limit_s, seed=seed)
    except TrainingError as error:
        name = error.details.get("name", "")
        label = tr(request, f"mnist.{name}") if f"mnist.{name}" in STRINGS else name
        raise gr.Error(tr(request, "mnist.bad_setting", name=label, value=error.details.get("value"),
                          low=error.details.get("low"), high=error.details.get("high"))) from None
    try:
        data = mnist_data.load_data(settings.mnist_dir)
    except (ValueError, FileNotFoundError) as error:
        raise gr.Error(tr(request, "mnist.data_error", error=error)) from None
    run = mnist.new_run(config, data)
    yield training_view(run, request, weights=True)  # no weights to download until the first epoch is tested
    epochs_shown = 0
    try:
        try:
            for _ in mnist.train(run):
                new_epoch = len(run.accuracies) > epochs_shown
                epochs_shown = len(run.accuracies)
                yield training_view(run, request, digits=new_epoch)
        except budget.BusyError as error:  # every training slot is taken (the queue lets this happen only outside it)
            raise limits.busy(request, error) from None
        if run.status == "diverged":
            gr.Warning(tr(request, "mnist.status_diverged", epoch=run.diverged_epoch, step=run.diverged_at,
                          loss=run.diverged_loss, lr=run.config.lr))
        yield training_view(run, request, weights=True)
    finally:
        run.stop.set()  # the browser went away (generator closed) or the run ended: nothing keeps training


RUN_TTL_S = 7200  # a session's run (model, optimizer) is forgotten 2 hours after its last update


def stop_training(run: mnist.TrainingRun | None) -> None:
    if run is not None:
        run.stop.set()


def load_weights(file, run: mnist.TrainingRun | None, request: gr.Request, settings: Settings = Settings()):
    """Uploaded checkpoint -> this session's model (the running run, if any, is stopped)."""
    if not file:
        return (gr.skip(),) * 8
    if run is not None:
        run.stop.set()
    try:
        loaded = mnist.run_from_checkpoint(file, mnist_data.load_data(settings.mnist_dir))
    except mnist.CheckpointError as error:
        raise gr.Error(tr(request, "mnist.bad_checkpoint", error=error)) from None
    return training_view(loaded, request, digits=True, weights=True)


def classify_sketch(sketch, run: mnist.TrainingRun | None, request: gr.Request):
    """The top 3 digits for the drawing, from this session's model; a message instead when there is none."""
    try:
        digit = drawing.sketch_to_mnist(sketch) if sketch is not None else None
    except drawing.BlankSketchError:
        digit = None
    except drawing.ImageError as error:
        raise gr.Error(tr(request, "mnist.bad_image", error=error)) from None
    if digit is None:
        return None, None, tr(request, "mnist.blank")
    seen = mnist.digit_image(digit[0], size=112)
    if run is None or run.snapshot is None:
        return None, seen, tr(request, "mnist.no_model")
    return drawing.digit_probabilities(run.snapshot, digit), seen, ""


def classify_digit(image, request: gr.Request = None) -> dict[str, float]:
    """An image file of one digit (PNG, JPEG, WebP, ...; a dark digit on white or on a transparent background, or a
    light one on black) -> probability of each digit, from the model trained most recently on this server. The
    file's size is checked from its header before it is decoded (at most 4096x4096 pixels).

    Args:
        image: the digit's image file (a path or URL; MCP clients upload it first).
    """
    if image is None:
        raise gr.Error(tr(request, "mnist.blank"))
    try:
        return mnist.classify_with_latest(image)
    except mnist.NoModelError:
        raise gr.Error(tr(request, "mnist.api_no_model")) from None
    except drawing.BlankSketchError:
        raise gr.Error(tr(request, "mnist.blank")) from None
    except drawing.ImageError as error:
        raise gr.Error(tr(request, "mnist.bad_image", error=error)) from None


def build(settings: Settings) -> None:
    seed_preset = mnist.PRESETS["seed"]
    with gr.Tab(T("mnist.tab"), id="mnist"):
        gr.Markdown(T("mnist.intro"))
        run = gr.State(None, time_to_live=RUN_TTL_S, delete_callback=stop_training)
        with gr.Row(equal_height=False):
            with gr.Column(scale=1, min_width=260):
                preset = gr.Radio([(T("mnist.preset_seed"), "seed"), (T("mnist.preset_fast"), "fast")], value="seed",
                                  label=T("mnist.preset"), info=T("mnist.preset_info"), elem_id="mnist-preset")
                with gr.Row():
                    epochs = gr.Number(seed_preset.epochs, precision=0, label=T("mnist.epochs"), min_width=100,
                                       elem_id="mnist-epochs")
                    batch_size = gr.Number(seed_preset.batch_size, precision=0, label=T("mnist.batch_size"),
                                           min_width=100, elem_id="mnist-batch")
                with gr.Row():
                    lr = gr.Number(seed_preset.lr, label=T("mnist.lr"), min_width=100, elem_id="mnist-lr")
                    optimizer = gr.Dropdown(list(mnist.OPTIMIZERS), value=seed_preset.optimizer,
                                            label=T("mnist.optimizer"), min_width=100, elem_id="mnist-optimizer")
                with gr.Row():
                    time_limit = gr.Number(seed_preset.time_limit_s, label=T("mnist.time_limit_s"), min_width=100,
                                           info=T("mnist.time_limit_info"), elem_id="mnist-time-limit")
                    seed = gr.Number(0, precision=0, label=T("mnist.seed"), min_width=100, elem_id="mnist-seed")
                with gr.Row():
                    start = gr.Button(T("mnist.start"), variant="primary", elem_id="mnist-start")
                    stop = gr.Button(T("mnist.stop"), variant="stop", elem_id="mnist-stop")
                progress = gr.HTML(elem_id="mnist-progress")
                with gr.Row():
                    download = gr.DownloadButton(T("mnist.download"), interactive=False, size="sm",
                                                 elem_id="mnist-download")
                    upload = gr.UploadButton(T("mnist.upload"), file_types=[".pt", ".pth"], size="sm",
                                             elem_id="mnist-upload")
            with gr.Column(scale=3):
                with gr.Row():
                    loss_plot = gr.LinePlot(x="epoch", y="loss", label=T("mnist.loss_plot"), height=260,
                                            elem_id="mnist-loss-plot")
                    accuracy_plot = gr.LinePlot(x="epoch", y="accuracy", color="split", label=T("mnist.accuracy_plot"),
                                                height=260, elem_id="mnist-accuracy-plot")
                with gr.Tabs():
                    with gr.Tab(T("mnist.grid")):
                        grid = gr.Gallery(columns=8, height="auto", object_fit="contain", show_label=False,
                                          allow_preview=True, elem_id="mnist-grid")
                    with gr.Tab(T("mnist.wrong")):
                        wrong = gr.Gallery(columns=8, height="auto", object_fit="contain", show_label=False,
                                           elem_id="mnist-wrong")
                    with gr.Tab(T("mnist.confusion")):
                        confusion = gr.HTML(elem_id="mnist-confusion-box")
        gr.Markdown(T("mnist.draw_intro"))
        with gr.Row(equal_height=False):
            sketch = gr.Sketchpad(label=T("mnist.draw"), type="pil", canvas_size=(400, 400), height=420,
                                  brush=gr.Brush(default_size=18, colors=["#000000"], color_mode="fixed"),
                                  layers=False, elem_id="mnist-sketch")
            with gr.Column():
                guesses = gr.Label(num_top_classes=3, label=T("mnist.top3"), elem_id="mnist-guesses")
                note = gr.Markdown(elem_id="mnist-sketch-note")
                seen = gr.Image(label=T("mnist.seen"), type="pil", height=140, interactive=False,
                                buttons=[], elem_id="mnist-seen")
        # the classify_digit API: server-wide latest model, an image file in (a file, not gr.Image: Gradio would
        # decode any image, however large, and drop its transparency before classify_digit could look at it)
        api_image = gr.File(type="filepath", visible=False)
        api_label = gr.Label(visible=False)
        api_button = gr.Button(visible=False)

        knobs = [epochs, batch_size, lr, optimizer, time_limit]
        outputs = [run, progress, loss_plot, accuracy_plot, grid, wrong, confusion, download]
        preset.change(apply_preset, preset, knobs, api_visibility="private")
        start.click(bind(start_training, settings=settings), [preset, *knobs, seed, run], outputs, show_progress="hidden",
                    api_name="mnist_start_training", api_visibility="private", **limits.heavy("training"))
        stop.click(stop_training, run, None, queue=False, api_visibility="private")
        upload.upload(bind(load_weights, settings=settings), [upload, run], outputs, api_visibility="private")
        sketch.change(classify_sketch, [sketch, run], [guesses, seen, note], trigger_mode="always_last",
                      show_progress="hidden", api_visibility="private")
        api_button.click(classify_digit, api_image, api_label, api_name="classify_digit")
