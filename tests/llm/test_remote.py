"""chat.llm.remote without a model server: URLs, whose key goes where, and the clear errors of a server that is down or
silent (real sockets on 127.0.0.1: a closed port, and a listener that never answers)."""
from __future__ import annotations

import socket

import pytest

import app
from chat.llm import remote
from chat.llm.params import GenerationParams
from chat.settings import ServerSettings, Settings


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # closed again when the block ends: nothing listens there


def test_a_bare_host_gets_v1_and_a_full_base_url_is_kept():
    assert remote.normalize_url("http://127.0.0.1:8080") == "http://127.0.0.1:8080/v1"
    assert remote.normalize_url(" http://127.0.0.1:8080/v1/ ") == "http://127.0.0.1:8080/v1"
    assert remote.normalize_url("https://api.example.com/openai/v1") == "https://api.example.com/openai/v1"
    assert remote.Backend("http://h:1/v1").root == "http://h:1"
    for bad in ("", "localhost:8080", "ftp://h/v1", "http://"):
        with pytest.raises(remote.RemoteError, match="not a server URL"):
            remote.normalize_url(bad)


def test_the_flags_and_the_variables_hf_chat_ui_uses_name_the_server():
    assert remote.configured(Settings.from_env({}).server) is None
    flags = app.parse_args(["--backend-url", "http://127.0.0.1:8080", "--backend-model", "qwen", "--backend-key", "k"],
                           Settings.from_env({}))
    assert remote.configured(flags.server) == remote.Backend("http://127.0.0.1:8080/v1", "qwen", "k")
    env = Settings.from_env({"OPENAI_BASE_URL": "http://127.0.0.1:8080", "OPENAI_API_KEY": "k",
                             "CHATLAB_BACKEND_MODEL": "qwen", "GRADIO_MCP_SERVER": "true"})
    assert remote.configured(env.server) == remote.configured(flags.server)
    assert app.parse_args([], env).mcp and app.parse_args([], env).server.url == "http://127.0.0.1:8080"


def test_the_configured_key_goes_only_to_the_configured_server():
    server = ServerSettings(url="http://10.0.0.5:8000/v1", key="operator-secret")
    assert remote.backend_for(server, "http://10.0.0.5:8000").key == "operator-secret"
    assert remote.backend_for(server, "http://evil.example.com/v1").key == ""
    assert remote.backend_for(server, "http://evil.example.com/v1", key="mine").key == "mine"


def test_a_server_that_is_down_is_named_in_the_error():
    backend = remote.Backend(f"http://127.0.0.1:{_closed_port()}/v1", "m")
    with pytest.raises(remote.RemoteError, match=r"Cannot reach the server at http://127\.0\.0\.1:\d+/v1"):
        remote.list_models(backend)
    with pytest.raises(remote.RemoteError, match="Cannot reach the server at"):
        remote.stream_chat([{"role": "user", "content": "Hi"}], GenerationParams(), backend)


def test_a_server_that_never_answers_times_out_with_its_url():
    with socket.socket() as listener:  # accepts connections (the kernel does) but never replies
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/v1"
        backend = remote.Backend(url, "m", timeout=0.5)
        with pytest.raises(remote.RemoteError, match=rf"The server at {url} did not answer within 0.5 s \(timeout\)"):
            remote.list_models(backend)
        with pytest.raises(remote.RemoteError, match=rf"{url} did not answer within 0.5 s"):
            remote.count_tokens(backend, "Hello")


def test_a_conversation_must_end_with_the_user_before_anything_is_sent():
    backend = remote.Backend(f"http://127.0.0.1:{_closed_port()}/v1", "m")
    with pytest.raises(ValueError, match="end with a user message"):
        remote.stream_chat([{"role": "assistant", "content": "Hi"}], GenerationParams(), backend)
    with pytest.raises(ValueError, match="temperature"):
        remote.stream_chat([{"role": "user", "content": "Hi"}], GenerationParams(temperature=9), backend)


def test_a_public_space_talks_only_to_its_configured_server():
    env = {"SPACE_ID": "someone/chatlab", "OPENAI_BASE_URL": "http://10.0.0.5:8000/v1"}
    server = Settings.from_env(env).server
    assert remote.backend_for(server, "http://10.0.0.5:8000/v1").url == "http://10.0.0.5:8000/v1"
    with pytest.raises(remote.RemoteError, match=r"only talks to the server it was started with .*169\.254"):
        remote.backend_for(server, "http://169.254.169.254/v1")
    allowed = Settings.from_env(env | {"CHATLAB_BACKEND_ANY_URL": "1"}).server
    assert remote.backend_for(allowed, "http://169.254.169.254/v1").key == ""


def test_the_tokens_row_is_absent_without_a_server_tokenizer():
    from chat.ui import tokens_tab

    down = ServerSettings(url=f"http://127.0.0.1:{_closed_port()}/v1")  # no server there
    assert tokens_tab.server_rows("Hello", down, None) == []
    assert tokens_tab.server_rows("Hello", ServerSettings(), None) == []
