"""Tokenizers for Tiny GPT. Both have encode / decode / vocab_size / newline_id / chars_per_token / save / load."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from chat.tinygpt.data import dialog_segments


class CharTokenizer:
    """One token per character seen in the corpus; id 0 stands for any character it has never seen."""

    kind = "char"
    UNKNOWN = "\ufffd"

    def __init__(self, chars: str):
        self.chars = self.UNKNOWN + "".join(sorted(set(chars) - {self.UNKNOWN}))
        self.ids = {c: i for i, c in enumerate(self.chars)}

    @classmethod
    def train(cls, texts: list[str], vocab_size: int = 0) -> CharTokenizer:
        return cls("".join(set("".join(texts))))

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    @property
    def newline_id(self) -> int:
        return self.ids["\n"]

    def encode(self, text: str) -> list[int]:
        return [self.ids.get(c, 0) for c in text]

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [self.encode(t) for t in texts]

    def decode(self, ids) -> str:
        return "".join(self.chars[i] for i in ids)

    def chars_per_token(self) -> list[int]:
        return [1] * self.vocab_size

    def save(self, folder: Path) -> None:
        (folder / "char_vocab.json").write_text(json.dumps({"chars": self.chars}, ensure_ascii=False),
                                                encoding="utf-8")

    @classmethod
    def load(cls, folder: Path) -> CharTokenizer:
        tokenizer = cls("")
        tokenizer.chars = json.loads((folder / "char_vocab.json").read_text(encoding="utf-8"))["chars"]
        tokenizer.ids = {c: i for i, c in enumerate(tokenizer.chars)}
        return tokenizer


def _byte_of_symbol() -> dict[str, int]:
    """GPT-2's byte-level alphabet (printable stand-ins for the 256 bytes), inverted: symbol -> byte."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    symbols, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            symbols[chr(byte)] = byte
        else:
            symbols[chr(256 + extra)] = byte
            extra += 1
    return symbols


class BPETokenizer:
    """Byte-level BPE learned on the corpus with the `tokenizers` library (GPT-2's scheme, a small vocabulary):
    any text round-trips exactly, Chinese included, since the base alphabet is the 256 bytes."""

    kind = "bpe"

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    @classmethod
    def train(cls, texts: list[str], vocab_size: int = 1000) -> BPETokenizer:
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

        tokenizer = Tokenizer(models.BPE())
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                      show_progress=False)
        tokenizer.train_from_iterator(texts, trainer)
        return cls(tokenizer)

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    @property
    def newline_id(self) -> int:
        return self.tokenizer.token_to_id("Ċ")  # byte 0x0A in the byte-level alphabet

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.tokenizer.encode_batch(texts)]

    def decode(self, ids) -> str:
        return self.tokenizer.decode(list(ids))

    def chars_per_token(self) -> list[int]:
        """Characters each token completes: its UTF-8 lead bytes (a Chinese character's 3 bytes may sit in 2
        tokens; only the one holding the first byte counts it), so any span of whole text sums exactly."""
        byte_of = _byte_of_symbol()
        counts = [0] * self.vocab_size
        for symbol, i in self.tokenizer.get_vocab().items():
            counts[i] = sum(1 for c in symbol if byte_of[c] & 0xC0 != 0x80)
        return counts

    def save(self, folder: Path) -> None:
        self.tokenizer.save(str(folder / "tokenizer.json"))

    @classmethod
    def load(cls, folder: Path) -> BPETokenizer:
        from tokenizers import Tokenizer

        return cls(Tokenizer.from_file(str(folder / "tokenizer.json")))


TOKENIZERS = {"char": CharTokenizer, "bpe": BPETokenizer}


def encode_segments(tokenizer, segments: list[tuple[str, bool]]) -> tuple[list[int], list[bool]]:
    """Token ids of the pieces, and for each token whether it belongs to a Bot reply."""
    unique = list(dict.fromkeys(text for text, _ in segments))
    ids_of = dict(zip(unique, tokenizer.encode_batch(unique)))
    ids, bot = [], []
    for text, is_bot in segments:
        ids += ids_of[text]
        bot += [is_bot] * len(ids_of[text])
    return ids, bot


def encode_conversations(tokenizer, conversations: list[list[str]]) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids (N,) int64, bot_mask (N,) bool) of the conversations one after the other."""
    return encode_documents(tokenizer, [dialog_segments(turns) for turns in conversations])


def encode_documents(tokenizer, documents: list[list[tuple[str, bool]]]) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids (N,) int64, bot_mask (N,) bool) of documents given as (text, is_bot_reply) pieces, one after the other."""
    ids, bot = encode_segments(tokenizer, [piece for document in documents for piece in document])
    return torch.tensor(ids, dtype=torch.long), torch.tensor(bot, dtype=torch.bool)


def newline_tokens(tokenizer) -> torch.Tensor:
    """(vocab,) bool: the tokens whose text holds a newline (a turn ends at one)."""
    return torch.tensor(["\n" in tokenizer.decode([i]) for i in range(tokenizer.vocab_size)])


def hf_tokenizer(tokenizer):
    """The tokenizer as transformers' PreTrainedTokenizerFast, for TRL's trainers (which pad with it and decode
    with it); the newline is its end-of-text and padding token, as in the model's config."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    if tokenizer.kind == "bpe":
        inner = tokenizer.tokenizer
        newline = inner.id_to_token(tokenizer.newline_id)
    else:  # one token per character: a word-level model over single characters
        inner = Tokenizer(models.WordLevel({c: i for i, c in enumerate(tokenizer.chars)}, unk_token=tokenizer.UNKNOWN))
        # one piece per character; (?m) lets "." match a newline too (Oniguruma's flag)
        inner.pre_tokenizer = pre_tokenizers.Split(Regex("(?m)."), behavior="isolated")
        inner.decoder = decoders.Fuse()
        newline = "\n"
    return PreTrainedTokenizerFast(tokenizer_object=inner, eos_token=newline, pad_token=newline,
                                   clean_up_tokenization_spaces=False)


