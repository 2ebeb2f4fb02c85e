"""The one benchmark entry point: `python -m chat.bench <what> [--json]`.

Each benchmark measures ChatLab against its anchor in the same run and returns a dict of figures; the ratio is ours
divided by the anchor's. Speed lives here, not in timed tests.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Callable

BENCHMARKS: dict[str, Callable[[argparse.Namespace], dict]] = {}


# --- tokens benchmark (start) ---
def _mixed_text(size: int) -> str:
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


def _best_seconds(fn, repeat: int) -> float:
    import time

    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def bench_tokens(args: argparse.Namespace) -> dict:
    """tiktoken's raw encoder vs ChatLab's count_tokens on 1 MB, and the Tokens tab's highlight for 20k characters."""
    import tiktoken

    from chat import tokens
    from chat.ui import tokens_tab

    text = _mixed_text(1 << 20)
    megabytes = len(text.encode()) / 1e6
    tokens.count_tokens("warm up", "gpt-4o")
    encoding = tiktoken.get_encoding("o200k_base")
    raw = _best_seconds(lambda: len(encoding.encode_ordinary(text)), 5)
    ours = _best_seconds(lambda: tokens.count_tokens(text, "gpt-4o"), 5)
    short = text[:20_000]
    highlight = _best_seconds(lambda: tokens_tab.highlight(short, "gpt-4o", False, False, False), 5)
    return {
        "text_mb": round(megabytes, 3),
        "tiktoken_mb_per_s": round(megabytes / raw, 2),
        "count_tokens_mb_per_s": round(megabytes / ours, 2),
        "ratio": round(raw / ours, 3),
        "highlight_20k_ms": round(highlight * 1000, 1),
    }


BENCHMARKS["tokens"] = bench_tokens
# --- tokens benchmark (end) ---

# --- chat benchmark (start) ---
CHAT_PROMPT = [{"role": "user", "content": "Explain in detail how a large language model writes an answer, step by step."}]

# llama.cpp's side, run by this Python or by $CHATLAB_LLAMA_PYTHON (a separate venv with llama-cpp-python): reads
# {"gguf", "prompt", "new_tokens", "rounds"} on stdin, prints one tokens/s figure per round (decode, after the first).
_LLAMA_SCRIPT = r"""
import json, sys, time
from llama_cpp import Llama
job = json.load(sys.stdin)
llm = Llama(model_path=job["gguf"], n_ctx=2048, n_threads=2, verbose=False)
llm.create_completion(job["prompt"], max_tokens=8, temperature=0.0)  # warm-up, as for ours
for _ in range(job["rounds"]):
    first = last = None
    count = 0
    for _ in llm.create_completion(job["prompt"], max_tokens=job["new_tokens"], temperature=0.0, stream=True):
        now = time.perf_counter()
        first = first or now
        last = now
        count += 1
    print((count - 1) / (last - first) if count > 1 else 0.0, flush=True)
"""


def _start_seconds(cache: str, fast: bool = True) -> float:
    """Wall time for a fresh Python process to import ChatLab and have the model ready (what a user waits for)."""
    import os
    import subprocess

    code = "import time; t = time.perf_counter(); from chat import models; models.get_model(progress=lambda s: None); " \
           "print(time.perf_counter() - t)"
    env = dict(os.environ, CHATLAB_CACHE_DIR=cache, CHATLAB_FAST="1" if fast else "0")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def _llama_cpp_tokens_per_s(prompt_text: str, new_tokens: int, rounds: int = 1) -> list[float]:
    """llama.cpp on the same GGUF and prompt, greedy, 2 threads; [] when llama-cpp-python is not available."""
    import importlib.util
    import os
    import subprocess

    from chat.data import package_file
    from chat.models import DEFAULT_MODEL, REGISTRY

    python = os.environ.get("CHATLAB_LLAMA_PYTHON") or sys.executable
    if python == sys.executable and importlib.util.find_spec("llama_cpp") is None:
        return []
    job = {"gguf": str(package_file(*REGISTRY[DEFAULT_MODEL].gguf)), "prompt": prompt_text,
           "new_tokens": new_tokens, "rounds": rounds}
    out = subprocess.run([python, "-c", _LLAMA_SCRIPT], input=json.dumps(job), capture_output=True, text=True)
    if out.returncode != 0:
        print(f"llama.cpp run failed: {out.stderr.strip()[-500:]}", file=sys.stderr)
        return []
    return [float(line) for line in out.stdout.split()]


def _decode_tokens_per_s(loaded, fast, new_tokens: int):
    """One greedy reply to CHAT_PROMPT on the fast decoder (or the plain path when fast is None): its stats."""
    from chat import generation

    loaded.fast = fast
    params = generation.GenerationParams(temperature=0, max_new_tokens=new_tokens, repetition_penalty=1.0)
    stream = generation.stream_chat(CHAT_PROMPT, params, loaded)
    for _ in stream:
        pass
    return stream


def bench_chat(args: argparse.Namespace) -> dict:
    """Decode speed of the Chat tab's model (fast path and plain transformers generate) against llama.cpp on the
    same GGUF, prompt and 2 threads, alternated in one run (3 rounds, median); TTFT for the prompt; warm and cold
    start; peak RSS; greedy top-1 agreement of the fast path with the plain fp32 model over 22 fixed prompts."""
    import resource
    import statistics
    import tempfile
    import time

    from chat import fastpath, generation, models
    from chat.data import cache_dir

    new_tokens, rounds = 128, 3
    loaded = models.get_model(progress=lambda s: None)  # builds the app's cache if this is the first run
    build_start = time.perf_counter()
    fast = loaded.fast or fastpath.prepare_decoder(loaded.model, loaded.device, lambda s: print(s, file=sys.stderr))
    build_s = time.perf_counter() - build_start
    with tempfile.TemporaryDirectory() as empty:
        cold = _start_seconds(empty)  # converts the GGUF into an empty cache; the fast path builds later, in the app
    warm = _start_seconds(str(cache_dir()))  # the cache the app uses, already built (fast package included)
    warm_plain = _start_seconds(str(cache_dir()), fast=False)
    _decode_tokens_per_s(loaded, fast, 8)  # warm-up
    prompt_text = generation.build_prompt(loaded, CHAT_PROMPT, new_tokens).text
    ours, plain, theirs, ttft = [], [], [], []
    for _ in range(rounds):  # alternated, so a change in the machine's load hits every side alike
        stream = _decode_tokens_per_s(loaded, fast, new_tokens)
        ours.append(stream.stats.tokens_per_s)
        ttft.append(stream.stats.ttft_s)
        theirs += _llama_cpp_tokens_per_s(prompt_text, new_tokens)
        plain.append(_decode_tokens_per_s(loaded, None, new_tokens).stats.tokens_per_s)
    loaded.fast = fast
    agreement = fastpath.top1_agreement(loaded.model, loaded.tokenizer, fast) if fast else None
    median = statistics.median
    return {
        "model": loaded.title,
        "fast_path": fast.kind if fast else "off",
        "prompt_tokens": stream.stats.prompt_tokens,
        "new_tokens": stream.stats.new_tokens,
        "decode_tokens_per_s": round(median(ours), 2),
        "plain_tokens_per_s": round(median(plain), 2),
        "llama_cpp_tokens_per_s": round(median(theirs), 2) if theirs else None,
        "ratio": round(median(ours) / median(theirs), 3) if theirs else None,
        "speedup_vs_plain": round(median(ours) / median(plain), 3),
        "ttft_s": round(median(ttft), 3),
        "warm_start_s": round(warm, 2),
        "warm_start_plain_s": round(warm_plain, 2),
        "cold_start_s": round(cold, 2),
        "fast_build_s": round(build_s, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "top1_agreement": round(agreement, 4) if agreement is not None else None,
        "rounds": {"fast": [round(x, 1) for x in ours], "plain": [round(x, 1) for x in plain],
                   "llama_cpp": [round(x, 1) for x in theirs]},
    }


BENCHMARKS["chat"] = bench_chat
# --- chat benchmark (end) ---

# --- quality benchmark (start) ---
# Simple questions with known answers: a reply is right when it contains the answer (a regex, case-insensitive)
QUALITY_QUESTIONS = [
    ("What is the capital of France?", r"\bparis\b"),
    ("What is 2+2? Answer with the number.", r"\b4\b|\bfour\b"),
    ("What is the capital of Japan?", r"\btokyo\b"),
    ("How many days are there in a week?", r"\b7\b|\bseven\b"),
    ("What color is the sky on a clear day?", r"\bblue\b"),
    ("What is the largest planet in our solar system?", r"\bjupiter\b"),
    ("Who wrote 'Romeo and Juliet'?", r"\bshakespeare\b"),
    ("What is the chemical formula of water?", r"\bh2o\b|\bh₂o\b"),
    ("How many legs does a spider have?", r"\b8\b|\beight\b"),
    ("At what temperature in degrees Celsius does water freeze?", r"(?<![\w.\-])0(?![.,]?\d)|\bzero\b"),  # not -18.0
    ("What is the capital of Italy?", r"\brome\b"),
    ("What is 10 minus 3? Answer with the number.", r"\b7\b|\bseven\b"),
    ("Which animal is called the king of the jungle?", r"\blions?\b"),
    ("What language is spoken in Spain?", r"\bspanish\b"),
    ("How many continents are there on Earth?", r"\b7\b|\bseven\b"),
    ("Which gas do plants take in from the air for photosynthesis?", r"carbon dioxide|\bco2\b|\bco₂\b"),
    ("What is the opposite of hot?", r"\bcold\b"),
    ("What is the boiling point of water in degrees Celsius at sea level?", r"\b100\b"),
]
QUALITY_SEEDS = (0, 1, 2)
QUALITY_NEW_TOKENS = 64
OLD_CHAT_DEFAULTS = {"temperature": 0.7, "top_p": 0.9, "top_k": 50, "repetition_penalty": 1.1}  # the tab's before issue 15

# llama.cpp's side: its own chat defaults (create_chat_completion with no sampling arguments: temperature 0.2, top-p
# 0.95, top-k 40, min-p 0.05, no repeat penalty), the GGUF's own chat template, a seed per reply. Reads {"gguf",
# "questions", "seeds", "new_tokens"} on stdin, prints one JSON list of replies (questions x seeds, in order).
_LLAMA_CHAT_SCRIPT = r"""
import json, sys
from llama_cpp import Llama
job = json.load(sys.stdin)
llm = Llama(model_path=job["gguf"], n_ctx=2048, n_threads=2, verbose=False)
replies = []
for question in job["questions"]:
    for seed in job["seeds"]:
        out = llm.create_chat_completion([{"role": "user", "content": question}], seed=seed,
                                         max_tokens=job["new_tokens"])
        replies.append(out["choices"][0]["message"]["content"] or "")
print(json.dumps(replies))
"""


def _hit_rate(replies: list[str]) -> float:
    import re

    patterns = [pattern for _, pattern in QUALITY_QUESTIONS for _ in QUALITY_SEEDS]
    return sum(bool(re.search(p, r.lower())) for p, r in zip(patterns, replies)) / len(patterns)


def _chatlab_replies(loaded, defaults) -> list[str]:
    import dataclasses

    from chat import generation

    replies = []
    for question, _ in QUALITY_QUESTIONS:
        for seed in QUALITY_SEEDS:
            params = dataclasses.replace(defaults, seed=seed, max_new_tokens=QUALITY_NEW_TOKENS)
            replies.append(generation.chat_reply([{"role": "user", "content": question}], params, loaded)[0])
    return replies


def _llama_cpp_replies() -> list[str] | None:
    import os
    import subprocess

    from chat.data import package_file
    from chat.models import DEFAULT_MODEL, REGISTRY

    python = os.environ.get("CHATLAB_LLAMA_PYTHON")
    if not python:
        return None
    job = {"gguf": str(package_file(*REGISTRY[DEFAULT_MODEL].gguf)), "questions": [q for q, _ in QUALITY_QUESTIONS],
           "seeds": list(QUALITY_SEEDS), "new_tokens": QUALITY_NEW_TOKENS}
    out = subprocess.run([python, "-c", _LLAMA_CHAT_SCRIPT], input=json.dumps(job), capture_output=True, text=True,
                         check=False)
    if out.returncode != 0:
        print(f"llama.cpp run failed: {out.stderr.strip()[-500:]}", file=sys.stderr)
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_quality(args: argparse.Namespace) -> dict:
    """Answer quality of the Chat tab's defaults: 18 simple questions with known answers, 3 seeds each, 64 new
    tokens; the hit rate (share of replies containing the answer) with ChatLab's defaults, with the tab's old
    defaults, and with llama.cpp's own chat defaults on the same GGUF ($CHATLAB_LLAMA_PYTHON: a Python with
    llama-cpp-python). ratio = ChatLab's / llama.cpp's."""
    from chat import generation, models

    loaded = models.get_model(progress=lambda s: None)
    defaults = models.chat_defaults()
    ours = _chatlab_replies(loaded, defaults)
    old = _chatlab_replies(loaded, generation.GenerationParams(**OLD_CHAT_DEFAULTS))
    theirs = _llama_cpp_replies()
    figures = {
        "questions": len(QUALITY_QUESTIONS), "seeds": len(QUALITY_SEEDS), "new_tokens": QUALITY_NEW_TOKENS,
        "chatlab_defaults": {k: getattr(defaults, k) for k in ("temperature", "top_p", "top_k", "repetition_penalty")},
        "chatlab_hit_rate": round(_hit_rate(ours), 3),
        "chatlab_old_defaults_hit_rate": round(_hit_rate(old), 3),
        "llama_cpp_hit_rate": round(_hit_rate(theirs), 3) if theirs else None,
        "ratio": round(_hit_rate(ours) / _hit_rate(theirs), 3) if theirs and _hit_rate(theirs) else None,
        "fast_path": loaded.fast.kind if loaded.fast else "off",
    }
    if getattr(args, "verbose", False):
        figures["replies"] = {"chatlab": ours, "chatlab_old": old, "llama_cpp": theirs}
    return figures


BENCHMARKS["quality"] = bench_quality
# --- quality benchmark (end) ---

# --- hardening benchmark (start) ---
def _rss_mb(pid: int | None = None) -> float:
    import os

    with open(f"/proc/{pid or os.getpid()}/status") as status:
        return int(next(line for line in status if line.startswith("VmRSS:")).split()[1]) / 1024


def _queue_call(url: str, api_name: str, data: list, timeout: float = 600) -> tuple[bool, dict]:
    """One event through Gradio's raw queue, as the browser sends it (private events included)."""
    import uuid

    import httpx

    dependencies = httpx.get(f"{url}/config").json()["dependencies"]
    index = next(d["id"] for d in dependencies if d.get("api_name") == api_name)
    session = uuid.uuid4().hex[:12]
    joined = httpx.post(f"{url}/gradio_api/queue/join", json={"data": data, "fn_index": index,
                                                               "session_hash": session})
    joined.raise_for_status()
    with httpx.stream("GET", f"{url}/gradio_api/queue/data", params={"session_hash": session},
                      timeout=timeout) as stream:
        for line in stream.iter_lines():
            if line.startswith("data:"):
                message = json.loads(line[5:])
                if message.get("msg") == "process_completed":
                    return bool(message.get("success")), message.get("output") or {}
    return False, {"error": "the stream ended without a result"}


def bench_hardening(args: argparse.Namespace) -> dict:
    """The limits issue 15 set, measured on the real app launched in this process: the time to trim a 2,000-turn
    history; RSS after 3 next-token sessions of 6,000 tokens (over the idle app, model loaded); counting 10 MB with
    the chat model's tokenizer (time, peak RSS growth); 8 users at once through /chat (each one's time to first
    token and whole reply, errors, the most generating at once)."""
    import resource
    import socket
    import statistics
    import time
    from concurrent.futures import ThreadPoolExecutor

    from gradio_client import Client

    import app as chatlab
    from chat import budget, generation, models, tokens

    loaded = models.get_model(progress=lambda s: None)
    _ = loaded.model  # the transformers model, not just the fast decoder (next-token sessions use it)
    history = [{"role": "system", "content": "You are a pirate."}]
    for i in range(1000):
        history += [{"role": "user", "content": f"Question {i}: what is {i} plus {i}? Explain it in detail."},
                    {"role": "assistant", "content": f"It is {2 * i}, matey. " * 4}]
    history.append({"role": "user", "content": "And the last one?"})
    generation.build_prompt(loaded, history[:50] + history[-1:], 256)  # warm-up
    trims = []
    for _ in range(5):
        start = time.perf_counter()
        prompt = generation.build_prompt(loaded, history, 256)
        trims.append(time.perf_counter() - start)

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    demo = chatlab.build_app()
    _, url, _ = demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                            **chatlab.launch_options())
    url = url.rstrip("/")
    try:
        client = Client(url, verbose=False)
        client.predict("warm up", "gpt-4o", api_name="/count_tokens")
        idle = _rss_mb()
        sentence = "The history of the city is long and varied, and its people remember it. "
        text = sentence * (6000 // len(loaded.tokenizer(sentence)["input_ids"]))
        for i in range(3):  # three clients' next-token games of ~6,000 tokens, through the tab's own (private) event
            ok, output = _queue_call(url, "start", [None, f"{i} {text}", False, 1.0, 0, 1.0])
            if not ok:
                raise RuntimeError(f"next-token start failed: {output}")
        sessions_rss = _rss_mb()
        session_tokens = len(loaded.tokenizer(f"0 {text}")["input_ids"])

        budget.reset_peaks()
        question = "Explain in a few sentences why the sky is blue."

        def user(i: int) -> dict:
            c = Client(url, verbose=False)
            start = time.perf_counter()
            first = None
            job = c.submit(question, [], "", 0.2, 0.9, 50, 96, 1.0, i, api_name="/chat")
            for _ in job:
                first = first or time.perf_counter() - start
            answer = job.outputs()[-1] if job.outputs() else ""
            return {"ttft_s": round(first or 0.0, 2), "duration_s": round(time.perf_counter() - start, 2),
                    "ok": bool(answer)}

        with ThreadPoolExecutor(8) as pool:
            users = list(pool.map(user, range(8)))
        chat_peak = budget.snapshot()["chat"]["peak"]
    finally:
        demo.close()

    big = _mixed_text(10_000_000)
    name = models.REGISTRY[models.DEFAULT_MODEL].title
    tokens.count_tokens("warm up", name)
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    count = tokens.count_tokens(big, name)
    count_s = time.perf_counter() - start
    peak_growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - peak_before
    durations = [u["duration_s"] for u in users]
    return {
        "trim_2000_turns_s": round(min(trims), 3), "trim_goal_s": 0.5, "trim_dropped": prompt.dropped,
        "idle_app_rss_mb": round(idle), "next_token_session_tokens": session_tokens,
        "rss_after_3_sessions_mb": round(sessions_rss), "rss_growth_3_sessions_mb": round(sessions_rss - idle),
        "rss_growth_goal_mb": 300, "kv_cache_budget_mb": generation.SESSION_CACHES.max_bytes >> 20,
        "count_10mb_chat_tokenizer_s": round(count_s, 2), "count_10mb_tokens": count,
        "count_10mb_peak_rss_growth_mb": round(max(0.0, peak_growth)),
        "load_users": 8, "load_errors": sum(not u["ok"] for u in users), "load_chat_peak": chat_peak,
        "load_chat_limit": budget.limit("chat"), "load_ttft_s": [u["ttft_s"] for u in users],
        "load_duration_s": durations, "load_duration_median_s": round(statistics.median(durations), 2),
        "load_duration_max_s": max(durations),
    }


BENCHMARKS["hardening"] = bench_hardening
# --- hardening benchmark (end) ---

# --- mnist benchmark (start) ---
def bench_mnist(args: argparse.Namespace) -> dict:
    """One epoch of seed 000's recipe (same model init, data, batch 64) with a plain PyTorch loop and with the MNIST
    tab's loop plus its live updates (progress bar, both plots, every 0.5 s), best of 3 alternating runs each; then
    the fast preset trained for its 60 s and tested on the 1,000 test digits."""
    import time

    import torch

    from chat import mnist
    from chat.ui import mnist_tab

    data = mnist.load_data()
    config = mnist.preset("seed", epochs=1)
    images = len(data.train_labels)

    def plain() -> float:
        torch.manual_seed(config.seed)
        return mnist.train_plain(mnist.Net(), data, config.batch_size, config.lr, config.momentum, config.seed)

    def app() -> float:
        run = mnist.new_run(config, data)
        start = time.perf_counter()
        for _ in mnist.train_epoch(run):
            mnist_tab.training_view(run, None)  # what the tab computes for each update it sends
        return images / (time.perf_counter() - start)

    plain()  # warm-up: first-call allocations and kernel selection
    plain_speeds, app_speeds = [], []
    for _ in range(3):
        plain_speeds.append(plain())
        app_speeds.append(app())
    fast = mnist.new_run(mnist.preset("fast"), data)
    for _ in mnist.train(fast):
        pass
    return {
        "plain_images_per_s": round(max(plain_speeds), 1),
        "app_images_per_s": round(max(app_speeds), 1),
        "ratio": round(max(app_speeds) / max(plain_speeds), 3),
        "fast_preset_test_accuracy": round(fast.test_accuracy, 4),
        "fast_preset_train_seconds": round(fast.train_seconds, 1),
        "fast_preset_epochs": fast.accuracies[-1][0],
        "torch_threads": torch.get_num_threads(),
    }


BENCHMARKS["mnist"] = bench_mnist
# --- mnist benchmark (end) ---

# --- tinygpt benchmark (start) ---
def _cpu_seconds() -> tuple[float, float]:
    """(CPU seconds used by all processes, by this one) since boot; their difference is the others' load, which
    slows both loops (PyTorch's OpenMP threads spin-wait for each other when a core is taken)."""
    import os

    try:
        with open("/proc/stat") as stat:
            ticks = [int(t) for t in stat.readline().split()[1:]]
        everyone = (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")  # all but idle and iowait
    except (OSError, ValueError):
        everyone = float("nan")
    mine = os.times()
    return everyone, mine.user + mine.system


def bench_tinygpt(args: argparse.Namespace) -> dict:
    """nanoGPT's CPU shape (4 layers, 4 heads, 128 wide, block 64, batch 12) on the English dialogs: the Tiny GPT
    tab's loop (evaluations, samples and the tab's per-update rendering included) vs a bare loop of the same
    model, optimizer and batches, alternated in one run so both see the same machine load."""
    import os
    import time

    import gradio as gr
    import torch
    from transformers.utils import logging

    from chat import tinygpt
    from chat.ui import tinygpt_tab

    logging.set_verbosity_error()
    phase_s, rounds = 30.0, 2  # each loop runs 2 x 30 s, alternating: one 2-minute run in all
    everyone_before, mine_before, wall_before = *_cpu_seconds(), time.perf_counter()
    run = tinygpt.new_run(tinygpt.TinyGPTConfig(max_seconds=3600))
    plot = gr.LinePlot(x="step", y="loss", color="curve", render=False)
    tinygpt.train_plain(run, 2.0)  # warm-up (allocator, kernels)
    plain_steps = plain_s = app_steps = app_s = updates = 0.0
    for _ in range(rounds):
        start = time.perf_counter()
        speed = tinygpt.train_plain(run, phase_s)
        elapsed = time.perf_counter() - start
        plain_steps, plain_s = plain_steps + speed * elapsed, plain_s + elapsed
        run.config.max_seconds = run.train_seconds + phase_s
        for _ in tinygpt.train(run, update_every_s=0.5):
            # what the tab and Gradio do for each live update: render, then serialise the plot's data
            _, _, curve, _, _ = tinygpt_tab.render(run, None)
            plot.postprocess(curve["value"])
            updates += 1
        app_steps += run.segment_steps
        app_s += run.segment_seconds
    plain = plain_steps / plain_s
    app = app_steps / app_s
    everyone, mine = _cpu_seconds()
    others, wall = everyone - everyone_before - (mine - mine_before), time.perf_counter() - wall_before
    return {
        "shape": "4 layers, 4 heads, 128 wide, block 64, batch 12",
        "params": run.params,
        "torch_threads": torch.get_num_threads(),
        "plain_it_per_s": round(plain, 2),
        "app_it_per_s": round(app, 2),
        "ratio": round(app / plain, 3),
        "anchor_nanogpt_it_per_s": 21.0,
        "app_vs_anchor": round(app / 21.0, 3),
        "ui_updates": int(updates),
        "val_loss": round(run.val_losses[-1][1], 3),
        "other_processes_cpu_percent": round(100 * others / (wall * (os.cpu_count() or 1)), 1),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default"),
    }


BENCHMARKS["tinygpt"] = bench_tinygpt
# --- tinygpt benchmark (end) ---


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chat.bench", description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=sorted(BENCHMARKS), help="which benchmark to run")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--verbose", action="store_true", help="quality: also print every reply")
    args = parser.parse_args(argv)
    figures = BENCHMARKS[args.what](args)
    if args.json:
        print(json.dumps(figures))
    else:
        width = max(len(k) for k in figures)
        for key, value in figures.items():
            shown = f"{value:.4g}" if isinstance(value, float) else value
            print(f"{key:<{width}}  {shown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
