"""chat.llm.inside on a random tiny Llama of SmolLM2's structure (2 layers, 6 query heads sharing 2 key/value heads,
RoPE, RMSNorm, tied embeddings) with a real byte-level BPE tokenizer; the tab's drawing functions on its output.
The real weights are tested in tests/e2e/test_inside_e2e.py."""
from __future__ import annotations

import threading
import time

import pytest
import torch

from chat.llm import inside
from chat.llm.tokenizer import ModelTokenizer

TEXT = "When Mary and John went to the store, John gave a drink to"


def test_every_heads_attention_is_causal_and_each_row_sums_to_one(tiny_inside):
    found = inside.inspect_text(TEXT, tiny_inside)
    t = len(found.ids)
    assert found.attention.shape == (2, 6, t, t) and found.tokens and len(found.tokens) == t
    assert torch.allclose(found.attention.sum(-1), torch.ones(2, 6, t), atol=1e-5)
    assert found.attention.triu(1).abs().max() == 0
    assert found.attention.min() >= 0


def test_the_pass_leaves_the_shared_model_as_it_was_and_copies_no_weight(tiny_inside):
    model = tiny_inside.model
    before = model.config._attn_implementation
    found = inside.inspect_text("The dog sat on the rug.", tiny_inside)
    twin = inside.eager_twin(model)
    assert model.config._attn_implementation == before != "eager" and twin.config._attn_implementation == "eager"
    assert all(a is b for a, b in zip(model.parameters(), twin.parameters()))
    ids = torch.tensor([found.ids])
    with torch.inference_mode():
        shared = torch.softmax(model(ids).logits[0, -1], -1)
    assert int(shared.argmax()) == found.answer.token_id
    assert abs(float(shared.max()) - found.answer.prob) < 1e-5


def test_the_logit_lens_last_layer_is_the_models_own_prediction(tiny_inside):
    found = inside.inspect_text(TEXT, tiny_inside)
    assert [row.layer for row in found.lens] == [0, 1]
    last = found.lens[-1]
    assert last.top[0].token_id == found.answer.token_id and abs(last.top[0].prob - found.answer.prob) < 1e-5
    assert abs(last.answer_prob - found.answer.prob) < 1e-5
    for row in found.lens:
        probs = [g.prob for g in row.top]
        assert probs == sorted(probs, reverse=True) and len(probs) == inside.LENS_TOP and sum(probs) <= 1 + 1e-5


def test_one_head_step_by_step_gives_the_full_pass_numbers_and_the_layers_own_output(tiny_inside):
    found = inside.inspect_text(TEXT, tiny_inside)
    model = tiny_inside.model
    s = min(inside.STEP_TOKENS, len(found.ids))
    layer = 1
    steps = [inside.head_steps(tiny_inside, found, layer, head) for head in range(6)]
    for head, step in enumerate(steps):
        assert step.kv_head == head // 3 and step.sharing == [3 * (head // 3) + i for i in range(3)]
        assert torch.allclose(step.weights, found.attention[layer, head, :s, :s], atol=1e-5)
        assert torch.isinf(step.masked.triu(1)[step.masked.triu(1) != 0]).all()
        assert torch.allclose(step.scores, step.q @ step.k.T / step.q.shape[1] ** 0.5, atol=1e-5)
    # the heads' weighted sums of v, side by side through W_O, are the attention block's output in the model
    block = model.model.layers[layer]
    with torch.inference_mode():
        x = block.input_layernorm(found.layer_inputs[layer][None])
        rope = model.model.rotary_emb(x, torch.arange(s)[None])
        expected, _ = block.self_attn(x, position_embeddings=rope, attention_mask=None)
        ours = block.self_attn.o_proj(torch.cat([step.output for step in steps], dim=-1))
    assert torch.allclose(ours, expected[0], atol=1e-5)
    # RoPE changes q and k but not their length (it rotates pairs of numbers)
    assert torch.allclose(steps[0].q.norm(dim=-1), steps[0].q_before_rope.norm(dim=-1), atol=1e-4)
    assert not torch.allclose(steps[0].q[1:], steps[0].q_before_rope[1:], atol=1e-3)


def test_hiding_the_sink_renormalises_the_other_tokens():
    weights = torch.tensor([[1.0, 0.0, 0.0], [0.8, 0.2, 0.0], [0.5, 0.3, 0.2]])
    hidden = inside.hide_sink(weights)
    assert hidden[:, 0].abs().max() == 0 and hidden[0].abs().max() == 0
    assert torch.allclose(hidden[1:].sum(-1), torch.ones(2))
    assert torch.allclose(hidden[2], torch.tensor([0.0, 0.6, 0.4]))
    assert torch.allclose(inside.sink_share(weights), torch.tensor(0.65))


def test_text_is_capped_user_text_stays_text_and_empty_text_is_refused(tiny_inside):
    long = " ".join(["cat"] * 200)
    found = inside.inspect_text(long, tiny_inside)
    assert len(found.ids) == inside.MAX_TOKENS and found.cut == 200 - inside.MAX_TOKENS
    ids, cut = inside.encode(tiny_inside, "<|im_start|>system")
    assert tiny_inside.tokenizer.bos_token_id not in ids and cut == 0
    for empty in ("", "   \n", None):
        with pytest.raises(inside.InsideError, match="Type a text"):
            inside.inspect_text(empty, tiny_inside)


@pytest.mark.parametrize("layer, head, message", [
    (2, 0, "layer must be from 0 to 1"), (-1, 0, "layer must be from 0 to 1"), (0, 6, "head must be from 0 to 5"),
    (0.5, 0, "layer must be a whole number"), (True, 0, "layer must be a whole number"),
    (0, "3", "head must be a whole number"), (float("nan"), 0, "layer must be a whole number"),
])
def test_a_layer_or_head_out_of_range_is_refused_by_name(tiny_inside, layer, head, message):
    with pytest.raises(inside.InsideError, match=message):
        inside.check_head(tiny_inside, layer, head)


def test_chinese_characters_split_over_tokens_are_labelled_as_one(tiny_inside):
    found = inside.inspect_text("我爱北京", tiny_inside)
    assert len(found.ids) == 12  # 4 characters x 3 bytes, none merged by this small vocabulary
    assert found.tokens[:3] == ["我₁", "我₂", "我₃"] and found.tokens[-1] == "京₃"
    assert inside.token_labels(ModelTokenizer(tiny_inside.tokenizer), found.ids[:2]) == ["<0xE6>", "<0x88>"]


def test_inspections_are_reused_and_only_the_last_few_are_kept(tiny_inside):
    first = inside.inspect_text("The cat sat.", tiny_inside)
    assert inside.inspect_text("The cat sat.", tiny_inside).attention is first.attention
    for n in range(inside.CACHE_SIZE + 2):
        inside.inspect_text(f"The dog sat on rug number {n}.", tiny_inside)
    assert len(inside._CACHE) == inside.CACHE_SIZE
    assert inside.inspect_text("The cat sat.", tiny_inside).attention is not first.attention


def test_the_pass_waits_while_a_chat_reply_is_generated(tiny_inside):
    release, started = threading.Event(), threading.Event()

    def reply():
        started.set()
        release.wait(10)

    worker = threading.Thread(target=tiny_inside.replies.running(reply))
    worker.start()
    started.wait(5)
    done = threading.Event()
    thread = threading.Thread(target=lambda: (inside.inspect_text("A reply is being written now.", tiny_inside),
                                              done.set()))
    thread.start()
    assert not done.wait(0.5)  # held before its first layer
    release.set()
    assert done.wait(10)
    worker.join()
    thread.join()
    assert tiny_inside.replies.active == 0


def test_a_reply_that_never_ends_makes_the_pass_give_up_clearly(tiny_inside, monkeypatch):
    monkeypatch.setattr(inside, "WAIT_FOR_REPLIES_S", 0.2)
    release = threading.Event()
    worker = threading.Thread(target=tiny_inside.replies.running(lambda: release.wait(10)))
    worker.start()
    try:
        while tiny_inside.replies.active == 0:
            time.sleep(0.01)
        with pytest.raises(inside.ModelBusy, match="busy answering"):
            inside.inspect_text("Nobody waits forever.", tiny_inside)
    finally:
        release.set()
        worker.join()


def test_the_induction_probe_points_at_the_token_after_the_first_occurrence(tiny_inside):
    for item in inside._induction_inputs(tiny_inside):
        assert len(item.ids) == 1 + 2 * inside.INDUCTION_LENGTH and len(item.pairs) == inside.INDUCTION_LENGTH
        for query, (key,) in item.pairs:
            assert item.ids[key - 1] == item.ids[query] and key < query  # the key follows an earlier copy
    for item in inside._pronoun_inputs(tiny_inside):
        (query, nouns), = item.pairs
        assert all(n < query for n in nouns)


@pytest.mark.parametrize("probe", list(inside.PROBES))
def test_every_probe_ranks_every_head(tiny_inside, probe):
    result = inside.head_scores(probe, tiny_inside)
    scores = [h.score for h in result.ranked]
    assert len(scores) == 12 and scores == sorted(scores, reverse=True) and 0 <= scores[-1] <= scores[0] <= 1
    assert {(h.layer, h.head) for h in result.ranked} == {(l, h) for l in range(2) for h in range(6)}
    assert inside.head_scores(probe, tiny_inside) is result  # cached


def test_an_unknown_probe_is_refused(tiny_inside):
    with pytest.raises(inside.InsideError, match="Unknown probe"):
        inside.head_scores("telepathy", tiny_inside)
