"""Block-quantized weights and the C++ kernels that multiply with them.

The matrices are stored the way SmolLM2's GGUF stores them for llama.cpp: blocks of 32 consecutive columns of a
row, each with its own scale. The transformer layers are Q4_1 (4-bit codes q in 0..15, w = scale * q + min), the
embedding (and tied lm_head) Q8_0 (8-bit codes in -127..127, w = scale * q). The GGUF holds exactly those blocks,
so quantizing its dequantized fp32 weights again finds the same codes and scales: the decoder computes with the
model's own weights, bit for bit, while reading 4.5 (layers) and 8.5 (embedding) bits per weight instead of 32.
The products run in kernels.cpp (AVX2 integer dot products, see there), compiled once with the system's C++
compiler and called as the custom ops torch.ops.chatlab.q4_linear / q8_linear / attention / store.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import threading
from pathlib import Path

import torch

PACKAGE_FORMAT = 5  # bump when the compiled step's inputs, outputs or weight format change (5: batched rows)
BLOCK = 32  # columns per block (Q4_1 and Q8_0)


def pack_q4(weight: torch.Tensor) -> dict[str, torch.Tensor]:
    """fp32 (N, K) -> Q4_1 blocks: codes (N, K/32, 16) uint8 (byte j = q[j] | q[j+16] << 4), scales, mins (N, K/32)."""
    n, k = weight.shape
    blocks = weight.detach().float().reshape(n, k // BLOCK, BLOCK)
    low, high = blocks.amin(dim=-1), blocks.amax(dim=-1)
    scale = (high - low) / 15
    q = torch.round((blocks - low[..., None]) / scale.clamp_min(1e-30)[..., None]).clamp(0, 15).to(torch.uint8)
    return {"codes": (q[..., :16] | (q[..., 16:] << 4)).contiguous(), "scales": scale.contiguous(),
            "mins": low.contiguous()}


def pack_q8(weight: torch.Tensor) -> dict[str, torch.Tensor]:
    """fp32 (N, K) -> Q8_0 blocks: codes (N, K/32, 32) int8, scales (N, K/32)."""
    n, k = weight.shape
    blocks = weight.detach().float().reshape(n, k // BLOCK, BLOCK)
    scale = blocks.abs().amax(dim=-1) / 127
    q = torch.round(blocks / scale.clamp_min(1e-30)[..., None]).clamp(-127, 127).to(torch.int8)
    return {"codes": q.contiguous(), "scales": scale.contiguous()}


def dequantize(packed: dict[str, torch.Tensor], rows: torch.Tensor | None = None) -> torch.Tensor:
    """The fp32 matrix (N, K) of packed blocks, or only its `rows` (an int64 tensor) -> (len(rows), K)."""
    codes, scales, mins = packed["codes"], packed["scales"], packed.get("mins")
    if rows is not None:
        codes, scales, mins = codes[rows], scales[rows], None if mins is None else mins[rows]
    if mins is None:
        values = codes.to(torch.float32) * scales[..., None]
    else:
        q = torch.cat([codes & 0x0F, codes >> 4], dim=-1).to(torch.float32)
        values = q * scales[..., None] + mins[..., None]
    return values.reshape(codes.shape[0], -1)


def linear(x: torch.Tensor, packed: dict[str, torch.Tensor]) -> torch.Tensor:
    """x (K,) or a batch of rows (R, K) @ the packed matrix (N, K)^T -> (N,) or (R, N), with the C++ kernels
    (load_kernels() first)."""
    if "mins" in packed:
        return torch.ops.chatlab.q4_linear(x, packed["codes"], packed["scales"], packed["mins"])
    return torch.ops.chatlab.q8_linear(x, packed["codes"], packed["scales"])


KERNELS_SOURCE = Path(__file__).with_name("kernels.cpp")


def compiler() -> str | None:
    return next((c for c in (os.environ.get("CXX"), "g++", "c++") if c and shutil.which(c)), None)


def _kernel_flags() -> list[str]:
    vector = ["-mavx2", "-mfma"] if torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512") else []
    return ["-O3", "-shared", "-fPIC", "-std=c++20", "-fopenmp", *vector,
            f"-D_GLIBCXX_USE_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}"]


def kernels_path() -> Path:
    """Where the compiled kernels for this source, torch version and CPU live."""
    from chat.paths import cache_dir

    raw = f"{KERNELS_SOURCE.read_text()}:{torch.__version__}:{' '.join(_kernel_flags())}"
    return cache_dir("models") / f"chatlab-kernels{PACKAGE_FORMAT}-{hashlib.sha1(raw.encode()).hexdigest()[:12]}.so"


def build_kernels(target: Path) -> Path:
    """Compile kernels.cpp into `target` (~10 s; under a temporary name, then renamed). One g++ command
    rather than torch.utils.cpp_extension.load, which needs ninja on the PATH (absent from a bare venv or Space);
    its include paths are used."""
    import subprocess

    from torch.utils import cpp_extension

    cxx = compiler()
    if cxx is None:
        raise RuntimeError("no C++ compiler (g++) found")
    libraries = cpp_extension.library_paths()
    staging = target.with_name(f"{target.stem}.partial-{os.getpid()}.so")
    command = [cxx, *_kernel_flags(), *[f"-I{p}" for p in cpp_extension.include_paths()], str(KERNELS_SOURCE),
               "-o", str(staging), *[f"-L{p}" for p in libraries], *[f"-Wl,-rpath,{p}" for p in libraries],
               "-lc10", "-ltorch_cpu"]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        staging.unlink(missing_ok=True)
        raise RuntimeError(f"compiling {KERNELS_SOURCE.name} failed: {done.stderr.strip()[-800:]}")
    os.replace(staging, target)
    return target


_KERNELS_LOCK = threading.Lock()


def has_op(name: str) -> bool:
    return hasattr(torch.ops.chatlab, name)


def load_kernels(path: Path) -> None:
    """Register torch.ops.chatlab.* from the compiled library (once per process), with the shape rules export needs."""
    with _KERNELS_LOCK:
        if has_op("q4_linear"):
            return
        torch.ops.load_library(str(path))
        _register_shapes()


def _register_shapes() -> None:
    @torch.library.register_fake("chatlab::q4_linear")
    def _(x, codes, scales, mins):
        return x.new_empty(*x.shape[:-1], codes.shape[0])

    @torch.library.register_fake("chatlab::q8_linear")
    def _(x, codes, scales):
        return x.new_empty(*x.shape[:-1], codes.shape[0])

    @torch.library.register_fake("chatlab::attention")
    def _(q, k_new, v_new, k_cache, v_cache, slots, positions, layer, heads):
        return q.new_empty(q.shape)

