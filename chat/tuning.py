"""Training the chat model with LoRA, live: what fine-tuning (chat.finetune) and human feedback (chat.feedback) share.

- `lora_model(loaded)`: a PEFT LoRA model built on the chat model's own weight tensors. The module tree is copied but
  its tensors are shared and never written: LoRA trains only its small A·B matrices (2.4 M numbers, ~10 MB, on the
  top 15 blocks), so the Chat tab's model is never changed and a tuned model costs megabytes, not another 540 MB copy.
- `start(run, trainer)`: a TRL trainer running in a thread, watched through TrainerCallback hooks (as TRL's own
  callbacks are): every step's logs, a stop that acts within one step, a time budget, and a NaN guard that restores
  the last adapter whose loss and weights were finite.
- One training run at a time on this machine (`training_slot`, which also holds the server's "training" slot that
  MNIST and Tiny GPT take, chat.budget): training takes both cores, so a second run is refused with a message saying
  which run is busy and for how long, never queued behind it silently.
- `TUNED`: this process's tuned models by browser session and kind ("sft", "dpo"), LRU-bounded; the Chat tab and the
  API chat with them.

Nothing here imports gradio.
"""
from __future__ import annotations

import copy
import gc
import math
import os
import tempfile
import threading
import time
import zipfile
from collections import OrderedDict
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch

# Training never needs the hub: no downloads, no telemetry (TRL's trainers ping the hub unless told not to).
# huggingface_hub reads these at import, which has already happened in the app, so its constants are set too.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TQDM_DISABLE", "1")  # TRL's reference pass draws a progress bar on the server's console
import huggingface_hub.constants as _hub  # noqa: E402

_hub.HF_HUB_OFFLINE = True
_hub.HF_HUB_DISABLE_TELEMETRY = True

from chat import budget  # noqa: E402
from chat.models import LoadedModel  # noqa: E402


class TuningError(ValueError):
    """Bad input or a refused run; `code` names the message (the UI translates it), `details` fills it in."""

    def __init__(self, code: str, message: str, **details):
        super().__init__(message)
        self.code = code
        self.details = details


# --- LoRA on shared weights ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoraSettings:
    r: int = 16  # rank of the update: each adapted matrix W becomes W + (alpha / r) · B·A with A (r, in), B (out, r)
    alpha: int = 32  # scale of the update
    dropout: float = 0.0  # dropout on the adapter's input (off: a dozen examples, a few dozen steps)
    target_modules: str = "all-linear"  # every linear layer of the adapted blocks (not the tied embedding / lm_head)
    layers: int = 0  # adapt only the top N blocks (0 = all): the backward pass then stops N blocks down


def lora_config(base: torch.nn.Module, settings: LoraSettings = LoraSettings()):
    """PEFT's LoraConfig for `settings` on `base` (a causal LM)."""
    from peft import LoraConfig

    depth = int(base.config.num_hidden_layers)
    targets, top = settings.target_modules, None
    if 0 < settings.layers < depth:  # PEFT takes a block subset only with named modules: the blocks' linear layers
        top = list(range(depth - settings.layers, depth))
        targets = sorted({name.rsplit(".", 1)[-1] for name, module in base.named_modules()
                          if isinstance(module, torch.nn.Linear) and ".layers." in name})
    return LoraConfig(r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                      target_modules=targets, layers_to_transform=top, task_type="CAUSAL_LM")


def lora_model(base: torch.nn.Module, settings: LoraSettings = LoraSettings(), seed: int = 0):
    """A PeftModel over a structural copy of `base` whose weights ARE base's tensors (shared, frozen).

    The copy has its own modules, so adapters, train/eval mode and `disable_adapter()` never touch `base`; the
    tensors are shared, so it costs only the adapter. Nothing may merge an adapter into these weights.
    """
    from peft import get_peft_model

    shared = {id(t): t for t in (*base.parameters(), *base.buffers())}
    body = copy.deepcopy(base, memo=shared)  # new modules, the same tensors
    with torch.random.fork_rng(devices=[]):  # the adapter's random init is reproducible and leaves others' RNG alone
        torch.manual_seed(seed)
        return get_peft_model(body, lora_config(base, settings))


def adapter_state(model) -> dict[str, torch.Tensor]:
    """A copy of the adapter's weights (the only ones that train)."""
    from peft import get_peft_model_state_dict

    return {name: t.detach().clone() for name, t in get_peft_model_state_dict(model).items()}


def load_adapter_state(model, state: dict[str, torch.Tensor]) -> None:
    from peft import set_peft_model_state_dict

    with torch.no_grad():
        set_peft_model_state_dict(model, state)


def adapter_is_finite(model) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters() if p.requires_grad)


def cpu_training_args(**overrides) -> dict:
    """The TrainingArguments every ChatLab run shares: on a CPU, offline, a log line per step.

    TRL's defaults are for GPUs: bf16 (emulated, ~6x slower on AVX2-only CPUs) and activation checkpointing (~20%
    slower; a 135 M model's activations fit). NaN losses are logged as NaN (the Trainer's default hides them behind
    an average) so the NaN guard sees them. Nothing is saved, reported or uploaded.
    """
    args = dict(
        output_dir=str(Path(tempfile.gettempdir()) / "chatlab-train"),  # stays empty (save_strategy="no")
        use_cpu=not torch.cuda.is_available(), bf16=False, fp16=False, activation_checkpointing=False,
        report_to="none", save_strategy="no", logging_steps=1, logging_nan_inf_filter=False, disable_tqdm=True,
        lr_scheduler_type="constant", warmup_steps=0, dataloader_num_workers=0, seed=0, max_grad_norm=1.0,
    )
    args.update(overrides)
    return args


# --- one live run -------------------------------------------------------------------------------------------------


FINISHED = ("done", "stopped", "timeout", "diverged", "error")


@dataclass
class LiveRun:
    """A training run watched by the UI: status, per-step logs and timing, and the model being trained."""

    kind: str  # "sft" or "dpo"
    max_steps: int
    max_seconds: float  # training stops when this much time has passed, whatever the step
    session: str | None = None  # the browser (or API client) session the tuned model is published for
    model: object = None  # the PeftModel being trained
    status: str = "starting"  # starting -> training -> done | stopped | timeout | diverged | error
    step: int = 0
    logs: list[dict] = field(default_factory=list)  # one per step: {"step", "loss", ...} as the trainer logged it
    error: str = ""
    diverged_at: int = 0  # the step whose loss or weights were not finite (the adapter before it is kept)
    restored_step: int = 0  # the step of the adapter kept after a divergence
    started: float = 0.0  # time.monotonic() when the first step began
    finished: float = 0.0
    stop: threading.Event = field(default_factory=threading.Event)
    abandoned: bool = False  # nobody watches any more (the browser closed): stop, skip the comparison, keep nothing
    thread: threading.Thread | None = None
    good_adapter: dict | None = field(default=None, repr=False)  # the last adapter with a finite loss
    good_step: int = 0

    @property
    def running(self) -> bool:
        return self.status not in FINISHED

    def abandon(self) -> None:
        """The watcher went away: stop within a step, skip the comparison, and forget the tuned model."""
        self.abandoned = True
        self.stop.set()
        TUNED.drop(self.session, self.kind)

    @property
    def elapsed(self) -> float:
        if not self.started:
            return 0.0
        return (self.finished or time.monotonic()) - self.started

    @property
    def steps_per_second(self) -> float:
        return self.step / self.elapsed if self.step and self.elapsed > 0 else 0.0

    @property
    def trained(self) -> bool:
        """A usable adapter exists (at least one good step)."""
        return self.good_step > 0 and self.status != "error"

    def wait(self, timeout: float | None = None) -> None:
        if self.thread is not None:
            self.thread.join(timeout)

    def first(self, key: str) -> float:
        values = [entry[key] for entry in self.logs if key in entry]
        return values[0] if values else math.nan

    def last(self, key: str) -> float:
        values = [entry[key] for entry in self.logs if key in entry]
        return values[-1] if values else math.nan


def _live_callback(run: LiveRun):
    from transformers import TrainerCallback

    class LiveCallback(TrainerCallback):
        """Feeds `run` from the trainer's hooks; stops on request, on the time budget, or on a non-finite loss."""

        def on_train_begin(self, args, state, control, **kwargs):
            run.started = time.monotonic()
            run.status = "training"
            run.good_adapter = adapter_state(run.model)

        def on_step_end(self, args, state, control, **kwargs):
            run.step = state.global_step
            if run.step >= run.max_steps:
                return
            if run.stop.is_set():
                run.status = "stopped"
                control.should_training_stop = True
            elif time.monotonic() - run.started >= run.max_seconds:
                run.status = "timeout"
                control.should_training_stop = True

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not logs or "loss" not in logs:  # the end-of-training summary ("train_loss", ...) is not a step
                return
            entry = {"step": state.global_step, "seconds": round(time.monotonic() - run.started, 3), **logs}
            run.logs.append(entry)
            numbers = [v for v in logs.values() if isinstance(v, float)]
            if all(math.isfinite(v) for v in numbers) and adapter_is_finite(run.model):
                run.good_adapter, run.good_step = adapter_state(run.model), state.global_step
                return
            run.diverged_at, run.restored_step = state.global_step, run.good_step
            load_adapter_state(run.model, run.good_adapter)
            run.status = "diverged"
            control.should_training_stop = True

    return LiveCallback()


def start(run: LiveRun, make_trainer, on_done=None) -> LiveRun:
    """Run `make_trainer(callback).train()` in a thread; the caller holds a training slot, released at the end.

    `make_trainer` builds the trainer inside the thread (dataset tokenization and the reference pass count as part
    of the run). `on_done(run)` runs in the thread after training (evaluation, publishing the tuned model).
    """
    from transformers.trainer_callback import PrinterCallback

    callback = _live_callback(run)

    def work():
        import datasets

        datasets.disable_progress_bars()  # the tokenizing bars would go to the server's console
        trainer = None
        try:
            trainer = make_trainer(callback)
            trainer.remove_callback(PrinterCallback)  # the logs go to the run, not to the server's console
            if not run.stop.is_set():
                trainer.train()
            if run.status in ("starting", "training"):
                run.status = "done" if run.step >= run.max_steps else "stopped"
        except BaseException as error:  # shown to the user, never lost in the thread
            run.status, run.error = "error", f"{type(error).__name__}: {error}"
        finally:
            run.finished = time.monotonic() if run.started else 0.0
            if trainer is not None:  # the optimizer state, dataloaders and accelerator go now, not at the next GC
                trainer.accelerator.free_memory()
                del trainer
            if run.model is not None:
                run.model.eval()
            gc.collect()
            try:
                if on_done is not None and run.trained and not run.abandoned:
                    on_done(run)
            except BaseException as error:
                run.error = f"{type(error).__name__}: {error}"
            finally:
                _SLOT.release(run)

    run.thread = threading.Thread(target=work, name=f"chatlab-train-{run.kind}", daemon=True)
    run.thread.start()
    return run


# --- one run at a time ----------------------------------------------------------------------------------------------


class _TrainingSlot:
    """At most one ChatLab fine-tuning / RLHF run trains at a time: it uses both cores, a second would halve both."""

    def __init__(self):
        self._lock = threading.Lock()
        self.holder: LiveRun | None = None

    def acquire(self, run: LiveRun) -> None:
        with self._lock:
            busy = self.holder
            if busy is None:
                if not budget.try_take("training"):  # the server's training slot: MNIST or Tiny GPT is training
                    raise TuningError("busy_other", "Another training run (MNIST or Tiny GPT) is using this machine's "
                                      "CPU; one run trains at a time. Start yours when it ends.")
                self.holder = run
                return
        raise self.refusal(busy)

    @staticmethod
    def refusal(busy: LiveRun) -> TuningError:
        left = max(5.0, busy.max_seconds - busy.elapsed)  # past its budget it is comparing answers: seconds more
        return TuningError("busy", f"Another training run ({busy.kind}) is using this machine's CPU; one run trains "
                           f"at a time. It ends within {left:.0f} s: start yours then.", kind=busy.kind, seconds=left)

    def release(self, run: LiveRun) -> None:
        with self._lock:
            if self.holder is run:
                self.holder = None
                budget.give_back("training")

    @property
    def busy(self) -> bool:
        return self.holder is not None


_SLOT = _TrainingSlot()


def training_slot(run: LiveRun) -> None:
    """Claim the machine's one training slot for `run` or raise TuningError("busy"); `start` releases it."""
    _SLOT.acquire(run)


def release_slot(run: LiveRun) -> None:
    """Give the slot back when a run fails before `start` (start releases it itself)."""
    _SLOT.release(run)


def training_busy() -> bool:
    return _SLOT.busy


def refuse_if_busy() -> None:
    """Raise the busy TuningError now, before any work (a reward model fit) that a refused run would waste."""
    busy = _SLOT.holder
    if busy is not None:
        raise _SLOT.refusal(busy)


# The bounds every training run shares (what a remote user can start is bounded in size and time).
LIMITS = {
    "max_steps": (1, 200),
    "batch_size": (1, 16),
    "lora_r": (1, 64),
    "lora_layers": (0, 64),
    "max_seconds": (5.0, 300.0),
    "seed": (0, 2**31 - 1),
}


def check_settings(settings, limits: dict[str, tuple[float, float]]):
    """Every field of a settings dataclass within its (low, high) limits, and whole where the field is an int;
    else TuningError("setting") naming the field and its range. Returns `settings`."""
    for f in fields(settings):
        value, (low, high) = getattr(settings, f.name), limits[f.name]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value) \
                or not low <= value <= high:
            raise TuningError("setting", f"{f.name} must be between {low} and {high}, got {value!r}",
                              name=f.name, low=low, high=high, value=value)
        if f.type in ("int", int) and value != int(value):
            raise TuningError("setting", f"{f.name} must be a whole number, got {value!r}",
                              name=f.name, low=low, high=high, value=value)
    return settings


# --- tuned models, per browser session -------------------------------------------------------------------------------


@dataclass
class TunedModel:
    kind: str  # "sft" or "dpo"
    title: str  # for people: "SmolLM2-135M-Instruct + LoRA (identity)"
    loaded: LoadedModel  # generation.stream_chat runs it like the chat model (transformers path)
    summary: dict = field(default_factory=dict)  # what it learned: preset, steps, losses

    @property
    def model(self):
        return self.loaded.model


def tuned_view(base: LoadedModel, model, kind: str, title: str) -> LoadedModel:
    """`model` (a PeftModel on base's weights) in the shape the chat code runs: plain transformers generate."""
    from concurrent.futures import Future

    ready = Future()
    ready.set_result(model)
    return LoadedModel(f"{base.name}+{kind}", title, ready, base.tokenizer, base.device, base.dtype,
                       base.context_window, 0.0, "tuned", base.stop_ids, None)


class TunedModels:
    """Tuned models by (session, kind), least recently used first; at most `limit` are kept (each ~20 MB)."""

    def __init__(self, limit: int = 24):
        self.limit = limit
        self._items: OrderedDict[tuple[str, str], TunedModel] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, session: str, tuned: TunedModel) -> None:
        with self._lock:
            self._items[(session, tuned.kind)] = tuned
            self._items.move_to_end((session, tuned.kind))
            while len(self._items) > self.limit:
                self._items.popitem(last=False)

    def get(self, session: str | None, kind: str) -> TunedModel | None:
        with self._lock:
            tuned = self._items.get((session, kind))
            if tuned is not None:
                self._items.move_to_end((session, kind))
            return tuned

    def drop(self, session: str | None, kind: str | None = None) -> None:
        with self._lock:
            for key in [k for k in self._items if k[0] == session and kind in (None, k[1])]:
                del self._items[key]

    def __len__(self) -> int:
        return len(self._items)


TUNED = TunedModels()


# --- answers, before and after ------------------------------------------------------------------------------------


@torch.inference_mode()
def greedy_answers(model, tokenizer, conversations: list[list[dict]], max_new_tokens: int = 64,
                   batch_size: int = 8) -> list[str]:
    """Greedy replies to several conversations, batched (left padding): the before/after tables and the CLI."""
    texts = [tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in conversations]
    answers = []
    was_training = getattr(model, "training", False)
    model.eval()
    try:
        for start_at in range(0, len(texts), batch_size):
            batch = tokenizer(texts[start_at:start_at + batch_size], return_tensors="pt", padding=True,
                              padding_side="left", add_special_tokens=False, split_special_tokens=False)
            batch = {k: v.to(model.device) for k, v in batch.items()}
            out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False, temperature=None,
                                 top_p=None, top_k=None, pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
            width = batch["input_ids"].shape[1]
            answers += [tokenizer.decode(row[width:], skip_special_tokens=True).strip() for row in out]
    finally:
        model.train(was_training)
    return answers


class AnswerCache:
    """The original model's greedy answers are the same every time: keep the recent ones (the 'before' column)."""

    def __init__(self, limit: int = 512):
        self.limit = limit
        self._items: OrderedDict[tuple, str] = OrderedDict()
        self._lock = threading.Lock()

    def answers(self, base: LoadedModel, conversations: list[list[dict]], max_new_tokens: int) -> list[str]:
        keys = [(base.name, max_new_tokens, tuple((m["role"], m["content"]) for m in c)) for c in conversations]
        with self._lock:
            missing = [i for i, key in enumerate(keys) if key not in self._items]
        if missing:
            found = greedy_answers(base.model, base.tokenizer, [conversations[i] for i in missing], max_new_tokens)
            with self._lock:
                for i, answer in zip(missing, found):
                    self._items[keys[i]] = answer
                while len(self._items) > self.limit:
                    self._items.popitem(last=False)
        with self._lock:
            return [self._items[key] for key in keys]


BEFORE = AnswerCache()


def zip_adapter(model, path: Path, extra: dict[str, str] | None = None) -> Path:
    """The adapter as PEFT saves it (adapter_config.json + adapter_model.safetensors), plus notes, zipped."""
    with tempfile.TemporaryDirectory(prefix="chatlab-adapter-") as folder:
        model.save_pretrained(folder)
        for name, text in (extra or {}).items():
            Path(folder, name).write_text(text, encoding="utf-8")
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
            for file in sorted(Path(folder).iterdir()):
                archive.write(file, f"adapter/{file.name}")
    return path

