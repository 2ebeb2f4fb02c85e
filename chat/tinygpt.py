"""Tiny GPT: a small GPT-2 trained from scratch on dialogs, live, on a CPU; then chat with it.

Follows seeds 001/002 (transformers' `GPT2Config` + `GPT2LMHeadModel` learning next-token prediction on a dialog
corpus) and nanoGPT's `train.py` for the loop: batches are random windows of one token tensor (`get_batch`), AdamW
with weight decay on matrices only, gradient clipping, validation loss on a fixed set of batches every N steps.
The loop is a generator so the UI can watch it: `train(run)` yields the run at most every `update_every_s` seconds
and stops within one step of `run.stop` being set; a later `train(run)` resumes the same run (model, optimizer
state, step counter, curves). Nothing here imports gradio: the tab (`chat/ui/tinygpt_tab.py`), the CLI
(`python -m chat.tinygpt`) and the benchmark (`python -m chat.bench tinygpt`) share these functions.

Data: the chatterbot-corpus YAML files (`categories` + `conversations`, one file per topic and language), turned
into `User: ...\\nBot: ...\\n` text with a blank line between conversations. One conversation in ten is held out
for validation, chosen by a hash of its text, so the split never changes. Malformed entries are skipped and counted;
repeated conversations (tech_support repeats some a hundred times) are kept once.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import re
import sys
import tempfile
import threading
import time
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F
import yaml
from transformers import GPT2Config, GPT2LMHeadModel

from chat import budget

ROLES = ("User", "Bot")  # speaker names in the training text; turns alternate, the User speaks first
CORPUS_PACKAGE = "chatterbot_corpus"
SAMPLE_MESSAGES = {"english": "Hello", "chinese": "你好"}  # the timeline's fixed prompt (first turn otherwise)
CPU_FLOPS = 50e9  # training FLOP/s of this 2-core CPU on tiny GPTs (the default model: ~88e9 when idle)
MIN_STEPS = 100  # a model that can't take this many steps within the budget is too large for it
TOKENIZER_META = "tinygpt.json"  # what save_model writes next to the transformers files
# GPT-2's tanh-approximated GELU as PyTorch's fused kernel: the same function as GPT-2's default "gelu_new",
# which is written out in Python ops and took a third of the forward pass at this size
ACTIVATION = "gelu_pytorch_tanh"

# -----------------------------------------------------------------------------
# Errors the UI translates: `code` names the message, `details` fill it in


class TinyGPTError(ValueError):
    def __init__(self, code: str, message: str, **details):
        super().__init__(message)
        self.code, self.details = code, details


# -----------------------------------------------------------------------------
# Corpus


@dataclass
class Corpus:
    lang: str  # folder under chatterbot_corpus/data
    topics: list[str]  # topic files used (stems, e.g. "greetings")
    train: list[list[str]]  # conversations, each a list of turns (User, Bot, User, ...)
    val: list[list[str]]  # held-out conversations
    skipped: int  # malformed entries (not a list of >= 2 non-empty strings, or unreadable files) left out
    duplicates: int  # repeats of a conversation already loaded, left out (tech_support repeats some 100 times)

    @property
    def conversations(self) -> int:
        return len(self.train) + len(self.val)


def corpus_dir() -> Path:
    from chat.data import package_file

    return package_file(CORPUS_PACKAGE, "data")


def list_languages() -> list[str]:
    return sorted(p.name for p in corpus_dir().iterdir() if p.is_dir() and any(p.glob("*.yml")))


def list_topics(lang: str) -> list[str]:
    folder = corpus_dir() / lang
    if not folder.is_dir():
        raise TinyGPTError("unknown_lang", f"unknown language {lang!r}; pick one of {', '.join(list_languages())}",
                           lang=lang)
    return sorted(p.stem for p in folder.glob("*.yml"))


def clean_turn(turn) -> str | None:
    """One line of dialog: whitespace (newlines in code answers too) collapsed, so one turn is one line."""
    if not isinstance(turn, str):
        return None
    text = " ".join(turn.split())
    return text or None


def read_topic(path: Path) -> tuple[list[list[str]], int]:
    """(conversations, skipped entries) of one YAML topic file; an unreadable file counts as one skipped entry."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return [], 1
    entries = data.get("conversations") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        return [], 1
    conversations, skipped = [], 0
    for entry in entries:
        turns = [clean_turn(t) for t in entry] if isinstance(entry, list) else []
        if len(turns) < 2 or any(t is None for t in turns):
            skipped += 1
            continue
        conversations.append(turns)
    return conversations, skipped


def is_validation(turns: list[str], val_fraction: float) -> bool:
    """Stable held-out choice: a hash of the conversation's text, so adding topics never moves a conversation."""
    return zlib.crc32("\n".join(turns).encode("utf-8")) % 1000 < 1000 * val_fraction


def load_corpus(lang: str = "english", topics: list[str] | tuple[str, ...] = (), val_fraction: float = 0.1
                ) -> Corpus:
    """The conversations of the chosen topics (all topics when `topics` is empty), split train / validation."""
    available = list_topics(lang)
    chosen = list(topics) or available
    unknown = [t for t in chosen if t not in available]
    if unknown:
        raise TinyGPTError("unknown_topic", f"no topic {unknown[0]!r} in {lang}; topics: {', '.join(available)}",
                           topic=unknown[0], lang=lang)
    train, val, skipped, duplicates, seen = [], [], 0, 0, set()
    for topic in chosen:
        conversations, bad = read_topic(corpus_dir() / lang / f"{topic}.yml")
        skipped += bad
        for turns in conversations:
            if tuple(turns) in seen:
                duplicates += 1
                continue
            seen.add(tuple(turns))
            (val if is_validation(turns, val_fraction) else train).append(turns)
    return Corpus(lang=lang, topics=chosen, train=train, val=val, skipped=skipped, duplicates=duplicates)


def dialog_segments(turns: list[str]) -> list[tuple[str, bool]]:
    """A conversation as (text, is_bot_reply) pieces: "User:", " hi\\n", "Bot:", " hello\\n", ..., "\\n".

    Each piece is tokenized on its own, so a token never straddles a role boundary (masking is exact) and a
    prompt ending in "Bot:" is tokenized exactly as in training. The reply piece keeps its newline: the model
    learns to end its turn.
    """
    pieces = []
    for i, turn in enumerate(turns):
        role = ROLES[i % 2]
        pieces += [(f"{role}:", False), (f" {turn}\n", role == "Bot")]
    return pieces + [("\n", False)]


def dialog_text(turns: list[str]) -> str:
    return "".join(text for text, _ in dialog_segments(turns))


def prompt_segments(history: list[tuple[str, str]], message: str) -> list[tuple[str, bool]]:
    """The training format for a chat: past (user, bot) turns, the new message, then "Bot:" for the reply."""
    pieces = []
    for user, bot in history:
        pieces += dialog_segments([clean_turn(user) or "", clean_turn(bot) or ""])[:-1]
    return pieces + [("User:", False), (f" {clean_turn(message) or ''}\n", False), ("Bot:", False)]


# -----------------------------------------------------------------------------
# Tokenizers: both have encode / decode / vocab_size / newline_id / chars_per_token / save / load


class CharTokenizer:
    """One token per character seen in the corpus; id 0 stands for any character it has never seen."""

    kind = "char"
    UNKNOWN = "\ufffd"

    def __init__(self, chars: str):
        self.chars = self.UNKNOWN + "".join(sorted(set(chars) - {self.UNKNOWN}))
        self.ids = {c: i for i, c in enumerate(self.chars)}

    @classmethod
    def train(cls, texts: list[str], vocab_size: int = 0) -> CharTokenizer:
        return cls("".join(set("".join(texts))))

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    @property
    def newline_id(self) -> int:
        return self.ids["\n"]

    def encode(self, text: str) -> list[int]:
        return [self.ids.get(c, 0) for c in text]

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [self.encode(t) for t in texts]

    def decode(self, ids) -> str:
        return "".join(self.chars[i] for i in ids)

    def chars_per_token(self) -> list[int]:
        return [1] * self.vocab_size

    def save(self, folder: Path) -> None:
        (folder / "char_vocab.json").write_text(json.dumps({"chars": self.chars}, ensure_ascii=False),
                                                encoding="utf-8")

    @classmethod
    def load(cls, folder: Path) -> CharTokenizer:
        tokenizer = cls("")
        tokenizer.chars = json.loads((folder / "char_vocab.json").read_text(encoding="utf-8"))["chars"]
        tokenizer.ids = {c: i for i, c in enumerate(tokenizer.chars)}
        return tokenizer


def _byte_of_symbol() -> dict[str, int]:
    """GPT-2's byte-level alphabet (printable stand-ins for the 256 bytes), inverted: symbol -> byte."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    symbols, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            symbols[chr(byte)] = byte
        else:
            symbols[chr(256 + extra)] = byte
            extra += 1
    return symbols


class BPETokenizer:
    """Byte-level BPE learned on the corpus with the `tokenizers` library (GPT-2's scheme, a small vocabulary):
    any text round-trips exactly, Chinese included, since the base alphabet is the 256 bytes."""

    kind = "bpe"

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    @classmethod
    def train(cls, texts: list[str], vocab_size: int = 1000) -> BPETokenizer:
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

        tokenizer = Tokenizer(models.BPE())
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                      show_progress=False)
        tokenizer.train_from_iterator(texts, trainer)
        return cls(tokenizer)

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    @property
    def newline_id(self) -> int:
        return self.tokenizer.token_to_id("Ċ")  # byte 0x0A in the byte-level alphabet

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.tokenizer.encode_batch(texts)]

    def decode(self, ids) -> str:
        return self.tokenizer.decode(list(ids))

    def chars_per_token(self) -> list[int]:
        """Characters each token completes: its UTF-8 lead bytes (a Chinese character's 3 bytes may sit in 2
        tokens; only the one holding the first byte counts it), so any span of whole text sums exactly."""
        byte_of = _byte_of_symbol()
        counts = [0] * self.vocab_size
        for symbol, i in self.tokenizer.get_vocab().items():
            counts[i] = sum(1 for c in symbol if byte_of[c] & 0xC0 != 0x80)
        return counts

    def save(self, folder: Path) -> None:
        self.tokenizer.save(str(folder / "tokenizer.json"))

    @classmethod
    def load(cls, folder: Path) -> BPETokenizer:
        from tokenizers import Tokenizer

        return cls(Tokenizer.from_file(str(folder / "tokenizer.json")))


TOKENIZERS = {"char": CharTokenizer, "bpe": BPETokenizer}


def encode_segments(tokenizer, segments: list[tuple[str, bool]]) -> tuple[list[int], list[bool]]:
    """Token ids of the pieces, and for each token whether it belongs to a Bot reply."""
    unique = list(dict.fromkeys(text for text, _ in segments))
    ids_of = dict(zip(unique, tokenizer.encode_batch(unique)))
    ids, bot = [], []
    for text, is_bot in segments:
        ids += ids_of[text]
        bot += [is_bot] * len(ids_of[text])
    return ids, bot


def encode_conversations(tokenizer, conversations: list[list[str]]) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids (N,) int64, bot_mask (N,) bool) of the conversations one after the other."""
    ids, bot = encode_segments(tokenizer, [s for turns in conversations for s in dialog_segments(turns)])
    return torch.tensor(ids, dtype=torch.long), torch.tensor(bot, dtype=torch.bool)


# -----------------------------------------------------------------------------
# Model and training configuration


@dataclass
class TinyGPTConfig:
    # data
    lang: str = "english"  # corpus language (a folder of chatterbot_corpus/data)
    topics: tuple[str, ...] = ()  # topic files to train on; empty = every topic of the language
    bot_only: bool = False  # learn only the Bot's replies: labels are -100 outside Bot turns
    val_fraction: float = 0.1  # share of conversations held out for validation
    # tokenizer
    tokenizer: str = "char"  # "char": one token per character; "bpe": byte-level BPE learned on the corpus
    bpe_vocab_size: int = 1000  # BPE vocabulary to learn (tokens)
    # model: transformers' GPT-2
    n_layer: int = 4  # transformer blocks
    n_head: int = 4  # attention heads per block
    n_embd: int = 128  # embedding width
    block_size: int = 64  # context length (tokens)
    dropout: float = 0.0  # dropout on embeddings, attention and residuals
    # training
    batch_size: int = 12  # windows per step
    learning_rate: float = 1e-3  # AdamW peak learning rate
    warmup_steps: int = 50  # linear warm-up from 0 to learning_rate
    min_lr_fraction: float = 0.1  # the cosine decay ends at this share of learning_rate, when the budget is used
    weight_decay: float = 0.1  # on weight matrices and embeddings only
    grad_clip: float = 1.0  # max gradient norm; 0 = off
    max_seconds: float = 120.0  # wall-clock budget of the whole run, resumes included (s)
    max_steps: int = 0  # stop after this many steps too; 0 = the budget alone decides
    log_interval: int = 10  # steps averaged into one point of the train-loss curve
    eval_interval: int = 100  # steps between validation evaluations
    eval_batches: int = 6  # fixed validation batches per evaluation (6 x 12 x 64 = 4,608 tokens by default)
    sample_interval: int = 250  # steps between samples of the timeline
    sample_tokens: int = 60  # tokens per sample (at most what the context leaves after the prompt)
    sample_temperature: float = 0.8  # temperature of the timeline's samples
    seed: int = 1337  # weights, batches and samples
    attn_implementation: str = "sdpa"  # "sdpa" (PyTorch's fused attention) or "eager"


# (low, high) of each number a user may set: sizes that train at a useful speed on 2 CPU cores
LIMITS = {
    "bpe_vocab_size": (512, 2000), "n_layer": (1, 8), "n_head": (1, 8), "n_embd": (16, 384),
    "block_size": (16, 256), "dropout": (0.0, 0.5), "batch_size": (1, 64), "learning_rate": (1e-5, 10.0),
    "max_seconds": (1.0, 3600.0), "max_steps": (0, 1_000_000), "val_fraction": (0.05, 0.5),
    "eval_batches": (1, 100), "log_interval": (1, 1000), "eval_interval": (1, 100_000),
    "sample_interval": (1, 100_000), "sample_tokens": (1, 256),
}


def validate(config: TinyGPTConfig) -> TinyGPTConfig:
    for name, (low, high) in LIMITS.items():
        value = getattr(config, name)
        if not low <= value <= high:
            raise TinyGPTError("bad_setting", f"{name} must be between {low:g} and {high:g} (got {value})",
                               name=name, low=low, high=high, value=value)
    if config.tokenizer not in TOKENIZERS:
        raise TinyGPTError("bad_setting", f"tokenizer must be one of {', '.join(TOKENIZERS)}",
                           name="tokenizer", low="char", high="bpe", value=config.tokenizer)
    if config.n_embd % config.n_head:
        raise TinyGPTError("heads", f"n_embd ({config.n_embd}) must be a multiple of n_head ({config.n_head})",
                           n_embd=config.n_embd, n_head=config.n_head)
    return config


def check_budget(config: TinyGPTConfig, vocab_size: int) -> None:
    steps = estimated_steps(config, vocab_size)
    if steps < MIN_STEPS:
        raise TinyGPTError("too_large", f"this model would take only about {steps} steps in {config.max_seconds:g} s "
                           f"(at least {MIN_STEPS} are needed): make it smaller or raise the budget",
                           steps=steps, seconds=config.max_seconds, minimum=MIN_STEPS)


def flops_per_step(config: TinyGPTConfig, vocab_size: int) -> float:
    """Forward + backward FLOPs of one step: 6 per parameter per token (matrices and the output layer) plus
    attention over the context."""
    tokens = config.batch_size * config.block_size
    matrix_params = 12 * config.n_layer * config.n_embd ** 2 + vocab_size * config.n_embd
    attention = 12 * config.n_layer * config.block_size * config.n_embd  # per token: QK^T and AV, fwd + bwd
    return 6 * tokens * matrix_params + tokens * attention


def estimated_steps(config: TinyGPTConfig, vocab_size: int) -> int:
    """Steps the budget allows at CPU_FLOPS."""
    return int(config.max_seconds * CPU_FLOPS / flops_per_step(config, vocab_size))


def build_model(config: TinyGPTConfig, vocab_size: int, newline_id: int) -> GPT2LMHeadModel:
    """A fresh GPT-2 of the configured size. The newline ends a turn, so it is also the end-of-text token."""
    gpt2 = GPT2Config(vocab_size=vocab_size, n_positions=config.block_size, n_embd=config.n_embd,
                      n_layer=config.n_layer, n_head=config.n_head, resid_pdrop=config.dropout,
                      embd_pdrop=config.dropout, attn_pdrop=config.dropout, bos_token_id=newline_id,
                      eos_token_id=newline_id, pad_token_id=newline_id, use_cache=False,
                      activation_function=ACTIVATION)
    gpt2._attn_implementation = config.attn_implementation
    model = GPT2LMHeadModel(gpt2)
    model.config.use_cache = False  # training: no key/value cache to build and throw away
    return model


def make_optimizer(model: torch.nn.Module, config: TinyGPTConfig) -> torch.optim.AdamW:
    """nanoGPT's AdamW: weight decay on 2-D tensors (matrices, embeddings), none on biases and layer norms."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": config.weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    try:
        return torch.optim.AdamW(groups, lr=config.learning_rate, betas=(0.9, 0.99), fused=True)
    except RuntimeError:  # no fused kernel for this device / build
        return torch.optim.AdamW(groups, lr=config.learning_rate, betas=(0.9, 0.99))


# -----------------------------------------------------------------------------
# The run


@dataclass(eq=False)
class TrainingRun:
    """One user's run: data, tokenizer, model, optimizer, history, and the stop flag the UI sets."""

    config: TinyGPTConfig
    corpus: Corpus
    tokenizer: CharTokenizer | BPETokenizer
    train_ids: torch.Tensor  # (N,) int64 token stream of the training conversations
    train_bot: torch.Tensor  # (N,) bool, True on tokens of Bot replies
    val_ids: torch.Tensor  # (M,) validation stream
    val_bot: torch.Tensor  # (M,)
    val_starts: torch.Tensor  # (eval_batches, batch_size) fixed window starts in the validation stream
    chars_per_token: torch.Tensor  # (vocab,) characters each token completes, for bits per character
    model: GPT2LMHeadModel
    optimizer: torch.optim.AdamW
    sample_prompt: str  # fixed prompt of the sample timeline, in the training format
    stop: threading.Event = field(default_factory=threading.Event)
    generator: torch.Generator = field(default_factory=torch.Generator)  # batch sampling
    status: str = "ready"  # ready | running | stopped | finished | diverged
    message: str = ""  # why the last training segment ended, in English
    step: int = 0  # optimizer steps taken
    train_seconds: float = 0.0  # wall-clock time in train(), evaluations and samples included (s)
    segment_steps: int = 0  # steps of the latest train() call
    segment_seconds: float = 0.0  # its duration (s)
    train_losses: list[tuple[int, float]] = field(default_factory=list)  # (step, mean loss of log_interval steps)
    val_losses: list[tuple[int, float, float]] = field(default_factory=list)  # (step, nats per token, bits/char)
    samples: list[tuple[int, str]] = field(default_factory=list)  # (step, generated continuation)
    diverged_at: int | None = None  # step whose loss window held a NaN/inf
    good_state: dict | None = None  # copy of the last state with a finite validation loss, restored on NaN

    @property
    def params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    @property
    def iterations_per_second(self) -> float:
        return self.segment_steps / self.segment_seconds if self.segment_seconds > 0 else 0.0

    @property
    def progress(self) -> float:
        """Fraction of the run done in [0, 1]: of the time budget, or of max_steps when that comes first."""
        by_time = self.train_seconds / self.config.max_seconds
        by_steps = self.step / self.config.max_steps if self.config.max_steps else 0.0
        return min(1.0, max(by_time, by_steps))

    @property
    def running(self) -> bool:
        return self.status == "running"

    @property
    def trained(self) -> bool:
        return self.step > 0 and not self.running


def new_run(config: TinyGPTConfig) -> TrainingRun:
    """Validate the settings, load the corpus, learn the tokenizer, and build a fresh model and optimizer."""
    validate(config)
    corpus = load_corpus(config.lang, config.topics, config.val_fraction)
    if not corpus.train:
        raise TinyGPTError("no_text", f"no usable conversations in the chosen {config.lang} topics")
    # BPE merges are learned from the training conversations only; the character alphabet covers all of them,
    # so validation text never falls back to the unknown character
    learn_from = corpus.train if config.tokenizer == "bpe" else corpus.train + corpus.val
    texts = [text for turns in learn_from for text, _ in dialog_segments(turns)]
    tokenizer = TOKENIZERS[config.tokenizer].train(texts, config.bpe_vocab_size)
    check_budget(config, tokenizer.vocab_size)
    train_ids, train_bot = encode_conversations(tokenizer, corpus.train)
    val_ids, val_bot = encode_conversations(tokenizer, corpus.val)
    need = config.block_size + 2
    if len(train_ids) < need or len(val_ids) < need:
        raise TinyGPTError("too_little_text", f"too little text: {len(train_ids)} training and {len(val_ids)} "
                           f"validation tokens, each needs more than {need} for a context of {config.block_size}: "
                           "pick more topics or a shorter context", train=len(train_ids), val=len(val_ids), need=need)
    with torch.random.fork_rng(devices=[]):  # transformers' init draws from the global generator: seed it only here
        torch.manual_seed(config.seed)
        model = build_model(config, tokenizer.vocab_size, tokenizer.newline_id)
    fixed = torch.Generator().manual_seed(config.seed + 1)
    val_starts = torch.randint(len(val_ids) - config.block_size - 1, (config.eval_batches, config.batch_size),
                               generator=fixed)
    first_turn = SAMPLE_MESSAGES.get(config.lang) or corpus.train[0][0]
    run = TrainingRun(config=config, corpus=corpus, tokenizer=tokenizer, train_ids=train_ids, train_bot=train_bot,
                      val_ids=val_ids, val_bot=val_bot, val_starts=val_starts,
                      chars_per_token=torch.tensor(tokenizer.chars_per_token(), dtype=torch.long), model=model,
                      optimizer=make_optimizer(model, config),
                      sample_prompt="".join(t for t, _ in prompt_segments([], first_turn)))
    run.generator.manual_seed(config.seed)
    return run


def batch_at(run: TrainingRun, ids: torch.Tensor, bot: torch.Tensor, starts: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs x (B, T) and targets y (B, T) (y = x shifted by one; -100 where the loss ignores it)."""
    index = starts[:, None] + torch.arange(run.config.block_size)  # (B, T)
    x, y = ids[index], ids[index + 1]
    if run.config.bot_only:
        y = y.masked_fill(~bot[index + 1], -100)
    return x, y


def get_batch(run: TrainingRun) -> tuple[torch.Tensor, torch.Tensor]:
    """nanoGPT's get_batch: batch_size random windows of the training stream."""
    starts = torch.randint(len(run.train_ids) - run.config.block_size - 1, (run.config.batch_size,),
                           generator=run.generator)
    return batch_at(run, run.train_ids, run.train_bot, starts)


def loss_of(model: GPT2LMHeadModel, x: torch.Tensor, y: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy (nats) of next-token predictions; positions with target -100 don't count. Computed here
    rather than by passing labels, which would shift them again and predict one position less."""
    logits = model(input_ids=x).logits  # (B, T, vocab)
    loss = F.cross_entropy(logits.view(-1, logits.size(-1)), y.view(-1), ignore_index=-100, reduction="sum")
    return loss if reduction == "sum" else loss / (y != -100).sum().clamp_min(1)


def training_step(run: TrainingRun, lr: float) -> torch.Tensor:
    """One AdamW step on a fresh batch; returns the batch loss (a tensor: reading it is the caller's choice)."""
    model, optimizer = run.model, run.optimizer
    for group in optimizer.param_groups:
        group["lr"] = lr
    x, y = get_batch(run)
    loss = loss_of(model, x, y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if run.config.grad_clip:
        torch.nn.utils.clip_grad_norm_(model.parameters(), run.config.grad_clip)
    optimizer.step()
    return loss.detach()


def learning_rate(config: TinyGPTConfig, step: int, progress: float) -> float:
    """nanoGPT's schedule on the run's clock: linear warm-up over the first steps, then a cosine from the peak
    down to min_lr_fraction of it as `progress` (share of the budget used) goes from 0 to 1."""
    if step < config.warmup_steps:
        return config.learning_rate * (step + 1) / config.warmup_steps
    floor = config.learning_rate * config.min_lr_fraction
    return floor + (config.learning_rate - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


@torch.no_grad()
def evaluate(run: TrainingRun, split: str = "val") -> tuple[float, float]:
    """Loss on the fixed evaluation windows of the validation stream (or of the training stream, for the train
    curve's step-0 point): (nats per target token, bits per character of those targets)."""
    ids, bot = (run.val_ids, run.val_bot) if split == "val" else (run.train_ids, run.train_bot)
    run.model.eval()
    nats, tokens, chars = 0.0, 0, 0
    for starts in run.val_starts:
        x, y = batch_at(run, ids, bot, starts)
        kept = y != -100
        nats += loss_of(run.model, x, y, reduction="sum").item()
        tokens += int(kept.sum())
        chars += int(run.chars_per_token[y[kept]].sum())
    run.model.train()
    if tokens == 0:
        return math.nan, math.nan
    return nats / tokens, nats / math.log(2) / max(chars, 1)


@torch.no_grad()
def generate(model: GPT2LMHeadModel, tokenizer, prompt_ids: list[int], max_new_tokens: int, temperature: float,
             stop_at_newline: bool, seed: int | None = None) -> str:
    """Sample a continuation (decoded, without the prompt). The prompt is cut from the left to leave room in
    the context; `seed` makes it reproducible without touching the training's random stream."""
    block = model.config.n_positions
    max_new_tokens = max(1, min(max_new_tokens, block - 1))
    prompt_ids = prompt_ids[-(block - max_new_tokens):]
    was_training = model.training
    model.eval()
    # sampling draws from this call's own generator (seeded, or fresh for chat), never torch's global one
    from transformers import LogitsProcessorList, TemperatureLogitsWarper

    from chat.generation import SampleWithGenerator, sampling_generator

    processors = LogitsProcessorList()
    if temperature > 0:
        processors += [TemperatureLogitsWarper(temperature), SampleWithGenerator(sampling_generator(seed))]
    out = model.generate(torch.tensor([prompt_ids]), max_new_tokens=max_new_tokens, use_cache=True,
                         eos_token_id=tokenizer.newline_id if stop_at_newline else None,
                         pad_token_id=tokenizer.newline_id, do_sample=False, logits_processor=processors,
                         temperature=None, top_k=None, top_p=None)
    model.train(was_training)
    return tokenizer.decode(out[0, len(prompt_ids):].tolist())


def add_sample(run: TrainingRun) -> None:
    ids = run.tokenizer.encode(run.sample_prompt)
    room = run.config.block_size - len(ids)
    text = generate(run.model, run.tokenizer, ids, min(run.config.sample_tokens, max(room, 8)),
                    run.config.sample_temperature, stop_at_newline=False, seed=run.config.seed)
    run.samples.append((run.step, text))


def _save_good_state(run: TrainingRun) -> None:
    run.good_state = {
        "step": run.step, "model": {k: v.detach().clone() for k, v in run.model.state_dict().items()},
        "optimizer": copy.deepcopy(run.optimizer.state_dict()), "rng": run.generator.get_state(),
        "curves": (len(run.train_losses), len(run.val_losses), len(run.samples)),
    }


def _restore_good_state(run: TrainingRun) -> None:
    good = run.good_state
    run.model.load_state_dict(good["model"])
    run.optimizer.load_state_dict(good["optimizer"])
    run.generator.set_state(good["rng"])
    run.step = good["step"]
    n_train, n_val, n_samples = good["curves"]
    del run.train_losses[n_train:], run.val_losses[n_val:], run.samples[n_samples:]


def _checkpoint(run: TrainingRun) -> None:
    """Validation point (+ the good-state copy when finite)."""
    val_loss, bpc = evaluate(run)
    run.val_losses.append((run.step, val_loss, bpc))
    if math.isfinite(val_loss):
        _save_good_state(run)


def _log_train_loss(run: TrainingRun, loss_sum: torch.Tensor, count: int) -> bool:
    """One point of the train curve: the mean loss of the last `count` steps (the one read of the loss per
    log_interval steps). A NaN/inf there ends the run as diverged, back at the last good state: returns False."""
    mean = loss_sum.item() / count
    if math.isfinite(mean):
        run.train_losses.append((run.step, mean))
        return True
    run.diverged_at = run.step
    _restore_good_state(run)
    run.status = "diverged"
    run.message = (f"the loss became NaN/inf by step {run.diverged_at} (learning rate {run.config.learning_rate:g} "
                   f"too high?); the model is back at step {run.step}")
    return False


@budget.holds("training")
def train(run: TrainingRun, update_every_s: float = 0.5) -> Iterator[TrainingRun]:
    """The app's training loop; resumes where the run is. Yields `run` at most every `update_every_s` seconds
    (and once right after the step-0 evaluation and sample). Ends, with `run.status` and `run.message` saying why,
    when the budget or max_steps is reached, `run.stop` is set, or the loss becomes NaN/inf (status "diverged":
    the model goes back to the last state with a finite validation loss). Closing the generator stops the run."""
    config, model = run.config, run.model
    if run.progress >= 1.0:
        run.status, run.message = "finished", "the budget is used up: raise it to train more"
        yield run
        return
    run.status, run.message = "running", ""
    run.stop.clear()
    model.train()
    start = last_update = time.perf_counter()
    run.segment_steps, run.segment_seconds = 0, 0.0
    seconds_before = run.train_seconds
    early_evals = {config.eval_interval // 4, config.eval_interval // 2} - {0}  # the first fast drop shows too
    try:
        if run.step == 0 and not run.val_losses:
            run.train_losses.append((0, evaluate(run, "train")[0]))  # both curves start at step 0
            _checkpoint(run)
            add_sample(run)
            yield run
        loss_sum, loss_count = torch.zeros(()), 0
        while True:
            now = time.perf_counter()
            run.train_seconds = seconds_before + now - start
            run.segment_seconds = now - start
            if run.stop.is_set():
                run.status, run.message = "stopped", f"stopped at step {run.step}"
                break
            if run.progress >= 1.0:
                run.status, run.message = "finished", f"finished: {run.step} steps in {run.train_seconds:.0f} s"
                break
            if now - last_update >= update_every_s:
                last_update = now
                yield run
            loss_sum += training_step(run, learning_rate(config, run.step, run.progress))
            loss_count += 1
            run.step += 1
            run.segment_steps += 1
            if loss_count == config.log_interval or run.step % config.eval_interval == 0:
                if not _log_train_loss(run, loss_sum, loss_count):
                    break
                loss_sum, loss_count = torch.zeros(()), 0
            if run.step % config.eval_interval == 0 or run.step in early_evals:
                _checkpoint(run)
            if run.step % config.sample_interval == 0:
                add_sample(run)
        if loss_count and run.status != "diverged":
            _log_train_loss(run, loss_sum, loss_count)  # the steps since the last point
        now = time.perf_counter()
        run.train_seconds, run.segment_seconds = seconds_before + now - start, now - start
        if run.status != "diverged" and (not run.val_losses or run.val_losses[-1][0] != run.step):
            _checkpoint(run)  # the final point, so the curve ends where the model is
        if run.status != "diverged" and run.samples[-1][0] != run.step:
            add_sample(run)
    finally:
        model.eval()
        if run.status == "running":  # generator closed mid-run (the browser went away)
            run.status, run.message = "stopped", f"stopped at step {run.step}"
            run.stop.set()
    yield run


def train_plain(run: TrainingRun, seconds: float) -> float:
    """The benchmark's reference: the same model, optimizer and batches in a bare loop (no evaluation, samples,
    logging or progress). Continues the run's model. Returns iterations/s."""
    run.model.train()
    lr = run.config.learning_rate
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        training_step(run, lr)
        steps += 1
    elapsed = time.perf_counter() - start
    run.model.eval()
    return steps / elapsed


# -----------------------------------------------------------------------------
# Chat, save and load


def reply(model: GPT2LMHeadModel, tokenizer, history: list[tuple[str, str]], message: str,
          temperature: float = 0.8, max_new_tokens: int = 80) -> str:
    """The model's answer in the training format: prompt `...User: message\\nBot:`, stop at the newline (or
    at a "User:" it starts on its own)."""
    if not (clean_turn(message) or ""):
        raise TinyGPTError("empty_message", "type a message first")
    ids, _ = encode_segments(tokenizer, prompt_segments(history, message))
    block = model.config.n_positions
    room = max(block // 2, block - len(ids))  # the prompt keeps at least half the context
    text = generate(model, tokenizer, ids, min(max_new_tokens, room), temperature, stop_at_newline=True)
    return re.split(r"\n|User:", text, maxsplit=1)[0].strip()


def save_model(run: TrainingRun, folder: str | Path) -> Path:
    """transformers' save_pretrained folder + the tokenizer's files + tinygpt.json (tokenizer kind, format)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    run.model.save_pretrained(folder)
    run.tokenizer.save(folder)
    meta = {"tokenizer": run.tokenizer.kind, "format": "User: <message>\\nBot: <reply>\\n",
            "lang": run.config.lang, "topics": run.corpus.topics, "steps": run.step,
            "config": {k: v for k, v in asdict(run.config).items()}}
    (folder / TOKENIZER_META).write_text(json.dumps(meta, ensure_ascii=False, indent=1), encoding="utf-8")
    return folder


def load_model(folder: str | Path) -> tuple[GPT2LMHeadModel, CharTokenizer | BPETokenizer]:
    folder = Path(folder)
    meta = json.loads((folder / TOKENIZER_META).read_text(encoding="utf-8"))
    tokenizer = TOKENIZERS[meta["tokenizer"]].load(folder)
    model = GPT2LMHeadModel.from_pretrained(folder).eval()
    return model, tokenizer


def export_zip(run: TrainingRun, path: str | Path) -> Path:
    """The saved model folder as one zip file (what the Download button serves)."""
    path = Path(path)
    with tempfile.TemporaryDirectory() as tmp:
        folder = save_model(run, Path(tmp) / "tinygpt")
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
            for file in sorted(folder.iterdir()):
                archive.write(file, f"tinygpt/{file.name}")
    return path


# -----------------------------------------------------------------------------
# What the tab shows


def loss_frame(run: TrainingRun) -> pd.DataFrame:
    """Train and validation curves in long form: step, loss (nats per token), curve ("train" | "val")."""
    rows = [(s, loss, "train") for s, loss in run.train_losses]
    rows += [(s, loss, "val") for s, loss, _ in run.val_losses if math.isfinite(loss)]
    frame = pd.DataFrame(rows, columns=["step", "loss", "curve"])
    return frame.astype({"step": "int64", "loss": "float64", "curve": "str"})  # typed even when empty


def summary(run: TrainingRun) -> dict:
    """The run's figures (what the CLI prints with --json)."""
    last_val = run.val_losses[-1] if run.val_losses else (0, math.nan, math.nan)
    return {
        "lang": run.config.lang, "topics": run.corpus.topics, "tokenizer": run.tokenizer.kind,
        "vocab_size": run.tokenizer.vocab_size, "bot_only": run.config.bot_only,
        "conversations": run.corpus.conversations, "skipped_entries": run.corpus.skipped,
        "duplicates": run.corpus.duplicates,
        "train_tokens": len(run.train_ids), "val_tokens": len(run.val_ids), "params": run.params,
        "status": run.status, "message": run.message, "iterations": run.step,
        "seconds": round(run.train_seconds, 2), "iterations_per_second": round(run.iterations_per_second, 2),
        "train_loss": run.train_losses[-1][1] if run.train_losses else math.nan,
        "val_loss": last_val[1], "val_bits_per_char": last_val[2],
        "val_curve": [{"step": s, "loss": round(v, 4), "bits_per_char": round(b, 4)} for s, v, b in run.val_losses],
        "sample_prompt": run.sample_prompt,
        "samples": [{"step": s, "text": t} for s, t in run.samples],
    }


# -----------------------------------------------------------------------------
# CLI


def main(argv: list[str] | None = None) -> int:
    defaults = TinyGPTConfig()
    parser = argparse.ArgumentParser(prog="python -m chat.tinygpt", description=__doc__.splitlines()[0])
    parser.add_argument("--lang", default=defaults.lang, help=f"corpus language (default: {defaults.lang})")
    parser.add_argument("--topics", default="", help="comma-separated topics (default: all)")
    parser.add_argument("--tokenizer", choices=sorted(TOKENIZERS), default=defaults.tokenizer,
                        help=f"char: one token per character; bpe: byte-level BPE learned on the corpus "
                             f"(default: {defaults.tokenizer})")
    parser.add_argument("--bpe-vocab-size", type=int, default=defaults.bpe_vocab_size,
                        help=f"BPE vocabulary to learn (default: {defaults.bpe_vocab_size})")
    parser.add_argument("--bot-only", action="store_true", help="learn only the Bot's replies (masked loss)")
    parser.add_argument("--max-seconds", type=float, default=defaults.max_seconds,
                        help=f"training budget in seconds (default: {defaults.max_seconds:g})")
    parser.add_argument("--max-steps", type=int, default=defaults.max_steps,
                        help="stop after this many steps too; 0 = no limit (default: 0)")
    numbers = {"n_layer": "transformer blocks", "n_head": "attention heads", "n_embd": "embedding width",
               "block_size": "context length in tokens", "batch_size": "windows per step",
               "learning_rate": "AdamW learning rate", "dropout": "dropout probability",
               "eval_interval": "steps between validation losses", "sample_interval": "steps between samples",
               "seed": "random seed"}
    for name, what in numbers.items():
        default = getattr(defaults, name)
        parser.add_argument("--" + name.replace("_", "-"), type=type(default), default=default,
                            help=f"{what} (default: {default:g})")
    parser.add_argument("--save", default="", help="save the trained model to this folder")
    parser.add_argument("--json", action="store_true", help="print one JSON object at the end instead of progress")
    args = parser.parse_args(argv)
    names = {f.name for f in fields(TinyGPTConfig)}
    values = {k: v for k, v in vars(args).items() if k in names}
    values["topics"] = tuple(t.strip() for t in args.topics.split(",") if t.strip())
    try:
        run = new_run(TinyGPTConfig(**values))
    except (TinyGPTError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if not args.json:
        print(f"{run.corpus.conversations} conversations ({run.corpus.skipped} malformed entries skipped, "
              f"{run.corpus.duplicates} repeats dropped), "
              f"{run.tokenizer.kind} vocabulary {run.tokenizer.vocab_size}, {len(run.train_ids):,} training tokens, "
              f"{run.params:,} parameters")
    shown = 0
    for _ in train(run, update_every_s=2.0):
        if args.json:
            continue
        val = run.val_losses[-1] if run.val_losses else (0, math.nan, math.nan)
        train_loss = run.train_losses[-1][1] if run.train_losses else math.nan
        print(f"step {run.step:5d} | {run.train_seconds:6.1f} s | {run.iterations_per_second:5.1f} it/s | "
              f"train {train_loss:.3f} | val {val[1]:.3f} ({val[2]:.3f} bits/char)")
        for step, text in run.samples[shown:]:
            print(f"  sample @ {step}: {text!r}")
        shown = len(run.samples)
    if args.save:
        save_model(run, args.save)
    if args.json:
        print(json.dumps(summary(run), ensure_ascii=False))
    else:
        print(run.message)
    return 1 if run.status == "diverged" else 0


if __name__ == "__main__":
    sys.exit(main())
