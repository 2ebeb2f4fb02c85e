"""Human feedback on a random tiny Llama with SmolLM2's real tokenizer: the DPO loss's sign and margins, the reward
model on a separable preference, KL from the reference, JSONL round trips and bad input."""
from __future__ import annotations

import json
import math

import pytest
import torch

from chat import feedback, reward, tuning
from chat.feedback import DPOSettings, Preference
from chat.tuning import TuningError
from tests.tuning_helpers import tiny_loaded

# a preference any model can see: the chosen answer says "yes", the rejected one "no"
PAIRS = [Preference(f"Question {i}?", f"Yes, yes, yes {i}.", f"No, no, no {i}.") for i in range(8)]
HELD_OUT = [Preference(f"Another question {i}?", f"Yes, yes, yes {i + 50}.", f"No, no, no {i + 50}.")
            for i in range(6)]
QUICK = DPOSettings(beta=0.1, learning_rate=5e-3, max_steps=6, batch_size=4, lora_r=4, max_seconds=120)


@pytest.fixture(scope="module")
def tiny():
    return tiny_loaded()


def test_dpo_starts_at_log_2_and_moves_the_margin_toward_the_chosen_answers(tiny):
    run = feedback.start_run(PAIRS, "", QUICK, base=tiny, kl_texts=[(p.prompt, p.chosen) for p in PAIRS[:2]])
    run.wait(120)
    assert run.status == "done", run.error
    first, last = run.logs[0], run.logs[-1]
    # at step 1 the policy is the reference (LoRA's B starts at zero): every implicit reward is 0, loss = log 2
    assert first["loss"] == pytest.approx(math.log(2), abs=1e-3)
    assert first["rewards/chosen"] == pytest.approx(0, abs=1e-3)
    assert first["rewards/margins"] == pytest.approx(0, abs=1e-3)
    # then chosen answers gain probability relative to rejected ones: a positive margin, a falling loss
    assert last["rewards/margins"] > 0.05 and last["rewards/accuracies"] >= 0.75
    assert last["rewards/chosen"] > last["rewards/rejected"]
    assert last["loss"] < first["loss"]
    # the KL from the reference is logged, and the policy has moved away from it
    kls = [e["kl"] for e in run.logs if "kl" in e]
    assert kls and kls[-1] > 0


def log_ratio(model, tokenizer, prompt: str, answer: str) -> float:
    """log π(answer | prompt) − log π_ref(answer | prompt), over the answer's tokens (π_ref: the adapter off)."""
    ids, head = reward._render(tokenizer, prompt, answer, "")
    x = torch.tensor([ids])
    targets = x[0, head:, None]
    with torch.inference_mode():
        policy = torch.log_softmax(model(input_ids=x).logits[0, head - 1:-1], -1).gather(1, targets).sum()
        with model.disable_adapter():
            ref = torch.log_softmax(model(input_ids=x).logits[0, head - 1:-1], -1).gather(1, targets).sum()
    return float(policy - ref)


def test_swapping_chosen_and_rejected_reverses_the_direction(tiny):
    margins = {}
    for name, pairs in (("as labelled", PAIRS), ("swapped", [Preference(p.prompt, p.rejected, p.chosen)
                                                             for p in PAIRS])):
        run = feedback.start_run(pairs, "", QUICK, base=tiny, kl_texts=[])
        run.wait(120)
        assert run.logs[-1]["rewards/margins"] > 0.05  # the margin favours whatever is labelled chosen
        held = HELD_OUT[0]  # never trained on: does "yes" beat "no" relative to the reference?
        margins[name] = (log_ratio(run.model, tiny.tokenizer, held.prompt, held.chosen)
                         - log_ratio(run.model, tiny.tokenizer, held.prompt, held.rejected))
    assert margins["as labelled"] > 0 > margins["swapped"]


def test_kl_from_the_reference_is_zero_before_training_and_positive_after(tiny):
    model = tuning.lora_model(tiny.model, tuning.LoraSettings(r=4, alpha=8))
    texts = [(p.prompt, p.chosen) for p in PAIRS[:3]]
    assert feedback.kl_from_reference(model, tiny.tokenizer, texts) == pytest.approx(0, abs=1e-6)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    assert feedback.kl_from_reference(model, tiny.tokenizer, texts) > 1e-4


def test_the_reward_model_learns_a_separable_preference(tiny):
    rm = reward.fit(tiny.model, tiny.tokenizer, feedback.triples(PAIRS))
    assert rm.train_accuracy == 1.0
    assert reward.accuracy(rm, tiny.model, tiny.tokenizer, feedback.triples(HELD_OUT)) >= 5 / 6
    yes, no = reward.scores(rm, tiny.model, tiny.tokenizer, [("Q?", "Yes, yes, yes 7."), ("Q?", "No, no, no 7.")])
    assert yes > no
    # swapping the labels swaps the ranking: it learned the preference, not a constant
    flipped = reward.fit(tiny.model, tiny.tokenizer, [(p, r, c) for p, c, r in feedback.triples(PAIRS)])
    assert reward.accuracy(flipped, tiny.model, tiny.tokenizer, feedback.triples(HELD_OUT)) <= 1 / 6


def test_the_feature_pass_stops_at_its_layer_and_equals_the_full_pass(tiny):
    ids = torch.tensor([tiny.tokenizer("Hello there, friend.")["input_ids"]])
    mask = torch.ones_like(ids)
    with torch.inference_mode():
        full = tiny.model(input_ids=ids, output_hidden_states=True).hidden_states
        assert torch.allclose(reward._residual_stream(tiny.model, 1, ids, mask), full[1], atol=1e-6)


def test_preference_jsonl_round_trip_strings_and_chat_messages():
    text = feedback.to_jsonl(PAIRS[:2])
    row = json.loads(text.splitlines()[0])
    assert row == {"prompt": [{"role": "user", "content": "Question 0?"}],
                   "chosen": [{"role": "assistant", "content": "Yes, yes, yes 0."}],
                   "rejected": [{"role": "assistant", "content": "No, no, no 0."}]}
    assert feedback.from_jsonl(text) == (PAIRS[:2], "")
    plain = json.dumps({"prompt": "Hi?", "chosen": "Hello!", "rejected": "Go away."})
    assert feedback.from_jsonl(plain) == ([Preference("Hi?", "Hello!", "Go away.")], "")
    with_system = feedback.to_jsonl(PAIRS[:1], "Be kind.")
    assert feedback.from_jsonl(with_system) == (PAIRS[:1], "Be kind.")


@pytest.mark.parametrize("text", ["", "{", json.dumps({"prompt": "x", "chosen": "y"}),
                                  json.dumps({"prompt": "x", "chosen": 3, "rejected": "z"}),
                                  json.dumps({"prompt": [{"role": "assistant", "content": "x"}], "chosen": "y",
                                              "rejected": "z"}),
                                  json.dumps(["prompt", "chosen", "rejected"])])
def test_malformed_preference_jsonl_is_refused(text):
    with pytest.raises(TuningError) as error:
        feedback.from_jsonl(text)
    assert error.value.code == "jsonl"


@pytest.mark.parametrize("pairs, code", [
    (PAIRS[:3], "too_few_pairs"),
    (PAIRS[:4] + [Preference("Q?", "Same answer.", "Same answer.")], "same"),
    (PAIRS[:4] + [Preference("Q?", "", "No.")], "empty_field"),
    (PAIRS[:4] + [Preference("Q?", "y" * 5000, "No.")], "too_long"),
    (PAIRS * 9, "too_many"),
])
def test_bad_pairs_are_refused_before_any_work(tiny, pairs, code):
    with pytest.raises(TuningError) as error:
        feedback.start_run(pairs, "", QUICK, base=tiny)
    assert error.value.code == code
    assert not tuning.training_busy()


def test_dpo_and_fine_tuning_share_the_one_training_slot(tiny):
    from chat import finetune

    first = feedback.start_run(PAIRS, "", DPOSettings(**{**QUICK.__dict__, "max_steps": 200}), base=tiny,
                               kl_texts=[])
    try:
        with pytest.raises(TuningError) as refused:
            finetune.start_run([finetune.Demonstration("a", "b")] * 2, "", finetune.SFTSettings(max_steps=1),
                               base=tiny)
        assert refused.value.code == "busy" and refused.value.details["kind"] == "dpo"
    finally:
        first.stop.set()
        first.wait(60)
    assert first.status == "stopped" and not tuning.training_busy()


def test_tuning_and_the_other_tabs_training_share_the_servers_training_slot(tiny):
    """MNIST and Tiny GPT train under chat.budget's "training" slot; a DPO or SFT run takes the same slot, so the
    two never train at once, whichever started first, and the one that comes second is told why."""
    from chat import budget, finetune

    with budget.slot("training", wait_s=0):  # MNIST (or Tiny GPT) is training
        with pytest.raises(TuningError) as refused:
            finetune.start_run([finetune.Demonstration("a", "b")] * 2, "", finetune.SFTSettings(max_steps=1),
                               base=tiny)
        assert refused.value.code == "busy_other" and not tuning.training_busy()
    first = feedback.start_run(PAIRS, "", DPOSettings(**{**QUICK.__dict__, "max_steps": 200}), base=tiny,
                               kl_texts=[])
    try:
        assert budget.running("training") == 1
        with pytest.raises(budget.BusyError):  # MNIST's or Tiny GPT's start now
            with budget.slot("training", wait_s=0):
                pass
    finally:
        first.stop.set()
        first.wait(60)
    assert budget.running("training") == 0


def test_presets_are_valid_and_hold_out_pairs_they_never_train_on():
    for key in feedback.PRESETS:
        p = feedback.preset(key)
        feedback.validate_pairs(p.pairs)
        feedback.validate_settings(p.settings)
        assert len(p.held_out_pairs) >= 6 and len(p.held_out) >= 4
        assert not {x.prompt for x in p.pairs} & {x.prompt for x in p.held_out_pairs}
    assert feedback.preset("overoptimise").pairs == feedback.preset("friendly").pairs
    assert feedback.preset("overoptimise").settings.learning_rate > feedback.preset("friendly").settings.learning_rate
