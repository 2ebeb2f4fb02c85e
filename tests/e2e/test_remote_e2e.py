"""chat.remote against a real OpenAI-compatible server: llama-cpp-python's, on the packaged SmolLM2 GGUF (the
`llama_server` fixture in tests/conftest.py). Chat streams and stops for real, next-token probabilities come from the
server's logprobs, the token count from its tokenizer, and each failure names the URL."""
from __future__ import annotations

import time

import pytest

from chat.llm import remote
from chat.llm.params import GenerationParams
from chat.settings import ServerSettings, Settings
from tests.conftest import process_cpu_seconds

pytestmark = pytest.mark.e2e

GREEDY = GenerationParams(temperature=0.0, max_new_tokens=24)
# llama.cpp's Q4_1 model answers "What is the capital of France?" greedily with an invented French name: its first
# token is a near tie ("The" / "La" / "L"), which its int8 rounding tips; Japan's answer is not close
JAPAN = [{"role": "user", "content": "What is the capital of Japan?"}]


def test_the_model_list_comes_from_the_server(llama_server):
    backend, _ = llama_server
    assert remote.list_models(backend, fresh=True) == ["smollm2"]
    assert remote.resolve_model(remote.Backend(backend.url, "", backend.key)).model == "smollm2"


def test_a_remote_chat_streams_an_answer_with_stats(llama_server):
    backend, _ = llama_server
    stream = remote.stream_chat(JAPAN, GREEDY, backend)
    deltas = list(stream)
    assert len(deltas) > 2 and "Tokyo" in "".join(deltas)
    assert stream.prompt.messages == JAPAN and stream.prompt.text is None  # llama-cpp-python shows no template
    stats = stream.stats
    assert stats.new_tokens == len(deltas) and stats.finish_reason in ("stop", "length")
    assert 0 < stats.ttft_s < stats.seconds and stats.tokens_per_s > 0


def test_a_remote_reply_shows_its_probabilities_from_the_servers_top_logprobs(llama_server):
    backend, _ = llama_server
    stream = remote.stream_chat(JAPAN, GREEDY, backend, alternatives=3)
    text = "".join(stream)
    choices = stream.choices
    assert "Tokyo" in text and len(choices) == stream.stats.new_tokens
    assert "".join(c.text for c in choices) == text  # one choice per token the server sent, in order
    for choice in choices:
        assert 0 < choice.model_prob <= 1 and len(choice.alternatives) == 3
        probs = [p for _, _, p in choice.alternatives]
        assert probs == sorted(probs, reverse=True) and sum(probs) <= 1 + 1e-6
        assert choice.alternatives[0][1] == choice.text  # greedy: the server's likeliest token is the one it sent
    plain = remote.stream_chat(JAPAN, GREEDY, backend)
    assert "".join(plain) == text and plain.choices == []  # asked for nothing, it records nothing


def test_stopping_a_remote_reply_stops_the_server(llama_server):
    backend, pid = llama_server
    stream = remote.stream_chat([{"role": "user", "content": "Write a very long story about a cat and a dog."}],
                                GenerationParams(temperature=0.7, max_new_tokens=1500, seed=1), backend)
    received = []
    for delta in stream:
        received.append(delta)
        if len(received) == 5:
            before = process_cpu_seconds(pid)
            time.sleep(0.5)
            assert process_cpu_seconds(pid) - before > 0.2  # generating (it runs ahead of the reader)
            stream.cancel()
    assert len(received) == 5 and stream.stats.finish_reason == "cancelled" and stream.stats.new_tokens == 5
    time.sleep(0.3)
    before = process_cpu_seconds(pid)
    time.sleep(1.5)
    assert process_cpu_seconds(pid) - before < 0.2  # the closed stream stopped the server's generation
    assert "Tokyo" in remote.chat_reply(JAPAN, GREEDY, backend)[0]  # and it answers the next request


def test_abandoning_a_remote_stream_closes_it(llama_server):
    backend, pid = llama_server
    stream = remote.stream_chat([{"role": "user", "content": "Count from 1 to 500."}],
                                GenerationParams(temperature=0.0, max_new_tokens=1500), backend)
    iterator = iter(stream)
    next(iterator)
    iterator.close()  # what Gradio does when a client goes away
    assert stream.stats.finish_reason == "cancelled"
    time.sleep(0.3)
    before = process_cpu_seconds(pid)
    time.sleep(1.0)
    assert process_cpu_seconds(pid) - before < 0.2


def test_wrong_key_and_unknown_model_are_clear_errors_naming_the_url(llama_server):
    backend, _ = llama_server
    wrong_key = remote.Backend(backend.url, "smollm2", "not-the-key")
    with pytest.raises(remote.RemoteError, match=rf"The server at {backend.url} refused the API key \(HTTP 401\)"):
        remote.stream_chat(JAPAN, GREEDY, wrong_key)
    unknown = remote.Backend(backend.url, "gpt-9", backend.key)
    with pytest.raises(remote.RemoteError, match=rf"{backend.url} has no model 'gpt-9'; it serves: smollm2"):
        remote.stream_chat(JAPAN, GREEDY, unknown)


def test_next_token_on_raw_text_comes_from_the_servers_logprobs(llama_server):
    backend, _ = llama_server
    session = remote.RemoteSession("The capital of France is", backend)
    found = session.candidates(1.0, 0, 1.0, 10)
    assert found[0].label == " Paris" and len(found) == 10
    raw = [c.raw_prob for c in found]
    assert raw == sorted(raw, reverse=True) and sum(raw) <= 1.0 + 1e-6
    assert session.candidates(0.0, 0, 1.0)[0].shaped_prob == 1.0  # greedy: all on the top token
    session.greedy()
    assert session.pieces() == [" Paris"] and session.text() == "The capital of France is Paris"
    assert session.candidates()[0].label != " Paris"  # a new distribution, after " Paris"
    session.undo()
    assert session.candidates()[0].label == " Paris"


def test_next_token_for_a_chat_message_uses_top_logprobs(llama_server):
    backend, _ = llama_server
    session = remote.RemoteSession("What is the capital of France?", backend, chat=True, k=5)
    found = session.candidates(k=5)
    assert len(found) == 5 and all(0 < c.raw_prob <= 1 for c in found)
    with pytest.raises(ValueError, match="does not show its chat template"):  # no /apply-template on this server
        session.greedy()


def test_the_remote_token_count_is_the_models_own(llama_server, chat_model):
    backend, _ = llama_server
    text = "ChatGPT doesn't read letters: it reads tokens. 我爱北京天安门。"
    expected = len(chat_model.tokenizer.encode(text, add_special_tokens=False))  # the same model's tokenizer
    assert remote.count_tokens(backend, text) == expected


def test_the_chat_tabs_backend_chooser_chats_with_the_server(app_url, page, llama_server):
    backend, _ = llama_server
    page.goto(app_url)
    page.get_by_role("tab", name="Chat").click()
    assert not page.locator("#chat-server-url").is_visible()  # only once "Server" is chosen
    page.locator("#chat-model").get_by_text("Server (OpenAI-compatible)").click()
    page.locator("#chat-server-url textarea").fill(backend.url)
    page.locator("#chat-server-connect").click()  # no key yet: the server refuses, the message names it
    page.locator("#chat-server-status").get_by_text(f"The server at {backend.url} refused the API key").wait_for()
    page.locator("#chat-server-key input").fill(backend.key)
    page.locator("#chat-server-connect").click()
    page.locator("#chat-server-status").get_by_text(f"1 model(s) at {backend.url}").wait_for()
    assert page.locator("#chat-server-model input").input_value() == "smollm2"
    page.get_by_text("Generation settings").click()
    temperature = page.locator("#chat-temperature input[type=number]")
    temperature.fill("0")
    temperature.press("Enter")
    page.locator("#chat-input textarea").fill("What is the capital of Japan?")
    page.locator("#chat-input textarea").press("Enter")
    page.locator("#chat-chatbot").get_by_text("Tokyo").first.wait_for(timeout=60_000)
    page.locator("#chat-chatbot").get_by_text("tokens/s").wait_for(timeout=60_000)
    shown = page.locator("#chat-prompt").inner_text()
    assert '"content": "What is the capital of Japan?"' in shown  # the messages sent, exactly
    assert "applies its own chat template" in shown and "<|im_start|>" not in shown  # not a made-up template
    assert f"smollm2 at {backend.url}" in page.locator("#chat-gauge").inner_text()
    page.locator("#chat-model").get_by_text("Original", exact=True).click()  # the local model still answers
    page.locator("#chat-input textarea").fill("Say hello.")
    page.locator("#chat-input textarea").press("Enter")
    page.locator("#chat-chatbot").get_by_text("tokens/s").nth(1).wait_for(timeout=120_000)
    assert "<|im_start|>" in page.locator("#chat-prompt").inner_text()


def test_the_next_token_api_and_the_tokens_row_use_the_configured_server(llama_server):
    """ChatLab started with --backend-url/--backend-key pointing at the test server."""
    from chat.ui import next_token_tab, tokens_tab

    backend, _ = llama_server
    settings = Settings(server=ServerSettings(url=backend.url, key=backend.key))
    found = next_token_tab.next_token("The capital of France is", 1.0, 0, 1.0, model="server", settings=settings)
    assert found[0]["label"] == " Paris" and len(found) == next_token_tab.TOP
    text = "ChatGPT doesn't read letters."
    [row] = tokens_tab.server_rows(text, settings.server, None)
    assert row[:4] == ["server: smollm2", backend.url, remote.count_tokens(backend, text), len(text)]

