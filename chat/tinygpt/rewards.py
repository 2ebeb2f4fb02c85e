"""What reinforcement learning optimises: a score for each reply.

Rules the user picks and sets (yes/no rewards, 1 or 0), written `name:parameter` on the command line:
  max-chars:N      a reply of 1 to N characters
  contains:WORD    the reply holds WORD as a whole word (any case)
  question         the reply ends with a question mark
  no-repeat        the reply has words and repeats none of them (any case)
and a reward model fitted from the user's own choices between pairs of the model's answers, the Human feedback
tab's method (chat.feedback.reward): a Bradley–Terry linear head, here on the fine-tuned Tiny GPT's own features
(its last hidden state, averaged over the answer's tokens). Its scores are real numbers, not yes/no.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from chat.training.run import TrainingError

RULES = ("max-chars", "contains", "question", "no-repeat")
MAX_CHARS_RANGE = (1, 200)
WORD = re.compile(r"[A-Za-z][A-Za-z']{0,29}")
MIN_PAIRS, MAX_PAIRS = 4, 200


@dataclass(frozen=True)
class Rule:
    """A yes/no reward on the reply's text."""

    name: str  # one of RULES
    parameter: str = ""  # N for max-chars, WORD for contains
    binary = True

    @property
    def spec(self) -> str:
        return f"{self.name}:{self.parameter}" if self.parameter else self.name

    def __call__(self, prompt: str, reply: str) -> float:
        text = reply.strip()
        if self.name == "max-chars":
            return float(0 < len(text) <= int(self.parameter))
        if self.name == "contains":
            return float(re.search(rf"\b{re.escape(self.parameter)}\b", text, re.IGNORECASE) is not None)
        if self.name == "question":
            return float(text.endswith("?"))
        words = re.findall(r"[\w']+", text.lower())
        return float(bool(words) and len(set(words)) == len(words))


def parse_rule(spec: str) -> Rule:
    """`max-chars:40`, `contains:love`, `question` or `no-repeat`; TrainingError("reward") saying what is wrong."""
    name, _, parameter = str(spec or "").strip().partition(":")
    name, parameter = name.strip().lower(), parameter.strip()
    if name not in RULES:
        raise TrainingError("reward", f"unknown reward {name!r}: use max-chars:N, contains:WORD, question or "
                            "no-repeat", reward=spec)
    if name == "max-chars":
        low, high = MAX_CHARS_RANGE
        if not parameter.isdigit() or not low <= int(parameter) <= high:
            raise TrainingError("reward_chars", f"max-chars needs a whole number of characters from {low} to {high} "
                                f"(got {parameter!r})", low=low, high=high, value=parameter)
        parameter = str(int(parameter))
    elif name == "contains":
        if not WORD.fullmatch(parameter):
            raise TrainingError("reward_word", f"contains needs one English word of 1-30 letters (got {parameter!r})",
                                value=parameter)
    elif parameter:
        raise TrainingError("reward", f"{name} takes no parameter (got {parameter!r})", reward=spec)
    return Rule(name, parameter)


# --- a reward model from the user's choices ------------------------------------------------------------------------


@torch.no_grad()
def answer_features(stage, items: list[tuple[str, str]]) -> torch.Tensor:
    """(len(items), width): each (question, answer)'s last hidden state, averaged over the answer's tokens."""
    from chat.tinygpt.stages import prompt_ids

    model, tokenizer = stage.model, stage.tokenizer
    was_training = model.training
    model.eval()
    rows = []
    for question, answer in items:
        prompt = prompt_ids(tokenizer, question)
        reply = tokenizer.encode(" " + answer.strip() + "\n")[: max(1, stage.block_size - len(prompt))]
        ids = torch.tensor([prompt + reply])
        hidden = model(input_ids=ids, output_hidden_states=True).hidden_states[-1][0]  # (T, width)
        rows.append(hidden[len(prompt):].mean(0))
    model.train(was_training)
    return torch.stack(rows)


@dataclass(eq=False)
class LearnedReward:
    """r(question, answer) = weight · (h - mean) / std on the fine-tuned model's features h (frozen)."""

    stage: object  # the Stage whose features it reads (the fine-tuned model: RL's starting point, never trained)
    weight: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor
    pairs: int
    train_accuracy: float
    binary = False
    spec = "learned"

    def __call__(self, prompt: str, reply: str) -> float:
        return self.scores([(prompt, reply)])[0]

    def scores(self, items: list[tuple[str, str]]) -> list[float]:
        found = answer_features(self.stage, items)
        return [float(s) for s in ((found - self.mean) / self.std) @ self.weight]


def fit_reward(stage, pairs: list[tuple[str, str, str]]) -> LearnedReward:
    """A reward model from (question, chosen, rejected) choices, fitted as the Human feedback tab fits its own."""
    from chat.feedback.reward import fit_head

    pairs = [(str(q).strip(), str(c).strip(), str(r).strip()) for q, c, r in pairs]
    pairs = [p for p in pairs if p[0] and p[1] != p[2]]
    if len(pairs) < MIN_PAIRS:
        raise TrainingError("few_pairs", f"a reward model needs at least {MIN_PAIRS} choices between different "
                            f"answers (got {len(pairs)})", n=len(pairs), minimum=MIN_PAIRS)
    pairs = pairs[-MAX_PAIRS:]
    chosen = answer_features(stage, [(q, c) for q, c, _ in pairs])
    rejected = answer_features(stage, [(q, r) for q, _, r in pairs])
    weight, mean, std, accuracy = fit_head(chosen, rejected)
    return LearnedReward(stage, weight, mean, std, len(pairs), accuracy)


def read_pairs(path: str | Path) -> list[tuple[str, str, str]]:
    """{"prompt", "chosen", "rejected"} JSON lines (TRL's preference format) as tuples."""
    pairs = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            pairs.append((row["prompt"], row["chosen"], row["rejected"]))
        except (ValueError, KeyError, TypeError):
            raise TrainingError("pairs_file", f"line {number} of {path} is not a JSON object with prompt, chosen "
                                "and rejected", line=number) from None
    return pairs


def parse_reward(spec: str, stage=None):
    """A rule, or `pairs:FILE.jsonl`: a reward model fitted on those choices with `stage`'s features."""
    if str(spec or "").strip().startswith("pairs:"):
        path = spec.strip()[len("pairs:"):]
        if not Path(path).is_file():
            raise TrainingError("pairs_file", f"no file {path!r}", line=0)
        return fit_reward(stage, read_pairs(path))
    return parse_rule(spec)
