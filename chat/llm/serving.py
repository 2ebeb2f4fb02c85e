"""Continuous batching: every chat reply and next-token question in the process shares one fast decoder, one step
at a time, so eight people chatting cost about what two or three would one after another.

On a CPU a decode step of one token reads and unpacks every weight of the model; a step that carries a token of
each of eight sequences unpacks each weight block once for all of them (chat/llm/fastpath/kernels.cpp). So one engine
thread owns the decoder and its KV cache and runs steps that mix everyone's work, the way vLLM, TGI and llama-server
serve (continuous batching, after Orca, OSDI '22, and Sarathi's chunked prefill):

- **Join and leave at a step boundary.** A request waits in a bounded line until a slot (one sequence's KV cache)
  is free, then joins the very next step; a finished, stopped or abandoned one leaves at once and frees its slot.
  Beyond the line's limit `submit` raises `Busy`, which says where the request would have stood.
- **Prompts in chunks.** Each step carries one token per decoding sequence plus a budget of prompt tokens, shared
  equally by the prompts in progress, so a 7,000-token prompt is read a chunk per step while the others keep writing
  (and a short prompt that arrives later is not stuck behind it). A prompt's tokens are weighed by how far back they
  attend, so a step stays short at any context length. With nobody decoding, prompts get a larger budget.
- **Fair.** Slots are given first come, first served; every admitted sequence gets one token per step.
- **Exact per request.** Each request samples with its own settings and the one sampler (chat.llm.sampling), from
  its own `torch.Generator` seeded from its seed, never the process-wide one. The decoder computes each row alone (bit for bit the same in any batch), so a seeded request
  gives the same reply whoever else is being served.
- **Prefix reuse.** A slot keeps the keys and values of its last sequence until it is needed again; a request that
  starts with the same tokens (the next turn of a conversation, the next-token view's text plus one token) reads
  only the rest. A start held by another slot, busy or not (the system prompt every chat begins with), is copied
  from it, as vLLM's prefix caching shares blocks. Kept sequences are bounded by `cached_tokens`; past it the
  oldest slots' memory goes back to the system.

chat.llm.generation turns token streams into text; the tabs show them.
"""
from __future__ import annotations

import os
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Iterator

import torch

from chat import budget
from chat.llm.params import GenerationParams
from chat.llm.sampling import draw, top_alternatives


class Busy(budget.BusyError):
    """The engine's line is full; `place` is where this request would have stood in it (1 = next)."""

    def __init__(self, place: int, waiting_limit: int, running: int):
        self.kind, self.limit, self.waited_s = "chat", running, 0.0
        self.place, self.waiting_limit, self.running = place, waiting_limit, running
        RuntimeError.__init__(self, f"busy: you are number {place} in line, and the line holds {waiting_limit} "
                              f"({running} replies are being written now). Please try again in a minute.")


@dataclass(frozen=True)
class ServingConfig:
    max_batch: int = 8  # sequences decoding at once (KV cache slots)
    max_waiting: int = 16  # requests waiting for a slot; more are refused with Busy
    prompt_tokens_per_step: int = 64  # prompt tokens (weighted by context) per step while others decode
    prompt_tokens_alone: int = 256  # ... while nobody decodes (a lone prompt is read faster)
    cached_tokens: int = 8192  # KV of finished sequences kept for prefix reuse (~46 KB per token for SmolLM2)
    attention_weight: float = 3000.0  # a token attending over this many positions weighs double in a step budget


GREEDY = GenerationParams(temperature=0.0, top_k=0, top_p=1.0, repetition_penalty=1.0)


@dataclass(eq=False)
class Request:
    """A prompt to continue (or to score only, with logits_only): its settings, its progress, and its outbox."""

    ids: list[int]
    max_new_tokens: int
    sampling: GenerationParams
    stop_ids: frozenset[int]
    logits_only: bool = False  # the next-token view: only the logits after ids, nothing generated
    alternatives: int = 0  # > 0: record each token's probabilities and this many most likely tokens (`choices`)
    choices: list = field(default_factory=list)  # per generated token: (id, drawn prob, model prob, [(id, prob)])
    cancel: threading.Event = field(default_factory=threading.Event)
    generated: list[int] = field(default_factory=list)
    slot: int | None = None
    done: int = 0  # prompt tokens whose keys and values are in the slot
    place: int | None = None  # while waiting: number in line (1 = next)
    finish_reason: str | None = None  # "stop", "length", "cancelled", "error"
    error: BaseException | None = None
    logits: torch.Tensor | None = None  # logits_only: the next-token logits (V,)
    arrived: float = field(default_factory=time.perf_counter)
    started: float | None = None  # when it got a slot
    generator: torch.Generator = field(default_factory=torch.Generator)
    _outbox: queue.SimpleQueue = field(default_factory=queue.SimpleQueue, repr=False)
    _ended: threading.Event = field(default_factory=threading.Event, repr=False)
    _seen: torch.Tensor | None = field(default=None, repr=False)  # ids the repetition penalty looks at

    def __post_init__(self):
        seed = self.sampling.seed if self.sampling.seed is not None else int.from_bytes(os.urandom(8), "little")
        self.generator.manual_seed(seed)

    # --- the consumer's side ---

    def __iter__(self) -> Iterator[int]:
        """The generated token ids as they come; returns when the request ends, raises if the engine failed."""
        while True:
            kind, value = self._outbox.get()
            if kind == "token":
                yield value
            elif kind == "end":
                if self.error is not None:
                    raise RuntimeError(f"Generation failed: {self.error}") from self.error
                return

    def take(self, until: float | None = None) -> tuple[list[int], bool]:
        """The tokens made since the last call, and whether the request has ended: blocks for the first one (or the
        end), then, given a time.monotonic() deadline `until`, sleeps until it, or until the request ends, and takes
        everything made meanwhile. One wake-up for a batch of tokens instead of one per token: a consumer that shows
        text a few times a second leaves the cores to the steps. Raises if the engine failed."""
        tokens: list[int] = []
        kind, value = self._outbox.get()
        while True:
            if kind == "end":
                if self.error is not None:
                    raise RuntimeError(f"Generation failed: {self.error}") from self.error
                return tokens, True
            tokens.append(value)
            if until is not None:
                self._ended.wait(max(0.0, until - time.monotonic()))
                until = None
            try:
                kind, value = self._outbox.get_nowait()
            except queue.Empty:
                return tokens, False

    def stop(self) -> None:
        """Stop at the next step boundary (the slot is freed there); iteration then ends."""
        self.cancel.set()

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the request ends (logits_only: until its logits are there); False on timeout."""
        end = None if timeout is None else time.monotonic() + timeout
        while not self.finished:
            left = None if end is None else end - time.monotonic()
            if left is not None and left <= 0:
                return False
            try:
                kind, value = self._outbox.get(timeout=min(left, 0.1) if left is not None else 0.1)
            except queue.Empty:
                continue
            if kind == "end":
                self._outbox.put((kind, value))
        return True

    # --- the engine's side ---

    @property
    def position(self) -> int:
        """The position of the next token fed to the model (prompt, then the reply)."""
        return self.done + len(self.generated) - (1 if self.generated else 0)

    def seen(self) -> torch.Tensor:
        if self._seen is None:
            self._seen = torch.tensor(self.ids, dtype=torch.long)
        if len(self.generated) and self._seen.numel() < len(self.ids) + len(self.generated):
            self._seen = torch.cat([self._seen, torch.tensor(self.generated[self._seen.numel() - len(self.ids):])])
        return self._seen

    def _emit(self, token: int) -> None:
        self.generated.append(token)
        self._outbox.put(("token", token))

    def _end(self, reason: str, error: BaseException | None = None) -> None:
        if self.finish_reason is None:
            self.finish_reason, self.error = reason, error
            self._outbox.put(("end", reason))
            self._ended.set()


@dataclass
class _Slot:
    """A KV cache slot: the tokens whose keys and values it holds (a prefix a later request may reuse)."""

    index: int
    tokens: list[int] = field(default_factory=list)
    request: Request | None = None
    last_used: float = 0.0


@dataclass
class StepStats:
    steps: int = 0
    rows: int = 0
    prompt_rows: int = 0
    reused_tokens: int = 0  # prompt tokens not read again thanks to a kept prefix
    shared_tokens: int = 0  # ... of which copied from another slot (a prefix several requests start with)
    busy_refusals: int = 0
    seconds: float = 0.0  # inside the decoder


class Engine:
    """One fast decoder serving every request of the process in batched steps (see the module's docstring)."""

    def __init__(self, decoder, context: int, config: ServingConfig = ServingConfig()):
        self.decoder, self.context, self.config = decoder, context, config
        self.cache = decoder.new_cache(config.max_batch, context)
        self.slots = [_Slot(i) for i in range(config.max_batch)]
        self.waiting: deque[Request] = deque()
        self.stats = StepStats()
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False

    # --- the public side ---

    def submit(self, ids: list[int], max_new_tokens: int, sampling: GenerationParams = GREEDY,
               stop_ids: frozenset[int] = frozenset(), logits_only: bool = False,
               cancel: threading.Event | None = None, generator: torch.Generator | None = None,
               alternatives: int = 0) -> Request:
        """Queue a request; it joins the batch at the next step when a slot is free. Raises Busy when the line is
        full, ValueError when the prompt and reply cannot fit the context. Setting `cancel` (or request.stop())
        ends it at the next step boundary. `generator` (else one seeded from sampling.seed) draws its tokens."""
        if not ids:
            raise ValueError("The prompt is empty: the model needs at least one token to continue.")
        if len(ids) + max(max_new_tokens, 0) > self.context:
            raise ValueError(f"The prompt is {len(ids)} tokens and the reply may be {max_new_tokens}: together more "
                             f"than the model's context of {self.context} tokens.")
        request = Request(list(ids), max_new_tokens, sampling, frozenset(stop_ids), logits_only, alternatives)
        if cancel is not None:
            request.cancel = cancel
        if generator is not None:
            request.generator = generator
        with self._wake:
            if self._closed:
                raise RuntimeError("The serving engine is closed.")
            running = self.running
            ahead = len(self.waiting) - (len(self.slots) - running)  # waiting for a slot that is not free
            if ahead >= self.config.max_waiting:
                self.stats.busy_refusals += 1
                raise Busy(ahead + 1, self.config.max_waiting, running)
            self.waiting.append(request)
            self._number_the_line()
            self._start()
            self._wake.notify()
        return request

    def logits(self, ids: list[int], timeout: float | None = None) -> torch.Tensor:
        """The next-token logits (V,) after `ids`, computed in the batch (and reusing a kept prefix)."""
        request = self.submit(ids, 0, logits_only=True)
        try:
            if not request.wait(timeout):
                raise TimeoutError(f"no answer within {timeout} s")
        finally:
            request.stop()
        if request.error is not None:
            raise RuntimeError(f"Generation failed: {request.error}") from request.error
        if request.logits is None:
            raise RuntimeError("The request was cancelled.")
        return request.logits

    @property
    def running(self) -> int:
        return sum(slot.request is not None for slot in self.slots)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def close(self, timeout: float = 10.0) -> None:
        """Stop every request and the engine thread."""
        with self._wake:
            self._closed = True
            self._wake.notify()
        if self._thread is not None:
            self._thread.join(timeout)

    # --- the engine thread ---

    def _start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="chatlab-serving", daemon=True)
            self._thread.start()

    def _number_the_line(self) -> None:
        """Each waiting request's number in line: 1 = next to get a slot (None: a slot is free for it already)."""
        free = len(self.slots) - self.running
        for place, request in enumerate(self.waiting, 1 - free):
            request.place = place if place >= 1 else None

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._closed and not self.waiting and self.running == 0:
                    self._wake.wait()
                if self._closed:
                    self._fail_everyone("cancelled")
                    return
                self._drop_cancelled()
                self._admit()
                plan = self._plan()
            if not plan:
                continue
            try:
                self._step(plan)
            except Exception as error:  # a broken step ends every request in it with the error, never silently
                with self._wake:
                    for request in {row[0] for row in plan}:
                        self._finish(request, "error", error)

    def _fail_everyone(self, reason: str) -> None:
        for slot in self.slots:
            if slot.request is not None:
                self._finish(slot.request, reason)
        while self.waiting:
            self.waiting.popleft()._end(reason)

    def _drop_cancelled(self) -> None:
        for slot in self.slots:
            if slot.request is not None and slot.request.cancel.is_set():
                self._finish(slot.request, "cancelled")
        if any(r.cancel.is_set() for r in self.waiting):
            for request in [r for r in self.waiting if r.cancel.is_set()]:
                self.waiting.remove(request)
                request._end("cancelled")
            self._number_the_line()

    def _admit(self) -> None:
        """First come, first served: each waiting request takes a free slot, preferring one that already holds the
        longest start of its prompt."""
        while self.waiting:
            free = [slot for slot in self.slots if slot.request is None]
            if not free:
                return
            request = self.waiting.popleft()
            held = {slot.index: _common_prefix(slot.tokens, request.ids) for slot in self.slots}
            best, shared = min(free, key=lambda s: s.last_used), 0
            for slot in free:
                if held[slot.index] > shared:
                    best, shared = slot, held[slot.index]
            limit = len(request.ids) - 1  # the last prompt token is always fed: its logits are needed
            donor, lent = None, min(shared, limit)
            for slot in self.slots:  # any slot, busy ones too, may hold a longer start (the system prompt)
                if slot is not best and min(held[slot.index], limit) > lent:
                    donor, lent = slot, min(held[slot.index], limit)
            if donor is not None:  # copy those keys and values (46 KB a token) instead of computing them again
                self.cache.copy(donor.index, best.index, lent)
                best.tokens, shared = donor.tokens[:lent], lent
                self.stats.shared_tokens += lent
            reused = min(shared, limit)
            best.tokens = best.tokens[:reused]
            best.request, request.slot, request.done = request, best.index, reused
            request.place, request.started = None, time.perf_counter()
            self.stats.reused_tokens += reused
        self._number_the_line()

    def _weight(self, position: int) -> float:
        return 1.0 + position / self.config.attention_weight

    def _plan(self) -> list[tuple[Request, int, int, bool]]:
        """This step's rows: (request, token, position, wants logits). Decoding sequences first (one row each),
        then prompt chunks, the prompt budget shared equally by the prompts in progress."""
        decoding = [s.request for s in self.slots if s.request is not None and s.request.done == len(s.request.ids)]
        prompts = sorted((s.request for s in self.slots if s.request is not None
                          and s.request.done < len(s.request.ids)), key=lambda r: r.arrived)
        rows = [(r, r.generated[-1], r.position, True) for r in decoding if r.generated]
        budget = self.config.prompt_tokens_per_step if rows else self.config.prompt_tokens_alone
        while prompts and budget > 0:
            share = budget / len(prompts)
            for request in list(prompts):
                spent, position = 0.0, request.done + sum(1 for row in rows if row[0] is request)
                start = position
                while position < len(request.ids) and (spent + self._weight(position) <= share or spent == 0):
                    spent += self._weight(position)
                    position += 1
                rows += [(request, request.ids[p], p, p == len(request.ids) - 1) for p in range(start, position)]
                budget -= spent
                if position == len(request.ids):
                    prompts.remove(request)
            if share < 1:  # less than one token each: the oldest ones had theirs
                break
        rows.sort(key=lambda row: (row[0].slot, row[2]))  # a sequence's rows consecutive, in position order
        return rows

    def _step(self, plan: list[tuple[Request, int, int, bool]]) -> None:
        start = time.perf_counter()
        logits = self.decoder.forward(self.cache, [row[1] for row in plan], [row[0].slot for row in plan],
                                      [row[2] for row in plan], [i for i, row in enumerate(plan) if row[3]])
        self.stats.steps += 1
        self.stats.rows += len(plan)
        self.stats.seconds += time.perf_counter() - start
        picked = iter(logits)
        with self._wake:
            for request, token, position, wants in plan:
                slot = self.slots[request.slot]
                if request.done < len(request.ids):
                    request.done += 1
                    self.stats.prompt_rows += 1
                slot.tokens.append(token)
                if not wants:
                    continue
                row = next(picked)
                if request.finished:
                    continue
                if request.logits_only:
                    request.logits = row.clone()
                    self._finish(request, "stop")
                    continue
                if request.cancel.is_set():
                    self._finish(request, "cancelled")
                    continue
                if request.alternatives:
                    model, top = top_alternatives(row, request.alternatives)
                if request.sampling.repetition_penalty == 1.0:  # nothing changes the row in place
                    token, prob = draw(row, request.sampling, request.generator)
                else:  # (an inference tensor: the penalty writes to a copy)
                    token, prob = draw(row.clone(), request.sampling, request.generator, request.seen())
                if request.alternatives:
                    request.choices.append((token, prob, float(model[token]),
                                            [(int(i), float(model[i])) for i in top]))
                request._emit(token)
                if token in request.stop_ids:
                    self._finish(request, "stop")
                elif len(request.generated) >= request.max_new_tokens or request.position + 1 >= self.context:
                    self._finish(request, "length")

    def _finish(self, request: Request, reason: str, error: BaseException | None = None) -> None:
        if request.slot is not None:
            slot = self.slots[request.slot]
            if slot.request is request:
                slot.request, slot.last_used = None, time.perf_counter()
                if reason == "error":
                    slot.tokens = []
                self._bound_kept_tokens()
        request._end(reason, error)
        self._wake.notify()

    def _bound_kept_tokens(self) -> None:
        """Keep at most `cached_tokens` of finished sequences' keys and values; release the oldest slots' memory."""
        idle = sorted((s for s in self.slots if s.request is None and s.tokens), key=lambda s: s.last_used)
        kept = sum(len(s.tokens) for s in idle)
        for slot in idle:
            if kept <= self.config.cached_tokens:
                break
            kept -= len(slot.tokens)
            slot.tokens = []
            self.cache.release(slot.index)


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    if n == 0:
        return 0
    x, y = torch.tensor(a[:n]), torch.tensor(b[:n])
    different = (x != y).nonzero()
    return int(different[0]) if different.numel() else n


# --- the process's engines ----------------------------------------------------------------------------------------


_ENGINES: dict[int, tuple[object, Engine]] = {}  # id(fast decoder) -> (the decoder, its engine)
_ENGINES_LOCK = threading.Lock()


def engine_for(loaded, config: ServingConfig | None = None) -> Engine | None:
    """The one engine serving this loaded model's fast decoder (started on first use, with `config` or the one its
    settings give), or None on the plain path."""
    fast = getattr(loaded, "fast", None)
    if fast is None:
        return None
    with _ENGINES_LOCK:
        entry = _ENGINES.get(id(fast))
        if entry is None or entry[0] is not fast:
            config = config or ServingConfig(max_batch=loaded.settings.max_batch,
                                             max_waiting=loaded.settings.max_waiting)
            entry = _ENGINES[id(fast)] = (fast, Engine(fast, loaded.context_window, config))
        return entry[1]
