"""chat.generation on the real SmolLM2 weights: streaming, stop, stats, trimming, and the next-token view."""
from __future__ import annotations

import dataclasses
import math
import time

import pytest
import torch

from chat import generation as g

GREEDY = g.GenerationParams(temperature=0, max_new_tokens=24)
ASK = [{"role": "user", "content": "What is the capital of France?"}]


def test_greedy_generation_is_deterministic_and_not_empty(chat_model):
    first, stats = g.chat_reply(ASK, GREEDY, chat_model)
    second, _ = g.chat_reply(ASK, GREEDY, chat_model)
    assert first == second and "Paris" in first
    assert stats.finish_reason in ("stop", "length") and stats.new_tokens > 0
    assert stats.prompt_tokens > 10 and stats.ttft_s is not None and stats.ttft_s > 0


def test_a_reply_cut_by_max_new_tokens_says_length(chat_model):
    text, stats = g.chat_reply([{"role": "user", "content": "Tell me a long story."}],
                               g.GenerationParams(temperature=0, max_new_tokens=5), chat_model)
    assert stats.finish_reason == "length" and stats.new_tokens == 5 and text


def test_seeded_sampling_is_reproducible(chat_model):
    params = g.GenerationParams(temperature=1.0, top_p=0.95, top_k=50, max_new_tokens=16, seed=1234)
    assert g.chat_reply(ASK, params, chat_model)[0] == g.chat_reply(ASK, params, chat_model)[0]


@pytest.mark.parametrize("change", [
    {"temperature": -0.1}, {"temperature": 2.5}, {"temperature": math.nan}, {"top_p": 0.0}, {"top_p": 1.5},
    {"top_k": -1}, {"top_k": 2.5}, {"max_new_tokens": 0}, {"max_new_tokens": 100_000},
    {"repetition_penalty": 0.0}, {"repetition_penalty": 9.0}, {"seed": -5}, {"temperature": "hot"},
])
def test_out_of_range_parameters_are_rejected_with_their_name(change, chat_model):
    params = dataclasses.replace(g.GenerationParams(), **change)
    with pytest.raises(ValueError, match=next(iter(change))):
        g.stream_chat(ASK, params, chat_model)


def test_context_trimming_drops_the_oldest_turns_and_keeps_the_system_prompt(chat_model):
    small = dataclasses.replace(chat_model, context_window=160)
    messages = [{"role": "system", "content": "You are a pirate."}]
    for i in range(12):
        messages += [{"role": "user", "content": f"Question number {i}: what is {i} plus {i}?"},
                     {"role": "assistant", "content": f"It is {2 * i}, matey."}]
    messages.append({"role": "user", "content": "And the last one?"})
    prompt = g.build_prompt(small, messages, max_new_tokens=32)
    assert prompt.dropped > 0 and len(prompt.ids) + 32 <= 160
    assert prompt.messages[0] == {"role": "system", "content": "You are a pirate."}
    assert prompt.messages[1]["role"] == "user" and prompt.messages[-1]["content"] == "And the last one?"
    assert "You are a pirate." in prompt.text and "Question number 0" not in prompt.text


def test_a_message_longer_than_the_context_is_a_clear_error(chat_model):
    small = dataclasses.replace(chat_model, context_window=64)
    with pytest.raises(ValueError, match="too long"):
        g.build_prompt(small, [{"role": "user", "content": "word " * 200}], max_new_tokens=16)


def test_the_prompt_is_the_tokenizers_own_chat_template(chat_model):
    prompt = g.build_prompt(chat_model, ASK, 16)
    expected = chat_model.tokenizer.apply_chat_template(ASK, tokenize=False, add_generation_prompt=True)
    assert prompt.text == expected and prompt.text.endswith("<|im_start|>assistant\n")


def test_stop_halts_generation_quickly_and_the_next_request_works(chat_model):
    stream = g.stream_chat([{"role": "user", "content": "Write a very long essay about the sea."}],
                           g.GenerationParams(temperature=0, max_new_tokens=2000), chat_model)
    pieces = iter(stream)
    next(pieces)
    next(pieces)
    start = time.perf_counter()
    stream.cancel(wait=False)
    stream._worker.join(5)
    stopped_after = time.perf_counter() - start
    assert not stream._worker.is_alive() and stopped_after < 0.3
    list(pieces)
    assert stream.stats.finish_reason == "cancelled" and stream.stats.new_tokens < 200
    assert g.chat_reply(ASK, GREEDY, chat_model)[0]


def test_abandoning_a_stream_stops_its_worker(chat_model):
    stream = g.stream_chat([{"role": "user", "content": "Count from one to one thousand."}],
                           g.GenerationParams(temperature=0, max_new_tokens=2000), chat_model)
    pieces = iter(stream)
    next(pieces)
    pieces.close()  # what Gradio does when the user presses stop or leaves
    assert not stream._worker.is_alive() and stream.stats.finish_reason == "cancelled"


def test_gradio_6_message_parts_are_flattened():
    history = [{"role": "user", "content": [{"type": "text", "text": "Hello "}, {"type": "text", "text": "there"}]},
               {"role": "assistant", "content": [{"type": "text", "text": "Hi!"}]},
               {"role": "tool", "content": "ignored"}]
    assert g.normalize_messages(history) == [{"role": "user", "content": "Hello there"},
                                             {"role": "assistant", "content": "Hi!"}]


def test_next_token_probabilities_are_sorted_and_match_a_direct_forward_pass(chat_model):
    session = g.NextTokenSession("The capital of France is", chat_model)
    found = session.candidates(temperature=1.0, top_k=0, top_p=1.0, k=10)
    raw = [c.raw_prob for c in found]
    assert raw == sorted(raw, reverse=True) and sum(raw) <= 1.0 + 1e-6
    with torch.inference_mode():
        ids = torch.tensor([session.ids])
        direct = torch.softmax(chat_model.model(input_ids=ids).logits[0, -1].float(), -1)
    assert found[0].token_id == int(direct.argmax()) and found[0].label == " Paris"
    for c in found:
        assert c.raw_prob == pytest.approx(float(direct[c.token_id]), abs=1e-4)


def test_temperature_top_k_and_top_p_reshape_the_distribution(chat_model):
    session = g.NextTokenSession("Once upon a time, there was a", chat_model)
    greedy = session.candidates(0.0, 0, 1.0)
    assert greedy[0].shaped_prob == 1.0 and all(c.shaped_prob == 0.0 for c in greedy[1:])
    top2 = session.candidates(1.0, 2, 1.0)
    assert sum(c.shaped_prob for c in top2[:2]) == pytest.approx(1.0) and top2[2].shaped_prob == 0.0
    hot, cold = session.candidates(2.0, 0, 1.0), session.candidates(0.5, 0, 1.0)
    assert hot[0].shaped_prob < hot[0].raw_prob < cold[0].shaped_prob
    nucleus = session.candidates(1.0, 0, 0.3)
    assert nucleus[0].shaped_prob > nucleus[0].raw_prob and nucleus[-1].shaped_prob == 0.0


def test_stepping_uses_the_cache_and_undo_restores_the_previous_distribution(chat_model):
    session = g.NextTokenSession("The capital of France is", chat_model)
    before = session.candidates(1.0, 0, 1.0)
    token = session.greedy()
    assert session.generated == [token]
    after = session.candidates(1.0, 0, 1.0)
    with torch.inference_mode():
        direct = torch.softmax(chat_model.model(input_ids=torch.tensor([session.ids])).logits[0, -1].float(), -1)
    assert after[0].raw_prob == pytest.approx(float(direct[after[0].token_id]), abs=1e-4)
    session.undo()
    again = session.candidates(1.0, 0, 1.0)
    assert [c.token_id for c in again] == [c.token_id for c in before]
    assert again[0].raw_prob == pytest.approx(before[0].raw_prob, abs=1e-4)
    with pytest.raises(ValueError, match="Nothing to undo"):
        session.undo()


def test_partial_utf8_candidates_show_bytes_and_join_into_a_character(chat_model):
    session = g.NextTokenSession("我爱北京天", chat_model)
    top = session.candidates(1.0, 0, 1.0)[0]
    assert top.partial and top.label.startswith("<0x") and "\ufffd" not in top.label
    for _ in range(4):  # a CJK character is at most 3 byte-level tokens
        session.greedy()
        if not session._pending_bytes():
            break
    tail = g.group_tokens(session.generated, session.tokenizer.token_bytes)
    assert tail and "\ufffd" not in "".join(s.text for s in tail)
    assert b"".join(s.raw for s in tail).decode("utf-8")


def test_an_empty_prompt_is_a_clear_error(chat_model):
    with pytest.raises(ValueError, match="prompt"):
        g.NextTokenSession("", chat_model)
