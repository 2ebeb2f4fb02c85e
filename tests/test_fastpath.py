"""chat.fastpath on the real SmolLM2 weights: the decoder agrees with the plain model, drives the chat stream (stop,
sampling, stats), and every way it can be unavailable falls back to the plain path. The compiled (AOTInductor)
package is built once into the test cache by the slow test at the end."""
from __future__ import annotations

import dataclasses
import threading

import pytest
import torch

from chat import fastpath, generation as g

ASK = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def eager(chat_model):
    """The fast decoder without compilation: the same weights and math as the package, in plain PyTorch."""
    return fastpath.eager_decoder(chat_model.model)


@pytest.fixture
def plain(chat_model):
    return dataclasses.replace(chat_model, fast=None)


def test_the_decoder_step_gives_the_plain_models_next_token_and_nearly_its_logits(chat_model, eager):
    ids = g.build_prompt(chat_model, ASK, 16).ids
    continuation = [504, 3575, 282, 4649, 314]  # "The capital of France is"
    fast_logits = eager.next_token_logits(ids, continuation)
    with torch.inference_mode():
        plain_logits = chat_model.model(input_ids=torch.tensor([ids + continuation])).logits[0, len(ids) - 1:-1]
    assert fast_logits.shape == plain_logits.shape == (5, chat_model.model.config.vocab_size)
    assert torch.equal(fast_logits.argmax(-1), plain_logits.argmax(-1))
    assert (fast_logits - plain_logits).abs().max() < 1e-3  # the same weights; logits range about +-25


def test_packing_finds_the_ggufs_own_blocks_bit_for_bit(chat_model):
    """Every matrix re-packed (Q4_1 layers, Q8_0 embedding) dequantizes to exactly the model's fp32 weights."""
    model = chat_model.model.model
    embed = model.embed_tokens.weight
    assert torch.equal(fastpath.dequantize(fastpath.pack_q8(embed)), embed)
    for layer in model.layers:
        for linear in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj, layer.self_attn.o_proj,
                       layer.mlp.gate_proj, layer.mlp.up_proj, layer.mlp.down_proj):
            assert torch.equal(fastpath.dequantize(fastpath.pack_q4(linear.weight)), linear.weight)
    packed = fastpath.pack_q8(embed)
    rows = torch.tensor([0, 17, embed.shape[0] - 1])
    assert torch.equal(fastpath.dequantize(packed, rows), embed[rows])
    assert packed["codes"].dtype == torch.int8 and fastpath.pack_q4(embed)["codes"].shape == (embed.shape[0], 18, 16)


def test_the_kernels_compute_the_dense_product(chat_model, kernels):
    torch.manual_seed(0)
    layer = chat_model.model.model.layers[0]
    for weight, pack in ((layer.mlp.down_proj.weight, fastpath.pack_q4), (layer.self_attn.q_proj.weight, fastpath.pack_q4),
                         (chat_model.model.model.embed_tokens.weight, fastpath.pack_q8)):
        packed = pack(weight)
        x = torch.randn(weight.shape[1])
        x[:32] = 0  # an all-zero block (its scale is 0)
        expected = torch.nn.functional.linear(x, weight)
        got = fastpath.linear(x, packed)
        assert got.shape == expected.shape
        # x is rounded to int16 with one scale per row; Q4_1's min term cancels most of the codes' sum: ~1e-4 here
        assert (got - expected).abs().max() <= 3e-4 * expected.abs().max()
    with pytest.raises(RuntimeError, match="columns"):
        fastpath.linear(torch.randn(100), fastpath.pack_q4(layer.mlp.down_proj.weight))


def test_a_batch_of_sequences_gets_each_ones_logits_alone_and_the_plain_models_top1(chat_model, kernels):
    """Six chat prompts teacher-forced along the plain model's greedy replies, all in one step of the batched
    decoder (the C++ kernels the compiled step calls): each sequence's logits are bit for bit its own alone, and
    their top-1 agrees with the plain transformers model's."""
    decoder = fastpath.eager_decoder(chat_model.model, kernels=True)
    sequences = []
    for text in fastpath.QUALITY_PROMPTS[:6]:
        ids = g.build_prompt(chat_model, [{"role": "user", "content": text}], 24).ids
        with torch.inference_mode():
            out = chat_model.model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids)).long(),
                                            max_new_tokens=24, do_sample=False, temperature=None, top_p=None,
                                            top_k=None, pad_token_id=chat_model.tokenizer.eos_token_id)
        sequences.append((ids, out[0, len(ids):].tolist()))
    tokens, slots, positions, wanted = [], [], [], []
    for slot, (ids, continuation) in enumerate(sequences):
        fed = ids + continuation[:-1]
        wanted += range(len(tokens) + len(ids) - 1, len(tokens) + len(fed))
        tokens += fed
        slots += [slot] * len(fed)
        positions += range(len(fed))
    batched = decoder.forward(decoder.new_cache(len(sequences), 256), tokens, slots, positions, wanted)
    alone = torch.cat([decoder.next_token_logits(ids, continuation) for ids, continuation in sequences])
    assert torch.equal(batched, alone)
    expected = [token for _, continuation in sequences for token in continuation]
    agreement = sum(int(a == b) for a, b in zip(batched.argmax(-1).tolist(), expected)) / len(expected)
    assert len(expected) >= 80 and agreement >= 0.99, (len(expected), agreement)


def test_a_failed_background_load_of_the_transformers_model_is_a_clear_error(chat_model):
    from concurrent.futures import Future

    from chat import models

    failed = Future()
    failed.set_exception(OSError("disk on fire"))
    with pytest.raises(models.ModelLoadError, match="disk on fire"):
        dataclasses.replace(chat_model, transformers_model=failed).model


def test_greedy_chat_on_the_fast_path_matches_the_plain_path(chat_model, eager, plain):
    fast = dataclasses.replace(chat_model, fast=eager)
    params = g.GenerationParams(temperature=0, max_new_tokens=12)
    fast_text, fast_stats = g.chat_reply(ASK, params, fast)
    plain_text, plain_stats = g.chat_reply(ASK, params, plain)
    assert fast_text == plain_text and "Paris" in fast_text
    assert fast_stats.new_tokens == plain_stats.new_tokens and fast_stats.finish_reason == plain_stats.finish_reason
    assert fast_stats.ttft_s > 0 and fast_stats.prompt_tokens == plain_stats.prompt_tokens


def test_seeded_sampling_on_the_fast_path_is_reproducible_and_length_is_reported(chat_model, eager):
    fast = dataclasses.replace(chat_model, fast=eager)
    params = g.GenerationParams(temperature=1.0, top_p=0.9, top_k=40, max_new_tokens=6, repetition_penalty=1.2,
                                seed=7)
    first, stats = g.chat_reply([{"role": "user", "content": "Tell me a long story."}], params, fast)
    second, _ = g.chat_reply([{"role": "user", "content": "Tell me a long story."}], params, fast)
    assert first == second and stats.finish_reason == "length" and stats.new_tokens == 6


def test_the_token_chooser_applies_transformers_processors_like_generate():
    logits = torch.tensor([[2.0, 1.0, 0.5, 3.0]])
    seen = torch.tensor([[3]])
    greedy = g._token_chooser(g.GenerationParams(temperature=0, repetition_penalty=2.0))
    assert greedy(seen, logits) == 0  # token 3 was seen: 3.0 / 2 = 1.5 < 2.0
    top1 = g._token_chooser(g.GenerationParams(temperature=1.0, top_k=1, repetition_penalty=1.0))
    assert {top1(seen, logits) for _ in range(20)} == {3}


def test_cancel_stops_the_fast_decoder_within_a_step(chat_model, eager):
    fast = dataclasses.replace(chat_model, fast=eager)
    cancel = threading.Event()
    stream = g.stream_chat([{"role": "user", "content": "Write a very long essay about the sea."}],
                           g.GenerationParams(temperature=0, max_new_tokens=500), fast, cancel)
    pieces = iter(stream)
    next(pieces)
    stream.cancel(wait=False)
    stream._worker.join(10)
    assert not stream._worker.is_alive()
    list(pieces)
    assert stream.stats.finish_reason == "cancelled" and stream.stats.new_tokens < 50
    from chat import serving

    engine = serving.engine_for(fast)
    for _ in range(100):  # the engine frees the slot at its next step boundary
        if engine.running == 0:
            break
        threading.Event().wait(0.05)
    assert engine.running == 0 and not engine.waiting


def test_the_next_token_view_on_the_engine_ranks_like_the_plain_model(chat_model, kernels, plain):
    fast = dataclasses.replace(chat_model, fast=fastpath.eager_decoder(chat_model.model, kernels=True))
    sessions = [g.NextTokenSession("The capital of France is", loaded) for loaded in (fast, plain)]
    top = [[c.token_id for c in s.candidates(k=5)] for s in sessions]
    assert top[0] == top[1]
    assert sessions[0].greedy() == sessions[1].greedy()
    sessions[0].undo()
    assert [c.token_id for c in sessions[0].candidates(k=5)] == top[1]


def test_the_fast_path_is_off_with_a_note_when_disabled_or_unsupported(chat_model, monkeypatch):
    notes = []
    monkeypatch.setenv("CHATLAB_FAST", "0")
    assert fastpath.prepare_decoder(chat_model.model, torch.device("cpu"), notes.append) is None
    assert "CHATLAB_FAST=0" in notes[-1] and "generate" in notes[-1]
    monkeypatch.delenv("CHATLAB_FAST")
    assert fastpath.prepare_decoder(chat_model.model, torch.device("cuda"), notes.append) is None
    assert "CPU" in notes[-1]
    monkeypatch.setattr(chat_model.model.config, "model_type", "gpt2")
    assert fastpath.supported(chat_model.model) is not None
    assert fastpath.prepare_decoder(chat_model.model, torch.device("cpu"), notes.append) is None
    assert "gpt2" in notes[-1]


def test_a_failed_build_falls_back_to_the_plain_path_with_a_note(chat_model, monkeypatch, tmp_path):
    monkeypatch.setattr(fastpath, "package_path", lambda model: tmp_path / "missing.pt2")

    def broken_build(model, target, progress):
        raise RuntimeError("no compiler today")

    monkeypatch.setattr(fastpath, "build_package", broken_build)
    notes = []
    assert fastpath.prepare_decoder(chat_model.model, torch.device("cpu"), notes.append) is None
    assert "no compiler today" in notes[-1] and "generate" in notes[-1]


def test_a_damaged_cached_package_is_removed_and_not_used(chat_model, kernels, monkeypatch, tmp_path):
    damaged = tmp_path / "damaged.pt2"
    damaged.write_bytes(b"not a zip file")
    monkeypatch.setattr(fastpath, "package_path", lambda model: damaged)
    notes = []
    assert fastpath.cached_decoder(chat_model.model, torch.device("cpu"), notes.append) is None
    assert not damaged.exists() and "does not load" in notes[-1]


@pytest.mark.slow
def test_the_compiled_package_agrees_with_the_plain_model_on_the_fixed_prompts(chat_model, eager):
    """Builds the AOTInductor package into the test cache the first time (1-3 minutes on 2 cores), then loads it."""
    fast = fastpath.prepare_decoder(chat_model.model, torch.device("cpu"))
    assert fast is not None and fast.kind == "aoti" and fastpath.package_path(chat_model.model).exists()
    ids = g.build_prompt(chat_model, ASK, 16).ids
    continuation = [504, 3575, 282, 4649, 314]
    got, expected = fast.next_token_logits(ids, continuation), eager.next_token_logits(ids, continuation)
    # the kernels round x to int16 with one scale per row (and sum in another order): through 30 layers, ~0.3% of
    # the logits' scale (0.083 here, on logits up to ~27; llama.cpp's int8 blocks move them by ~2)
    assert (got - expected).abs().max() <= 5e-3 * expected.abs().max()
    assert len(fastpath.QUALITY_PROMPTS) >= 20
    assert fastpath.top1_agreement(chat_model.model, chat_model.tokenizer, fast, new_tokens=16) >= 0.95


@pytest.mark.slow
def test_with_the_package_cached_a_fresh_load_chats_at_once_and_takes_the_model_when_it_arrives(chat_model):
    """load_model's quick path: tokenizer and compiled decoder first, the transformers model in the background."""
    from chat import models

    assert fastpath.package_path(chat_model.model).exists()  # built by the test above
    loaded = models.load_model()
    assert loaded.fast is not None and loaded.fast.kind == "aoti" and loaded.stop_ids == chat_model.stop_ids
    params = g.GenerationParams(temperature=0, max_new_tokens=12)
    first, _ = g.chat_reply(ASK, params, loaded)  # the model may still be loading: the engine needs only the step
    assert isinstance(loaded.model, torch.nn.Module)
    second, _ = g.chat_reply(ASK, params, loaded)  # the engine reuses the kept prompt
    assert first == second and "Paris" in first


# --- hardening (issue 15) -----------------------------------------------------------------------------------------


def test_a_prompt_chunk_computes_only_its_last_rows_logits(chat_model, kernels):
    """All T rows of logits are (T, 49,152) floats: 1.6 GB for an 8k prompt; a chunk computes the rows asked for."""
    decoder = fastpath.eager_decoder(chat_model.model, kernels=True)
    logits = decoder.forward(decoder.new_cache(1, 600), list(range(100, 700)), [0] * 600, list(range(600)), [599])
    vocab = chat_model.model.config.vocab_size
    kept = logits.untyped_storage().nbytes()  # a number: pytest would print a storage's every byte
    assert logits.shape == (1, vocab) and kept == 4 * vocab
