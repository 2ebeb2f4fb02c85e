"""Chat generation and the next-token view, on transformers' own generate, streamer and KV cache.

- `stream_chat` renders the conversation with the tokenizer's chat template (what the model really sees), drops the
  oldest turns when prompt + reply would overflow the context (the system prompt stays), and streams text deltas from
  `model.generate` running in a worker thread. A stopping criterion polls a cancel event after every token, so
  `ChatStream.cancel()` (or abandoning the stream) halts the worker within one decode step. When the model has the
  fast CPU decoder attached (`chat.fastpath`), the worker runs its loop instead of generate, with the same streamer,
  cancel check and transformers' own logits processors.
  Sampling draws from the request's own torch.Generator (seeded or not), never from torch's global one.
- `build_prompt` is O(turns): one rendering and one tokenization of the turns that could fit, then the newest that
  do; `encode_chat` keeps a user's text text (typed special tokens never become real ones).
- `NextTokenSession` shows the real next-token distribution before and after temperature / top-k / top-p, and appends
  a chosen token with one forward pass, keeping the KV cache between steps (within a server-wide budget, LRU) and
  only the last position's logits.
Heavy work holds a slot of the server's budget (`chat.budget`): "chat" for replies, "model" for next-token passes.
"""
from __future__ import annotations

import ctypes
import math
import os
import queue
import re
import threading
import time
import weakref
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from typing import Iterator

import torch
from transformers import (LogitsProcessor, LogitsProcessorList, RepetitionPenaltyLogitsProcessor, StoppingCriteria,
                          StoppingCriteriaList, TemperatureLogitsWarper, TextIteratorStreamer, TopKLogitsWarper,
                          TopPLogitsWarper)

from chat import budget, serving  # noqa: F401 (serving sets the chat limits the queue uses)
from chat.models import LoadedModel, ModelTokenizer, encode_plain_batch, get_model
from chat.tokens import describe_bytes, group_tokens


@dataclass(frozen=True)
class GenerationParams:
    """How the next token is picked. The defaults are SmolLM2's model card (temperature 0.2, top-p 0.9, the rest as
    transformers' generate leaves them): near-greedy, so a small model keeps to its most likely, usually right,
    answer. `chat.models.chat_defaults()` gives the chat model's own (its generation_config, or its card)."""

    temperature: float = 0.2  # 0 = greedy (always the most likely token); higher = more varied, more mistakes
    top_p: float = 0.9  # keep the smallest set of tokens whose probability adds up to top_p (1 = off)
    top_k: int = 50  # keep only the k most likely tokens (0 = off)
    max_new_tokens: int = 256  # length limit of the reply, in tokens
    repetition_penalty: float = 1.0  # > 1 discourages every token already in the text, the prompt's too (1 = off)
    seed: int | None = None  # fixes sampling for reproducible answers (None = random)

    @classmethod
    def from_inputs(cls, temperature=None, top_p=None, top_k=None, max_new_tokens=None, repetition_penalty=None,
                    seed=None, defaults: "GenerationParams | None" = None) -> "GenerationParams":
        """Params from what a form or an API client sent (numbers, numeric strings; None = the default; a negative
        seed = random), checked: ValueError naming the first bad one, before any work starts."""
        defaults = defaults or cls()
        given = dict(temperature=temperature, top_p=top_p, top_k=top_k, max_new_tokens=max_new_tokens,
                     repetition_penalty=repetition_penalty)
        values = {name: getattr(defaults, name) if value is None else _number(name, value)
                  for name, value in given.items()}
        if seed is not None:
            seed = _number("seed", seed, allow_negative=True)
            seed = None if seed < 0 else seed
        return validate(cls(**values, seed=seed))


LIMITS = {
    "temperature": (0.0, 2.0),
    "top_p": (0.01, 1.0),
    "top_k": (0, 1000),
    "max_new_tokens": (1, 4096),
    "repetition_penalty": (0.5, 2.0),
    "seed": (0, 2**32 - 1),
}
WHOLE = ("top_k", "max_new_tokens", "seed")


def _number(name: str, value, allow_negative: bool = False) -> int | float:
    """A form's or a client's value as a finite number (int for whole-number params), else ValueError."""
    low, high = LIMITS[name]
    parsed = value
    if isinstance(value, str):
        try:
            parsed = float(value.strip())
        except ValueError:
            parsed = None
    if isinstance(parsed, bool) or not isinstance(parsed, (int, float)) or not math.isfinite(parsed):
        raise ValueError(f"{name} must be a number between {low} and {high}, got {value!r}")
    if name in WHOLE:
        if parsed != int(parsed):
            raise ValueError(f"{name} must be a whole number, got {value!r}")
        parsed = int(parsed)
        if allow_negative and parsed < 0:
            return -1
    return parsed


def validate(params: GenerationParams) -> GenerationParams:
    """The same params, or ValueError naming the first one out of range."""
    for name, (low, high) in LIMITS.items():
        value = getattr(params, name)
        if value is None and name == "seed":
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
            raise ValueError(f"{name} must be a number between {low} and {high}, got {value!r}")
        if not low <= value <= high:
            raise ValueError(f"{name} must be between {low} and {high}, got {value}")
        if name in WHOLE and value != int(value):
            raise ValueError(f"{name} must be a whole number, got {value}")
    return params


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


# --- the prompt ---------------------------------------------------------------------------------------------------

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


@dataclass
class ReplyStats:
    prompt_tokens: int = 0
    new_tokens: int = 0
    ttft_s: float | None = None  # time to first token, seconds
    tokens_per_s: float | None = None  # decode speed after the first token
    seconds: float = 0.0  # whole reply, wall clock
    finish_reason: str = ""  # "stop" (end of turn), "length" (max_new_tokens), "cancelled", "error"
    dropped_messages: int = 0  # oldest turns left out to fit the context
    context_window: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


class _TimedStreamer(TextIteratorStreamer):
    """transformers' text streamer that also notes when each token arrives."""

    def __init__(self, tokenizer, **kwargs):
        super().__init__(tokenizer, **kwargs)
        self.prompt_seen = False
        self.tokens = 0
        self.first_at: float | None = None
        self.last_at: float | None = None
        self.shown = False  # whether any of the reply's text has been released (a word is held until the next begins)

    def put(self, value):
        if not self.prompt_seen:  # the first call carries the prompt
            self.prompt_seen = True
        else:
            now = time.perf_counter()
            self.first_at = self.first_at or now
            self.last_at = now
            self.tokens += int(value.numel())
        super().put(value)

    def on_finalized_text(self, text: str, stream_end: bool = False):
        self.shown = self.shown or bool(text)
        super().on_finalized_text(text, stream_end)


class _StopOnEvent(StoppingCriteria):
    def __init__(self, event: threading.Event):
        self.event = event

    def __call__(self, input_ids, scores, **kwargs):
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


WAIT_POLL_S = 0.5  # while no token comes (a reply waiting its turn, a long prompt being read), "" this often
# A reply's text is refreshed on screen at most ~25 times a second, and the server's updates are shared by the replies
# streaming at once (8: ~3 a second each): every update is diffed, sent and drawn on the cores the model needs
REFRESH_S = 0.04
UPDATES_PER_S = 25


def pace(replies: int) -> float:
    """Seconds between two deliveries of one reply's new text while `replies` stream at once."""
    return max(REFRESH_S, replies / UPDATES_PER_S)


@dataclass
class ChatStream:
    """A reply being generated: iterate it for text deltas; `cancel()` stops the worker; `stats` at the end.

    While no token comes (the reply waits for a place in the serving engine, or a long prompt is being read) the
    iteration yields "" every WAIT_POLL_S: a consumer gets control back, so one whose user has gone can close the
    stream, which stops the worker, instead of staying blocked until the first token. `place` is then the reply's
    number in the engine's line (1 = next), or None."""

    prompt: Prompt
    stats: ReplyStats
    _streamer: _TimedStreamer = field(repr=False)
    _worker: threading.Thread = field(repr=False)
    _cancel: threading.Event = field(repr=False)
    _started: float = 0.0
    _max_new_tokens: int = 0
    error: BaseException | None = None
    text: str = ""
    _request: serving.Request | None = field(default=None, repr=False)  # the engine's, once submitted

    @property
    def place(self) -> int | None:
        request = self._request
        return request.place if request is not None and not request.generated else None

    def __iter__(self) -> Iterator[str]:
        finished = False
        try:
            while True:
                try:
                    delta = next(self._streamer)
                except queue.Empty:  # nothing yet: hand control back (see the class's docstring)
                    yield ""
                    continue
                except StopIteration:
                    break
                if delta:
                    self.text += delta
                    yield delta
            finished = True
        finally:  # also runs when the consumer abandons the stream (generator closed): stop the worker
            if not finished:
                self._cancel.set()
            self._worker.join()
            self._finish()
        if self.error is not None:
            raise RuntimeError(f"Generation failed: {self.error}") from self.error

    def cancel(self, wait: bool = True) -> None:
        self._cancel.set()
        if wait:
            self._worker.join()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def _finish(self) -> None:
        s, st = self.stats, self._streamer
        s.new_tokens = st.tokens
        s.seconds = time.perf_counter() - self._started
        if st.first_at is not None:
            s.ttft_s = st.first_at - self._started
            if st.tokens > 1 and st.last_at > st.first_at:
                s.tokens_per_s = (st.tokens - 1) / (st.last_at - st.first_at)
        if self.error is not None:
            s.finish_reason = "error"
        elif self._cancel.is_set():
            s.finish_reason = "cancelled"
        elif st.tokens >= self._max_new_tokens:
            s.finish_reason = "length"
        else:
            s.finish_reason = "stop"


def stream_chat(messages: list[dict], params: GenerationParams = GenerationParams(),
                loaded: LoadedModel | None = None, cancel: threading.Event | None = None) -> ChatStream:
    """Start a reply to `messages` ([{role, content}], last one the user's) and return its stream. Everything is
    checked before any work starts; the worker holds one of the server's "chat" slots while it generates."""
    validate(params)
    loaded = loaded or get_model()
    cancel = cancel or threading.Event()
    prompt = build_prompt(loaded, messages, params.max_new_tokens, cancel)
    streamer = _TimedStreamer(loaded.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=WAIT_POLL_S)
    stats = ReplyStats(prompt_tokens=len(prompt.ids), dropped_messages=prompt.dropped,
                       context_window=loaded.context_window)
    stream = ChatStream(prompt, stats, streamer, None, cancel, time.perf_counter(),  # type: ignore[arg-type]
                        params.max_new_tokens)
    generator = sampling_generator(params.seed)

    def work():
        try:
            with budget.slot("chat"):
                if cancel.is_set():
                    streamer.end()
                    return
                if loaded.fast is not None:
                    _fast_generate(loaded, prompt.ids, params, streamer, cancel, generator, stream)
                else:  # generate runs a reply per thread: fewer at once
                    with budget.slot("plain-chat"):
                        _plain_generate(loaded, prompt.ids, params, streamer, cancel, generator)
        except BaseException as error:  # surfaced to the consumer, never lost in the thread
            stream.error = error
            streamer.end()

    stream._worker = threading.Thread(target=loaded.replies.running(work), name="chatlab-generate", daemon=True)
    stream._worker.start()
    return stream


def sampling_generator(seed: int | None) -> torch.Generator:
    """This request's own random stream: seeded, or from fresh OS entropy. Never torch's global generator, which
    every thread shares (a seed set there is moved on by whoever samples next)."""
    generator = torch.Generator()
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(seed)
    return generator


class SampleWithGenerator(LogitsProcessor):
    """The last processor: draws the next token from softmax(scores) with its own generator and leaves only that
    token possible, so generate's greedy pick takes it (generate has no generator argument)."""

    def __init__(self, generator: torch.Generator):
        self.generator = generator

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        chosen = torch.multinomial(torch.softmax(scores.float(), dim=-1), 1, generator=self.generator)  # (B, 1)
        return torch.full_like(scores, float("-inf")).scatter_(-1, chosen, 0.0)


def _processors(params: GenerationParams) -> LogitsProcessorList:
    """transformers' own processors, in generate's order: repetition penalty, temperature, top-k, top-p."""
    processors = LogitsProcessorList()
    if params.repetition_penalty != 1.0:
        processors.append(RepetitionPenaltyLogitsProcessor(params.repetition_penalty))
    if params.temperature > 0:
        if params.temperature != 1.0:
            processors.append(TemperatureLogitsWarper(params.temperature))
        if params.top_k:
            processors.append(TopKLogitsWarper(params.top_k))
        if params.top_p < 1.0:
            processors.append(TopPLogitsWarper(params.top_p))
    return processors


def _plain_generate(loaded: LoadedModel, ids: list[int], params: GenerationParams, streamer, cancel,
                    generator: torch.Generator) -> None:
    """transformers' generate, its sampling done by SampleWithGenerator so that the seed is this request's."""
    processors = _processors(params)
    if params.temperature > 0:
        processors.append(SampleWithGenerator(generator))
    input_ids = torch.tensor([ids], device=loaded.device)
    with torch.inference_mode():
        loaded.model.generate(
            input_ids=input_ids, attention_mask=torch.ones_like(input_ids), streamer=streamer,
            max_new_tokens=params.max_new_tokens, do_sample=False, logits_processor=processors,
            temperature=None, top_p=None, top_k=None, repetition_penalty=None,
            stopping_criteria=StoppingCriteriaList([_StopOnEvent(cancel)]),
            pad_token_id=loaded.tokenizer.pad_token_id or loaded.tokenizer.eos_token_id)


def _token_chooser(params: GenerationParams, generator: torch.Generator | None = None):
    """(ids (1, L), logits (1, vocab)) -> next id, with transformers' own processors in generate's order and this
    request's generator."""
    processors = _processors(params)
    sampling = params.temperature > 0
    generator = generator or sampling_generator(params.seed)

    def choose(ids: torch.Tensor, logits: torch.Tensor) -> int:
        scores = processors(ids, logits)
        if sampling:
            return int(torch.multinomial(torch.softmax(scores, dim=-1), 1, generator=generator))
        return int(scores.argmax())

    return choose


def _fast_generate(loaded: LoadedModel, ids: list[int], params: GenerationParams, streamer: _TimedStreamer, cancel,
                   generator: torch.Generator | None = None, stream: ChatStream | None = None) -> None:
    """The reply as one request of the batching engine (chat.serving), sampled with this request's generator; its
    tokens feed the same streamer generate would (prompt first, then each token). `cancel` ends it at the
    engine's next step, freeing its slot; `stream` gets the request (its place in line)."""
    streamer.put(torch.tensor([ids]))
    try:
        engine = serving.engine_for(loaded)
        request = engine.submit(ids, params.max_new_tokens, serving.sampling_of(params), loaded.stop_ids,
                                cancel=cancel, generator=generator)
        if stream is not None:
            stream._request = request
        until = None  # tokens at once until the first words are out, then a batch per pace()
        while True:
            tokens, ended = request.take(until)
            if tokens:
                streamer.put(torch.tensor(tokens))
            if ended:
                break
            # the streamer holds a word back until the next one begins: pacing from the first token on kept the first
            # word waiting a whole pace (8 replies at once: 0.32 s) for the token after it
            until = time.monotonic() + pace(engine.running) if streamer.shown else None
    finally:
        streamer.end()


def chat_reply(messages: list[dict], params: GenerationParams = GenerationParams(),
               loaded: LoadedModel | None = None) -> tuple[str, ReplyStats]:
    """The whole reply at once (CLI, tests, benchmarks)."""
    stream = stream_chat(messages, params, loaded)
    text = "".join(stream)
    return text, stream.stats


# --- next token ---------------------------------------------------------------------------------------------------


def shape_distribution(logits: torch.Tensor, temperature: float, top_k: int, top_p: float) -> torch.Tensor:
    """Probabilities after temperature, then top-k, then top-p (the order transformers applies them); 0 = greedy."""
    logits = logits.float()
    if temperature <= 0:
        probs = torch.zeros_like(logits)
        probs[logits.argmax()] = 1.0
        return probs
    scaled = logits / temperature
    if top_k and top_k < scaled.numel():
        kth = torch.topk(scaled, top_k).values[-1]
        scaled = scaled.masked_fill(scaled < kth, float("-inf"))
    probs = torch.softmax(scaled, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = probs.sort(descending=True)
        before = sorted_probs.cumsum(0) - sorted_probs  # mass of the tokens ranked above each one
        sorted_probs[before >= top_p] = 0.0  # the first token is always kept
        probs = torch.zeros_like(probs).scatter(0, order, sorted_probs)
        probs /= probs.sum()
    return probs


@dataclass
class Candidate:
    token_id: int
    label: str  # the token's text, or its bytes like <0xE5 0xAE> when it is part of a character
    partial: bool  # True when the token alone is not whole UTF-8 characters
    completes: str  # for a partial token: the character it finishes in context ("" if none)
    raw_prob: float  # softmax of the model's logits
    shaped_prob: float  # after temperature / top-k / top-p


def shape_params(temperature=1.0, top_k=0, top_p=1.0) -> tuple[float, int, float]:
    """The next-token view's knobs from a form or an API client, checked (ValueError naming the bad one)."""
    params = GenerationParams.from_inputs(temperature=temperature, top_k=top_k, top_p=top_p)
    return params.temperature, params.top_k, params.top_p


class SessionCaches:
    """The KV caches of the live next-token sessions: beyond `max_bytes` in all, the least recently used sessions
    lose theirs (their text and next-token logits stay; their next step runs their text again, once)."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._order: OrderedDict[int, weakref.ref] = OrderedDict()  # id(session) -> session, least recent first

    def used(self, session: "NextTokenSession") -> None:
        with self._lock:
            self._order[id(session)] = weakref.ref(session)
            self._order.move_to_end(id(session))
            total = 0
            for key, ref in reversed(list(self._order.items())):
                other = ref()
                if other is None:  # garbage-collected (its id may be reused: the entry goes)
                    del self._order[key]
                    continue
                size = other.cache_bytes()
                if other is not session and total + size > self.max_bytes:
                    other.drop_cache()
                    del self._order[key]
                else:
                    total += size

    def forget(self, session: "NextTokenSession") -> None:
        with self._lock:
            self._order.pop(id(session), None)

    def cached_bytes(self) -> int:
        with self._lock:
            return sum(s.cache_bytes() for s in (ref() for ref in list(self._order.values())) if s is not None)


try:  # glibc keeps what a thread frees for its own reuse: a 6k-token pass's activations stay as ~0.5 GB of RSS each
    _MALLOC_TRIM = ctypes.CDLL("libc.so.6").malloc_trim
except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to give back this way
    _MALLOC_TRIM = None
LONG_PASS_TOKENS = 1024  # after a forward pass over this many tokens, the freed memory goes back to the system


def release_freed_memory() -> None:
    """Return the heap memory freed by a long forward pass to the system (malloc_trim, all arenas; ~10 ms)."""
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


# 384 MB of KV cache in all holds one full 8k context of SmolLM2 (46 KB per token); more sessions share it, LRU
SESSION_CACHES = SessionCaches(int(os.environ.get("CHATLAB_NEXT_TOKEN_CACHE_MB", 384)) << 20)


class NextTokenSession:
    """A text growing one chosen token at a time (文字接龙), with the model's KV cache kept between steps.

    Memory per session is the KV cache and one row of logits (the last position's: the forward pass computes no
    other row). The caches of all sessions share SESSION_CACHES' budget; `close()` (Gradio's state expiry calls
    it) frees a session's at once."""

    def __init__(self, text: str, loaded: LoadedModel | None = None, chat: bool = False):
        if not isinstance(text, str):
            raise ValueError(f"The prompt must be text, got {type(text).__name__}.")
        if len(text) > MAX_MESSAGE_CHARS:
            raise ValueError(f"The prompt is too long: {len(text):,} characters (the most is {MAX_MESSAGE_CHARS:,}).")
        self.loaded = loaded or get_model()
        self.tokenizer = ModelTokenizer(self.loaded.tokenizer)
        if chat:  # the user's text stays text: only the template's own tokens are special
            encoded = encode_chat(self.loaded.tokenizer, [{"role": "user", "content": text}])
            text, self.ids = encoded.text, encoded.ids
        else:
            self.ids = self.tokenizer.encode(text)
        self.prompt_text = text
        if not self.ids:
            raise ValueError("Type a prompt first: the model needs at least one token to continue.")
        if len(self.ids) >= self.loaded.context_window:
            raise ValueError(f"The prompt is {len(self.ids)} tokens; the model's context is "
                             f"{self.loaded.context_window}.")
        self.prompt_len = len(self.ids)
        self.past = None  # transformers' DynamicCache over self.ids (None once evicted)
        self.logits: torch.Tensor | None = None  # (vocab,) next-token logits after self.ids
        self._lock = threading.Lock()  # one step at a time (a user's clicks can arrive together)
        self._advance()

    @torch.inference_mode()
    def _advance(self) -> None:
        """One forward pass over the tokens the cache does not hold yet (all of them after an eviction), keeping only
        the last position's logits."""
        from transformers import DynamicCache

        engine = serving.engine_for(self.loaded)
        if engine is not None:  # in the batch with everyone's chat; the engine keeps the text's KV for the next step
            with budget.slot("model"):
                self.logits = engine.logits(self.ids)
            return
        model = self.loaded.model
        with budget.slot("model"):
            past = self.past if self.past is not None else DynamicCache(config=model.config)
            new_ids = self.ids[past.get_seq_length():]
            keep = {"logits_to_keep": 1} if model._supports_logits_to_keep() else {}
            out = model(input_ids=torch.tensor([new_ids], device=self.loaded.device), past_key_values=past,
                        use_cache=True, **keep)
            self.past = out.past_key_values
            self.logits = out.logits[0, -1].float().clone()  # its own (vocab,) storage, never a view of (T, vocab)
            del out
        SESSION_CACHES.used(self)
        if len(new_ids) >= LONG_PASS_TOKENS:
            release_freed_memory()

    def cache_bytes(self) -> int:
        past = self.past
        if past is None:
            return 0
        return sum(t.nbytes for layer in past.layers for t in (layer.keys, layer.values) if t is not None)

    def drop_cache(self) -> None:
        self.past = None

    def close(self) -> None:
        """Free the KV cache now (the session's state expired or was replaced)."""
        self.past = None
        SESSION_CACHES.forget(self)

    @property
    def generated(self) -> list[int]:
        return self.ids[self.prompt_len:]

    def text(self) -> str:
        return self.loaded.tokenizer.decode(self.ids, skip_special_tokens=False)

    def _pending_bytes(self) -> bytes:
        """Bytes at the end of the text that do not yet form a whole character."""
        groups = group_tokens(self.ids[-8:], self.tokenizer.token_bytes)
        last = groups[-1] if groups else None
        if last is not None:
            try:
                last.raw.decode("utf-8")
            except UnicodeDecodeError:
                return last.raw
        return b""

    def candidates(self, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, k: int = 10) -> list[Candidate]:
        """The k most likely next tokens, with their raw and shaped probabilities, most likely first."""
        temperature, top_k, top_p = shape_params(temperature, top_k, top_p)
        logits = self.logits
        raw = torch.softmax(logits, dim=-1)
        shaped = shape_distribution(logits, temperature, top_k, top_p)
        pending = self._pending_bytes()
        out = []
        for token_id in torch.topk(raw, k).indices.tolist():
            data = self.tokenizer.token_bytes(token_id)
            try:
                label, partial = data.decode("utf-8"), False
            except UnicodeDecodeError:
                label, partial = describe_bytes(data), True
            completes = ""
            if pending or partial:
                try:
                    completes = (pending + data).decode("utf-8") if pending else ""
                except UnicodeDecodeError:
                    completes = ""
            out.append(Candidate(token_id, label, partial, completes, float(raw[token_id]), float(shaped[token_id])))
        return out

    def append(self, token_id: int) -> None:
        """Add a token to the text: one forward pass on top of the KV cache."""
        if isinstance(token_id, bool) or not isinstance(token_id, int) or not (
                0 <= token_id < self.loaded.model.config.vocab_size):
            raise ValueError(f"Token id {token_id!r} is outside the vocabulary.")
        with self._lock:
            if len(self.ids) + 1 >= self.loaded.context_window:
                raise ValueError("The text has reached the model's context window.")
            self.ids.append(token_id)
            self._advance()

    def undo(self) -> None:
        """Remove the last appended token (never the prompt)."""
        with self._lock:
            if len(self.ids) <= self.prompt_len:
                raise ValueError("Nothing to undo: only the prompt is left.")
            self.ids.pop()
            extra = self.past.get_seq_length() - (len(self.ids) - 1) if self.past is not None else 0
            if extra > 0:  # the undone token, and the one before it, fed again for its logits
                self.past.crop(-extra)
            self._advance()

    def greedy(self) -> int:
        token_id = int(self.logits.argmax())
        self.append(token_id)
        return token_id

    def sample(self, temperature: float, top_k: int, top_p: float, seed: int | None = None) -> int:
        temperature, top_k, top_p = shape_params(temperature, top_k, top_p)
        probs = shape_distribution(self.logits, temperature, top_k, top_p)
        token_id = int(torch.multinomial(probs.cpu(), 1, generator=sampling_generator(seed)))
        self.append(token_id)
        return token_id


def next_token_candidates(text: str, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, k: int = 10,
                          chat: bool = False) -> list[Candidate]:
    """The model's top-k next tokens for a text (or a user message, with `chat`), raw and shaped. The knobs are
    checked before the model runs."""
    temperature, top_k, top_p = shape_params(temperature, top_k, top_p)
    session = NextTokenSession(text, chat=chat)
    try:
        return session.candidates(temperature, top_k, top_p, k)
    finally:
        session.close()
