"""Supervised fine-tuning of the pretrained Tiny GPT on chatterbot's dialogs, with TRL's SFTTrainer.

The data are `User: …` / `Bot: …` conversations, cut at turn boundaries into pieces that fit the context; the loss
counts only the Bot's turns (labels are -100 elsewhere), as in the Fine-tune tab. The whole model trains (it is
small), from a copy of the pretrained one. Before and after: the held-out conversations' loss on the Bot's turns,
and the answers of both models to the user's questions.
"""
from __future__ import annotations

import copy
import math
import os
from dataclasses import asdict, dataclass, field

import torch

from chat.tinygpt.data import dialog_segments, load_corpus
from chat.tinygpt.model import loss_of
from chat.tinygpt.stages import Stage, answers, check_question
from chat.tinygpt.tokenizer import encode_segments, hf_tokenizer
from chat.training import lora
from chat.training import run as runs
from chat.training.run import TrainingError, check_settings

MAX_ASKS = 8  # questions answered before and after


@dataclass
class TinySFTSettings:
    lang: str = "english"  # the dialogs' language (chatterbot-corpus)
    learning_rate: float = 1e-3  # AdamW's step (the whole model trains)
    batch_size: int = 16  # conversation pieces per step, over all processes
    max_steps: int = 300  # optimizer steps at most
    max_seconds: float = 60.0  # training time budget
    seed: int = 0  # data order


LIMITS = {"learning_rate": (1e-6, 1e-1), "batch_size": (1, 64), "max_steps": (1, 5000),
          "max_seconds": (5.0, 600.0), "seed": (0, 2**31 - 1)}


def dialog_examples(tokenizer, conversations: list[list[str]], block_size: int) -> list[dict]:
    """{"input_ids", "labels"} rows: each conversation cut into pieces of whole exchanges (User turn + Bot turn)
    that fit `block_size` tokens (a single exchange longer than that is cut at its end); labels are the ids on the
    Bot's turns, -100 elsewhere. The model shifts the labels itself."""
    rows = []
    for turns in conversations:
        segments = dialog_segments(turns)
        exchanges = [segments[i:i + 4] for i in range(0, len(segments) - 1, 4)]
        exchanges[-1] = exchanges[-1] + segments[-1:]  # the blank line that ends the conversation
        ids, labels = [], []
        for exchange in exchanges:
            more, bot = encode_segments(tokenizer, exchange)
            more_labels = [t if b else -100 for t, b in zip(more, bot)]
            if ids and len(ids) + len(more) > block_size:
                rows.append({"input_ids": ids, "labels": labels})
                ids, labels = [], []
            ids, labels = (ids + more)[:block_size], (labels + more_labels)[:block_size]
        if any(label != -100 for label in labels):
            rows.append({"input_ids": ids, "labels": labels})
    return rows


@torch.no_grad()
def bot_loss(model, rows: list[dict], pad_id: int, batch_size: int = 32) -> float:
    """Mean loss (nats per token) on the Bot's tokens of `rows`."""
    was_training = model.training
    model.eval()
    nats, tokens = 0.0, 0
    for start in range(0, len(rows), batch_size):
        chunk = rows[start:start + batch_size]
        width = max(len(r["input_ids"]) for r in chunk)
        x = torch.full((len(chunk), width), pad_id)
        y = torch.full((len(chunk), width), -100)
        for i, r in enumerate(chunk):  # right padding: the real tokens never see it
            x[i, :len(r["input_ids"])] = torch.tensor(r["input_ids"])
            y[i, :len(r["labels"])] = torch.tensor(r["labels"])
        nats += loss_of(model, x[:, :-1], y[:, 1:], reduction="sum").item()
        tokens += int((y[:, 1:] != -100).sum())
    model.train(was_training)
    return nats / max(tokens, 1)


@dataclass(eq=False, kw_only=True)
class TinySFTRun(lora.LoraRun):
    """An SFT run of the whole tiny model, watched as the Fine-tune tab's LoRA runs are (chat.training.lora)."""

    what_trains = "model"
    kind: str = "tinygpt-sft"
    settings: TinySFTSettings = field(default_factory=TinySFTSettings)
    before: Stage | None = None  # the pretrained stage (never changed)
    stage: Stage | None = None  # the stage being made: its model is `model`
    train_rows: list[dict] = field(default_factory=list)
    val_rows: list[dict] = field(default_factory=list)
    bot_val_loss_before: float = math.nan
    bot_val_loss_after: float = math.nan
    questions: list[str] = field(default_factory=list)
    asks: list[dict] = field(default_factory=list)  # {"question", "before", "after"} once training ends
    loss_tokens: list[list[tuple[str, bool]]] = field(default_factory=list)  # a few rows: (text, counted in loss)

    def snapshot(self):
        return {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    def restore(self, state) -> None:
        self.model.load_state_dict(state)

    def weights_finite(self) -> bool:
        return all(bool(torch.isfinite(p).all()) for p in self.model.parameters())

    def abandon(self) -> None:
        self.abandoned = True
        self.stop.set()


def loss_view(tokenizer, row: dict) -> list[tuple[str, bool]]:
    """A row as the trainer sees it: text pieces and whether their tokens count in the loss."""
    pieces = []
    for token, label in zip(row["input_ids"], row["labels"]):
        counted = label != -100
        text = tokenizer.decode([token])
        if pieces and pieces[-1][1] == counted:
            pieces[-1] = (pieces[-1][0] + text, counted)
        else:
            pieces.append((text, counted))
    return pieces


def world_size() -> int:
    """Processes training together (`accelerate launch --num_processes N`), 1 otherwise."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def trl_trainer(model, tokenizer, rows: list[dict], settings: TinySFTSettings, callbacks=()):
    """TRL's SFTTrainer on the tiny model and pre-tokenized rows: on a CPU, each process taking its share of the
    batch (the global batch is the same for 1 or N processes)."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    per_device = max(1, settings.batch_size // world_size())
    config = SFTConfig(**lora.cpu_training_args(
        learning_rate=settings.learning_rate, max_steps=settings.max_steps, per_device_train_batch_size=per_device,
        seed=settings.seed, data_seed=settings.seed, max_length=int(model.config.n_positions),
        ddp_backend="gloo" if world_size() > 1 else None))
    return SFTTrainer(model=model, args=config, train_dataset=Dataset.from_list(rows),
                      processing_class=hf_tokenizer(tokenizer), callbacks=list(callbacks))


def new_sft_run(pretrained: Stage, settings: TinySFTSettings | None = None,
                questions: list[str] = ()) -> TinySFTRun:
    """Validate, and prepare the data and a copy of the pretrained model (nothing trains yet)."""
    settings = settings if settings is not None else TinySFTSettings()
    check_settings(settings, LIMITS)
    if len(questions) > MAX_ASKS:
        raise TrainingError("too_many_asks", f"at most {MAX_ASKS} questions", limit=MAX_ASKS)
    questions = [check_question(q) for q in questions]
    corpus = load_corpus(settings.lang)
    stage = pretrained.next_copy("sft")
    block = stage.block_size
    run = TinySFTRun(max_steps=int(settings.max_steps), max_seconds=float(settings.max_seconds), settings=settings,
                     before=pretrained, stage=stage, model=stage.model, questions=questions,
                     train_rows=dialog_examples(stage.tokenizer, corpus.train, block),
                     val_rows=dialog_examples(stage.tokenizer, corpus.val, block))
    run.loss_tokens = [loss_view(stage.tokenizer, row) for row in run.train_rows[:3]]
    run.bot_val_loss_before = bot_loss(pretrained.model, run.val_rows, stage.tokenizer.newline_id)
    return run


def start(run: TinySFTRun, on_done=None) -> TinySFTRun:
    """Claim the training slot and train in a thread (chat.training.lora.start); at the end, the held-out Bot loss
    and the answers before and after."""
    runs.claim(run)

    def make(callback):
        return trl_trainer(run.model, run.stage.tokenizer, run.train_rows, run.settings, [callback])

    def finish(done: TinySFTRun):
        done.bot_val_loss_after = bot_loss(done.model, done.val_rows, done.stage.tokenizer.newline_id)
        if done.questions:
            old, new = answers(done.before, done.questions), answers(done.stage, done.questions)
            done.asks = [{"question": q, "before": b, "after": a} for q, b, a in zip(done.questions, old, new)]
        done.stage.meta = summary(done)
        if on_done is not None:
            on_done(done)

    return lora.start(run, make, finish)


def train_plain(stage: Stage, rows: list[dict], settings: TinySFTSettings) -> float:
    """The benchmark's anchor: a plain TRL run of the same model and data (no live view); returns steps/s."""
    import time

    lora.offline()
    trainer = trl_trainer(copy.deepcopy(stage.model), stage.tokenizer, rows, settings)
    start_at = time.perf_counter()
    trainer.train()
    return trainer.state.global_step / (time.perf_counter() - start_at)


def summary(run: TinySFTRun) -> dict:
    return {
        "stage": "sft", "status": run.status, "error": run.error or None, "steps": run.step,
        "seconds": round(run.seconds, 2), "steps_per_second": round(run.steps_per_second, 3),
        "loss_start": run.first("loss"), "loss_end": run.last("loss"), "examples": len(run.train_rows),
        "val_examples": len(run.val_rows), "bot_val_loss_before": round(run.bot_val_loss_before, 4),
        "bot_val_loss_after": round(run.bot_val_loss_after, 4), "asks": run.asks,
        "settings": asdict(run.settings), "diverged_at": run.diverged_at or None,
    }
