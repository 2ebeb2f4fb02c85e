"""Which stage did this: token ranks under the stage before (checked against a hand computation), URIAL's classes,
the Wilson interval, and the blind comparison's hidden order and tally. Fast: tiny hand-made and random models."""
from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from chat.training import compare

# a bigram "model": the logits of the next token depend only on the current one (5 tokens)
TABLE = torch.tensor([
    [0.1, 2.0, 1.0, 0.5, -1.0],  # after 0: ranks of tokens 0..4 = 4, 1, 2, 3, 5
    [3.0, 0.0, 0.0, 1.0, 2.0],  # after 1: 1, 4, 4, 3, 2 (tokens 1 and 2 tie: both rank 4)
    [0.0, 0.0, 0.0, 0.0, 5.0],  # after 2: 2, 2, 2, 2, 1
    [1.0, 2.0, 3.0, 4.0, 5.0],  # after 3: 5, 4, 3, 2, 1
    [5.0, 4.0, 3.0, 2.0, 1.0],  # after 4: 1, 2, 3, 4, 5
])


class Bigram(torch.nn.Module):
    """A causal LM with transformers' call signature whose next-token logits are TABLE[current token]."""

    def __init__(self, context: int):
        super().__init__()
        self.config = SimpleNamespace(n_positions=context)
        self.device = torch.device("cpu")
        self.calls = []

    def forward(self, input_ids):
        self.calls.append(input_ids.shape[1])
        return SimpleNamespace(logits=TABLE[input_ids])


def test_ranks_match_a_hand_computation():
    # prompt [0]; answer 1 (after 0: rank 1), 4 (after 1: rank 2), 0 (after 4: rank 1), 3 (after 0: rank 3),
    # 2 (after 3: rank 3), 4 (after 2: rank 1), 1 (after 4: rank 2)
    ranks = compare.token_ranks(Bigram(context=64), [0], [1, 4, 0, 3, 2, 4, 1])
    assert ranks == [1, 2, 1, 3, 3, 1, 2]
    # ties share the better rank: after 1, tokens 1 and 2 both score 0.0, below 0 (3.0), 4 (2.0) and 3 (1.0)
    assert compare.token_ranks(Bigram(context=64), [3, 1], [1]) == [4]
    assert compare.token_ranks(Bigram(context=64), [3, 1], [2]) == [4]
    assert compare.token_ranks(Bigram(context=64), [0], []) == []


def test_text_longer_than_the_context_is_read_in_overlapping_windows():
    answer = [1, 4, 0, 3, 2, 4, 1] * 3
    model = Bigram(context=6)
    assert compare.token_ranks(model, [0], answer) == compare.token_ranks(Bigram(context=64), [0], answer)
    assert max(model.calls) <= 6 and len(model.calls) > 1


def test_ranks_of_a_real_gpt2_equal_sorting_its_logits():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=50, n_positions=16, n_embd=16, n_layer=1, n_head=2)).eval()
    prompt, answer = [3, 7, 9], [11, 2, 40, 5, 5, 17]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([prompt + answer])).logits[0]
    expected = []
    for i, token in enumerate(answer):
        row = logits[len(prompt) - 1 + i]
        order = row.argsort(descending=True).tolist()
        expected.append(order.index(token) + 1)
    assert compare.token_ranks(model, prompt, answer) == expected
    long_answer = answer * 3  # 3 + 18 tokens > 16 positions: windows
    assert len(compare.token_ranks(model, prompt, long_answer)) == len(long_answer)


def test_urial_classes_and_shares():
    assert [compare.shift_kind(r) for r in (1, 2, 3, 4, 100)] == ["unshifted", "marginal", "marginal", "shifted",
                                                                  "shifted"]
    shares = compare.shift_shares([1, 1, 2, 3, 7, 1, 1, 1])
    assert shares == {"unshifted": 5 / 8, "marginal": 2 / 8, "shifted": 1 / 8}
    assert all(math.isnan(v) for v in compare.shift_shares([]).values())


def test_wilson_interval_matches_the_textbook_values():
    low, high = compare.wilson_interval(7, 10)
    assert low == pytest.approx(0.3968, abs=1e-4) and high == pytest.approx(0.8922, abs=1e-4)
    assert compare.wilson_interval(0, 5)[0] == 0.0 and compare.wilson_interval(5, 5)[1] == 1.0
    low, high = compare.wilson_interval(71, 100)  # InstructGPT's 71%
    assert low < 0.71 < high and high - low < 0.2
    assert all(math.isnan(v) for v in compare.wilson_interval(0, 0))


def test_blind_test_hides_the_order_and_counts_the_later_stages_wins():
    rows = [(f"q{i}", f"old{i}", f"new{i}") for i in range(20)]
    judge = lambda prompt, answer: len(answer) + (1 if answer.startswith("new") else 0)
    test = compare.BlindTest.of("sft", "rl", rows, seed=1, judge=judge)
    orders = [p.later_first for p in test.pairs]
    assert 0 < sum(orders) < len(orders)  # both orders occur
    assert compare.BlindTest.of("sft", "rl", rows, seed=1).pairs[0].later_first == orders[0]  # seeded
    for index in range(10):  # the user always picks the later stage's answer...
        _, pair = test.current()
        first, second = pair.shown
        assert {first, second} == {pair.earlier, pair.later}
        test.vote(index, picked_first=first.startswith("new"))
    for index in range(10, 15):  # ...then the earlier stage's
        _, pair = test.current()
        test.vote(index, picked_first=pair.shown[0].startswith("old"))
    result = test.result()
    assert result["votes"] == 15 and result["later_wins"] == 10
    assert result["win_rate"] == pytest.approx(10 / 15)
    assert result["low"] < 10 / 15 < result["high"]
    assert result["judge_win_rate"] == 1.0 and result["judged"] == 15
    assert test.current()[0] == 15
