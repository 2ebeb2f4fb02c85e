"""How close the fast decoder is to the plain fp32 model: top-1 agreement along the plain model's greedy replies."""
from __future__ import annotations

import torch
from torch import nn

from chat.llm.fastpath.decoder import FastDecoder


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
