"""The prompt the model reads: a conversation rendered with the tokenizer's own chat template, within the context.

- `normalize_messages` takes what a form or an API client sends (Gradio 6's content parts included) to plain turns.
- `encode_chat` keeps a user's text text: typed special tokens never become real ones.
- `build_prompt` is O(turns): one rendering and one tokenization of the turns that could fit, then the newest that
  do; the system prompt always stays, and the oldest turns are dropped when prompt + reply would overflow.
"""
from __future__ import annotations

import re
import threading
from dataclasses import dataclass

from chat.llm.models import LoadedModel
from chat.llm.tokenizer import encode_plain_batch


def flatten_content(content) -> str:
    """Message content as plain text: Gradio 6 sends a list of parts [{"type": "text", "text": ...}, ...]."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, dict):
        return str(content.get("text") or content.get("content") or "")
    if isinstance(content, (list, tuple)):
        return "".join(flatten_content(part) for part in content)
    return str(content)


def check_history(messages) -> list:
    """`messages` as a list (None = []), or ValueError for anything else (an API client's history=5)."""
    if messages is None:
        return []
    if not isinstance(messages, (list, tuple)):
        raise ValueError(f"The history must be a list of messages like {{\"role\": \"user\", \"content\": \"Hi\"}}, "
                         f"got {type(messages).__name__}.")
    return list(messages)


def normalize_messages(messages: list[dict]) -> list[dict]:
    """[{role, content}] with text content only, in order; unknown roles and empty turns dropped. ValueError when
    `messages` is not a list of dicts."""
    out = []
    for position, message in enumerate(check_history(messages)):
        if not isinstance(message, dict):
            raise ValueError(f"Message {position} of the history must be a dict with a role and a content, got "
                             f"{type(message).__name__}.")
        role, text = message.get("role"), flatten_content(message.get("content"))
        if role in ("system", "user", "assistant") and (text or role == "assistant"):
            out.append({"role": role, "content": text})
    return out



# The prompt never looks further back than this many characters (newest first): 24 per token of an 8k context, 6x
# what ordinary text needs, so a turn that could fit is never left out, and a 10 MB history costs nothing.
CHARS_PER_TOKEN_CAP = 24
MAX_MESSAGE_CHARS = 100_000  # one message longer than this is refused before it is tokenized (~3x an 8k context)
MIN_TOKENS_PER_TURN = 4  # a template's framing alone (start, role, newline, end): caps the turns worth looking at


@dataclass
class Prompt:
    messages: list[dict]  # the turns that fit, system prompt first
    text: str  # the rendered chat template: exactly what the model reads
    ids: list[int]  # its tokens
    dropped: int  # oldest turns left out to fit the context window


def render(loaded: LoadedModel, messages: list[dict]) -> str:
    return loaded.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


@dataclass
class ChatEncoding:
    text: str  # the rendered template, contents included
    ids: list[int]  # its tokens: special only where the template put them
    message_tokens: list[int]  # tokens each message adds (its content and the framing before it)
    tail_tokens: int  # tokens after the last message (its end, the reply's opening)


def _special_pattern(tokenizer) -> re.Pattern:
    """The added tokens (<|im_start|>, <|im_end|>, ...) that the tokenizer would match anywhere in a text."""
    cached = getattr(tokenizer, "_chatlab_special_pattern", None)
    if cached is None:
        names = sorted({t.content for t in tokenizer.added_tokens_decoder.values()}, key=len, reverse=True)
        cached = re.compile("(" + "|".join(map(re.escape, names)) + ")") if names else re.compile("(?!)")
        tokenizer._chatlab_special_pattern = cached
    return cached


def encode_chat(tokenizer, messages: list[dict], add_generation_prompt: bool = True,
                cancel: threading.Event | None = None, known: dict[str, list[int]] | None = None) -> ChatEncoding:
    """The chat template's text and tokens, where only the template's own special tokens are special: a user who
    types "<|im_end|><|im_start|>system" gets those characters as text, never a forged turn.

    The template is rendered once with a placeholder for each content, so the special tokens found in that
    rendering are the template's; the text between them, contents put back, is tokenized with special tokens
    split into plain text. The tokenizer itself always cuts a text at its special tokens, so for a message
    without any this is exactly the tokenizer's own encoding of the rendered prompt. (A template that rewrites the
    content itself, with a trim filter say, sees it untouched here.) `known` remembers the ids of text pieces
    between calls (build_prompt encodes the kept turns again without tokenizing them again)."""
    marks = [f"\ue000{i}\ue001" for i in range(len(messages))]
    framed = tokenizer.apply_chat_template([{"role": m["role"], "content": mark} for m, mark in zip(messages, marks)],
                                           tokenize=False, add_generation_prompt=add_generation_prompt)
    contents = {mark: m["content"] for m, mark in zip(messages, marks)}
    parts = _special_pattern(tokenizer).split(framed)  # text, special, text, special, ..., text
    owner, texts, order = [], [], re.compile("\ue000(\\d+)\ue001")
    for index, part in enumerate(parts):
        found = [int(i) for i in order.findall(part)] if index % 2 == 0 else []
        owner.append(found[-1] if found else None)
        texts.append(order.sub(lambda m: contents[m.group(0)], part) if index % 2 == 0 else part)
    if cancel is not None and cancel.is_set():
        raise CancelledError()
    known = {} if known is None else known
    missing = list({texts[i] for i in range(0, len(parts), 2) if texts[i] and texts[i] not in known})
    known.update(zip(missing, encode_plain_batch(tokenizer, missing)))
    piece_ids = {i: known[texts[i]] for i in range(0, len(parts), 2) if texts[i]}
    for i in range(1, len(parts), 2):
        piece_ids[i] = [tokenizer.convert_tokens_to_ids(parts[i])]
    ids, per_message, pending, current = [], [0] * len(messages), 0, 0
    for index in range(len(parts)):
        got = piece_ids.get(index, [])
        ids += got
        pending += len(got)
        if owner[index] is not None:  # the framing before a content, and the content, are that message's cost
            current = owner[index]
            per_message[current] += pending
            pending = 0
    return ChatEncoding("".join(texts), ids, per_message, pending)


class CancelledError(RuntimeError):
    def __init__(self):
        super().__init__("cancelled")


def build_prompt(loaded: LoadedModel, messages: list[dict], max_new_tokens: int,
                 cancel: threading.Event | None = None) -> Prompt:
    """The chat template over the newest turns that leave room for the reply; the system prompt is always kept.

    O(turns): the turns worth looking at (no further back than a full context could hold, by characters and by
    turns) are rendered and tokenized once, each turn's token cost is known from that pass, the newest turns that
    fit are chosen by adding costs, and only the chosen prompt is encoded again to be exact. `cancel` (an Event)
    stops the work between passes."""
    messages = normalize_messages(messages)
    if not messages or messages[-1]["role"] != "user":
        raise ValueError("The conversation must end with a user message.")
    for message in messages:
        if len(message["content"]) > MAX_MESSAGE_CHARS:
            raise ValueError(f"A message is too long: {len(message['content']):,} characters (the most is "
                             f"{MAX_MESSAGE_CHARS:,}; the model reads {loaded.context_window:,} tokens at most).")
    system = messages[:1] if messages[0]["role"] == "system" else []
    turns = messages[len(system):]
    budget = loaded.context_window - max_new_tokens
    # Caps that never leave out a turn that could fit: turns older than these cannot be in the context anyway.
    first, chars = len(turns) - 1, len(turns[-1]["content"]) + sum(len(m["content"]) for m in system)
    while first > 0 and len(turns) - first < budget // MIN_TOKENS_PER_TURN:
        chars += len(turns[first - 1]["content"])
        if chars > budget * CHARS_PER_TOKEN_CAP:
            break
        first -= 1
    while turns[first]["role"] != "user":  # never start on an orphaned assistant turn (the last turn is the user's)
        first += 1
    dropped, turns = first, turns[first:]
    known: dict[str, list[int]] = {}
    costs = encode_chat(loaded.tokenizer, system + turns, cancel=cancel, known=known)
    cost = costs.message_tokens[len(system):]  # per turn
    total = costs.tail_tokens + sum(costs.message_tokens)
    start = 0  # the oldest turn kept
    while True:
        if total <= budget or start == len(turns) - 1:
            exact = encode_chat(loaded.tokenizer, system + turns[start:], cancel=cancel, known=known) if start \
                else costs
            if len(exact.ids) <= budget:
                return Prompt(system + turns[start:], exact.text, exact.ids, dropped + start)
            if start == len(turns) - 1:
                raise ValueError(
                    f"The message is too long: {len(exact.ids)} prompt tokens + {max_new_tokens} new tokens exceed "
                    f"the model's context of {loaded.context_window} tokens.")
            total = budget + 1  # the estimate was short (a template framing the first turn differently): drop more
        total -= cost[start]  # drop the oldest turn, and the assistant turns after it
        start += 1
        while turns[start]["role"] != "user":
            total -= cost[start]
            start += 1



def conversation(prompt: str, system: str = "") -> list[dict]:
    """The messages the model sees for one prompt; an empty system prompt leaves the chat template's default."""
    return ([{"role": "system", "content": system}] if system.strip() else []) + [{"role": "user", "content": prompt}]
