"""End-to-end fixtures: the whole app launched in-process, a gradio_client for it, and Debian's Chromium via Playwright."""
from __future__ import annotations

import shutil

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


@pytest.fixture(scope="session")
def app_url():
    import app
    from chat.local_server import free_port

    demo = app.build_app()
    _, url, _ = demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True,
                            quiet=True, **app.launch_options())
    yield url.rstrip("/")
    demo.close()


@pytest.fixture(scope="session")
def app_client(app_url):
    from gradio_client import Client

    return Client(app_url, verbose=False)


@pytest.fixture(scope="session")
def browser():
    if shutil.which(CHROMIUM) is None:
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (never `playwright install`)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield browser
        browser.close()


def _page(browser, locale: str):
    context = browser.new_context(locale=locale, viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(30_000)
    return context, page


@pytest.fixture
def page(browser):
    context, page = _page(browser, "en-US")
    yield page
    context.close()


@pytest.fixture
def page_zh(browser):
    context, page = _page(browser, "zh-CN")
    yield page
    context.close()
