"""Shared test set-up: ChatLab's caches go to one directory under the checkout, built once and reused by every test."""
from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("CHATLAB_CACHE_DIR", str(ROOT / ".cache" / "chatlab-test"))
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: end-to-end and browser tests (tests/e2e); `make test` runs them too")


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def chat_model():
    """The real SmolLM2-135M-Instruct, loaded once for the whole run (converted into the test cache the first time)."""
    from chat import models

    return models.get_model()
