"""The Inside-the-model view: its inspection pass on 64 tokens (every layer's and head's attention, the logit lens,
the first layer inputs) against the plain forward pass of the same tokens on the shared model (the anchor; ratio =
inspection / plain pass, best of 5, alternated); the probes; memory over 40 inspections; a chat reply's decode speed
alone, while inspections run back to back (they give way), and with the giving way switched off. Then, on the real
app started as a subprocess, the tab's events over Gradio's queue and, when Chromium and Playwright are there, the
page's drawing times."""
from __future__ import annotations

import argparse

from chat.bench.common import CHAT_PROMPT, chat_model, event_index, queue_event, rss_mb, running_app, wait_idle

TEXT = ("The old lighthouse keeper climbed the narrow stairs every evening, lit the great lamp and watched the "
        "ships pass safely through the channel below. One stormy night a small boat lost its way, and the "
        "keeper rang the bell until the sailors found the harbour again. In the morning the whole village came "
        "down to the shore to thank him.")  # 65 tokens: the pass reads the first 64
CHROMIUM = "/usr/bin/chromium"


def chat_tokens_per_s(loaded, new_tokens: int, alongside=None) -> tuple[float, int]:
    """Decode speed of one greedy chat reply; with `alongside(stop_event, runs)` running in a thread meanwhile, also
    how many times it ran."""
    import threading

    from chat.llm.generation import stream_chat
    from chat.llm.params import GenerationParams

    params = GenerationParams(temperature=0, max_new_tokens=new_tokens, repetition_penalty=1.0)
    stop, runs = threading.Event(), []
    worker = None
    if alongside is not None:
        worker = threading.Thread(target=lambda: alongside(stop, runs))
        worker.start()
    stream = stream_chat(CHAT_PROMPT, params, loaded)
    for _ in stream:
        pass
    stop.set()
    if worker is not None:
        worker.join()
    return stream.stats.tokens_per_s, len(runs)


def chat_during_inspections(loaded, ids: list[int]) -> dict:
    """A reply's tokens/s alone, during back-to-back inspections that give way, and during ones that do not."""
    import statistics

    from chat.llm import inside

    def inspect_back_to_back(give_way: bool):
        def run(stop, runs):
            while not stop.is_set():
                inside._inspect_ids(loaded, ids, 0, give_way=give_way)
                runs.append(1)
        return run

    chat_tokens_per_s(loaded, 8)  # warm-up
    alone, with_inspections, without_giving_way = [], [], []
    runs_giving_way = runs_not = 0
    for _ in range(3):  # alternated, so a change in the machine's load hits every side alike
        alone.append(chat_tokens_per_s(loaded, 128)[0])
        speed, runs = chat_tokens_per_s(loaded, 128, inspect_back_to_back(True))
        with_inspections.append(speed)
        runs_giving_way += runs
        speed, runs = chat_tokens_per_s(loaded, 128, inspect_back_to_back(False))
        without_giving_way.append(speed)
        runs_not += runs
    median = statistics.median
    return {"chat_tokens_per_s_alone": round(median(alone), 1),
            "chat_tokens_per_s_during_inspections": round(median(with_inspections), 1),
            "chat_ratio_during_inspections": round(median(with_inspections) / median(alone), 3),
            "chat_tokens_per_s_if_inspections_did_not_give_way": round(median(without_giving_way), 1),
            "chat_ratio_if_inspections_did_not_give_way": round(median(without_giving_way) / median(alone), 3),
            "inspections_during_3_replies": runs_giving_way,
            "inspections_during_3_replies_not_giving_way": runs_not}


def grid_payload(value) -> str | None:
    """The grid's packed weights (its value's "data", base64) anywhere in an event's output."""
    if isinstance(value, dict):
        if isinstance(value.get("data"), str) and "layers" in value:
            return value["data"]
        value = list(value.values())
    if isinstance(value, list):
        for item in value:
            found = grid_payload(item)
            if found is not None:
                return found
    return None


def tab_events(url: str) -> dict:
    """The tab's own events on the real app, over Gradio's queue as the page sends them: an inspection of a text
    whose pass is cached (the tab's server-side drawing of every view), and a switch to another head."""
    import time
    import uuid

    session = uuid.uuid4().hex[:12]
    look, show_head = event_index(url, "look"), event_index(url, "show_head")  # the Run button, the layer slider
    ok, output = queue_event(url, look, [TEXT, 18, 6, True], session)  # the pass, cached in the app afterwards
    if not ok:
        raise RuntimeError(f"the inside tab's inspection failed: {output}")
    begin = time.perf_counter()
    ok, output = queue_event(url, look, [TEXT, 18, 6, True], session)
    draw_s = time.perf_counter() - begin
    begin = time.perf_counter()
    switched, _ = queue_event(url, show_head, [None, 16, 0, True], session)  # the inspected text: session state
    head_s = time.perf_counter() - begin
    if not (ok and switched):
        raise RuntimeError("the inside tab's events failed")
    payload = grid_payload(output)
    # measured through the queue (Gradio's processing and the HTTP round trip included): before, chat.ui's
    # handlers were called in this process
    return {"tab_server_render_s": round(draw_s, 3), "tab_head_switch_s": round(head_s, 3),
            "grid_payload_kb": round(len(payload) / 1024, 1) if payload is not None else None}


def browser_render(url: str) -> dict:
    """The tab in Debian's Chromium (when Playwright and /usr/bin/chromium are there): the grid's drawing time as the
    page measures it (performance.now), a new inspection from click to drawn, and a thumbnail click to its head."""
    import shutil
    import time

    if shutil.which(CHROMIUM) is None:
        return {}
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return {}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
        page.set_default_timeout(120_000)
        page.goto(url)
        page.get_by_role("tab", name="Inside the model").click()
        page.locator("#inside-steps .steps").wait_for()
        grid_ms, inspect_ms, click_ms = [], [], []
        for n in range(3):
            stamp = page.locator("#inside-grid [data-stamp]").get_attribute("data-stamp")
            page.locator("#inside-text textarea").fill(f"({n}) {TEXT}")  # new first tokens: a new pass
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
        cells = page.locator("#inside-heatmap svg rect title").count()
        browser.close()
    return {"browser_grid_draw_ms": round(min(grid_ms), 1),
            "browser_inspect_click_to_drawn_ms": round(min(inspect_ms)),
            "browser_thumbnail_click_to_head_ms": round(min(click_ms)),
            "browser_heatmap_cells": cells}


def run(args: argparse.Namespace) -> dict:
    import statistics
    import time

    import torch

    from chat.llm import inside
    from chat.llm.tokenizer import ModelTokenizer

    loaded = chat_model()
    model = loaded.model
    ids = ModelTokenizer(loaded.tokenizer).encode(TEXT)[:inside.MAX_TOKENS]
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
    probes = {}
    for name in inside.PROBES:
        inside._PROBE_RESULTS.pop(model, None)
        begin = time.perf_counter()
        result = inside.head_scores(name, loaded)
        best = result.ranked[0]
        probes[name] = {"seconds": round(time.perf_counter() - begin, 2), "best": f"L{best.layer}H{best.head}",
                        "score": round(best.score, 3)}
    rss_before = rss_mb()
    for n in range(40):  # 40 sessions' worth of distinct texts
        inside.inspect_text(f"{n} {TEXT}", loaded)
    rss_after = rss_mb()
    chat = chat_during_inspections(loaded, ids) if loaded.fast is not None else {}
    with running_app() as (url, pid):
        wait_idle(pid)  # the app loads its chat model in the background: not while it is measured
        app = tab_events(url)
        browser = browser_render(url)
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
        **app,
        "probes": probes,
        "rss_growth_40_inspections_mb": round(rss_after - rss_before, 1),
        "inspections_kept": len(inside._CACHE),
        **chat,
        **browser,
        "torch_threads": torch.get_num_threads(),
    }
