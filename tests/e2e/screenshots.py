"""README screenshots: the real app in Debian's Chromium, one per tab, after a short realistic interaction.

`make screenshots` (or `python -m tests.e2e.screenshots [TAB ...] [--zh]`) writes assets/<tab>.png; --zh also writes the
Tokens and Inside tabs asked for in Chinese (assets/tokens_zh.png, assets/inside_zh.png). Needs fonts-noto-cjk and
fonts-noto-color-emoji for the Chinese and emoji.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from tests.e2e.conftest import CHROMIUM, CHROMIUM_FLAGS

ASSETS = Path(__file__).resolve().parents[2] / "assets"


def tokens(page):
    page.locator("#tokens-text textarea").fill("ChatGPT 把文本切成词元 (tokens): 这是一段示例文本。 Emoji 🎉 cost more!")
    page.locator("#tokens-show-ids input").check()
    page.locator("#tokens-pane-gpt2").get_by_text("gpt2 ·").wait_for()
    time.sleep(1.5)


def chat(page):
    page.locator("#chat-input textarea").fill("Explain what a token is in two sentences.")
    page.locator("#chat-input textarea").press("Enter")
    page.locator("#chat-chatbot").get_by_text("tokens/s").wait_for(timeout=180_000)


def next_token(page):
    page.locator("#next-candidates label").first.wait_for(timeout=60_000)
    for _ in range(3):
        page.locator("#next-greedy").click()
        time.sleep(1.5)
    page.locator("#next-temperature input[type=number]").fill("1.6")
    page.locator("#next-temperature input[type=number]").press("Enter")
    page.locator("#next-top-k input[type=number]").fill("8")
    page.locator("#next-top-k input[type=number]").press("Enter")
    time.sleep(3)


def inside(page):
    page.locator("#inside-steps .steps").wait_for(timeout=120_000)
    page.locator("#inside-text textarea").fill("The cat sat on the mat. The dog sat on the rug. The cat sat on the")
    page.locator("#inside-run").click()
    # the new text's "19 tokens" / "19 个词元" in the status
    page.wait_for_function("() => /^19\\D/.test(document.querySelector('#inside-status strong')?.textContent)")
    page.locator("#inside-probe-induction").click()
    page.locator("#inside-probe-table .body-cell").first.wait_for(timeout=60_000)
    time.sleep(2)


def mnist(page):
    page.locator("#mnist-start").click()
    time.sleep(25)
    page.locator("#mnist-stop").click()
    time.sleep(4)


def tinygpt(page):
    page.locator("#tinygpt-start").click()
    time.sleep(40)
    page.locator("#tinygpt-stop").click()
    time.sleep(4)


def finetune(page):
    """The identity preset trained to the end: loss curve, loss mask, and the before/after table."""
    page.locator("#finetune-start").click()
    page.locator("#finetune-status-line[data-status=done]").wait_for(timeout=400_000)
    time.sleep(2)


def feedback(page):
    """The concise preset: a pair of answers to pick from, the reward model, then DPO to the end."""
    page.locator("#feedback-train-rm").click()
    page.locator("#feedback-rm-status[data-trained='1']").wait_for(timeout=180_000)
    page.locator("#feedback-start").click()
    page.locator("#feedback-status-line[data-status=done]").wait_for(timeout=500_000)
    page.locator("#feedback-prompt textarea").fill("Give me a tip for a rainy day.")
    page.locator("#feedback-ask").click()
    page.wait_for_function("() => document.querySelector('#feedback-answer-b textarea').value.length > 0",
                           timeout=180_000)
    time.sleep(2)


def chat_settings(page):
    """The Chat tab's generation settings: the model card's defaults and what each knob does to the answers."""
    page.get_by_text("Generation settings").or_(page.get_by_text("生成设置")).first.click()
    page.locator("#chat-defaults-note").wait_for()
    time.sleep(1.5)


TABS = {"tokens": tokens, "next_token": next_token, "inside": inside, "chat": chat, "tinygpt": tinygpt,
        "finetune": finetune, "feedback": feedback, "mnist": mnist}
EXTRA = {"chat_settings": ("chat", chat_settings)}  # shots of a tab in another state: name -> (tab, action)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tabs", nargs="*", default=list(TABS), help=f"tabs to shoot (default: all of {list(TABS)}; "
                        f"also {list(EXTRA)})")
    parser.add_argument("--zh", action="store_true",
                        help="also shoot the Tokens and Inside tabs (those asked for, and any EXTRA shot) in Chinese")
    args = parser.parse_args(argv)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import app
    from chat.llm import models
    from chat.llm.fastpath import package
    from chat.local_server import free_port
    from playwright.sync_api import sync_playwright

    loaded = models.get_model()
    if loaded.fast is None:  # as `make run` does in the background: the Chat tab shows the fast decoder's speed
        loaded.fast = package.prepare_decoder(loaded.model, loaded.device, print)
    port = free_port()
    demo = app.build_app()
    _, url, _ = demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                            **app.launch_options())
    ASSETS.mkdir(exist_ok=True)
    shots = [(tab, "en-US", tab) for tab in args.tabs]
    shots += [(tab, "zh-CN", f"{tab}_zh") for tab in ("tokens", "inside") if tab in args.tabs] if args.zh else []
    shots += [(tab, "zh-CN", f"{tab}_zh") for tab in args.tabs if tab in EXTRA and args.zh]
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
            for tab, locale, name in shots:
                context = browser.new_context(locale=locale, viewport={"width": 1280, "height": 900}, reduced_motion="reduce")
                page = context.new_page()
                page.set_default_timeout(60_000)
                page.goto(url)
                tab_id, action = EXTRA.get(tab, (tab, TABS.get(tab)))
                page.locator(f"button[data-tab-id={tab_id}]").click()
                time.sleep(2)
                action(page)
                page.screenshot(path=str(ASSETS / f"{name}.png"), full_page=True)
                print(f"wrote assets/{name}.png")
                context.close()
            browser.close()
    finally:
        demo.close()


if __name__ == "__main__":
    main()
