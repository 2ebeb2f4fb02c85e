"""Remote chat: ChatLab's stream (chat.llm.remote) against the openai client straight to the same llama.cpp server
(the anchor: llama-cpp-python's server on the packaged SmolLM2 GGUF; $CHATLAB_LLAMA_PYTHON or ./.venv-llama), greedy,
the same 128-token reply, alternated, 5 rounds each; ratio = ChatLab's tokens/s / the client's. Then the MCP
count_tokens round trip on the real app started as a subprocess with --mcp (goal <= 100 ms)."""
from __future__ import annotations

import argparse

from chat.bench.common import running_app, wait_idle


def direct_stream(backend, messages: list[dict], max_tokens: int) -> dict:
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


def chatlab_stream(backend, messages: list[dict], max_tokens: int) -> dict:
    """ChatLab's remote chat: chat.llm.remote.stream_chat, as the Chat tab runs it (model check, template probe)."""
    import time

    from chat.llm import remote
    from chat.llm.params import GenerationParams

    start = time.perf_counter()
    greedy = GenerationParams(temperature=0.0, top_p=1.0, top_k=0, max_new_tokens=max_tokens, repetition_penalty=1.0)
    stream = remote.stream_chat(messages, greedy, backend)
    for _ in stream:
        pass
    s = stream.stats
    return {"tokens": s.new_tokens, "seconds": time.perf_counter() - start, "ttft_s": s.ttft_s,
            "tokens_per_s": s.tokens_per_s}


def mcp_round_trips(url: str, calls: int) -> tuple[list[float], float]:
    """count_tokens through the `mcp` client over streamable HTTP: each call's round trip (ms), and the session's
    set-up (connect + initialize + list_tools, ms)."""
    import asyncio
    import time

    from mcp import ClientSession
    from mcp.client.streamable_http import streamablehttp_client

    async def calls_in_one_session():
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

    return asyncio.run(calls_in_one_session())


def run(args: argparse.Namespace) -> dict:
    from statistics import median

    from chat.llm import remote

    python = remote.llama_python()
    if python is None:
        raise SystemExit("No Python with llama-cpp-python[server]: set CHATLAB_LLAMA_PYTHON (bash .ci/run makes "
                         ".venv-llama).")
    messages = [{"role": "user", "content": "Write a long story about a lighthouse keeper and a storm."}]
    new_tokens, rounds = 128, 5
    ours, theirs = [], []
    with remote.local_llama_server(python) as (backend, _):
        direct_stream(backend, messages, 8)  # warm-up: model pages, the server's first request
        chatlab_stream(backend, messages, 8)
        for _ in range(rounds):
            theirs.append(direct_stream(backend, messages, new_tokens))
            ours.append(chatlab_stream(backend, messages, new_tokens))
    speed_ours = median(r["tokens_per_s"] for r in ours)
    speed_theirs = median(r["tokens_per_s"] for r in theirs)
    wall_ours = median(r["seconds"] for r in ours)
    wall_theirs = median(r["seconds"] for r in theirs)

    with running_app(flags=("--mcp",)) as (url, pid):
        wait_idle(pid)  # the app loads its chat model in the background: not during the round trips
        mcp = f"{url}/gradio_api/mcp/"
        mcp_round_trips(mcp, 3)  # warm-up: tiktoken's o200k loads once
        times, setup = mcp_round_trips(mcp, 30)
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
