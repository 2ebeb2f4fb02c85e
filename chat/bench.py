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

# --- serve benchmark (start) ---
SERVE_USERS = (1, 2, 4, 8)
SERVE_QUESTIONS = [  # one per user: different prompts, each asking for a long answer
    "Explain in detail how a large language model writes an answer, step by step.",
    "Describe in detail how a bicycle works, part by part.",
    "Write a long story about a lighthouse keeper and a storm.",
    "Explain in detail how the water cycle works.",
    "Describe, step by step and in detail, how to bake bread at home.",
    "Explain in detail why the seasons change on Earth.",
    "Write a detailed guide to learning to play the guitar.",
    "Explain in detail how a computer runs a program.",
]


def _serve_engine(loaded, users: tuple[int, ...], new_tokens: int) -> dict:
    """The batching engine alone, in this process: N sequences decoding together, greedy, every reply
    `new_tokens` long (end-of-turn ignored, as llama-batched-bench does); decode tokens/s of all of them together
    once their prompts are in (llama-batched-bench's S_TG)."""
    import time

    from chat import generation, serving

    engine = serving.Engine(loaded.fast, loaded.context_window, serving.ServingConfig(max_batch=max(users)))
    figures = {}
    try:
        ids = [generation.build_prompt(loaded, [{"role": "user", "content": q}], new_tokens).ids
               for q in SERVE_QUESTIONS]
        list(engine.submit(ids[0], 8))  # warm-up
        for n in users:
            requests = [engine.submit(ids[i % len(ids)], new_tokens) for i in range(n)]
            while not all(r.generated for r in requests):
                time.sleep(0.0005)
            start, first = time.perf_counter(), sum(len(r.generated) for r in requests)
            for r in requests:
                r.wait()
            seconds = time.perf_counter() - start
            figures[n] = round((sum(len(r.generated) for r in requests) - first) / seconds, 1)
    finally:
        engine.close()
    return figures


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start_app(app_dir: str, port: int, log):
    """`python app.py` of a checkout (this one, or e.g. main's for a before/after), answering once its page loads."""
    import os
    import subprocess
    import time
    import urllib.request

    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1")
    process = subprocess.Popen([sys.executable, "app.py", "--port", str(port)], cwd=app_dir, env=env, stdout=log,
                               stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the app in {app_dir} exited with {process.returncode}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2).read()
            return process
        except OSError:
            time.sleep(1)
    process.kill()
    raise RuntimeError(f"the app in {app_dir} did not answer within 300 s")


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def _serve_app(url: str, tokenizer, users: tuple[int, ...], new_tokens: int, rounds: int) -> dict:
    """N gradio_client users at once through the public /chat endpoint, greedy, `new_tokens` each: aggregate and
    per-user tokens/s, time to first token (p50 / p95 over users and rounds), errors."""
    import statistics
    import threading
    import time

    from gradio_client import Client

    Client(url, verbose=False).predict("Hi", [], "", 0.0, 0.9, 50, 8, 1.0, -1, api_name="/chat")  # warm-up
    figures = {}
    for n in users:
        clients = [Client(url, verbose=False) for _ in range(n)]
        ttft, per_user, aggregate, errors = [], [], [], 0
        for _ in range(rounds):
            results = [None] * n
            barrier = threading.Barrier(n)

            def user(i):
                barrier.wait()
                start = time.perf_counter()
                first, text = None, ""
                try:
                    job = clients[i].submit(SERVE_QUESTIONS[i % len(SERVE_QUESTIONS)], [], "", 0.0, 0.9, 50,
                                            new_tokens, 1.0, -1, api_name="/chat")
                    for text in job:
                        first = first or time.perf_counter()
                    results[i] = (start, first, time.perf_counter(), len(tokenizer.encode(text)))
                except Exception as error:  # counted, and the benchmark goes on
                    results[i] = error

            threads = [threading.Thread(target=user, args=(i,)) for i in range(n)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            done = [r for r in results if isinstance(r, tuple) and r[1] is not None]
            errors += n - len(done)
            if done:
                tokens = sum(r[3] for r in done)
                aggregate.append(tokens / (max(r[2] for r in done) - min(r[0] for r in done)))
                per_user += [r[3] / (r[2] - r[0]) for r in done]
                ttft += [r[1] - r[0] for r in done]
        figures[n] = {
            "aggregate_tokens_per_s": round(statistics.median(aggregate), 1) if aggregate else None,
            "per_user_tokens_per_s": round(statistics.median(per_user), 1) if per_user else None,
            "ttft_p50_s": round(_percentile(ttft, 0.5), 3) if ttft else None,
            "ttft_p95_s": round(_percentile(ttft, 0.95), 3) if ttft else None,
            "errors": errors,
        }
    return figures


def _serve_through_app(app_dir: str, tokenizer, users, new_tokens: int, rounds: int) -> dict:
    import tempfile

    port = _free_port()
    with tempfile.TemporaryFile("w+") as log:
        process = _start_app(app_dir, port, log)
        try:
            return _serve_app(f"http://127.0.0.1:{port}/", tokenizer, users, new_tokens, rounds)
        finally:
            process.terminate()
            try:
                process.wait(30)
            except Exception:
                process.kill()


def _llama_batched_bench(users: tuple[int, ...], prompt_tokens: int, new_tokens: int) -> dict:
    """llama.cpp's llama-batched-bench on the same GGUF, 2 threads, the same batch sizes: {B: S_TG tokens/s}
    ($CHATLAB_LLAMA_BATCHED_BENCH is the binary, built from the llama.cpp inside llama-cpp-python's sdist); {} when
    it is not set."""
    import os
    import subprocess

    from chat.data import package_file
    from chat.models import DEFAULT_MODEL, REGISTRY

    binary = os.environ.get("CHATLAB_LLAMA_BATCHED_BENCH")
    if not binary:
        return {}
    command = [binary, "-m", str(package_file(*REGISTRY[DEFAULT_MODEL].gguf)), "-c", "8192", "-b", "2048",
               "-ub", "512", "-npp", str(prompt_tokens), "-ntg", str(new_tokens),
               "-npl", ",".join(map(str, users)), "-t", "2", "-tb", "2"]
    out = subprocess.run(command, capture_output=True, text=True)
    if out.returncode != 0:
        print(f"llama-batched-bench failed: {out.stderr.strip()[-500:]}", file=sys.stderr)
        return {}
    figures = {}
    for line in out.stdout.splitlines():  # |    PP |     TG |    B |   N_KV |   T_PP s | S_PP t/s | T_TG s | S_TG t/s | ...
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 8 and cells[2].isdigit():
            figures[int(cells[2])] = float(cells[7])
    return figures


def bench_serve(args: argparse.Namespace) -> dict:
    """Many chat users at once. Starts the app and runs N = 1, 2, 4, 8 concurrent gradio_client users through the
    public /chat endpoint, greedy, 128 new tokens each, 3 rounds: aggregate and per-user tokens/s, time to first
    token p50 / p95, errors. Then the batching engine alone (decode tokens/s of N sequences together) against
    llama.cpp's batched decoding on the same GGUF (llama-batched-bench, 2 threads, same batch sizes) when
    $CHATLAB_LLAMA_BATCHED_BENCH names its binary. $CHATLAB_SERVE_BASELINE_APP (a checkout, e.g. main's) runs the same
    load against that app too, for a before/after in one run."""
    import os
    import time
    from pathlib import Path

    from chat import fastpath, models

    users, new_tokens, rounds = SERVE_USERS, 128, 3
    everyone_before, mine_before, wall_before = _cpu_seconds()[0], sum(os.times()[:4]), time.perf_counter()
    loaded = models.get_model(progress=lambda s: None)
    if loaded.fast is None:  # the app loads the cached package: build it first if needed
        loaded.fast = fastpath.prepare_decoder(loaded.model, loaded.device, lambda s: print(s, file=sys.stderr))
    here = str(Path(__file__).resolve().parent.parent)
    app = _serve_through_app(here, loaded.tokenizer, users, new_tokens, rounds)
    baseline_dir = os.environ.get("CHATLAB_SERVE_BASELINE_APP")
    baseline = _serve_through_app(baseline_dir, loaded.tokenizer, users, new_tokens, rounds) if baseline_dir else {}
    engine = _serve_engine(loaded, users, new_tokens) if loaded.fast is not None else {}
    prompt_tokens = len(models.ModelTokenizer(loaded.tokenizer).encode(SERVE_QUESTIONS[0])) + 30
    llama = _llama_batched_bench(users, prompt_tokens, new_tokens)
    wall = time.perf_counter() - wall_before
    mine = sum(os.times()[:4]) - mine_before  # this process and those it ran (the apps, llama-batched-bench)
    others = _cpu_seconds()[0] - everyone_before - mine
    single, most = app.get(1, {}).get("aggregate_tokens_per_s"), app.get(max(users), {})
    figures = {
        "users": list(users),
        "new_tokens": new_tokens,
        "rounds": rounds,
        "app": app,
        "scaling_at_max_users": round(most["aggregate_tokens_per_s"] / single, 2) if single and most.get(
            "aggregate_tokens_per_s") else None,
        "engine_decode_tokens_per_s": engine,
        "llama_cpp_batched_s_tg": llama,
        "ratio_engine_vs_llama_cpp": {n: round(engine[n] / llama[n], 3) for n in engine if n in llama} or None,
    }
    if baseline:
        base_single = baseline.get(1, {}).get("aggregate_tokens_per_s")
        figures["baseline_app"] = baseline
        figures["baseline_dir"] = baseline_dir
        figures["single_user_vs_baseline"] = round(single / base_single, 3) if single and base_single else None
    figures["goals"] = {
        "aggregate_at_8_over_single >= 3": figures["scaling_at_max_users"],
        "ttft_p95_at_8_s <= 1": most.get("ttft_p95_s"),
        "errors == 0": sum(v.get("errors", 0) for v in app.values()),
        "single_user_vs_baseline >= 0.95": figures.get("single_user_vs_baseline"),
    }
    figures["other_processes_cpu_percent"] = round(100 * others / (wall * (os.cpu_count() or 1)), 1)
    return figures


BENCHMARKS["serve"] = bench_serve
# --- serve benchmark (end) ---


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
