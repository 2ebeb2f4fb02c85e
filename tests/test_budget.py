"""chat.budget: the server-wide limits on heavy work, and the services that hold them (training, generation)."""
from __future__ import annotations

import threading
import time

import pytest

from chat import budget
from chat.settings import Settings


@pytest.fixture
def kind():
    name = "test-kind"
    yield budget.register(name, 2, wait_s=0.2)
    budget._KINDS.pop(name, None)


def test_a_kind_runs_at_most_its_limit_and_a_caller_outside_the_queue_gets_a_clear_busy_error(kind):
    release = threading.Event()
    started = threading.Barrier(3)

    def hold():
        with budget.slot(kind.name):
            started.wait()
            release.wait(5)

    workers = [threading.Thread(target=hold) for _ in range(2)]
    for worker in workers:
        worker.start()
    started.wait()
    assert budget.running(kind.name) == 2
    begun = time.monotonic()
    with pytest.raises(budget.BusyError, match="busy") as error:
        with budget.slot(kind.name):
            pass
    assert 0.15 < time.monotonic() - begun < 2 and error.value.limit == 2  # waited wait_s, not forever
    release.set()
    for worker in workers:
        worker.join()
    with budget.slot(kind.name, wait_s=0):  # free again
        assert budget.running(kind.name) == 1
    assert budget.snapshot()[kind.name] == {"limit": 2, "running": 0, "peak": 2}


def test_a_generator_holds_its_slot_from_its_first_step_until_it_is_closed(kind):
    @budget.holds(kind.name, wait_s=0)
    def steps():
        yield from range(100)

    first, second, third = steps(), steps(), steps()
    assert budget.running(kind.name) == 0  # nothing held before the first step
    next(first), next(second)
    with pytest.raises(budget.BusyError):
        next(third)
    first.close()
    assert budget.running(kind.name) == 1 and next(steps()) == 0
    assert list(second)[-1] == 99 and budget.running(kind.name) == 0


def test_gradio_events_of_a_kind_share_its_limit():
    assert budget.queue_options("training") == {"concurrency_id": "training", "concurrency_limit":
                                                budget.limit("training")}
    assert budget.limit("training") >= 1 and budget.limit("chat") >= 1 and budget.light_concurrency() >= 2


def test_a_new_kind_plugs_in_with_one_line_and_its_limit_can_come_from_the_environment():
    try:
        budget.configure(Settings.from_env({"CHATLAB_LIMIT_FINE_TUNE": "3", "CHATLAB_LIMIT_CHAT": "5"}))
        assert budget.register("fine-tune", 1).limit == 3 and budget.limit("chat") == 5
    finally:
        budget._KINDS.pop("fine-tune", None)
        budget.configure(Settings())
    assert budget.limit("chat") == Settings().model.max_batch + Settings().model.max_waiting
    with pytest.raises(KeyError, match="unknown kind"):
        budget.limit("no-such-kind")
