"""chat.training.run: what every live training run shares (stop, time budget, progress, NaN restore, one status
vocabulary) and the machine's one training slot, which MNIST, Tiny GPT, fine-tuning and human feedback all claim."""
from __future__ import annotations

import pytest

from chat import budget
from chat.mnist import train as mnist
from chat.mnist.data import load_data
from chat.training import run as runs
from chat.training.run import FINISHED, STATUSES, Run, TrainingError, check_settings


def test_a_run_says_why_it_stops_and_how_far_it_is():
    run = Run(kind="test", max_seconds=10.0, max_steps=100)
    assert run.why_stop() is None and run.progress == 0.0 and not run.running and not run.finished
    run.step, run.seconds = 50, 2.0
    assert run.progress == 0.5 and run.steps_per_second == 25.0
    run.seconds = 10.0
    assert run.why_stop() == "timeout" and run.progress == 1.0
    run.step = 100
    assert run.why_stop() == "done"
    run.stop.set()
    assert run.why_stop() == "stopped"
    assert set(FINISHED) < set(STATUSES) and "running" in STATUSES and "evaluating" in STATUSES


def test_a_divergence_hands_back_the_last_good_state():
    run = Run(kind="test")
    run.step = 3
    run.keep({"weights": 3})
    run.step = 7
    assert run.diverge("NaN at step 7") == {"weights": 3}
    assert (run.status, run.diverged_at, run.good_step, run.finished) == ("diverged", 7, 3, True)


def test_settings_out_of_range_name_the_setting():
    from dataclasses import dataclass

    @dataclass
    class Settings:
        steps: int = 10
        rate: float = 0.1

    limits = {"steps": (1, 100), "rate": (0.0, 1.0)}
    assert check_settings(Settings(), limits) == Settings()
    for bad in (Settings(steps=0), Settings(steps=2.5), Settings(rate=float("nan")), Settings(rate=True)):
        with pytest.raises(TrainingError) as error:
            check_settings(bad, limits)
        assert error.value.code == "setting" and error.value.details["name"] in limits


def test_one_run_trains_at_a_time_and_a_second_is_told_which_and_for_how_long():
    first, second = Run(kind="sft", max_seconds=60), Run(kind="mnist")
    runs.claim(first)
    try:
        with pytest.raises(runs.Busy, match=r"\(sft\).*within 60 s") as error:
            runs.claim(second)
        assert error.value.holder is first and isinstance(error.value, budget.BusyError)
        with pytest.raises(runs.Busy):
            runs.refuse_if_busy()
        assert runs.holder() is first and budget.running("training") == 1
    finally:
        runs.release(first)
    assert runs.holder() is None and budget.running("training") == 0
    runs.release(second)  # not the holder: nothing happens
    assert budget.running("training") == 0


def test_two_mnist_runs_cannot_train_at_once_beyond_the_training_limit():
    assert budget.limit("training") == 1
    data = load_data()
    first = mnist.new_run(mnist.preset("fast", epochs=1, time_limit_s=30), data)
    second = mnist.new_run(mnist.preset("fast", epochs=1, time_limit_s=30), data)
    running = mnist.train(first, update_every_s=0.0)
    next(running)
    with pytest.raises(budget.BusyError):
        next(mnist.train(second))
    assert second.step == 0 and second.status == "ready"
    running.close()
    assert first.status == "stopped" and budget.running("training") == 0
