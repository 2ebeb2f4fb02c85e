"""Chat generation and the next-token view, on transformers' own generate, streamer and KV cache.

- `stream_chat` renders the conversation with the tokenizer's chat template (what the model really sees), drops the
  oldest turns when prompt + reply would overflow the context (the system prompt stays), and streams text deltas from
  `model.generate` running in a worker thread. A stopping criterion polls a cancel event after every token, so
  `ChatStream.cancel()` (or abandoning the stream) halts the worker within one decode step. When the model has the
  fast CPU decoder attached (`chat.fastpath`), the worker runs its loop instead of generate, with the same streamer,
  cancel check and transformers' own logits processors.
- `NextTokenSession` shows the real next-token distribution before and after temperature / top-k / top-p, and appends
  a chosen token with one forward pass, keeping the KV cache between steps.
"""
from __future__ import annotations

import math
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Iterator

import torch
from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

from chat.models import LoadedModel, ModelTokenizer, get_model
from chat.tokens import describe_bytes, group_tokens


@dataclass(frozen=True)
class GenerationParams:
    temperature: float = 0.7  # 0 = greedy (always the most likely token)
    top_p: float = 0.9  # keep the smallest set of tokens whose probability adds up to top_p (1 = off)
    top_k: int = 50  # keep only the k most likely tokens (0 = off)
    max_new_tokens: int = 256  # length limit of the reply, in tokens
    repetition_penalty: float = 1.1  # > 1 discourages repeating tokens already in the text (1 = off)
    seed: int | None = None  # fixes sampling for reproducible answers (None = random)


LIMITS = {
    "temperature": (0.0, 2.0),
    "top_p": (0.01, 1.0),
    "top_k": (0, 1000),
    "max_new_tokens": (1, 4096),
    "repetition_penalty": (0.5, 2.0),
    "seed": (0, 2**32 - 1),
}


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
        if name in ("top_k", "max_new_tokens", "seed") and value != int(value):
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


def normalize_messages(messages: list[dict]) -> list[dict]:
    """[{role, content}] with text content only, in order; unknown roles and empty turns dropped."""
    out = []
    for message in messages or []:
        role = message.get("role") if isinstance(message, dict) else None
        text = flatten_content(message.get("content")) if isinstance(message, dict) else ""
        if role in ("system", "user", "assistant") and (text or role == "assistant"):
            out.append({"role": role, "content": text})
    return out


@dataclass
class Prompt:
    messages: list[dict]  # the turns that fit, system prompt first
    text: str  # the rendered chat template: exactly what the model reads
    ids: list[int]  # its tokens
    dropped: int  # oldest turns left out to fit the context window


def render(loaded: LoadedModel, messages: list[dict]) -> str:
    return loaded.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def build_prompt(loaded: LoadedModel, messages: list[dict], max_new_tokens: int) -> Prompt:
    """The chat template over the newest turns that leave room for the reply; the system prompt is always kept."""
    messages = normalize_messages(messages)
    if not messages or messages[-1]["role"] != "user":
        raise ValueError("The conversation must end with a user message.")
    system = messages[:1] if messages[0]["role"] == "system" else []
    turns = messages[len(system):]
    budget = loaded.context_window - max_new_tokens
    dropped = 0
    while True:
        text = render(loaded, system + turns)
        ids = loaded.tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) <= budget:
            return Prompt(system + turns, text, ids, dropped)
        if len(turns) <= 1:
            raise ValueError(
                f"The message is too long: {len(ids)} prompt tokens + {max_new_tokens} new tokens exceed the "
                f"model's context of {loaded.context_window} tokens.")
        turns = turns[1:]
        dropped += 1
        while turns and turns[0]["role"] != "user":  # never start on an orphaned assistant turn
            turns = turns[1:]
            dropped += 1


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

    def put(self, value):
        if not self.prompt_seen:  # the first call carries the prompt
            self.prompt_seen = True
        else:
            now = time.perf_counter()
            self.first_at = self.first_at or now
            self.last_at = now
            self.tokens += int(value.numel())
        super().put(value)


class _StopOnEvent(StoppingCriteria):
    def __init__(self, event: threading.Event):
        self.event = event

    def __call__(self, input_ids, scores, **kwargs):
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


@dataclass
class ChatStream:
    """A reply being generated: iterate it for text deltas; `cancel()` stops the worker; `stats` at the end."""

    prompt: Prompt
    stats: ReplyStats
    _streamer: _TimedStreamer = field(repr=False)
    _worker: threading.Thread = field(repr=False)
    _cancel: threading.Event = field(repr=False)
    _started: float = 0.0
    _max_new_tokens: int = 0
    error: BaseException | None = None
    text: str = ""

    def __iter__(self) -> Iterator[str]:
        finished = False
        try:
            for delta in self._streamer:
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
    """Start a reply to `messages` ([{role, content}], last one the user's) and return its stream."""
    validate(params)
    loaded = loaded or get_model()
    prompt = build_prompt(loaded, messages, params.max_new_tokens)
    cancel = cancel or threading.Event()
    streamer = _TimedStreamer(loaded.tokenizer, skip_prompt=True, skip_special_tokens=True)
    input_ids = torch.tensor([prompt.ids], device=loaded.device)
    sampling = params.temperature > 0
    kwargs = dict(
        input_ids=input_ids, attention_mask=torch.ones_like(input_ids), streamer=streamer,
        max_new_tokens=params.max_new_tokens, do_sample=sampling,
        repetition_penalty=params.repetition_penalty,
        stopping_criteria=StoppingCriteriaList([_StopOnEvent(cancel)]),
        pad_token_id=loaded.tokenizer.pad_token_id or loaded.tokenizer.eos_token_id,
    )
    if sampling:
        kwargs.update(temperature=params.temperature, top_p=params.top_p, top_k=params.top_k or None)
    else:
        kwargs.update(temperature=None, top_p=None, top_k=None)
    stats = ReplyStats(prompt_tokens=len(prompt.ids), dropped_messages=prompt.dropped,
                       context_window=loaded.context_window)
    stream = ChatStream(prompt, stats, streamer, None, cancel, time.perf_counter(),  # type: ignore[arg-type]
                        params.max_new_tokens)

    def work():
        try:
            if params.seed is not None:
                torch.manual_seed(params.seed)
            if loaded.fast is not None:
                _fast_generate(loaded, prompt.ids, params, streamer, cancel)
                return
            with torch.inference_mode():
                loaded.model.generate(**kwargs)
        except BaseException as error:  # surfaced to the consumer, never lost in the thread
            stream.error = error
            streamer.end()

    stream._worker = threading.Thread(target=loaded.replies.running(work), name="chatlab-generate", daemon=True)
    stream._worker.start()
    return stream


def _token_chooser(params: GenerationParams):
    """(ids (1, L), logits (1, vocab)) -> next id, with transformers' own processors in generate's order."""
    from transformers import (LogitsProcessorList, RepetitionPenaltyLogitsProcessor, TemperatureLogitsWarper,
                              TopKLogitsWarper, TopPLogitsWarper)

    processors = LogitsProcessorList()
    if params.repetition_penalty != 1.0:
        processors.append(RepetitionPenaltyLogitsProcessor(params.repetition_penalty))
    sampling = params.temperature > 0
    if sampling:
        if params.temperature != 1.0:
            processors.append(TemperatureLogitsWarper(params.temperature))
        if params.top_k:
            processors.append(TopKLogitsWarper(params.top_k))
        if params.top_p < 1.0:
            processors.append(TopPLogitsWarper(params.top_p))

    def choose(ids: torch.Tensor, logits: torch.Tensor) -> int:
        scores = processors(ids, logits)
        if sampling:
            return int(torch.multinomial(torch.softmax(scores, dim=-1), 1))
        return int(scores.argmax())

    return choose


def _fast_generate(loaded: LoadedModel, ids: list[int], params: GenerationParams, streamer, cancel) -> None:
    """The fast decoder's loop feeding the same streamer generate would (prompt first, then each token)."""
    streamer.put(torch.tensor([ids]))
    try:
        for token in loaded.fast.tokens(ids, params.max_new_tokens, _token_chooser(params), loaded.stop_ids, cancel):
            streamer.put(torch.tensor([token]))
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


class NextTokenSession:
    """A text growing one chosen token at a time (文字接龙), with the model's KV cache kept between steps."""

    def __init__(self, text: str, loaded: LoadedModel | None = None, chat: bool = False):
        self.loaded = loaded or get_model()
        self.tokenizer = ModelTokenizer(self.loaded.tokenizer)
        if chat:
            text = render(self.loaded, [{"role": "user", "content": text}])
        self.prompt_text = text
        self.ids: list[int] = self.tokenizer.encode(text, special=chat)
        if not self.ids:
            raise ValueError("Type a prompt first: the model needs at least one token to continue.")
        if len(self.ids) >= self.loaded.context_window:
            raise ValueError(f"The prompt is {len(self.ids)} tokens; the model's context is "
                             f"{self.loaded.context_window}.")
        self.prompt_len = len(self.ids)
        self.past = None
        self.logits = self._forward(self.ids)

    @torch.inference_mode()
    def _forward(self, new_ids: list[int]) -> torch.Tensor:
        """Logits for the next token after feeding `new_ids` on top of the cache (one forward pass)."""
        from transformers import DynamicCache

        if self.past is None:
            self.past = DynamicCache(config=self.loaded.model.config)
        input_ids = torch.tensor([new_ids], device=self.loaded.device)
        out = self.loaded.model(input_ids=input_ids, past_key_values=self.past, use_cache=True)
        self.past = out.past_key_values
        return out.logits[0, -1].float()

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
        validate(GenerationParams(temperature=temperature, top_k=top_k, top_p=top_p))
        raw = torch.softmax(self.logits, dim=-1)
        shaped = shape_distribution(self.logits, temperature, top_k, top_p)
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
        if not 0 <= int(token_id) < self.loaded.model.config.vocab_size:
            raise ValueError(f"Token id {token_id} is outside the vocabulary.")
        if len(self.ids) + 1 >= self.loaded.context_window:
            raise ValueError("The text has reached the model's context window.")
        self.ids.append(int(token_id))
        self.logits = self._forward([int(token_id)])

    def undo(self) -> None:
        """Remove the last appended token (never the prompt)."""
        if len(self.ids) <= self.prompt_len:
            raise ValueError("Nothing to undo: only the prompt is left.")
        self.ids.pop()
        self.past.crop(-2)  # drop the undone token and the one before it, which is fed again for its logits
        self.logits = self._forward(self.ids[-1:])

    def greedy(self) -> int:
        token_id = int(self.logits.argmax())
        self.append(token_id)
        return token_id

    def sample(self, temperature: float, top_k: int, top_p: float, seed: int | None = None) -> int:
        probs = shape_distribution(self.logits, temperature, top_k, top_p)
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        token_id = int(torch.multinomial(probs.cpu(), 1, generator=generator))
        self.append(token_id)
        return token_id


def next_token_candidates(text: str, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, k: int = 10,
                          chat: bool = False) -> list[Candidate]:
    """The model's top-k next tokens for a text (or a user message, with `chat`), raw and shaped."""
    return NextTokenSession(text, chat=chat).candidates(temperature, top_k, top_p, k)
