"""The Chat and Next-token tabs end to end: their APIs through gradio_client, and both tabs in a real Chromium."""
from __future__ import annotations

import pytest
from gradio_client.exceptions import AppError

pytestmark = pytest.mark.e2e


def test_chat_endpoint_streams_an_answer_that_uses_the_history(app_client, chat_model):
    history = [{"role": "user", "content": "Remember the word: banana."},
               {"role": "assistant", "content": "Got it, the word is banana."}]
    job = app_client.submit("What is the capital of France?", history, "You are a helpful assistant.",
                            0.0, 0.9, 50, 24, 1.1, -1, api_name="/chat")
    outputs = list(job)
    assert len(outputs) > 2  # streamed, not one block
    assert outputs[-1].startswith(outputs[1]) and "Paris" in outputs[-1]


def test_chat_endpoint_rejects_out_of_range_parameters(app_client, chat_model):
    with pytest.raises(AppError, match="temperature"):
        app_client.predict("Hi", [], "", 5.0, 0.9, 50, 24, 1.1, -1, api_name="/chat")


def test_next_token_endpoint_returns_sorted_candidates(app_client, chat_model):
    found = app_client.predict("The capital of France is", 1.0, 0, 1.0, api_name="/next_token")
    assert found[0]["label"] == " Paris"
    raw = [c["raw_prob"] for c in found]
    assert raw == sorted(raw, reverse=True) and sum(raw) <= 1.0 + 1e-6
    shaped = app_client.predict("The capital of France is", 0.0, 0, 1.0, api_name="/next_token")
    assert shaped[0]["shaped_prob"] == 1.0


def test_a_chat_message_streams_an_answer_with_stats_and_the_prompt(app_url, page, chat_model):
    page.goto(app_url)
    page.get_by_role("tab", name="Chat").click()
    page.get_by_text("Generation settings").click()
    temperature = page.locator("#chat-temperature input[type=number]")
    temperature.fill("0")  # greedy: the tab's default 0.7 samples, and a sampled answer may not name Paris
    temperature.press("Enter")
    page.locator("#chat-input textarea").fill("What is the capital of France?")
    page.locator("#chat-input textarea").press("Enter")
    page.locator("#chat-chatbot").get_by_text("Paris").first.wait_for(timeout=120_000)
    page.locator("#chat-chatbot").get_by_text("tokens/s").wait_for(timeout=120_000)
    prompt = page.locator("#chat-prompt")
    assert "<|im_start|>" in prompt.inner_text() and "What is the capital of France?" in prompt.inner_text()
    assert "Context:" in page.locator("#chat-gauge").inner_text()
    page.get_by_text("Export the conversation").click()  # written once the reply is complete, not per chunk
    with page.expect_download() as download:
        page.locator("#chat-export-md").click()
    markdown = open(download.value.path(), encoding="utf-8").read()
    assert "What is the capital of France?" in markdown and "Paris" in markdown


def test_clicking_a_next_token_candidate_appends_it(app_url, page, chat_model):
    page.goto(app_url)
    page.get_by_role("tab", name="Next token").click()
    candidates = page.locator("#next-candidates label")
    candidates.first.wait_for(timeout=60_000)
    assert "Paris" in candidates.first.inner_text()
    page.locator("#next-status").get_by_text("0 generated").wait_for()
    candidates.nth(1).click()  # " the", the second most likely
    page.locator("#next-status").get_by_text("1 generated").wait_for()
    spans = page.locator("#next-text .token")
    assert spans.count() == 2 and spans.nth(1).inner_text().strip() == "the"  # the prompt, then the new token
    page.locator("#next-undo").click()
    page.locator("#next-status").get_by_text("0 generated").wait_for()


def test_show_probabilities_explains_a_token_and_continues_the_reply_from_another(app_url, page, chat_model):
    page.goto(app_url)
    page.get_by_role("tab", name="Chat").click()
    assert not page.locator("#chat-probs").is_visible()  # off: no view, nothing recorded
    page.get_by_text("Generation settings").click()
    temperature = page.locator("#chat-temperature input[type=number]")
    temperature.fill("0")
    temperature.press("Enter")
    page.locator("#chat-show-probs input").check()
    page.locator("#chat-input textarea").fill("What is the capital of France?")
    page.locator("#chat-input textarea").press("Enter")
    page.locator("#chat-chatbot").get_by_text("Paris").first.wait_for(timeout=120_000)
    tokens = page.locator("#chat-token-view span.token")
    page.wait_for_function("() => document.querySelectorAll('#chat-token-view span.token').length > 3",
                           timeout=60_000)
    shown = "".join(tokens.all_inner_texts())
    assert "Paris" in shown  # the reply, token by token
    first_reply = page.locator("#chat-chatbot .message.bot").last.inner_text()
    tokens.nth(1).click()
    page.locator("#chat-prob-detail").get_by_text("Token 2").wait_for(timeout=30_000)
    assert "%" in page.locator("#chat-prob-top").inner_text()  # the model's likeliest tokens there
    options = page.locator("#chat-prob-alternative label")
    assert options.count() >= 2
    options.nth(1).click()  # the model's second choice, not the token it drew
    page.locator("#chat-prob-continue").click()
    page.wait_for_function(
        "(before) => { const m = document.querySelectorAll('#chat-chatbot .message.bot');"
        " return m.length && m[m.length - 1].innerText !== before && !document.querySelector('#chat-prob-continue')"
        ".disabled; }", arg=first_reply, timeout=120_000)
    assert page.locator("#chat-chatbot .message.bot").last.inner_text() != first_reply
