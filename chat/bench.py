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

# --- rounding benchmark (start) ---
def _rounded(x, scheme: str):
    """x as a product sees it after rounding: "row16" (ChatLab's kernels: int16, one scale per row), "block16" (int16,
    a scale per block of 32: the kernels before 2026-11-26 evening), "block8" (llama.cpp's q8_0 / q8_1: int8, a scale
    per block of 32, as fastpath.pack_q8 packs the embedding)."""
    import torch

    from chat import fastpath

    if scheme == "block8":
        return fastpath.dequantize(fastpath.pack_q8(x.reshape(-1, x.shape[-1]))).reshape(x.shape)
    blocks = x if scheme == "row16" else x.reshape(*x.shape[:-1], -1, 32)
    scale = blocks.abs().amax(-1, keepdim=True) / 32767
    return (torch.round(blocks / torch.where(scale > 0, scale, 1)) * scale).reshape(x.shape)


def _divergence(logits: list, reference: list) -> dict:
    import torch

    got, ref = torch.cat(logits).float(), torch.cat(reference).float()
    log_p, log_q = torch.log_softmax(ref, -1), torch.log_softmax(got, -1)
    return {"max_logit_diff": round((got - ref).abs().max().item(), 4),
            "max_probability_diff": round((log_q.exp() - log_p.exp()).abs().max().item(), 5),
            "mean_kl_nats": float(f"{(log_p.exp() * (log_p - log_q)).sum(-1).mean().item():.3g}"),
            "top1_agreement": round((got.argmax(-1) == ref.argmax(-1)).float().mean().item(), 4)}


def bench_rounding(args: argparse.Namespace) -> dict:
    """What rounding each product's input costs in accuracy: the fast decoder's teacher-forced logits against the
    plain fp32 model's along its greedy replies to 12 fixed chat prompts (24 tokens each), next to the plain model
    with every product's input rounded each way (hooks on its nn.Linear): ChatLab's int16 per row, int16 per block
    of 32, and llama.cpp's int8 per block of 32 (the anchor: ratio = ChatLab's largest probability error / its)."""
    import torch

    from chat import fastpath, models

    loaded = models.get_model(progress=lambda s: None)
    model = loaded.model
    fast = loaded.fast or fastpath.prepare_decoder(model, loaded.device, lambda s: print(s, file=sys.stderr))
    pairs = fastpath.greedy_continuations(model, loaded.tokenizer, fastpath.QUALITY_PROMPTS[:12], 24)
    scheme = {"now": None}
    hooks = [m.register_forward_pre_hook(lambda m, inputs: None if scheme["now"] is None else
                                         (_rounded(inputs[0], scheme["now"]),))
             for m in model.modules() if isinstance(m, torch.nn.Linear)]

    def plain_logits() -> list:
        with torch.inference_mode():
            return [model(torch.tensor([ids + tail])).logits[0, len(ids) - 1: len(ids) + len(tail) - 1]
                    for ids, tail in pairs]

    try:
        reference = plain_logits()
        result = {"positions": sum(len(tail) for _, tail in pairs)}
        if fast is not None:
            result["fast_decoder"] = _divergence([fast.next_token_logits(ids, tail) for ids, tail in pairs], reference)
        for name in ("row16", "block16", "block8"):
            scheme["now"] = name
            result[f"plain_rounded_{name}"] = _divergence(plain_logits(), reference)
    finally:
        for hook in hooks:
            hook.remove()
    ours = result.get("fast_decoder", result["plain_rounded_row16"])["max_probability_diff"]
    result["ratio_max_probability_diff_vs_llama_cpp_int8"] = round(
        ours / result["plain_rounded_block8"]["max_probability_diff"], 4)
    return result


BENCHMARKS["rounding"] = bench_rounding
# --- rounding benchmark (end) ---

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
    """One event through Gradio's raw queue, as the browser sends it (private events included): (success, output or
    error payload). The body is json.dumps'ed by hand, so NaN and Infinity go out as the bare words, as any HTTP
    client can send them (tests/e2e/test_hostile_inputs.py sends those too)."""
    import uuid

    import httpx

    dependencies = httpx.get(f"{url}/config").json()["dependencies"]
    index = next((d["id"] for d in dependencies if d.get("api_name") == api_name), None)
    if index is None:
        raise KeyError(f"no event named {api_name!r}")
    session = uuid.uuid4().hex[:12]
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
    raise RuntimeError(f"{api_name}: the queue's stream ended without a result")


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
        idle_cold_mb = _rss_mb()  # before the transformers model has run (its weights not paged in yet)
        client.predict("warm up", "gpt-4o", api_name="/count_tokens")
        # one short pass first: the model's weights (540 MB, mmapped from the cached safetensors) are paged in on its
        # first forward pass; that is the model, not a session's memory, so the idle app has served one request
        client.predict("The capital of France is", 1.0, 0, 1.0, api_name="/next_token")
        generation.release_freed_memory()
        idle, idle_cold = _rss_mb(), idle_cold_mb
        sentence = "The history of the city is long and varied, and its people remember it. "
        text = sentence * (6000 // len(loaded.tokenizer(sentence)["input_ids"]))
        for i in range(3):  # three clients' next-token games of ~6,000 tokens, through the tab's own (private) event
            ok, output = _queue_call(url, "start", [None, f"{i} {text}", False, "local", 1.0, 0, 1.0])
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
        "rss_growth_goal_mb": 300, "idle_app_before_first_pass_rss_mb": round(idle_cold),
        "rss_growth_3_sessions_over_cold_idle_mb": round(sessions_rss - idle_cold), "kv_cache_budget_mb": generation.SESSION_CACHES.max_bytes >> 20,
        "count_10mb_chat_tokenizer_s": round(count_s, 2), "count_10mb_tokens": count,
        "count_10mb_peak_rss_growth_mb": round(max(0.0, peak_growth)),
        "load_users": 8, "load_errors": sum(not u["ok"] for u in users), "load_chat_peak": chat_peak,
        "load_chat_limit": budget.limit("chat"), "load_ttft_s": [u["ttft_s"] for u in users],
        "load_duration_s": durations, "load_duration_median_s": round(statistics.median(durations), 2),
        "load_duration_max_s": max(durations),
    }


BENCHMARKS["hardening"] = bench_hardening
# --- hardening benchmark (end) ---

# --- serve benchmark (start) ---
SERVE_USERS = (1, 2, 4, 8)
SERVE_QUESTIONS = [  # one per user: different prompts whose greedy replies all run the full 128 tokens (checked:
    # "Describe in detail how a bicycle works, part by part." ended after 27, so N = 8 was seven long replies and a
    # short one, and the single-user median mixed 27- and 128-token replies)
    "Explain in detail how a large language model writes an answer, step by step.",
    "Explain in detail how a bicycle works.",
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
    per-user tokens/s, time to first token (p50 / p95 over users and rounds), errors. Each user's Gradio session is
    opened first with a tiny call, as a browser's is by the page load: a gradio_client's first call otherwise also
    pays for Gradio creating its session state (~60 ms each, one at a time), which no browser user waits for."""
    import statistics
    import threading
    import time

    from gradio_client import Client

    options = _serve_client_options()
    Client(url, **options).predict("Hi", [], "", 0.0, 0.9, 50, 8, 1.0, -1, api_name="/chat")  # warm-up
    figures = {}
    for n in users:
        clients = [Client(url, **options) for _ in range(n)]
        for client in clients:  # each user's session exists before it asks, as a browser's does once the page
            client.predict("hello", "cl100k_base", api_name="/count_tokens")  # loaded (Gradio builds it: ~60 ms)
        ttft, per_user, aggregate, errors, lengths = [], [], [], 0, []
        for _ in range(rounds):
            results = [None] * n
            barrier = threading.Barrier(n)

            def user(i):
                barrier.wait()
                start = time.perf_counter()
                try:
                    first, text = _follow(clients[i].submit(SERVE_QUESTIONS[i % len(SERVE_QUESTIONS)], [], "", 0.0,
                                                            0.9, 50, new_tokens, 1.0, -1, api_name="/chat"))
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
                lengths += [r[3] for r in done]
                ttft += [r[1] - r[0] for r in done]
        figures[n] = {
            "aggregate_tokens_per_s": round(statistics.median(aggregate), 1) if aggregate else None,
            "per_user_tokens_per_s": round(statistics.median(per_user), 1) if per_user else None,
            "ttft_p50_s": round(_percentile(ttft, 0.5), 3) if ttft else None,
            "ttft_p95_s": round(_percentile(ttft, 0.95), 3) if ttft else None,
            "errors": errors,
            "shortest_reply_tokens": min(lengths) if lengths else None,  # every user should get new_tokens
        }
    return figures


def _follow(job, poll_s: float = 0.005, then_s: float = 0.02) -> tuple[float | None, str]:
    """Wait for a gradio_client job, checking its outputs every `poll_s` until its first text, then whether it is done
    every `then_s`: (when its first text came, perf_counter time; the final text). gradio_client's own iterator waits
    by sleeping 1 ms in a loop: 8 users iterating would wake 8,000 times a second on the two cores the server needs,
    which a browser's user does not do (at 5 ms throughout, the 8 users' checks took ~10% of a core: 0.41-0.49 s of
    CPU a round, 0.15-0.22 s at 50 ms)."""
    import time

    first = None
    while not job.done():
        if first is None and any(job.outputs()):
            first = time.perf_counter()
        time.sleep(poll_s if first is None else then_s)
    text = job.result()
    return first or time.perf_counter(), text


def _serve_client_options() -> dict:
    import ssl

    # gradio_client makes a new httpx client for every request, and each one loads the CA bundle (~48 ms of CPU)
    # unless it is handed a ready SSL context: the users' machines would pay that, not the server's two cores
    return {"verbose": False, "ssl_verify": ssl.create_default_context()}


def _single_user_alternated(urls: dict[str, str], tokenizer, new_tokens: int, rounds: int) -> dict:
    """One user at a time, the apps taking turns request by request (so a slower minute of the machine hits both):
    {app: median tokens/s of its replies (whole reply, time to first token included)}."""
    import statistics
    import time

    from gradio_client import Client

    clients = {name: Client(url, **_serve_client_options()) for name, url in urls.items()}
    speeds: dict[str, list[float]] = {name: [] for name in urls}
    for i in range(rounds):
        for name, client in clients.items():
            start = time.perf_counter()
            _, text = _follow(client.submit(SERVE_QUESTIONS[i % 2], [], "", 0.0, 0.9, 50, new_tokens, 1.0, -1,
                                            api_name="/chat"))
            speeds[name].append(len(tokenizer.encode(text)) / (time.perf_counter() - start))
    return {name: round(statistics.median(values), 1) for name, values in speeds.items()}


def _serve_through_apps(app_dirs: dict[str, str], tokenizer, users, new_tokens: int, rounds: int,
                        port: int | None = None) -> tuple[dict, dict, list]:
    """Start every app (this checkout's, and a baseline's when given) side by side; each serves the N-user load in
    turn while the others sit idle, then one user at a time alternates between them; then the first app alone
    serves pairs of rounds, one user then the most users, back to back. ({app: figures per N}, {app: single-user
    median tokens/s}, [the pairs' aggregate tokens/s with the most users over one user's])."""
    import tempfile
    from contextlib import ExitStack

    with ExitStack() as stack:
        urls = {}
        for i, (name, folder) in enumerate(app_dirs.items()):
            log = stack.enter_context(tempfile.TemporaryFile("w+"))
            app_port = port + i if port else _free_port()
            process = _start_app(folder, app_port, log)
            stack.callback(_stop, process)
            urls[name] = f"http://127.0.0.1:{app_port}/"
        figures = {name: _serve_app(url, tokenizer, users, new_tokens, rounds) for name, url in urls.items()}
        alone = _single_user_alternated(urls, tokenizer, new_tokens, 2 * rounds + 1)
        paired = []
        for _ in range(2 * rounds - 1):
            pair = _serve_app(next(iter(urls.values())), tokenizer, (1, max(users)), new_tokens, 1)
            one, most = pair[1]["aggregate_tokens_per_s"], pair[max(users)]["aggregate_tokens_per_s"]
            paired.append(round(most / one, 2) if one and most else None)
        return figures, alone, paired


def _stop(process) -> None:
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
    load against that app too, for a before/after in one run; the single-user comparison alternates the two apps
    request by request (7 replies each, medians), since the machine's speed drifts by more than the goal's 5%
    within minutes. For the same reason the speed with 8 users over one user's is also measured in 5 pairs of
    rounds, one user then 8, back to back (median of the pairs' ratios): the N = 1 and N = 8 phases run minutes
    apart, and the host's speed changed by up to 2x between them."""
    import os
    import statistics
    import time
    from pathlib import Path

    from chat import fastpath, models

    users, new_tokens, rounds = SERVE_USERS, 128, 3
    everyone_before, mine_before, wall_before = _cpu_seconds()[0], sum(os.times()[:4]), time.perf_counter()
    loaded = models.get_model(progress=lambda s: None)
    if loaded.fast is None:  # the app loads the cached package: build it first if needed
        loaded.fast = fastpath.prepare_decoder(loaded.model, loaded.device, lambda s: print(s, file=sys.stderr))
    here = str(Path(__file__).resolve().parent.parent)
    port = int(os.environ.get("CHATLAB_SERVE_PORT", 0)) or None  # the app's port (the baseline's: the next one)
    baseline_dir = os.environ.get("CHATLAB_SERVE_BASELINE_APP")
    apps, alone, paired = _serve_through_apps({"app": here, **({"baseline": baseline_dir} if baseline_dir else {})},
                                      loaded.tokenizer, users, new_tokens, rounds, port)
    app, baseline = apps["app"], apps.get("baseline", {})
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
        "scaling_at_max_users_paired": {"median": statistics.median(r for r in paired if r) if any(paired) else None,
                                        "pairs": paired},
        "engine_decode_tokens_per_s": engine,
        "llama_cpp_batched_s_tg": llama,
        "ratio_engine_vs_llama_cpp": {n: round(engine[n] / llama[n], 3) for n in engine if n in llama} or None,
    }
    figures["single_user_alternated_tokens_per_s"] = alone
    if baseline:
        figures["baseline_app"] = baseline
        figures["baseline_dir"] = baseline_dir
        figures["single_user_vs_baseline"] = round(alone["app"] / alone["baseline"], 3)
    figures["goals"] = {
        "aggregate_at_8_over_single >= 3 (paired rounds, median)": figures["scaling_at_max_users_paired"]["median"],
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

# --- finetune benchmark (start) ---
class _PeakRSS:
    """The process's resident memory, sampled every 0.1 s while in the `with` block: its peak, in GB."""

    def __init__(self):
        import threading

        self.peak, self._stop = 0.0, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self):
        import os

        page = os.sysconf("SC_PAGE_SIZE")
        while not self._stop.wait(0.1):
            with open("/proc/self/statm") as statm:
                self.peak = max(self.peak, int(statm.read().split()[1]) * page / 1e9)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def _watch_live(run, render) -> int:
    """What the tab does while a run trains: render every update (0.5 s) until the thread ends; the update count."""
    updates = 0
    while run.thread.is_alive():
        render(run, None)
        updates += 1
        run.wait(0.5)
    return updates


def _plain_trl_seconds(trainer_class, config_class, rows: list[dict], base, settings, args: dict) -> float:
    """TRL as its docs show it: the trainer gets a copy of the model and a peft_config, no callbacks; train() wall."""
    import contextlib
    import copy
    import io
    import time

    from datasets import Dataset

    from chat import finetune, tuning

    trainer = trainer_class(model=copy.deepcopy(base.model), args=config_class(**tuning.cpu_training_args(**args)),
                            train_dataset=Dataset.from_list(rows), processing_class=copy.deepcopy(base.tokenizer),
                            peft_config=tuning.lora_config(base.model, finetune.lora_settings(settings)))
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # TRL's log lines would land in the --json output
        trainer.train()
    return time.perf_counter() - start


def _against_plain_trl(ours: list[float], plain: list[float], peak_rss: float, updates: int) -> dict:
    """Steps/s with the tab's live view against plain TRL: best of each (noise only slows a run down)."""
    return {"ui_updates": updates, "peak_rss_gb": round(peak_rss, 2), "chatlab_steps_per_s": round(max(ours), 3),
            "plain_trl_steps_per_s": round(max(plain), 3), "ratio": round(max(ours) / max(plain), 3),
            "rounds": {"chatlab": [round(x, 3) for x in ours], "plain_trl": [round(x, 3) for x in plain]}}


def bench_finetune(args: argparse.Namespace) -> dict:
    """The identity preset (name "Nova") with the Fine-tune tab's live view: training seconds, held-out paraphrases
    answered with the new name, control questions kept, peak RSS; then its steps/s against a plain TRL SFTTrainer
    run (same data, LoRA and settings, no callbacks), alternated, 2 rounds each, best of each."""
    from trl import SFTConfig, SFTTrainer

    from chat import finetune, models
    from chat.ui import finetune_tab

    base = models.get_model(progress=lambda s: None)
    preset = finetune.preset("identity", "Nova")
    s = preset.settings
    with _PeakRSS() as rss:
        run = finetune.start_run(preset.pairs, "", s, base, preset_key="identity", name="Nova",
                                 questions=finetune.preset_questions(preset), expect=preset.expect)
        updates = _watch_live(run, finetune_tab.render)
    held = [r for r in run.comparisons if r["kind"] == "held_out"]
    controls = [r for r in run.comparisons if r["kind"] == "control"]
    ours, plain = [run.steps_per_second], []
    rows = finetune.sft_rows(preset.pairs)
    trl_args = dict(learning_rate=s.learning_rate, max_steps=s.max_steps, per_device_train_batch_size=s.batch_size,
                    seed=s.seed, data_seed=s.seed, max_length=512, completion_only_loss=True)
    for round_ in range(2):  # alternated, so a change in the machine's load hits both alike
        plain.append(s.max_steps / _plain_trl_seconds(SFTTrainer, SFTConfig, rows, base, s, trl_args))
        if round_ == 0:
            again = finetune.start_run(preset.pairs, "", s, base)
            _watch_live(again, finetune_tab.render)
            ours.append(again.steps_per_second)
    return {
        "train_seconds": round(run.elapsed, 1),
        "steps": run.step,
        "status": run.status,
        "loss_start": round(run.first("loss"), 3),
        "loss_end": round(run.last("loss"), 3),
        "held_out_with_new_name": f"{sum(bool(r['after_ok']) for r in held)}/{len(held)}",
        "held_out_with_new_name_before": f"{sum(bool(r['before_ok']) for r in held)}/{len(held)}",
        "controls_right_before": f"{sum(bool(r['before_ok']) for r in controls)}/{len(controls)}",
        "controls_right_after": f"{sum(bool(r['after_ok']) for r in controls)}/{len(controls)}",
        "answers": [{k: r[k] for k in ("kind", "question", "before", "after")} for r in run.comparisons],
    } | _against_plain_trl(ours, plain, rss.peak, updates)


BENCHMARKS["finetune"] = bench_finetune
# --- finetune benchmark (end) ---

# --- feedback benchmark (start) ---
def bench_feedback(args: argparse.Namespace) -> dict:
    """The "concise" preset end to end: the reward model's accuracy on held-out pairs, DPO with the Human feedback
    tab's live view (seconds, held-out answers' mean length and correctness before/after, reward scores), peak RSS;
    then DPO's steps/s against a plain TRL DPOTrainer run (same data, LoRA, settings), alternated, best of each."""
    import statistics
    import time

    from trl import DPOConfig, DPOTrainer

    from chat import feedback, models, reward
    from chat.ui import feedback_tab

    base = models.get_model(progress=lambda s: None)
    preset = feedback.preset("concise")
    s = preset.settings
    with _PeakRSS() as rss:
        start = time.perf_counter()
        rm = feedback.train_reward_model(preset.pairs, "", base)
        rm_seconds = time.perf_counter() - start
        rm_accuracy = reward.accuracy(rm, base.model, base.tokenizer, feedback.triples(preset.held_out_pairs))
        run = feedback.start_run(preset.pairs, "", s, base, preset_key="concise", reward_model=rm,
                                 questions=preset.held_out)
        updates = _watch_live(run, feedback_tab.render)
    rows = run.comparisons
    mean = statistics.mean
    before, after = mean(r["before_chars"] for r in rows), mean(r["after_chars"] for r in rows)
    ours, plain = [run.steps_per_second], []
    trl_args = dict(learning_rate=s.learning_rate, max_steps=s.max_steps, per_device_train_batch_size=s.batch_size,
                    seed=s.seed, data_seed=s.seed, beta=s.beta, max_length=512, precompute_ref_log_probs=True,
                    precompute_ref_batch_size=8)
    for round_ in range(2):
        plain.append(s.max_steps / _plain_trl_seconds(DPOTrainer, DPOConfig, feedback.dpo_rows(preset.pairs), base,
                                                       s, trl_args))
        if round_ == 0:
            again = feedback.start_run(preset.pairs, "", s, base)
            _watch_live(again, feedback_tab.render)
            ours.append(again.steps_per_second)
    return {
        "reward_model_accuracy": round(rm_accuracy, 3),
        "reward_model_seconds": round(rm_seconds, 2),
        "held_out_pairs": len(preset.held_out_pairs),
        "dpo_seconds": round(run.elapsed, 1),
        "dpo_steps": run.step,
        "status": run.status,
        "margin_end": round(run.last("rewards/margins"), 3),
        "kl_end": round(run.last("kl"), 4),
        "mean_chars_before": round(before, 1),
        "mean_chars_after": round(after, 1),
        "length_cut": round(1 - after / before, 3),
        "right_before": f"{sum(bool(r.get('before_ok')) for r in rows)}/{len(rows)}",
        "right_after": f"{sum(bool(r.get('after_ok')) for r in rows)}/{len(rows)}",
        "mean_reward_before": round(mean(r["before_reward"] for r in rows), 3),
        "mean_reward_after": round(mean(r["after_reward"] for r in rows), 3),
        "answers": [{k: r[k] for k in ("question", "before", "after")} for r in rows],
    } | _against_plain_trl(ours, plain, rss.peak, updates)


def _reward_trainer_accuracy(base, train, held_out) -> tuple[float, float]:
    """TRL's RewardTrainer (a LoRA sequence-classification copy of the chat model, 3 epochs): (seconds, held-out
    accuracy). The alternative to chat.reward's linear head, measured, not shipped."""
    import copy
    import time

    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForSequenceClassification
    from trl import RewardConfig, RewardTrainer

    from chat import feedback, tuning

    start = time.perf_counter()
    model = AutoModelForSequenceClassification.from_pretrained(base.model.config._name_or_path, num_labels=1,
                                                               dtype=torch.float32)
    tokenizer = copy.deepcopy(base.tokenizer)
    model.config.pad_token_id = tokenizer.pad_token_id
    steps = 3 * len(train) // 4
    trainer = RewardTrainer(model=model, args=RewardConfig(**tuning.cpu_training_args(
        learning_rate=1e-4, max_steps=steps, per_device_train_batch_size=4, max_length=512)),
        train_dataset=Dataset.from_list(feedback.dpo_rows(train)), processing_class=tokenizer,
        peft_config=LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="SEQ_CLS"))
    trainer.train()
    seconds = time.perf_counter() - start
    scorer = trainer.model.eval()

    def score(prompt: str, answer: str) -> float:
        text = tokenizer.apply_chat_template(feedback.conversation(prompt) + [{"role": "assistant",
                                                                               "content": answer}], tokenize=False)
        with torch.inference_mode():
            return float(scorer(**tokenizer(text, return_tensors="pt", add_special_tokens=False)).logits[0, 0])

    right = sum(score(p.prompt, p.chosen) > score(p.prompt, p.rejected) for p in held_out)
    return seconds, right / len(held_out)


def bench_reward(args: argparse.Namespace) -> dict:
    """Which reward model: chat.reward's linear Bradley–Terry head on frozen layer-9 features against TRL's
    RewardTrainer (LoRA, 3 epochs), on each preset's training pairs; accuracy on its held-out pairs, and seconds."""
    import time

    from chat import feedback, models, reward

    base = models.get_model(progress=lambda s: None)
    figures = {}
    for key in ("concise", "friendly", "chinese", "refuse"):
        preset = feedback.preset(key)
        held = feedback.triples(preset.held_out_pairs)
        start = time.perf_counter()
        head = reward.fit(base.model, base.tokenizer, feedback.triples(preset.pairs))
        head_seconds = time.perf_counter() - start
        trl_seconds, trl_accuracy = _reward_trainer_accuracy(base, preset.pairs, preset.held_out_pairs)
        figures[key] = {"head_accuracy": round(reward.accuracy(head, base.model, base.tokenizer, held), 3),
                        "head_seconds": round(head_seconds, 2), "reward_trainer_accuracy": round(trl_accuracy, 3),
                        "reward_trainer_seconds": round(trl_seconds, 1), "held_out_pairs": len(held)}
    return figures


BENCHMARKS["reward"] = bench_reward


BENCHMARKS["feedback"] = bench_feedback
# --- feedback benchmark (end) ---
# --- inside benchmark (start) ---
INSIDE_TEXT = ("The old lighthouse keeper climbed the narrow stairs every evening, lit the great lamp and watched the "
               "ships pass safely through the channel below. One stormy night a small boat lost its way, and the "
               "keeper rang the bell until the sailors found the harbour again. In the morning the whole village came "
               "down to the shore to thank him.")  # 65 tokens: the pass reads the first 64


def _rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _chat_tokens_per_s(loaded, new_tokens: int, alongside=None) -> tuple[float, int]:
    """Decode speed of one greedy chat reply; with `alongside(stop_event)` running in a thread meanwhile, also how
    many times it ran."""
    import threading

    from chat import generation

    params = generation.GenerationParams(temperature=0, max_new_tokens=new_tokens, repetition_penalty=1.0)
    stop, runs = threading.Event(), []
    worker = None
    if alongside is not None:
        worker = threading.Thread(target=lambda: alongside(stop, runs))
        worker.start()
    stream = generation.stream_chat(CHAT_PROMPT, params, loaded)
    for _ in stream:
        pass
    stop.set()
    if worker is not None:
        worker.join()
    return stream.stats.tokens_per_s, len(runs)


def _browser_render(loaded) -> dict:
    """The tab in Debian's Chromium (when Playwright and /usr/bin/chromium are there): the grid's drawing time as the
    page measures it (performance.now), a new inspection from click to drawn, and a thumbnail click to its head."""
    import os
    import shutil
    import socket
    import time

    if shutil.which("/usr/bin/chromium") is None:
        return {}
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return {}
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import app

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    demo = app.build_app()
    _, url, _ = demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                            **app.launch_options())
    figures = {}
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=[
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
            page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
            page.set_default_timeout(120_000)
            page.goto(url)
            page.get_by_role("tab", name="Inside the model").click()
            page.locator("#inside-steps .steps").wait_for()
            grid_ms, inspect_ms, click_ms = [], [], []
            for n in range(3):
                stamp = page.locator("#inside-grid [data-stamp]").get_attribute("data-stamp")
                page.locator("#inside-text textarea").fill(f"({n}) {INSIDE_TEXT}")  # new first tokens: a new pass
                start = time.perf_counter()
                page.locator("#inside-run").click()
                page.wait_for_function("s => { const e = document.querySelector('#inside-grid [data-stamp]'); "
                                       "return e && e.dataset.stamp !== s; }", arg=stamp)
                page.locator("#inside-steps .steps[data-layer]").wait_for()
                inspect_ms.append((time.perf_counter() - start) * 1000)
                grid_ms.append(float(page.locator("#inside-grid [data-render-ms]").get_attribute("data-render-ms")))
                layer, head = 10 + n, n
                canvas = page.locator("#inside-grid canvas")
                canvas.scroll_into_view_if_needed()
                start = time.perf_counter()
                canvas.click(position={"x": 34 + layer * 31 + 14, "y": 34 + head * 31 + 14})
                page.locator(f"#inside-steps .steps[data-layer='{layer}'][data-head='{head}']").wait_for()
                click_ms.append((time.perf_counter() - start) * 1000)
            tokens = page.locator("#inside-heatmap svg rect title").count()
            browser.close()
        figures = {"browser_grid_draw_ms": round(min(grid_ms), 1),
                   "browser_inspect_click_to_drawn_ms": round(min(inspect_ms)),
                   "browser_thumbnail_click_to_head_ms": round(min(click_ms)),
                   "browser_heatmap_cells": tokens}
    finally:
        demo.close()
    return figures


def bench_inside(args: argparse.Namespace) -> dict:
    """The Inside tab's inspection pass on 64 tokens (every layer's and head's attention, the logit lens, the first
    layer inputs) against the plain forward pass of the same tokens on the shared model (the anchor), best of 5,
    alternated; the tab's server-side drawing; the probes; memory over 40 inspections; a chat reply's decode speed
    alone, while inspections run back to back (they give way), and with the giving way switched off; and, when
    Chromium and Playwright are there, the page's drawing times."""
    import statistics
    import time

    import torch

    from chat import inside, models
    from chat.ui import inside_tab

    loaded = models.get_model(progress=lambda s: None)
    model = loaded.model
    ids = models.ModelTokenizer(loaded.tokenizer).encode(INSIDE_TEXT)[:inside.MAX_TOKENS]
    assert len(ids) == inside.MAX_TOKENS
    start = time.perf_counter()
    inside.eager_twin(model)
    twin_s = time.perf_counter() - start
    tensor = torch.tensor([ids])

    def plain():
        with torch.inference_mode():
            model(input_ids=tensor, use_cache=False, logits_to_keep=1)

    def inspection():
        return inside._inspect_ids(loaded, ids, 0, give_way=True)

    plain()
    inspection()  # warm-up
    plain_s, inspect_s = [], []
    for _ in range(5):
        for fn, times in ((plain, plain_s), (inspection, inspect_s)):
            begin = time.perf_counter()
            fn()
            times.append(time.perf_counter() - begin)
    found = inspection()
    inside.inspect_text(INSIDE_TEXT, loaded)  # into the cache: the tab's own work is timed next, not the pass
    begin = time.perf_counter()
    inside_tab.look(INSIDE_TEXT, 18, 6, True, None)  # what the tab computes for one inspection (cached pass)
    draw_s = time.perf_counter() - begin
    value = inside_tab.grid_value(found, True, None)
    begin = time.perf_counter()
    inside_tab.show_head(INSIDE_TEXT, 16, 0, True, None)
    head_s = time.perf_counter() - begin
    probes = {}
    for name in inside.PROBES:
        inside._PROBE_RESULTS.pop(model, None)
        begin = time.perf_counter()
        result = inside.head_scores(name, loaded)
        best = result.ranked[0]
        probes[name] = {"seconds": round(time.perf_counter() - begin, 2), "best": f"L{best.layer}H{best.head}",
                        "score": round(best.score, 3)}
    rss_before = _rss_mb()
    for n in range(40):  # 40 sessions' worth of distinct texts
        inside.inspect_text(f"{n} {INSIDE_TEXT}", loaded)
    rss_after = _rss_mb()

    def inspect_back_to_back(give_way: bool):
        def run(stop, runs):
            while not stop.is_set():
                inside._inspect_ids(loaded, ids, 0, give_way=give_way)
                runs.append(1)
        return run

    chat = {}
    if loaded.fast is not None:
        _chat_tokens_per_s(loaded, 8)  # warm-up
        alone, with_inspections, without_giving_way = [], [], []
        runs_giving_way = runs_not = 0
        for _ in range(3):  # alternated, so a change in the machine's load hits every side alike
            alone.append(_chat_tokens_per_s(loaded, 128)[0])
            speed, runs = _chat_tokens_per_s(loaded, 128, inspect_back_to_back(True))
            with_inspections.append(speed)
            runs_giving_way += runs
            speed, runs = _chat_tokens_per_s(loaded, 128, inspect_back_to_back(False))
            without_giving_way.append(speed)
            runs_not += runs
        median = statistics.median
        chat = {"chat_tokens_per_s_alone": round(median(alone), 1),
                "chat_tokens_per_s_during_inspections": round(median(with_inspections), 1),
                "chat_ratio_during_inspections": round(median(with_inspections) / median(alone), 3),
                "chat_tokens_per_s_if_inspections_did_not_give_way": round(median(without_giving_way), 1),
                "chat_ratio_if_inspections_did_not_give_way": round(median(without_giving_way) / median(alone), 3),
                "inspections_during_3_replies": runs_giving_way,
                "inspections_during_3_replies_not_giving_way": runs_not}
    best_plain, best_inspect = min(plain_s), min(inspect_s)
    return {
        "tokens": len(ids),
        "layers_x_heads": f"{found.layers} x {found.heads}",
        "attention_mb": round(found.attention.numel() * 4 / 1e6, 2),
        "inspection_s": round(best_inspect, 3),
        "inspection_median_s": round(statistics.median(inspect_s), 3),
        "plain_forward_s": round(best_plain, 3),
        "ratio": round(best_inspect / best_plain, 3),
        "goal_inspection_s": 1.5,
        "twin_build_s": round(twin_s, 3),
        "tab_server_render_s": round(draw_s, 3),
        "tab_head_switch_s": round(head_s, 3),
        "grid_payload_kb": round(len(value["data"]) / 1024, 1),
        "probes": probes,
        "rss_growth_40_inspections_mb": round(rss_after - rss_before, 1),
        "inspections_kept": len(inside._CACHE),
        **chat,
        **_browser_render(loaded),
        "torch_threads": torch.get_num_threads(),
    }


BENCHMARKS["inside"] = bench_inside
# --- inside benchmark (end) ---


# --- remote benchmark (start) ---
def _direct_stream(backend, messages: list[dict], max_tokens: int) -> dict:
    """The anchor: the openai client straight to the server, the same request ChatLab sends."""
    import time

    start, first, last, chunks = time.perf_counter(), None, None, 0
    response = backend.client().chat.completions.create(model=backend.model, messages=messages, stream=True,
                                                        temperature=0.0, top_p=1.0, max_tokens=max_tokens)
    for chunk in response:
        if chunk.choices and chunk.choices[0].delta is not None and chunk.choices[0].delta.content:
            last = time.perf_counter()
            first = first or last
            chunks += 1
    return {"tokens": chunks, "seconds": time.perf_counter() - start, "ttft_s": first - start,
            "tokens_per_s": (chunks - 1) / (last - first)}


def _chatlab_stream(backend, messages: list[dict], max_tokens: int) -> dict:
    """ChatLab's remote chat: chat.remote.stream_chat, as the Chat tab runs it (model check, template probe)."""
    import time

    from chat import remote
    from chat.generation import GenerationParams

    start = time.perf_counter()
    greedy = GenerationParams(temperature=0.0, top_p=1.0, top_k=0, max_new_tokens=max_tokens, repetition_penalty=1.0)
    stream = remote.stream_chat(messages, greedy, backend)
    for _ in stream:
        pass
    s = stream.stats
    return {"tokens": s.new_tokens, "seconds": time.perf_counter() - start, "ttft_s": s.ttft_s,
            "tokens_per_s": s.tokens_per_s}


def _mcp_round_trips(url: str, calls: int) -> tuple[list[float], float]:
    """count_tokens through the `mcp` client over streamable HTTP: each call's round trip (ms), and the session's
    set-up (connect + initialize + list_tools, ms)."""
    import asyncio
    import time

    from mcp import ClientSession
    from mcp.client.streamable_http import streamablehttp_client

    async def run():
        start = time.perf_counter()
        async with streamablehttp_client(url) as (read, write, _):
            async with ClientSession(read, write) as session:
                await session.initialize()
                await session.list_tools()
                setup = (time.perf_counter() - start) * 1000
                times = []
                for i in range(calls):
                    begin = time.perf_counter()
                    result = await session.call_tool("count_tokens", {"text": f"Hello, world #{i}!", "model": "gpt-4o"})
                    times.append((time.perf_counter() - begin) * 1000)
                    assert not result.isError, result
        return times, setup

    return asyncio.run(run())


def bench_remote(args: argparse.Namespace) -> dict:
    """Remote chat: ChatLab's stream (chat.remote) vs the openai client straight to the same llama.cpp server
    (llama-cpp-python's, on the packaged SmolLM2 GGUF; $CHATLAB_LLAMA_PYTHON or ./.venv-llama), greedy, the same
    128-token reply, alternated, 5 rounds each; ratio = ChatLab's stream tokens/s / the client's. Then the MCP
    count_tokens round trip on the real app (goal <= 100 ms)."""
    import socket
    from statistics import median

    from chat import remote

    python = remote.llama_python()
    if python is None:
        raise SystemExit("No Python with llama-cpp-python[server]: set CHATLAB_LLAMA_PYTHON (bash .ci/run makes "
                         ".venv-llama).")
    messages = [{"role": "user", "content": "Write a long story about a lighthouse keeper and a storm."}]
    new_tokens, rounds = 128, 5
    ours, theirs = [], []
    with remote.local_llama_server(python) as (backend, _):
        _direct_stream(backend, messages, 8)  # warm-up: model pages, the server's first request
        _chatlab_stream(backend, messages, 8)
        for _ in range(rounds):
            theirs.append(_direct_stream(backend, messages, new_tokens))
            ours.append(_chatlab_stream(backend, messages, new_tokens))
    speed_ours = median(r["tokens_per_s"] for r in ours)
    speed_theirs = median(r["tokens_per_s"] for r in theirs)
    wall_ours = median(r["seconds"] for r in ours)
    wall_theirs = median(r["seconds"] for r in theirs)

    import app

    demo = app.build_app()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, mcp_server=True,
                **app.launch_options())
    try:
        _mcp_round_trips(f"http://127.0.0.1:{port}/gradio_api/mcp/", 3)  # warm-up: tiktoken's o200k loads once
        times, setup = _mcp_round_trips(f"http://127.0.0.1:{port}/gradio_api/mcp/", 30)
    finally:
        demo.close()
    return {
        "new_tokens": new_tokens, "rounds": rounds,
        "chatlab_tokens_per_s": round(speed_ours, 1), "openai_client_tokens_per_s": round(speed_theirs, 1),
        "ratio": round(speed_ours / speed_theirs, 3),
        "chatlab_reply_s": round(wall_ours, 3), "openai_client_reply_s": round(wall_theirs, 3),
        "reply_time_ratio": round(wall_ours / wall_theirs, 3),
        "chatlab_ttft_s": round(median(r["ttft_s"] for r in ours), 3),
        "openai_client_ttft_s": round(median(r["ttft_s"] for r in theirs), 3),
        "tokens_equal": all(r["tokens"] == new_tokens for r in ours + theirs),
        "mcp_count_tokens_ms_median": round(median(times), 1), "mcp_count_tokens_ms_max": round(max(times), 1),
        "mcp_session_setup_ms": round(setup, 1), "mcp_goal_ms": 100,
    }


BENCHMARKS["remote"] = bench_remote
# --- remote benchmark (end) ---


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
