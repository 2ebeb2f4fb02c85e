"""Inside the chat model: every head's attention, one head step by step, heads that do a job, and the logit lens.

One pass of the real model over a short text (at most MAX_TOKENS tokens) gives
- the attention weights of every layer and head (SmolLM2-135M: 30 layers x 9 query heads, grouped-query attention:
  each group of 3 query heads shares one of the 3 key/value heads);
- the residual stream after every layer, read at the last position through the final norm and the output head: the
  logit lens (nostalgebraist 2020), what the model would predict if it stopped at that layer;
- the residual stream entering every layer at the first STEP_TOKENS positions, from which one head's q, k, v (RoPE
  applied), Q·Kᵀ/√d, causal mask, softmax and weighted sum of v are recomputed with the layer's own modules. A causal
  model's first positions do not depend on the tokens after them, so these are the real numbers of the full pass.
Probes (PROBES) run fixed inputs and score every head at one job: induction and previous-token heads as in Olsson et
al. 2022 ("In-context learning and induction heads") and TransformerLens's head detectors, and pronoun -> noun.

Chat and Next token run the same transformers model at the same moment, in other threads. So:
- the pass never touches the shared model's settings. sdpa attention returns no weights, and switching the model to
  eager attention (`set_attn_implementation`) is state every thread sees. The pass runs on an *eager twin*: a copy of
  the model's modules that shares every weight tensor (made once per model in ~0.04 s, a few KB of buffers) and whose
  own config asks for eager attention and untied hidden states. Its logits equal the shared model's (max |diff|
  ~2e-5, fp32 rounding);
- a chat reply in progress comes first: before each layer the pass waits while a reply is being generated
  (`LoadedModel.replies`), so a reply is slowed by at most one layer's work (~10 ms at 64 tokens);
- one pass runs at a time, and memory is bounded: the last CACHE_SIZE inspections (~5 MB each at 64 tokens) are kept,
  keyed by their tokens and shared by every session.
"""
from __future__ import annotations

import contextlib
import contextvars
import copy
import dataclasses
import math
import sys
import threading
import time
import weakref
from concurrent.futures import ThreadPoolExecutor, TimeoutError as FutureTimeout
from dataclasses import dataclass

import cachetools
import torch

from chat.llm.models import LoadedModel, get_model, is_loaded
from chat.llm.tokenizer import ModelTokenizer
from chat.settings import ModelSettings
from chat.tokens import describe_bytes, group_tokens

MAX_TOKENS = 64  # the text is cut after this many tokens (30 x 9 x 64 x 64 weights = 4.4 MB)
STEP_TOKENS = 8  # tokens shown in the step-by-step view of one head
CACHE_SIZE = 4  # inspections kept for every session together
LENS_TOP = 5  # guesses per layer in the logit lens
WAIT_FOR_REPLIES_S = 120.0  # longest a pass waits for chat replies to finish before giving up
WAIT_FOR_MODEL_S = 90.0  # longest an inspection waits for the chat model to load
VISIBLE = str.maketrans({" ": "␣", "\n": "↵", "\t": "→"})
SUBSCRIPT = str.maketrans("0123456789", "₀₁₂₃₄₅₆₇₈₉")


class InsideError(ValueError):
    """Bad input for the inside view (empty text, layer or head out of range, unknown probe, unsupported model)."""


class ModelBusy(RuntimeError):
    """Chat replies kept the model busy for longer than the inspection waits."""


class ModelStillLoading(RuntimeError):
    """The chat model is still loading."""


# --- the model: loaded, supported, and its eager twin ---------------------------------------------------------------

_loader = ThreadPoolExecutor(1, thread_name_prefix="chatlab-inside-load")


def ready_model(settings: ModelSettings = ModelSettings(), timeout: float = WAIT_FOR_MODEL_S) -> LoadedModel:
    """The shared chat model with its transformers model in, waiting up to `timeout` s for a load in progress (or
    starting one); ModelStillLoading after that, ModelLoadError if it cannot load."""
    if is_loaded(settings) and get_model(settings).transformers_model.done():
        return get_model(settings)
    job = _loader.submit(lambda: get_model(settings).model)
    try:
        job.result(timeout)
    except FutureTimeout:
        raise ModelStillLoading(f"The chat model is still loading (waited {timeout:.0f} s); try again in a few "
                                "seconds.") from None
    return get_model(settings)


def check_supported(model) -> None:
    config = model.config
    if getattr(config, "model_type", None) != "llama":
        raise InsideError(f"The inside view knows Llama-style models (SmolLM2, Llama); this one is "
                          f"{getattr(config, 'model_type', '?')!r}.")


def shape(model) -> tuple[int, int, int]:
    """(layers, query heads, key/value heads) of a model."""
    c = model.config
    return c.num_hidden_layers, c.num_attention_heads, c.num_key_value_heads


_TWINS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # shared model -> its eager twin
_TWINS_LOCK = threading.Lock()
_PASS_LOCK = threading.Lock()  # one inspection pass at a time: 2 cores, and chat comes first anyway
_GIVE_WAY: contextvars.ContextVar = contextvars.ContextVar("chatlab_inside_give_way", default=None)


def _give_way(module=None, args=None) -> None:
    """Wait while a chat reply is being generated (when the current inspection gives way): a forward pre-hook on each
    of the twin's layers, and called before the other heavy steps."""
    waiting = _GIVE_WAY.get()
    if waiting is None:
        return
    replies, deadline = waiting
    if replies.active and not replies.wait_until_idle(max(0.0, deadline - time.monotonic())):
        raise ModelBusy("The chat model is busy answering; the inspection waited "
                        f"{WAIT_FOR_REPLIES_S:.0f} s. Try again in a moment.")


@contextlib.contextmanager
def giving_way(loaded: LoadedModel, give_way: bool = True):
    """Within this block, the twin's passes (and _give_way calls) wait while chat replies are being generated."""
    token = _GIVE_WAY.set((loaded.replies, time.monotonic() + WAIT_FOR_REPLIES_S) if give_way else None)
    try:
        yield
    finally:
        _GIVE_WAY.reset(token)


def eager_twin(model: torch.nn.Module) -> torch.nn.Module:
    """The model's modules copied around the same weight tensors, with eager attention and untied hidden states.

    deepcopy's memo maps every parameter to itself, so only the modules, config and small buffers (RoPE's inverse
    frequencies) are copied; a change of the shared model's attention implementation is never needed.
    """
    with _TWINS_LOCK:
        twin = _TWINS.get(model)
        if twin is None:
            check_supported(model)
            twin = copy.deepcopy(model, memo={id(p): p for p in model.parameters()})
            twin.set_attn_implementation("eager")
            twin.config.tie_last_hidden_states = False  # the last hidden state before the final norm, like the rest
            for layer in twin.model.layers:
                layer.register_forward_pre_hook(_give_way)
            twin.eval()
            _TWINS[model] = twin
        return twin


@torch.inference_mode()
def run_twin(loaded: LoadedModel, ids: torch.Tensor, give_way: bool = True):
    """One pass of the eager twin over ids (B, T): logits for the last position, every layer's attention weights
    (B, heads, T, T) and hidden states (B, T, hidden); before each layer it waits while a chat reply is generated."""
    twin = eager_twin(loaded.model)
    with giving_way(loaded, give_way), _PASS_LOCK:
        return twin(input_ids=ids, output_attentions=True, output_hidden_states=True, use_cache=False,
                    logits_to_keep=1)


# --- tokens ---------------------------------------------------------------------------------------------------------


def token_labels(tokenizer: ModelTokenizer, ids: list[int]) -> list[str]:
    """One label per token: its text with whitespace made visible; the tokens of a character split over several
    (Chinese, emoji) all carry that character, numbered: 北₁ 北₂."""
    labels = []
    for segment in group_tokens(ids, tokenizer.token_bytes):
        try:
            text = segment.raw.decode("utf-8").translate(VISIBLE)
        except UnicodeDecodeError:  # a character cut off at the end: its bytes
            labels += [describe_bytes(tokenizer.token_bytes(i)) for i in segment.ids]
            continue
        if len(segment.ids) == 1:
            labels.append(text)
        else:
            labels += [f"{text}{str(part).translate(SUBSCRIPT)}" for part in range(1, len(segment.ids) + 1)]
    return labels


def token_label(tokenizer: ModelTokenizer, token_id: int) -> str:
    """A single token as text, or as its bytes when it is part of a character: <0xE5 0x8C>."""
    data = tokenizer.token_bytes(token_id)
    try:
        return data.decode("utf-8").translate(VISIBLE)
    except UnicodeDecodeError:
        return describe_bytes(data)


def encode(loaded: LoadedModel, text: str) -> tuple[list[int], int]:
    """(the first MAX_TOKENS token ids of text, how many tokens were cut off). User text stays text: a typed
    <|im_start|> is not a special token."""
    if not isinstance(text, str) or not text.strip():
        raise InsideError("Type a text first: the model needs at least one token to look at.")
    ids = ModelTokenizer(loaded.tokenizer).encode(text)
    if not ids:
        raise InsideError("Type a text first: the model needs at least one token to look at.")
    return ids[:MAX_TOKENS], max(0, len(ids) - MAX_TOKENS)


def check_head(loaded: LoadedModel, layer, head) -> tuple[int, int]:
    """(layer, head) as ints, or InsideError naming the one out of range."""
    layers, heads, _ = shape(loaded.model)
    out = []
    for name, value, count in (("layer", layer, layers), ("head", head, heads)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or isinstance(value, float) and (
                math.isnan(value) or value != int(value)):
            raise InsideError(f"{name} must be a whole number from 0 to {count - 1}, got {value!r}.")
        if not 0 <= value < count:
            raise InsideError(f"{name} must be from 0 to {count - 1}, got {value!r}.")
        out.append(int(value))
    return out[0], out[1]


# --- one inspection -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Guess:
    token_id: int
    label: str  # the token as text, or its bytes
    prob: float


@dataclass(frozen=True)
class LensRow:
    layer: int  # the residual stream after this layer
    top: list[Guess]  # the LENS_TOP most likely next tokens, most likely first
    answer_prob: float  # the probability this layer gives the model's final top-1 token


@dataclass
class Inspection:
    """One pass over one text: what the views and the API show."""

    ids: list[int]  # the tokens inspected (at most MAX_TOKENS)
    tokens: list[str]  # their labels (token_labels)
    cut: int  # tokens of the text left out after MAX_TOKENS (0: all of it)
    attention: torch.Tensor  # (layers, heads, T, T) softmax weights: rows sum to 1, zero above the diagonal
    layer_inputs: torch.Tensor  # (layers, S, hidden) the residual stream entering each layer, first S positions
    lens: list[LensRow]  # one per layer, at the last position
    answer: Guess  # the model's own next-token prediction (top-1)
    seconds: float  # the model pass and the lens, s

    @property
    def layers(self) -> int:
        return self.attention.shape[0]

    @property
    def heads(self) -> int:
        return self.attention.shape[1]


_CACHE = cachetools.LRUCache(CACHE_SIZE)  # (model id, token ids) -> Inspection
_CACHE_LOCK = threading.Lock()


def inspect_text(text: str, loaded: LoadedModel | None = None, give_way: bool = True) -> Inspection:
    """Inspect a text (cut to MAX_TOKENS tokens): every head's attention, the logit lens, the first layer inputs.
    The last CACHE_SIZE inspections are reused."""
    loaded = loaded or ready_model()
    ids, cut = encode(loaded, text)
    key = (id(loaded.model), tuple(ids))
    with _CACHE_LOCK:
        found = _CACHE.get(key)
        if found is not None:
            return dataclasses.replace(found, cut=cut)  # the same tokens may start a longer text
    found = _inspect_ids(loaded, ids, cut, give_way)
    with _CACHE_LOCK:
        _CACHE[key] = found
    return found


@torch.inference_mode()
def _inspect_ids(loaded: LoadedModel, ids: list[int], cut: int, give_way: bool) -> Inspection:
    start = time.perf_counter()
    out = run_twin(loaded, torch.tensor([ids], device=loaded.device), give_way)
    attention = torch.stack([a[0] for a in out.attentions]).float().cpu()  # (layers, heads, T, T)
    hidden = out.hidden_states  # layers + 1 tensors (1, T, hidden): the input of each layer, then the last output
    layer_inputs = torch.stack([h[0, :STEP_TOKENS] for h in hidden[:-1]]).float().cpu().clone()
    twin = eager_twin(loaded.model)
    last = torch.stack([h[0, -1] for h in hidden[1:]])  # (layers, hidden) the stream after each layer
    with giving_way(loaded, give_way):
        _give_way()  # the lens reads 30 x 28 M weights of the output matrix: after any reply that started meanwhile
        probs = torch.softmax(twin.lm_head(twin.model.norm(last)).float(), dim=-1).cpu()  # (layers, vocab)
    model_probs = torch.softmax(out.logits[0, -1].float(), dim=-1).cpu()
    tokenizer = ModelTokenizer(loaded.tokenizer)
    answer_id = int(model_probs.argmax())
    lens = []
    for layer, row in enumerate(probs):
        top = torch.topk(row, LENS_TOP)
        guesses = [Guess(int(i), token_label(tokenizer, int(i)), float(p)) for p, i in zip(top.values, top.indices)]
        lens.append(LensRow(layer, guesses, float(row[answer_id])))
    answer = Guess(answer_id, token_label(tokenizer, answer_id), float(model_probs[answer_id]))
    return Inspection(ids, token_labels(tokenizer, ids), cut, attention, layer_inputs, lens, answer,
                      time.perf_counter() - start)


def hide_sink(weights: torch.Tensor) -> torch.Tensor:
    """Weights (..., T, T) with token 0 (the attention sink) left out: its column zeroed and every row renormalised
    over the other tokens. Row 0, which can only attend to token 0, becomes all zeros."""
    out = weights.clone()
    out[..., 0] = 0.0
    total = out.sum(dim=-1, keepdim=True)
    return torch.where(total > 0, out / total.clamp_min(1e-30), out)


def sink_share(weights: torch.Tensor) -> torch.Tensor:
    """The mean weight on token 0 over rows 1.. of (..., T, T) weights (row 0 has no other choice)."""
    if weights.shape[-1] < 2:
        return torch.ones(weights.shape[:-2])
    return weights[..., 1:, 0].mean(dim=-1)


def head_weights(inspection: Inspection, layer: int, head: int, hide: bool = False) -> torch.Tensor:
    """(T, T) weights of one head; with `hide`, token 0 left out and the rows renormalised."""
    weights = inspection.attention[layer, head]
    return hide_sink(weights) if hide else weights


# --- one head, step by step -----------------------------------------------------------------------------------------


@dataclass
class HeadSteps:
    """One head's attention over the first S tokens, one step at a time, with the model's own numbers."""

    layer: int
    head: int
    kv_head: int  # the key/value head this query head reads (grouped-query attention)
    sharing: list[int]  # the query heads that share that key/value head
    tokens: list[str]  # the first S tokens
    q: torch.Tensor  # (S, d) queries, RoPE applied
    k: torch.Tensor  # (S, d) keys, RoPE applied
    v: torch.Tensor  # (S, d) values
    q_before_rope: torch.Tensor  # (S, d)
    k_before_rope: torch.Tensor  # (S, d)
    scale: float  # 1/sqrt(d)
    scores: torch.Tensor  # (S, S) Q·Kᵀ · scale
    masked: torch.Tensor  # (S, S) scores with -inf above the diagonal (a token cannot see later tokens)
    weights: torch.Tensor  # (S, S) softmax of each row
    output: torch.Tensor  # (S, d) weights @ v: what this head adds, before the output projection mixes the heads


@torch.inference_mode()
def head_steps(loaded: LoadedModel, inspection: Inspection, layer: int, head: int) -> HeadSteps:
    """Recompute one head on the first S tokens with the layer's own norm, projections and RoPE."""
    layer, head = check_head(loaded, layer, head)
    twin = eager_twin(loaded.model)
    block = twin.model.layers[layer]
    attn = block.self_attn
    _, heads, kv_heads = shape(loaded.model)
    group = heads // kv_heads
    kv = head // group
    d = attn.head_dim
    x = block.input_layernorm(inspection.layer_inputs[layer][None].to(loaded.device))  # (1, S, hidden)
    s = x.shape[1]

    def split(projection, index):  # (1, S, n*d) -> (1, 1, S, d): one head
        return projection(x).view(1, s, -1, d).transpose(1, 2)[:, index:index + 1]

    q0, k0, v = split(attn.q_proj, head), split(attn.k_proj, kv), split(attn.v_proj, kv)
    cos, sin = twin.model.rotary_emb(x, torch.arange(s, device=x.device)[None])
    rope = sys.modules[type(attn).__module__].apply_rotary_pos_emb  # the model's own RoPE
    q, k = rope(q0, k0, cos, sin)
    q, k, v, q0, k0 = (t[0, 0].float().cpu() for t in (q, k, v, q0, k0))
    scores = q @ k.T * attn.scaling
    masked = scores.masked_fill(torch.ones(s, s, dtype=torch.bool).triu(1), float("-inf"))
    weights = torch.softmax(masked, dim=-1)
    return HeadSteps(layer, head, kv, list(range(kv * group, (kv + 1) * group)), inspection.tokens[:s], q, k, v,
                     q0, k0, float(attn.scaling), scores, masked, weights, weights @ v)


# --- heads that do a job ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProbeInput:
    ids: list[int]
    pairs: list[tuple[int, tuple[int, ...]]]  # (query position, the key positions whose weight is the score)


@dataclass(frozen=True)
class HeadScore:
    layer: int
    head: int
    score: float  # the head's mean attention weight on the right tokens, 0..1


@dataclass
class ProbeResult:
    probe: str
    scores: torch.Tensor  # (layers, heads)
    ranked: list[HeadScore]  # every head, best first
    examples: list[str]  # the probe's inputs, as text


INDUCTION_LENGTH = 30  # random tokens, then the same again: 61 tokens with the <|im_start|> in front
INDUCTION_SEQUENCES = 4
PREVIOUS_TOKEN_TEXTS = [
    "The old lighthouse keeper climbed the stairs every evening, lit the great lamp, and watched the ships pass "
    "safely through the narrow channel below.",
    "Photosynthesis lets plants turn sunlight, water and carbon dioxide into sugar, and it releases the oxygen "
    "that most animals need to breathe.",
]
PRONOUN_SENTENCES = [  # (text, the noun, the pronoun that refers to it: its last occurrence)
    ("Mary went to the market early, and then she", "Mary", "she"),
    ("The doctor read the chart slowly before he", "doctor", "he"),
    ("My grandmother baked bread every morning because she", "grandmother", "she"),
    ("The dog ran across the yard until it", "dog", "it"),
    ("The children finished the puzzle quickly, so they", "children", "they"),
    ("Peter missed the last train home, so he", "Peter", "he"),
    ("The engineers tested the bridge for weeks before they", "engineers", "they"),
    ("Anna opened the letter and smiled because she", "Anna", "she"),
]


def _span_tokens(offsets: list[tuple[int, int]], start: int, end: int) -> tuple[int, ...]:
    return tuple(i for i, (a, b) in enumerate(offsets) if a < end and b > start)


def _induction_inputs(loaded: LoadedModel) -> list[ProbeInput]:
    generator = torch.Generator().manual_seed(0)
    bos = loaded.tokenizer.bos_token_id
    prefix = [bos] if bos is not None else []
    vocab = loaded.model.config.vocab_size
    low, high = min(1_000, vocab // 4), min(20_000, vocab)  # ordinary tokens (SmolLM2: ids 1,000-20,000 of 49k)
    inputs = []
    for _ in range(INDUCTION_SEQUENCES):
        # each token at most once, so "the token after its first occurrence" is unique
        chunk = (torch.randperm(high - low, generator=generator)[:INDUCTION_LENGTH] + low).tolist()
        ids = prefix + chunk + chunk
        first = len(prefix)
        second = first + INDUCTION_LENGTH
        # at the i-th token of the second copy, an induction head looks at the token after its first occurrence
        pairs = [(second + i, (first + i + 1,)) for i in range(INDUCTION_LENGTH)]
        inputs.append(ProbeInput(ids, pairs))
    return inputs


def _previous_token_inputs(loaded: LoadedModel) -> list[ProbeInput]:
    tokenizer = ModelTokenizer(loaded.tokenizer)
    inputs = []
    for text in PREVIOUS_TOKEN_TEXTS:
        ids = tokenizer.encode(text)[:MAX_TOKENS]
        inputs.append(ProbeInput(ids, [(i, (i - 1,)) for i in range(2, len(ids))]))  # from 2: token 0 is the sink
    return inputs


def _pronoun_inputs(loaded: LoadedModel) -> list[ProbeInput]:
    inputs = []
    for text, noun, pronoun in PRONOUN_SENTENCES:
        encoded = loaded.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        offsets = encoded["offset_mapping"]
        at = text.index(noun)
        noun_tokens = _span_tokens(offsets, at, at + len(noun))
        at = text.rindex(" " + pronoun) + 1
        query = _span_tokens(offsets, at, at + len(pronoun))[-1]
        inputs.append(ProbeInput(encoded["input_ids"], [(query, noun_tokens)]))
    return inputs


@dataclass(frozen=True)
class Probe:
    name: str  # what the API takes
    job: str  # what a head that scores well does
    inputs: object  # (loaded) -> list[ProbeInput]
    threshold: float  # heads scoring at least this are labelled with the job


PROBES = {
    "induction": Probe("induction", "induction head: at a repeated token, looks at what followed it last time",
                       _induction_inputs, 0.4),
    "previous_token": Probe("previous_token", "previous-token head: looks at the token just before",
                            _previous_token_inputs, 0.4),
    "pronoun": Probe("pronoun", "pronoun head: from a pronoun (she, he, it, they), looks at the noun it stands for",
                     _pronoun_inputs, 0.3),
}
_PROBE_RESULTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> {probe: ProbeResult}


def head_scores(probe: str, loaded: LoadedModel | None = None, give_way: bool = True) -> ProbeResult:
    """Score every head at one job (PROBES) on the probe's fixed inputs, rank them, best first. Cached per model."""
    if probe not in PROBES:
        raise InsideError(f"Unknown probe {probe!r}: use one of {', '.join(PROBES)}.")
    loaded = loaded or ready_model()
    model = loaded.model
    done = _PROBE_RESULTS.setdefault(model, {})
    if probe in done:
        return done[probe]
    layers, heads, _ = shape(model)
    total = torch.zeros(layers, heads)
    count = 0
    inputs = PROBES[probe].inputs(loaded)
    lengths = {len(item.ids) for item in inputs}
    batches = [inputs] if len(lengths) == 1 else [[item] for item in inputs]  # equal lengths run as one batch
    for batch in batches:
        out = run_twin(loaded, torch.tensor([item.ids for item in batch], device=loaded.device), give_way)
        attention = torch.stack(out.attentions, dim=1).float().cpu()  # (B, layers, heads, T, T)
        for b, item in enumerate(batch):
            for query, keys in item.pairs:
                total += attention[b, :, :, query, list(keys)].sum(dim=-1)
                count += 1
    scores = total / count
    order = torch.argsort(scores.flatten(), descending=True).tolist()
    ranked = [HeadScore(i // heads, i % heads, float(scores.flatten()[i])) for i in order]
    examples = [loaded.tokenizer.decode(item.ids) for item in inputs]
    done[probe] = ProbeResult(probe, scores, ranked, examples)
    return done[probe]
