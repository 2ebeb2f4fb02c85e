"""The MNIST tab end to end: the classify_digit API through gradio_client, and live training in a real Chromium."""
from __future__ import annotations

import pytest
from gradio_client import handle_file
from gradio_client.exceptions import AppError
from PIL import Image, ImageDraw

from chat.mnist import train as mnist

pytestmark = pytest.mark.e2e

LOSS_LINE = "#mnist-loss-plot .mark-line path"


def _drawn_one(path) -> str:
    picture = Image.new("RGB", (280, 280), "white")
    ImageDraw.Draw(picture).line([(140, 40), (135, 240)], fill="black", width=22)
    picture.save(path)
    return str(path)


def test_classify_digit_says_clearly_when_no_model_is_trained_yet(app_client, monkeypatch, tmp_path):
    monkeypatch.setattr(mnist, "_latest_model", None)
    with pytest.raises(AppError, match="No MNIST model has been trained on this server yet"):
        app_client.predict(handle_file(_drawn_one(tmp_path / "one.png")), api_name="/classify_digit")


def test_classify_digit_answers_with_the_servers_latest_trained_model(app_client, tmp_path):
    run = mnist.new_run(mnist.preset("fast", epochs=1, time_limit_s=4))  # trains in the server's process
    for _ in mnist.train(run):
        pass
    result = app_client.predict(handle_file(_drawn_one(tmp_path / "one.png")), api_name="/classify_digit")
    assert result["label"] == "1"
    assert len(result["confidences"]) >= 3 and result["confidences"][0]["label"] == "1"
    blank = tmp_path / "blank.png"
    Image.new("RGB", (280, 280), "white").save(blank)
    with pytest.raises(AppError, match="The pad is empty"):
        app_client.predict(handle_file(str(blank)), api_name="/classify_digit")


def _open_tab(page, app_url):
    page.goto(app_url)
    # the app's first page load can take a while (other tabs load their models); the tab is clickable after it
    page.get_by_role("tab", name="MNIST").click(timeout=60_000)


def test_start_shows_the_loss_curve_growing_and_stop_ends_the_run(app_url, page):
    _open_tab(page, app_url)
    page.locator("#mnist-epochs input").fill("50")
    page.locator("#mnist-start").click()
    page.locator("#mnist-status-line[data-status='running']").wait_for()
    page.locator(LOSS_LINE).wait_for()
    first = page.locator(LOSS_LINE).get_attribute("d")
    page.wait_for_function(f"d => document.querySelector('{LOSS_LINE}').getAttribute('d') !== d", arg=first)
    page.locator("#mnist-stop").click()
    page.locator("#mnist-status-line[data-status='stopped']").wait_for(timeout=10_000)
    assert "model trained so far is kept" in page.locator("#mnist-status-line").inner_text()
    stopped = page.locator(LOSS_LINE).get_attribute("d")
    page.wait_for_timeout(1500)
    assert page.locator(LOSS_LINE).get_attribute("d") == stopped  # nothing trains after the stop
    assert page.locator("#mnist-grid img").count() > 0  # the model kept is shown on the test digits


def _draw_a_one(page):
    box = page.locator("#mnist-sketch canvas").first.bounding_box()
    x, top, height = box["x"] + box["width"] / 2, box["y"] + box["height"] * 0.2, box["height"] * 0.6
    page.mouse.move(x, top)
    page.mouse.down()
    for i in range(1, 4):  # few moves: a headless browser without GPU paints the canvas slowly
        page.mouse.move(x - 3 * i, top + height * i / 3)
    page.mouse.up()


def test_drawing_a_digit_shows_the_top_3_guesses_of_this_sessions_model(app_url, page):
    _open_tab(page, app_url)
    sketch, note = page.locator("#mnist-sketch"), page.locator("#mnist-sketch-note")
    sketch.scroll_into_view_if_needed()
    sketch.get_by_role("button", name="Brush").click()
    _draw_a_one(page)
    note.get_by_text("No model yet").wait_for()
    page.locator("#mnist-preset label").nth(1).click()  # the fast preset
    page.wait_for_function("() => document.querySelector('#mnist-epochs input').value === '15'")
    page.locator("#mnist-time-limit input").fill("3")
    page.locator("#mnist-start").click()
    page.locator("#mnist-status-line[data-status='timeout']").wait_for()
    sketch.get_by_role("button", name="Clear canvas").click()
    note.get_by_text("The pad is empty").wait_for()
    sketch.get_by_role("button", name="Brush").click()
    _draw_a_one(page)
    page.wait_for_function("() => document.querySelectorAll('#mnist-guesses meter').length === 3")
    assert page.locator("#mnist-guesses [data-testid=label-output-value]").inner_text() in list("0123456789")
    assert note.inner_text().strip() == ""


def test_learning_rate_100_stops_with_a_nan_inf_message_and_the_tab_stays_usable(app_url, page):
    _open_tab(page, app_url)
    page.locator("#mnist-lr input").fill("100")
    page.locator("#mnist-start").click()
    page.locator("#mnist-status-line[data-status='diverged']").wait_for()
    assert "loss became NaN/inf" in page.locator("#mnist-status-line").inner_text()
    page.locator("#mnist-batch input").fill("0")
    page.locator("#mnist-start").click()
    page.get_by_text("Batch size must be between 1 and 4096 (got 0)").first.wait_for()


def test_uploading_a_file_that_is_not_weights_is_a_clear_error(app_url, page, tmp_path):
    _open_tab(page, app_url)
    bogus = tmp_path / "notes.pt"
    bogus.write_text("these are not weights")
    page.locator("#mnist-upload").locator("xpath=preceding-sibling::input[@type='file'][1]").set_input_files(
        str(bogus))
    page.get_by_text("That file is not usable weights").first.wait_for()
