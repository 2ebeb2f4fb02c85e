"""A random tiny Llama with SmolLM2's real tokenizer and chat template, shaped as the tuning code runs it."""
from __future__ import annotations

import torch


def tiny_loaded(layers: int = 2, hidden: int = 64, seed: int = 0):
    """A LoadedModel around a random 2-layer LlamaForCausalLM (GQA: 4 query heads share 2 key/value heads)."""
    from concurrent.futures import Future

    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from chat import models

    _, folder, _ = models.resolve(models.DEFAULT_MODEL)  # the converted cache: tokenizer + chat template
    tokenizer = AutoTokenizer.from_pretrained(folder)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=512, tie_word_embeddings=True,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config).eval()
    ready = Future()
    ready.set_result(model)
    return models.LoadedModel("tiny-llama", "Tiny Llama", ready, tokenizer, torch.device("cpu"), torch.float32, 512,
                              0.0, "folder", frozenset({tokenizer.eos_token_id}))
