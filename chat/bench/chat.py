"""Chat decode speed: the Chat tab's model on the fast path and on plain transformers generate, against llama.cpp
on the same GGUF, prompt and 2 threads (the anchor; ratio = our tokens/s / its), alternated in one run (3 rounds,
median); time to first token; warm and cold start; peak RSS; greedy top-1 agreement of the fast path with the plain
fp32 model over 22 fixed prompts.

`--probabilities`: what the Chat tab's "show probabilities" view costs: the same sampled reply (same seed) with and
without each token's probability and top-5 alternatives recorded, alternated, median of each (ratio = on / off)."""
from __future__ import annotations

import argparse
import json
import sys

from chat.bench.common import CHAT_PROMPT, chat_model, fast_decoder, gguf_path, peak_rss_mb

# llama.cpp's side, run by this Python or by $CHATLAB_LLAMA_PYTHON (a separate venv with llama-cpp-python): reads
# {"gguf", "prompt", "new_tokens", "rounds"} on stdin, prints one tokens/s figure per round (decode, after the first).
LLAMA_SCRIPT = r"""
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


def start_seconds(cache: str, fast: bool = True) -> float:
    """Wall time for a fresh Python process to import ChatLab and have the model ready (what a user waits for)."""
    import os
    import subprocess

    code = ("import time; t = time.perf_counter(); from chat.llm import models; from chat.settings import "
            f"ModelSettings; models.get_model(ModelSettings(fast={fast!r}), progress=lambda s: None); "
            "print(time.perf_counter() - t)")
    env = dict(os.environ, CHATLAB_CACHE_DIR=cache)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def llama_cpp_tokens_per_s(prompt_text: str, new_tokens: int, rounds: int = 1) -> list[float]:
    """llama.cpp on the same GGUF and prompt, greedy, 2 threads; [] when llama-cpp-python is not available."""
    import importlib.util
    import os
    import subprocess

    python = os.environ.get("CHATLAB_LLAMA_PYTHON") or sys.executable
    if python == sys.executable and importlib.util.find_spec("llama_cpp") is None:
        return []
    job = {"gguf": gguf_path(), "prompt": prompt_text, "new_tokens": new_tokens, "rounds": rounds}
    out = subprocess.run([python, "-c", LLAMA_SCRIPT], input=json.dumps(job), capture_output=True, text=True)
    if out.returncode != 0:
        print(f"llama.cpp run failed: {out.stderr.strip()[-500:]}", file=sys.stderr)
        return []
    return [float(line) for line in out.stdout.split()]


def greedy_reply(loaded, fast, new_tokens: int):
    """One greedy reply to CHAT_PROMPT on the fast decoder (or the plain path when fast is None): its stream."""
    from chat.llm.generation import stream_chat
    from chat.llm.params import GenerationParams

    loaded.fast = fast
    stream = stream_chat(CHAT_PROMPT, GenerationParams(temperature=0, max_new_tokens=new_tokens,
                                                       repetition_penalty=1.0), loaded)
    for _ in stream:
        pass
    return stream


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--probabilities", action="store_true",
                        help="decode speed with the Chat tab's token probabilities recorded vs not (the anchor)")


def probabilities(rounds: int = 5, new_tokens: int = 128) -> dict:
    import statistics

    from chat.llm import generation
    from chat.llm.params import GenerationParams
    from chat.ui.chat_probabilities import ALTERNATIVES

    loaded = chat_model()
    loaded.fast = loaded.fast or fast_decoder(loaded)
    ask = [{"role": "user", "content": "Write a long story about a lighthouse keeper and a storm."}]
    params = GenerationParams(temperature=0.7, top_p=0.9, top_k=50, max_new_tokens=new_tokens, seed=7)
    rates: dict[int, list[float]] = {0: [], ALTERNATIVES: []}
    texts: dict[int, str] = {}
    "".join(generation.stream_chat(ask, params, loaded))  # warm-up
    for _ in range(rounds):  # alternated, so a change in the machine's load hits both alike
        for k in rates:
            stream = generation.stream_chat(ask, params, loaded, alternatives=k)
            texts[k] = "".join(stream)
            rates[k].append(stream.stats.tokens_per_s)
    off, on = statistics.median(rates[0]), statistics.median(rates[ALTERNATIVES])
    return {"new_tokens": new_tokens, "rounds": rounds, "alternatives": ALTERNATIVES,
            "tokens_per_s_off": round(off, 1), "tokens_per_s_on": round(on, 1), "ratio_on_off": round(on / off, 3),
            "same_reply": texts[0] == texts[ALTERNATIVES], "goal": "ratio_on_off >= 0.95",
            "rounds_off": [round(r, 1) for r in rates[0]], "rounds_on": [round(r, 1) for r in rates[ALTERNATIVES]]}


def run(args: argparse.Namespace) -> dict:
    if getattr(args, "probabilities", False):
        return probabilities()
    import statistics
    import tempfile
    import time

    from chat.llm.fastpath.quality import top1_agreement
    from chat.llm.prompt import build_prompt
    from chat.paths import cache_dir

    new_tokens, rounds = 128, 3
    loaded = chat_model()  # builds the app's cache if this is the first run
    build_start = time.perf_counter()
    fast = fast_decoder(loaded)
    build_s = time.perf_counter() - build_start
    with tempfile.TemporaryDirectory() as empty:
        cold = start_seconds(empty)  # converts the GGUF into an empty cache; the fast path builds later, in the app
    warm = start_seconds(str(cache_dir()))  # the cache the app uses, already built (fast package included)
    warm_plain = start_seconds(str(cache_dir()), fast=False)
    greedy_reply(loaded, fast, 8)  # warm-up
    prompt_text = build_prompt(loaded, CHAT_PROMPT, new_tokens).text
    ours, plain, theirs, ttft = [], [], [], []
    for _ in range(rounds):  # alternated, so a change in the machine's load hits every side alike
        stream = greedy_reply(loaded, fast, new_tokens)
        ours.append(stream.stats.tokens_per_s)
        ttft.append(stream.stats.ttft_s)
        theirs += llama_cpp_tokens_per_s(prompt_text, new_tokens)
        plain.append(greedy_reply(loaded, None, new_tokens).stats.tokens_per_s)
    loaded.fast = fast
    agreement = top1_agreement(loaded.model, loaded.tokenizer, fast) if fast else None
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
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "top1_agreement": round(agreement, 4) if agreement is not None else None,
        "rounds": {"fast": [round(x, 1) for x in ours], "plain": [round(x, 1) for x in plain],
                   "llama_cpp": [round(x, 1) for x in theirs]},
    }
