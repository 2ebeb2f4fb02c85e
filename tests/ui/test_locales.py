"""The UI's locale files (chat/ui/locales/*.json) and the i18n helpers that read them: fast, no model, no browser."""
from __future__ import annotations

import json
import string
from pathlib import Path
from types import SimpleNamespace

import pytest

from chat.ui import i18n

LOCALE_FILES = sorted(i18n.LOCALES.glob("*.json"))
# Static text shown through T(), never formatted: its braces are literal JSON, not str.format placeholders.
LITERAL_BRACES = {"tokens.chat_rule", "finetune.jsonl_info", "feedback.jsonl_info"}


def _read(path: Path) -> dict[str, str]:
    """A locale file, refusing duplicate keys (json.loads would silently keep the last one)."""

    def no_duplicates(pairs):
        keys = [key for key, _ in pairs]
        duplicates = sorted({key for key in keys if keys.count(key) > 1})
        assert not duplicates, f"{path.name}: duplicate keys {duplicates}"
        return dict(pairs)

    return json.loads(path.read_text(encoding="utf-8"), object_pairs_hook=no_duplicates)


def _placeholders(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}


def _request(accept_language: str | None):
    return SimpleNamespace(headers=None if accept_language is None else {"accept-language": accept_language})


ENGLISH = _read(i18n.LOCALES / "en.json")


def test_english_and_chinese_are_there():
    assert {path.stem for path in LOCALE_FILES} >= {"en", "zh"}
    assert i18n.LANGUAGES[0] == "en" and set(i18n.LANGUAGES) == {path.stem for path in LOCALE_FILES}


@pytest.mark.parametrize("path", LOCALE_FILES, ids=lambda path: path.name)
def test_file_parses_and_is_canonical(path):
    table = _read(path)
    assert table and all(isinstance(text, str) and text.strip() for text in table.values())
    # one key per line, UTF-8 text rather than \u escapes: readable diffs
    assert path.read_text(encoding="utf-8") == json.dumps(table, ensure_ascii=False, indent=1) + "\n"


@pytest.mark.parametrize("path", LOCALE_FILES, ids=lambda path: path.name)
def test_same_keys_as_english(path):
    keys = set(_read(path))
    assert not set(ENGLISH) - keys, f"missing from {path.name}"
    assert not keys - set(ENGLISH), f"unknown to en.json (typo?) in {path.name}"


@pytest.mark.parametrize("path", LOCALE_FILES, ids=lambda path: path.name)
def test_same_placeholders_as_english(path):
    table = _read(path)
    differ = {key: (_placeholders(ENGLISH[key]), _placeholders(table[key]))
              for key in ENGLISH.keys() - LITERAL_BRACES if key in table
              and _placeholders(ENGLISH[key]) != _placeholders(table[key])}
    assert not differ


def test_placeholders_are_keyword_names():
    """tr() formats with keyword arguments only, so every placeholder must be a name ({n}, {tokens:,}), never {} or
    {0}; the only other braces are the listed literal ones."""
    odd = {key for key, text in ENGLISH.items() if not all(name.isidentifier() for name in _placeholders(text))}
    assert odd == LITERAL_BRACES


def test_strings_pairs_english_with_chinese():
    chinese = _read(i18n.LOCALES / "zh.json")
    assert list(i18n.STRINGS) == list(ENGLISH)
    assert all(i18n.STRINGS[key] == (ENGLISH[key], chinese[key]) for key in ENGLISH)


def test_gradio_i18n_has_every_language_and_chinese_regions():
    assert i18n.T is i18n.I18N
    translations = i18n.I18N.translations
    assert translations["en"] == ENGLISH
    for locale in ("zh", "zh-CN", "zh-TW", "zh-HK"):
        assert translations[locale] == _read(i18n.LOCALES / "zh.json")


@pytest.mark.parametrize("header", ["zh-CN,zh;q=0.9,en;q=0.8", "zh", "ZH-tw", "zh-Hant-HK", "zh;q=0.8"])
def test_tr_chinese(header):
    request = _request(header)
    assert i18n.language(request) == "zh"
    assert i18n.tr(request, "tokens.tab") == "词元 Tokens"
    assert i18n.tr(request, "app.error", error="boom") == "出错了：boom"


@pytest.mark.parametrize("header", [None, "", "en-US,en;q=0.9", "fr-FR,fr", "en-GB,zh-CN;q=0.9"])
def test_tr_english_otherwise(header):
    request = _request(header)
    assert i18n.language(request) == "en"
    assert i18n.tr(request, "tokens.tab") == "Tokens"
    assert i18n.tr(request, "app.error", error="boom") == "Something went wrong: boom"


def test_tr_without_a_request_is_english():
    assert i18n.language(None) == "en"
    assert i18n.tr(None, "app.error", error="boom") == "Something went wrong: boom"


def test_both_joins_the_pair():
    english, chinese = i18n.STRINGS["tokens.col_tokens"]
    assert i18n.both("tokens.col_tokens") == f"{english} · {chinese}" == "Tokens · 词元数"


def test_adding_a_file_adds_a_language(tmp_path, monkeypatch):
    (tmp_path / "en.json").write_text(json.dumps({"a.x": "Hello", "a.y": "Bye"}), encoding="utf-8")
    (tmp_path / "zh.json").write_text(json.dumps({"a.x": "你好", "a.y": "再见"}), encoding="utf-8")
    (tmp_path / "fr.json").write_text(json.dumps({"a.x": "Bonjour"}), encoding="utf-8")
    monkeypatch.setattr(i18n, "LOCALES", tmp_path)
    tables = i18n._load()
    assert list(tables) == ["en", "fr", "zh"]
    assert tables["fr"] == {"a.x": "Bonjour", "a.y": "Bye"}  # a missing translation falls back to English
