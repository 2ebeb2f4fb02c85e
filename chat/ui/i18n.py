"""Every UI string of ChatLab, one JSON file per language: locales/<language>.json maps a key ("<tab>.<name>") to
its text. English (en.json) is the reference: it defines the keys, and a key missing from another language falls
back to it, so adding a language is adding a file.

Static text (labels, help, buttons, Markdown) goes through `T(key)`: Gradio's I18n translates it in the browser from
the browser's language. Text built on the server (warnings, errors, stats lines with numbers) goes through
`tr(request, key, **fmt)`, which picks the language from the request's Accept-Language header.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import gradio as gr

LOCALES = Path(__file__).with_name("locales")


def _load() -> dict[str, dict[str, str]]:
    """language -> key -> text for every locales/*.json, English first."""
    tables = {path.stem: json.loads(path.read_text(encoding="utf-8")) for path in sorted(LOCALES.glob("*.json"))}
    english = tables.pop("en")
    return {"en": english, **{lang: {**english, **table} for lang, table in tables.items()}}


TRANSLATIONS = _load()
LANGUAGES = tuple(TRANSLATIONS)
# key -> (English, 中文)
STRINGS: dict[str, tuple[str, str]] = {key: (text, TRANSLATIONS["zh"][key]) for key, text in TRANSLATIONS["en"].items()}

# svelte-i18n matches the browser's locale (zh-CN, zh-TW, ...) to its language; list the common ones explicitly.
_REGIONS = {"zh-CN": "zh", "zh-TW": "zh", "zh-HK": "zh"}
I18N = gr.I18n(**TRANSLATIONS, **{region: TRANSLATIONS[lang] for region, lang in _REGIONS.items()})
T = I18N


def language(request: gr.Request | None) -> str:
    """The browser's preferred language (the first Accept-Language tag, e.g. 'zh' for zh-CN) when there is a file for
    it, else 'en'."""
    header = ""
    if request is not None and request.headers is not None:
        header = request.headers.get("accept-language", "") or ""
    first = re.split(r"[-_;]", header.split(",")[0].strip().lower())[0]
    return first if first in TRANSLATIONS else "en"


def tr(request: gr.Request | None, key: str, **fmt) -> str:
    """A server-side string in the request's language, formatted with `fmt`."""
    text = TRANSLATIONS[language(request)][key]
    return text.format(**fmt) if fmt else text


def localized(render, *args):
    """An initial value computed per page load, so server-side text comes in the browser's language:
    gr.HTML(localized(progress_html, None)) renders progress_html(None, request) for each visitor."""

    def value(request: gr.Request = None) -> str:  # None when gradio renders the value at build time
        return render(*args, request)

    return value


def both(key: str) -> str:
    """A string in both languages, "Prompt · 提示", where Gradio shows text as is (a Dataframe's column headers do
    not go through gr.I18n: they would show its metadata)."""
    english, chinese = STRINGS[key]
    return f"{english} · {chinese}"
