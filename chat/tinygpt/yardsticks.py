"""What a pretraining loss is measured against, and whether the model writes or copies.

Yardsticks, in nats per character of the validation text (so tokenizers compare):
- uniform: every character of the text's alphabet equally likely (a model that knows only the alphabet);
- bigram: a count model of which character follows which (add-one smoothing), trained on the training text;
- SmolLM2: SmolLM2-135M-Instruct on a slice of the same validation text, a model trained on trillions of tokens
  (it has most likely read these plays: a yardstick of what a large model knows, not a fair race).

The memorisation meter samples the model and asks two questions of its text: which share of its words occur in the
training text (does it write English?), and which share of its 8-word sequences occur there word for word (is it
reciting?).
"""
from __future__ import annotations

import functools
import hashlib
import json
import math
import re

import numpy as np
import torch

WORD = re.compile(r"[a-z]+(?:'[a-z]+)*")
NGRAM = 8  # words in a copied sequence: 8 words in a row rarely recur by chance
SMOLLM2_CHARS = 12_000  # validation characters SmolLM2 reads (about 3,000 of its tokens: ~10 s on 2 cores)
SMOLLM2_WINDOW = 512  # its context per window (tokens)


def _codes(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)  # one number per character


def uniform_nats_per_char(train_text: str, val_text: str) -> float:
    """ln(alphabet size): every character of the text equally likely."""
    return math.log(len(set(train_text) | set(val_text)))


def bigram_nats_per_char(train_text: str, val_text: str) -> float:
    """A character bigram count model (add-one smoothing) fitted on the training text, on the validation text."""
    train_codes, val_codes = _codes(train_text), _codes(val_text)
    alphabet = np.unique(np.concatenate([train_codes, val_codes]))
    size = len(alphabet)
    train, val = np.searchsorted(alphabet, train_codes), np.searchsorted(alphabet, val_codes)
    counts = np.bincount(train[:-1] * size + train[1:], minlength=size * size).reshape(size, size) + 1.0
    log_p = np.log(counts / counts.sum(1, keepdims=True))
    return float(-log_p[val[:-1], val[1:]].mean())


def words(text: str) -> list[str]:
    return WORD.findall(text.lower())


@functools.lru_cache(maxsize=4)
def _training_words(train_text: str) -> tuple[frozenset[str], str]:
    """The training text's words as a set, and as one string " w1 w2 ... " to look 8-grams up in."""
    found = words(train_text)
    return frozenset(found), " " + " ".join(found) + " "


def memorisation(samples: list[str], train_text: str) -> dict:
    """{words_in_training_text, copied_8grams, words, ngrams}: shares of the samples' words found in the training
    text, and of their 8-word sequences found there word for word (case and punctuation aside)."""
    vocabulary, joined = _training_words(train_text)
    sampled = [words(text) for text in samples]
    all_words = [w for ws in sampled for w in ws]
    grams = [" ".join(ws[i:i + NGRAM]) for ws in sampled for i in range(len(ws) - NGRAM + 1)]
    known = sum(w in vocabulary for w in all_words)
    copied = sum(f" {gram} " in joined for gram in grams)
    return {"words_in_training_text": known / len(all_words) if all_words else math.nan,
            "copied_8grams": copied / len(grams) if grams else math.nan,
            "words": len(all_words), "ngrams": len(grams)}


# --- SmolLM2 on the same text ----------------------------------------------------------------------------------------


def smollm2_slice(val_text: str) -> str:
    """The validation characters SmolLM2 reads: the middle of the text, cut at line starts."""
    if len(val_text) <= SMOLLM2_CHARS:
        return val_text
    start = val_text.find("\n", (len(val_text) - SMOLLM2_CHARS) // 2) + 1
    return val_text[start:start + SMOLLM2_CHARS]


@torch.inference_mode()
def nats_per_char(model, tokenizer, text: str, window: int = SMOLLM2_WINDOW) -> float:
    """A transformers causal LM's loss on `text` in nats per character: consecutive windows, each token predicted
    from the window before it (the first token of each window from nothing but the ones before it in that window)."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    nats = 0.0
    for start in range(0, len(ids) - 1, window):
        chunk = torch.tensor([ids[start:start + window + 1]])
        logits = model(input_ids=chunk[:, :-1]).logits.float()
        nats += torch.nn.functional.cross_entropy(logits[0], chunk[0, 1:], reduction="sum").item()
    return nats / len(text)


def smollm2_nats_per_char(val_text: str) -> float | None:
    """SmolLM2's nats per character on the slice, cached on disk by the slice's hash; None when the chat model
    cannot load."""
    from chat.paths import cache_dir

    piece = smollm2_slice(val_text)
    key = hashlib.sha256(piece.encode("utf-8")).hexdigest()[:16]
    path = cache_dir("tinygpt") / "smollm2-yardstick.json"
    known = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    if key in known:
        return known[key]
    try:
        from chat.llm.models import get_model

        loaded = get_model(progress=lambda _line: None)
        value = round(nats_per_char(loaded.model, loaded.tokenizer, piece), 4)
    except (OSError, RuntimeError, ValueError):  # no weights installed, or they fail to load
        return None
    known[key] = value
    path.write_text(json.dumps(known), encoding="utf-8")
    return value
