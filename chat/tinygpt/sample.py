"""Sampling from a Tiny GPT: continuations (the training timeline's samples) and chat replies in the training
format."""
from __future__ import annotations

import re

import torch
from transformers import GPT2LMHeadModel, LogitsProcessorList

from chat.llm.params import GenerationParams
from chat.llm.sampling import SamplerProcessor

from chat.tinygpt.data import clean_turn, prompt_segments
from chat.training.run import TrainingError
from chat.tinygpt.tokenizer import encode_segments


@torch.no_grad()
def generate(model: GPT2LMHeadModel, tokenizer, prompt_ids: list[int], max_new_tokens: int, temperature: float,
             stop_at_newline: bool, seed: int | None = None) -> str:
    """Sample a continuation (decoded, without the prompt). The prompt is cut from the left to leave room in
    the context; `seed` makes it reproducible without touching the training's random stream."""
    block = model.config.n_positions
    max_new_tokens = max(1, min(max_new_tokens, block - 1))
    prompt_ids = prompt_ids[-(block - max_new_tokens):]
    was_training = model.training
    model.eval()
    # the one sampler, drawing from this call's own generator (seeded, or fresh for chat)
    params = GenerationParams(temperature=temperature, top_k=0, top_p=1.0, repetition_penalty=1.0, seed=seed)
    processors = LogitsProcessorList([SamplerProcessor(params)])
    out = model.generate(torch.tensor([prompt_ids]), max_new_tokens=max_new_tokens, use_cache=True,
                         eos_token_id=tokenizer.newline_id if stop_at_newline else None,
                         pad_token_id=tokenizer.newline_id, do_sample=False, logits_processor=processors,
                         temperature=None, top_k=None, top_p=None)
    model.train(was_training)
    return tokenizer.decode(out[0, len(prompt_ids):].tolist())


def reply(model: GPT2LMHeadModel, tokenizer, history: list[tuple[str, str]], message: str,
          temperature: float = 0.8, max_new_tokens: int = 80) -> str:
    """The model's answer in the training format: prompt `...User: message\\nBot:`, stop at the newline (or
    at a "User:" it starts on its own)."""
    if not (clean_turn(message) or ""):
        raise TrainingError("empty_message", "type a message first")
    ids, _ = encode_segments(tokenizer, prompt_segments(history, message))
    block = model.config.n_positions
    room = max(block // 2, block - len(ids))  # the prompt keeps at least half the context
    text = generate(model, tokenizer, ids, min(max_new_tokens, room), temperature, stop_at_newline=True)
    return re.split(r"\n|User:", text, maxsplit=1)[0].strip()

