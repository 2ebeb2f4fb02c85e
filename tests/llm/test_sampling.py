"""chat.llm.sampling: the one sampler, checked against transformers' own logits processors (RepetitionPenalty,
Temperature, TopK, TopP in generate's order) and against generate itself."""
from __future__ import annotations

import pytest
import torch

from chat.llm import sampling
from chat.llm.params import GenerationParams


@pytest.mark.parametrize("settings", [
    dict(temperature=0.7, top_k=50, top_p=0.9, repetition_penalty=1.1),
    dict(temperature=1.0, top_k=0, top_p=0.8, repetition_penalty=1.0),
    dict(temperature=1.3, top_k=5, top_p=1.0, repetition_penalty=1.3),
    dict(temperature=0.5, top_k=0, top_p=1.0, repetition_penalty=0.9),
])
def test_the_sampling_distribution_is_transformers_processors(settings):
    from transformers import (LogitsProcessorList, RepetitionPenaltyLogitsProcessor, TemperatureLogitsWarper,
                              TopKLogitsWarper, TopPLogitsWarper)

    torch.manual_seed(0)
    logits = torch.randn(1, 1000) * 4
    seen = torch.randint(0, 1000, (30,))
    chain = LogitsProcessorList([RepetitionPenaltyLogitsProcessor(settings["repetition_penalty"]),
                                 TemperatureLogitsWarper(settings["temperature"])])
    if settings["top_k"]:
        chain.append(TopKLogitsWarper(settings["top_k"]))
    if settings["top_p"] < 1:
        chain.append(TopPLogitsWarper(settings["top_p"]))
    expected = torch.softmax(chain(seen[None], logits.clone()), dim=-1)[0]
    candidates, probs = sampling.distribution(logits[0].clone(), GenerationParams(**settings), seen)
    got = torch.zeros(1000).index_put_((candidates,), probs)
    assert set(candidates.tolist()) == set(expected.nonzero().squeeze(1).tolist())
    assert torch.allclose(got, expected, atol=1e-6)


def test_greedy_takes_the_top_token_after_the_repetition_penalty():
    logits = torch.tensor([2.0, 1.0, 0.5, 3.0])
    seen = torch.tensor([3])
    greedy = GenerationParams(temperature=0, repetition_penalty=2.0)
    assert sampling.choose(logits.clone(), greedy, None, seen) == 0  # token 3 was seen: 3.0 / 2 = 1.5 < 2.0
    top1 = GenerationParams(temperature=1.0, top_k=1, repetition_penalty=1.0)
    assert {sampling.choose(logits.clone(), top1, torch.Generator()) for _ in range(20)} == {3}


def test_the_whole_distribution_sums_to_one_and_greedy_is_one_token():
    logits = torch.randn(500, generator=torch.Generator().manual_seed(1))
    shaped = sampling.probabilities(logits, GenerationParams(temperature=0.8, top_k=30, top_p=0.9))
    assert shaped.sum() == pytest.approx(1.0) and (shaped > 0).sum() <= 30
    greedy = sampling.probabilities(logits, GenerationParams(temperature=0))
    assert greedy.max() == 1.0 and int(greedy.argmax()) == int(logits.argmax())


def test_a_seeded_draw_follows_the_seed_and_leaves_torchs_generator_alone():
    logits = torch.randn(1000, generator=torch.Generator().manual_seed(2))
    params = GenerationParams(temperature=1.0, top_k=0, top_p=1.0, seed=42)
    draws = [[sampling.choose(logits.clone(), params, generator) for _ in range(5)]
             for generator in (sampling.sampling_generator(42), sampling.sampling_generator(42))]
    before = torch.random.get_rng_state()
    assert draws[0] == draws[1] and len(set(draws[0])) > 1
    sampling.choose(logits.clone(), params, sampling.sampling_generator(None))
    assert torch.equal(torch.random.get_rng_state(), before)


def test_generate_with_the_sampler_processor_draws_what_the_sampler_draws(tiny_chat):
    """transformers' generate, its next token chosen by SamplerProcessor (the plain chat path), picks exactly the
    tokens `choose` picks from the same logits with the same seed."""
    from transformers import LogitsProcessorList

    model, ids = tiny_chat.model, torch.tensor([[1, 200, 300, 400]])
    params = GenerationParams(temperature=0.9, top_k=40, top_p=0.95, repetition_penalty=1.3, seed=11)
    with torch.inference_mode():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=6, do_sample=False,
                             logits_processor=LogitsProcessorList([sampling.SamplerProcessor(params)]),
                             temperature=None, top_p=None, top_k=None, pad_token_id=2)
        generator, tokens = sampling.sampling_generator(11), ids[0].tolist()
        for _ in range(6):
            logits = model(input_ids=torch.tensor([tokens])).logits[0, -1].float()
            tokens.append(sampling.choose(logits, params, generator, torch.tensor(tokens)))
    assert out[0].tolist() == tokens
