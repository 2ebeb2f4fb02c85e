"""The fast CPU decoder for Llama-style chat models: llama.cpp's quantized blocks, a static KV cache, one compiled
step for a batch of rows.

Decoding one token of a 135 M model reads every weight once, so its speed is set by the bytes read, the work spent
unpacking them and per-op overhead. transformers' generate in fp32 reads 0.54 GB per token and runs ~500 Python-level
ops. This decoder keeps the weights as SmolLM2's GGUF holds them (Q4_1 blocks for the layers, Q8_0 for the
embedding; re-packed from the dequantized fp32 weights bit for bit, so nothing is approximated) and multiplies with
integer dot products in a small AVX2 kernel (kernels.cpp). The whole step (30 layers and the tied lm_head, over a
batch of rows of several sequences, prompt chunks included) is one AOTInductor-compiled C++ function that calls
those kernels as custom ops; chat.llm.serving batches every reply and next-token question into its steps.

- kernels.py: the Q4_1 / Q8_0 blocks (pack, dequantize) and the C++ kernels (compile once, load, multiply).
- decoder.py: one step as a torch module (`Decoder`), the KV cache, and `FastDecoder`, what serving runs.
- package.py: export + AOTInductor compile into a cached `.pt2`, load it, or say why the fast path is off.
- quality.py: top-1 agreement with the plain fp32 model (tests and `python -m chat.bench chat`).

The decode loop follows gpt-fast's (pytorch-labs/gpt-fast `generate.py`): a static cache written at `pos`. What lost
on a 2-core AVX2 CPU (no AVX512/VNNI): fp16 weights with inductor's fp16 -> fp32 reduction, the same Q4_1 blocks
unpacked by inductor-generated code (compute-bound), torch's `_weight_int8pack_mm` / `_weight_int4pack_mm_for_cpu`,
and torch.ao dynamic int8 (per-tensor int8 activations changed the greedy output). docs/fast-decoding.md says more.
"""
