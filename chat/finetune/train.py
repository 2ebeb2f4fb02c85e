"""The SFT run: TRL's SFTTrainer on LoRA, in a thread (chat.training.lora.start), then the original and the tuned
model answer held-out and control questions side by side, greedy."""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field

from chat.finetune.data import (Demonstration, SFTSettings, shows_behaviour, sft_rows,
                                validate_pairs, validate_settings)
from chat.llm.prompt import conversation
from chat.training import lora, run as runs
from chat.training.lora import MAX_CHARS
from chat.training.answers import BEFORE, greedy_answers, is_right
from chat.training.run import TrainingError

ANSWER_TOKENS = 64  # greedy tokens per answer in the before/after table


@dataclass(eq=False, kw_only=True)
class SFTRun(lora.LoraRun):
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
    from chat.llm.tokenizer import ModelTokenizer
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
        config = SFTConfig(**lora.cpu_training_args(
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
    from chat.llm.models import get_model

    pairs = validate_pairs(pairs)
    validate_settings(settings)
    if len(str(system)) > MAX_CHARS:
        raise TrainingError("too_long", f"The system prompt is {len(system)} characters; at most {MAX_CHARS}.",
                            row=0, chars=len(system), limit=MAX_CHARS)
    base = base or get_model()
    run = SFTRun(kind="sft", max_steps=int(settings.max_steps), max_seconds=float(settings.max_seconds),
                 session=session, pairs=pairs, system=system, settings=settings, preset=preset_key, name=name,
                 questions=list(questions or []), expect=expect)
    runs.claim(run)
    try:
        run.model = lora.lora_model(base.model, lora.settings_of(settings), seed=int(settings.seed))
    except BaseException:
        runs.release(run)
        raise

    def finish(done: SFTRun):
        if done.questions:
            done.comparisons = compare(base, done.model, done.questions, done.system, done.expect)
        lora.publish(done, base, f"{base.title} + LoRA ({done.preset or 'custom'}, {done.step} steps)",
                     summary(done))

    return lora.start(run, _make_trainer(run, base, sft_rows(pairs, system)), finish)


def compare(base, tuned_model, questions: list[tuple[str, str, list[str] | None]], system: str = "",
            expect: dict | None = None, max_new_tokens: int = ANSWER_TOKENS) -> list[dict]:
    """Greedy answers of the original and the tuned model to each question, with the checks that apply:
    held-out questions check the taught behaviour (`expect`), controls check the right answer's words."""
    conversations = [conversation(q, system) for _, q, _ in questions]
    before = BEFORE.answers(base, conversations, max_new_tokens)
    after = greedy_answers(tuned_model, base.tokenizer, conversations, max_new_tokens)
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
        "train_seconds": round(run.seconds, 2), "steps_per_second": round(run.steps_per_second, 3),
        "loss_start": run.first("loss"), "loss_end": run.last("loss"), "examples": len(run.pairs),
        "diverged_at": run.diverged_at or None, "error": run.error or None,
        "settings": asdict(run.settings),
    }


