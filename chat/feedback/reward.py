"""The reward model of RLHF: a score for (prompt, answer) learned from which of two answers people preferred.

InstructGPT trains a reward model on human rankings with the Bradley–Terry loss
    loss = -log σ(r(prompt, chosen) - r(prompt, rejected))
and then optimises the chat model against it. Here r is a linear head on the frozen chat model's own features:
the residual stream after layer 9 of 30, averaged over the answer's tokens and standardised (`FEATURE_LAYER`; the
forward pass stops there, so a score costs a third of a forward pass). It is
fit in well under a second (L-BFGS, L2-regularised) on a few dozen pairs, where TRL's RewardTrainer (a LoRA
sequence-classification model) took minutes on 2 cores for the same held-out accuracy (docs/feedback.md).

`best_of_n` is "alignment without training": sample n answers, keep the one the reward model scores highest.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from chat.llm.prompt import conversation

FEATURE_LAYER = 0.3  # which layer's residual stream, as a fraction of the depth (layer 9 of 30; docs/feedback.md)
L2 = 1e-2  # weight decay of the head: a few dozen pairs, 576 features


@dataclass
class RewardModel:
    """r(prompt, answer) = w · (h - mean) / std, h = the answer's mean hidden state at layer `layer`."""

    weight: torch.Tensor  # (hidden,)
    mean: torch.Tensor  # (hidden,) feature standardisation, from the training answers
    std: torch.Tensor  # (hidden,)
    layer: int
    system: str  # the system prompt the answers were rendered with
    train_accuracy: float
    pairs: int  # training pairs

    def score_features(self, features: torch.Tensor) -> torch.Tensor:
        return ((features - self.mean) / self.std) @ self.weight


def _render(tokenizer, prompt: str, answer: str, system: str) -> tuple[list[int], int]:
    """Token ids of the whole exchange and where the answer starts (the chat template, as the model reads it)."""
    messages = conversation(prompt, system)
    head = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template(messages + [{"role": "assistant", "content": answer}], tokenize=False)
    head_ids = tokenizer(head, add_special_tokens=False)["input_ids"]
    full_ids = tokenizer(full, add_special_tokens=False)["input_ids"]
    return full_ids, len(head_ids)


@torch.inference_mode()
def features(model, tokenizer, items: list[tuple[str, str]], system: str = "", layer: int | None = None,
             batch_size: int = 8) -> torch.Tensor:
    """(len(items), hidden): each (prompt, answer)'s mean residual stream over the answer's tokens at `layer`."""
    layer = layer if layer is not None else feature_layer(model)
    rendered = [_render(tokenizer, p, a, system) for p, a in items]
    out = []
    for start in range(0, len(rendered), batch_size):
        chunk = rendered[start:start + batch_size]
        width = max(len(ids) for ids, _ in chunk)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        answer = torch.zeros((len(chunk), width), dtype=torch.bool)
        for row, (tokens, head) in enumerate(chunk):  # right padding: positions stay those of the real text
            ids[row, :len(tokens)] = torch.tensor(tokens)
            mask[row, :len(tokens)] = 1
            answer[row, head:len(tokens)] = True
        hidden = _residual_stream(model, layer, ids.to(model.device), mask.to(model.device)).float().cpu()  # (B, T, d)
        weights = answer.float().unsqueeze(-1)
        out.append((hidden * weights).sum(1) / weights.sum(1).clamp_min(1))
    return torch.cat(out)


class _Enough(Exception):
    """Raised by a forward hook once the wanted layer has run: the layers above it are not needed."""


def _residual_stream(model, layer: int, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The hidden states after `layer` blocks (hidden_states[layer] of a full pass), running only those blocks."""
    found = {}

    def keep(module, args, output):
        found["hidden"] = output[0] if isinstance(output, tuple) else output
        raise _Enough

    handle = _decoder_layers(model)[layer - 1].register_forward_hook(keep)
    try:
        model(input_ids=ids, attention_mask=mask, use_cache=False)
    except _Enough:
        pass
    finally:
        handle.remove()
    return found["hidden"]


def _decoder_layers(model) -> torch.nn.ModuleList:
    body = model.get_base_model() if hasattr(model, "get_base_model") else model
    return body.model.layers


def feature_layer(model) -> int:
    layers = int(model.config.num_hidden_layers)
    return max(1, min(layers, round(FEATURE_LAYER * layers)))


def fit(model, tokenizer, pairs: list[tuple[str, str, str]], system: str = "") -> RewardModel:
    """Fit the head on (prompt, chosen, rejected) pairs with the Bradley–Terry loss."""
    layer = feature_layer(model)
    chosen = features(model, tokenizer, [(p, c) for p, c, _ in pairs], system, layer)
    rejected = features(model, tokenizer, [(p, r) for p, _, r in pairs], system, layer)
    weight, mean, std, accuracy = fit_head(chosen, rejected)
    return RewardModel(weight, mean, std, layer, system, accuracy, len(pairs))


def fit_head(chosen: torch.Tensor, rejected: torch.Tensor, l2: float = L2
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """The Bradley–Terry fit on any features: chosen and rejected (pairs, d) → (weight (d,), mean (d,), std (d,),
    training accuracy), r(h) = weight · (h - mean) / std. Tiny GPT's reward model uses it on its own features."""
    both = torch.cat([chosen, rejected])
    mean, std = both.mean(0), both.std(0).clamp_min(1e-4)
    diff = (chosen - rejected) / std  # (pairs, hidden): the mean cancels in a difference
    weight = torch.zeros(diff.shape[1], requires_grad=True)
    optimizer = torch.optim.LBFGS([weight], lr=1.0, max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.softplus(-(diff @ weight)).mean() + l2 * weight.square().sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    weight = weight.detach()
    accuracy = float(((diff @ weight) > 0).float().mean())
    return weight, mean, std, accuracy


def scores(reward: RewardModel, model, tokenizer, items: list[tuple[str, str]]) -> list[float]:
    """The reward of each (prompt, answer)."""
    if not items:
        return []
    found = features(model, tokenizer, items, reward.system, reward.layer)
    return [round(float(s), 3) for s in reward.score_features(found)]


def accuracy(reward: RewardModel, model, tokenizer, pairs: list[tuple[str, str, str]]) -> float:
    """How often the reward model ranks chosen above rejected (held-out pairs)."""
    if not pairs:
        return math.nan
    chosen = scores(reward, model, tokenizer, [(p, c) for p, c, _ in pairs])
    rejected = scores(reward, model, tokenizer, [(p, r) for p, _, r in pairs])
    return sum(c > r for c, r in zip(chosen, rejected)) / len(pairs)
