"""Preferences: (prompt, chosen, rejected) pairs, the presets (presets.json), TRL's preference JSONL, and two sampled
answers to a prompt for the user to choose from."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from chat.llm.params import GenerationParams
from chat.llm.prompt import conversation
from chat.training import lora
from chat.training.lora import MAX_CHARS
from chat.training.run import TrainingError, check_settings

PRESETS: dict = json.loads((Path(__file__).with_name("presets.json")).read_text(encoding="utf-8"))
MIN_PAIRS, MAX_PAIRS = 4, 64


@dataclass
class Preference:
    prompt: str
    chosen: str  # the answer people preferred
    rejected: str  # the other one


@dataclass
class DPOSettings:
    beta: float = 0.1  # how strongly the policy is held to the reference: lower = freer to drift (and to hack)
    learning_rate: float = 1e-4  # AdamW's step for the LoRA adapter
    max_steps: int = 16  # optimizer steps; each sees `batch_size` pairs
    batch_size: int = 4
    lora_r: int = 16  # rank of the LoRA update (alpha = 2 r)
    lora_layers: int = 15  # adapt the top N transformer blocks (0 = all 30): fewer train faster (docs/finetune.md)
    max_seconds: float = 150.0  # time budget: training stops when it is spent
    seed: int = 0
    # weight of a next-token loss on the chosen answers beside DPO's (TRL's loss_type ["sigmoid", "sft"], as in RPO):
    # DPO alone can widen the margin by making both answers unlikely, and the policy then drifts into a register of
    # its own on prompts unlike the pairs; the extra term keeps the chosen answers likely, so their style is what moves
    sft_weight: float = 0.0


LIMITS = {"beta": (0.01, 1.0), "learning_rate": (1e-7, 1e-2), "sft_weight": (0.0, 2.0)} | lora.LIMITS


def validate_settings(settings: DPOSettings) -> DPOSettings:
    return check_settings(settings, LIMITS)


@dataclass
class FeedbackPreset:
    key: str
    settings: DPOSettings
    pairs: list[Preference]
    held_out_pairs: list[Preference]  # never trained on: the reward model's accuracy
    held_out: list[tuple[str, list[str] | None]]  # prompts answered before/after, with a right answer's words


def preset(key: str) -> FeedbackPreset:
    if key not in PRESETS:
        raise TrainingError("preset", f"Unknown preset {key!r}: use one of {', '.join(PRESETS)}", preset=key)
    raw = PRESETS[key]
    data = PRESETS[raw.get("pairs_from", key)]
    return FeedbackPreset(key, DPOSettings(**raw["settings"]),
                          [Preference(*p) for p in data["pairs"]], [Preference(*p) for p in data["held_out_pairs"]],
                          [(q, words) for q, words in data["held_out"]])


MAX_OWN_PROMPTS = 4  # a presenter's own prompts, answered before and after DPO beside the preset's


def own_prompts(text: str) -> list[str]:
    """A presenter's own prompts, one per line (blank lines skipped); TrainingError for more than MAX_OWN_PROMPTS or
    one longer than MAX_CHARS."""
    prompts = [line.strip() for line in str(text or "").splitlines() if line.strip()]
    if len(prompts) > MAX_OWN_PROMPTS:
        raise TrainingError("too_many_prompts", f"{len(prompts)} prompts: at most {MAX_OWN_PROMPTS}, one per line.",
                            n=len(prompts), limit=MAX_OWN_PROMPTS)
    for prompt in prompts:
        if len(prompt) > MAX_CHARS:
            raise TrainingError("prompt_long", f"A prompt is {len(prompt)} characters; at most {MAX_CHARS}.",
                                chars=len(prompt), limit=MAX_CHARS)
    return prompts


def validate_pairs(pairs: list[Preference]) -> list[Preference]:
    clean = [Preference(*(str(x or "").strip() for x in (p.prompt, p.chosen, p.rejected))) for p in pairs]
    clean = [p for p in clean if p.prompt or p.chosen or p.rejected]
    for row, p in enumerate(clean, 1):
        for name in ("prompt", "chosen", "rejected"):
            text = getattr(p, name)
            if not text:
                raise TrainingError("empty_field", f"Row {row} has an empty {name}.", row=row, field=name)
            if len(text) > MAX_CHARS:
                raise TrainingError("too_long", f"Row {row}'s {name} is {len(text)} characters; at most {MAX_CHARS}.",
                                  row=row, chars=len(text), limit=MAX_CHARS)
        if p.chosen == p.rejected:
            raise TrainingError("same", f"Row {row}: the chosen and the rejected answers are the same, so there is no "
                              "preference to learn.", row=row)
    if len(clean) < MIN_PAIRS:
        raise TrainingError("too_few_pairs", f"{len(clean)} pair(s): the reward model and DPO need at least "
                          f"{MIN_PAIRS}.", n=len(clean), minimum=MIN_PAIRS)
    if len(clean) > MAX_PAIRS:
        raise TrainingError("too_many", f"{len(clean)} pairs: at most {MAX_PAIRS} per run.", n=len(clean),
                          limit=MAX_PAIRS)
    return clean


def dpo_rows(pairs: list[Preference], system: str = "") -> list[dict]:
    """TRL's conversational preference rows: the prompt as messages, each answer as one assistant message."""
    return [{"prompt": conversation(p.prompt, system), "chosen": [{"role": "assistant", "content": p.chosen}],
             "rejected": [{"role": "assistant", "content": p.rejected}]} for p in pairs]


def to_jsonl(pairs: list[Preference], system: str = "") -> str:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in dpo_rows(pairs, system))


def _text(value, what: str) -> tuple[str, str]:
    """(system, text) of a prompt or an answer given as a string or as chat messages."""
    if isinstance(value, str):
        return "", value
    if isinstance(value, list) and value and all(isinstance(m, dict) and isinstance(m.get("content"), str)
                                                  for m in value):
        system = value[0]["content"] if value[0].get("role") == "system" else ""
        rest = value[1:] if system else value
        wanted = "user" if what == "prompt" else "assistant"
        if len(rest) == 1 and rest[0].get("role") == wanted:
            return system, rest[0]["content"]
    raise ValueError(f'"{what}" must be a string or one {"user" if what == "prompt" else "assistant"} message')


def from_jsonl(text: str) -> tuple[list[Preference], str]:
    """(pairs, system prompt) from JSONL rows {"prompt", "chosen", "rejected"} (strings or chat messages)."""
    pairs, systems = [], set()
    lines = [line for line in str(text or "").splitlines() if line.strip()]
    if not lines:
        raise TrainingError("jsonl", "The file is empty.", line=0, reason="empty")
    for number, line in enumerate(lines, 1):
        try:
            row = json.loads(line)
            if not isinstance(row, dict) or not {"prompt", "chosen", "rejected"} <= row.keys():
                raise ValueError('each line needs "prompt", "chosen" and "rejected"')
            system, prompt = _text(row["prompt"], "prompt")
            pairs.append(Preference(prompt, _text(row["chosen"], "chosen")[1], _text(row["rejected"], "rejected")[1]))
            systems.add(system.strip())
        except (ValueError, TypeError) as error:
            raise TrainingError("jsonl", f"Line {number}: {error}", line=number, reason=str(error)) from None
    if len(systems) > 1:
        raise TrainingError("jsonl", "The lines use different system prompts; a run trains with one.", line=0,
                          reason="different system prompts")
    return pairs, systems.pop()


def triples(pairs: list[Preference]) -> list[tuple[str, str, str]]:
    return [(p.prompt, p.chosen, p.rejected) for p in pairs]


# --- collect: two sampled answers -----------------------------------------------------------------------------------


def two_answers(prompt: str, system: str = "", temperature: float = 0.9, seed: int | None = None,
                max_new_tokens: int = 160, loaded=None) -> tuple[str, str]:
    """Two different sampled answers to `prompt` (the fast decoder when it is there): the user picks one."""
    from chat.llm import generation
    from chat.llm.models import get_model

    prompt = str(prompt or "").strip()
    if not prompt:
        raise TrainingError("empty_prompt", "Type a prompt first.")
    if len(prompt) > MAX_CHARS:
        raise TrainingError("too_long", f"The prompt is {len(prompt)} characters; at most {MAX_CHARS}.", row=0,
                          chars=len(prompt), limit=MAX_CHARS)
    loaded = loaded or get_model()
    seed = int(seed if seed is not None else torch.randint(0, 2**31 - 1, ()).item())
    answers = []
    for attempt in range(4):  # two samples can coincide (short answers): draw again
        params = GenerationParams(temperature=temperature, top_p=0.95, top_k=0,
                                             max_new_tokens=max_new_tokens, repetition_penalty=1.0,
                                             seed=seed + attempt)
        text, _ = generation.chat_reply(conversation(prompt, system), params, loaded)
        if text.strip() and text.strip() not in answers:
            answers.append(text.strip())
        if len(answers) == 2:
            return answers[0], answers[1]
    raise TrainingError("no_variety", "The model gave the same answer every time; try a more open prompt.")


