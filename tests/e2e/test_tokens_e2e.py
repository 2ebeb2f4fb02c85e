"""The Tokens tab end to end: the count_tokens API through gradio_client, and the live tab in a real Chromium."""
from __future__ import annotations

import pytest
from gradio_client.exceptions import AppError

pytestmark = pytest.mark.e2e


def test_count_tokens_endpoint_answers_through_gradio_client(app_client):
    assert app_client.predict("这是一段示例文本。", "gpt-4o", api_name="/count_tokens") == 7
    assert app_client.predict("这是一段示例文本。", "gpt-3.5-turbo", api_name="/count_tokens") == 9
    assert app_client.predict("", "gpt2", api_name="/count_tokens") == 0


def test_count_tokens_endpoint_reports_an_unknown_model(app_client):
    with pytest.raises(AppError, match="Unknown model"):
        app_client.predict("hi", "no-such-model", api_name="/count_tokens")


def test_typing_updates_the_count_and_the_coloured_spans_live(app_url, page):
    page.goto(app_url)
    headline = page.locator("#tokens-headline")
    headline.get_by_text("7 tokens").wait_for()
    page.locator("#tokens-text textarea").fill("hello world, 天安门")
    headline.get_by_text("tokens · 16 characters").wait_for()
    o200k = page.locator("#tokens-pane-o200k_base .token")
    gpt2 = page.locator("#tokens-pane-gpt2 .token")
    page.wait_for_function("() => document.querySelectorAll('#tokens-pane-gpt2 .token').length === 6")
    assert [gpt2.nth(i).inner_text().strip() for i in range(6)] == ["hello", "world", ",", "天", "安", "门"]
    page.locator("#tokens-pane-gpt2").get_by_text("gpt2 · 9 tokens").wait_for()  # 6 spans hold 9 ids
    assert o200k.count() >= 1
    assert "\ufffd" not in page.locator("#tokens-pane-gpt2").inner_text()
    # 安 is three bytes split over two GPT-2 tokens: selecting it shows both ids and its bytes.
    gpt2.nth(4).click()
    page.locator("#tokens-selected").get_by_text("<0xE5 0xAE 0x89>").wait_for()
    assert "22522, 231" in page.locator("#tokens-selected").inner_text()


def test_ids_and_whitespace_toggles_change_the_view(app_url, page):
    page.goto(app_url)
    page.locator("#tokens-headline").get_by_text("7 tokens").wait_for()
    page.locator("#tokens-text textarea").fill("a b\tc")
    page.locator("#tokens-show-ws input").check()
    page.locator("#tokens-pane-gpt2").get_by_text("·b").wait_for()
    page.locator("#tokens-show-ids input").check()
    page.locator("#tokens-pane-gpt2").get_by_text("275").first.wait_for()  # " b" is GPT-2 token 275


def test_the_tab_speaks_chinese_to_a_chinese_browser(app_url, page_zh):
    page_zh.goto(app_url)
    page_zh.locator("#tokens-headline").get_by_text("7 个词元").wait_for()
    page_zh.get_by_text("显示词元 id").wait_for()
