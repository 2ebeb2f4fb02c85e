"""The chat model's own tokenizer as ChatLab uses it: user text always read as text, long texts counted in chunks.

- `encode_plain_batch`: token ids where typed special-token text (<|im_start|>) stays plain text, thread-safe.
- `ModelTokenizer`: a Hugging Face byte-level BPE in the shape chat.tokens' registry expects (encode, count,
  token_bytes); `register_chat_tokenizer` adds the chat model's to the Tokens tab's comparison.
"""
from __future__ import annotations

import re
from pathlib import Path

CHUNK_CHARS = 1 << 16  # long texts are tokenized in pieces of about this many characters


def plain_text_encoder(tokenizer):
    """A copy of a fast tokenizer's backend that reads every special token's text (<|im_start|> ...) as plain
    text, or None for a tokenizer without one. Its own copy: transformers switches the shared backend's
    `encode_special_tokens` on every call (split_special_tokens), so two threads using it could see each other's
    setting, and user text could become special tokens."""
    cached = getattr(tokenizer, "_chatlab_plain_encoder", None)
    if cached is None:
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is None or not hasattr(backend, "encode_batch_fast"):
            return None
        from tokenizers import Tokenizer

        cached = Tokenizer.from_str(backend.to_str())
        cached.encode_special_tokens = True
        cached.no_padding()
        cached.no_truncation()
        tokenizer._chatlab_plain_encoder = cached
    return cached


def encode_plain_batch(tokenizer, texts: list[str]) -> list[list[int]]:
    """Token ids of each text, special-token text read as text (thread-safe; no offsets computed)."""
    encoder = plain_text_encoder(tokenizer)
    if encoder is None:
        return tokenizer(texts, add_special_tokens=False, split_special_tokens=True)["input_ids"] if texts else []
    return [e.ids for e in encoder.encode_batch_fast(texts, add_special_tokens=False)]


def _chunks(text: str, size: int = CHUNK_CHARS):
    """Pieces of `text` that tokenize, one after the other, exactly as the whole does: each cut is just before a
    whitespace character that follows a non-whitespace one, where a byte-level BPE's pre-tokenizer (GPT-2's
    pattern: words, numbers, punctuation, whitespace runs) always ends a piece. A stretch with no such place is cut
    at `size` (a token may then split in two: a count off by one per 64k characters of unbroken text)."""
    start = 0
    while len(text) - start > size:
        window = text[start + size // 2: start + size]
        match = None
        for match in _CUT.finditer(window):
            pass
        cut = start + size if match is None else start + size // 2 + match.start() + 1
        yield text[start:cut]
        start = cut
    yield text[start:]


_CUT = re.compile(r"\S(?=\s)")


class ModelTokenizer:
    """A Hugging Face byte-level BPE tokenizer in the shape chat.tokens' registry expects."""

    def __init__(self, tokenizer):
        from transformers.convert_slow_tokenizer import bytes_to_unicode

        self.name = getattr(tokenizer, "name_or_path", "model")
        self.tokenizer = tokenizer
        self._byte_of = {char: byte for byte, char in bytes_to_unicode().items()}

    def encode(self, text: str, special: bool = False) -> list[int]:
        if len(text) > CHUNK_CHARS:
            return [i for chunk in _chunks(text) for i in self.encode(chunk, special)]
        if special:
            return self.tokenizer.encode(text, add_special_tokens=False)
        return encode_plain_batch(self.tokenizer, [text])[0]

    def count(self, text: str, special: bool = False) -> int:
        """len(encode(text)) in bounded memory: long texts in chunks of ~64k characters, 16 at a time on the
        tokenizer's threads, ids only (one call on 10 MB holds ~1.6 GB of offsets and strings)."""
        if special:
            return sum(len(self.encode(chunk, True)) for chunk in _chunks(text))
        chunks = list(_chunks(text))
        return sum(len(ids) for i in range(0, len(chunks), 16) for ids in encode_plain_batch(self.tokenizer,
                                                                                              chunks[i:i + 16]))

    def token_bytes(self, token_id: int) -> bytes:
        piece = self.tokenizer.convert_ids_to_tokens(int(token_id))
        if token_id in self.tokenizer.all_special_ids:
            return piece.encode()
        try:
            return bytes(self._byte_of[char] for char in piece)
        except KeyError:  # not a byte-level vocabulary (e.g. SentencePiece): show its text
            return piece.replace("▁", " ").encode()


def register_chat_tokenizer(settings) -> None:
    """Add the chat model of `settings` (chat.settings.ModelSettings) to the Tokens tab's comparison (its tokenizer
    is loaded on first use)."""
    from chat import tokens
    from chat.llm.models import REGISTRY, get_model, is_loaded

    title = REGISTRY[settings.name].title if settings.name in REGISTRY else Path(settings.name).name
    tokens.register_tokenizer(title, lambda: ModelTokenizer(get_model(settings).tokenizer),
                              f"ChatLab's chat model ({title})", ready=lambda: is_loaded(settings))
