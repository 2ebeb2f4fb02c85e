"""What every live training run shares: MNIST's, Tiny GPT's, fine-tuning's and human feedback's.

- `Run`: the stop flag a tab sets, the time budget, the step count, progress, the last good state restored when a
  loss becomes NaN/inf, and one status vocabulary (STATUSES) that every tab, API and CLI reports.
- One run trains at a time on this machine (`claim` / `release`): training takes both cores, so a second run is
  refused at once with a message saying which run is busy and for how long, never queued behind it silently. The
  claim also holds the server's "training" slot (chat.budget), which the queue uses too.
- `TrainingError`: bad input or a refused run; `code` names the message a tab translates, `details` fill it in.
"""
from __future__ import annotations

import functools
import threading
from dataclasses import dataclass, field

from chat import budget

# Every run is in one of these states; the tabs, the API and the CLIs report them as they are.
STATUSES = {
    "ready": "not started",
    "running": "training",
    "evaluating": "training is over; the model is being tested or compared",
    "done": "reached its planned end (its steps, epochs or time)",
    "stopped": "stopped by its user (what it learned so far is kept)",
    "timeout": "its time budget ran out before its planned steps",
    "diverged": "a loss or a weight became NaN/inf; the model is back at its last good state",
    "error": "failed; the message says why",
    "loaded": "weights loaded from a file, not trained here",
}
FINISHED = ("done", "stopped", "timeout", "diverged", "error", "loaded")


class TrainingError(ValueError):
    """Bad input or a refused run; `code` names the message (the UI translates it), `details` fills it in."""

    def __init__(self, code: str, message: str, **details):
        super().__init__(message)
        self.code = code
        self.details = details


@dataclass(eq=False, kw_only=True)
class Run:
    """One live training run. A training loop sets `status`, `step` and `seconds` and calls `keep()` after each
    good state, `diverge()` on a NaN; its tab sets `stop`."""

    kind: str = ""  # "mnist", "tinygpt", "sft", "dpo", ...: what is training
    max_seconds: float = 0.0  # training time budget, s (0 = none)
    max_steps: int = 0  # optimizer steps at most (0 = none)
    status: str = "ready"  # one of STATUSES
    message: str = ""  # why it ended, in English (the tabs say it from `status` and the numbers)
    step: int = 0  # optimizer steps taken
    seconds: float = 0.0  # time spent training so far, resumes included
    diverged_at: int | None = None  # the step whose loss or weights were not finite
    good_step: int = 0  # the step of the last good state (kept, and restored on a divergence)
    stop: threading.Event = field(default_factory=threading.Event)
    good_state: object = field(default=None, repr=False)  # the last good state, as the loop saved it

    @property
    def running(self) -> bool:
        """Training, or being tested after training."""
        return self.status in ("running", "evaluating")

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    @property
    def out_of_time(self) -> bool:
        return bool(self.max_seconds) and self.seconds >= self.max_seconds

    @property
    def out_of_steps(self) -> bool:
        return bool(self.max_steps) and self.step >= self.max_steps

    @property
    def progress(self) -> float:
        """Share of the run done, in [0, 1]: of its steps or of its time budget, whichever is further."""
        by_time = self.seconds / self.max_seconds if self.max_seconds else 0.0
        by_steps = self.step / self.max_steps if self.max_steps else 0.0
        return min(1.0, max(by_time, by_steps))

    @property
    def steps_per_second(self) -> float:
        return self.step / self.seconds if self.step and self.seconds > 0 else 0.0

    def why_stop(self) -> str | None:
        """The status to end with now ("stopped", "timeout", "done"), or None to go on."""
        if self.stop.is_set():
            return "stopped"
        if self.out_of_steps:
            return "done"
        if self.out_of_time:
            return "timeout"
        return None

    def keep(self, state) -> None:
        """`state` (whatever the loop needs to come back to this step) is good: a divergence restores it."""
        self.good_state, self.good_step = state, self.step

    def diverge(self, message: str):
        """A loss or a weight became NaN/inf at this step: the run ends as "diverged"; returns the good state."""
        self.status, self.diverged_at, self.message = "diverged", self.step, message
        return self.good_state


# --- one run at a time ----------------------------------------------------------------------------------------------


class Busy(budget.BusyError):
    """Another run is training; `holder` is it, `seconds` about how long it still takes."""

    def __init__(self, holder: Run | None, seconds: float):
        self.holder, self.seconds = holder, seconds
        self.kind, self.limit, self.waited_s = "training", 1, 0.0
        what = holder.kind if holder is not None else "another"
        RuntimeError.__init__(self, f"Another training run ({what}) is using this machine's CPU; one run trains at "
                              f"a time. It ends within {seconds:.0f} s: start yours then.")


_HOLDER: Run | None = None
_HOLDER_LOCK = threading.Lock()


def claim(run: Run) -> None:
    """Take the machine's one training slot for `run`, or raise Busy at once."""
    global _HOLDER
    with _HOLDER_LOCK:
        if _HOLDER is None and budget.try_take("training"):
            _HOLDER = run
            return
        holder = _HOLDER
    raise busy_error(holder)


def release(run: Run) -> None:
    """Give the slot back (nothing happens when `run` does not hold it)."""
    global _HOLDER
    with _HOLDER_LOCK:
        if _HOLDER is run:
            _HOLDER = None
            budget.give_back("training")


def busy_error(holder: Run | None) -> Busy:
    # past its budget a run is testing or comparing answers: seconds more
    left = max(5.0, holder.max_seconds - holder.seconds) if holder is not None and holder.max_seconds else 60.0
    return Busy(holder, left)


def refuse_if_busy() -> None:
    """Raise Busy now, before any work that a refused run would waste (a reward model's fit)."""
    with _HOLDER_LOCK:
        holder = _HOLDER
    if holder is not None:
        raise busy_error(holder)


def holder() -> Run | None:
    """The run training now, if any."""
    with _HOLDER_LOCK:
        return _HOLDER


def check_settings(settings, limits):
    """Every field of a run's settings dataclass within its (low, high) limits, whole where the field is an int;
    else TrainingError("setting") naming the field and its range. Returns `settings`."""
    from chat.checks import OutOfRange, check_fields

    try:
        return check_fields(settings, limits)
    except OutOfRange as error:
        raise TrainingError("setting", str(error), name=error.name, low=error.low, high=error.high,
                            value=error.value) from None


def exclusive(loop):
    """Decorator for a live training loop (a generator function whose first argument is its Run): the run claims
    the machine's training slot at the loop's first step (Busy then, if another run trains) and gives it back when
    the loop ends or is closed."""
    @functools.wraps(loop)
    def holding(run: Run, *args, **kwargs):
        claim(run)
        try:
            return (yield from loop(run, *args, **kwargs))
        finally:
            release(run)

    return holding
