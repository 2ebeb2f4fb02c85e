"""The fast CPU decoder for Llama-style chat models: llama.cpp's quantized blocks, a static KV cache, one compiled
step per token.

Decoding one token of a 135 M model reads every weight once, so its speed is set by the bytes read, the work spent
unpacking them and per-op overhead. transformers' generate in fp32 reads 0.54 GB per token and runs ~500 Python-level
ops. This decoder keeps the weights as SmolLM2's GGUF holds them (Q4_1 blocks for the layers, Q8_0 for the
embedding; re-packed from the dequantized fp32 weights bit for bit, so nothing is approximated) and multiplies with
integer dot products in a small AVX2 kernel (chat/fastpath_kernels.cpp): ~0.09 GB per token. The whole step (30
layers and the tied lm_head) is one AOTInductor-compiled C++ function that calls those kernels as custom ops. The
prompt (prefill) runs on transformers' fp32 model (batched matmuls are fast there) and its KV cache is copied into
the decoder's static cache. Measured on a 2-core AVX2 CPU (`python -m chat.bench chat`): see the README.

What did not win here (AVX2, no AVX512/VNNI): fp16 weights with inductor's fp16 -> fp32 reduction (~60-80
tokens/s), the same Q4_1 blocks unpacked by inductor-generated code (compute-bound at ~15 G weights/s, no faster),
torch's `_weight_int8pack_mm` / `_weight_int4pack_mm_for_cpu` (5-10x slower), torch.ao dynamic int8 (per-tensor int8
activations changed the greedy output).

The kernels (~10 s) and the compiled step (~1 min on 2 cores, progress printed; the app keeps chatting on the plain
path meanwhile) are built once with `torch.export` + `torch._inductor.aoti_compile_and_package` and cached next to
the converted model; later starts load them in well under a second. The decode loop follows gpt-fast's
(pytorch-labs/gpt-fast `generate.py`): a static cache written at `pos`, one token per step. Anything that fails (an
unsupported model, no C++ compiler, a damaged package) leaves the plain path in use, with a printed note.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

PACKAGE_FORMAT = 5  # bump when the compiled step's inputs, outputs or weight format change (5: batched rows)


@dataclass(frozen=True)
class DecoderConfig:
    layers: int  # transformer blocks
    hidden: int  # model width
    heads: int  # query heads
    kv_heads: int  # key/value heads (grouped-query attention)
    head_dim: int  # width of one head
    vocab: int  # output logits
    eps: float  # RMSNorm epsilon
    rope_theta: float  # rotary base


def supported(model) -> str | None:
    """None when the decoder can run this model (a transformers model, or its config), else the reason it cannot."""
    config = getattr(model, "config", model)
    if getattr(config, "model_type", None) != "llama":
        return f"model type {getattr(config, 'model_type', '?')!r} (the fast path knows Llama-style models)"
    rope = getattr(config, "rope_parameters", None) or {"rope_type": "default"}
    if rope.get("rope_type", "default") != "default":
        return f"rope type {rope.get('rope_type')!r}"
    if getattr(config, "attention_bias", False) or getattr(config, "mlp_bias", False):
        return "linear layers with bias"
    if getattr(config, "hidden_act", "silu") != "silu":
        return f"activation {config.hidden_act!r}"
    cfg = decoder_config(model)
    widths = {"hidden size": cfg.hidden, "intermediate size": config.intermediate_size,
              "attention width": cfg.heads * cfg.head_dim}
    for what, size in widths.items():
        if size % BLOCK:
            return f"{what} {size} is not a multiple of {BLOCK} (the weights are stored in blocks of {BLOCK})"
    return None


def decoder_config(model) -> DecoderConfig:
    c = getattr(model, "config", model)
    rope = getattr(c, "rope_parameters", None) or {}
    theta = rope.get("rope_theta", getattr(c, "rope_theta", 10000.0))
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    return DecoderConfig(c.num_hidden_layers, c.hidden_size, c.num_attention_heads, c.num_key_value_heads,
                         head_dim, c.vocab_size, float(c.rms_norm_eps), float(theta))


# --- block-quantized weights and their kernels ---------------------------------------------------------------------
#
# The matrices are stored the way SmolLM2's GGUF stores them for llama.cpp: blocks of 32 consecutive columns of a
# row, each with its own scale. The transformer layers are Q4_1 (4-bit codes q in 0..15, w = scale * q + min), the
# embedding (and tied lm_head) Q8_0 (8-bit codes in -127..127, w = scale * q). The GGUF holds exactly those blocks,
# so quantizing its dequantized fp32 weights again finds the same codes and scales: the decoder computes with the
# model's own weights, bit for bit, while reading 4.5 (layers) and 8.5 (embedding) bits per weight instead of 32.
# The products run in chat/fastpath_kernels.cpp (AVX2 integer dot products, see there), compiled once with the
# system's C++ compiler and called from the compiled step as the custom ops torch.ops.chatlab.q4_linear / q8_linear.

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


KERNELS_SOURCE = Path(__file__).with_name("fastpath_kernels.cpp")


def _compiler() -> str | None:
    return next((c for c in (os.environ.get("CXX"), "g++", "c++") if c and shutil.which(c)), None)


def _kernel_flags() -> list[str]:
    vector = ["-mavx2", "-mfma"] if torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512") else []
    return ["-O3", "-shared", "-fPIC", "-std=c++20", "-fopenmp", *vector,
            f"-D_GLIBCXX_USE_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}"]


def kernels_path() -> Path:
    """Where the compiled kernels for this source, torch version and CPU live."""
    from chat.data import cache_dir

    raw = f"{KERNELS_SOURCE.read_text()}:{torch.__version__}:{' '.join(_kernel_flags())}"
    return cache_dir("models") / f"chatlab-kernels{PACKAGE_FORMAT}-{hashlib.sha1(raw.encode()).hexdigest()[:12]}.so"


def build_kernels(target: Path) -> Path:
    """Compile fastpath_kernels.cpp into `target` (~10 s; under a temporary name, then renamed). One g++ command
    rather than torch.utils.cpp_extension.load, which needs ninja on the PATH (absent from a bare venv or Space);
    its include paths are used."""
    import subprocess

    from torch.utils import cpp_extension

    compiler = _compiler()
    if compiler is None:
        raise RuntimeError("no C++ compiler (g++) found")
    libraries = cpp_extension.library_paths()
    staging = target.with_name(f"{target.stem}.partial-{os.getpid()}.so")
    command = [compiler, *_kernel_flags(), *[f"-I{p}" for p in cpp_extension.include_paths()], str(KERNELS_SOURCE),
               "-o", str(staging), *[f"-L{p}" for p in libraries], *[f"-Wl,-rpath,{p}" for p in libraries],
               "-lc10", "-ltorch_cpu"]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        staging.unlink(missing_ok=True)
        raise RuntimeError(f"compiling {KERNELS_SOURCE.name} failed: {done.stderr.strip()[-800:]}")
    os.replace(staging, target)
    return target


_KERNELS_LOCK = threading.Lock()


def _has_op(name: str) -> bool:
    return hasattr(torch.ops.chatlab, name)


def load_kernels(path: Path) -> None:
    """Register torch.ops.chatlab.* from the compiled library (once per process), with the shape rules export needs."""
    with _KERNELS_LOCK:
        if _has_op("q4_linear"):
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


class Decoder(nn.Module):
    """One step of a Llama-style model over a batch of rows, each one token of some sequence, on its 4-bit (layers)
    and 8-bit (embedding) blocks: forward(tokens, slots, positions, logit_rows, k_cache, v_cache) -> logits, k, v.

    A row is a sequence's next token while it decodes, or one token of a prompt's chunk: the rows of one sequence
    are consecutive, in position order. Every row's arithmetic is its own (products per row, attention over its own
    sequence), so a sequence gets the same numbers alone or in any batch."""

    def __init__(self, model: nn.Module, kernels: bool = False):
        super().__init__()
        self.config = cfg = decoder_config(model)
        self.kernels = kernels  # products and attention by the C++ kernels (the compiled step), else plain PyTorch
        base = model.model
        self._dense: dict[str, torch.Tensor] = {}  # plain runs only: dequantized matrices, made on first use
        self._matrix("embed", base.embed_tokens.weight, 8)  # (vocab, hidden): rows looked up, and the tied lm_head
        tied = model.lm_head.weight.data_ptr() == base.embed_tokens.weight.data_ptr()
        self.head = "embed" if tied else self._matrix("head", model.lm_head.weight, 8)
        self.register_buffer("final_norm", base.norm.weight.detach().float().clone())
        half_dim = cfg.head_dim // 2
        inv_freq = 1.0 / cfg.rope_theta ** (torch.arange(0, half_dim, dtype=torch.float32) * 2 / cfg.head_dim)
        self.register_buffer("inv_freq", inv_freq)  # (head_dim/2,)
        for i, layer in enumerate(base.layers):
            a, m = layer.self_attn, layer.mlp
            # q, k, v in one matrix and gate, up in another: one pass over the input instead of several
            self._matrix(f"l{i}_qkv", torch.cat([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight]))
            self._matrix(f"l{i}_o", a.o_proj.weight)
            self._matrix(f"l{i}_gate_up", torch.cat([m.gate_proj.weight, m.up_proj.weight]))
            self._matrix(f"l{i}_down", m.down_proj.weight)
            self.register_buffer(f"l{i}_attn_norm", layer.input_layernorm.weight.detach().float().clone())
            self.register_buffer(f"l{i}_mlp_norm", layer.post_attention_layernorm.weight.detach().float().clone())

    def _matrix(self, name: str, weight: torch.Tensor, bits: int = 4) -> str:
        for part, tensor in (pack_q4 if bits == 4 else pack_q8)(weight).items():
            self.register_buffer(f"{name}_{part}", tensor)
        return name

    def _packed(self, name: str) -> dict[str, torch.Tensor]:
        return {part: getattr(self, f"{name}_{part}") for part in ("codes", "scales", "mins")
                if hasattr(self, f"{name}_{part}")}

    def _linear(self, x: torch.Tensor, name: str) -> torch.Tensor:
        if self.kernels:
            return linear(x, self._packed(name))
        if name not in self._dense:  # plain (tests, the reference): a linear on the dequantized matrix
            self._dense[name] = dequantize(self._packed(name))
        return F.linear(x, self._dense[name])

    def _norm(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:  # (R, hidden), per row
        return x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + self.config.eps) * weight

    def _attention(self, q, k, v, k_cache, v_cache, slots, positions, layer: int) -> torch.Tensor:
        """q (R, heads*hd), k / v (R, kv_heads*hd) -> (R, heads*hd): each row over its own sequence's cached
        positions and the rows of that sequence up to itself."""
        cfg = self.config
        if self.kernels:
            return torch.ops.chatlab.attention(q, k, v, k_cache, v_cache, slots, positions, layer, cfg.heads)
        hd, group = cfg.head_dim, cfg.heads // cfg.kv_heads
        out, first = torch.empty_like(q), 0
        slot_of, pos_of = slots.tolist(), positions.tolist()
        for r in range(q.shape[0]):
            if r and slot_of[r] != slot_of[r - 1]:
                first = r
            cached = pos_of[first]
            keys = torch.cat([k_cache[slot_of[r], layer, :, :cached], k[first: r + 1].view(-1, cfg.kv_heads, hd)
                              .transpose(0, 1)], dim=1)  # (kv_heads, n, hd)
            values = torch.cat([v_cache[slot_of[r], layer, :, :cached], v[first: r + 1].view(-1, cfg.kv_heads, hd)
                                .transpose(0, 1)], dim=1)
            query = q[r].view(cfg.kv_heads, group, hd)  # query heads grouped by the kv head they share
            scores = torch.einsum("gqd,gtd->gqt", query, keys) / hd ** 0.5
            out[r] = torch.einsum("gqt,gtd->gqd", torch.softmax(scores, dim=-1), values).reshape(-1)
        return out

    def forward(self, tokens: torch.Tensor, slots: torch.Tensor, positions: torch.Tensor, logit_rows: torch.Tensor,
                k_cache: torch.Tensor, v_cache: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """tokens, slots, positions (R,) int64: row r is token tokens[r] at position positions[r] of the sequence
        in cache slot slots[r]; logit_rows (M,) int64: the rows whose next-token logits are wanted (a prompt's
        chunk needs only its last); k/v_cache (slots, layers, kv_heads, T_max, head_dim) hold each slot's keys and
        values for the positions before its first row here. Returns logits (M, vocab) and the rows' keys and values
        (R, layers, kv_heads, head_dim), which the caller stores at (slot, position)."""
        cfg = self.config
        hd, nh, nkv = cfg.head_dim, cfg.heads, cfg.kv_heads
        rows = tokens.shape[0]
        x = dequantize(self._packed("embed"), rows=tokens)  # (R, hidden)
        angle = positions.to(torch.float32)[:, None] * self.inv_freq  # (R, hd/2)
        cos = torch.cos(angle).repeat(1, 2)[:, None, :]  # (R, 1, hd), HF's rotate_half layout
        sin = torch.sin(angle).repeat(1, 2)[:, None, :]

        def rope(t):  # (R, heads, hd)
            t1, t2 = t[..., : hd // 2], t[..., hd // 2:]
            return t * cos + torch.cat([-t2, t1], dim=-1) * sin

        new_k, new_v = [], []
        for i in range(cfg.layers):
            h = self._norm(x, getattr(self, f"l{i}_attn_norm"))
            qkv = self._linear(h, f"l{i}_qkv")  # (R, (nh + 2 nkv) hd)
            q = rope(qkv[:, : nh * hd].view(rows, nh, hd)).reshape(rows, nh * hd)
            k = rope(qkv[:, nh * hd: (nh + nkv) * hd].view(rows, nkv, hd)).reshape(rows, nkv * hd)
            v = qkv[:, (nh + nkv) * hd:]
            new_k.append(k)
            new_v.append(v)
            attn = self._attention(q, k, v, k_cache, v_cache, slots, positions, i)
            x = x + self._linear(attn, f"l{i}_o")
            h = self._norm(x, getattr(self, f"l{i}_mlp_norm"))
            gate, up = self._linear(h, f"l{i}_gate_up").chunk(2, dim=-1)
            x = x + self._linear(F.silu(gate) * up, f"l{i}_down")
        logits = self._linear(self._norm(x[logit_rows], self.final_norm), self.head)  # (M, vocab)
        return logits, torch.stack(new_k, dim=1).view(rows, cfg.layers, nkv, hd), \
            torch.stack(new_v, dim=1).view(rows, cfg.layers, nkv, hd)


# --- the KV cache -------------------------------------------------------------------------------------------------


class KVCache:
    """Keys and values of up to `slots` sequences of up to `context` positions each: (slots, layers, kv_heads,
    context, head_dim) fp32 for k and for v. The memory is an anonymous mapping, so only the positions written take
    RAM (a short chat in an 8k-context slot costs a few MB, not 377), and `release(slot)` hands a slot's pages back
    to the system."""

    def __init__(self, config: DecoderConfig, slots: int, context: int):
        import mmap

        self.shape = (slots, config.layers, config.kv_heads, context, config.head_dim)
        nbytes = 4 * slots * config.layers * config.kv_heads * context * config.head_dim
        self._maps = [mmap.mmap(-1, nbytes) for _ in range(2)]
        self.k, self.v = (torch.frombuffer(m, dtype=torch.float32).view(self.shape) for m in self._maps)

    @property
    def slots(self) -> int:
        return self.shape[0]

    @property
    def context(self) -> int:
        return self.shape[3]

    def store(self, slots: torch.Tensor, positions: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
        """Write rows' keys and values (R, layers, kv_heads, head_dim) at (slots[r], positions[r])."""
        if _has_op("store"):  # a copy per row; index_put on a cache this size takes ~0.2 ms per row
            torch.ops.chatlab.store(self.k, self.v, slots, positions, k, v)
        else:
            self.k[slots, :, :, positions] = k
            self.v[slots, :, :, positions] = v

    def copy(self, source: int, target: int, positions: int) -> None:
        """Copy the keys and values of a slot's first `positions` positions into another slot."""
        for cache in (self.k, self.v):
            cache[target, :, :, :positions] = cache[source, :, :, :positions]

    def release(self, slot: int) -> None:
        """Give the slot's memory back to the system (its contents read as zeros afterwards)."""
        import mmap

        size = len(self._maps[0]) // self.slots  # (an anonymous map has no file: size() fails)
        page = mmap.PAGESIZE
        start, end = -(-slot * size // page) * page, (slot + 1) * size // page * page
        if end > start and hasattr(mmap, "MADV_DONTNEED"):
            for m in self._maps:
                m.madvise(mmap.MADV_DONTNEED, start, end - start)


# --- the compiled package -----------------------------------------------------------------------------------------


def package_path(model) -> Path:
    """Where the compiled step for this model (or config), torch version and CPU lives (next to the converted
    model). The format is in the name: packages of other formats (older ChatLab versions sharing the cache) are
    neither read nor removed."""
    from chat.data import cache_dir

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


@dataclass
class FastDecoder:
    """The compiled step (or the plain Decoder) and what it computes with: `forward` runs one step of rows over a
    KVCache and stores their keys and values; chat.serving batches many sequences into those steps."""

    step: Callable  # (tokens, slots, positions, logit_rows, k_cache, v_cache) -> logits, k, v
    config: DecoderConfig
    kind: str  # "aoti" (compiled package) or "eager" (tests, reference)

    def new_cache(self, slots: int, context: int) -> KVCache:
        return KVCache(self.config, slots, context)

    @torch.inference_mode()
    def forward(self, cache: KVCache, tokens: list[int], slots: list[int], positions: list[int],
                logit_rows: list[int]) -> torch.Tensor:
        """One step (see Decoder.forward); returns the logits (len(logit_rows), vocab)."""
        slots_t, positions_t = torch.tensor(slots, dtype=torch.long), torch.tensor(positions, dtype=torch.long)
        wanted = torch.tensor(logit_rows or [len(tokens) - 1], dtype=torch.long)  # the step computes at least one
        logits, k, v = self.step(torch.tensor(tokens, dtype=torch.long), slots_t, positions_t, wanted, cache.k,
                                 cache.v)
        cache.store(slots_t, positions_t, k, v)
        return logits if logit_rows else logits[:0]

    @torch.inference_mode()
    def next_token_logits(self, ids: list[int], continuation: list[int], chunk: int = 256) -> torch.Tensor:
        """Teacher-forced logits (len(continuation), vocab): row j predicts continuation[j] given ids + the ones
        before it (the quality check: compare each row's argmax with the plain model's). One sequence, in chunks."""
        tokens = ids + continuation[:-1]
        cache = self.new_cache(1, len(tokens))
        wanted, out = set(range(len(ids) - 1, len(tokens))), []
        for start in range(0, len(tokens), chunk):
            part = tokens[start: start + chunk]
            rows = [j for j in range(len(part)) if start + j in wanted] or [len(part) - 1]
            logits = self.forward(cache, part, [0] * len(part), list(range(start, start + len(part))), rows)
            out += [logits[i] for i, j in enumerate(rows) if start + j in wanted]
        return torch.stack(out)


def eager_decoder(model: nn.Module, kernels: bool = False) -> FastDecoder:
    """The same decoder without compilation (slow; for tests and as the reference of the compiled one): plain
    PyTorch on the dequantized weights, or with `kernels` the C++ kernels called op by op (load_kernels() first)."""
    decoder = Decoder(model, kernels=kernels).eval()
    return FastDecoder(decoder, decoder.config, "eager")


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


def enabled() -> bool:
    """The fast path is on unless CHATLAB_FAST=0 (the app's --plain flag sets it)."""
    return os.environ.get("CHATLAB_FAST", "1").strip().lower() not in ("0", "false", "no", "off")


def unavailable_reason(model, device: torch.device) -> str | None:
    """None when the fast path can run this model (a transformers model, or the config of an fp32 one)."""
    if not enabled():
        return "turned off (--plain / CHATLAB_FAST=0)"
    if device.type != "cpu":
        return f"it is for CPUs (the model is on {device.type})"
    if isinstance(model, nn.Module) and next(model.parameters()).dtype != torch.float32:
        return "it expects the fp32 model"
    if _compiler() is None:
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


# --- quality check ------------------------------------------------------------------------------------------------

QUALITY_PROMPTS = [  # fixed chat prompts for the top-1 agreement check (tests and `python -m chat.bench chat`)
    "What is the capital of France?", "Write a haiku about autumn leaves.", "Explain photosynthesis simply.",
    "Give me three tips for learning a new language.", "What is 17 times 23?", "Translate 'good morning' into Spanish.",
    "Summarize the plot of Romeo and Juliet in two sentences.", "Why is the sky blue?",
    "Write a Python function that reverses a string.", "What are the planets of the solar system?",
    "How do I boil an egg?", "Tell me a short joke about computers.", "What causes earthquakes?",
    "Describe a cat to someone who has never seen one.", "List five healthy breakfast ideas.",
    "What is the difference between weather and climate?", "Who wrote 'Pride and Prejudice'?",
    "How does a rainbow form?", "Give me a motivational quote and explain it.", "What is machine learning?",
    "用一句话介绍北京。", "Name three famous painters and one work by each.",
]


def greedy_continuations(model: nn.Module, tokenizer, prompts: list[str], new_tokens: int) -> list[tuple[list, list]]:
    """(prompt ids, the plain model's greedy continuation) for each chat prompt: the positions the fast decoder is
    compared on, teacher-forced (so one early difference does not derail the rest)."""
    pairs = []
    for text in prompts:
        ids = tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                            add_generation_prompt=True)
        ids = tokenizer(ids, add_special_tokens=False)["input_ids"]
        with torch.inference_mode():
            out = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                 max_new_tokens=new_tokens, do_sample=False, temperature=None, top_p=None,
                                 top_k=None, pad_token_id=tokenizer.eos_token_id)
        pairs.append((ids, out[0, len(ids):].tolist()))
    return pairs


def top1_agreement(model: nn.Module, tokenizer, fast: FastDecoder, prompts: list[str] = QUALITY_PROMPTS,
                   new_tokens: int = 32) -> float:
    """Share of positions where the fast decoder's most likely next token is the plain model's, along the plain
    model's own greedy continuation of each prompt."""
    agree = total = 0
    for ids, continuation in greedy_continuations(model, tokenizer, prompts, new_tokens):
        predicted = fast.next_token_logits(ids, continuation).argmax(dim=-1).tolist()
        agree += sum(int(a == b) for a, b in zip(predicted, continuation))
        total += len(continuation)
    return agree / total
