"""chat.llm.generation: streamed replies with stats, a stop that really stops, a reply waiting for its place, and
seeds that hold whoever else is being served. On a tiny random model (the plain path and the serving engine on the
fast decoder's kernels); what needs SmolLM2's knowledge runs on its real weights."""
from __future__ import annotations

import dataclasses
import threading
import time

import pytest
import torch

from chat.llm import generation, serving
from chat.llm.fastpath.decoder import eager_decoder
from chat.llm.params import GenerationParams

GREEDY = GenerationParams(temperature=0, max_new_tokens=24)
ASK = [{"role": "user", "content": "What is the capital of France?"}]
ASK_STORY = [{"role": "user", "content": "Tell me a story about a dragon."}]
LONG = [{"role": "user", "content": "Write a very long essay about the sea."}]


@pytest.fixture(params=["plain", "fast"])
def loaded(request, tiny_chat, tiny_fast_chat):
    return tiny_chat if request.param == "plain" else tiny_fast_chat


def test_greedy_generation_is_deterministic_and_reports_its_stats(loaded):
    first, stats = generation.chat_reply(ASK, GREEDY, loaded)
    second, _ = generation.chat_reply(ASK, GREEDY, loaded)
    assert first == second and first
    assert stats.finish_reason in ("stop", "length") and stats.new_tokens > 0
    assert stats.prompt_tokens > 10 and stats.ttft_s is not None and stats.ttft_s > 0


def test_a_reply_cut_by_max_new_tokens_says_length(loaded):
    text, stats = generation.chat_reply([{"role": "user", "content": "Tell me a long story."}],
                                        GenerationParams(temperature=0, max_new_tokens=5), loaded)
    assert stats.finish_reason == "length" and stats.new_tokens == 5 and text


def test_seeded_sampling_is_reproducible(loaded):
    params = GenerationParams(temperature=1.0, top_p=0.95, top_k=50, max_new_tokens=16, seed=1234)
    assert generation.chat_reply(ASK, params, loaded)[0] == generation.chat_reply(ASK, params, loaded)[0]


def test_the_plain_path_and_the_engine_sample_alike(tiny_chat, tiny_fast_chat):
    """One sampler for both paths: the same seed gives the same tokens (the engine's logits equal the model's to
    the kernels' rounding, far from the tiny model's near-ties)."""
    params = GenerationParams(temperature=0.8, top_k=20, top_p=0.9, repetition_penalty=1.2, max_new_tokens=12,
                              seed=7)
    assert generation.chat_reply(ASK, params, tiny_chat)[0] == generation.chat_reply(ASK, params, tiny_fast_chat)[0]


def test_stop_halts_generation_quickly_and_the_next_request_works(loaded):
    stream = generation.stream_chat(LONG, GenerationParams(temperature=0, max_new_tokens=400), loaded)
    pieces = iter(stream)
    next(pieces)
    next(pieces)
    start = time.perf_counter()
    stream.cancel(wait=False)
    stream._worker.join(5)
    stopped_after = time.perf_counter() - start
    assert not stream._worker.is_alive() and stopped_after < 0.3
    list(pieces)
    assert stream.stats.finish_reason == "cancelled" and stream.stats.new_tokens < 400
    assert generation.chat_reply(ASK, GREEDY, loaded)[0]


def test_abandoning_a_stream_stops_its_worker(loaded):
    stream = generation.stream_chat(LONG, GenerationParams(temperature=0, max_new_tokens=400), loaded)
    pieces = iter(stream)
    next(pieces)
    pieces.close()  # what Gradio does when the user presses stop or leaves
    assert not stream._worker.is_alive() and stream.stats.finish_reason == "cancelled"


def _own_engine(tiny_chat, **config):
    """The tiny model on a decoder of its own, so its engine is made with `config`."""
    loaded = dataclasses.replace(tiny_chat, fast=eager_decoder(tiny_chat.model, kernels=True))
    return loaded, serving.engine_for(loaded, serving.ServingConfig(**config))


def test_a_reply_waiting_for_a_place_says_its_number_and_a_user_who_leaves_frees_the_line(tiny_chat, kernels):
    loaded, engine = _own_engine(tiny_chat, max_batch=1, max_waiting=2)
    writing = generation.stream_chat(LONG, GenerationParams(temperature=0, max_new_tokens=400, top_k=0), loaded)
    written = iter(writing)
    while not next(written):  # the only place is taken once this writes
        pass
    waiting = generation.stream_chat(ASK, GenerationParams(temperature=0, max_new_tokens=8), loaded)
    pieces = iter(waiting)
    for _ in range(20):  # nothing to read while it waits: "" every WAIT_POLL_S, so the consumer keeps control
        assert next(pieces) == ""
        if waiting.place is not None:
            break
    assert waiting.place == 1 and len(engine.waiting) == 1
    start = time.perf_counter()
    pieces.close()  # what Gradio does when the user leaves
    assert not waiting._worker.is_alive() and time.perf_counter() - start < 2
    assert not engine.waiting and waiting.stats.finish_reason == "cancelled"
    written.close()
    assert engine.running == 0 and writing.stats.finish_reason == "cancelled"
    engine.close()


def test_the_first_words_show_at_once_however_slow_the_pace(tiny_chat, kernels, monkeypatch):
    """A crowded server refreshes each reply rarely (generation.pace), but the first words must not wait for that:
    the streamer holds a word back until the next one begins, so the worker takes tokens one by one until some text
    is out. Here the pace is ~20 s: the first text comes after a few tokens, the rest at the reply's end."""
    loaded, engine = _own_engine(tiny_chat)
    monkeypatch.setattr(generation, "UPDATES_PER_S", 0.05)
    stream = generation.stream_chat(LONG, GenerationParams(temperature=0, max_new_tokens=40), loaded)
    deltas = iter(stream)
    first = next(d for d in deltas if d)
    tokens_then = stream.tokens
    rest = "".join(deltas)
    assert first and rest
    assert tokens_then <= 4 and stream.stats.new_tokens == 40, (tokens_then, stream.stats.new_tokens)
    engine.close()


def _reply_while_another_runs(loaded, params, other):
    """`params`' reply, with a second seeded request started once the first is sampling."""
    stream = generation.stream_chat(ASK_STORY, params, loaded)
    pieces = iter(stream)
    text = next(pieces)
    rival = threading.Thread(target=lambda: generation.chat_reply(ASK_STORY, other, loaded))
    rival.start()
    text += "".join(pieces)
    rival.join()
    return text


def test_the_same_seed_gives_the_same_reply_while_another_seeded_request_runs(loaded):
    params = GenerationParams(temperature=1.2, top_p=1.0, top_k=0, max_new_tokens=20, seed=1234)
    alone, _ = generation.chat_reply(ASK_STORY, params, loaded)
    together = _reply_while_another_runs(loaded, params, dataclasses.replace(params, seed=99, max_new_tokens=12))
    assert together == alone
    before = torch.random.get_rng_state()
    generation.chat_reply(ASK_STORY, params, loaded)
    assert torch.equal(torch.random.get_rng_state(), before)  # torch's global generator is left alone


def test_the_real_model_answers_a_simple_question_right(chat_model):
    """SmolLM2 at greedy: "Paris"; and with the default repetition penalty (1.0), 2 + 2 is 4 (the old default, 1.1,
    punished every token of the question and the model rambled about "two and three")."""
    first, stats = generation.chat_reply(ASK, GREEDY, chat_model)
    assert "Paris" in first and stats.finish_reason in ("stop", "length")
    text, _ = generation.chat_reply([{"role": "user", "content": "What is 2+2? Answer with the number."}],
                                    GenerationParams(temperature=0, max_new_tokens=16), chat_model)
    assert "4" in text


def test_recorded_probabilities_leave_the_reply_unchanged_and_explain_each_token(loaded):
    """The "show probabilities" view: each new token with the probability it was drawn with and the model's own
    likeliest tokens; recording changes nothing in what is drawn."""
    params = GenerationParams(temperature=0.9, top_k=20, top_p=0.9, max_new_tokens=12, seed=11)
    plain = generation.stream_chat(ASK, params, loaded)
    text = "".join(plain)
    shown = generation.stream_chat(ASK, params, loaded, alternatives=4)
    assert "".join(shown) == text and plain.choices == []
    choices = shown.choices
    assert len(choices) == shown.stats.new_tokens > 0
    tokenizer = loaded.tokenizer
    assert tokenizer.decode([c.token_id for c in choices], skip_special_tokens=True) == text
    for choice in choices:
        assert len(choice.alternatives) == 4 and 0 < choice.prob <= 1 and 0 < choice.model_prob < 1
        probs = [p for _, _, p in choice.alternatives]
        assert probs == sorted(probs, reverse=True)  # the model's likeliest first
        assert choice.model_prob <= probs[0] + 1e-6
        in_top = [p for i, _, p in choice.alternatives if i == choice.token_id]
        assert not in_top or abs(in_top[0] - choice.model_prob) < 1e-5


def test_greedy_choices_are_the_models_top_token_drawn_for_sure(loaded):
    stream = generation.stream_chat(ASK, GREEDY, loaded, alternatives=3)
    list(stream)
    assert stream.choices and all(c.prob == 1.0 and c.token_id == c.alternatives[0][0] for c in stream.choices)


def test_a_reply_continued_from_its_own_start_is_the_same_reply(loaded):
    """reply_prefix: greedy decoding from the reply's first tokens gives the rest of that reply; from another token
    it goes elsewhere, its text starting with the kept part."""
    first = generation.stream_chat(ASK, GREEDY, loaded, alternatives=3)
    text = "".join(first)
    ids = [c.token_id for c in first.choices]
    assert len(ids) > 6
    rest = dataclasses.replace(GREEDY, max_new_tokens=len(ids) - 4)  # max_new_tokens counts new tokens only
    again = generation.stream_chat(ASK, rest, loaded, alternatives=3, reply_prefix=ids[:4])
    assert "".join(again) == text
    assert again.stats.new_tokens == len(ids) - 4 and len(again.choices) == len(ids) - 4
    other = first.choices[4].alternatives[1][0]  # the model's second choice at token 5
    turned = generation.stream_chat(ASK, GREEDY, loaded, reply_prefix=ids[:4] + [other])
    kept = loaded.tokenizer.decode(ids[:4] + [other], skip_special_tokens=True)
    reply = "".join(turned)
    assert reply.startswith(kept) and reply != text
    assert "".join(turned) == "" and turned.text == reply  # a stream read to its end reads as empty, not for ever


def test_bad_probability_requests_are_clear_errors(tiny_chat):
    with pytest.raises(ValueError, match="alternatives must be between 0 and 10"):
        generation.stream_chat(ASK, GREEDY, tiny_chat, alternatives=11)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        generation.stream_chat(ASK, GREEDY, tiny_chat, reply_prefix=[10**9])
