"""The recipe after pretraining, fast: SFT with TRL, RL from a reward, the stages' models, the comparison, the CLI and
the tab's handlers, on a tiny model (1 layer, 32 wide) trained for a few dozen steps. The real runs on the real
corpora are in test_recipe_training.py."""
from __future__ import annotations

import json
import math

import pytest
import torch

from chat.tinygpt import __main__ as cli
from chat.tinygpt import rewards, rl, sft, stages
from chat.tinygpt.recipe import Recipe
from chat.tinygpt.train import TinyGPTConfig, new_run, train
from chat.training import run as runs
from chat.training.run import TrainingError

TINY = {"corpus": "dialogs", "tokenizer": "bpe", "bpe_vocab_size": 512, "n_layer": 1, "n_head": 2, "n_embd": 32,
        "block_size": 64, "batch_size": 8, "eval_interval": 50, "eval_batches": 2, "sample_interval": 1000,
        "meter_samples": 0, "max_seconds": 600}
QUICK_RL = {"samples_per_step": 4, "max_new_tokens": 8, "max_steps": 3, "learning_rate": 1e-3}


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def pretraining():
    run = new_run(TinyGPTConfig(**TINY))
    run.max_steps = 40
    for _ in train(run, update_every_s=0.0):
        pass
    return run


@pytest.fixture(scope="module")
def pretrained(pretraining):
    return stages.Stage("pretrain", pretraining.model, pretraining.tokenizer)


@pytest.fixture(scope="module")
def tuning(pretrained):
    run = sft.new_sft_run(pretrained, sft.TinySFTSettings(max_steps=4, batch_size=4), ["Hello", "Who are you?"])
    sft.start(run)
    run.wait(120)
    return run


# --- SFT ----------------------------------------------------------------------------------------------------------


def test_dialog_rows_count_only_the_bots_turns_and_fit_the_context(pretrained):
    tokenizer = pretrained.tokenizer
    conversations = [["Hi there", "Hello!", "How are you?", "Fine."], ["x " * 40, "y " * 40, "Short?", "Yes."]]
    rows = sft.dialog_examples(tokenizer, conversations, 64)
    assert all(len(r["input_ids"]) == len(r["labels"]) <= 64 for r in rows)
    first = rows[0]
    counted = [t for t, label in zip(first["input_ids"], first["labels"]) if label != -100]
    assert tokenizer.decode(counted) == " Hello!\n Fine.\n"
    assert tokenizer.decode(first["input_ids"]).startswith("User: Hi there\nBot: Hello!\nUser:")
    long = [tokenizer.decode(r["input_ids"]) for r in rows[1:]]
    assert long[-1].startswith("User: Short?\nBot: Yes.")  # the long exchange is cut; the next starts a new row


def test_sft_trains_the_whole_model_with_trl_and_compares_before_and_after(tuning, pretrained):
    run = tuning
    assert run.status == "done" and run.step == 4 and run.error == ""
    assert [e["step"] for e in run.logs] == [1, 2, 3, 4] and all(math.isfinite(e["loss"]) for e in run.logs)
    assert math.isfinite(run.bot_val_loss_before) and math.isfinite(run.bot_val_loss_after)
    assert [a["question"] for a in run.asks] == ["Hello", "Who are you?"]
    assert run.stage.model is not pretrained.model  # the pretrained stage is never changed
    changed = any(not torch.equal(a, b) for a, b in zip(run.stage.model.parameters(),
                                                            pretrained.model.parameters()))
    assert changed
    report = sft.summary(run)
    for key in ("bot_val_loss_before", "bot_val_loss_after", "seconds", "asks"):
        assert key in report
    assert any(counted for piece in run.loss_tokens for _, counted in piece)


def test_a_second_run_is_refused_while_one_trains(pretrained):
    holder = runs.Run(kind="tinygpt", max_seconds=30)
    runs.claim(holder)
    try:
        run = sft.new_sft_run(pretrained, sft.TinySFTSettings(max_steps=2, batch_size=4))
        with pytest.raises(runs.Busy):
            sft.start(run)
    finally:
        runs.release(holder)
    with pytest.raises(TrainingError) as error:
        sft.new_sft_run(pretrained, sft.TinySFTSettings(max_steps=0))
    assert error.value.code == "setting"


# --- rewards ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("spec, reply, reward", [
    ("max-chars:10", "Short one", 1.0), ("max-chars:10", "Far too long here", 0.0), ("max-chars:10", "  ", 0.0),
    ("contains:love", "I Love you.", 1.0), ("contains:love", "lovely day", 0.0),
    ("question", "Are you well?", 1.0), ("question", "Yes. Why? No.", 0.0),
    ("no-repeat", "One two three", 1.0), ("no-repeat", "I said I will", 0.0), ("no-repeat", "", 0.0),
])
def test_rules_score_replies(spec, reply, reward):
    assert rewards.parse_rule(spec)("prompt", reply) == reward


@pytest.mark.parametrize("spec, code", [
    ("max-chars:0", "reward_chars"), ("max-chars:many", "reward_chars"), ("max-chars:999", "reward_chars"),
    ("contains:", "reward_word"), ("contains:two words", "reward_word"), ("contains:" + "a" * 31, "reward_word"),
    ("question:yes", "reward"), ("longest", "reward"), ("", "reward"),
])
def test_a_rule_with_a_bad_parameter_is_a_clear_error(spec, code):
    with pytest.raises(TrainingError) as error:
        rewards.parse_rule(spec)
    assert error.value.code == code and str(error.value)


def test_a_reward_model_learns_the_users_choices(pretrained):
    pairs = [(f"Question {i}?", f"Yes, gladly {i}.", f"No way {i}.") for i in range(8)]
    learned = rewards.fit_reward(pretrained, pairs)
    assert learned.train_accuracy == 1.0 and learned.pairs == 8 and not learned.binary
    assert learned("Question 42?", "Yes, gladly 42.") > learned("Question 42?", "No way 42.")
    with pytest.raises(TrainingError) as error:
        rewards.fit_reward(pretrained, pairs[:3])
    assert error.value.code == "few_pairs"


# --- RL -----------------------------------------------------------------------------------------------------------


def test_the_kl_floor_is_the_bernoulli_kl():
    assert rl.bernoulli_kl(0.9, 0.1) == pytest.approx(0.9 * math.log(9) + 0.1 * math.log(1 / 9))
    assert rl.bernoulli_kl(0.3, 0.3) == 0.0
    assert rl.bernoulli_kl(1.0, 0.5) == pytest.approx(math.log(2))


@pytest.fixture(scope="module")
def reinforcing(tuning):
    run = rl.new_rl_run(tuning.stage, rewards.parse_rule("max-chars:12"), rl.RLSettings(**QUICK_RL), ["Hello"])
    for _ in rl.train(run, update_every_s=0.0):
        pass
    return run


def test_rl_samples_scores_and_updates_every_step(reinforcing, tuning):
    run = reinforcing
    assert run.status == "done" and run.step == 3 and len(run.history) == 3
    assert 0.0 <= run.base_rate <= 1.0 and run.base_samples == rl.BASE_RATE_SAMPLES
    for record in run.history:
        assert len(record["samples"]) == 4 and record["kl"] >= 0 and record["length"] > 0
        advantages = [s["advantage"] for s in record["samples"]]
        assert sum(advantages) == pytest.approx(0.0, abs=1e-2)  # leave-one-out advantages are relative
    report = rl.summary(run)
    for key in ("steps", "samples_per_step", "seconds", "reward_first", "reward_last", "kl_last", "val_loss_before",
                "val_loss_after", "asks", "kl_floor"):
        assert key in report
    assert math.isfinite(report["val_loss_after"]) and report["asks"][0]["question"] == "Hello"
    assert run.reference.model is tuning.stage.model and run.stage.model is not tuning.stage.model


def test_replies_are_the_same_however_they_are_split_over_processes(tuning):
    run = rl.new_rl_run(tuning.stage, rewards.parse_rule("question"), rl.RLSettings(**QUICK_RL))
    prompt = stages.prompt_ids(run.stage.tokenizer, "Hello")
    whole = rl._sample(run, run.model, prompt, range(4), step=7)
    halves = rl._sample(run, run.model, prompt, range(2), 7) + rl._sample(run, run.model, prompt, range(2, 4), 7)
    assert whole == halves


def test_rl_stops_within_one_step_and_stays_usable(tuning):
    run = rl.new_rl_run(tuning.stage, rewards.parse_rule("question"), rl.RLSettings(**{**QUICK_RL, "max_steps": 50}))
    for _ in rl.train(run, update_every_s=0.0):
        if run.step >= 1:
            run.stop.set()
    assert run.status == "stopped" and run.step == 1
    answer = stages.answers(run.stage, ["Hello"])[0]
    assert isinstance(answer, str)
    with pytest.raises(TrainingError) as error:
        rl.new_rl_run(tuning.stage, rewards.parse_rule("question"), rl.RLSettings(samples_per_step=1000))
    assert error.value.code == "setting"


# --- stages and the comparison ------------------------------------------------------------------------------------


def test_stages_save_and_load_and_a_missing_one_names_its_command(tmp_path, pretrained):
    stages.save_stage(pretrained, tmp_path)
    loaded = stages.load_stage(tmp_path, "pretrain")
    ids = torch.tensor([stages.prompt_ids(pretrained.tokenizer, "Hello")])
    with torch.no_grad():
        assert torch.equal(loaded.model(input_ids=ids).logits, pretrained.model(input_ids=ids).logits)
    with pytest.raises(TrainingError, match="python -m chat.tinygpt sft") as error:
        stages.load_stage(tmp_path, "sft")
    assert error.value.code == "missing_stage"


@pytest.mark.parametrize("question, code", [("   ", "empty_prompt"), ("why " * 60, "long_prompt"),
                                            ("word " * 40, "long_prompt")])
def test_an_empty_or_huge_question_is_refused(question, code, pretrained):
    with pytest.raises(TrainingError) as error:
        stages.answer_ids(pretrained, question)
    assert error.value.code == code


def test_side_by_side_ranks_each_stage_under_the_one_before(pretrained, tuning):
    twin = stages.Stage("sft", pretrained.model, pretrained.tokenizer)
    rows = stages.side_by_side([pretrained, twin], ["Hello"])
    # a greedy answer under the very model that wrote it: every token is that model's first choice
    assert rows[0]["answers"]["pretrain"] == rows[0]["answers"]["sft"]
    assert all(rank == 1 for _, rank in rows[0]["tokens"]["sft"]) and rows[0]["shares"]["sft"]["unshifted"] == 1.0
    rows = stages.side_by_side([pretrained, tuning.stage], ["Hello", "Who are you?"])
    assert set(rows[1]["answers"]) == {"pretrain", "sft"} and rows[1]["tokens"]["sft"]
    shares = stages.overall_shares(rows, "sft")
    assert sum(shares.values()) == pytest.approx(1.0)


def test_the_recipe_offers_pairs_and_runs_a_blind_comparison(pretraining, tuning, reinforcing):
    recipe = Recipe(pretraining=pretraining, tuning=tuning, reinforcing=reinforcing)
    assert [s.name for s in recipe.stages()] == ["pretrain", "sft", "rl"]
    with pytest.raises(TrainingError, match="first"):
        recipe.choose(True)
    question, a, b = recipe.offer_pair(rl.training_prompts(), seed=3)
    assert recipe.choose(False) == 1 and recipe.choices[0] == (question, b, a)
    test = recipe.start_blind("sft", "rl", ["Hello", "Who are you?", "What is AI?"])
    assert len(test.pairs) == 3 and all(p.judge_prefers_later in (0.0, 0.5, 1.0) for p in test.pairs)
    assert Recipe(pretraining=pretraining).stage("sft") is None
    with pytest.raises(TrainingError) as error:
        Recipe(pretraining=pretraining).require("sft")
    assert error.value.code == "missing_stage"


# --- the CLI ------------------------------------------------------------------------------------------------------


def _json(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_cli_runs_the_recipe_stage_by_stage(tmp_path, capsys):
    folder = ["--dir", str(tmp_path), "--json"]
    assert cli.main(["sft", *folder]) == 2  # no pretrained model yet
    assert "python -m chat.tinygpt pretrain" in capsys.readouterr().err
    assert cli.main(["pretrain", "--corpus", "dialogs", "--n-layer", "1", "--n-embd", "32", "--n-head", "2",
                     "--max-steps", "30", "--meter-samples", "2", "--sample-interval", "1000", *folder]) == 0
    assert _json(capsys)["iterations"] == 30
    assert cli.main(["sft", "--max-steps", "3", "--batch-size", "4", "--ask", "Hello", *folder]) == 0
    report = _json(capsys)
    assert {"bot_val_loss_before", "bot_val_loss_after", "seconds"} <= set(report)
    assert report["asks"][0]["question"] == "Hello" and set(report["asks"][0]) == {"question", "before", "after"}
    assert cli.main(["rl", "--reward", "max-chars:1000", *folder]) == 2
    assert "max-chars needs" in capsys.readouterr().err
    assert cli.main(["rl", "--reward", "contains:hello", "--max-steps", "2", "--samples-per-step", "4",
                     "--max-new-tokens", "8", "--ask", "Hi", *folder]) == 0
    report = _json(capsys)
    for key in ("steps", "samples_per_step", "seconds", "reward_first", "reward_last", "kl_last", "val_loss_before",
                "val_loss_after", "asks"):
        assert key in report
    assert report["steps"] == 2 and report["samples_per_step"] == 4
    assert cli.main(["compare", "--ask", "Hello", *folder]) == 0
    report = _json(capsys)
    assert set(report["rows"][0]["answers"]) == {"pretrain", "sft", "rl"} and set(report["shares"]) == {"sft", "rl"}


# --- the tab's handlers -------------------------------------------------------------------------------------------


def test_the_tab_explains_a_missing_stage_a_bad_reward_and_a_lone_stage(pretraining, tuning):
    import gradio as gr

    from chat.ui import tinygpt_compare as compare
    from chat.ui import tinygpt_tab as tab

    with pytest.raises(gr.Error, match="No Pretrained model yet"):
        next(tab.start_sft(60, 10, 1e-3, 8, "Hello", None, None))
    recipe = Recipe(pretraining=pretraining, tuning=tuning)
    with pytest.raises(gr.Error, match="one English word"):
        next(tab.start_rl("contains", "two words", 0.1, 1e-3, 10, 4, 30, "", recipe, None))
    with pytest.raises(gr.Error, match="at least 4 choices"):
        next(tab.start_rl("learned", "", 0.1, 1e-3, 10, 4, 30, "", recipe, None))
    with pytest.raises(gr.Error, match="question is empty|too long"):
        next(tab.start_rl("question", "", 0.1, 1e-3, 10, 4, 30, "x" * 300, recipe, None))
    with pytest.raises(gr.Error, match="No Fine-tuned"):
        compare.compare_stages("Hello", Recipe(pretraining=pretraining), None)
    html = compare.compare_stages("Hello", recipe, None)
    assert 'class="tinygpt-token"' in html and "tinygpt-compare-totals" in html
    with pytest.raises(gr.Error, match="Start a blind comparison first"):
        compare.vote(True)(recipe, None)
