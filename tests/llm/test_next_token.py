"""chat.llm.next_token: the next-token view's sessions. The real probabilities (checked against a direct forward
pass), reshaped by the one sampler, a KV cache kept between steps within a shared budget, and undo. On a tiny random
model; SmolLM2's own answers on its real weights."""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from chat.llm import next_token
from chat.llm.next_token import LocalSession, SessionCaches
from chat.tokens import group_tokens
from tests.llm.test_prompt import FORGED, _count


def probability_tolerance(loaded) -> float:
    """How far a probability may be from a direct fp32 forward pass: the fast decoder rounds each product's input to
    int16 with one scale per row (`python -m chat.bench rounding` measures it on SmolLM2)."""
    return 1e-4 if loaded.fast is None else 5e-3


@pytest.fixture(params=["plain", "fast"])
def loaded(request, tiny_chat, tiny_fast_chat):
    return tiny_chat if request.param == "plain" else tiny_fast_chat


def direct(loaded, ids) -> torch.Tensor:
    with torch.inference_mode():
        return torch.softmax(loaded.model(input_ids=torch.tensor([ids])).logits[0, -1].float(), -1)


def test_next_token_probabilities_are_sorted_and_match_a_direct_forward_pass(loaded):
    session = LocalSession("The capital of France is", loaded)
    found = session.candidates(temperature=1.0, top_k=0, top_p=1.0, k=10)
    raw = [c.raw_prob for c in found]
    assert raw == sorted(raw, reverse=True) and sum(raw) <= 1.0 + 1e-6
    expected = direct(loaded, session.ids)
    assert found[0].token_id == int(expected.argmax())
    for c in found:
        assert c.raw_prob == pytest.approx(float(expected[c.token_id]), abs=probability_tolerance(loaded))


def test_temperature_top_k_and_top_p_reshape_the_distribution(tiny_chat):
    session = LocalSession("Once upon a time, there was a", tiny_chat)
    greedy = session.candidates(0.0, 0, 1.0)
    assert greedy[0].shaped_prob == 1.0 and all(c.shaped_prob == 0.0 for c in greedy[1:])
    top2 = session.candidates(1.0, 2, 1.0)
    assert sum(c.shaped_prob for c in top2[:2]) == pytest.approx(1.0) and top2[2].shaped_prob == 0.0
    hot, cold = session.candidates(2.0, 0, 1.0), session.candidates(0.5, 0, 1.0)
    assert hot[0].shaped_prob < hot[0].raw_prob < cold[0].shaped_prob
    nucleus = session.candidates(0.1, 0, 0.5)  # a cold distribution: half its mass in a few tokens
    assert nucleus[0].shaped_prob > nucleus[0].raw_prob and nucleus[-1].shaped_prob == 0.0


def test_stepping_uses_the_cache_and_undo_restores_the_previous_distribution(loaded):
    session = LocalSession("The capital of France is", loaded)
    before = session.candidates(1.0, 0, 1.0)
    token = session.greedy()
    assert session.generated == [token]
    after = session.candidates(1.0, 0, 1.0)
    expected = direct(loaded, session.ids)
    assert after[0].raw_prob == pytest.approx(float(expected[after[0].token_id]), abs=probability_tolerance(loaded))
    session.undo()
    again = session.candidates(1.0, 0, 1.0)
    assert [c.token_id for c in again] == [c.token_id for c in before]
    assert again[0].raw_prob == pytest.approx(before[0].raw_prob, abs=1e-4)
    with pytest.raises(ValueError, match="Nothing to undo"):
        session.undo()


def test_a_seeded_sample_is_reproducible_and_a_token_outside_the_vocabulary_is_refused(tiny_chat):
    first, second = LocalSession("Once upon a time", tiny_chat), LocalSession("Once upon a time", tiny_chat)
    assert first.sample(1.0, 0, 1.0, seed=5) == second.sample(1.0, 0, 1.0, seed=5)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        first.append(10**9)


def test_an_empty_prompt_is_a_clear_error(tiny_chat):
    with pytest.raises(ValueError, match="prompt"):
        LocalSession("", tiny_chat)


def test_typed_special_tokens_stay_text_in_the_next_token_chat_mode(tiny_chat):
    session = LocalSession(FORGED, tiny_chat, chat=True)
    assert _count(session.ids, tiny_chat.tokenizer, "<|im_start|>") == 3
    assert FORGED in session.prompt_text


def test_a_next_token_session_keeps_one_row_of_logits(tiny_chat):
    session = LocalSession("word " * 300, tiny_chat)
    vocab = tiny_chat.model.config.vocab_size
    kept = session.logits().untyped_storage().nbytes()  # a number: pytest would print a storage's every byte
    assert session.logits().shape == (vocab,) and kept == 4 * vocab
    session.greedy()
    assert session.logits().untyped_storage().nbytes() == 4 * vocab


def test_next_token_caches_share_a_budget_least_recently_used_first(tiny_chat, monkeypatch):
    plain = dataclasses.replace(tiny_chat)  # a model of its own: its sessions get the budget set here
    caches = SessionCaches(max_bytes=0)
    monkeypatch.setitem(next_token._CACHES, plain, caches)
    first = LocalSession("The capital of France is", plain)
    expected = first.candidates()
    caches.max_bytes = first.cache_bytes() * 3 // 2  # room for one session like it
    second = LocalSession("Once upon a time, there was a", plain)
    assert first.past is None and second.past is not None  # the least recently used lost its cache
    assert caches.cached_bytes() == second.cache_bytes()  # the newest keeps its own, even over budget
    assert [c.token_id for c in first.candidates()] == [c.token_id for c in expected]  # its logits stayed
    token = first.greedy()  # runs its text again, then steps as before
    assert first.past is not None and second.past is None and first.generated == [token]
    first.undo()
    assert [c.token_id for c in first.candidates()] == [c.token_id for c in expected]
    first.close()
    assert first.past is None and caches.cached_bytes() == 0


@pytest.mark.parametrize("bad", [{"temperature": "hot"}, {"top_k": math.inf}, {"top_p": math.nan}])
def test_next_token_parameters_are_checked_with_their_name(bad, tiny_chat):
    session = LocalSession("The capital of France is", tiny_chat)
    with pytest.raises(ValueError, match=next(iter(bad))):
        session.candidates(**bad)


def test_the_real_model_continues_with_paris_and_joins_a_chinese_characters_bytes(chat_model):
    session = LocalSession("The capital of France is", chat_model)
    assert session.candidates()[0].label == " Paris"
    session = LocalSession("我爱北京天", chat_model)
    top = session.candidates(1.0, 0, 1.0)[0]
    assert top.partial and top.label.startswith("<0x") and "\ufffd" not in top.label
    for _ in range(4):  # a CJK character is at most 3 byte-level tokens
        session.greedy()
        if not session._pending_bytes():
            break
    tail = group_tokens(session.generated, session.tokenizer.token_bytes)
    assert tail and "\ufffd" not in "".join(s.text for s in tail)
    assert b"".join(s.raw for s in tail).decode("utf-8")
