"""What the benchmarks share: test text, timing, memory and CPU readings (psutil), the chat model, the real app run
as a subprocess (chat.local_server), Gradio's queue spoken over HTTP, and the live-training watchers.

Light to import: everything heavy is imported inside the function that needs it.
"""
from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[2]  # the checkout: app.py's folder
CHAT_PROMPT = [{"role": "user",
                "content": "Explain in detail how a large language model writes an answer, step by step."}]


def quiet(_line: str) -> None:
    """A progress callback that prints nothing (the --json output stays one line)."""


def stderr(line: str) -> None:
    print(line, file=sys.stderr)


# --- text and timing ---

def mixed_text(size: int) -> str:
    """Deterministic English / Chinese / code text of exactly `size` characters."""
    parts = [
        "ChatGPT reads text as tokens, pieces learned by byte-pair encoding; long words split, common ones don't. ",
        "大型语言模型把文本切分成词元，再逐个预测下一个词元，这就是文字接龙。",
        "def count(xs):\n    return sum(1 for x in xs if x % 2 == 0)  # even numbers\n",
        "Prices: $19.99, 2026-11-22, 3.14159, user@example.com\n",
    ]
    text, n = [], 0
    while n < size:
        piece = parts[len(text) % len(parts)] + f"{len(text)} "
        text.append(piece)
        n += len(piece)
    return "".join(text)[:size]


def best_seconds(fn, repeat: int) -> float:
    """The fastest of `repeat` calls (noise only ever slows a call down)."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank percentile, q in [0, 1]."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


# --- memory and CPU ---

def rss_mb(pid: int | None = None) -> float:
    """Resident memory of a process (this one by default), MB."""
    return psutil.Process(pid).memory_info().rss / 2**20


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, MB (the kernel's high-water mark; psutil has none on Linux)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class PeakRSS:
    """The process's resident memory, sampled every 0.1 s while in the `with` block: its peak, in GB."""

    def __init__(self, pid: int | None = None):
        self.peak, self._process, self._stop = 0.0, psutil.Process(pid), threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.1):
            self.peak = max(self.peak, self._process.memory_info().rss / 1e9)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


class CpuLoad:
    """The CPU time other processes use from now on: they slow both sides of a comparison (PyTorch's OpenMP threads
    spin-wait for each other when a core is taken). `children`: the processes this one started (apps, llama.cpp)
    count as its own."""

    def __init__(self, children: bool = False):
        self.children = children
        self._start = self._now()

    def _now(self) -> tuple[float, float, float]:
        every = psutil.cpu_times()
        busy = sum(getattr(every, name, 0.0) for name in ("user", "nice", "system", "irq", "softirq", "steal"))
        mine = psutil.Process().cpu_times()
        own = mine.user + mine.system + (mine.children_user + mine.children_system if self.children else 0.0)
        return time.perf_counter(), busy, own

    def others_percent(self) -> float:
        """Other processes' share of all cores since the start, %."""
        wall, busy, own = (b - a for a, b in zip(self._start, self._now()))
        return round(100 * (busy - own) / (wall * (os.cpu_count() or 1)), 1)


def wait_idle(pid: int, quiet_s: float = 2.0, busy: float = 0.1, timeout: float = 300.0) -> bool:
    """Wait until a process has used under `busy` of one core for `quiet_s` seconds (an app that has finished
    loading its model in the background); False, said on stderr, if it is still busy after `timeout`."""
    process = psutil.Process(pid)

    def used() -> float:
        times = process.cpu_times()
        return times.user + times.system

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        before = used()
        time.sleep(quiet_s)
        if used() - before < busy * quiet_s:
            return True
    stderr(f"process {pid} was still busy after {timeout:g} s; measuring anyway")
    return False


# --- the chat model ---

def chat_model():
    """The process-wide chat model with the default settings (loaded once; the first run builds the cache)."""
    from chat.llm import models

    return models.get_model(progress=quiet)


def fast_decoder(loaded):
    """The loaded model's fast decoder, built and cached first if needed (an app started afterwards loads it from
    the cache); None where the fast path is unavailable."""
    if loaded.fast is None and loaded.settings.fast:
        from chat.llm.fastpath import package

        loaded.fast = package.prepare_decoder(loaded.model, loaded.device, stderr)
    return loaded.fast


def gguf_path() -> str:
    """The packaged GGUF of the default chat model: what llama.cpp, the anchor, runs."""
    from chat.llm.models import DEFAULT_MODEL, REGISTRY
    from chat.paths import package_file

    return str(package_file(*REGISTRY[DEFAULT_MODEL].gguf))


# --- the real app, as a subprocess ---

@contextlib.contextmanager
def running_app(port: int | None = None, flags: tuple[str, ...] = (), app_dir: str | Path = ROOT,
                start_timeout: float = 300.0, env: dict | None = None) -> Iterator[tuple[str, int]]:
    """`python app.py --port N` of a checkout (this one, or e.g. main's for a before/after), offline, with `env` over
    this process's environment; yields (its URL without a trailing slash, its pid) once its page answers, and stops
    it afterwards."""
    from chat.local_server import free_port, serve

    port = port or free_port()
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1", **(env or {}))
    url = f"http://127.0.0.1:{port}"
    with serve([sys.executable, "app.py", "--port", str(port), *flags], f"{url}/", env=env, cwd=str(app_dir),
               start_timeout=start_timeout) as process:
        yield url, process.pid


def event_index(url: str, api_name: str) -> int:
    """The index of a named event (private ones included) in the app's config."""
    import httpx

    dependencies = httpx.get(f"{url}/config").json()["dependencies"]
    index = next((d["id"] for d in dependencies if d.get("api_name") == api_name), None)
    if index is None:
        raise KeyError(f"no event named {api_name!r}")
    return index


def queue_event(url: str, index: int, data: list, session: str | None = None,
                timeout: float = 600) -> tuple[bool, dict]:
    """One event through Gradio's raw queue, as the browser sends it: (success, output or error payload). Calls with
    the same `session` share its state (gr.State inputs come from the session, not from `data`). The body is
    json.dumps'ed by hand, so NaN and Infinity go out as the bare words, as any HTTP client can send them."""
    import httpx

    session = session or uuid.uuid4().hex[:12]
    body = json.dumps({"data": data, "fn_index": index, "session_hash": session, "event_data": None,
                       "trigger_id": None})
    joined = httpx.post(f"{url}/gradio_api/queue/join", content=body, headers={"content-type": "application/json"})
    joined.raise_for_status()
    with httpx.stream("GET", f"{url}/gradio_api/queue/data", params={"session_hash": session},
                      timeout=timeout) as stream:
        for line in stream.iter_lines():
            if line.startswith("data:"):
                message = json.loads(line[5:])
                if message.get("msg") == "process_completed":
                    return bool(message.get("success")), message.get("output") or {}
    raise RuntimeError(f"event {index}: the queue's stream ended without a result")


def queue_call(url: str, api_name: str, data: list, timeout: float = 600,
               session: str | None = None) -> tuple[bool, dict]:
    """queue_event by the event's name."""
    return queue_event(url, event_index(url, api_name), data, session, timeout)


# --- live training runs (finetune, feedback) ---

def watch_live(run, view) -> int:
    """What a tab does while a run trains in its thread: `view(run)` every update (0.5 s) until the thread ends;
    the number of updates."""
    updates = 0
    while run.thread.is_alive():
        view(run)
        updates += 1
        run.wait(0.5)
    return updates


def plain_trl_seconds(trainer_class, config_class, rows: list[dict], base, settings, args: dict) -> float:
    """TRL as its docs show it: the trainer gets a copy of the model and a peft_config, no callbacks; train() wall."""
    import copy
    import io

    from datasets import Dataset

    from chat.training import lora

    trainer = trainer_class(model=copy.deepcopy(base.model), args=config_class(**lora.cpu_training_args(**args)),
                            train_dataset=Dataset.from_list(rows), processing_class=copy.deepcopy(base.tokenizer),
                            peft_config=lora.lora_config(base.model, lora.settings_of(settings)))
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # TRL's log lines would land in the --json output
        trainer.train()
    return time.perf_counter() - start


def against_plain_trl(ours: list[float], plain: list[float], peak_rss_gb: float, updates: int) -> dict:
    """Steps/s with the live view against plain TRL: best of each (noise only slows a run down)."""
    return {"ui_updates": updates, "peak_rss_gb": round(peak_rss_gb, 2), "chatlab_steps_per_s": round(max(ours), 3),
            "plain_trl_steps_per_s": round(max(plain), 3), "ratio": round(max(ours) / max(plain), 3),
            "rounds": {"chatlab": [round(x, 3) for x in ours], "plain_trl": [round(x, 3) for x in plain]}}
