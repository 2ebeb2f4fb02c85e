"""LoRA on the chat model, trained live with TRL: what fine-tuning (chat.finetune) and human feedback
(chat.feedback) share.

- `lora_model(base)`: a PEFT LoRA model built on the chat model's own weight tensors. The module tree is copied but
  its tensors are shared and never written: LoRA trains only its small A·B matrices (2.4 M numbers, ~10 MB, on the
  top 15 blocks), so the Chat tab's model is never changed and a tuned model costs megabytes, not another 540 MB copy.
- `start(run, make_trainer)`: a TRL trainer running in a thread, watched through TrainerCallback hooks (as TRL's own
  callbacks are): every step's logs, a stop that acts within one step, the time budget, and a NaN guard that
  restores the last adapter whose loss and weights were finite. The run holds the machine's one training slot.
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
from dataclasses import dataclass, field
from pathlib import Path

import torch

from chat.llm.backends import TUNED, TunedModel, tuned_view
from chat.training import run as runs
from chat.training.run import Run, TrainingError

# The bounds every LoRA run shares (what a remote user can start is bounded in size and time).
MAX_CHARS = 1500  # per prompt, response or answer in the data: longer is refused, never silently cut
LIMITS = {
    "max_steps": (1, 200),
    "batch_size": (1, 16),
    "lora_r": (1, 64),
    "lora_layers": (0, 64),
    "max_seconds": (5.0, 300.0),
    "seed": (0, 2**31 - 1),
}


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




def offline() -> None:
    """Training never needs the hub: no downloads, no telemetry (TRL's trainers ping the hub unless told not to).
    huggingface_hub reads these variables when imported, which has already happened, so its constants are set too."""
    import huggingface_hub.constants as hub

    os.environ["HF_HUB_OFFLINE"] = os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TQDM_DISABLE", "1")  # TRL's reference pass draws a progress bar on the server's console
    hub.HF_HUB_OFFLINE = hub.HF_HUB_DISABLE_TELEMETRY = True


# --- one live run -------------------------------------------------------------------------------------------------


@dataclass(eq=False, kw_only=True)
class LoraRun(Run):
    """A LoRA training run watched by a tab: per-step logs, the model being trained, and its thread."""

    session: str | None = None  # the browser (or API client) session the tuned model is published for
    model: object = None  # the PeftModel being trained
    logs: list[dict] = field(default_factory=list)  # one per step: {"step", "loss", ...} as the trainer logged it
    error: str = ""
    abandoned: bool = False  # nobody watches any more (the browser closed): stop, skip the comparison, keep nothing
    thread: threading.Thread | None = None
    started: float = 0.0  # time.monotonic() when the first step began
    outcome: str | None = None  # why training ended ("stopped", "timeout", "diverged"); the status says it once the
    # answers before and after are in, so a tab never shows a final status while the run still evaluates

    what_trains = "adapter"  # what snapshot() copies, as the divergence message names it

    def snapshot(self):
        """A copy of the weights that train (the adapter's): the state the NaN guard comes back to."""
        return adapter_state(self.model)

    def restore(self, state) -> None:
        load_adapter_state(self.model, state)

    def weights_finite(self) -> bool:
        return adapter_is_finite(self.model)

    def abandon(self) -> None:
        """The watcher went away: stop within a step, skip the comparison, and forget the tuned model."""
        self.abandoned = True
        self.stop.set()
        TUNED.drop(self.session, self.kind)

    @property
    def trained(self) -> bool:
        """A usable adapter exists (at least one good step)."""
        return self.good_step > 0 and "error" not in (self.status, self.outcome)

    def wait(self, timeout: float | None = None) -> None:
        if self.thread is not None:
            self.thread.join(timeout)

    def first(self, key: str) -> float:
        values = [entry[key] for entry in self.logs if key in entry]
        return values[0] if values else math.nan

    def last(self, key: str) -> float:
        values = [entry[key] for entry in self.logs if key in entry]
        return values[-1] if values else math.nan


def _live_callback(run: LoraRun):
    from transformers import TrainerCallback

    class LiveCallback(TrainerCallback):
        """Feeds `run` from the trainer's hooks; stops on request, on the time budget, or on a non-finite loss."""

        def on_train_begin(self, args, state, control, **kwargs):
            run.started, run.status = time.monotonic(), "running"
            run.keep(run.snapshot())

        def on_step_end(self, args, state, control, **kwargs):
            run.step = state.global_step
            run.seconds = time.monotonic() - run.started
            if run.step >= run.max_steps:
                return
            reason = run.why_stop()
            if reason is not None:
                run.outcome = reason
                control.should_training_stop = True

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not logs or "loss" not in logs:  # the end-of-training summary ("train_loss", ...) is not a step
                return
            entry = {"step": state.global_step, "seconds": round(time.monotonic() - run.started, 3), **logs}
            run.logs.append(entry)
            numbers = [v for v in logs.values() if isinstance(v, float)]
            if all(math.isfinite(v) for v in numbers) and run.weights_finite():
                run.keep(run.snapshot())
                return
            run.step = state.global_step
            run.restore(run.diverge(f"a non-finite loss or weight at step {state.global_step}; "
                                    f"the {run.what_trains} of step {run.good_step} is kept"))
            run.outcome = "diverged"
            control.should_training_stop = True

    return LiveCallback()


def start(run: LoraRun, make_trainer, on_done=None) -> LoraRun:
    """Run `make_trainer(callback).train()` in a thread; `run` has claimed the training slot, released at the end.

    `make_trainer` builds the trainer inside the thread (dataset tokenization and the reference pass count as part
    of the run). `on_done(run)` runs in the thread after training (evaluation, publishing the tuned model).
    """
    from transformers.trainer_callback import PrinterCallback

    callback = _live_callback(run)

    def work():
        import datasets

        offline()
        datasets.disable_progress_bars()  # the tokenizing bars would go to the server's console
        trainer = None
        try:
            trainer = make_trainer(callback)
            trainer.remove_callback(PrinterCallback)  # the logs go to the run, not to the server's console
            if not run.stop.is_set():
                trainer.train()
            run.outcome = run.outcome or ("done" if run.step >= run.max_steps else "stopped")
        except BaseException as error:  # shown to the user, never lost in the thread
            run.outcome, run.error = "error", f"{type(error).__name__}: {error}"
        finally:
            if run.started:
                run.seconds = time.monotonic() - run.started
            if trainer is not None:  # the optimizer state, dataloaders and accelerator go now, not at the next GC
                trainer.accelerator.free_memory()
                del trainer
            if run.model is not None:
                run.model.eval()
            gc.collect()
            try:
                if on_done is not None and run.trained and not run.abandoned:
                    run.status = "evaluating"
                    on_done(run)
            except BaseException as error:
                run.error = f"{type(error).__name__}: {error}"
            finally:
                run.status = run.outcome
                runs.release(run)

    run.thread = threading.Thread(target=work, name=f"chatlab-train-{run.kind}", daemon=True)
    run.thread.start()
    return run


def settings_of(settings) -> LoraSettings:
    """The LoRA shape of a run's settings (an SFTSettings or a DPOSettings): rank r, alpha 2r, the top N blocks."""
    rank = int(settings.lora_r)
    return LoraSettings(r=rank, alpha=2 * rank, layers=int(settings.lora_layers))


def publish(run: LoraRun, base, title: str, summary: dict) -> None:
    """Make the run's tuned model the one its session chats with (the Chat tab's "sft" / "dpo" model)."""
    if run.session is not None and not run.abandoned:
        TUNED.put(run.session, TunedModel(run.kind, title, tuned_view(base, run.model, run.kind, title), summary))


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



def merged_base(base, tuned_model, title: str):
    """`base` (a LoadedModel) as a later stage starts from it: `tuned_model`'s adapter merged into a full copy of
    base's weights (DPO from the fine-tuned model: its original, its reference and its "before" answers are then the
    fine-tuned model). Costs one copy of the weights (~540 MB for SmolLM2 in fp32); base is untouched."""
    import dataclasses
    from concurrent.futures import Future

    from chat.llm.models import ReplyTracker

    model = copy.deepcopy(tuned_model).merge_and_unload()  # a deep copy owns its tensors: merging is safe here
    model.eval().requires_grad_(False)
    ready = Future()
    ready.set_result(model)
    return dataclasses.replace(base, name=f"{base.name} + {title}", title=title, transformers_model=ready,
                               source="tuned", fast=None, upcoming_fast=None, lock=threading.Lock(),
                               replies=ReplyTracker())


def load_adapter(base, path: str | Path, title: str = ""):
    """A saved adapter (a PEFT folder, or the tab's adapter.zip) merged onto base: see merged_base. TrainingError
    when the path holds no adapter or one made for another model."""
    from peft import PeftModel

    path = Path(path)
    with tempfile.TemporaryDirectory(prefix="chatlab-adapter-") as unpacked:
        folder = path
        if path.is_file() and zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                archive.extractall(unpacked)
            found = sorted(Path(unpacked).rglob("adapter_config.json"))
            folder = found[0].parent if found else Path(unpacked)
        if not (folder / "adapter_config.json").is_file():
            raise TrainingError("adapter", f"No adapter in {path}: expected a folder with adapter_config.json "
                                "(python -m chat.finetune --save DIR) or the Fine-tune tab's adapter.zip.",
                                path=str(path))
        try:
            tuned = PeftModel.from_pretrained(copy.deepcopy(base.model), folder)
        except (RuntimeError, ValueError, KeyError) as error:
            raise TrainingError("adapter", f"The adapter in {path} does not fit {base.title}: {error}",
                                path=str(path)) from None
    return merged_base(base, tuned, title or f"{base.title} + SFT ({path.name})")
