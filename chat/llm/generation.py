"""Chat replies, streamed: a worker thread writes, the consumer reads text deltas, and a stop really stops.

- `stream_chat` builds the prompt (chat.llm.prompt) and starts a worker. With the fast CPU decoder the reply is one
  request of the batching engine (chat.llm.serving); otherwise transformers' `generate` writes it, with the one
  sampler (chat.llm.sampling) as its last logits processor. Both feed transformers' own text streamer.
- `ChatStream.cancel()` (or abandoning the stream) ends the worker within one decode step; while no token comes the
  stream yields "" every WAIT_POLL_S, so a consumer whose user has gone gets control back to close it.
- Heavy work holds a slot of the server's budget (`chat.budget`): "chat" for replies, "plain-chat" for `generate`.
"""
from __future__ import annotations

import queue
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Iterator

import torch
from transformers import LogitsProcessorList, StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

from chat import budget
from chat.llm import serving
from chat.llm.models import LoadedModel, get_model
from chat.llm.params import GenerationParams, validate
from chat.llm.prompt import Prompt, build_prompt
from chat.llm.sampling import SamplerProcessor, TokenChoice, sampling_generator
from chat.llm.tokenizer import ModelTokenizer
from chat.tokens import describe_bytes


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

    def put_prefix(self, ids: list[int]) -> None:
        """The start of the reply that was already written (a reply continued from one of its tokens): shown as the
        reply's text, not counted as new tokens."""
        if ids:
            super().put(torch.tensor(ids))

    def on_finalized_text(self, text: str, stream_end: bool = False):
        self.shown = self.shown or bool(text)
        super().on_finalized_text(text, stream_end)


class _AfterPrompt:
    """The streamer as generate sees it: generate's first put (its input: the prompt and any reply prefix, already
    put) is left out."""

    def __init__(self, streamer: _TimedStreamer):
        self.streamer, self.first = streamer, True

    def put(self, value) -> None:
        if self.first:
            self.first = False
        else:
            self.streamer.put(value)

    def end(self) -> None:
        self.streamer.end()


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
    _record: list = field(default_factory=list, repr=False)  # the plain path's token choices (alternatives > 0)
    _tokenizer: object = field(default=None, repr=False)
    reply_prefix: list[int] = field(default_factory=list)  # the reply's start it continues (token ids), if any
    _done: bool = field(default=False, repr=False)  # iterated to its end: iterating again yields nothing

    @property
    def choices(self) -> list[TokenChoice]:
        """Each new token with the probability it was drawn with and the model's likeliest tokens there (asked for
        with `alternatives`): the "show probabilities" view."""
        raw = self._request.choices if self._request is not None else self._record
        bytes_of = ModelTokenizer(self._tokenizer).token_bytes
        return [TokenChoice(token, token_text(bytes_of, token), prob, model_prob,
                            tuple((i, token_text(bytes_of, i), p) for i, p in top))
                for token, prob, model_prob, top in list(raw)]

    @property
    def tokens(self) -> int:
        """Tokens written so far."""
        return self._streamer.tokens

    @property
    def place(self) -> int | None:
        request = self._request
        return request.place if request is not None and not request.generated else None

    def __iter__(self) -> Iterator[str]:
        if self._done:  # the streamer's end was read once: a second read would wait for ever
            return
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
            self._done = True
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
                loaded: LoadedModel | None = None, cancel: threading.Event | None = None, alternatives: int = 0,
                reply_prefix: list[int] | tuple = ()) -> ChatStream:
    """Start a reply to `messages` ([{role, content}], last one the user's) and return its stream. Everything is
    checked before any work starts; the worker holds one of the server's "chat" slots while it generates.

    `alternatives` > 0 records, for each new token, the probability it was drawn with and the model's that many
    likeliest tokens (`stream.choices`). `reply_prefix` (token ids) continues a reply from its start: the stream's
    text begins with it, its tokens are not new ones."""
    validate(params)
    if not 0 <= int(alternatives) <= MAX_ALTERNATIVES:
        raise ValueError(f"alternatives must be between 0 and {MAX_ALTERNATIVES}, got {alternatives}")
    loaded = loaded or get_model()
    cancel = cancel or threading.Event()
    prefix = [int(i) for i in reply_prefix]
    if any(not 0 <= i < len(loaded.tokenizer) for i in prefix):
        raise ValueError("The reply's start holds a token outside the vocabulary.")
    prompt = build_prompt(loaded, messages, params.max_new_tokens + len(prefix), cancel)
    streamer = _TimedStreamer(loaded.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=WAIT_POLL_S)
    stats = ReplyStats(prompt_tokens=len(prompt.ids) + len(prefix), dropped_messages=prompt.dropped,
                       context_window=loaded.context_window)
    stream = ChatStream(prompt, stats, streamer, None, cancel, time.perf_counter(),  # type: ignore[arg-type]
                        params.max_new_tokens, _tokenizer=loaded.tokenizer, reply_prefix=prefix)
    generator = sampling_generator(params.seed)
    ids = prompt.ids + prefix

    def work():
        try:
            with budget.slot("chat"):
                if cancel.is_set():
                    streamer.end()
                    return
                streamer.put(torch.tensor([prompt.ids]))  # left out of the text, as generate's input is
                streamer.put_prefix(prefix)
                fast = loaded.fast
                if fast is None and loaded.upcoming_fast is not None:  # a start compiles the kernels (seconds):
                    fast = _wait(loaded.upcoming_fast, cancel)  # worth waiting for rather than generate's 2 slots
                if fast is not None:
                    _fast_generate(loaded, ids, params, streamer, cancel, generator, stream, alternatives)
                else:  # generate runs a reply per thread: fewer at once
                    with budget.slot("plain-chat"):
                        _plain_generate(loaded, ids, params, streamer, cancel, generator,
                                        stream._record if alternatives else None, alternatives)
        except BaseException as error:  # surfaced to the consumer, never lost in the thread
            stream.error = error
            streamer.end()

    stream._worker = threading.Thread(target=loaded.replies.running(work), name="chatlab-generate", daemon=True)
    stream._worker.start()
    return stream


UPCOMING_FAST_WAIT_S = 90.0  # the longest a reply waits for a starting fast decoder before using generate


def _wait(upcoming, cancel: threading.Event):
    """The fast decoder a start is preparing, or None if it fails, takes too long, or the reply is cancelled."""
    deadline = time.monotonic() + UPCOMING_FAST_WAIT_S
    while not cancel.is_set() and time.monotonic() < deadline:
        try:
            return upcoming.result(timeout=WAIT_POLL_S)
        except TimeoutError:
            continue
    return None


def _plain_generate(loaded: LoadedModel, ids: list[int], params: GenerationParams, streamer, cancel,
                    generator: torch.Generator, record: list | None = None, alternatives: int = 0) -> None:
    """transformers' generate, each token chosen by the one sampler with this request's generator (and recorded with
    its probabilities in `record` when given)."""
    processors = LogitsProcessorList([SamplerProcessor(params, generator, record, alternatives)])
    input_ids = torch.tensor([ids], device=loaded.device)
    with torch.inference_mode():
        loaded.model.generate(
            input_ids=input_ids, attention_mask=torch.ones_like(input_ids), streamer=_AfterPrompt(streamer),
            max_new_tokens=params.max_new_tokens, do_sample=False, logits_processor=processors,
            temperature=None, top_p=None, top_k=None, repetition_penalty=None,
            stopping_criteria=StoppingCriteriaList([_StopOnEvent(cancel)]),
            pad_token_id=loaded.tokenizer.pad_token_id or loaded.tokenizer.eos_token_id)


def _fast_generate(loaded: LoadedModel, ids: list[int], params: GenerationParams, streamer: _TimedStreamer, cancel,
                   generator: torch.Generator | None = None, stream: ChatStream | None = None,
                   alternatives: int = 0) -> None:
    """The reply as one request of the batching engine (chat.llm.serving), sampled with this request's generator;
    its tokens feed the streamer. `cancel` ends it at the engine's next step, freeing its slot; `stream` gets the
    request (its place in line, its recorded choices)."""
    try:
        engine = serving.engine_for(loaded)
        request = engine.submit(ids, params.max_new_tokens, params, loaded.stop_ids,
                                cancel=cancel, generator=generator, alternatives=alternatives)
        if stream is not None:
            stream._request = request
        until = None  # tokens at once until the first words are out, then a batch per pace()
        while True:
            tokens, ended = request.take(until)
            if tokens:
                streamer.put(torch.tensor(tokens))
            if ended:
                break
            # the streamer holds a word back until the next one begins: pacing from the first token on would keep the
            # first word waiting a whole pace for the token after it
            until = time.monotonic() + pace(engine.running) if streamer.shown else None
    finally:
        streamer.end()


MAX_ALTERNATIVES = 10  # likeliest tokens recorded per step, at most


def token_text(bytes_of, token_id: int) -> str:
    """A token as text, or as its bytes (<0xE5 0xAE>) when it is only part of a character."""
    data = bytes_of(token_id)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return describe_bytes(data)


def chat_reply(messages: list[dict], params: GenerationParams = GenerationParams(),
               loaded: LoadedModel | None = None) -> tuple[str, ReplyStats]:
    """The whole reply at once (CLI, tests, benchmarks)."""
    stream = stream_chat(messages, params, loaded)
    text = "".join(stream)
    return text, stream.stats

