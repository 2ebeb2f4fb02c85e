"""The chat model at run time: how a chat model reads a conversation and writes its reply.

params      generation settings and their limits (what every slider, the API and the engine read)
sampling    the one sampler: repetition penalty, temperature, top-k, top-p, a seeded draw
models      the model registry, the GGUF -> safetensors cache, the shared lazily loaded model
tokenizer   the chat model's tokenizer: user text stays text, long texts counted in chunks
prompt      messages -> the chat template's exact text and tokens, fitted to the context
generation  streamed replies with a real stop (the serving engine, or transformers' generate)
next_token  the next-token view (文字接龙): candidates, greedy and sampled steps, KV caches
serving     continuous batching: one engine runs every reply and next-token question in shared steps
fastpath/   the fast CPU decoder: quantized blocks, C++ kernels, the AOTInductor-compiled step
remote      any OpenAI-compatible server, through the openai client
backends    the one interface the tabs use: the local model, a session's tuned copy, or a server
inside      every head's attention, one head step by step, head probes, the logit lens
"""
