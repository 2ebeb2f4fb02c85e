"""The Tiny GPT tab in a real Chromium: start training, see the curve and the sample timeline move, stop, chat."""
from __future__ import annotations

import pytest

pytestmark = pytest.mark.e2e

STEP = "() => +(document.querySelector('#tinygpt-status-line')?.dataset.step || 0) >= {n}"


def test_training_shows_curve_and_samples_then_stops_and_chats(app_url, page):
    page.goto(app_url)
    page.get_by_role("tab", name="Tiny GPT").click()
    page.locator("#tinygpt-status-line[data-status=idle]").wait_for()
    page.locator("#tinygpt-start").click()
    page.locator("#tinygpt-status-line[data-status=running]").wait_for()
    # step 0: the untrained model's noise opens the timeline, and both curves have their first point
    page.locator("#tinygpt-samples .tinygpt-sample[data-step='0']").wait_for()
    page.wait_for_function(STEP.format(n=10), timeout=60_000)
    page.wait_for_function("() => document.querySelectorAll('#tinygpt-plot svg path, #tinygpt-plot canvas').length"
                           " > 0")
    assert "it/s" in page.locator("#tinygpt-stats").inner_text()
    page.locator("#tinygpt-stop").click()
    page.locator("#tinygpt-status-line[data-status=stopped]").wait_for()
    stopped_at = int(page.locator("#tinygpt-status-line").get_attribute("data-step"))
    assert stopped_at >= 10
    newest = page.locator("#tinygpt-samples .tinygpt-sample").first
    assert int(newest.get_attribute("data-step")) == stopped_at  # a sample of the model as it stopped
    assert page.locator("#tinygpt-samples .tinygpt-sample").count() >= 2
    # the model trained so far is usable: chat with it and download it
    page.locator("#tinygpt-message textarea").fill("Hello")
    page.locator("#tinygpt-message textarea").press("Enter")
    page.locator("#tinygpt-chatbot").get_by_text("Hello").wait_for()
    page.wait_for_function("() => document.querySelectorAll('#tinygpt-chatbot .bot').length >= 1")
    with page.expect_download() as download:
        page.locator("#tinygpt-download").click()
    assert download.value.suggested_filename.endswith(".zip")


def test_the_tab_speaks_chinese_to_a_chinese_browser(app_url, page_zh):
    page_zh.goto(app_url)
    page_zh.get_by_role("tab", name="迷你 GPT").click()
    page_zh.get_by_text("开始新训练").wait_for()
    page_zh.get_by_text("只学习 Bot 的回答").wait_for()
