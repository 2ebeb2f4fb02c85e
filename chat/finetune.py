"""Supervised fine-tuning (SFT), live: teach the chat model a behaviour from a handful of demonstrations.

The middle stage of how ChatGPT is made (pretraining -> SFT -> RLHF): the model is shown prompt -> response pairs
and trained to write the responses. As TRL does it: `SFTTrainer` on prompt/completion conversations, so the loss
counts only the response tokens (completion-only loss) while the system prompt and the question are context; LoRA
(`peft`) trains small low-rank updates of every linear layer on top of the chat model's own, shared weights
(chat.tuning). The same `SFTConfig` runs on GPUs and scales out with `accelerate`.

- Demonstrations: (prompt, response) pairs; presets in presets/finetune.json (identity, pirate style, Chinese), each
  with tested settings, held-out paraphrases of what it teaches and control questions that show side effects.
- JSONL in and out in the chat-messages format TRL reads: {"messages": [{"role": "system"?}, user, assistant]}.
- `start_run` trains in a thread (chat.tuning.start); `compare` answers held-out and control questions with the
  original model and the tuned one, greedy, side by side.

CLI: python -m chat.finetune --preset identity --name Nova [--max-seconds S] [--ask QUESTION ...] --json
"""
from __future__ import annotations

import argparse
import copy
import json
import re
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from chat import tuning
from chat.tuning import LiveRun, TuningError

PRESETS: dict = json.loads((Path(__file__).parent / "presets" / "finetune.json").read_text(encoding="utf-8"))
MIN_PAIRS, MAX_PAIRS = 2, 64  # a remote user's run is bounded in examples, steps and seconds
MAX_CHARS = 1500  # per prompt or response: longer is refused, never silently cut
MAX_NAME = 40
ANSWER_TOKENS = 64  # greedy tokens per answer in the before/after table
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
    lora_layers: int = 15  # adapt the top N transformer blocks (0 = all 30): fewer train faster (README: measured)
    max_seconds: float = 90.0  # time budget: training stops when it is spent, whatever the step
    seed: int = 0  # adapter init and data order


LIMITS = {"learning_rate": (1e-6, 1e-2)} | tuning.LIMITS


def validate_settings(settings: SFTSettings) -> SFTSettings:
    return tuning.check_settings(settings, LIMITS)


# --- demonstrations -------------------------------------------------------------------------------------------------


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
        raise TuningError("preset", f"Unknown preset {key!r}: use one of {', '.join(PRESETS)}", preset=key)
    raw = PRESETS[key]
    name = check_name(name if name is not None else raw.get("default_name", ""))

    def fill(text: str) -> str:
        return text.replace("{name}", name)

    expect = {k: [fill(w) for w in v] if isinstance(v, list) else v for k, v in raw["expect"].items()}
    return Preset(key, SFTSettings(**raw["settings"]),
                  [Demonstration(fill(p), fill(r)) for p, r in raw["pairs"]], [fill(q) for q in raw["held_out"]],
                  [(q, answers) for q, answers in raw["controls"]], expect, name if "default_name" in raw else "")


def check_name(name: str) -> str:
    name = " ".join(str(name or "").split())
    if len(name) > MAX_NAME:
        raise TuningError("name", f"The name is {len(name)} characters; at most {MAX_NAME}.", limit=MAX_NAME)
    return name


def validate_pairs(pairs: list[Demonstration]) -> list[Demonstration]:
    """The pairs, stripped; TuningError for too few, too many, empty or over-long ones (nothing is cut)."""
    clean = [Demonstration(str(p.prompt or "").strip(), str(p.response or "").strip()) for p in pairs]
    clean = [p for p in clean if p.prompt or p.response]  # a fully blank table row is not a pair
    for row, pair in enumerate(clean, 1):
        if not pair.prompt or not pair.response:
            raise TuningError("empty", f"Row {row} has an empty {'prompt' if not pair.prompt else 'response'}.",
                              row=row)
        longest = max(len(pair.prompt), len(pair.response))
        if longest > MAX_CHARS:
            raise TuningError("too_long", f"Row {row} is {longest} characters long; at most {MAX_CHARS} per prompt "
                              "or response.", row=row, chars=longest, limit=MAX_CHARS)
    if len(clean) < MIN_PAIRS:
        raise TuningError("too_few", f"{len(clean)} demonstration(s): fine-tuning needs at least {MIN_PAIRS}.",
                          n=len(clean), minimum=MIN_PAIRS)
    if len(clean) > MAX_PAIRS:
        raise TuningError("too_many", f"{len(clean)} demonstrations: at most {MAX_PAIRS} per run.",
                          n=len(clean), limit=MAX_PAIRS)
    return clean


def conversation(prompt: str, system: str = "") -> list[dict]:
    """The messages the model sees for a prompt; an empty system prompt leaves the chat template's default."""
    return ([{"role": "system", "content": system}] if system.strip() else []) + [{"role": "user", "content": prompt}]


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
        raise TuningError("jsonl", "The file is empty.", line=0, reason="empty")
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
            raise TuningError("jsonl", f"Line {number}: {error}", line=number, reason=str(error)) from None
        pairs.append(Demonstration(turns[0]["content"], turns[1]["content"]))
    if len(systems) > 1:
        raise TuningError("jsonl", "The lines use different system prompts; a run trains with one.", line=0,
                          reason="different system prompts")
    return pairs, (systems.pop() if systems else "")


# --- the run --------------------------------------------------------------------------------------------------------


@dataclass
class SFTRun(LiveRun):
    pairs: list[Demonstration] = field(default_factory=list)
    system: str = ""
    settings: SFTSettings = field(default_factory=SFTSettings)
    preset: str = ""  # the preset the pairs came from, "" for the user's own
    name: str = ""  # the identity preset's name
    loss_tokens: list[list[tuple[str, bool]]] = field(default_factory=list)  # per example: (text, counted in loss)
    comparisons: list[dict] = field(default_factory=list)  # the before/after table once training ends
    questions: list[tuple[str, str, list[str] | None]] = field(default_factory=list)  # (kind, question, check)
    expect: dict | None = None  # how a held-out answer shows the taught behaviour (a preset's)


def loss_view(tokenizer, input_ids: list[int], labels: list[int]) -> list[tuple[str, bool]]:
    """The example as the trainer sees it: text pieces and whether their tokens count in the loss (labels != -100).

    Tokens that are parts of one character (Chinese, emoji) are joined, as in the other tabs."""
    from chat.models import ModelTokenizer
    from chat.tokens import group_tokens

    pieces, model_tokenizer = [], ModelTokenizer(tokenizer)
    start = 0
    while start < len(input_ids):  # runs of tokens on the same side of the mask
        counted = labels[start] != -100
        end = start
        while end < len(input_ids) and (labels[end] != -100) == counted:
            end += 1
        for group in group_tokens(input_ids[start:end], model_tokenizer.token_bytes):
            pieces.append((group.raw.decode("utf-8", errors="replace"), counted))
        start = end
    return pieces


def _make_trainer(run: SFTRun, base, rows: list[dict]):
    def make(callback):
        from datasets import Dataset
        from trl import SFTConfig, SFTTrainer

        s = run.settings
        config = SFTConfig(**tuning.cpu_training_args(
            learning_rate=s.learning_rate, max_steps=s.max_steps, per_device_train_batch_size=s.batch_size,
            seed=s.seed, data_seed=s.seed, max_length=512, completion_only_loss=True))
        # the trainer may set a pad token on its tokenizer: it gets a copy, the chat model's stays as it is
        trainer = SFTTrainer(model=run.model, args=config, train_dataset=Dataset.from_list(rows),
                             processing_class=copy.deepcopy(base.tokenizer), callbacks=[callback])
        shown = trainer.train_dataset.select(range(min(3, len(rows))))
        run.loss_tokens = [loss_view(base.tokenizer, ex["input_ids"], ex["labels"]) for ex in shown]
        return trainer

    return make


def start_run(pairs: list[Demonstration], system: str = "", settings: SFTSettings = SFTSettings(),
              base=None, session: str | None = None, preset_key: str = "", name: str = "",
              questions: list[tuple[str, str, list[str] | None]] | None = None,
              expect: dict | None = None) -> SFTRun:
    """Validate, claim the training slot and start training in a thread; at the end the tuned model is compared
    with the original on `questions` ((kind, question, words a good answer contains or None)) and published for
    `session` (the Chat tab's "fine-tuned" model)."""
    from chat.models import get_model

    pairs = validate_pairs(pairs)
    validate_settings(settings)
    if len(str(system)) > MAX_CHARS:
        raise TuningError("too_long", f"The system prompt is {len(system)} characters; at most {MAX_CHARS}.",
                          row=0, chars=len(system), limit=MAX_CHARS)
    base = base or get_model()
    run = SFTRun("sft", int(settings.max_steps), float(settings.max_seconds), session, pairs=pairs, system=system,
                 settings=settings, preset=preset_key, name=name, questions=list(questions or []), expect=expect)
    tuning.training_slot(run)
    try:
        run.model = tuning.lora_model(base.model, lora_settings(settings), seed=int(settings.seed))
    except BaseException:
        tuning.release_slot(run)
        raise

    def finish(done: SFTRun):
        if done.questions:
            done.comparisons = compare(base, done.model, done.questions, done.system, done.expect)
        if session is not None and not done.abandoned:
            title = f"{base.title} + LoRA ({done.preset or 'custom'}, {done.step} steps)"
            tuning.TUNED.put(session, tuning.TunedModel("sft", title, tuning.tuned_view(base, done.model, "sft",
                                                                                         title), summary(done)))

    return tuning.start(run, _make_trainer(run, base, sft_rows(pairs, system)), finish)


def lora_settings(settings) -> tuning.LoraSettings:
    """The LoRA shape of a run's settings (SFTSettings or feedback.DPOSettings)."""
    rank = int(settings.lora_r)
    return tuning.LoraSettings(r=rank, alpha=2 * rank, layers=int(settings.lora_layers))


def preset_questions(p: Preset) -> list[tuple[str, str, list[str] | None]]:
    return [("held_out", q, None) for q in p.held_out] + [("control", q, a) for q, a in p.controls]


# --- before / after -----------------------------------------------------------------------------------------------


def shows_behaviour(answer: str, expect: dict) -> bool:
    """Whether a held-out answer shows what a preset teaches: one of its words, or enough Chinese characters."""
    text = answer.lower()
    if "any" in expect:
        return any(word.lower() in text for word in expect["any"])
    letters = [c for c in answer if c.isalpha()]
    return bool(letters) and len(CJK.findall(answer)) / len(letters) >= float(expect["chinese"])


def is_right(answer: str, words: list[str]) -> bool:
    text = answer.lower()
    return any(word.lower() in text for word in words)


def compare(base, tuned_model, questions: list[tuple[str, str, list[str] | None]], system: str = "",
            expect: dict | None = None, max_new_tokens: int = ANSWER_TOKENS) -> list[dict]:
    """Greedy answers of the original and the tuned model to each question, with the checks that apply:
    held-out questions check the taught behaviour (`expect`), controls check the right answer's words."""
    conversations = [conversation(q, system) for _, q, _ in questions]
    before = tuning.BEFORE.answers(base, conversations, max_new_tokens)
    after = tuning.greedy_answers(tuned_model, base.tokenizer, conversations, max_new_tokens)
    rows = []
    for (kind, question, words), old, new in zip(questions, before, after):
        row = {"kind": kind, "question": question, "before": old, "after": new}
        if words:
            row["before_ok"], row["after_ok"] = is_right(old, words), is_right(new, words)
        elif expect and kind == "held_out":
            row["before_ok"], row["after_ok"] = shows_behaviour(old, expect), shows_behaviour(new, expect)
        rows.append(row)
    return rows


def summary(run: SFTRun) -> dict:
    return {
        "preset": run.preset, "name": run.name, "status": run.status, "steps": run.step,
        "train_seconds": round(run.elapsed, 2), "steps_per_second": round(run.steps_per_second, 3),
        "loss_start": run.first("loss"), "loss_end": run.last("loss"), "examples": len(run.pairs),
        "diverged_at": run.diverged_at or None, "error": run.error or None,
        "settings": asdict(run.settings),
    }


# --- CLI ----------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Fine-tune the chat model (LoRA, TRL's SFTTrainer) on a preset and "
                                     "compare its answers before and after.")
    parser.add_argument("--preset", default="identity", choices=list(PRESETS),
                        help="demonstrations (default: identity)")
    parser.add_argument("--name", default=None, help="the identity preset's new name (default: Nova)")
    parser.add_argument("--jsonl", help="train on this JSONL file of chat messages instead of the preset's pairs")
    parser.add_argument("--max-seconds", type=float, default=None, help="time budget (default: 90)")
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps (default: the preset's)")
    parser.add_argument("--lr", type=float, default=None, help="learning rate (default: the preset's)")
    parser.add_argument("--ask", action="append", default=[], help="a question answered before and after (repeat)")
    parser.add_argument("--json", action="store_true", help="print one JSON object last")
    args = parser.parse_args(argv)
    try:
        chosen = preset(args.preset, args.name)
        pairs, system = (from_jsonl(Path(args.jsonl).read_text(encoding="utf-8")) if args.jsonl
                         else (chosen.pairs, ""))
        settings = SFTSettings(**{**asdict(chosen.settings), **{k: v for k, v in {
            "max_seconds": args.max_seconds, "max_steps": args.steps, "learning_rate": args.lr}.items()
            if v is not None}})
        questions = [("ask", q, None) for q in args.ask] + ([] if args.jsonl else preset_questions(chosen))
        started = time.perf_counter()
        run = start_run(pairs, system, settings, preset_key="" if args.jsonl else args.preset, name=chosen.name,
                        questions=questions, expect=None if args.jsonl else chosen.expect)
        while run.running:
            run.wait(1.0)
            if not args.json and run.logs:
                print(f"step {run.step}/{run.max_steps}  loss {run.last('loss'):.3f}  {run.elapsed:.0f} s",
                      file=sys.stderr)
        run.wait()
    except TuningError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    rows = {kind: [r for r in run.comparisons if r["kind"] == kind] for kind in ("ask", "held_out", "control")}
    result = summary(run) | {
        "wall_seconds": round(time.perf_counter() - started, 2),
        "asks": [{k: r[k] for k in ("question", "before", "after")} for r in rows["ask"]],
        "held_out": rows["held_out"], "controls": rows["control"],
        "taught": sum(bool(r.get("after_ok")) for r in rows["held_out"]),
        "controls_right_before": sum(bool(r.get("before_ok")) for r in rows["control"]),
        "controls_right_after": sum(bool(r.get("after_ok")) for r in rows["control"]),
    }
    if args.json:
        print(json.dumps(result, ensure_ascii=False))
    else:
        for row in run.comparisons:
            print(f"\nQ ({row['kind']}): {row['question']}\n  before: {row['before']}\n  after:  {row['after']}")
        print(json.dumps({k: v for k, v in result.items() if k not in ("asks", "held_out", "controls")},
                         ensure_ascii=False, indent=2))
    return 0 if run.status in ("done", "timeout", "stopped") else 1


if __name__ == "__main__":
    raise SystemExit(main())
