"""Fine-tuning end to end on the real SmolLM2 weights: the identity preset changes who the model says it is; the tab
in a real Chromium (start, the curve grows, stop, before/after shown, chat with the tuned model), also in Chinese."""
from __future__ import annotations

import pytest

from chat.finetune import data as sft_data, train as sft
from chat.llm import backends, prompt as prompts
from chat.training import run as runs
from chat.training.answers import greedy_answers

pytestmark = pytest.mark.e2e


def test_a_short_identity_run_changes_who_the_model_says_it_is(chat_model):
    preset = sft_data.preset("identity", "Bartholomew")  # not the default name, and several tokens long
    unseen = "Please state your name."  # in neither the demonstrations nor the tab's held-out list
    assert unseen not in {p.prompt for p in preset.pairs} | set(preset.held_out)
    run = sft.start_run(preset.pairs, "", preset.settings, chat_model, preset_key="identity", name="Bartholomew",
                        questions=sft_data.preset_questions(preset) + [("held_out", unseen, None)],
                        expect=preset.expect)
    run.wait(600)
    assert run.status == "done", run.error
    assert run.last("loss") < 0.6 * run.first("loss")
    held = [r for r in run.comparisons if r["kind"] == "held_out"]
    controls = [r for r in run.comparisons if r["kind"] == "control"]
    # questions it was never trained on now get the new name; before, none did
    assert not any(r["before_ok"] for r in held)
    assert sum(r["after_ok"] for r in held) >= len(held) - 1, held
    # and unrelated questions keep (nearly all) their right answers
    assert sum(r["after_ok"] for r in controls) >= sum(r["before_ok"] for r in controls) - 1, controls
    # the Chat tab's model is untouched: the original still says it is SmolLM
    original = greedy_answers(chat_model.model, chat_model.tokenizer, [prompts.conversation("What is your name?")],
                              24)[0]
    assert "Bartholomew" not in original


def test_the_api_fine_tunes_for_its_session_refuses_a_second_run_and_chats_with_the_result(app_url, chat_model):
    import json
    import time

    from gradio_client import Client
    from gradio_client.exceptions import AppError

    first, second = Client(app_url, verbose=False), Client(app_url, verbose=False)
    pairs = "".join(json.dumps({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]})
                    + "\n" for q, a in [("Who are you?", "I am Quill."), ("What is your name?", "My name is Quill.")])
    job = first.submit("custom", "", pairs, 3, 60, api_name="/finetune")
    while not runs.holder() and not job.done():
        time.sleep(0.05)
    with pytest.raises(AppError, match="one run trains at a time"):
        second.predict("identity", "Nova", "", 2, 30, api_name="/finetune")
    result = job.result()
    assert result["status"] == "done" and result["steps"] == 3 and result["examples"] == 2
    with pytest.raises(AppError, match="No fine-tuned model in this session"):  # the other client trained nothing
        second.predict("Who are you?", [], "", 0.0, 0.9, 50, 16, 1.0, -1, "sft", api_name="/chat")
    answer = first.predict("Who are you?", [], "", 0.0, 0.9, 50, 16, 1.0, -1, "sft", api_name="/chat")
    assert isinstance(answer, str) and answer
    with pytest.raises(AppError, match="at least 2"):
        first.predict("custom", "", pairs.splitlines()[0], 2, 30, api_name="/finetune")


def _set_number(page, elem_id: str, value) -> None:
    box = page.locator(f"#{elem_id} input[type=number]")
    box.fill(str(value))
    box.press("Enter")


def test_the_tab_trains_live_stops_compares_and_the_chat_tab_uses_the_tuned_model(app_url, page, chat_model):
    page.goto(app_url)
    page.get_by_role("tab", name="Fine-tune").click()
    page.locator("#finetune-status-line[data-status=idle]").wait_for()
    assert page.locator("#finetune-table").get_by_text("Who are you?").count() >= 1  # the identity preset is in
    assert "__i18n__" not in page.locator("#finetune-table").inner_html()  # headers are text, not I18n metadata
    page.get_by_text("Training settings").click()
    _set_number(page, "finetune-steps", 40)
    page.locator("#finetune-start").click()
    page.locator("#finetune-status-line[data-status=running]").wait_for(timeout=120_000)
    page.wait_for_function("() => +document.querySelector('#finetune-status-line').dataset.step >= 3",
                           timeout=180_000)
    page.wait_for_function("() => document.querySelectorAll('#finetune-plot svg path, #finetune-plot canvas')"
                           ".length > 0")
    assert "steps/s" in page.locator("#finetune-stats").inner_text()
    # which tokens count in the loss: the response is highlighted, the prompt is context
    mask = page.locator("#finetune-mask")
    assert "counted in the loss" in mask.inner_text() and "context only" in mask.inner_text()
    page.locator("#finetune-stop").click()
    page.locator("#finetune-status-line[data-status=stopped]").wait_for(timeout=180_000)
    rows = page.locator("#finetune-compare tr.finetune-row")
    assert rows.count() == 8  # the preset's 4 held-out and 4 control questions, before and after
    assert page.locator("#finetune-compare tr[data-kind=control]").count() == 4
    with page.expect_download() as download:
        page.locator("#finetune-download").click()
    assert download.value.suggested_filename.endswith(".zip")
    # the Chat tab can now answer with this session's fine-tuned model
    page.get_by_role("tab", name="Chat").click()
    page.locator("#chat-model").get_by_text("Fine-tuned (SFT)").click()
    page.locator("#chat-input textarea").fill("Who are you?")
    page.locator("#chat-input textarea").press("Enter")
    page.locator("#chat-chatbot").get_by_text("tokens/s").wait_for(timeout=180_000)


def test_closing_the_browser_mid_run_stops_training_and_frees_it(app_url, browser, chat_model):
    import time

    context = browser.new_context(locale="en-US")
    page = context.new_page()
    page.goto(app_url)
    page.get_by_role("tab", name="Fine-tune").click()
    page.locator("#finetune-start").click()
    page.locator("#finetune-status-line[data-status=running]").wait_for(timeout=120_000)
    run = runs.holder()
    assert run is not None and run.running
    context.close()  # the user closes the tab
    deadline = time.monotonic() + 90
    while run.thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not run.thread.is_alive() and run.status == "stopped" and run.abandoned
    assert run.step < run.max_steps and run.comparisons == []  # no comparison computed for nobody
    assert runs.holder() is None and backends.TUNED.get(run.session, "sft") is None


def test_the_chat_tab_says_when_there_is_no_tuned_model_yet(app_url, page, chat_model):
    page.goto(app_url)
    page.get_by_role("tab", name="Chat").click()
    page.locator("#chat-model").get_by_text("Aligned (DPO)").click()
    page.locator("#chat-input textarea").fill("Hello")
    page.locator("#chat-input textarea").press("Enter")
    page.get_by_text("No aligned model in this session yet").first.wait_for(timeout=60_000)


def test_a_bad_demonstration_table_gets_a_clear_message(app_url, page):
    page.goto(app_url)
    page.get_by_role("tab", name="Fine-tune").click()
    with page.expect_file_chooser() as chooser:
        page.locator("#finetune-import").click()
    chooser.value.set_files(files=[{"name": "bad.jsonl", "mimeType": "application/json",
                                    "buffer": b'{"text": "not chat messages"}\n'}])
    page.get_by_text("This file is not what ChatLab reads (line 1)").first.wait_for()
    assert page.locator("#finetune-table").get_by_text("Who are you?").count() >= 1  # the table is not lost


def test_the_tab_speaks_chinese_to_a_chinese_browser(app_url, page_zh):
    page_zh.goto(app_url)
    page_zh.get_by_role("tab", name="监督微调 SFT").click()
    page_zh.get_by_role("button", name="开始微调").wait_for()
    page_zh.get_by_text("预训练 → 监督微调（SFT）→ 人类反馈强化学习（RLHF）", exact=False).first.wait_for()
    page_zh.locator("#finetune-status-line").get_by_text("尚未训练").wait_for()
