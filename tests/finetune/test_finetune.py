"""Fine-tuning (SFT with LoRA through TRL) on a random tiny Llama with SmolLM2's real tokenizer and chat template:
loss masking, shared frozen weights, adapter save/load, stop, NaN guard, the one-run limit, bad input, offline."""
from __future__ import annotations

import json
import socket
import threading
import zipfile

import pytest
import torch

from chat.finetune import data as sft_data, train as sft
from chat.finetune.data import Demonstration, SFTSettings
from chat.llm import backends
from chat.training import lora, run as runs
from chat.training.run import TrainingError
from tests.conftest import tiny_loaded

PAIRS = [Demonstration("Who are you?", "I am Zed."), Demonstration("What is your name?", "My name is Zed."),
         Demonstration("你是谁？", "我是 Zed。"), Demonstration("Introduce yourself.", "Hello, I am Zed.")]
QUICK = SFTSettings(learning_rate=1e-2, max_steps=4, batch_size=2, lora_r=4, max_seconds=120)


@pytest.fixture(scope="module")
def tiny(tokenizer):
    return tiny_loaded(tokenizer)


def train(tiny, pairs=PAIRS, settings=QUICK, **kwargs) -> sft.SFTRun:
    run = sft.start_run(pairs, "", settings, base=tiny, **kwargs)
    run.wait(120)
    assert not run.thread.is_alive()
    return run


def test_the_loss_counts_only_the_response_tokens(tiny):
    run = train(tiny, settings=SFTSettings(max_steps=1, batch_size=1, lora_r=4))
    counted = ["".join(t for t, on in example if on) for example in run.loss_tokens]
    context = ["".join(t for t, on in example if not on) for example in run.loss_tokens]
    # the response and its end-of-turn token are learned; the system prompt and the question are only context
    assert counted[0] == "I am Zed.<|im_end|>\n"
    assert "Who are you?" in context[0] and "<|im_start|>assistant\n" in context[0] and "Zed" not in context[0]
    assert counted[2] == "我是 Zed。<|im_end|>\n"  # byte pieces of Chinese characters are joined


def test_training_moves_only_the_adapter_and_never_the_chat_model(tiny):
    before = {name: p.detach().clone() for name, p in tiny.model.named_parameters()}
    ids = torch.tensor([tiny.tokenizer("Who are you?")["input_ids"]])
    with torch.inference_mode():
        logits_before = tiny.model(ids).logits
    run = train(tiny)
    assert run.status == "done" and run.step == QUICK.max_steps
    assert run.last("loss") < run.first("loss")  # it learned something
    for name, p in tiny.model.named_parameters():
        assert torch.equal(p, before[name]), name
    with torch.inference_mode():
        assert torch.equal(tiny.model(ids).logits, logits_before)
        assert not torch.allclose(run.model(input_ids=ids).logits, logits_before)  # the tuned copy differs
    # the tuned model's frozen weights are the chat model's own tensors (no 540 MB copy per run)
    base_ptrs = {p.data_ptr() for p in tiny.model.parameters()}
    frozen = [p for p in run.model.parameters() if not p.requires_grad]
    assert frozen and all(p.data_ptr() in base_ptrs for p in frozen)


def test_lora_on_the_top_blocks_adapts_only_those_and_backward_stops_there(tiny):
    model = lora.lora_model(tiny.model, lora.LoraSettings(r=4, alpha=8, layers=1))
    adapted = {name.split(".layers.")[1].split(".")[0] for name, p in model.named_parameters() if p.requires_grad}
    assert adapted == {"1"}  # of blocks 0 and 1, only the top one
    ids = torch.tensor([tiny.tokenizer("Who are you?")["input_ids"]])
    seen = []
    hook = model.base_model.model.model.layers[0].register_full_backward_hook(lambda *args: seen.append(True))
    model(input_ids=ids, labels=ids).loss.backward()
    hook.remove()
    assert not seen  # nothing below the adapted blocks needs a gradient


def test_the_zipped_adapter_loads_back_into_the_same_model(tiny, tmp_path):
    from peft import PeftModel

    run = train(tiny)
    path = lora.zip_adapter(run.model, tmp_path / "adapter.zip", {"chatlab.json": json.dumps(sft.summary(run))})
    with zipfile.ZipFile(path) as archive:
        names = set(archive.namelist())
        archive.extractall(tmp_path)
    assert {"adapter/adapter_config.json", "adapter/adapter_model.safetensors", "adapter/chatlab.json"} <= names
    fresh = lora.lora_model(tiny.model, lora.LoraSettings(r=4, alpha=8), seed=123).base_model.model
    loaded = PeftModel.from_pretrained(fresh, tmp_path / "adapter")
    ids = torch.tensor([tiny.tokenizer("Who are you?")["input_ids"]])
    with torch.inference_mode():
        assert torch.allclose(loaded(input_ids=ids).logits, run.model(input_ids=ids).logits, atol=1e-5)


def test_the_tuned_model_is_published_for_its_session_and_reset_forgets_it(tiny):
    run = train(tiny, session="session-a", preset_key="identity")
    tuned = backends.TUNED.get("session-a", "sft")
    assert tuned is not None and tuned.model is run.model and "identity" in tuned.title
    assert backends.TUNED.get("session-b", "sft") is None
    backends.TUNED.drop("session-a", "sft")
    assert backends.TUNED.get("session-a", "sft") is None


def test_stop_ends_training_within_a_step_and_keeps_the_adapter(tiny):
    run = sft.start_run(PAIRS, "", SFTSettings(learning_rate=1e-2, max_steps=200, batch_size=2, lora_r=4),
                             base=tiny)
    while run.step < 2 and run.thread.is_alive():
        run.wait(0.05)
    run.stop.set()
    run.wait(60)
    assert run.status == "stopped" and 2 <= run.step < 200
    assert run.trained and lora.adapter_is_finite(run.model)
    assert runs.holder() is None  # the slot is free again


def test_the_time_budget_stops_training(tiny):
    run = train(tiny, settings=SFTSettings(max_steps=200, batch_size=2, lora_r=4, max_seconds=5))
    assert run.status == "timeout" and run.step < 200 and run.seconds < 30


def test_a_nan_stops_training_and_restores_the_last_good_adapter(tiny):
    """A numerical blow-up (here injected into one LoRA matrix after step 3, as an overflow would leave it) stops the
    run at that step and puts back the adapter of step 2, the last one whose loss and weights were finite."""
    from transformers import TrainerCallback

    snapshots = {}

    class Watch(TrainerCallback):  # runs after the live callback: sees each step's adapter, then poisons step 3
        def on_step_end(self, args, state, control, **kwargs):
            snapshots[state.global_step] = lora.adapter_state(run.model)
            if state.global_step == 3:
                with torch.no_grad():
                    next(p for p in run.model.parameters() if p.requires_grad).fill_(float("nan"))

    run = sft.SFTRun(kind="sft", max_steps=20, max_seconds=120, pairs=PAIRS, settings=QUICK)
    runs.claim(run)
    run.model = lora.lora_model(tiny.model, lora.LoraSettings(r=4, alpha=8))
    make = sft._make_trainer(run, tiny, sft_data.sft_rows(PAIRS))

    def make_watched(callback):
        trainer = make(callback)
        trainer.add_callback(Watch())
        return trainer

    lora.start(run, make_watched).wait(120)
    assert run.status == "diverged" and run.diverged_at == 3 and run.good_step == 2 and run.step == 3
    assert lora.adapter_is_finite(run.model)
    restored = lora.adapter_state(run.model)
    assert all(torch.equal(restored[k], snapshots[2][k]) for k in restored)
    assert runs.holder() is None


def test_a_second_run_is_refused_while_one_trains(tiny):
    first = sft.start_run(PAIRS, "", SFTSettings(max_steps=200, batch_size=2, lora_r=4), base=tiny)
    try:
        with pytest.raises(runs.Busy) as refused:
            sft.start_run(PAIRS, "", QUICK, base=tiny)
        assert refused.value.holder is first and "one run trains at a time" in str(refused.value)
    finally:
        first.stop.set()
        first.wait(60)
    train(tiny, settings=SFTSettings(max_steps=1, batch_size=2, lora_r=4))  # free again afterwards


@pytest.mark.parametrize("pairs, code", [
    ([Demonstration("Who are you?", "Zed")], "too_few"),
    ([Demonstration("", "")] * 5 + [Demonstration("Hi", "Hello")], "too_few"),  # blank rows are not pairs
    ([Demonstration("Who are you?", "")] + PAIRS, "empty"),
    ([Demonstration("x" * (lora.MAX_CHARS + 1), "y")] + PAIRS, "too_long"),
    ([Demonstration("q", "a")] * (sft_data.MAX_PAIRS + 1), "too_many"),
])
def test_bad_pairs_are_refused_with_a_clear_reason(tiny, pairs, code):
    with pytest.raises(TrainingError) as error:
        sft.start_run(pairs, "", QUICK, base=tiny)
    assert error.value.code == code
    assert runs.holder() is None


@pytest.mark.parametrize("change", [{"learning_rate": 1.0}, {"max_steps": 0}, {"max_steps": 2.5},
                                    {"batch_size": 999}, {"max_seconds": float("nan")}, {"lora_r": "8"}])
def test_settings_out_of_range_are_refused(tiny, change):
    settings = SFTSettings(**{**QUICK.__dict__, **change})
    with pytest.raises(TrainingError) as error:
        sft.start_run(PAIRS, "", settings, base=tiny)
    assert error.value.code == "setting"


def test_jsonl_round_trip_in_the_chat_messages_format():
    text = sft_data.to_jsonl(PAIRS, "Be brief.")
    first = json.loads(text.splitlines()[0])
    assert first == {"messages": [{"role": "system", "content": "Be brief."},
                                  {"role": "user", "content": "Who are you?"},
                                  {"role": "assistant", "content": "I am Zed."}]}
    assert sft_data.from_jsonl(text) == (PAIRS, "Be brief.")
    # TRL's prompt/completion rows are read too
    row = json.dumps({"prompt": [{"role": "user", "content": "Hi"}],
                      "completion": [{"role": "assistant", "content": "Hello"}]})
    assert sft_data.from_jsonl(row) == ([Demonstration("Hi", "Hello")], "")


@pytest.mark.parametrize("text, line", [
    ("", 0),
    ("not json", 1),
    (json.dumps({"text": "plain language modelling row"}), 1),
    (json.dumps({"messages": [{"role": "user", "content": "hi"}]}), 1),
    (json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}) + "\n[1, 2]",
     2),
    (json.dumps({"messages": [{"role": "user", "content": 5}, {"role": "assistant", "content": "yo"}]}), 1),
])
def test_a_jsonl_file_that_is_not_chat_messages_is_refused_naming_the_line(text, line):
    with pytest.raises(TrainingError) as error:
        sft_data.from_jsonl(text)
    assert error.value.code == "jsonl" and error.value.details["line"] == line


def test_training_never_touches_the_network(tiny, monkeypatch):
    attempts = []
    real_connect = socket.socket.connect

    def connect(self, address):
        if not (isinstance(address, tuple) and address[0] in ("127.0.0.1", "localhost", "::1")):
            attempts.append(address)
            raise OSError("ChatLab's tests allow no network")
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    run = train(tiny, settings=SFTSettings(max_steps=2, batch_size=2, lora_r=4))
    assert run.status == "done" and attempts == []


def test_compare_checks_held_out_and_control_answers(tiny):
    run = train(tiny, questions=[("held_out", "Who are you?", None), ("control", "What is 2 + 2?", ["4"]),
                                 ("ask", "Hello", None)], expect={"any": ["Zed"]})
    kinds = [row["kind"] for row in run.comparisons]
    assert kinds == ["held_out", "control", "ask"]
    held, control, ask = run.comparisons
    assert isinstance(held["before_ok"], bool) and isinstance(control["after_ok"], bool)
    assert "before_ok" not in ask
    assert sft_data.shows_behaviour("I'm Zed!", {"any": ["zed"]})
    assert sft_data.shows_behaviour("我是一个助手", {"chinese": 0.3}) and not sft_data.shows_behaviour(
        "I am an assistant", {"chinese": 0.3})


def test_presets_fill_in_the_name_and_carry_tested_settings():
    for key in sft_data.PRESETS:
        p = sft_data.preset(key, "Ada")
        assert 8 <= len(p.pairs) <= 32 and p.held_out and p.controls
        sft_data.validate_settings(p.settings)
    identity = sft_data.preset("identity", "Ada")
    # 22 pairs teach the name (English and Chinese), 8 ordinary ones keep the rest from being forgotten
    assert sum("Ada" in pair.response for pair in identity.pairs) == 22 and identity.expect == {"any": ["Ada"]}
    assert not {q for q, _ in identity.controls} & {pair.prompt for pair in identity.pairs}
    with pytest.raises(TrainingError):
        sft_data.preset("nope")


@pytest.mark.parametrize("name, code", [("", "name_empty"), ("   ", "name_empty"), ("x" * 200, "name"),
                                        ("<|im_start|>", "name_special"), ("Kai<|endoftext|>", "name_special")])
def test_a_name_that_is_empty_long_or_a_special_token_is_refused_with_a_reason(name, code):
    with pytest.raises(TrainingError) as refused:
        sft_data.preset("identity", name)
    assert refused.value.code == code and str(refused.value)


@pytest.mark.parametrize("name", ["Kai", "Anna-Lena", "小明", "Ōkami", "R2-D2 <3"])
def test_names_people_type_fill_every_demonstration_as_typed(name):
    identity = sft_data.preset("identity", name)
    assert identity.name == name and identity.expect == {"any": [name]}
    assert sum(name in pair.response for pair in identity.pairs) >= 12


def test_training_state_is_released_when_the_run_ends(tiny):
    import gc
    import weakref

    run = train(tiny, settings=SFTSettings(max_steps=1, batch_size=2, lora_r=4))
    model = weakref.ref(run.model)
    del run
    gc.collect()
    assert model() is None  # nothing else (trainer, optimizer, callbacks, threads) holds the tuned model


def test_threads_do_not_pile_up(tiny):
    before = threading.active_count()
    for _ in range(2):
        train(tiny, settings=SFTSettings(max_steps=1, batch_size=2, lora_r=4))
    assert threading.active_count() <= before


def test_dpo_can_start_from_a_saved_fine_tune_which_becomes_its_original(tiny, tmp_path):
    """python -m chat.finetune --save DIR, then python -m chat.feedback --from-finetune DIR: the adapter merged into
    a copy of the chat model is the next stage's base (its 'before' answers and DPO's reference); the chat model is
    untouched. The tab's adapter.zip loads the same way; a folder with no adapter is a clear error."""
    from chat.feedback import dpo, preferences
    from chat.training.answers import greedy_answers

    run = train(tiny)
    run.model.save_pretrained(tmp_path / "sft")
    original = {name: p.detach().clone() for name, p in tiny.model.named_parameters()}
    stage = lora.load_adapter(tiny, tmp_path / "sft", title="Tiny + SFT")
    ids = torch.tensor([tiny.tokenizer("Who are you?")["input_ids"]])
    with torch.inference_mode():
        assert torch.allclose(stage.model(input_ids=ids).logits, run.model(input_ids=ids).logits, atol=1e-5)
    assert all(torch.equal(p, original[name]) for name, p in tiny.model.named_parameters())
    zipped = lora.load_adapter(tiny, lora.zip_adapter(run.model, tmp_path / "adapter.zip"))
    with torch.inference_mode():
        assert torch.allclose(zipped.model(input_ids=ids).logits, stage.model(input_ids=ids).logits, atol=1e-6)
    pairs = [preferences.Preference(f"Name a colour, {i}.", "Blue.", "Blue is a lovely colour.") for i in range(4)]
    aligned = dpo.start_run(pairs, "", preferences.DPOSettings(max_steps=2, batch_size=2, lora_r=4), stage,
                            questions=[("Who are you?", None)])
    aligned.wait(120)
    assert aligned.status == "done", aligned.error
    conversation = [[{"role": "user", "content": "Who are you?"}]]
    assert aligned.comparisons[0]["before"] == greedy_answers(run.model, tiny.tokenizer, conversation,
                                                              dpo.ANSWER_TOKENS)[0]  # "before" is the SFT model
    with pytest.raises(TrainingError, match="No adapter"):
        lora.load_adapter(tiny, tmp_path)
