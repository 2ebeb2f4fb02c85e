"""The recipe for real on the real corpora (slow: marked `training`): pretraining on Shakespeare's plays beats the
bigram line, SFT on chatterbot's dialogs moves the loss on the Bot's turns, a rule reward rises under RL, the KL-0
preset hacks it, and `accelerate launch --cpu --num_processes 2` trains as one process does. The runs are bounded by
steps, not seconds, so a loaded machine makes them slower, not different."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from chat.tinygpt import rewards, rl, sft, stages
from chat.tinygpt.train import TinyGPTConfig, new_run, summary, train

pytestmark = pytest.mark.training

RULE = "contains:you"  # a rule the fine-tuned model meets now and then: RL has something to reinforce


@pytest.fixture(scope="module")
def pretraining():
    run = new_run(TinyGPTConfig(max_steps=300, max_seconds=120))  # the tab's defaults: the plays, BPE, 4 x 128
    for _ in train(run, update_every_s=5.0):
        pass
    return run


@pytest.fixture(scope="module")
def recipe_dir(tmp_path_factory, pretraining):
    folder = tmp_path_factory.mktemp("recipe")
    stages.save_stage(stages.Stage("pretrain", pretraining.model, pretraining.tokenizer), folder)
    return folder


@pytest.fixture(scope="module")
def tuning(pretraining):
    pretrained = stages.Stage("pretrain", pretraining.model, pretraining.tokenizer)
    run = sft.new_sft_run(pretrained, sft.TinySFTSettings(max_steps=40, max_seconds=120), ["Hello",
                                                                                            "What is your name?"])
    sft.start(run)
    run.wait(120)
    return run


def test_pretraining_on_the_plays_beats_the_bigram_line(pretraining):
    report = summary(pretraining)
    assert report["corpus"] == "plays" and report["status"] == "done" and report["passes"] < 1
    assert report["val_nats_per_char"] < report["bigram_nats_per_char"] - 0.3 < report["uniform_nats_per_char"]
    assert report["words_in_training_text"] > 0.5 and report["copied_8grams"] < 0.1
    assert report["val_curve"][0]["nats_per_char"] > report["val_nats_per_char"] + 0.5


def test_sft_moves_the_loss_on_the_bots_turns(tuning):
    assert tuning.status == "done" and tuning.step == 40
    assert tuning.bot_val_loss_after < tuning.bot_val_loss_before - 0.3
    assert all(ask["after"] != ask["before"] for ask in tuning.asks)


def _reinforce(tuning, rule: str, beta: float, steps: int, learning_rate: float) -> rl.RLRun:
    settings = rl.RLSettings(reward=rule, beta=beta, max_steps=steps, learning_rate=learning_rate, max_seconds=120)
    run = rl.new_rl_run(tuning.stage, rewards.parse_rule(rule), settings)
    for _ in rl.train(run, update_every_s=5.0):
        pass
    return run


def test_a_rule_reward_rises_under_rl_and_the_kl_stays_above_its_floor(tuning):
    report = rl.summary(_reinforce(tuning, "max-chars:16", beta=rl.RLSettings().beta, steps=40, learning_rate=5e-4))
    assert report["steps"] == 40 and report["base_rate"] < 0.5  # the fine-tuned model's rate, on 128 replies
    assert report["reward_last"] > max(0.8, report["base_rate"] + 0.3)
    assert report["kl_floor"] is not None and report["kl_last"] >= report["kl_floor"] * 0.9  # no policy beats it


def test_the_kl_0_preset_hacks_the_reward_and_forgets_how_to_chat(tuning):
    report = rl.summary(_reinforce(tuning, RULE, beta=rl.PRESETS["no_kl"].beta, steps=30, learning_rate=1e-3))
    assert report["steps"] == 30 and report["base_rate"] < 0.5
    assert report["reward_last"] > 0.8
    assert report["val_loss_after"] > report["val_loss_before"] + 0.3


def _cli(args: list[str], processes: int = 1) -> dict:
    """A stage run in fresh processes (one, or `processes` under accelerate launch): its JSON report."""
    launch = ([sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", str(processes),
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "chat.tinygpt"]
              if processes > 1 else [sys.executable, "-m", "chat.tinygpt"])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run(launch + args + ["--json"], check=False, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_two_processes_train_the_tiny_model_as_one_does(recipe_dir, tmp_path):
    import shutil

    twin = tmp_path / "twin"
    shutil.copytree(recipe_dir, twin)
    sft_args = ["sft", "--max-steps", "12", "--batch-size", "8", "--max-seconds", "120"]
    one = _cli(sft_args + ["--dir", str(recipe_dir)])
    two = _cli(sft_args + ["--dir", str(twin)], processes=2)
    assert one["steps"] == two["steps"] == 12
    assert two["loss_end"] == pytest.approx(one["loss_end"], rel=2e-3)
    assert two["bot_val_loss_after"] == pytest.approx(one["bot_val_loss_after"], rel=2e-3)
    rl_args = ["rl", "--reward", RULE, "--max-steps", "4", "--max-new-tokens", "16", "--max-seconds", "120"]
    one, two = _cli(rl_args + ["--dir", str(recipe_dir)]), _cli(rl_args + ["--dir", str(twin)], processes=2)
    assert two["steps"] == one["steps"] == 4
    # the first step's replies are drawn from the same weights with the same per-reply generators: equal figures
    assert two["curve"][0] == pytest.approx(one["curve"][0])
    assert two["kl_last"] == pytest.approx(one["kl_last"], rel=0.1, abs=0.1)
    assert torch.get_num_threads() >= 1  # this process never joined the process group
