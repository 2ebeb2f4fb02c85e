"""Human feedback end to end on the real SmolLM2 weights: a preset's reward model ranks held-out pairs and a short
DPO run moves the answers; the tab in a real Chromium (pick answers, reward model, DPO curves), also in Chinese."""
from __future__ import annotations

import re

import pytest

pytestmark = pytest.mark.e2e

# the preset's 6 held-out prompts and these 2 are answered in one batch of 8
UNSEEN = [("What is the capital of Canada?", ["Ottawa"]), ("Why do leaves change colour in autumn?", None)]


def test_the_tab_collects_a_preference_fits_a_reward_model_and_dpo_shortens_a_presenters_prompts(app_url, page,
                                                                                               chat_model):
    """The concise preset through the tab, as a presenter runs it: one pick of their own added to its pairs, the
    reward model, DPO to the end, then answers before and after on the preset's held-out prompts and on prompts the
    presenter typed, which no preset shows: shorter, the fact kept, no loop."""
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
    page.locator("#feedback-own-prompts textarea").fill("\n".join(q for q, _ in UNSEEN))
    page.locator("#feedback-start").click()
    page.wait_for_function("() => +document.querySelector('#feedback-status-line').dataset.step >= 2",
                           timeout=240_000)
    page.wait_for_function("() => document.querySelectorAll('#feedback-rewards-plot svg path, "
                           "#feedback-rewards-plot canvas').length > 0")
    assert "margin" in page.locator("#feedback-stats").inner_text()
    page.locator("#feedback-status-line[data-status=done]").wait_for(timeout=400_000)
    compare = page.locator("#feedback-compare")
    assert compare.locator("tr.feedback-row").count() == 6 + len(UNSEEN)  # the preset's held-out prompts + yours
    own = compare.locator("tr.feedback-own")
    assert own.count() == len(UNSEEN)
    before = sum(len(own.nth(i).locator("td").nth(1).inner_text()) for i in range(len(UNSEEN)))
    after = sum(len(own.nth(i).locator("td").nth(2).inner_text()) for i in range(len(UNSEEN)))
    assert after < 0.85 * before  # the preference reached prompts no preset shows
    assert "Ottawa" in own.nth(0).locator("td").nth(2).inner_text()  # the fact kept
    rows = compare.locator("tr.feedback-row")
    assert not any("🔁" in rows.nth(i).locator("td").nth(2).inner_text()  # and no answer loops (some did before)
                   for i in range(rows.count()))
    assert page.locator("#feedback-carry").get_attribute("data-carried") == "yes"
    assert float(compare.get_attribute("data-mean-after")) < float(compare.get_attribute("data-mean-before"))


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
