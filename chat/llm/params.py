"""Generation settings and their limits: how the next token is picked, checked in one place.

The Chat and Next-token tabs' sliders, the public API and the serving engine all read their ranges from LIMITS.
A leaf module: it imports only chat.checks.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from chat.checks import check_number


@dataclass(frozen=True)
class GenerationParams:
    """How the next token is picked. The defaults are SmolLM2's model card (temperature 0.2, top-p 0.9, the rest as
    transformers' generate leaves them): near-greedy, so a small model keeps to its most likely, usually right,
    answer. `chat.llm.models.chat_defaults()` gives the chat model's own (its generation_config, or its card)."""

    temperature: float = 0.2  # 0 = greedy (always the most likely token); higher = more varied, more mistakes
    top_p: float = 0.9  # keep the smallest set of tokens whose probability adds up to top_p (1 = off)
    top_k: int = 50  # keep only the k most likely tokens (0 = off)
    max_new_tokens: int = 256  # length limit of the reply, in tokens
    repetition_penalty: float = 1.0  # > 1 discourages every token already in the text, the prompt's too (1 = off)
    seed: int | None = None  # fixes sampling for reproducible answers (None = random)

    @classmethod
    def from_inputs(cls, temperature=None, top_p=None, top_k=None, max_new_tokens=None, repetition_penalty=None,
                    seed=None, defaults: "GenerationParams | None" = None) -> "GenerationParams":
        """Params from what a form or an API client sent (numbers, numeric strings; None = the default; a negative
        seed = random), checked: ValueError naming the first bad one, before any work starts."""
        defaults = defaults or cls()
        given = dict(temperature=temperature, top_p=top_p, top_k=top_k, max_new_tokens=max_new_tokens,
                     repetition_penalty=repetition_penalty)
        values = {name: getattr(defaults, name) if value is None else _number(name, value)
                  for name, value in given.items()}
        if seed is not None:
            seed = _number("seed", seed, allow_negative=True)
            seed = None if seed < 0 else seed
        return validate(cls(**values, seed=seed))


LIMITS = {
    "temperature": (0.0, 2.0),
    "top_p": (0.01, 1.0),
    "top_k": (0, 1000),
    "max_new_tokens": (1, 4096),
    "repetition_penalty": (0.5, 2.0),
    "seed": (0, 2**32 - 1),
}
WHOLE = ("top_k", "max_new_tokens", "seed")


def _number(name: str, value, allow_negative: bool = False) -> int | float:
    """A form's or a client's value as a finite number (int for whole-number params), else ValueError."""
    low, high = LIMITS[name]
    parsed = value
    if isinstance(value, str):
        try:
            parsed = float(value.strip())
        except ValueError:
            parsed = None
    if isinstance(parsed, bool) or not isinstance(parsed, (int, float)) or not math.isfinite(parsed):
        raise ValueError(f"{name} must be a number between {low} and {high}, got {value!r}")
    if name in WHOLE:
        if parsed != int(parsed):
            raise ValueError(f"{name} must be a whole number, got {value!r}")
        parsed = int(parsed)
        if allow_negative and parsed < 0:
            return -1
    return parsed


def validate(params: GenerationParams) -> GenerationParams:
    """The same params, or ValueError (chat.checks.OutOfRange) naming the first one out of range."""
    for name, (low, high) in LIMITS.items():
        value = getattr(params, name)
        if not (value is None and name == "seed"):
            check_number(name, value, low, high, whole=name in WHOLE)
    return params
