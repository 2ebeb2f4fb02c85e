"""The compiled step: exported and compiled once with AOTInductor into a `.pt2` package cached next to the converted
model, loaded in well under a second on later starts. Anything that fails (an unsupported model, no C++ compiler,
a damaged package) leaves the plain path in use, with a printed note.
"""
from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from chat.llm.fastpath.decoder import Decoder, DecoderConfig, FastDecoder, decoder_config, supported
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


