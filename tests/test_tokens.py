"""chat.tokens on the real tiktoken with the packaged vocabulary files: counts, boundaries, chat rule, CLI."""
from __future__ import annotations

import gzip
import inspect
import json
import socket
import subprocess
import sys

import pytest
import tiktoken
import tiktoken.registry
import tiktoken_ext.openai_public
from hypothesis import given, settings
from hypothesis import strategies as st

from chat import tokens
from tests.conftest import ROOT

SAMPLE_ZH = "这是一段示例文本。"


@pytest.mark.parametrize("encoding,expected", [("o200k_base", 7), ("cl100k_base", 9), ("gpt2", 18)])
def test_seed_000_sentence_has_the_real_counts(encoding, expected):
    # Seed 000 quotes "11 tokens" for this sentence; the real encodings say otherwise.
    assert tokens.count_tokens(SAMPLE_ZH, encoding) == expected


@pytest.mark.parametrize("encoding", list(tokens.TIKTOKEN_ENCODINGS))
@pytest.mark.parametrize("text", ["hello world", "Hello, 世界! 🎉", "def f(x):\n\treturn x ** 2\n", " " * 17, "a" * 1000])
def test_counts_equal_tiktokens_own_encoder(encoding, text):
    assert tokens.count_tokens(text, encoding) == len(tiktoken.get_encoding(encoding).encode_ordinary(text))


def test_packaged_hashes_are_the_ones_tiktoken_checks():
    source = inspect.getsource(tiktoken_ext.openai_public)
    for item in tokens.PACKAGED_FILES:
        assert item.url in source
        assert item.sha256 in source


def test_encodings_load_with_the_network_blocked(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(tiktoken.registry, "ENCODINGS", {})
    monkeypatch.setattr(tokens, "_LOADED", {})
    for name in tokens.TIKTOKEN_ENCODINGS:
        assert tokens.count_tokens("offline", name) >= 1


def test_a_file_with_the_wrong_hash_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    real = tokens.PACKAGED_FILES[0]
    wrong = tokens.PackagedFile(real.url, "0" * 64, real.package, real.relpath)
    with pytest.raises(tokens.EncodingDataError, match="corrupt or not the expected version"):
        tokens.seed_tiktoken_cache((wrong,))
    assert not any(tmp_path.iterdir())  # nothing half-written for tiktoken to trust


def test_a_truncated_gzip_is_a_clear_error(tmp_path):
    broken = tmp_path / "cl100k_base.tiktoken.gz"
    broken.write_bytes(gzip.compress(b"abc" * 1000)[:40])
    with pytest.raises(tokens.EncodingDataError, match="Cannot read tokenizer file"):
        tokens._verified_bytes(broken, "0" * 64)


def test_seeding_writes_files_tiktoken_accepts(tmp_path, monkeypatch):
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    directory = tokens.seed_tiktoken_cache()
    assert directory == tmp_path
    assert len(list(tmp_path.iterdir())) == len(tokens.PACKAGED_FILES)
    monkeypatch.setattr(tiktoken.registry, "ENCODINGS", {})
    assert tiktoken.get_encoding("cl100k_base").encode_ordinary("hello world") == [15339, 1917]


@pytest.mark.parametrize("model,encoding", [
    ("gpt-4o", "o200k_base"), ("gpt-4o-mini", "o200k_base"), ("gpt-5", "o200k_base"), ("o3", "o200k_base"),
    ("gpt-4.1", "o200k_base"), ("gpt-4", "cl100k_base"), ("gpt-3.5-turbo-0125", "cl100k_base"),
    ("text-embedding-3-small", "cl100k_base"), ("davinci", "gpt2"), ("gpt2", "gpt2"), ("r50k_base", "gpt2"),
    ("o200k_base", "o200k_base"), (" cl100k_base ", "cl100k_base"),
])
def test_model_names_resolve_to_their_encoding(model, encoding):
    assert tokens.encoding_name_for(model) == encoding


def test_unknown_model_error_lists_what_is_supported():
    with pytest.raises(ValueError) as error:
        tokens.count_tokens("hi", "llama-3-70b")
    message = str(error.value)
    assert "llama-3-70b" in message and "o200k_base" in message and "gpt-4o" in message


def test_empty_text_is_zero_tokens():
    assert tokens.count_tokens("", "gpt-4o") == 0
    assert tokens.segments("", "gpt-4o") == []


def test_special_token_text_is_ordinary_by_default_and_special_on_request():
    text = "a<|endoftext|>b"
    ordinary = tokens.encode(text, "gpt2")
    assert 50256 not in ordinary and len(ordinary) > 3
    assert tokens.encode(text, "gpt2", special=True) == [64, 50256, 65]
    assert tokens.count_tokens("<|endoftext|>", "cl100k_base", special=True) == 1


def test_partial_utf8_tokens_are_grouped_into_one_character():
    # GPT-2 splits most CJK characters over two or three byte-level tokens.
    view = tokens.segments("我爱北京天安门", "gpt2")
    assert [s.text for s in view] == list("我爱北京天安门")
    an = view[5]
    assert an.partial and an.raw == "安".encode() and tokens.describe_bytes(an.raw) == "<0xE5 0xAE 0x89>"
    assert all("\ufffd" not in s.text for s in view)


@settings(max_examples=150, deadline=None)
@given(text=st.text(max_size=200), encoding=st.sampled_from(list(tokens.TIKTOKEN_ENCODINGS)))
def test_segments_join_back_to_the_text_and_list_exactly_the_encoded_ids(text, encoding):
    view = tokens.segments(text, encoding)
    assert "".join(s.text for s in view) == text
    assert [i for s in view for i in s.ids] == tokens.encode(text, encoding)
    assert all(s.text for s in view) or text == ""


def test_view_limit_caps_segments_not_the_count():
    text = " token" * 6000
    assert tokens.count_tokens(text, "gpt-4o") == 6000
    assert len(tokens.segments(text, "gpt-4o", limit=5000)) == 5000


def test_one_megabyte_paste_is_counted_exactly():
    text = ("ChatGPT 把文本切成词元。 def f(x): return x + 1\n" * 30000)[: 1 << 20]
    assert len(text) == 1 << 20
    expected = len(tiktoken.get_encoding("o200k_base").encode_ordinary(text))
    assert tokens.count_tokens(text, "gpt-4o") == expected


def test_chat_rule_hello_is_eight_prompt_tokens():
    # What the OpenAI API reports as prompt_tokens for a single "Hello" to gpt-4o.
    assert tokens.count_chat_tokens([{"role": "user", "content": "Hello"}], "gpt-4o") == 8


def test_chat_rule_counts_framing_name_and_reply_priming():
    messages = [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": SAMPLE_ZH, "name": "alice"},
    ]
    enc = tiktoken.get_encoding("cl100k_base")
    fields = sum(len(enc.encode_ordinary(v)) for m in messages for v in m.values())
    assert tokens.count_chat_tokens(messages, "gpt-4") == 3 * 2 + fields + 1 + 3
    # The legacy rule: 4 per message, -1 per name.
    assert tokens.count_chat_tokens(messages, "gpt-3.5-turbo-0301") == 4 * 2 + fields - 1 + 3


@pytest.mark.parametrize("bad", [[{"content": "no role"}], ["just text"], [{"role": "user", "content": 5}]])
def test_malformed_chat_messages_are_a_clear_error(bad):
    with pytest.raises(ValueError, match="message 0"):
        tokens.count_chat_tokens(bad, "gpt-4o")


def test_every_registered_encoding_is_compared():
    rows = tokens.encode_all(SAMPLE_ZH)
    assert [r.encoding for r in rows][:3] == list(tokens.TIKTOKEN_ENCODINGS)
    assert {r.encoding: r.tokens for r in rows}["gpt2"] == 18
    assert rows[0].chars_per_token == round(9 / 7, 2)


def _cli(*args, stdin=None):
    return subprocess.run([sys.executable, "-m", "chat.tokens", *args], input=stdin, capture_output=True,
                          text=True, cwd=ROOT, timeout=120)


def test_cli_counts_an_argument_or_stdin_and_prints_json():
    assert _cli("--model", "gpt-4", "hello world").stdout.strip() == "2"
    assert _cli("--model", "gpt2", stdin=SAMPLE_ZH).stdout.strip() == "18"
    report = json.loads(_cli("--json", SAMPLE_ZH).stdout)
    assert report["tokens"] == 7 and report["encodings"]["cl100k_base"] == 9


def test_cli_unknown_model_exits_with_a_message():
    result = _cli("--model", "nonsense-model", "hi")
    assert result.returncode == 2 and "Unknown model" in result.stderr and "Traceback" not in result.stderr


def test_a_tokenizer_that_is_not_ready_is_skipped_instead_of_waited_for(monkeypatch):
    monkeypatch.setattr(tokens, "_REGISTRY", dict(tokens._REGISTRY))

    def build_blocks():
        raise AssertionError("the live view must not build a tokenizer that is still loading")

    tokens.register_tokenizer("still-loading", build_blocks, "a model being loaded", ready=lambda: False)
    names = [e.encoding for e in tokens.encode_all("hello", wait=False)]
    assert "still-loading" not in names and names[:3] == list(tokens.TIKTOKEN_ENCODINGS)


def test_a_missing_model_name_is_a_clear_error():
    for bad in (None, "", "   ", 5):
        with pytest.raises(ValueError, match="model must be"):
            tokens.count_tokens("hello", bad)


def test_more_than_10_mb_is_refused_before_any_tokenizer_runs(monkeypatch):
    monkeypatch.setattr(tokens, "tokenizer_for", lambda model: pytest.fail("tokenized"))
    with pytest.raises(ValueError, match="10,000,000"):
        tokens.count_tokens("x" * (tokens.MAX_TEXT_CHARS + 1))


def test_the_chat_models_tokenizer_counts_long_texts_in_chunks_exactly(tokenizer):
    from chat.bench.common import mixed_text
    from chat.llm import tokenizer as chat_tokenizer

    counter = chat_tokenizer.ModelTokenizer(tokenizer)
    text = mixed_text(400_000) + "   \n\n\t  " * 5000 + "<|im_start|>" * 3 + "长文本" * 30_000
    pieces = list(chat_tokenizer._chunks(text))
    assert len(pieces) > 8 and "".join(pieces) == text
    expected = len(tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"])
    assert counter.count(text) == expected == len(counter.encode(text))


def test_counting_10_mb_with_the_chat_models_tokenizer_stays_in_bounded_memory(tokenizer):
    """In a fresh process: one call on 10 MB held ~1.6 GB; in chunks it holds ~100 MB."""
    folder = tokenizer.name_or_path
    code = (
        "import resource, sys\n"
        "from transformers import PreTrainedTokenizerFast\n"
        "from chat import tokens\n"
        "from chat.llm.tokenizer import ModelTokenizer\n"
        "from chat.bench.common import mixed_text as _mixed_text\n"
        f"tokenizer = ModelTokenizer(PreTrainedTokenizerFast.from_pretrained({str(folder)!r}))\n"
        "tokens.register_tokenizer('chat-model', lambda: tokenizer, 'the chat model')\n"
        "text = _mixed_text(10_000_000)\n"
        "tokens.count_tokens('warm up', 'chat-model')\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "count = tokens.count_tokens(text, 'chat-model')\n"
        "print(count, (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300)
    count, peak_mb = map(int, out.stdout.split())
    assert count > 5_000_000 and peak_mb < 400
