"""Human feedback on a random tiny Llama with SmolLM2's real tokenizer: the DPO loss's sign and margins, the reward
model on a separable preference, KL from the reference, JSONL round trips and bad input."""
from __future__ import annotations

import json
import math

import pytest
import torch

from chat.feedback import dpo, preferences, reward
from chat.feedback.preferences import DPOSettings, Preference
from chat.training import lora, run as runs
from chat.training.run import TrainingError
from tests.conftest import tiny_loaded

# a preference any model can see: the chosen answer says "yes", the rejected one "no"
PAIRS = [Preference(f"Question {i}?", f"Yes, yes, yes {i}.", f"No, no, no {i}.") for i in range(8)]
HELD_OUT = [Preference(f"Another question {i}?", f"Yes, yes, yes {i + 50}.", f"No, no, no {i + 50}.")
            for i in range(6)]
QUICK = DPOSettings(beta=0.1, learning_rate=5e-3, max_steps=6, batch_size=4, lora_r=4, max_seconds=120)


@pytest.fixture(scope="module")
def tiny(tokenizer):
    return tiny_loaded(tokenizer)


def test_dpo_starts_at_log_2_and_moves_the_margin_toward_the_chosen_answers(tiny):
    run = dpo.start_run(PAIRS, "", QUICK, base=tiny, kl_texts=[(p.prompt, p.chosen) for p in PAIRS[:2]])
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
        run = dpo.start_run(pairs, "", QUICK, base=tiny, kl_texts=[])
        run.wait(120)
        assert run.logs[-1]["rewards/margins"] > 0.05  # the margin favours whatever is labelled chosen
        held = HELD_OUT[0]  # never trained on: does "yes" beat "no" relative to the reference?
        margins[name] = (log_ratio(run.model, tiny.tokenizer, held.prompt, held.chosen)
                         - log_ratio(run.model, tiny.tokenizer, held.prompt, held.rejected))
    assert margins["as labelled"] > 0 > margins["swapped"]


def test_kl_from_the_reference_is_zero_before_training_and_positive_after(tiny):
    model = lora.lora_model(tiny.model, lora.LoraSettings(r=4, alpha=8))
    texts = [(p.prompt, p.chosen) for p in PAIRS[:3]]
    assert dpo.kl_from_reference(model, tiny.tokenizer, texts) == pytest.approx(0, abs=1e-6)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    assert dpo.kl_from_reference(model, tiny.tokenizer, texts) > 1e-4


def test_the_reward_model_learns_a_separable_preference(tiny):
    rm = reward.fit(tiny.model, tiny.tokenizer, preferences.triples(PAIRS))
    assert rm.train_accuracy == 1.0
    assert reward.accuracy(rm, tiny.model, tiny.tokenizer, preferences.triples(HELD_OUT)) >= 5 / 6
    yes, no = reward.scores(rm, tiny.model, tiny.tokenizer, [("Q?", "Yes, yes, yes 7."), ("Q?", "No, no, no 7.")])
    assert yes > no
    # swapping the labels swaps the ranking: it learned the preference, not a constant
    flipped = reward.fit(tiny.model, tiny.tokenizer, [(p, r, c) for p, c, r in preferences.triples(PAIRS)])
    assert reward.accuracy(flipped, tiny.model, tiny.tokenizer, preferences.triples(HELD_OUT)) <= 1 / 6


def test_the_feature_pass_stops_at_its_layer_and_equals_the_full_pass(tiny):
    ids = torch.tensor([tiny.tokenizer("Hello there, friend.")["input_ids"]])
    mask = torch.ones_like(ids)
    with torch.inference_mode():
        full = tiny.model(input_ids=ids, output_hidden_states=True).hidden_states
        assert torch.allclose(reward._residual_stream(tiny.model, 1, ids, mask), full[1], atol=1e-6)


def test_preference_jsonl_round_trip_strings_and_chat_messages():
    text = preferences.to_jsonl(PAIRS[:2])
    row = json.loads(text.splitlines()[0])
    assert row == {"prompt": [{"role": "user", "content": "Question 0?"}],
                   "chosen": [{"role": "assistant", "content": "Yes, yes, yes 0."}],
                   "rejected": [{"role": "assistant", "content": "No, no, no 0."}]}
    assert preferences.from_jsonl(text) == (PAIRS[:2], "")
    plain = json.dumps({"prompt": "Hi?", "chosen": "Hello!", "rejected": "Go away."})
    assert preferences.from_jsonl(plain) == ([Preference("Hi?", "Hello!", "Go away.")], "")
    with_system = preferences.to_jsonl(PAIRS[:1], "Be kind.")
    assert preferences.from_jsonl(with_system) == (PAIRS[:1], "Be kind.")


@pytest.mark.parametrize("text", ["", "{", json.dumps({"prompt": "x", "chosen": "y"}),
                                  json.dumps({"prompt": "x", "chosen": 3, "rejected": "z"}),
                                  json.dumps({"prompt": [{"role": "assistant", "content": "x"}], "chosen": "y",
                                              "rejected": "z"}),
                                  json.dumps(["prompt", "chosen", "rejected"])])
def test_malformed_preference_jsonl_is_refused(text):
    with pytest.raises(TrainingError) as error:
        preferences.from_jsonl(text)
    assert error.value.code == "jsonl"


@pytest.mark.parametrize("pairs, code", [
    (PAIRS[:3], "too_few_pairs"),
    (PAIRS[:4] + [Preference("Q?", "Same answer.", "Same answer.")], "same"),
    (PAIRS[:4] + [Preference("Q?", "", "No.")], "empty_field"),
    (PAIRS[:4] + [Preference("Q?", "y" * 5000, "No.")], "too_long"),
    (PAIRS * 9, "too_many"),
])
def test_bad_pairs_are_refused_before_any_work(tiny, pairs, code):
    with pytest.raises(TrainingError) as error:
        dpo.start_run(pairs, "", QUICK, base=tiny)
    assert error.value.code == code
    assert runs.holder() is None


def test_dpo_and_fine_tuning_share_the_one_training_slot(tiny):
    from chat.finetune import data as sft_data, train as sft

    first = dpo.start_run(PAIRS, "", DPOSettings(**{**QUICK.__dict__, "max_steps": 200}), base=tiny,
                          kl_texts=[])
    try:
        with pytest.raises(runs.Busy) as refused:
            sft.start_run([sft_data.Demonstration("a", "b")] * 2, "", sft_data.SFTSettings(max_steps=1),
                          base=tiny)
        assert refused.value.holder is first and "(dpo)" in str(refused.value)
    finally:
        first.stop.set()
        first.wait(60)
    assert first.status == "stopped" and runs.holder() is None


def test_tuning_and_the_other_tabs_training_share_the_servers_training_slot(tiny):
    """MNIST and Tiny GPT train under chat.budget's "training" slot; a DPO or SFT run takes the same slot, so the
    two never train at once, whichever started first, and the one that comes second is told why."""
    from chat import budget
    from chat.finetune import data as sft_data, train as sft
    from chat.training.run import Run

    mnist = Run(kind="mnist", max_seconds=30)
    runs.claim(mnist)  # MNIST (or Tiny GPT) is training
    try:
        with pytest.raises(runs.Busy) as refused:
            sft.start_run([sft_data.Demonstration("a", "b")] * 2, "", sft_data.SFTSettings(max_steps=1),
                          base=tiny)
        assert refused.value.holder is mnist and "(mnist)" in str(refused.value)
    finally:
        runs.release(mnist)
    first = dpo.start_run(PAIRS, "", DPOSettings(**{**QUICK.__dict__, "max_steps": 200}), base=tiny,
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
    for key in preferences.PRESETS:
        p = preferences.preset(key)
        preferences.validate_pairs(p.pairs)
        preferences.validate_settings(p.settings)
        assert len(p.held_out_pairs) >= 6 and len(p.held_out) >= 4
        assert not {x.prompt for x in p.pairs} & {x.prompt for x in p.held_out_pairs}
    assert preferences.preset("overoptimise").pairs == preferences.preset("friendly").pairs
    assert preferences.preset("overoptimise").settings.learning_rate > preferences.preset("friendly").settings.learning_rate


def test_a_presenters_own_prompts_are_read_one_per_line_and_bounded():
    assert preferences.own_prompts("  Why do cats purr?\n\n  List two colours. \n") == ["Why do cats purr?",
                                                                                        "List two colours."]
    assert preferences.own_prompts("") == [] and preferences.own_prompts("  \n ") == []
    with pytest.raises(TrainingError) as refused:
        preferences.own_prompts("x" * 10_000)
    assert refused.value.code == "prompt_long" and "1500" in str(refused.value)
    with pytest.raises(TrainingError) as refused:
        preferences.own_prompts("\n".join(f"Question {i}?" for i in range(5)))
    assert refused.value.code == "too_many_prompts"


def test_the_chosen_answers_next_token_loss_can_join_dpos(tiny_chat):
    """sft_weight > 0 adds TRL's "sft" loss on the chosen answers to DPO's: the run logs the same curves, and the
    chosen answers end up likelier than with DPO alone."""
    pairs = [Preference(f"Name a colour, {i}.", "Blue.", "Blue is a lovely colour, like the sky.") for i in range(4)]
    chosen_logps = {}
    for weight in (0.0, 1.0):
        run = dpo.start_run(pairs, "", DPOSettings(max_steps=4, batch_size=2, lora_r=4, learning_rate=5e-3,
                                                   sft_weight=weight), tiny_chat)
        run.wait(120)
        assert run.status == "done", run.error
        assert math.isfinite(run.last("rewards/margins")) and math.isfinite(run.last("kl"))
        chosen_logps[weight] = run.last("logps/chosen")
    assert chosen_logps[1.0] > chosen_logps[0.0]
    with pytest.raises(TrainingError):
        preferences.validate_settings(DPOSettings(sft_weight=5.0))
