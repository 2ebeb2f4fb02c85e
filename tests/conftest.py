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


@pytest.fixture(scope="session")
def kernels():
    """The fast decoder's C++ kernels, compiled into the test cache once (~15 s) and registered as
    torch.ops.chatlab.*."""
    from chat import fastpath

    path = fastpath.kernels_path()
    if not path.exists():
        fastpath.build_kernels(path)
    fastpath.load_kernels(path)
    return path


# --- OpenAI-compatible server (start) ---
LLAMA_KEY = "chatlab-test-key"  # the test server demands a key, so a wrong one is a real 401


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.fixture(scope="session")
def llama_server():
    """A real OpenAI-compatible server on 127.0.0.1: llama-cpp-python's, on the packaged SmolLM2 GGUF, with an API key
    (chat.remote.local_llama_server). Yields (chat.remote.Backend for it, the server's pid)."""
    from chat import remote

    python = remote.llama_python()
    if python is None:
        pytest.skip("no Python with llama-cpp-python[server]: set CHATLAB_LLAMA_PYTHON, or run bash .ci/run once "
                    "(it makes .venv-llama)")
    if not Path(python).exists():
        pytest.fail(f"CHATLAB_LLAMA_PYTHON={python} does not exist")
    try:
        with remote.local_llama_server(python, LLAMA_KEY) as found:
            yield found
    except RuntimeError as error:
        pytest.fail(str(error))
# --- OpenAI-compatible server (end) ---
