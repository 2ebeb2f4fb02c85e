"""The app's limits, measured against their goals (the anchors: trim_goal_s, rss_growth_goal_mb) on the real app
started as a subprocess: the time to trim a 2,000-turn history; the app's RSS after 3 next-token sessions of 6,000
tokens (over the idle app, model loaded); counting 10 MB with the chat model's tokenizer (time, peak RSS growth);
8 users at once through /chat (each one's time to first token and whole reply, errors, the most answering at
once)."""
from __future__ import annotations

import argparse

from chat.bench.common import (chat_model, fast_decoder, mixed_text, peak_rss_mb, queue_call, rss_mb, running_app,
                               wait_idle)


def most_at_once(intervals: list[tuple[float, float]]) -> int:
    """The most intervals (start, end) open at one moment."""
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    running = peak = 0
    for _, change in events:  # at equal times an end (-1) sorts before a start
        running += change
        peak = max(peak, running)
    return peak


def trim_seconds(loaded) -> tuple[float, int]:
    """The fastest of 5 prompts built from a 2,000-turn history, and how many turns it left out."""
    import time

    from chat.llm.prompt import build_prompt

    history = [{"role": "system", "content": "You are a pirate."}]
    for i in range(1000):
        history += [{"role": "user", "content": f"Question {i}: what is {i} plus {i}? Explain it in detail."},
                    {"role": "assistant", "content": f"It is {2 * i}, matey. " * 4}]
    history.append({"role": "user", "content": "And the last one?"})
    build_prompt(loaded, history[:50] + history[-1:], 256)  # warm-up
    trims = []
    for _ in range(5):
        start = time.perf_counter()
        prompt = build_prompt(loaded, history, 256)
        trims.append(time.perf_counter() - start)
    return min(trims), prompt.dropped


def users_at_once(url: str, users: int) -> list[dict]:
    """`users` gradio_client users asking /chat at the same moment: each one's start, first answer and end."""
    import time
    from concurrent.futures import ThreadPoolExecutor

    from gradio_client import Client

    question = "Explain in a few sentences why the sky is blue."

    def user(i: int) -> dict:
        client = Client(url, verbose=False)
        start = time.perf_counter()
        first = None
        job = client.submit(question, [], "", 0.2, 0.9, 50, 96, 1.0, i, api_name="/chat")
        for _ in job:
            first = first or time.perf_counter()
        end = time.perf_counter()
        answer = job.outputs()[-1] if job.outputs() else ""
        return {"start": start, "first": first or end, "end": end, "ok": bool(answer)}

    with ThreadPoolExecutor(users) as pool:
        return list(pool.map(user, range(users)))


def run(args: argparse.Namespace) -> dict:
    import statistics
    import time

    from gradio_client import Client

    from chat import budget, tokens
    from chat.llm.models import DEFAULT_MODEL, REGISTRY
    from chat.llm.tokenizer import register_chat_tokenizer
    from chat.settings import Settings

    settings = Settings.from_env()  # what the app started below reads too
    loaded = chat_model()
    _ = loaded.model  # the transformers model, not just the fast decoder (next-token sessions use it)
    fast_decoder(loaded)  # cached before the app starts, so the app does not build it while being measured
    trim_s, dropped = trim_seconds(loaded)

    with running_app() as (url, pid):
        wait_idle(pid)  # the app's background model load is done
        idle_cold = rss_mb(pid)  # before the transformers model has run (its weights not paged in yet)
        client = Client(url, verbose=False)
        client.predict("warm up", "gpt-4o", api_name="/count_tokens")
        # one short pass first: the model's weights (mmapped from the cached safetensors) are paged in on its first
        # forward pass; that is the model, not a session's memory, so the idle app has served one request
        client.predict("The capital of France is", 1.0, 0, 1.0, api_name="/next_token")
        wait_idle(pid)
        idle = rss_mb(pid)
        sentence = "The history of the city is long and varied, and its people remember it. "
        text = sentence * (6000 // len(loaded.tokenizer(sentence)["input_ids"]))
        for i in range(3):  # three clients' next-token games of ~6,000 tokens, through the tab's own (private) event
            ok, output = queue_call(url, "start", [None, f"{i} {text}", False, "local", 1.0, 0, 1.0])
            if not ok:
                raise RuntimeError(f"next-token start failed: {output}")
        sessions_rss = rss_mb(pid)
        session_tokens = len(loaded.tokenizer(f"0 {text}")["input_ids"])
        users = users_at_once(url, 8)

    register_chat_tokenizer(loaded.settings)
    big = mixed_text(10_000_000)
    name = REGISTRY[DEFAULT_MODEL].title
    tokens.count_tokens("warm up", name)
    peak_before = peak_rss_mb()
    start = time.perf_counter()
    count = tokens.count_tokens(big, name)
    count_s = time.perf_counter() - start
    peak_growth = peak_rss_mb() - peak_before
    budget.configure(settings)
    durations = [round(u["end"] - u["start"], 2) for u in users]
    return {
        "trim_2000_turns_s": round(trim_s, 3), "trim_goal_s": 0.5, "trim_dropped": dropped,
        # the RSS figures are the app process's own (psutil on its pid), no longer the benchmark's process with
        # the app launched inside it
        "idle_app_rss_mb": round(idle), "next_token_session_tokens": session_tokens,
        "rss_after_3_sessions_mb": round(sessions_rss), "rss_growth_3_sessions_mb": round(sessions_rss - idle),
        "rss_growth_goal_mb": 300, "idle_app_before_first_pass_rss_mb": round(idle_cold),
        "rss_growth_3_sessions_over_cold_idle_mb": round(sessions_rss - idle_cold),
        "kv_cache_budget_mb": settings.model.next_token_cache_mb,
        "count_10mb_chat_tokenizer_s": round(count_s, 2), "count_10mb_tokens": count,
        "count_10mb_peak_rss_growth_mb": round(max(0.0, peak_growth)),
        "load_users": len(users), "load_errors": sum(not u["ok"] for u in users),
        # the app's budget counters live in its own process: this is now the most users receiving their reply at
        # once, from first answer to end, as the clients saw it (before: the peak of the app's "chat" slots)
        "load_chat_peak": most_at_once([(u["first"], u["end"]) for u in users]),
        "load_chat_limit": budget.limit("chat"), "load_ttft_s": [round(u["first"] - u["start"], 2) for u in users],
        "load_duration_s": durations, "load_duration_median_s": round(statistics.median(durations), 2),
        "load_duration_max_s": max(durations),
    }
