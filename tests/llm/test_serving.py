"""chat.llm.serving on a random tiny Llama (the real model's shapes scaled down) with the real C++ kernels: batched
steps give every sequence exactly what it gets alone, requests join and leave at step boundaries, prompts are read in
chunks, stop frees a slot, seeds are per request, and the line is bounded."""
from __future__ import annotations

import threading
import time

import pytest
import torch

from chat.llm import serving
from chat.llm.fastpath import decoder as fast, kernels as blocks
from chat.llm.params import GenerationParams
from tests.conftest import tiny_llama

VOCAB = 512


@pytest.fixture(scope="module")
def tiny_model():
    """A random 2-layer Llama shaped like SmolLM2 (tests/conftest.py), with a small vocabulary."""
    model = tiny_llama(VOCAB)
    assert fast.supported(model) is None
    return model


@pytest.fixture(scope="module")
def decoder(tiny_model, kernels):
    """The decoder with the C++ kernels, op by op (the compiled package computes the same)."""
    return fast.eager_decoder(tiny_model, kernels=True)


def engine(decoder, **options) -> serving.Engine:
    return serving.Engine(decoder, context=1024, config=serving.ServingConfig(**options))


def prompt(seed: int, length: int) -> list[int]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, VOCAB, (length,), generator=g).tolist()


GREEDY = serving.GREEDY


def alone(decoder, ids: list[int], new: int, sampling: GenerationParams = GREEDY) -> list[int]:
    run = engine(decoder)
    try:
        return list(run.submit(ids, new, sampling))
    finally:
        run.close()


def test_the_kernels_give_a_row_the_same_bits_alone_or_in_any_batch(kernels):
    torch.manual_seed(0)
    for pack in (blocks.pack_q4, blocks.pack_q8):
        packed = pack(torch.randn(96, 128))
        x = torch.randn(19, 128)
        together = blocks.linear(x, packed)
        expected = x @ blocks.dequantize(packed).T
        assert (together - expected).abs().max() < 1e-4 * expected.abs().max()
        for r in range(19):
            assert torch.equal(blocks.linear(x[r], packed), together[r])
            assert torch.equal(blocks.linear(x[max(0, r - 10): r + 1], packed)[-1], together[r])


def test_the_kernel_step_matches_plain_pytorch_and_chunking_changes_no_bit(tiny_model, decoder):
    ids, continuation = prompt(1, 40), prompt(2, 6)
    plain = fast.eager_decoder(tiny_model).next_token_logits(ids, continuation)
    with torch.inference_mode():
        reference = tiny_model(input_ids=torch.tensor([ids + continuation])).logits[0, len(ids) - 1:-1]
    kernel = decoder.next_token_logits(ids, continuation)
    assert torch.allclose(plain, reference, atol=1e-4)
    assert torch.allclose(kernel, reference, atol=2e-3 * reference.abs().max())
    for chunk in (1, 7, 64):
        assert torch.equal(decoder.next_token_logits(ids, continuation, chunk=chunk), kernel)


def test_batched_greedy_replies_equal_each_sequence_alone(decoder):
    prompts = [prompt(10 + i, 5 + 9 * i) for i in range(6)]
    expected = [alone(decoder, p, 12) for p in prompts]
    run = engine(decoder, max_batch=4, prompt_tokens_per_step=8)
    try:
        requests = [run.submit(p, 12) for p in prompts]  # 6 requests, 4 slots: two wait and join later
        got = [list(r) for r in requests]
        assert got == expected
        assert all(r.finish_reason == "length" for r in requests)
        assert run.stats.rows > run.stats.steps  # steps really carried several sequences
    finally:
        run.close()


def test_requests_join_the_running_batch_at_the_next_step(decoder):
    run = engine(decoder, max_batch=2)
    try:
        first = run.submit(prompt(3, 8), 200)
        tokens = iter(first)
        next(tokens)
        second = run.submit(prompt(4, 8), 3)
        assert list(second) == alone(decoder, prompt(4, 8), 3)
        assert not first.finished  # the second one came and went while the first kept writing
        first.stop()
        list(tokens)
        assert first.finish_reason == "cancelled"
    finally:
        run.close()


def test_stop_ends_a_reply_within_a_step_and_frees_its_slot(decoder):
    run = engine(decoder, max_batch=1, max_waiting=1)
    try:
        writing = run.submit(prompt(5, 10), 1000)
        tokens = iter(writing)
        next(tokens)
        waiting = run.submit(prompt(6, 10), 4)
        assert waiting.place == 1 and run.running == 1
        writing.stop()
        rest = list(tokens)
        assert writing.finish_reason == "cancelled" and len(rest) <= 2  # at most the step already under way
        assert list(waiting) == alone(decoder, prompt(6, 10), 4)  # it got the freed slot
        assert run.running == 0 and run.alive  # one engine thread, idle: no worker per request left behind
    finally:
        run.close()
    assert not run.alive


def test_a_full_line_says_busy_with_the_users_number(decoder):
    run = engine(decoder, max_batch=1, max_waiting=2)
    try:
        requests = [run.submit(prompt(7 + i, 6), 500) for i in range(3)]
        assert [r.place for r in requests] == [None, 1, 2]
        with pytest.raises(serving.Busy, match="number 3 in line") as busy:
            run.submit(prompt(20, 6), 5)
        assert busy.value.place == 3 and run.stats.busy_refusals == 1
        requests[1].stop()  # someone leaves the line: the others move up
        time.sleep(0.2)
        assert requests[2].place == 1
        for r in requests:
            r.stop()
    finally:
        run.close()


def test_seeded_sampling_is_the_same_whoever_else_is_served(decoder):
    sampling = GenerationParams(temperature=1.0, top_k=40, top_p=0.9, repetition_penalty=1.2, seed=1234)
    ids = prompt(8, 12)
    expected = alone(decoder, ids, 16, sampling)
    run = engine(decoder)
    try:
        others = [run.submit(prompt(30 + i, 7 + i), 30, GenerationParams(temperature=1.3, seed=i)) for i in range(3)]
        again = run.submit(ids, 16, sampling)
        unseeded = run.submit(ids, 16, GenerationParams(temperature=1.0))
        assert list(again) == expected
        for r in (*others, unseeded):
            list(r)
    finally:
        run.close()
    assert alone(decoder, ids, 16, sampling) == expected
    assert torch.initial_seed() != 1234  # the process-wide generator was never seeded by a request


def test_a_long_prompt_is_read_in_chunks_while_the_others_keep_writing(decoder):
    run = engine(decoder, max_batch=4, prompt_tokens_per_step=16)
    try:
        writers = [run.submit(prompt(40 + i, 6), 300) for i in range(2)]
        streams = [iter(w) for w in writers]
        for s in streams:
            next(s)
        long = run.submit(prompt(50, 700), 2)
        written_meanwhile = 0
        while not long.generated:
            for s in streams:
                next(s)
            written_meanwhile += 1
        assert written_meanwhile >= 700 // 16 - 2  # a token for each writer at (nearly) every prompt chunk
        for w in writers:
            w.stop()
        assert list(long) == alone(decoder, prompt(50, 700), 2)
    finally:
        run.close()


def test_a_short_prompt_is_not_stuck_behind_a_long_one(decoder):
    run = engine(decoder, max_batch=4, prompt_tokens_per_step=32, prompt_tokens_alone=32)
    try:
        long = run.submit(prompt(60, 900), 1)  # ~28 steps of prompt
        while long.done == 0:  # it is being read
            time.sleep(0.001)
        short = run.submit(prompt(61, 10), 1)
        list(short)
        assert not long.finished  # the short one had its share of every step's prompt budget
        list(long)
    finally:
        run.close()


def test_a_kept_prefix_is_reused_and_gives_the_same_numbers(decoder):
    run = engine(decoder)
    try:
        ids = prompt(70, 50)
        first = run.logits(ids)
        before = run.stats.reused_tokens
        grown = run.logits(ids + [7])
        assert run.stats.reused_tokens - before == 50
        assert torch.equal(first, run.logits(ids))
    finally:
        run.close()
    fresh = engine(decoder)
    try:
        assert torch.equal(fresh.logits(ids + [7]), grown)
    finally:
        fresh.close()


def test_a_start_held_by_a_busy_slot_is_copied_and_gives_the_same_reply(decoder):
    system = prompt(71, 30)  # the system prompt every chat of a class begins with
    first_ids, second_ids = system + prompt(72, 6), system + prompt(73, 9)
    expected = alone(decoder, second_ids, 10)
    run = engine(decoder, max_batch=2)
    try:
        first = run.submit(first_ids, 200)
        tokens = iter(first)
        next(tokens)  # the first is writing: its slot is busy, it holds the system prompt
        second = run.submit(second_ids, 10)
        assert list(second) == expected
        assert run.stats.shared_tokens == 30  # copied, not computed again
        assert second.slot != first.slot
        first.stop()
        list(tokens)
    finally:
        run.close()


def test_kept_sequences_stay_within_their_budget(decoder):
    run = engine(decoder, max_batch=4, cached_tokens=100)
    try:
        for i in range(4):
            run.logits(prompt(80 + i, 60))
        assert sum(len(s.tokens) for s in run.slots) <= 100
    finally:
        run.close()


def test_a_reply_longer_than_the_context_is_refused_before_it_starts(decoder):
    run = engine(decoder)
    try:
        with pytest.raises(ValueError, match="context of 1024"):
            run.submit(prompt(90, 1000), 100)
        with pytest.raises(ValueError, match="empty"):
            run.submit([], 10)
        request = run.submit(prompt(91, 1000), 24)  # at the limit exactly: allowed, ends by length
        assert len(list(request)) == 24 and request.finish_reason == "length"
    finally:
        run.close()


def test_many_users_with_some_leaving_mid_reply_all_end_and_free_their_slots(decoder):
    run = engine(decoder, max_batch=4, max_waiting=12)
    try:
        requests = [run.submit(prompt(100 + i, 5 + i), 20) for i in range(16)]
        done = []

        def read(i, r):
            for n, _ in enumerate(r):
                if i % 4 == 0 and n == 3:  # every fourth user disconnects mid-stream
                    r.stop()
            done.append(r.finish_reason)

        threads = [threading.Thread(target=read, args=(i, r)) for i, r in enumerate(requests)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert sorted(done) == sorted(["cancelled"] * 4 + ["length"] * 12)
        assert run.running == 0 and not run.waiting
    finally:
        run.close()


def test_busy_is_a_budget_error_whose_message_gives_the_users_number():
    from chat import budget
    from chat.settings import ModelSettings
    from chat.ui import limits

    error = serving.Busy(place=3, waiting_limit=16, running=8)
    assert isinstance(error, budget.BusyError) and "number 3 in line" in str(error)
    assert "number 3 in line" in limits.busy(None, error).message
    settings = ModelSettings()  # the queue lets every place of the engine in: writing + in line
    assert budget.limit("chat") == settings.max_batch + settings.max_waiting
