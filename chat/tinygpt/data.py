"""The dialog corpus: chatterbot-corpus's YAML files (`categories` + `conversations`, one file per topic and
language), turned into `User: ...\nBot: ...\n` text with a blank line between conversations. One conversation in
ten is held out for validation, chosen by a hash of its text, so the split never changes. Malformed entries are
skipped and counted; repeated conversations (tech_support repeats some a hundred times) are kept once.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

import yaml

from chat.training.run import TrainingError

ROLES = ("User", "Bot")  # speaker names in the training text; turns alternate, the User speaks first
CORPUS_PACKAGE = "chatterbot_corpus"
SAMPLE_MESSAGES = {"english": "Hello", "chinese": "你好"}  # the timeline's fixed prompt (first turn otherwise)



@dataclass
class Corpus:
    lang: str  # folder under chatterbot_corpus/data
    topics: list[str]  # topic files used (stems, e.g. "greetings")
    train: list[list[str]]  # conversations, each a list of turns (User, Bot, User, ...)
    val: list[list[str]]  # held-out conversations
    skipped: int  # malformed entries (not a list of >= 2 non-empty strings, or unreadable files) left out
    duplicates: int  # repeats of a conversation already loaded, left out (tech_support repeats some 100 times)

    @property
    def conversations(self) -> int:
        return len(self.train) + len(self.val)


def corpus_dir() -> Path:
    from chat.paths import package_file

    return package_file(CORPUS_PACKAGE, "data")


def list_languages() -> list[str]:
    return sorted(p.name for p in corpus_dir().iterdir() if p.is_dir() and any(p.glob("*.yml")))


def list_topics(lang: str) -> list[str]:
    folder = corpus_dir() / lang
    if not folder.is_dir():
        raise TrainingError("unknown_lang", f"unknown language {lang!r}; pick one of {', '.join(list_languages())}",
                           lang=lang)
    return sorted(p.stem for p in folder.glob("*.yml"))


def clean_turn(turn) -> str | None:
    """One line of dialog: whitespace (newlines in code answers too) collapsed, so one turn is one line."""
    if not isinstance(turn, str):
        return None
    text = " ".join(turn.split())
    return text or None


def read_topic(path: Path) -> tuple[list[list[str]], int]:
    """(conversations, skipped entries) of one YAML topic file; an unreadable file counts as one skipped entry."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return [], 1
    entries = data.get("conversations") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        return [], 1
    conversations, skipped = [], 0
    for entry in entries:
        turns = [clean_turn(t) for t in entry] if isinstance(entry, list) else []
        if len(turns) < 2 or any(t is None for t in turns):
            skipped += 1
            continue
        conversations.append(turns)
    return conversations, skipped


def is_validation(turns: list[str], val_fraction: float) -> bool:
    """Stable held-out choice: a hash of the conversation's text, so adding topics never moves a conversation."""
    return zlib.crc32("\n".join(turns).encode("utf-8")) % 1000 < 1000 * val_fraction


def load_corpus(lang: str = "english", topics: list[str] | tuple[str, ...] = (), val_fraction: float = 0.1
                ) -> Corpus:
    """The conversations of the chosen topics (all topics when `topics` is empty), split train / validation."""
    available = list_topics(lang)
    chosen = list(topics) or available
    unknown = [t for t in chosen if t not in available]
    if unknown:
        raise TrainingError("unknown_topic", f"no topic {unknown[0]!r} in {lang}; topics: {', '.join(available)}",
                           topic=unknown[0], lang=lang)
    train, val, skipped, duplicates, seen = [], [], 0, 0, set()
    for topic in chosen:
        conversations, bad = read_topic(corpus_dir() / lang / f"{topic}.yml")
        skipped += bad
        for turns in conversations:
            if tuple(turns) in seen:
                duplicates += 1
                continue
            seen.add(tuple(turns))
            (val if is_validation(turns, val_fraction) else train).append(turns)
    return Corpus(lang=lang, topics=chosen, train=train, val=val, skipped=skipped, duplicates=duplicates)


def dialog_segments(turns: list[str]) -> list[tuple[str, bool]]:
    """A conversation as (text, is_bot_reply) pieces: "User:", " hi\\n", "Bot:", " hello\\n", ..., "\\n".

    Each piece is tokenized on its own, so a token never straddles a role boundary (masking is exact) and a
    prompt ending in "Bot:" is tokenized exactly as in training. The reply piece keeps its newline: the model
    learns to end its turn.
    """
    pieces = []
    for i, turn in enumerate(turns):
        role = ROLES[i % 2]
        pieces += [(f"{role}:", False), (f" {turn}\n", role == "Bot")]
    return pieces + [("\n", False)]


def dialog_text(turns: list[str]) -> str:
    return "".join(text for text, _ in dialog_segments(turns))


def prompt_segments(history: list[tuple[str, str]], message: str) -> list[tuple[str, bool]]:
    """The training format for a chat: past (user, bot) turns, the new message, then "Bot:" for the reply."""
    pieces = []
    for user, bot in history:
        pieces += dialog_segments([clean_turn(user) or "", clean_turn(bot) or ""])[:-1]
    return pieces + [("User:", False), (f" {clean_turn(message) or ''}\n", False), ("Bot:", False)]


