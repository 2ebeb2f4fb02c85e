"""Answers before and after training: the original model's and a tuned model's greedy replies, side by side."""
from __future__ import annotations

import threading

import cachetools
import torch

from chat.llm.models import LoadedModel


@torch.inference_mode()
def greedy_answers(model, tokenizer, conversations: list[list[dict]], max_new_tokens: int = 64,
                   batch_size: int = 8) -> list[str]:
    """Greedy replies to several conversations, batched (left padding): the before/after tables and the CLIs."""
    texts = [tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in conversations]
    answers = []
    was_training = getattr(model, "training", False)
    model.eval()
    try:
        for start_at in range(0, len(texts), batch_size):
            batch = tokenizer(texts[start_at:start_at + batch_size], return_tensors="pt", padding=True,
                              padding_side="left", add_special_tokens=False, split_special_tokens=False)
            batch = {k: v.to(model.device) for k, v in batch.items()}
            out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False, temperature=None,
                                 top_p=None, top_k=None, pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
            width = batch["input_ids"].shape[1]
            answers += [tokenizer.decode(row[width:], skip_special_tokens=True).strip() for row in out]
    finally:
        model.train(was_training)
    return answers


class AnswerCache:
    """The original model's greedy answers are the same every time: the recent ones are kept (the 'before' column)."""

    def __init__(self, limit: int = 512):
        self._items = cachetools.LRUCache(limit)
        self._lock = threading.Lock()

    def answers(self, base: LoadedModel, conversations: list[list[dict]], max_new_tokens: int) -> list[str]:
        keys = [(base.name, max_new_tokens, tuple((m["role"], m["content"]) for m in c)) for c in conversations]
        with self._lock:
            found = {i: self._items.get(key) for i, key in enumerate(keys)}
        missing = [i for i, answer in found.items() if answer is None]
        if missing:
            new = greedy_answers(base.model, base.tokenizer, [conversations[i] for i in missing], max_new_tokens)
            with self._lock:
                for i, answer in zip(missing, new):
                    self._items[keys[i]] = found[i] = answer
        return [found[i] for i in range(len(keys))]


BEFORE = AnswerCache()


def is_right(answer: str, words: list[str]) -> bool:
    """Whether an answer contains one of the words a right answer contains (case-insensitive)."""
    text = answer.lower()
    return any(word.lower() in text for word in words)


def loops(answer: str, times: int = 3) -> bool:
    """Whether an answer has degenerated into a loop: some run of 6 words (12 characters, in text without spaces
    such as Chinese) comes back `times` times or more. A list repeats its pattern ("a fruit that is") but not 6 words
    of it; "la femme au martyre, la femme au martyre, ..." does at once."""
    words = answer.split()
    if len(words) < 0.1 * len(answer):  # mostly unspaced text: count characters
        units, n = [c for c in answer if not c.isspace()], 12
    else:
        units, n = [w.strip(".,;:!?\"'()").lower() for w in words], 6
    seen: dict[tuple, int] = {}
    for i in range(len(units) - n + 1):
        gram = tuple(units[i:i + n])
        seen[gram] = seen.get(gram, 0) + 1
        if seen[gram] >= times:
            return True
    return False
