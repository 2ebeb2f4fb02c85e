"""How a before/after table judges an answer: right-answer words, and whether it degenerated into a loop."""
from __future__ import annotations

import pytest

from chat.training.answers import is_right, loops


@pytest.mark.parametrize("answer, looped", [
    ("L'Étoile, la Marseillaise, la femme, la femme au martyre. La femme au martyre, la femme au martyre, la femme "
     "au martyre.", True),  # what the base model said to "What is the capital of France?" for 2 seeds of 3
    ("The capital of France is Paris.", False),
    ("1. Apple: a fruit that is red. 2. Banana: a fruit that is yellow. 3. Orange: a fruit that is orange.", False),
    ("北京是中国的首都，北京是中国的首都，北京是中国的首都，北京是中国的首都。", True),
    ("北京是中国的首都，也是中国的政治和文化中心。", False),
    ("", False),
])
def test_a_loop_is_six_words_or_twelve_characters_coming_back_three_times(answer, looped):
    assert loops(answer) is looped


def test_right_answers_are_found_by_any_of_their_words_in_any_case():
    assert is_right("It is PARIS.", ["Paris"]) and is_right("Sieben Tage: 7", ["seven", "7"])
    assert not is_right("Lyon.", ["Paris"])
