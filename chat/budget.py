"""The server-wide budget for heavy work: a few named kinds, each with a concurrency limit that fits the machine.

One registry, used twice:
- the UI gives every heavy event its kind as Gradio's concurrency group (`budget.queue_options("chat")` ->
  `concurrency_id="chat", concurrency_limit=2`), so the queue runs at most that many of the kind at once, whichever
  event or endpoint (public or private) asked, and shows the others their place in line;
- the services hold a slot of their kind while they work (`with budget.slot("chat"): ...`), so work that does not
  come through the queue (an MCP call, a script, a second app in the same process) is bounded by the same numbers.
  Behind the queue a slot is always free: the queue never starts more than the limit.

The kinds and their limits come from the settings (`configure(settings)`, which app.py calls before it builds the
tabs; until then the defaults): the chat engine's places (8 writing + 16 in line), transformers' plain `generate`
two at a time, two next-token / inside-the-model passes and one training run. A training run uses every core for
minutes: a second one would halve both runs' speed (and their time budgets buy half the steps), so it waits in the
queue instead. A new kind plugs in with one line: `budget.register("mykind", 1)`.
"""
from __future__ import annotations

import functools
import os
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator


class BusyError(RuntimeError):
    """Every slot of a kind is taken and the caller would not (or could no longer) wait."""

    def __init__(self, kind: str, limit: int, waited_s: float):
        self.kind, self.limit, self.waited_s = kind, limit, waited_s
        super().__init__(f"The server is busy: {limit} {kind} job(s) are already running (the most this machine runs "
                         f"at once). Try again in a minute.")


@dataclass
class Kind:
    name: str
    limit: int  # jobs of this kind running at once
    wait_s: float  # how long a caller outside the queue may wait for a slot (0 = fail at once)
    _slots: threading.BoundedSemaphore = field(init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    running: int = 0  # slots taken now
    peak: int = 0  # most slots ever taken at once (tests and the load benchmark read it)

    def __post_init__(self):
        self._slots = threading.BoundedSemaphore(self.limit)


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _default_limit(per_two_cores: int) -> int:
    """The limit that fits 2 cores, scaled with the machine (a Space with 8 cores runs 4x as many)."""
    return max(1, per_two_cores * _cores() // 2)


_KINDS: dict[str, Kind] = {}
_REGISTRY_LOCK = threading.Lock()
_OVERRIDES: dict[str, int] = {}  # kind -> limit, from the settings (CHATLAB_LIMIT_<KIND>)
_CONFIGURED = False  # ChatLab's kinds are registered (configure())


def register(name: str, limit: int, wait_s: float = 60.0) -> Kind:
    """Add a kind of heavy work (or change its limit); the settings' limit for the kind, if any, wins."""
    limit = _OVERRIDES.get(name, limit)
    if limit < 1:
        raise ValueError(f"the limit of {name!r} must be at least 1, got {limit}")
    with _REGISTRY_LOCK:
        kind = _KINDS.get(name)
        if kind is None or kind.limit != limit or kind.wait_s != wait_s:
            if kind is not None and kind.running:
                raise RuntimeError(f"cannot change the limit of {name!r} while {kind.running} job(s) run")
            _KINDS[name] = Kind(name, limit, wait_s)
        return _KINDS[name]


def limit(name: str) -> int:
    return kind(name).limit


def queue_options(name: str) -> dict:
    """Keyword arguments for a Gradio event of this kind: it joins the kind's concurrency group."""
    return {"concurrency_id": name, "concurrency_limit": kind(name).limit}


@contextmanager
def slot(name: str, wait_s: float | None = None) -> Iterator[None]:
    """Hold one slot of `name` for the block; wait up to `wait_s` (default: the kind's) for it, else BusyError."""
    k = kind(name)
    wait_s = k.wait_s if wait_s is None else wait_s
    start = time.monotonic()
    acquired = k._slots.acquire(timeout=wait_s) if wait_s > 0 else k._slots.acquire(blocking=False)
    if not acquired:
        raise BusyError(name, k.limit, time.monotonic() - start)
    with k._lock:
        k.running += 1
        k.peak = max(k.peak, k.running)
    try:
        yield
    finally:
        with k._lock:
            k.running -= 1
        k._slots.release()


def try_take(name: str) -> bool:
    """Take a slot of `name` without waiting, for work that outlives a block (a training thread); True if taken.
    Whoever took it gives it back with `give_back(name)`."""
    k = kind(name)
    if not k._slots.acquire(blocking=False):
        return False
    with k._lock:
        k.running += 1
        k.peak = max(k.peak, k.running)
    return True


def give_back(name: str) -> None:
    k = kind(name)
    with k._lock:
        k.running -= 1
    k._slots.release()


def holds(name: str, wait_s: float | None = None):
    """Decorator for a generator function (a training loop): each generator it makes holds a slot of `name` from
    its first step until it ends or is closed. The slot is taken at the first step (BusyError then if none)."""
    def decorate(generator_function):
        @functools.wraps(generator_function)
        def holding(*args, **kwargs):
            with slot(name, wait_s):
                return (yield from generator_function(*args, **kwargs))
        return holding
    return decorate


def running(name: str) -> int:
    return kind(name).running


def snapshot() -> dict[str, dict]:
    """{kind: {limit, running, peak}} for status lines, tests and benchmarks."""
    _ensure_configured()
    return {k.name: {"limit": k.limit, "running": k.running, "peak": k.peak} for k in list(_KINDS.values())}


def reset_peaks() -> None:
    for k in list(_KINDS.values()):
        with k._lock:
            k.peak = k.running


def configure(settings) -> None:
    """ChatLab's kinds with the limits `settings` (chat.settings.Settings) give. Waits: a chat reply or a next-token
    step takes seconds, so a caller outside the queue may wait for one to finish; a training run takes minutes, so a
    caller that finds no slot is told so at once."""
    global _CONFIGURED
    _CONFIGURED = True
    _OVERRIDES.clear()
    _OVERRIDES.update(settings.limits)
    model = settings.model
    register("chat", model.max_batch + model.max_waiting, wait_s=120.0)  # the engine's places: writing + in line
    register("plain-chat", _default_limit(2), wait_s=120.0)  # transformers' generate: a thread per reply
    register("model", _default_limit(2), wait_s=120.0)  # next-token steps, the inside-the-model view
    register("training", _default_limit(1), wait_s=0.0)  # MNIST, Tiny GPT, fine-tuning, human feedback


def kind(name: str) -> Kind:
    """A registered kind (ChatLab's are registered with the default settings on first use)."""
    _ensure_configured()
    try:
        return _KINDS[name]
    except KeyError:
        raise KeyError(f"unknown kind of work {name!r}; registered: {', '.join(_KINDS)}") from None


def _ensure_configured() -> None:
    if not _CONFIGURED:
        from chat.settings import Settings

        configure(Settings())


def light_concurrency() -> int:
    """Events without a kind (token counting, page loads, drawing): cheap, but still bounded."""
    return max(2, _cores())
