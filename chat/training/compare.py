"""Which stage did this? Two ways to compare a model before and after a training stage, for any transformers
causal LM (Tiny GPT's pretrain → SFT → RL, SmolLM2's Instruct → +SFT → +DPO).

- Token ranks (URIAL, Lin et al. 2023): run the earlier stage over the later stage's answer and ask, at each of its
  tokens, where that token ranked among the earlier stage's next-token candidates. Rank 1 ("unshifted": the earlier
  model would have written it too), 2–3 ("marginal"), above 3 ("shifted": what the stage changed). URIAL found
  5–8% shifted tokens between Llama-2/Mistral base and chat models: alignment changes few tokens, mostly style.
- A blind comparison, as InstructGPT's (people preferred it to GPT-3 71% of the time): two answers to one prompt, in
  hidden order; the user picks one; the later stage's win rate with a 95% Wilson interval.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

import torch

SHIFT_KINDS = ("unshifted", "marginal", "shifted")
Z95 = 1.959964  # the normal quantile of a two-sided 95% interval


def shift_kind(rank: int) -> str:
    """URIAL's token classes: rank 1 unshifted, 2–3 marginal, above 3 shifted."""
    return "unshifted" if rank <= 1 else "marginal" if rank <= 3 else "shifted"


def _context_limit(model) -> int | None:
    config = model.config
    return getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None)


@torch.inference_mode()
def token_ranks(model, prompt_ids: list[int], answer_ids: list[int]) -> list[int]:
    """Each answer token's rank among `model`'s next-token candidates, given the prompt and the answer before it
    (1 = the model's top choice; tied scores share the better rank). Longer than the model's context, the text is
    read in overlapping windows, every prediction seeing at least half a context."""
    if not answer_ids:
        return []
    if not prompt_ids:
        raise ValueError("token_ranks needs at least one prompt token before the answer")
    ids = torch.tensor(list(prompt_ids) + list(answer_ids), device=model.device)
    first, end = len(prompt_ids), len(ids)  # targets are ids[first:end]
    limit = _context_limit(model) or end
    ranks, target = [], first
    while target < end:
        start = 0 if end <= limit else max(0, min(target - limit // 2, end - limit))
        stop = min(start + limit, end)
        logits = model(input_ids=ids[None, start:stop]).logits[0].float()  # (stop - start, vocab)
        rows = logits[target - 1 - start:stop - 1 - start]  # predictions of ids[target:stop]
        chosen = ids[target:stop]
        scores = rows.gather(1, chosen[:, None])
        ranks += ((rows > scores).sum(1) + 1).tolist()
        target = stop
    return ranks


def shift_shares(ranks: list[int]) -> dict[str, float]:
    """The share of each kind of token (unshifted, marginal, shifted) among `ranks`."""
    total = len(ranks)
    counts = {kind: 0 for kind in SHIFT_KINDS}
    for rank in ranks:
        counts[shift_kind(rank)] += 1
    return {kind: counts[kind] / total if total else math.nan for kind in SHIFT_KINDS}


def wilson_interval(wins: float, total: int) -> tuple[float, float]:
    """The 95% Wilson score interval of a win rate (sound with few votes and near 0 or 1, unlike p ± 1.96·se)."""
    if total <= 0:
        return math.nan, math.nan
    p, z2 = wins / total, Z95 ** 2
    centre = (p + z2 / (2 * total)) / (1 + z2 / total)
    half = Z95 * math.sqrt(p * (1 - p) / total + z2 / (4 * total ** 2)) / (1 + z2 / total)
    return max(0.0, centre - half), min(1.0, centre + half)


# --- the blind comparison ----------------------------------------------------------------------------------------


@dataclass
class BlindPair:
    """Two answers to one prompt from consecutive stages; `later_first` (hidden) says which is shown first."""

    prompt: str
    earlier: str  # the earlier stage's answer
    later: str  # the later stage's answer
    later_first: bool
    judge_prefers_later: float | None = None  # a reward's verdict: 1, 0, or 0.5 for a tie; None when none
    picked_later: bool | None = None  # the user's verdict, once given

    @property
    def shown(self) -> tuple[str, str]:
        """The two answers as the user sees them: A, then B."""
        return (self.later, self.earlier) if self.later_first else (self.earlier, self.later)


@dataclass
class BlindTest:
    """Pairs of (earlier stage, later stage) answers to judge blind, and the verdicts so far."""

    earlier: str  # the stages' names, e.g. "sft", "rl"
    later: str
    pairs: list[BlindPair] = field(default_factory=list)

    @classmethod
    def of(cls, earlier: str, later: str, rows: list[tuple[str, str, str]], seed: int = 0,
           judge=None) -> BlindTest:
        """A test over (prompt, earlier answer, later answer) rows, each shown in a random order (from `seed`).
        `judge(prompt, answer) -> float`, when given, scores both answers: its verdict is kept beside the user's."""
        order = random.Random(seed)
        pairs = []
        for prompt, old, new in rows:
            verdict = None
            if judge is not None:
                a, b = judge(prompt, new), judge(prompt, old)
                verdict = 0.5 if a == b else float(a > b)
            pairs.append(BlindPair(prompt, old, new, order.random() < 0.5, verdict))
        return cls(earlier, later, pairs)

    def current(self) -> tuple[int, BlindPair] | None:
        """The first pair not judged yet (its index), or None when all are."""
        for index, pair in enumerate(self.pairs):
            if pair.picked_later is None:
                return index, pair
        return None

    def vote(self, index: int, picked_first: bool) -> BlindPair:
        """The user picked the first (A) or the second (B) answer of pair `index`."""
        pair = self.pairs[index]
        pair.picked_later = picked_first == pair.later_first
        return pair

    def result(self) -> dict:
        """{votes, later_wins, win_rate, low, high, judge_win_rate, judged}: the later stage's win rate among the
        user's verdicts with its 95% interval, and the judge's win rate on the same pairs."""
        judged = [p for p in self.pairs if p.picked_later is not None]
        wins = sum(p.picked_later for p in judged)
        low, high = wilson_interval(wins, len(judged))
        scored = [p.judge_prefers_later for p in judged if p.judge_prefers_later is not None]
        return {"earlier": self.earlier, "later": self.later, "votes": len(judged), "later_wins": wins,
                "win_rate": wins / len(judged) if judged else math.nan, "low": low, "high": high,
                "judge_win_rate": sum(scored) / len(scored) if scored else math.nan, "judged": len(scored)}
