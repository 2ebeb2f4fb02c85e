"""What rounding each product's input costs in accuracy: the fast decoder's teacher-forced logits against the plain
fp32 model's along its greedy replies to 12 fixed chat prompts (24 tokens each), next to the plain model with every
nn.Linear input rounded each way: ChatLab's int16 per row, int16 per block of 32, and llama.cpp's int8 per block of
32 (the anchor; ratio = ChatLab's largest probability error / its)."""
from __future__ import annotations

import argparse

from chat.bench.common import chat_model, fast_decoder


def rounded(x, scheme: str):
    """x as a product sees it after rounding: "row16" (ChatLab's kernels: int16, one scale per row), "block16"
    (int16, a scale per block of 32), "block8" (llama.cpp's q8_0 / q8_1: int8, a scale per block of 32, as
    kernels.pack_q8 packs the embedding)."""
    import torch

    from chat.llm.fastpath.kernels import dequantize, pack_q8

    if scheme == "block8":
        return dequantize(pack_q8(x.reshape(-1, x.shape[-1]))).reshape(x.shape)
    blocks = x if scheme == "row16" else x.reshape(*x.shape[:-1], -1, 32)
    scale = blocks.abs().amax(-1, keepdim=True) / 32767
    return (torch.round(blocks / torch.where(scale > 0, scale, 1)) * scale).reshape(x.shape)


def divergence(logits: list, reference: list) -> dict:
    import torch

    got, ref = torch.cat(logits).float(), torch.cat(reference).float()
    log_p, log_q = torch.log_softmax(ref, -1), torch.log_softmax(got, -1)
    return {"max_logit_diff": round((got - ref).abs().max().item(), 4),
            "max_probability_diff": round((log_q.exp() - log_p.exp()).abs().max().item(), 5),
            "mean_kl_nats": float(f"{(log_p.exp() * (log_p - log_q)).sum(-1).mean().item():.3g}"),
            "top1_agreement": round((got.argmax(-1) == ref.argmax(-1)).float().mean().item(), 4)}


def run(args: argparse.Namespace) -> dict:
    import torch

    from chat.llm.fastpath.quality import QUALITY_PROMPTS, greedy_continuations

    loaded = chat_model()
    model = loaded.model
    fast = fast_decoder(loaded)
    pairs = greedy_continuations(model, loaded.tokenizer, QUALITY_PROMPTS[:12], 24)
    scheme = {"now": None}
    hooks = [m.register_forward_pre_hook(lambda m, inputs: None if scheme["now"] is None else
                                         (rounded(inputs[0], scheme["now"]),))
             for m in model.modules() if isinstance(m, torch.nn.Linear)]

    def plain_logits() -> list:
        with torch.inference_mode():
            return [model(torch.tensor([ids + tail])).logits[0, len(ids) - 1: len(ids) + len(tail) - 1]
                    for ids, tail in pairs]

    try:
        reference = plain_logits()
        result = {"positions": sum(len(tail) for _, tail in pairs)}
        if fast is not None:
            result["fast_decoder"] = divergence([fast.next_token_logits(ids, tail) for ids, tail in pairs], reference)
        for name in ("row16", "block16", "block8"):
            scheme["now"] = name
            result[f"plain_rounded_{name}"] = divergence(plain_logits(), reference)
    finally:
        for hook in hooks:
            hook.remove()
    ours = result.get("fast_decoder", result["plain_rounded_row16"])["max_probability_diff"]
    result["ratio_max_probability_diff_vs_llama_cpp_int8"] = round(
        ours / result["plain_rounded_block8"]["max_probability_diff"], 4)
    return result
