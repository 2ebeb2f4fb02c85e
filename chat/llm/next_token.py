"""The next-token view (文字接龙): a text growing one chosen token at a time, on the model's real probabilities.

`NextTokenSession` is what every backend's session shares: the candidates with their raw and shaped probabilities
(shaped by the one sampler, chat.llm.sampling), greedy and sampled steps. `LocalSession` runs the chat model and
keeps its KV cache between steps (within a server-wide budget, least recently used first); the remote backend's
session (chat.llm.remote) asks a server for its top logprobs. Heavy work holds a "model" slot of the budget.
"""
from __future__ import annotations

import ctypes
import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass

import torch

from chat import budget
from chat.llm import serving
from chat.llm.models import LoadedModel
from chat.llm.params import GenerationParams
from chat.llm.prompt import MAX_MESSAGE_CHARS, encode_chat
from chat.llm.sampling import choose, probabilities, sampling_generator
from chat.llm.tokenizer import ModelTokenizer
from chat.tokens import describe_bytes, group_tokens


@dataclass
class Candidate:
    token_id: int  # what append() takes: the token's id (a server's session: its rank)
    label: str  # the token's text, or its bytes like <0xE5 0xAE> when it is part of a character
    partial: bool  # True when the token alone is not whole UTF-8 characters
    completes: str  # for a partial token: the character it finishes in context ("" if none)
    raw_prob: float  # the model's probability
    shaped_prob: float  # after temperature / top-k / top-p


def shaping(temperature=1.0, top_k=0, top_p=1.0) -> GenerationParams:
    """The view's knobs from a form or an API client, checked (ValueError naming the bad one)."""
    return GenerationParams.from_inputs(temperature=temperature, top_k=top_k, top_p=top_p)


class NextTokenSession:
    """What every next-token session offers. A subclass sets `prompt_text` and `limited` (None, or the k tokens a
    server returns at most) and gives `logits()`, `raw_probs()`, `describe()`, `append()`, `undo()`, `pieces()`."""

    prompt_text: str = ""
    limited: int | None = None  # a server's session sees only its k most likely tokens

    def logits(self) -> torch.Tensor:  # (N,) over the session's candidate space (ids, or a server's ranks)
        raise NotImplementedError

    def raw_probs(self) -> torch.Tensor:
        return torch.softmax(self.logits(), dim=-1)

    def describe(self, index: int) -> tuple[str, bool, str]:  # (label, partial, the character it completes)
        raise NotImplementedError

    def append(self, token_id: int) -> None:
        raise NotImplementedError

    def undo(self) -> None:
        raise NotImplementedError

    def pieces(self) -> list[str]:
        """The chosen tokens' text, one piece per step shown (a character's byte tokens join into one piece)."""
        raise NotImplementedError

    def close(self) -> None:
        """Free what the session holds (Gradio's state expiry calls it)."""

    def candidates(self, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, k: int = 10) -> list[Candidate]:
        """The k most likely next tokens, with their raw and shaped probabilities, most likely first."""
        params = shaping(temperature, top_k, top_p)
        raw = self.raw_probs()
        shaped = probabilities(self.logits(), params)
        out = []
        for index in torch.topk(raw, min(k, raw.numel())).indices.tolist():
            label, partial, completes = self.describe(index)
            out.append(Candidate(index, label, partial, completes, float(raw[index]), float(shaped[index])))
        return out

    def greedy(self) -> int:
        index = int(self.logits().argmax())
        self.append(index)
        return index

    def sample(self, temperature: float, top_k: int, top_p: float, seed: int | None = None) -> int:
        index = choose(self.logits().float().clone(), shaping(temperature, top_k, top_p), sampling_generator(seed))
        self.append(index)
        return index


class SessionCaches:
    """The KV caches of the live local sessions, least recently used first: beyond `max_bytes` in all, the oldest
    lose theirs (their text and next-token logits stay; their next step runs their text again, once). The session
    just used keeps its own, even over the budget."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        # id(session) -> session, least recently used first: a budget of bytes whose evictions free KV caches, which
        # an ordered dict says more plainly than a cache library's size callbacks
        self._order: OrderedDict[int, LocalSession] = OrderedDict()

    def used(self, session: LocalSession) -> None:
        with self._lock:
            self._order[id(session)] = session
            self._order.move_to_end(id(session))
            total = sum(s.cache_bytes() for s in self._order.values())
            while total > self.max_bytes and len(self._order) > 1:
                _, oldest = self._order.popitem(last=False)
                total -= oldest.cache_bytes()
                oldest.drop_cache()

    def forget(self, session: LocalSession) -> None:
        with self._lock:
            self._order.pop(id(session), None)

    def cached_bytes(self) -> int:
        with self._lock:
            return sum(s.cache_bytes() for s in self._order.values())


try:  # glibc keeps what a thread frees for its own reuse: a long pass's activations would stay in RSS
    _MALLOC_TRIM = ctypes.CDLL("libc.so.6").malloc_trim
except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to give back this way
    _MALLOC_TRIM = None
LONG_PASS_TOKENS = 1024  # after a forward pass over this many tokens, the freed memory goes back to the system
_CACHES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # loaded model -> its sessions' SessionCaches
_CACHES_LOCK = threading.Lock()


def session_caches(loaded: LoadedModel) -> SessionCaches:
    """The KV-cache budget of this model's local sessions (its settings' next_token_cache_mb)."""
    with _CACHES_LOCK:
        found = _CACHES.get(loaded)
        if found is None:
            found = _CACHES[loaded] = SessionCaches(loaded.settings.next_token_cache_mb << 20)
        return found


def release_freed_memory() -> None:
    """Return the heap memory freed by a long forward pass to the system (malloc_trim, all arenas; ~10 ms)."""
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


class LocalSession(NextTokenSession):
    """A session on a local model, its KV cache kept between steps (in the serving engine's slots when the fast
    decoder runs, else transformers' DynamicCache within the model's session_caches budget).

    Memory per session is the KV cache and one row of logits (the last position's: the pass computes no other)."""

    def __init__(self, text: str, loaded: LoadedModel, chat: bool = False):
        if not isinstance(text, str):
            raise ValueError(f"The prompt must be text, got {type(text).__name__}.")
        if len(text) > MAX_MESSAGE_CHARS:
            raise ValueError(f"The prompt is too long: {len(text):,} characters (the most is {MAX_MESSAGE_CHARS:,}).")
        self.loaded = loaded
        self.tokenizer = ModelTokenizer(self.loaded.tokenizer)
        if chat:  # the user's text stays text: only the template's own tokens are special
            encoded = encode_chat(self.loaded.tokenizer, [{"role": "user", "content": text}])
            text, self.ids = encoded.text, encoded.ids
        else:
            self.ids = self.tokenizer.encode(text)
        self.prompt_text = text
        if not self.ids:
            raise ValueError("Type a prompt first: the model needs at least one token to continue.")
        if len(self.ids) >= self.loaded.context_window:
            raise ValueError(f"The prompt is {len(self.ids)} tokens; the model's context is "
                             f"{self.loaded.context_window}.")
        self.prompt_len = len(self.ids)
        self.past = None  # transformers' DynamicCache over self.ids (None once evicted)
        self._logits: torch.Tensor | None = None  # (vocab,) next-token logits after self.ids
        self._lock = threading.Lock()  # one step at a time (a user's clicks can arrive together)
        self._advance()

    def logits(self) -> torch.Tensor:
        return self._logits

    @torch.inference_mode()
    def _advance(self) -> None:
        """One forward pass over the tokens the cache does not hold yet (all of them after an eviction), keeping only
        the last position's logits."""
        from transformers import DynamicCache

        engine = serving.engine_for(self.loaded)
        if engine is not None:  # in the batch with everyone's chat; the engine keeps the text's KV for the next step
            with budget.slot("model"):
                self._logits = engine.logits(self.ids)
            return
        model = self.loaded.model
        with budget.slot("model"):
            past = self.past if self.past is not None else DynamicCache(config=model.config)
            new_ids = self.ids[past.get_seq_length():]
            keep = {"logits_to_keep": 1} if model._supports_logits_to_keep() else {}
            out = model(input_ids=torch.tensor([new_ids], device=self.loaded.device), past_key_values=past,
                        use_cache=True, **keep)
            self.past = out.past_key_values
            self._logits = out.logits[0, -1].float().clone()  # its own (vocab,) storage, never a view of (T, vocab)
            del out
        session_caches(self.loaded).used(self)
        if len(new_ids) >= LONG_PASS_TOKENS:
            release_freed_memory()

    def cache_bytes(self) -> int:
        past = self.past
        if past is None:
            return 0
        return sum(t.nbytes for layer in past.layers for t in (layer.keys, layer.values) if t is not None)

    def drop_cache(self) -> None:
        self.past = None

    def close(self) -> None:
        """Free the KV cache now (the session's state expired or was replaced)."""
        self.past = None
        session_caches(self.loaded).forget(self)

    @property
    def generated(self) -> list[int]:
        return self.ids[self.prompt_len:]

    def text(self) -> str:
        return self.loaded.tokenizer.decode(self.ids, skip_special_tokens=False)

    def pieces(self) -> list[str]:
        out = []
        for piece in group_tokens(self.generated, self.tokenizer.token_bytes):
            try:
                out.append(piece.raw.decode("utf-8"))
            except UnicodeDecodeError:  # the newest token is half a character: its bytes until it completes
                out.append(describe_bytes(piece.raw))
        return out

    def _pending_bytes(self) -> bytes:
        """Bytes at the end of the text that do not yet form a whole character."""
        groups = group_tokens(self.ids[-8:], self.tokenizer.token_bytes)
        last = groups[-1] if groups else None
        if last is not None:
            try:
                last.raw.decode("utf-8")
            except UnicodeDecodeError:
                return last.raw
        return b""

    def describe(self, index: int) -> tuple[str, bool, str]:
        data = self.tokenizer.token_bytes(index)
        try:
            label, partial = data.decode("utf-8"), False
        except UnicodeDecodeError:
            label, partial = describe_bytes(data), True
        pending, completes = self._pending_bytes(), ""
        if pending:
            try:
                completes = (pending + data).decode("utf-8")
            except UnicodeDecodeError:
                completes = ""
        return label, partial, completes

    def append(self, token_id: int) -> None:
        """Add a token to the text: one forward pass on top of the KV cache."""
        if isinstance(token_id, bool) or not isinstance(token_id, int) or not (
                0 <= token_id < self._logits.shape[0]):
            raise ValueError(f"Token id {token_id!r} is outside the vocabulary.")
        with self._lock:
            if len(self.ids) + 1 >= self.loaded.context_window:
                raise ValueError("The text has reached the model's context window.")
            self.ids.append(token_id)
            self._advance()

    def undo(self) -> None:
        """Remove the last appended token (never the prompt)."""
        with self._lock:
            if len(self.ids) <= self.prompt_len:
                raise ValueError("Nothing to undo: only the prompt is left.")
            self.ids.pop()
            extra = self.past.get_seq_length() - (len(self.ids) - 1) if self.past is not None else 0
            if extra > 0:  # the undone token, and the one before it, fed again for its logits
                self.past.crop(-extra)
            self._advance()
