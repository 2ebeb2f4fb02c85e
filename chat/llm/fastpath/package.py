"""The compiled step: exported and compiled once with AOTInductor into a `.pt2` package cached next to the converted
model, loaded in well under a second on later starts. Anything that fails (an unsupported model, no C++ compiler,
a damaged package) leaves the plain path in use, with a printed note.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from chat.llm.fastpath.decoder import (Decoder, DecoderConfig, FastDecoder, decoder_config, eager_decoder,
                                      supported)
from chat.llm.fastpath.kernels import PACKAGE_FORMAT, build_kernels, compiler, kernels_path, load_kernels


def package_path(model) -> Path:
    """Where the compiled step for this model (or config), torch version and CPU lives (next to the converted
    model). The format is in the name: packages of other formats (older ChatLab versions sharing the cache) are
    neither read nor removed."""
    from chat.paths import cache_dir

    source = str(getattr(getattr(model, "config", model), "_name_or_path", "") or "model")
    raw = f"{PACKAGE_FORMAT}:{source}:{torch.__version__}:{torch.backends.cpu.get_cpu_capability()}:{kernels_path()}"
    name = Path(source).name or "model"
    return cache_dir("models") / f"{name}-fast{PACKAGE_FORMAT}-{hashlib.sha1(raw.encode()).hexdigest()[:12]}.pt2"


def _example_inputs(cfg: DecoderConfig) -> tuple:
    cache = torch.zeros(2, cfg.layers, cfg.kv_heads, 16, cfg.head_dim)
    return (torch.tensor([1, 2, 3]), torch.tensor([0, 0, 1]), torch.tensor([4, 5, 2]), torch.tensor([1, 2]),
            cache, cache.clone())


def build_package(model: nn.Module, target: Path, progress: Callable[[str], None] = print) -> Path:
    """Compile the kernels, export the decode step and compile it with AOTInductor into `target` (written under a
    temporary name, then renamed, so a crash never leaves a half-written package that looks complete)."""
    from torch.export import Dim

    start = time.perf_counter()
    kernels = kernels_path()
    if not kernels.exists():
        progress("Fast path: compiling the quantized matrix kernels (once; about 15 s)…")
        build_kernels(kernels)
    load_kernels(kernels)
    progress("Fast path: packing the weights into Q4_1 / Q8_0 blocks…")
    decoder = Decoder(model, kernels=True).eval()
    rows, outputs = Dim("rows", min=1, max=65_536), Dim("outputs", min=1, max=65_536)
    cache = {0: Dim("slots", min=1, max=4096), 3: Dim("context", min=2, max=1 << 20)}
    progress("Fast path: exporting the decode step…")
    with torch.no_grad():
        exported = torch.export.export(decoder, _example_inputs(decoder.config),
                                       dynamic_shapes=({0: rows}, {0: rows}, {0: rows}, {0: outputs}, cache, cache))
    progress("Fast path: compiling it to C++ with AOTInductor (once; about a minute on 2 cores)…")
    staging = target.with_name(f"{target.stem}.partial-{os.getpid()}.pt2")
    staging.unlink(missing_ok=True)
    torch._inductor.aoti_compile_and_package(exported, package_path=str(staging))
    os.replace(staging, target)
    prefix = target.name.split(f"-fast{PACKAGE_FORMAT}-")[0]
    for stale in [*target.parent.glob(f"{prefix}-fast{PACKAGE_FORMAT}-*.pt2"),
                  *target.parent.glob(f"chatlab-kernels{PACKAGE_FORMAT}-*.so")]:  # this format, earlier builds
        if stale not in (target, kernels) and ".partial-" not in stale.name:
            stale.unlink(missing_ok=True)
    progress(f"Fast path: compiled in {time.perf_counter() - start:.0f} s, cached in {target}")
    return target


def load_package(model, path: Path) -> FastDecoder:
    """The compiled step from its package (~0.4 s), after the kernels it calls. torch's C++ loader is used directly
    when present: importing torch._inductor for `aoti_load_package` alone adds ~1.2 s to every start, and its pytree
    wrapper runs per step."""
    load_kernels(kernels_path())
    loader_class = getattr(getattr(torch._C, "_aoti", None), "AOTIModelPackageLoader", None)
    if loader_class is None:
        runner = torch._inductor.aoti_load_package(str(path))
    else:
        loader = loader_class(str(path), "model", False, 1, -1)  # (path, model name, single-threaded, runners, device)

        def runner(*inputs):
            return loader.run(list(inputs))
    return FastDecoder(runner, decoder_config(model), "aoti")


def unavailable_reason(model, device: torch.device) -> str | None:
    """None when the fast path can run this model (a transformers model, or the config of an fp32 one)."""
    if device.type != "cpu":
        return f"it is for CPUs (the model is on {device.type})"
    if isinstance(model, nn.Module) and next(model.parameters()).dtype != torch.float32:
        return "it expects the fp32 model"
    if compiler() is None:
        return "no C++ compiler (g++) found"
    return supported(model)


def cached_decoder(model, device: torch.device,
                   progress: Callable[[str], None] = print) -> FastDecoder | None:
    """The fast decoder from its cached package, or None (not built yet, unavailable, or broken: say why)."""
    if unavailable_reason(model, device) is not None:
        return None
    path, kernels = package_path(model), kernels_path()
    if not (path.exists() and kernels.exists()):
        return None
    for damaged, load in ((kernels, lambda: load_kernels(kernels)), (path, lambda: load_package(model, path))):
        try:
            decoder = load()
        except Exception as error:  # from another build, or a damaged file: rebuild next time
            progress(f"Fast path: the cached {damaged.name} does not load ({error}); removing it.")
            damaged.unlink(missing_ok=True)
            return None
    return decoder


def prepare_decoder(model: nn.Module, device: torch.device,
                    progress: Callable[[str], None] = print) -> FastDecoder | None:
    """The fast decoder, building and caching its package first when needed; None (with a note) if it cannot."""
    reason = unavailable_reason(model, device)
    if reason is not None:
        progress(f"Fast path off: {reason}; chat uses transformers' generate.")
        return None
    found = cached_decoder(model, device, progress)
    if found is not None:
        return found
    try:
        return load_package(model, build_package(model, package_path(model), progress))
    except Exception as error:
        progress(f"Fast path unavailable ({type(error).__name__}: {str(error)[:300]}); chat uses transformers' "
                 "generate.")
        return None




_KERNELS_BUILD = threading.Lock()


def ensure_kernels(progress: Callable[[str], None] = print) -> Path:
    """The compiled kernels' path, compiling them first if they are not cached (one compile at a time: a start runs
    it early, beside the model's load, and whoever needs them next waits for it)."""
    with _KERNELS_BUILD:
        kernels = kernels_path()
        if not kernels.exists():
            progress("Fast path: compiling the quantized matrix kernels (once; about 15 s)…")
            build_kernels(kernels)
        return kernels


def serve_while_building(model: nn.Module, device: torch.device,
                         progress: Callable[[str], None] = print) -> FastDecoder | None:
    """The fast decoder for a start whose package is not cached yet (a first start, or a CPU of another class than
    the one it was built on): the C++ kernels, called op by op, serve as soon as they are compiled (seconds), while
    the compiled step builds in a child process at the lowest CPU priority, so that the people chatting meanwhile
    keep the cores; once built, it takes the kernels' place in the same FastDecoder between two steps (the serving
    engine never stops). None (with a note) when the fast path cannot run this model."""
    reason = unavailable_reason(model, device)
    if reason is not None:
        progress(f"Fast path off: {reason}; chat uses transformers' generate.")
        return None
    found = cached_decoder(model, device, progress)
    if found is not None:
        return found
    try:
        load_kernels(ensure_kernels(progress))
        decoder = eager_decoder(model, kernels=True)
    except Exception as error:
        progress(f"Fast path unavailable ({type(error).__name__}: {str(error)[:300]}); chat uses transformers' "
                 "generate.")
        return None
    progress("Fast path: the kernels serve now; the compiled step builds in the background (a minute or two).")
    threading.Thread(target=_compile_then_swap, args=(model, decoder, progress), name="chatlab-build-step",
                     daemon=True).start()
    return decoder


def _compile_then_swap(model: nn.Module, decoder: FastDecoder, progress: Callable[[str], None]) -> None:
    """Build the package in `python -m chat.llm.fastpath.package FOLDER` at nice 19, then load it into `decoder`."""
    target, folder = package_path(model), str(model.config._name_or_path)
    done = subprocess.run([sys.executable, "-m", "chat.llm.fastpath.package", folder], capture_output=True,
                          text=True, preexec_fn=_background_child)
    if done.returncode != 0 or not target.exists():
        progress(f"Fast path: the compiled step did not build ({done.stderr.strip()[-300:]}); the kernels keep "
                 "serving.")
        return
    try:
        compiled = load_package(model, target)
    except Exception as error:
        progress(f"Fast path: the compiled step does not load ({error}); the kernels keep serving.")
        return
    decoder.step, decoder.kind = compiled.step, compiled.kind  # the engine's next step runs it
    progress("Fast path: the compiled step serves now.")


def _background_child() -> None:
    """In the child, before it runs: the lowest CPU priority, and (Linux) ended with the app that started it."""
    os.nice(19)
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def main(argv: list[str] | None = None) -> int:
    """Build and cache the compiled step of the model in a folder (what serve_while_building runs)."""
    from transformers import AutoModelForCausalLM

    (folder,) = argv if argv is not None else sys.argv[1:]
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, local_files_only=True).eval()
    build_package(model, package_path(model), lambda line: print(line, file=sys.stderr))
    return 0


if __name__ == "__main__":
    sys.exit(main())
