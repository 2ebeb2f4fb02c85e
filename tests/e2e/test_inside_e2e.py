"""The Inside-the-model tab end to end on the real SmolLM2 weights: its API through gradio_client, the service next to
a chat reply, and the tab in a real Chromium, in English and in Chinese."""
from __future__ import annotations

import threading

import pytest
import torch
from gradio_client.exceptions import AppError

from chat.llm import generation, inside
from chat.llm.params import GenerationParams

pytestmark = pytest.mark.e2e

TEXT = "When Mary and John went to the store, John gave a drink to"


def test_attention_rows_sum_to_one_and_nothing_looks_ahead(app_client, chat_model):
    for layer, head in ((0, 0), (18, 6), (29, 8)):
        found = app_client.predict(TEXT, layer, head, False, api_name="/attention")
        matrix = torch.tensor(found["matrix"])
        n = len(found["tokens"])
        assert matrix.shape == (n, n) and n == len(found["ids"]) and found["cut"] == 0
        assert torch.allclose(matrix.sum(-1), torch.ones(n), atol=1e-5)
        assert matrix.triu(1).abs().max() == 0 and matrix.min() >= 0
        assert found["kv_head"] == head // 3
    hidden = torch.tensor(app_client.predict(TEXT, 18, 6, True, api_name="/attention")["matrix"])
    assert hidden[:, 0].abs().max() == 0 and torch.allclose(hidden[1:].sum(-1), torch.ones(n - 1), atol=1e-5)


def test_the_logit_lens_last_layer_is_the_models_top_1(app_client, chat_model):
    lens = app_client.predict(TEXT, api_name="/logit_lens")
    assert len(lens["layers"]) == 30
    ids = chat_model.tokenizer(TEXT, add_special_tokens=False)["input_ids"]
    with torch.inference_mode():
        top = int(chat_model.model(input_ids=torch.tensor([ids])).logits[0, -1].argmax())
    assert lens["layers"][-1]["top"][0]["id"] == lens["answer"]["id"] == top
    assert lens["answer"]["token"] == "␣Mary"
    assert lens["layers"][0]["answer_prob"] < lens["layers"][-1]["answer_prob"]  # the answer forms with depth


def test_the_induction_probe_finds_an_induction_head(app_client, chat_model):
    ranked = app_client.predict("induction", api_name="/head_scores")
    best = ranked["heads"][0]
    assert best["score"] >= 0.5 and best["labelled"] and len(ranked["heads"]) == 270
    assert [h["score"] for h in ranked["heads"]] == sorted((h["score"] for h in ranked["heads"]), reverse=True)


@pytest.mark.parametrize("args, message", [
    (("", 0, 0, False), "Type a text"), (("Hello there", 30, 0, False), "layer must be from 0 to 29"),
    (("Hello there", 0, 9, False), "head must be from 0 to 8"), (("Hello there", -1, 0, False), "layer must be"),
])
def test_bad_input_gets_a_clear_error(app_client, chat_model, args, message):
    with pytest.raises(AppError, match=message):
        app_client.predict(*args, api_name="/attention")


def test_a_long_text_is_cut_to_64_tokens_and_says_so(app_client, chat_model):
    found = app_client.predict("one two three four five six seven eight nine ten " * 20, 0, 0, False,
                               api_name="/attention")
    assert len(found["tokens"]) == 64 and found["cut"] > 0


def test_one_head_step_by_step_has_the_full_pass_numbers(chat_model):
    found = inside.inspect_text(TEXT, chat_model)
    steps = inside.head_steps(chat_model, found, 16, 0)
    assert steps.kv_head == 0 and steps.sharing == [0, 1, 2] and steps.q.shape == (8, 64)
    assert torch.allclose(steps.weights, found.attention[16, 0, :8, :8], atol=1e-5)


def test_an_inspection_during_a_chat_reply_waits_for_it(chat_model):
    params = GenerationParams(temperature=0, max_new_tokens=48, repetition_penalty=1.0)
    stream = generation.stream_chat([{"role": "user", "content": "Count from one to twenty in words."}], params,
                                    chat_model)
    finished = {}

    def look():
        inside.inspect_text("A text inspected while the chat model answers.", chat_model)
        finished["tokens"] = stream._streamer.tokens
        finished["replies"] = chat_model.replies.active

    deltas = iter(stream)
    next(deltas)  # the reply is being generated
    thread = threading.Thread(target=look)
    thread.start()
    "".join(deltas)
    thread.join(60)
    assert stream.stats.new_tokens > 1
    assert finished == {"tokens": stream.stats.new_tokens, "replies": 0}  # done only after the reply's last token


def _open_tab(page, app_url, name):
    page.goto(app_url)
    page.get_by_role("tab", name=name).click()
    page.locator("#inside-steps .steps").wait_for(timeout=120_000)


def _click_thumbnail(page, layer, head):
    cell, gap, left, top = 28, 3, 34, 34  # inside_tab.GRID_CELL and the grid's drawing constants
    page.locator("#inside-grid canvas").click(position={"x": left + layer * (cell + gap) + cell / 2,
                                                        "y": top + head * (cell + gap) + cell / 2})


def test_pick_a_head_click_a_thumbnail_and_see_it_step_by_step(app_url, page, chat_model):
    _open_tab(page, app_url, "Inside the model")
    assert "the model would continue with" in page.locator("#inside-status").inner_text()
    page.locator("#inside-grid canvas[style*='width']").wait_for()
    layer = page.locator("#inside-layer input[type=number]")
    layer.fill("16")
    layer.press("Enter")
    page.locator("#inside-head").get_by_text("0", exact=True).click()
    page.locator("#inside-steps .steps[data-layer='16'][data-head='0']").wait_for()
    assert page.locator("#inside-head-title").inner_text().startswith("Layer 16 · head 0")
    _click_thumbnail(page, 17, 4)
    page.locator("#inside-steps .steps[data-layer='17'][data-head='4']").wait_for()
    assert page.locator("#inside-head-title").inner_text().startswith("Layer 17 · head 4")
    assert layer.input_value() == "17"
    steps = page.locator("#inside-steps").inner_text()
    assert "Softmax along each row" in steps and "−∞" in steps and "share key/value head 1" in steps
    assert page.locator("#inside-lines svg line").count() > 0
    assert page.locator("#inside-heatmap svg rect title").count() == 14 * 15 // 2  # 14 tokens
    assert page.locator("#inside-lens tr").count() == 31
    page.locator("#inside-probe-induction").click()
    page.locator("#inside-probe-note").get_by_text("layer 18 · head 6").wait_for(timeout=60_000)
    ranked = page.locator("#inside-probe-table .body-cell").filter(has_text="induction head")
    ranked.first.click()  # rank 1: layer 18, head 6
    page.locator("#inside-steps .steps[data-layer='18'][data-head='6']").wait_for()
    page.locator("#inside-take").click()  # the Next-token tab's prompt
    page.locator("#inside-status").get_by_text("5 tokens").wait_for()
    assert page.locator("#inside-text textarea").input_value() == "The capital of France is"


def test_the_tab_speaks_chinese_to_a_chinese_browser(app_url, page_zh, chat_model):
    _open_tab(page_zh, app_url, "模型内部 Inside the model")
    assert "模型接下来会写" in page_zh.locator("#inside-status").inner_text()
    _click_thumbnail(page_zh, 16, 0)
    page_zh.locator("#inside-steps .steps[data-layer='16'][data-head='0']").wait_for()
    assert page_zh.locator("#inside-head-title").inner_text().startswith("第 16 层 · 第 0 个头")
    steps = page_zh.locator("#inside-steps").inner_text()
    assert "每行做 softmax" in steps and "分组查询注意力" in steps
    assert page_zh.get_by_text("逐步演算一个头").is_visible()
    page_zh.locator("#inside-text textarea").fill("")
    page_zh.locator("#inside-run").click()
    page_zh.get_by_text("请先输入文本").first.wait_for()
