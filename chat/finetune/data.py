"""Demonstrations: (prompt, response) pairs, the presets (presets.json: identity, pirate style, Chinese, each with
tested settings, held-out paraphrases of what it teaches and control questions that show side effects), and JSONL
in and out in the chat-messages format TRL reads: {"messages": [{"role": "system"?}, user, assistant]}."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from chat.llm.prompt import conversation
from chat.training import lora
from chat.training.lora import MAX_CHARS
from chat.training.run import TrainingError, check_settings

PRESETS: dict = json.loads((Path(__file__).with_name("presets.json")).read_text(encoding="utf-8"))

MIN_PAIRS, MAX_PAIRS = 2, 64  # a remote user's run is bounded in examples, steps and seconds
MAX_NAME = 40
CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")


@dataclass
class Demonstration:
    prompt: str  # what the user says
    response: str  # what the model should answer (the only tokens the loss counts)



@dataclass
class SFTSettings:
    learning_rate: float = 2e-4  # AdamW's step size for the adapter (2e-4 is LoRA's usual; 5e-5 changed nothing here)
    max_steps: int = 20  # optimizer steps; each sees `batch_size` demonstrations
    batch_size: int = 4  # demonstrations per step
    lora_r: int = 16  # rank of the LoRA update (alpha = 2 r)
    lora_layers: int = 15  # adapt the top N transformer blocks (0 = all 30): fewer train faster (docs/finetune.md)
    max_seconds: float = 90.0  # time budget: training stops when it is spent, whatever the step
    seed: int = 0  # adapter init and data order


LIMITS = {"learning_rate": (1e-6, 1e-2)} | lora.LIMITS


def validate_settings(settings: SFTSettings) -> SFTSettings:
    return check_settings(settings, LIMITS)


@dataclass
class Preset:
    key: str
    settings: SFTSettings
    pairs: list[Demonstration]
    held_out: list[str]  # paraphrases of what it teaches, never trained on
    controls: list[tuple[str, list[str]]]  # unrelated questions and the words a right answer contains
    expect: dict  # how a held-out answer shows the behaviour: {"any": [words]} or {"chinese": fraction}
    name: str = ""  # the identity preset's new name


def preset(key: str, name: str | None = None) -> Preset:
    """A preset with `name` filled in (the identity preset's new name; others ignore it)."""
    if key not in PRESETS:
        raise TrainingError("preset", f"Unknown preset {key!r}: use one of {', '.join(PRESETS)}", preset=key)
    raw = PRESETS[key]
    name = check_name(name if name is not None else raw.get("default_name", ""), required="default_name" in raw)

    def fill(text: str) -> str:
        return text.replace("{name}", name)

    expect = {k: [fill(w) for w in v] if isinstance(v, list) else v for k, v in raw["expect"].items()}
    return Preset(key, SFTSettings(**raw["settings"]),
                  [Demonstration(fill(p), fill(r)) for p, r in raw["pairs"]], [fill(q) for q in raw["held_out"]],
                  [(q, answers) for q, answers in raw["controls"]], expect, name if "default_name" in raw else "")


SPECIAL_MARK = re.compile(r"<\|.*?\|>|<\|endoftext\|>|</?s>")  # <|im_start|>-style markers, which a tokenizer
# reads as control tokens, not as the name's letters


def check_name(name: str, required: bool = False) -> str:
    """The identity preset's new name, spaces collapsed; TrainingError when it is empty (if `required`), too long,
    or holds a special-token marker such as <|im_start|> (the model would read a control token, not a name)."""
    name = " ".join(str(name or "").split())
    if required and not name:
        raise TrainingError("name_empty", "Type the name the model should learn.")
    if len(name) > MAX_NAME:
        raise TrainingError("name", f"The name is {len(name)} characters; at most {MAX_NAME}.", limit=MAX_NAME)
    marker = SPECIAL_MARK.search(name)
    if marker:
        raise TrainingError("name_special", f"The name holds {marker.group(0)}, a special-token marker: "
                            "use letters, digits, spaces or punctuation.", marker=marker.group(0))
    return name


def validate_pairs(pairs: list[Demonstration]) -> list[Demonstration]:
    """The pairs, stripped; TrainingError for too few, too many, empty or over-long ones (nothing is cut)."""
    clean = [Demonstration(str(p.prompt or "").strip(), str(p.response or "").strip()) for p in pairs]
    clean = [p for p in clean if p.prompt or p.response]  # a fully blank table row is not a pair
    for row, pair in enumerate(clean, 1):
        if not pair.prompt or not pair.response:
            raise TrainingError("empty", f"Row {row} has an empty {'prompt' if not pair.prompt else 'response'}.",
                              row=row)
        longest = max(len(pair.prompt), len(pair.response))
        if longest > MAX_CHARS:
            raise TrainingError("too_long", f"Row {row} is {longest} characters long; at most {MAX_CHARS} per prompt "
                              "or response.", row=row, chars=longest, limit=MAX_CHARS)
    if len(clean) < MIN_PAIRS:
        raise TrainingError("too_few", f"{len(clean)} demonstration(s): fine-tuning needs at least {MIN_PAIRS}.",
                          n=len(clean), minimum=MIN_PAIRS)
    if len(clean) > MAX_PAIRS:
        raise TrainingError("too_many", f"{len(clean)} demonstrations: at most {MAX_PAIRS} per run.",
                          n=len(clean), limit=MAX_PAIRS)
    return clean



def sft_rows(pairs: list[Demonstration], system: str = "") -> list[dict]:
    """TRL's conversational prompt/completion rows: the loss counts only the completion."""
    return [{"prompt": conversation(p.prompt, system), "completion": [{"role": "assistant", "content": p.response}]}
            for p in pairs]


def to_jsonl(pairs: list[Demonstration], system: str = "") -> str:
    """One {"messages": [...]} line per pair, the chat-messages format TRL's SFTTrainer reads."""
    lines = [{"messages": conversation(p.prompt, system) + [{"role": "assistant", "content": p.response}]}
             for p in pairs]
    return "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines)


def _turns(row: dict) -> list[dict]:
    if "messages" in row:
        return row["messages"]
    prompt, completion = row["prompt"], row["completion"]
    if isinstance(prompt, str) and isinstance(completion, str):
        return [{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}]
    return list(prompt) + list(completion)


def from_jsonl(text: str) -> tuple[list[Demonstration], str]:
    """(pairs, system prompt) from JSONL: {"messages": [system?, user, assistant]} or TRL's prompt/completion rows."""
    pairs, systems = [], set()
    lines = [line for line in str(text or "").splitlines() if line.strip()]
    if not lines:
        raise TrainingError("jsonl", "The file is empty.", line=0, reason="empty")
    for number, line in enumerate(lines, 1):
        try:
            row = json.loads(line)
            if not isinstance(row, dict) or not ("messages" in row or {"prompt", "completion"} <= row.keys()):
                raise ValueError('each line needs "messages" (or "prompt" and "completion")')
            turns = _turns(row)
            if not all(isinstance(t, dict) and isinstance(t.get("content"), str) for t in turns):
                raise ValueError("each message needs a role and a text content")
            roles = [t.get("role") for t in turns]
            if roles[:1] == ["system"]:
                systems.add(turns[0]["content"].strip())
                turns, roles = turns[1:], roles[1:]
            if roles != ["user", "assistant"]:
                raise ValueError(f"expected one user and one assistant message, got {roles}")
        except (ValueError, TypeError, KeyError) as error:
            raise TrainingError("jsonl", f"Line {number}: {error}", line=number, reason=str(error)) from None
        pairs.append(Demonstration(turns[0]["content"], turns[1]["content"]))
    if len(systems) > 1:
        raise TrainingError("jsonl", "The lines use different system prompts; a run trains with one.", line=0,
                          reason="different system prompts")
    return pairs, (systems.pop() if systems else "")




def preset_questions(p: Preset) -> list[tuple[str, str, list[str] | None]]:
    return [("held_out", q, None) for q in p.held_out] + [("control", q, a) for q, a in p.controls]

def shows_behaviour(answer: str, expect: dict) -> bool:
    """Whether a held-out answer shows what a preset teaches: one of its words, or enough Chinese characters."""
    text = answer.lower()
    if "any" in expect:
        return any(word.lower() in text for word in expect["any"])
    letters = [c for c in answer if c.isalpha()]
    return bool(letters) and len(CJK.findall(answer)) / len(letters) >= float(expect["chinese"])


