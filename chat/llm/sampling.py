"""The one sampler: how the next token is picked from a row of logits.

Repetition penalty, then greedy or temperature, top-k, top-p and a draw, exactly as transformers' logits processors
define them (RepetitionPenalty, Temperature, TopK, TopP, in generate's order; a test compares them). The serving
engine, the plain `generate` path (through `SamplerProcessor`), the next-token view's shaped bars and Tiny GPT all
use it. Every draw comes from the request's own `torch.Generator`, never torch's global one, which every thread
shares (a seed set there is moved on by whoever samples next).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import LogitsProcessor

from chat.llm.params import GenerationParams


def sampling_generator(seed: int | None) -> torch.Generator:
    """This request's own random stream: seeded, or from fresh OS entropy."""
    generator = torch.Generator()
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(seed)
    return generator


def penalize(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """transformers' RepetitionPenaltyLogitsProcessor for one row: logits (V,), seen (n,) ids; in place."""
    scores = logits.gather(0, seen)
    logits.scatter_(0, seen, torch.where(scores < 0, scores * penalty, scores / penalty))
    return logits


def distribution(logits: torch.Tensor, params: GenerationParams,
                 seen: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The tokens a draw can pick from one row of logits (V,) float32 (modified in place), and their probabilities.

    Top-k keeps every token scoring at least the k-th highest (ties stay, as in transformers); top-p drops the least
    likely tokens while their probabilities add up to at most 1 - top_p, always keeping one. Greedy (temperature 0)
    is the one most likely token. The candidates are found with torch.topk first, so a large vocabulary is sorted
    only for top-p without top-k."""
    if params.repetition_penalty != 1.0 and seen is not None and seen.numel():
        penalize(logits, seen, params.repetition_penalty)
    if params.temperature <= 0:
        return logits.argmax().view(1), torch.ones(1)
    scores = logits / params.temperature if params.temperature != 1.0 else logits
    vocab = scores.shape[0]
    if 0 < params.top_k < vocab:
        kth = torch.topk(scores, params.top_k).values[-1]
        candidates = (scores >= kth).nonzero().squeeze(1)
        values = scores[candidates]
    else:
        candidates, values = torch.arange(vocab), scores
    if params.top_p < 1.0:
        ascending, order = values.sort()
        removed = ascending.softmax(dim=-1).cumsum(dim=-1) <= 1 - params.top_p
        removed[-1] = False  # min_tokens_to_keep = 1
        keep = order[~removed]
        candidates, values = candidates[keep], values[keep]
    return candidates, torch.softmax(values, dim=-1)


def probabilities(logits: torch.Tensor, params: GenerationParams) -> torch.Tensor:
    """The whole distribution (V,) a draw follows: `distribution`'s probabilities, zero elsewhere."""
    candidates, probs = distribution(logits.float().clone(), params)
    return torch.zeros(logits.shape[0]).scatter_(0, candidates, probs)


def draw(logits: torch.Tensor, params: GenerationParams, generator: torch.Generator | None,
         seen: torch.Tensor | None = None) -> tuple[int, float]:
    """The next token and the probability it was drawn with: greedy (1.0), or one draw with `generator` from
    `distribution` (logits are modified in place)."""
    candidates, probs = distribution(logits, params, seen)
    if candidates.numel() == 1:
        return int(candidates[0]), 1.0
    index = int(torch.multinomial(probs, 1, generator=generator))
    return int(candidates[index]), float(probs[index])


def choose(logits: torch.Tensor, params: GenerationParams, generator: torch.Generator | None,
           seen: torch.Tensor | None = None) -> int:
    """The next token: greedy, or one draw with `generator` from `distribution` (logits are modified in place)."""
    return draw(logits, params, generator, seen)[0]


@dataclass(frozen=True)
class TokenChoice:
    """One token of a reply as it was chosen: what the "show probabilities" view colours and explains."""

    token_id: int | None  # None for a server's token (it sends text)
    text: str  # the token's text ("" for the byte pieces of a character; `label` then shows the bytes)
    prob: float  # the probability it was drawn with (after temperature, top-k, top-p; 1.0 when greedy)
    model_prob: float  # the model's own probability for it (the raw distribution)
    alternatives: tuple[tuple[int | None, str, float], ...]  # the model's most likely tokens there: (id, text, prob)


def top_alternatives(logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's own distribution for one row: (all probabilities (V,), the ids of its k most likely tokens)."""
    probs = torch.softmax(logits.float(), dim=-1)
    return probs, torch.topk(probs, k).indices


class SamplerProcessor(LogitsProcessor):
    """The sampler inside transformers' `generate` (run with do_sample=False): each row's next token is chosen by
    `choose` with this request's generator, and only that token is left possible, so generate's greedy pick takes
    it (generate has no generator argument). The repetition penalty looks at the row's ids, prompt included."""

    def __init__(self, params: GenerationParams, generator: torch.Generator | None = None,
                 record: list | None = None, alternatives: int = 5):
        self.params = params
        self.generator = generator if generator is not None else sampling_generator(params.seed)
        self.record, self.alternatives = record, alternatives  # record: (token, prob, model probs, top ids) per step

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        chosen = []
        for ids, row in zip(input_ids, scores):
            if self.record is not None:
                model, top = top_alternatives(row, self.alternatives)
            token, prob = draw(row.float().clone(), self.params, self.generator, ids)
            chosen.append(token)
            if self.record is not None:
                self.record.append((token, prob, float(model[token]), [(int(i), float(model[i])) for i in top]))
        out = torch.full_like(scores, float("-inf"))
        out[torch.arange(len(chosen)), torch.tensor(chosen)] = 0.0
        return out
