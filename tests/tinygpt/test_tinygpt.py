"""Tiny GPT pretraining: corpora, tokenizers, masking, yardsticks, the memorisation meter, a real short training run,
stop/resume, NaN, save/load, CLI.

Models here are small (1-2 layers, 32-64 wide, context 32) so the whole file runs in well under a minute on 2 cores.
"""
from __future__ import annotations

import json
import math
import zipfile

import pytest
import torch

from chat.tinygpt import __main__ as tinygpt_cli
from chat.tinygpt import corpora as texts
from chat.tinygpt import data as corpora
from chat.tinygpt import model as gpt
from chat.tinygpt import sample, yardsticks
from chat.tinygpt import tokenizer as tokenizers
from chat.tinygpt import train as tinygpt
from chat.tinygpt.train import TinyGPTConfig
from chat.training.run import TrainingError

SMALL = {"corpus": "dialogs", "tokenizer": "char", "n_layer": 2, "n_head": 2, "n_embd": 64, "block_size": 32,
         "batch_size": 16, "learning_rate": 3e-3, "warmup_steps": 10, "eval_interval": 25, "eval_batches": 4,
         "sample_interval": 50, "sample_tokens": 20, "meter_samples": 4, "max_seconds": 600}


def small_config(**overrides) -> TinyGPTConfig:
    return TinyGPTConfig(**{**SMALL, **overrides})


def train_steps(run: tinygpt.TrainingRun, steps: int) -> tinygpt.TrainingRun:
    run.max_steps = steps
    for _ in tinygpt.train(run, update_every_s=0.0):
        pass
    return run


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """These tiny models gain nothing from a second thread, and two OpenMP threads stall each other badly when other
    processes share the 2 cores (measured: 25 s with one thread, 3 minutes with two). The app keeps torch's default."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def english_run():
    """A small char-level English run trained for 150 steps (shared by the tests that only read it)."""
    run = tinygpt.new_run(small_config())
    return train_steps(run, 150)


# --- corpus -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("lang", ["english", "chinese"])
def test_corpus_loads_conversations_with_both_roles(lang):
    corpus = corpora.load_corpus(lang)
    assert len(corpus.train) > 300 and len(corpus.val) > 30
    assert "greetings" in corpus.topics
    text = "".join(corpora.dialog_text(turns) for turns in corpus.train[:50])
    assert text.count("User: ") >= 50 and text.count("Bot: ") >= 50
    assert all(len(turns) >= 2 and all(isinstance(t, str) and t and "\n" not in t for t in turns)
               for turns in corpus.train + corpus.val)


def test_validation_split_is_stable_and_independent_of_the_topic_choice():
    everything = corpora.load_corpus("english")
    again = corpora.load_corpus("english")
    assert everything.val == again.val and everything.train == again.train
    some = corpora.load_corpus("english", ["greetings", "ai", "science"])
    held_out = set(map(tuple, everything.val))
    assert some.val and all(tuple(turns) in held_out for turns in some.val)
    assert not held_out & set(map(tuple, everything.train))
    assert 0.05 < len(everything.val) / everything.conversations < 0.15


def test_malformed_entries_are_skipped_and_counted(tmp_path):
    english = corpora.load_corpus("english")
    assert english.skipped == 1  # trivia.yml holds one entry that is a string, not a conversation
    assert english.duplicates > 1000  # tech_support.yml repeats its conversations
    topic = tmp_path / "odd.yml"
    topic.write_text("categories:\n- odd\nconversations:\n- - Hello\n  - Hi\n- just a string\n- - 42\n  - number\n"
                     "- - alone\n- - Fine\n  - ''\n- - How are you?\n  - Good.\n  - And you?\n", encoding="utf-8")
    conversations, skipped = corpora.read_topic(topic)
    assert conversations == [["Hello", "Hi"], ["How are you?", "Good.", "And you?"]]
    assert skipped == 4
    broken = tmp_path / "broken.yml"
    broken.write_text("conversations: [unclosed", encoding="utf-8")
    assert corpora.read_topic(broken) == ([], 1)


def test_unknown_topic_or_language_is_a_clear_error():
    with pytest.raises(TrainingError, match="no topic 'nope'") as error:
        corpora.load_corpus("english", ["nope"])
    assert error.value.code == "unknown_topic"
    with pytest.raises(TrainingError) as error:
        corpora.list_topics("klingon")
    assert error.value.code == "unknown_lang"


# --- tokenizers and masking ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("lang", ["english", "chinese"])
@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_tokenizers_round_trip_the_corpus_exactly(lang, kind):
    corpus = corpora.load_corpus(lang)
    learn_from = corpus.train if kind == "bpe" else corpus.train + corpus.val  # as new_run does
    pieces = [text for turns in learn_from for text, _ in corpora.dialog_segments(turns)]
    tokenizer = tokenizers.TOKENIZERS[kind].train(pieces, 800)
    for conversations in (corpus.train, corpus.val):
        text = "".join(corpora.dialog_text(turns) for turns in conversations)
        ids, _ = tokenizers.encode_conversations(tokenizer, conversations)
        assert tokenizer.decode(ids.tolist()) == text
        # bits per character needs the characters behind any run of tokens: exact for whole text
        assert int(torch.tensor(tokenizer.chars_per_token())[ids].sum()) == len(text)
    if kind == "bpe":
        assert 256 < tokenizer.vocab_size <= 800
        assert len(ids) < 0.6 * len(text.encode("utf-8"))  # merges learned: far fewer tokens than bytes
        assert tokenizer.decode(tokenizer.encode("User: 你好 ✓ naïve\n")) == "User: 你好 ✓ naïve\n"


@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_bot_mask_covers_exactly_the_bot_replies(kind):
    conversations = [["Hi there", "Hello!", "How are you?", "Fine."], ["你好", "嗨"]]
    pieces = [text for turns in conversations for text, _ in corpora.dialog_segments(turns)]
    tokenizer = tokenizers.TOKENIZERS[kind].train(pieces * 20, 600)
    ids, bot = tokenizers.encode_conversations(tokenizer, conversations)
    assert tokenizer.decode(ids[bot].tolist()) == " Hello!\n Fine.\n 嗨\n"
    assert tokenizer.decode(ids[~bot].tolist()) == "User: Hi there\nBot:User: How are you?\nBot:\nUser: 你好\nBot:\n"


def test_bot_only_loss_counts_only_bot_tokens():
    run = tinygpt.new_run(small_config(bot_only=True, topics=("greetings", "emotion")))
    starts = torch.arange(0, 16 * 7, 7)
    x, y = tinygpt.batch_at(run, run.train_ids, run.train_bot, starts)
    index = starts[:, None] + torch.arange(run.config.block_size)
    counted = y != -100
    assert torch.equal(counted, run.train_bot[index + 1])
    assert torch.equal(y[counted], run.train_ids[index + 1][counted])
    assert 0 < counted.float().mean() < 0.8
    # the loss is the mean over Bot tokens only
    with torch.no_grad():
        logits = run.model(input_ids=x).logits
        per_token = torch.nn.functional.cross_entropy(logits.flatten(0, 1), run.train_ids[index + 1].flatten(),
                                                      reduction="none")
        expected = per_token[counted.flatten()].mean()
        assert torch.allclose(gpt.loss_of(run.model, x, y), expected, atol=1e-5)
    plain = tinygpt.new_run(small_config(topics=("greetings", "emotion")))
    _, y_all = tinygpt.batch_at(plain, plain.train_ids, plain.train_bot, starts)
    assert (y_all != -100).all()


# --- training -----------------------------------------------------------------------------------------------------


def test_short_training_run_lowers_validation_loss_clearly(english_run):
    run = english_run
    first, last = run.val_losses[0], run.val_losses[-1]
    assert first[0] == 0 and last[0] == run.step == 150
    assert [s for s, _, _ in run.val_losses] == [0, 6, 12, 25, 50, 75, 100, 125, 150]
    assert run.train_losses[0][0] == 0 and run.train_losses[-1][1] < run.train_losses[0][1] - 1.5
    assert first[1] > math.log(run.tokenizer.vocab_size) - 0.5  # untrained: about uniform over the vocabulary
    assert last[1] < first[1] - 1.5
    assert last[2] == pytest.approx(last[1])  # char level: nats per character = nats per token
    assert run.status == "done" and run.iterations_per_second > 0
    steps = [s for s, _ in run.samples]
    assert steps == [0, 50, 100, 150]  # the timeline, step 0 = the untrained model's noise
    assert all(isinstance(text, str) and text for _, text in run.samples)
    frame = tinygpt.loss_frame(run)
    assert set(frame["curve"]) == {"train", "val", "uniform", "bigram"} and frame["step"].max() == 150


def test_stop_and_resume_continue_the_same_run():
    run = tinygpt.new_run(small_config(topics=("greetings", "ai", "emotion", "psychology")))
    run.max_steps = 200
    model, optimizer = run.model, run.optimizer
    for _ in tinygpt.train(run, update_every_s=0.0):
        if run.step >= 30:
            run.stop.set()
    assert run.status == "stopped" and 30 <= run.step < 40
    stopped_at, points, samples = run.step, len(run.train_losses), len(run.samples)
    assert optimizer.state[next(model.parameters())]["step"] == stopped_at
    seconds = run.seconds
    train_steps(run, stopped_at + 20)
    assert run.status == "done" and run.step == stopped_at + 20
    assert run.model is model and run.optimizer is optimizer
    assert optimizer.state[next(model.parameters())]["step"] == stopped_at + 20  # Adam moments kept going
    assert len(run.train_losses) > points and run.train_losses[points][0] > stopped_at
    assert [s for s, _ in run.samples].count(0) == 1 and len(run.samples) > samples
    assert run.seconds > seconds


def test_closing_the_generator_stops_the_run():
    run = tinygpt.new_run(small_config(topics=("greetings", "ai")))
    steps = tinygpt.train(run, update_every_s=0.0)
    for _ in steps:
        if run.step >= 5:
            break
    steps.close()  # what happens when the browser goes away
    assert run.status == "stopped" and run.stop.is_set()


def test_nan_loss_stops_training_and_restores_the_last_good_model():
    run = tinygpt.new_run(small_config(topics=("greetings", "ai", "emotion"), eval_interval=10, log_interval=5))
    run.max_steps = 60
    for _ in tinygpt.train(run, update_every_s=0.0):
        if run.step == 23:
            with torch.no_grad():
                run.model.transformer.h[0].mlp.c_fc.weight[0, 0] = math.nan
    assert run.status == "diverged" and run.diverged_at == 25
    assert run.step == 20 and "NaN" in run.message
    assert all(torch.isfinite(p).all() for p in run.model.parameters())
    assert max(s for s, _, _ in run.train_losses) <= 20 and all(math.isfinite(v) for _, v, _ in run.train_losses)
    train_steps(run, 40)  # the UI stays usable: training can go on from there
    assert run.status == "done" and run.step == 40


@pytest.mark.parametrize("settings, code", [
    ({"n_layer": 8, "n_embd": 384, "n_head": 8, "block_size": 256, "batch_size": 64, "max_seconds": 60}, "too_large"),
    ({"n_embd": 100, "n_head": 3}, "heads"),
    ({"n_layer": 99}, "setting"),
    ({"topics": ("health",)}, "too_little_text"),
])
def test_bad_settings_are_clear_errors(settings, code):
    with pytest.raises(TrainingError) as error:
        tinygpt.new_run(small_config(**settings))
    assert error.value.code == code and str(error.value)


def test_chinese_bpe_run_trains_and_chats():
    run = tinygpt.new_run(small_config(lang="chinese", tokenizer="bpe", bpe_vocab_size=600, bot_only=True))
    train_steps(run, 60)
    assert run.val_losses[-1][1] < run.val_losses[0][1]
    assert 0 < run.val_losses[-1][2] < run.val_losses[0][2]
    answer = sample.reply(run.model, run.tokenizer, [("你好", "嗨")], "你好吗?", temperature=0.5)
    assert isinstance(answer, str) and "\n" not in answer


# --- chat, save and load ------------------------------------------------------------------------------------------


def test_reply_uses_the_training_format_and_stops_at_the_newline(english_run):
    pieces = corpora.prompt_segments([("Hello", "Hi")], "How are you?")
    assert "".join(t for t, _ in pieces) == "User: Hello\nBot: Hi\nUser: How are you?\nBot:"
    for temperature in (0.0, 1.0):
        answer = sample.reply(english_run.model, english_run.tokenizer, [], "Hello", temperature=temperature)
        assert "\n" not in answer and "User:" not in answer
    replies = {sample.reply(english_run.model, english_run.tokenizer, [], "Hello", temperature=1.0)
               for _ in range(4)}
    assert len(replies) > 1  # sampling draws fresh randomness for every reply
    with pytest.raises(TrainingError) as error:
        sample.reply(english_run.model, english_run.tokenizer, [], "   ")
    assert error.value.code == "empty_message"


@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_save_and_load_give_identical_logits(tmp_path, kind, english_run):
    run = english_run if kind == "char" else train_steps(
        tinygpt.new_run(small_config(tokenizer="bpe", bpe_vocab_size=512, topics=("greetings", "ai"))), 10)
    archive = gpt.export_zip(run, tmp_path / "model.zip")
    with zipfile.ZipFile(archive) as z:
        names = set(z.namelist())
        z.extractall(tmp_path)
    assert {"tinygpt/config.json", "tinygpt/model.safetensors", "tinygpt/tinygpt.json"} <= names
    model, tokenizer = gpt.load_model(tmp_path / "tinygpt")
    ids = torch.tensor([run.tokenizer.encode(run.sample_prompt)])
    run.model.eval()
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, run.model(input_ids=ids).logits)
    assert tokenizer.encode("User: Hello\nBot:") == run.tokenizer.encode("User: Hello\nBot:")


def test_cli_json_reports_the_run(capsys, tmp_path):
    code = tinygpt_cli.main(["--corpus", "dialogs", "--lang", "chinese", "--tokenizer", "char", "--max-seconds", "4",
                             "--n-layer", "1", "--n-embd", "32", "--n-head", "2", "--block-size", "32",
                             "--sample-interval", "20", "--meter-samples", "4", "--dir", str(tmp_path), "--json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for key in ("iterations", "iterations_per_second", "train_loss", "val_loss", "val_bits_per_char", "params",
                "samples", "passes", "val_nats_per_char", "bigram_nats_per_char", "uniform_nats_per_char",
                "words_in_training_text", "copied_8grams", "seconds"):
        assert key in report
    assert report["iterations"] > 0 and report["params"] > 10_000 and report["samples"][0]["step"] == 0
    assert report["val_loss"] < report["val_curve"][0]["loss"]
    assert report["corpus"] == "dialogs" and 0 < report["passes"]
    assert (tmp_path / "pretrain" / "model.safetensors").exists()  # the next stage starts from it


def test_cli_reports_bad_input_without_a_traceback(capsys):
    assert tinygpt_cli.main(["--corpus", "dialogs", "--topics", "nope"]) == 2
    assert "no topic 'nope'" in capsys.readouterr().err
    assert tinygpt_cli.main(["pretrain", "--lang", "chinese"]) == 2  # the plays are English
    assert "pick the dialogs for chinese" in capsys.readouterr().err


# --- the tab's handlers (plain functions; the browser test drives them for real) --------------------------------


def test_tab_rejects_an_empty_topic_selection_with_a_clear_message():
    import gradio as gr

    from chat.ui import tinygpt_tab

    handler = tinygpt_tab.start_training("dialogs", "english", [], "char", 1000, False, 4, 4, 128, 64, 12, 1e-3, 0.0,
                                         120, None, None)
    with pytest.raises(gr.Error, match="Pick at least one topic"):
        next(handler)
    too_big = tinygpt_tab.start_training("dialogs", "english", ["greetings"], "char", 1000, False, 8, 8, 384, 256,
                                         64, 1e-3, 0.0, 10, None, None)
    with pytest.raises(gr.Error, match="too large for the budget"):
        next(too_big)
    with pytest.raises(gr.Error, match="Nothing to resume"):
        next(tinygpt_tab.resume_training(60, None, None))


def test_tab_chat_reads_gradio6_content_parts_and_answers_from_the_trained_model(english_run):
    import gradio as gr

    from chat.tinygpt.recipe import Recipe
    from chat.ui import tinygpt_compare

    history = [{"role": "user", "content": [{"type": "text", "text": "Hello"}]},
               {"role": "assistant", "content": [{"type": "text", "text": "Hi"}]}]
    assert tinygpt_compare._exchanges(history) == [("Hello", "Hi")]
    recipe = Recipe(pretraining=english_run)
    messages, box = tinygpt_compare.chat("How are you?", history, 0.0, "pretrain", recipe, None)
    assert box == "" and len(messages) == 4
    assert messages[-1]["role"] == "assistant" and messages[-1]["content"]
    with pytest.raises(gr.Error, match="too long"):
        tinygpt_compare.chat("x" * 500, history, 0.0, "pretrain", recipe, None)


# --- the pretraining corpora, yardsticks and the memorisation meter ------------------------------------------------


def test_a_play_becomes_dialog_text_without_headings_or_stage_directions():
    markdown = ("# Hamlet\n\n## ACT I\n\n### SCENE I. Elsinore.\n\n_FRANCISCO at his post. Enter to him\nBERNARDO_\n\n"
                "**BERNARDO**  \nWho's there?\n\n**FRANCISCO**  \nNay, answer me: stand,  \n__\\[Aside]_ and unfold "
                "yourself.\\--\n\n_Exit_\n\n*Enter Ghost,\nslowly.*\n\n**HORATIO**  \n*[Reads.]*  \nA piece of him.\n")
    assert texts.play_text(markdown) == ("BERNARDO:\nWho's there?\n\nFRANCISCO:\nNay, answer me: stand,\n"
                                         "and unfold yourself.--\n\nHORATIO:\nA piece of him.\n")


def test_the_plays_hold_out_four_whole_plays():
    plays = texts.load_text("plays")
    assert len(plays.train) == 34 and len(plays.val) == 4 and plays.held_out == list(texts.VALIDATION_PLAYS)
    train, val = plays.train_text(), plays.val_text()
    assert len(train) > 4_000_000 and 300_000 < len(val) < 0.15 * (len(train) + len(val))
    assert "HAMLET:\n" in train and "TIMON:\n" in val and "TIMON:\n" not in train
    assert not any(marker in train for marker in ("**", "_Exit", "#", "\\["))
    tiny = texts.load_text("shakespeare")
    assert tiny.val_text().startswith(tiny.val_text().split("\n", 1)[0]) and tiny.val_text()[0].isupper()
    assert 0.08 < len(tiny.val_text()) / (len(tiny.train_text()) + len(tiny.val_text())) < 0.12


def test_unknown_corpus_or_a_language_it_lacks_is_a_clear_error():
    with pytest.raises(TrainingError) as error:
        texts.load_text("klingon-opera")
    assert error.value.code == "unknown_corpus"
    with pytest.raises(TrainingError) as error:
        texts.load_text("plays", lang="chinese")
    assert error.value.code == "corpus_lang"


def test_yardsticks_match_a_hand_computation():
    # alphabet {a, b}: uniform = ln 2; bigram counts on "aab" + 1: a->a 2, a->b 2, b->a 1, b->b 1
    assert yardsticks.uniform_nats_per_char("aab", "ba") == pytest.approx(math.log(2))
    assert yardsticks.bigram_nats_per_char("aab", "ab") == pytest.approx(-math.log(2 / 4))
    assert yardsticks.bigram_nats_per_char("aab", "ba") == pytest.approx(-math.log(1 / 2))


def test_memorisation_meter_counts_real_words_and_copied_runs():
    train = "To be, or not to be: that is the question. Whether 'tis nobler in the mind to suffer"
    copied = "to be or not to be that is the question"  # 10 words: 3 copied 8-word runs
    made_up = "to be or not blorp to be that is the zzz"  # 11 words: no 8-word run from the text
    found = yardsticks.memorisation([copied, made_up], train)
    assert found["words"] == 21 and found["ngrams"] == 3 + 4
    assert found["copied_8grams"] == pytest.approx(3 / 7)
    assert found["words_in_training_text"] == pytest.approx(19 / 21)


def test_the_run_reports_its_passes_yardsticks_and_meter(english_run):
    report = tinygpt.summary(english_run)
    assert report["passes"] == pytest.approx(150 * 16 * 32 / len(english_run.train_ids), rel=1e-3)
    assert report["uniform_nats_per_char"] > report["bigram_nats_per_char"] > 1.0
    assert 0 < report["words_in_training_text"] <= 1
    assert math.isnan(report["copied_8grams"]) or 0 <= report["copied_8grams"] <= 1  # NaN: no 8 words in a row
    assert len(report["meter_samples"]) == 4
    frame = tinygpt.loss_frame(english_run)
    assert {"uniform", "bigram"} <= set(frame["curve"])


def test_batched_sampling_draws_each_row_from_its_own_generator(english_run):
    from chat.llm.params import GenerationParams

    params = GenerationParams(temperature=1.0, top_k=0, top_p=1.0, repetition_penalty=1.0)
    prompt = english_run.tokenizer.encode("User: Hello\nBot:")

    def rows(seeds):
        generators = [torch.Generator().manual_seed(s) for s in seeds]
        return sample.sample_batch(english_run.model, prompt, len(seeds), 20, params, generators,
                                   english_run.tokenizer)

    together, alone = rows([1, 2, 3]), rows([2])
    assert together[1] == alone[0]  # the same reply whatever else is drawn beside it
    newline, visible = sample.turn_marks(english_run.tokenizer)
    for row in together:  # a reply ends at its first newline after some text, or at the length limit
        ends = [i for i, t in enumerate(row) if newline[t] and any(visible[u] for u in row[:i + 1])]
        assert len(row) == 20 or ends == [len(row) - 1]
