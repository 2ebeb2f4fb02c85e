"""Many chat users at once through the app's public /chat endpoint: their replies are written together, in the
batched steps of one engine (chat.llm.serving), on the real model."""
from __future__ import annotations

import threading

import pytest
import torch

pytestmark = pytest.mark.e2e

QUESTIONS = ["What is the capital of France?", "What is the capital of Italy?", "Name a primary colour.",
             "What is 2 plus 2?"]


@pytest.fixture(scope="module")
def engine(chat_model):
    """The app's engine over the compiled fast decoder (built into the test cache the first time, as `make run`
    does)."""
    from chat.llm import serving
    from chat.llm.fastpath import package

    if chat_model.fast is None:
        chat_model.fast = package.prepare_decoder(chat_model.model, torch.device("cpu"))
    assert chat_model.fast is not None, "the fast decoder could not be built"
    return serving.engine_for(chat_model)


def test_four_concurrent_streams_all_answer_in_shared_batched_steps(app_url, engine, chat_model):
    from gradio_client import Client

    before_steps, before_rows = engine.stats.steps, engine.stats.rows
    results: list = [None] * len(QUESTIONS)
    barrier = threading.Barrier(len(QUESTIONS))

    def user(i: int) -> None:
        client = Client(app_url, verbose=False)
        barrier.wait()
        try:
            outputs = list(client.submit(QUESTIONS[i], [], "", 0.0, 0.9, 50, 32, 1.0, -1, api_name="/chat"))
            results[i] = outputs
        except Exception as error:  # reported by the assertion below
            results[i] = error

    threads = [threading.Thread(target=user, args=(i,)) for i in range(len(QUESTIONS))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(240)
    assert all(isinstance(r, list) and len(r) >= 2 for r in results), results  # every user streamed a reply:
    assert all(r[-1].startswith(r[0]) and len(r[0]) < len(r[-1]) for r in results)  # its first words came first
    finals = [r[-1] for r in results]
    assert "Paris" in finals[0] and all(final.strip() for final in finals)
    steps, rows = engine.stats.steps - before_steps, engine.stats.rows - before_rows
    assert rows >= 1.5 * steps  # the replies shared steps: on average more than one sequence per step
    assert engine.running == 0 and not engine.waiting  # every slot freed
    for i in (0, 3):  # greedy: the same answer alone as in the crowd
        alone = list(Client(app_url, verbose=False).submit(QUESTIONS[i], [], "", 0.0, 0.9, 50, 32, 1.0, -1,
                                                           api_name="/chat"))
        assert alone[-1] == finals[i]


def test_a_cold_start_answers_four_users_at_once_without_a_busy_error():
    """The app started on a cache that holds the converted model but nothing of the fast decoder (no package, no
    kernels): four users who chat the moment the page answers are all answered, none turned away as busy, while the
    decoder is built behind them."""
    from chat.bench.serve import cold

    report = cold(users=4, wait_s=0.0, new_tokens=24)
    assert report["errors"] == 0, report["error_messages"]
    assert all(reply and reply.strip() for reply in report["replies"]), report["replies"]
    assert "language model" in report["replies"][0].lower()  # an answer to its question, not noise
