"""Human feedback end to end on the real SmolLM2 weights: a preset's reward model ranks held-out pairs and a short
DPO run moves the answers; the tab in a real Chromium (pick answers, reward model, DPO curves), also in Chinese."""
from __future__ import annotations

import re
import statistics

import pytest

from chat.feedback import dpo, preferences, reward

pytestmark = pytest.mark.e2e


def test_the_concise_preset_learns_its_preference_and_dpo_shortens_answers(chat_model):
    preset = preferences.preset("concise")
    rm = dpo.train_reward_model(preset.pairs, "", chat_model)
    assert reward.accuracy(rm, chat_model.model, chat_model.tokenizer,
                           preferences.triples(preset.held_out_pairs)) >= 0.85
    questions = preset.held_out[:4]
    run = dpo.start_run(preset.pairs, "", preset.settings, chat_model, preset_key="concise", reward_model=rm,
                        questions=questions)
    run.wait(600)
    assert run.status == "done", run.error
    assert run.last("rewards/margins") > 0 and run.last("rewards/accuracies") >= 0.75
    assert run.last("kl") > 0
    before = statistics.mean(r["before_chars"] for r in run.comparisons)
    after = statistics.mean(r["after_chars"] for r in run.comparisons)
    assert after < 0.85 * before, run.comparisons  # the behaviour measurably moved toward the preference
    # and the reward model agrees the new answers are more what was preferred
    assert statistics.mean(r["after_reward"] for r in run.comparisons) > statistics.mean(
        r["before_reward"] for r in run.comparisons)


def test_the_tab_collects_a_preference_fits_a_reward_model_and_runs_dpo(app_url, page, chat_model):
    page.goto(app_url)
    page.get_by_role("tab", name="Human feedback").click()
    page.locator("#feedback-status-line[data-status=idle]").wait_for()
    assert "__i18n__" not in page.locator("#feedback-table").inner_html()  # headers are text, not I18n metadata
    page.locator("#feedback-prompt textarea").fill("Give me a tip for a rainy day.")
    page.locator("#feedback-ask").click()
    page.wait_for_function("() => document.querySelector('#feedback-answer-b textarea').value.length > 0",
                           timeout=120_000)
    assert page.locator("#feedback-answer-a textarea").input_value() != page.locator(
        "#feedback-answer-b textarea").input_value()
    page.locator("#feedback-pick-a").click()
    page.get_by_text(re.compile(r"Added: \d+ pairs now")).first.wait_for()
    page.locator("#feedback-table").get_by_text("Give me a tip for a rainy day.").first.wait_for()  # on top
    page.locator("#feedback-train-rm").click()
    page.locator("#feedback-rm-status[data-trained='1']").wait_for(timeout=120_000)
    assert "accuracy" in page.locator("#feedback-rm-status").inner_text()
    page.locator("#feedback-steps input[type=number]").fill("30")
    page.locator("#feedback-steps input[type=number]").press("Enter")
    page.locator("#feedback-start").click()
    page.wait_for_function("() => +document.querySelector('#feedback-status-line').dataset.step >= 2",
                           timeout=240_000)
    page.wait_for_function("() => document.querySelectorAll('#feedback-rewards-plot svg path, "
                           "#feedback-rewards-plot canvas').length > 0")
    assert "margin" in page.locator("#feedback-stats").inner_text()
    page.locator("#feedback-stop").click()
    page.locator("#feedback-status-line[data-status=stopped]").wait_for(timeout=240_000)
    assert page.locator("#feedback-compare tr.feedback-row").count() >= 4
    assert "reward" in page.locator("#feedback-compare").inner_text()


def test_the_api_runs_rlhf_for_its_session_and_chats_with_the_aligned_model(app_client, chat_model):
    import json

    rows = [{"prompt": f"Name a colour, {i}.", "chosen": "Blue! 💙", "rejected": "Blue."} for i in range(4)]
    jsonl = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    result = app_client.predict("custom", jsonl, 2, 60, api_name="/feedback")
    assert result["status"] == "done" and result["dpo_steps"] == 2 and result["pairs"] == 4
    assert result["reward_model_train_accuracy"] == 1.0 and result["reward_model_accuracy"] is None
    answer = app_client.predict("Name a colour.", [], "", 0.0, 0.9, 50, 16, 1.0, -1, "dpo", api_name="/chat")
    assert isinstance(answer, str) and answer
    same = json.dumps({"prompt": "x", "chosen": "y", "rejected": "y"}) + "\n"
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="the same"):
        app_client.predict("custom", jsonl + same, 2, 60, api_name="/feedback")


def test_the_tab_speaks_chinese_to_a_chinese_browser(app_url, page_zh):
    page_zh.goto(app_url)
    page_zh.get_by_role("tab", name="人类反馈 RLHF").click()
    page_zh.get_by_text("训练奖励模型").wait_for()
    page_zh.get_by_text("A 更好").wait_for()
    page_zh.locator("#feedback-status-line").get_by_text("尚未训练").wait_for()
