"""chat.llm.fastpath: Q4_1 / Q8_0 blocks that hold the weights exactly, C++ kernels that compute the dense product,
a batched step that gives each sequence its own logits, chat on the decoder (stop, sampling, stats), and every way
the fast path can be unavailable falling back to the plain one. On a tiny random Llama whose weights are stored as
the GGUF stores SmolLM2's; then on the real weights, and the compiled (AOTInductor) package."""
from __future__ import annotations

import dataclasses
import threading
from concurrent.futures import Future

import pytest
import torch

from chat.llm import generation, models, serving
from chat.llm.fastpath import decoder as fast, kernels as blocks, package, quality
from chat.llm.next_token import LocalSession
from chat.llm.params import GenerationParams
from chat.llm.prompt import build_prompt

ASK = [{"role": "user", "content": "What is the capital of France?"}]


def test_packing_finds_the_blocks_bit_for_bit(tiny_chat):
    """Every matrix stored as GGUF blocks (Q4_1 layers, Q8_0 embedding) re-packs to exactly its fp32 weights."""
    model = tiny_chat.model.model
    embed = model.embed_tokens.weight
    assert torch.equal(blocks.dequantize(blocks.pack_q8(embed)), embed)
    for layer in model.layers:
        for linear in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj, layer.self_attn.o_proj,
                       layer.mlp.gate_proj, layer.mlp.up_proj, layer.mlp.down_proj):
            assert torch.equal(blocks.dequantize(blocks.pack_q4(linear.weight)), linear.weight)
    packed = blocks.pack_q8(embed)
    rows = torch.tensor([0, 17, embed.shape[0] - 1])
    assert torch.equal(blocks.dequantize(packed, rows), embed[rows])
    assert packed["codes"].dtype == torch.int8 and blocks.pack_q4(embed)["codes"].shape == (embed.shape[0], 2, 16)


def test_the_kernels_compute_the_dense_product(kernels):
    generator = torch.Generator().manual_seed(0)
    for shape, pack in (((576, 1536), blocks.pack_q4), ((1536, 576), blocks.pack_q4), ((4096, 576), blocks.pack_q8)):
        weight = torch.randn(shape, generator=generator) * 0.05
        packed = pack(weight)
        weight = blocks.dequantize(packed)
        for rows in (1, 3, 8):
            x = torch.randn(rows, shape[1], generator=generator)
            x[:, :32] = 0  # an all-zero block (its scale is 0)
            expected = torch.nn.functional.linear(x, weight)
            got = blocks.linear(x, packed)
            assert got.shape == expected.shape
            # x is rounded to int16 with one scale per row; Q4_1's min term cancels most of the codes' sum
            assert (got - expected).abs().max() <= 3e-4 * expected.abs().max()
    with pytest.raises(RuntimeError, match="columns"):
        blocks.linear(torch.randn(100), blocks.pack_q4(torch.randn(64, 576)))


def test_the_decoder_step_gives_the_plain_models_logits(tiny_chat, tiny_fast_chat):
    ids = build_prompt(tiny_chat, ASK, 16).ids
    continuation = [504, 3575, 282, 4649, 314]
    with torch.inference_mode():
        plain = tiny_chat.model(input_ids=torch.tensor([ids + continuation])).logits[0, len(ids) - 1:-1]
    for decoder, tolerance in ((fast.eager_decoder(tiny_chat.model), 1e-4), (tiny_fast_chat.fast, 5e-3)):
        got = decoder.next_token_logits(ids, continuation)
        assert got.shape == plain.shape and torch.equal(got.argmax(-1), plain.argmax(-1))
        assert (got - plain).abs().max() <= tolerance * plain.abs().max()


def test_a_batch_of_sequences_gets_each_ones_logits_alone(tiny_chat, tiny_fast_chat):
    """Six prompts teacher-forced along the plain model's greedy replies, all in one step of the batched decoder
    (the C++ kernels the compiled step calls): each sequence's logits are bit for bit its own alone, and their top-1
    agrees with the plain transformers model's."""
    decoder = tiny_fast_chat.fast
    sequences = quality.greedy_continuations(tiny_chat.model, tiny_chat.tokenizer, quality.QUALITY_PROMPTS[:6], 24)
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


def test_a_prompt_chunk_computes_only_its_last_rows_logits(tiny_fast_chat):
    """All T rows of logits are (T, vocab) floats: 1.6 GB for an 8k prompt of SmolLM2; a chunk computes the rows
    asked for."""
    decoder = tiny_fast_chat.fast
    logits = decoder.forward(decoder.new_cache(1, 600), list(range(100, 700)), [0] * 600, list(range(600)), [599])
    vocab = tiny_fast_chat.model.config.vocab_size
    kept = logits.untyped_storage().nbytes()  # a number: pytest would print a storage's every byte
    assert logits.shape == (1, vocab) and kept == 4 * vocab


def test_a_failed_background_load_of_the_transformers_model_is_a_clear_error(tiny_chat):
    failed = Future()
    failed.set_exception(OSError("disk on fire"))
    with pytest.raises(models.ModelLoadError, match="disk on fire"):
        dataclasses.replace(tiny_chat, transformers_model=failed).model


def test_greedy_and_seeded_chat_on_the_fast_path_match_the_plain_path(tiny_chat, tiny_fast_chat):
    for params in (GenerationParams(temperature=0, max_new_tokens=12),
                   GenerationParams(temperature=1.0, top_p=0.9, top_k=40, max_new_tokens=6, repetition_penalty=1.2,
                                    seed=7)):
        fast_text, fast_stats = generation.chat_reply(ASK, params, tiny_fast_chat)
        plain_text, plain_stats = generation.chat_reply(ASK, params, tiny_chat)
        assert fast_text == plain_text == generation.chat_reply(ASK, params, tiny_fast_chat)[0]
        assert fast_stats.new_tokens == plain_stats.new_tokens and fast_stats.finish_reason == plain_stats.finish_reason
        assert fast_stats.ttft_s > 0 and fast_stats.prompt_tokens == plain_stats.prompt_tokens


def test_cancel_stops_the_fast_decoder_within_a_step(tiny_fast_chat):
    cancel = threading.Event()
    stream = generation.stream_chat([{"role": "user", "content": "Write a very long essay about the sea."}],
                                    GenerationParams(temperature=0, max_new_tokens=400), tiny_fast_chat, cancel)
    pieces = iter(stream)
    next(pieces)
    stream.cancel(wait=False)
    stream._worker.join(10)
    assert not stream._worker.is_alive()
    list(pieces)
    assert stream.stats.finish_reason == "cancelled" and stream.stats.new_tokens < 400
    engine = serving.engine_for(tiny_fast_chat)
    for _ in range(100):  # the engine frees the slot at its next step boundary
        if engine.running == 0:
            break
        threading.Event().wait(0.05)
    assert engine.running == 0 and not engine.waiting


def test_the_next_token_view_on_the_engine_ranks_like_the_plain_model(tiny_chat, tiny_fast_chat):
    sessions = [LocalSession("The capital of France is", loaded) for loaded in (tiny_fast_chat, tiny_chat)]
    top = [[c.token_id for c in s.candidates(k=5)] for s in sessions]
    assert top[0] == top[1]
    assert sessions[0].greedy() == sessions[1].greedy()
    sessions[0].undo()
    assert [c.token_id for c in sessions[0].candidates(k=5)] == top[1]


def test_the_fast_path_is_off_with_a_note_when_unsupported(tokenizer):
    from tests.conftest import tiny_llama

    model, notes = tiny_llama(len(tokenizer)), []
    assert package.prepare_decoder(model, torch.device("cuda"), notes.append) is None
    assert "CPU" in notes[-1] and "generate" in notes[-1]
    model.config.model_type = "gpt2"
    assert fast.supported(model) is not None
    assert package.prepare_decoder(model, torch.device("cpu"), notes.append) is None
    assert "gpt2" in notes[-1]


def test_a_failed_build_falls_back_to_the_plain_path_with_a_note(tiny_chat, monkeypatch, tmp_path):
    monkeypatch.setattr(package, "package_path", lambda model: tmp_path / "missing.pt2")

    def broken_build(model, target, progress):
        raise RuntimeError("no compiler today")

    monkeypatch.setattr(package, "build_package", broken_build)
    notes = []
    assert package.prepare_decoder(tiny_chat.model, torch.device("cpu"), notes.append) is None
    assert "no compiler today" in notes[-1] and "generate" in notes[-1]


def test_a_damaged_cached_package_is_removed_and_not_used(tiny_chat, kernels, monkeypatch, tmp_path):
    damaged = tmp_path / "damaged.pt2"
    damaged.write_bytes(b"not a zip file")
    monkeypatch.setattr(package, "package_path", lambda model: damaged)
    notes = []
    assert package.cached_decoder(tiny_chat.model, torch.device("cpu"), notes.append) is None
    assert not damaged.exists() and "does not load" in notes[-1]


def test_the_real_models_weights_are_its_ggufs_blocks_and_the_decoder_agrees_with_it(chat_model, kernels):
    model = chat_model.model.model
    assert torch.equal(blocks.dequantize(blocks.pack_q8(model.embed_tokens.weight)), model.embed_tokens.weight)
    for layer in model.layers:
        for linear in (layer.self_attn.q_proj, layer.mlp.down_proj):
            assert torch.equal(blocks.dequantize(blocks.pack_q4(linear.weight)), linear.weight)
    decoder = fast.eager_decoder(chat_model.model, kernels=True)
    agreement = quality.top1_agreement(chat_model.model, chat_model.tokenizer, decoder, quality.QUALITY_PROMPTS[:6],
                                       new_tokens=16)
    assert agreement >= 0.99


@pytest.mark.compile
def test_the_compiled_package_agrees_with_the_plain_model_and_a_fresh_load_chats_at_once(chat_model):
    """Builds the AOTInductor package into the test cache the first time (1-3 minutes on 2 cores), then loads it as a
    fresh start does: tokenizer and compiled decoder first, the transformers model in the background."""
    built = package.prepare_decoder(chat_model.model, torch.device("cpu"))
    assert built is not None and built.kind == "aoti" and package.package_path(chat_model.model).exists()
    ids = build_prompt(chat_model, ASK, 16).ids
    continuation = [504, 3575, 282, 4649, 314]  # "The capital of France is"
    eager = fast.eager_decoder(chat_model.model)
    got, expected = built.next_token_logits(ids, continuation), eager.next_token_logits(ids, continuation)
    # the kernels round x to int16 with one scale per row (and sum in another order): through 30 layers, ~0.3% of
    # the logits' scale (llama.cpp's int8 blocks move them ~25x more)
    assert (got - expected).abs().max() <= 5e-3 * expected.abs().max()
    assert quality.top1_agreement(chat_model.model, chat_model.tokenizer, built, new_tokens=16) >= 0.95
    loaded = models.load_model()
    assert loaded.fast is not None and loaded.fast.kind == "aoti" and loaded.stop_ids == chat_model.stop_ids
    params = GenerationParams(temperature=0, max_new_tokens=12)
    first, _ = generation.chat_reply(ASK, params, loaded)  # the model may still be loading: the engine needs the step
    assert isinstance(loaded.model, torch.nn.Module)
    second, _ = generation.chat_reply(ASK, params, loaded)  # the engine reuses the kept prompt
    assert first == second and "Paris" in first
