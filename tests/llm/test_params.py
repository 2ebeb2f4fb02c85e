"""chat.llm.params: generation settings from forms and API clients, checked with their names; the model's defaults."""
from __future__ import annotations

import dataclasses
import math

import pytest

from chat.llm import models
from chat.llm.params import LIMITS, GenerationParams, validate


@pytest.mark.parametrize("name, value", [
    ("temperature", "hot"), ("temperature", math.nan), ("temperature", math.inf), ("top_p", "1e999"),
    ("top_k", 2.5), ("top_k", True), ("max_new_tokens", math.inf), ("max_new_tokens", [8]),
    ("repetition_penalty", {"x": 1}), ("seed", math.nan), ("seed", "seven"), ("seed", 2**40),
])
def test_form_and_api_values_are_checked_with_their_name(name, value):
    with pytest.raises(ValueError, match=name):
        GenerationParams.from_inputs(**{name: value})


@pytest.mark.parametrize("change", [
    {"temperature": -0.1}, {"temperature": 2.5}, {"temperature": math.nan}, {"top_p": 0.0}, {"top_p": 1.5},
    {"top_k": -1}, {"top_k": 2.5}, {"max_new_tokens": 0}, {"max_new_tokens": 100_000},
    {"repetition_penalty": 0.0}, {"repetition_penalty": 9.0}, {"seed": -5}, {"temperature": "hot"},
])
def test_out_of_range_parameters_are_rejected_with_their_name(change):
    with pytest.raises(ValueError, match=next(iter(change))):
        validate(dataclasses.replace(GenerationParams(), **change))


def test_form_values_are_read_as_numbers_and_a_negative_seed_means_random():
    params = GenerationParams.from_inputs(temperature="0.5", top_p=0.8, top_k=20.0, max_new_tokens="32",
                                          repetition_penalty=1, seed=-1)
    assert params == GenerationParams(0.5, 0.8, 20, 32, 1.0, None)
    assert GenerationParams.from_inputs(seed="42").seed == 42
    assert GenerationParams.from_inputs() == GenerationParams()


def test_every_limit_admits_its_default_and_its_ends():
    for name, (low, high) in LIMITS.items():
        for value in (low, high):
            validate(dataclasses.replace(GenerationParams(), **{name: value}))


def test_chat_defaults_are_the_model_cards_and_a_folders_generation_config_wins(tmp_path):
    defaults = models.chat_defaults(models.DEFAULT_MODEL)
    assert (defaults.temperature, defaults.top_p, defaults.top_k, defaults.repetition_penalty) == (0.2, 0.9, 50, 1.0)
    assert defaults == GenerationParams()
    (tmp_path / "generation_config.json").write_text('{"do_sample": true, "temperature": 0.6, "top_p": 0.95}')
    (tmp_path / "config.json").write_text("{}")
    folder = models.chat_defaults(str(tmp_path))
    assert (folder.temperature, folder.top_p, folder.repetition_penalty) == (0.6, 0.95, 1.0)
