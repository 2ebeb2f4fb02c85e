"""The Chat tab's "show probabilities" view: buckets, what a click shows, and what a continuation keeps."""
from __future__ import annotations

import gradio as gr
import pytest

from chat.llm.sampling import TokenChoice
from chat.ui import chat_probabilities as probabilities

REPLY = [TokenChoice(10, "The", 0.62, 0.2, ((10, "The", 0.2), (11, "La", 0.18), (12, "L", 0.12))),
         TokenChoice(20, " capital", 0.97, 0.9, ((20, " capital", 0.9), (21, " city", 0.05), (22, "\n", 0.01))),
         TokenChoice(30, " Paris", 0.05, 0.01, ((31, " Lyon", 0.4), (32, " Nice", 0.3), (33, " Rome", 0.2)))]


def test_each_token_is_coloured_by_the_probability_it_was_drawn_with():
    assert probabilities.spans(probabilities.record(REPLY)) == [("The", "50–90%"), (" capital", "≥ 90%"),
                                                                 (" Paris", "< 20%")]
    assert set(probabilities.COLORS) == {name for _, name in probabilities.BUCKETS}


def test_a_click_shows_the_alternatives_and_preselects_another_token():
    tokens = probabilities.record(REPLY)
    bars, line, radio, index = probabilities.detail(tokens, 0, None)
    assert index == 0 and bars["value"] == {'"The"': 0.2, '"La"': 0.18, '"L"': 0.12}
    assert "20.0%" in line and "62.0%" in line and "rank 1" in line
    assert radio["value"] == 1 and [label for label, _ in radio["choices"]][1] == '"La" · 18.0%'
    bars, line, _, _ = probabilities.detail(tokens, 2, None)  # drawn from outside the top three: shown too
    assert bars["value"]['" Paris"'] == 0.01 and "rank > 3" in line


def test_a_continuation_keeps_the_tokens_before_the_click_and_takes_the_alternative():
    tokens = probabilities.record(REPLY)
    assert probabilities.prefix(tokens, 2, 1, None) == [10, 20, 32]
    with pytest.raises(gr.Error, match="Click a token"):
        probabilities.prefix(tokens, None, 1, None)
    with pytest.raises(gr.Error, match="Choose the token"):
        probabilities.prefix(tokens, 1, None, None)


def test_a_servers_tokens_are_shown_but_cannot_be_continued():
    server = [TokenChoice(None, "The", 0.5, 0.5, ((None, "The", 0.5), (None, "La", 0.3)))]
    tokens = probabilities.record(server)
    assert probabilities.spans(tokens) == [("The", "50–90%")]
    with pytest.raises(gr.Error, match="cannot be continued"):
        probabilities.prefix(tokens, 0, 1, None)
