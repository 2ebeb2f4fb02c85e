"""The chat backend interface: every model the Chat and Next-token tabs talk to answers the same calls, so no tab
branches on which kind of model it is.

- `LocalBackend`: a model in this process, the shared chat model or a session's tuned copy (fine-tuned by SFT,
  aligned by DPO: a LoRA adapter on the chat model's own weights, published here by chat.training).
- `ServerBackend`: any OpenAI-compatible server (chat.llm.remote).
`backend_for(variant, ...)` picks one: "original", "sft", "dpo" or "server". A backend streams replies
(`stream_chat`: text deltas, `cancel()`, `stats`, the `prompt` sent) and opens next-token sessions.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Protocol

import cachetools

from chat.llm import generation, remote
from chat.llm.models import LoadedModel, get_model
from chat.llm.next_token import LocalSession, NextTokenSession
from chat.llm.params import GenerationParams
from chat.llm.prompt import Prompt
from chat.settings import ModelSettings, ServerSettings

VARIANTS = ("original", "sft", "dpo", "server")  # the chat model, this session's tuned copies, or a server


class ReplyStream(Protocol):
    """A reply being written: iterate it for text deltas ("" while waiting); `cancel()` stops it from any thread."""

    prompt: Prompt  # what the model reads (a server's: the messages sent, its template where it shows it)
    choices: list  # with `alternatives`: each token with its probabilities (chat.llm.sampling.TokenChoice)
    stats: generation.ReplyStats  # filled in when the reply ends
    place: int | None  # while waiting for a place in the serving engine: its number in line

    def __iter__(self): ...

    def cancel(self, wait: bool = True) -> None: ...


class ChatBackend(Protocol):
    title: str  # for people
    context_window: int | None  # tokens of prompt + reply; None: the server's own, unknown here
    where: str  # "" for a model in this process, else the server's URL

    def stream_chat(self, messages: list[dict], params: GenerationParams, cancel: threading.Event | None = None,
                    alternatives: int = 0, reply_prefix: list[int] = ()) -> ReplyStream: ...

    def next_token_session(self, text: str, chat: bool = False, k: int = 12) -> NextTokenSession: ...


@dataclass
class LocalBackend:
    loaded: LoadedModel
    where: str = ""

    @property
    def title(self) -> str:
        return self.loaded.title

    @property
    def context_window(self) -> int:
        return self.loaded.context_window

    def stream_chat(self, messages, params, cancel=None, alternatives=0, reply_prefix=()) -> generation.ChatStream:
        return generation.stream_chat(messages, params, self.loaded, cancel, alternatives, reply_prefix)

    def next_token_session(self, text: str, chat: bool = False, k: int = 12) -> LocalSession:
        return LocalSession(text, self.loaded, chat)


@dataclass
class ServerBackend:
    server: remote.Backend
    context_window: None = None

    @property
    def title(self) -> str:
        return remote.short_name(self.server.model) if self.server.model else self.server.url

    @property
    def where(self) -> str:
        return self.server.url

    def stream_chat(self, messages, params, cancel=None, alternatives=0, reply_prefix=()) -> remote.RemoteChatStream:
        if reply_prefix:
            raise ValueError("A server cannot continue a half-written reply: an OpenAI chat request can only start a "
                             "new one.")
        return remote.stream_chat(messages, params, self.server, cancel, alternatives=alternatives)

    def next_token_session(self, text: str, chat: bool = False, k: int = 12) -> remote.RemoteSession:
        return remote.RemoteSession(text, self.server, chat, k)


# --- tuned models, per browser session ------------------------------------------------------------------------------


@dataclass
class TunedModel:
    kind: str  # "sft" or "dpo"
    title: str  # for people: "SmolLM2-135M-Instruct + LoRA (identity)"
    loaded: LoadedModel  # run like the chat model, on transformers' generate
    summary: dict = field(default_factory=dict)  # what it learned: preset, steps, losses

    @property
    def model(self):
        return self.loaded.model


def tuned_view(base: LoadedModel, model, kind: str, title: str) -> LoadedModel:
    """`model` (a PeftModel on base's weights) in the shape the chat code runs: plain transformers generate."""
    from concurrent.futures import Future

    ready = Future()
    ready.set_result(model)
    return LoadedModel(f"{base.name}+{kind}", title, ready, base.tokenizer, base.device, base.dtype,
                       base.context_window, 0.0, "tuned", base.stop_ids, None, settings=base.settings)


class TunedModels:
    """Tuned models by (session, kind), least recently used first; at most `limit` are kept (each ~20 MB)."""

    def __init__(self, limit: int = 24):
        self.limit = limit
        self._items = cachetools.LRUCache(limit)
        self._lock = threading.Lock()

    def put(self, session: str, tuned: TunedModel) -> None:
        with self._lock:
            self._items[(session, tuned.kind)] = tuned

    def get(self, session: str | None, kind: str) -> TunedModel | None:
        with self._lock:
            return self._items.get((session, kind))

    def drop(self, session: str | None, kind: str | None = None) -> None:
        with self._lock:
            for key in [k for k in self._items if k[0] == session and kind in (None, k[1])]:
                del self._items[key]

    def __len__(self) -> int:
        return len(self._items)


TUNED = TunedModels()


class NoSuchModel(LookupError):
    """The variant asked for does not exist for this session (nothing fine-tuned yet, no server)."""

    def __init__(self, variant: str):
        self.variant = variant
        super().__init__(f"No {variant} model for this session" if variant in ("sft", "dpo") else
                         "No server given: type its URL, or start ChatLab with --backend-url URL.")


def backend_for(variant: str, model: ModelSettings = ModelSettings(), session: str | None = None,
                server: remote.Backend | None = None, servers: ServerSettings = ServerSettings()) -> ChatBackend:
    """The backend a reply comes from: the shared chat model ("original"), the model this session fine-tuned
    ("sft") or aligned ("dpo"), or a server ("server": `server`, else the configured one). ValueError for an unknown
    variant, NoSuchModel when it does not exist."""
    if variant not in VARIANTS:
        raise ValueError(f"model must be one of {', '.join(VARIANTS)}, got {variant!r}")
    if variant == "original":
        return LocalBackend(get_model(model))
    if variant == "server":
        server = server or remote.configured(servers)
        if server is None:
            raise NoSuchModel(variant)
        return ServerBackend(server)
    tuned = TUNED.get(session, variant)
    if tuned is None:
        raise NoSuchModel(variant)
    return LocalBackend(tuned.loaded)
