"""Sampling from a Tiny GPT: continuations (the training timeline's samples) and chat replies in the training
format."""
from __future__ import annotations

import re

import torch
from transformers import GPT2LMHeadModel, LogitsProcessorList

from chat.llm.params import GenerationParams
from chat.llm.sampling import SamplerProcessor, choose
from chat.tinygpt.data import clean_turn, prompt_segments
from chat.tinygpt.tokenizer import encode_segments
from chat.training.run import TrainingError


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



def turn_marks(tokenizer) -> tuple[torch.Tensor, torch.Tensor]:
    """((vocab,) bool: the token holds a newline, (vocab,) bool: the token holds visible text), kept on the
    tokenizer: where a reply ends."""
    marks = getattr(tokenizer, "_turn_marks", None)
    if marks is None:
        texts = [tokenizer.decode([i]) for i in range(tokenizer.vocab_size)]
        marks = (torch.tensor(["\n" in t for t in texts]), torch.tensor([bool(t.strip()) for t in texts]))
        tokenizer._turn_marks = marks
    return marks


@torch.no_grad()
def sample_batch(model: GPT2LMHeadModel, prompt_ids: list[int], n: int, max_new_tokens: int,
                 params: GenerationParams, generator: torch.Generator | list[torch.Generator],
                 tokenizer=None) -> list[list[int]]:
    """`n` continuations of one prompt, drawn together with a key/value cache; every token is chosen by the one
    sampler (`choose`) with `generator` (or with row i's own generator, given a list: a row's draws are then the
    same whatever rows are drawn beside it). With `tokenizer`, a row ends at its first newline after some text
    (the newline kept): one reply. A newline before any text does not end it, since a play's speech starts on the
    line after its speaker's name. The prompt is cut from the left to leave room in the context."""
    block = model.config.n_positions
    max_new_tokens = max(1, min(max_new_tokens, block - 1))
    prompt_ids = prompt_ids[-(block - max_new_tokens):]
    newline, visible = turn_marks(tokenizer) if tokenizer is not None else (None, None)
    generators = generator if isinstance(generator, list) else [generator] * n
    rows: list[list[int]] = [[] for _ in range(n)]
    started, done = [False] * n, [False] * n
    pad = int(model.config.eos_token_id)  # what a finished row is fed while the others go on (never read)
    was_training = model.training
    model.eval()
    ids, cache = torch.tensor([prompt_ids]), None  # the prompt is read once, its cache then copied n times
    try:
        for _ in range(max_new_tokens):
            out = model(input_ids=ids, past_key_values=cache, use_cache=True, logits_to_keep=1)
            cache, logits = out.past_key_values, out.logits[:, -1].float()  # (n, vocab)
            if logits.shape[0] != n:
                cache.batch_repeat_interleave(n)
                logits = logits.expand(n, -1)
            chosen = [pad if done[row] else choose(logits[row].clone(), params, generators[row]) for row in range(n)]
            for row, token in enumerate(chosen):
                if done[row]:
                    continue
                rows[row].append(token)
                if newline is not None:
                    done[row] = bool(newline[token]) and (started[row] or bool(visible[token]))
                    started[row] = started[row] or bool(visible[token])
            if all(done):
                break
            ids = torch.tensor(chosen).unsqueeze(1)
    finally:
        model.train(was_training)
    return rows


def reply_text(tokenizer, ids: list[int]) -> str:
    """A sampled reply's text: up to its ending newline, without the spaces around it."""
    text = tokenizer.decode(ids).strip()
    return text.split("\n", 1)[0].strip() if text else ""
