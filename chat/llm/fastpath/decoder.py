"""One decoder step as a torch module, the KV cache it reads, and `FastDecoder`: what the serving engine runs."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from chat.llm.fastpath.kernels import BLOCK, dequantize, has_op, linear, pack_q4, pack_q8


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
        if has_op("store"):  # a copy per row; index_put on a cache this size takes ~0.2 ms per row
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


@dataclass
class FastDecoder:
    """The compiled step (or the Decoder module, op by op) and what it computes with: `forward` runs one step of rows
    over a KVCache and stores their keys and values; chat.llm.serving batches many sequences into those steps. The
    step may be swapped between two steps (package.serve_while_building): the KV cache's layout is the same."""

    step: Callable  # (tokens, slots, positions, logit_rows, k_cache, v_cache) -> logits, k, v
    config: DecoderConfig
    kind: str  # "aoti" (the compiled package), "kernels" (the C++ kernels op by op), "eager" (plain PyTorch)

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
    """The same decoder without compilation: plain PyTorch on the dequantized weights (slow; the reference of the
    compiled one), or with `kernels` the C++ kernels called op by op (load_kernels() first; what serves while the
    compiled step builds)."""
    decoder = Decoder(model, kernels=kernels).eval()
    return FastDecoder(decoder, decoder.config, "kernels" if kernels else "eager")


