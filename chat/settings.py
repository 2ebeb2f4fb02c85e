"""ChatLab's settings: every flag and environment variable, read once into one object that is passed down.

`app.py` builds a `Settings` from its flags over `Settings.from_env()`; the command-line tools build theirs from the
environment alone. Services take the part they need as an argument (`get_model(settings.model)`); nothing reads the
environment at import time, and nothing writes it. A leaf module: it imports nothing of ChatLab's.

| variable | setting |
|---|---|
| CHATLAB_MODEL, CHATLAB_FAST (0 = --plain), CHATLAB_DTYPE | `model` |
| CHATLAB_MAX_BATCH, CHATLAB_MAX_WAITING, CHATLAB_NEXT_TOKEN_CACHE_MB | how the model is served: `model.*` |
| OPENAI_BASE_URL, CHATLAB_BACKEND_MODEL, OPENAI_API_KEY, CHATLAB_BACKEND_TIMEOUT, CHATLAB_BACKEND_ANY_URL | `server` |
| CHATLAB_MNIST_DIR | `mnist_dir` |
| CHATLAB_QUEUE_MAX_SIZE, CHATLAB_LIMIT_<KIND>, CHATLAB_MAX_FILE_SIZE | the server's limits |
| GRADIO_SERVER_NAME, GRADIO_SERVER_PORT, GRADIO_MCP_SERVER, SPACE_ID | where and how the app serves |

The cache directory ($CHATLAB_CACHE_DIR) is read by `chat.paths.cache_dir`, the one place every tool finds it.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

DEFAULT_MODEL = "smollm2-135m-instruct"


@dataclass(frozen=True)
class ModelSettings:
    """Which chat model, and how it runs and is served."""

    name: str = DEFAULT_MODEL  # a registry name, a local model folder, a .gguf file, or a hub id (online only)
    fast: bool = True  # the fast CPU decoder (False: transformers' generate only, --plain)
    dtype: str | None = None  # "float32" or "bfloat16" forces it; None measures the faster one on a CPU
    max_batch: int = 8  # sequences the serving engine decodes at once (its KV cache slots)
    max_waiting: int = 16  # requests waiting for a slot; more are told "busy: you are number N in line"
    next_token_cache_mb: int = 384  # KV caches of all next-token sessions together (one 8k context of SmolLM2)


@dataclass(frozen=True)
class ServerSettings:
    """An OpenAI-compatible server for Chat and Next token (--backend-url), or none."""

    url: str = ""  # e.g. http://127.0.0.1:8080/v1 ("" = none)
    model: str = ""  # "" = the server's first
    key: str = ""  # its API key ("" = none)
    timeout: float = 60.0  # seconds without an answer (or a next chunk) before giving up
    any_url: bool = True  # visitors may type another server's URL (not on a public Space, unless allowed)


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 7860
    share: bool = False  # also a public gradio.live link
    mcp: bool = False  # serve the public API as MCP tools too
    model: ModelSettings = field(default_factory=ModelSettings)
    server: ServerSettings = field(default_factory=ServerSettings)
    mnist_dir: str | None = None  # full MNIST IDX files (None: the 5,000 packaged digits)
    queue_max_size: int = 64  # requests the queue holds (waiting + running); beyond it "the queue is full"
    limits: Mapping[str, int] = field(default_factory=dict)  # a kind of heavy work -> its concurrency limit
    max_file_size: str = "10mb"  # uploads (checkpoints, images): bigger is refused with HTTP 413
    on_space: bool = False  # running as a Hugging Face Space (SPACE_ID)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """The settings the environment gives (the defaults where it says nothing)."""
        env = os.environ if env is None else env

        def number(name: str, default, kind=int):
            value = env.get(name, "").strip()
            try:
                return kind(value) if value else default
            except ValueError:
                raise ValueError(f"${name} must be a number, got {value!r}") from None

        on_space = bool(env.get("SPACE_ID"))
        model = ModelSettings(
            name=env.get("CHATLAB_MODEL", "").strip() or DEFAULT_MODEL,
            fast=env.get("CHATLAB_FAST", "1").strip().lower() not in ("0", "false", "no", "off"),
            dtype=env.get("CHATLAB_DTYPE") if env.get("CHATLAB_DTYPE") in ("float32", "bfloat16") else None,
            max_batch=number("CHATLAB_MAX_BATCH", ModelSettings.max_batch),
            max_waiting=number("CHATLAB_MAX_WAITING", ModelSettings.max_waiting),
            next_token_cache_mb=number("CHATLAB_NEXT_TOKEN_CACHE_MB", ModelSettings.next_token_cache_mb))
        server = ServerSettings(
            url=env.get("OPENAI_BASE_URL", "").strip(), model=env.get("CHATLAB_BACKEND_MODEL", "").strip(),
            key=env.get("OPENAI_API_KEY", "").strip(),
            timeout=number("CHATLAB_BACKEND_TIMEOUT", ServerSettings.timeout, float),
            any_url=not on_space or env.get("CHATLAB_BACKEND_ANY_URL") == "1")
        limits = {name[len("CHATLAB_LIMIT_"):].lower().replace("_", "-"): number(name, 0)
                  for name in env if name.startswith("CHATLAB_LIMIT_")}
        return cls(
            host=env.get("GRADIO_SERVER_NAME", cls.host), port=number("GRADIO_SERVER_PORT", cls.port),
            mcp=env.get("GRADIO_MCP_SERVER", "").lower() in ("1", "true", "yes"), model=model, server=server,
            mnist_dir=env.get("CHATLAB_MNIST_DIR") or None,
            queue_max_size=number("CHATLAB_QUEUE_MAX_SIZE", cls.queue_max_size),
            limits=limits,
            max_file_size=env.get("CHATLAB_MAX_FILE_SIZE", cls.max_file_size), on_space=on_space)
