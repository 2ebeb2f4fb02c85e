"""The Tiny GPT tab: how ChatGPT is made, on one tiny GPT, in four steps: pretrain it on Shakespeare's plays (curves
against yardsticks, a sample timeline, a memorisation meter), fine-tune it on dialogs (SFT), reinforce it with a reward
(RL, live, with a KL penalty), and compare the stages (which tokens each stage changed, a blind test).

This module holds the training handlers and the layout (`build`); what a run looks like is in tinygpt_views.py, the
comparison step's views and handlers in tinygpt_compare.py."""
from __future__ import annotations

import gradio as gr

from chat import downloads
from chat.budget import BusyError
from chat.settings import Settings
from chat.tinygpt import corpora, rewards, rl, sft, stages
from chat.tinygpt import data as dialogs
from chat.tinygpt import model as gpt
from chat.tinygpt import train as tinygpt
from chat.tinygpt.recipe import Recipe
from chat.tinygpt.train import TinyGPTConfig
from chat.training.run import TrainingError
from chat.ui import limits
from chat.ui.i18n import T, localized, tr
from chat.ui.tinygpt_compare import blind_html, chat, compare_stages, start_blind, vote
from chat.ui.tinygpt_views import (
    ASKS,
    asks_html,
    explain,
    line_plot,
    mask_view,
    pretrain_html,
    read_questions,
    rl_frames,
    rl_html,
    rl_samples_html,
    samples_html,
    sft_frame,
    sft_html,
)

DEFAULTS, SFT_DEFAULTS, RL_DEFAULTS = TinyGPTConfig(), sft.TinySFTSettings(), rl.RLSettings()
RUN_TTL_S = 7200  # a session's recipe (its models and runs) is forgotten 2 hours after its last update
UPDATE_S = 0.5
RULE_PARAMETERS = {"max-chars": "40", "contains": "love", "question": "", "no-repeat": ""}


# --- 1. pretraining --------------------------------------------------------------------------------------------


def corpus_controls(corpus: str):
    """The dialogs' language and topics show only for the dialog corpus."""
    return gr.update(visible=corpus == "dialogs"), gr.update(visible=corpus == "dialogs")


def topics_for(lang: str):
    """A language's topics, all ticked."""
    try:
        topics = dialogs.list_topics(lang)
    except (TrainingError, FileNotFoundError):
        topics = []
    return gr.update(choices=topics, value=topics)


def _download(run: tinygpt.TrainingRun):
    if not run.trained:
        return gr.update(value=None, interactive=False)
    folder = downloads.folder("tinygpt", id(run))
    for older in folder.glob("tinygpt-*.zip"):  # Gradio serves its own copy of the last one
        older.unlink(missing_ok=True)
    path = gpt.export_zip(run, folder / f"tinygpt-step{run.step}.zip")
    return gr.update(value=str(path), interactive=True)


def render(recipe: Recipe, request: gr.Request | None, download: bool = False):
    """Every output of the pretraining handlers: state, progress, loss plot, samples, download button.
    (The benchmark calls the same per-update work: the plot's frame.)"""
    run = recipe.pretraining
    names = {k: tr(request, f"tinygpt.curve_{k}") for k in ("train", "val", *tinygpt.YARDSTICKS)}
    plot = line_plot(tinygpt.loss_frame(run) if run else None, request, tr(request, "tinygpt.y_loss"), names)
    return (recipe, pretrain_html(run, request), plot, samples_html(run, request),
            _download(run) if download and run is not None else gr.skip())


def _stream(recipe: Recipe, request: gr.Request | None):
    """Train and show it: an update at most every 0.5 s, then the final state with the model to download."""
    run = recipe.pretraining
    steps = tinygpt.train(run, update_every_s=UPDATE_S)
    try:
        try:
            for _ in steps:
                if run.running:
                    yield render(recipe, request)
        except BusyError as error:  # another run holds the machine's training slot
            raise explain(request, error) from None
        if run.status == "diverged":
            gr.Warning(tr(request, "tinygpt.status_diverged", diverged=run.diverged_at, step=run.step,
                          lr=run.config.learning_rate))
        yield render(recipe, request, download=True)
    finally:
        steps.close()
        run.stop.set()  # the browser went away (generator closed) or the run ended: nothing keeps training


def start_training(corpus, lang, topics, tokenizer, bpe_vocab_size, bot_only, n_layer, n_head, n_embd, block_size,
                   batch_size, learning_rate, dropout, budget, recipe: Recipe | None, request: gr.Request):
    """A fresh pretraining run for this session (a run still training stops) and its live view."""
    recipe = recipe if recipe is not None else Recipe()
    recipe.stop()
    if corpus == "dialogs" and not topics:
        raise gr.Error(tr(request, "tinygpt.error_no_topics"))
    try:
        config = TinyGPTConfig(corpus=corpus, lang=lang if corpus == "dialogs" else "english",
                               topics=tuple(topics or ()), tokenizer=tokenizer, bpe_vocab_size=int(bpe_vocab_size),
                               bot_only=bool(bot_only) and corpus == "dialogs", n_layer=int(n_layer),
                               n_head=int(n_head), n_embd=int(n_embd), block_size=int(block_size),
                               batch_size=int(batch_size), learning_rate=float(learning_rate),
                               dropout=float(dropout), max_seconds=float(budget))
        run = tinygpt.new_run(config)
    except TrainingError as error:
        raise explain(request, error) from None
    except (TypeError, ValueError) as error:  # an emptied number box
        raise gr.Error(tr(request, "tinygpt.error_settings", error=error)) from None
    except FileNotFoundError as error:
        raise gr.Error(tr(request, "tinygpt.error_corpus", error=error)) from None
    recipe.pretraining = run
    yield render(recipe, request, download=True)
    if corpus != "dialogs":
        tinygpt.add_smollm2_yardstick(run)  # the chat model on the same text; cached on disk after the first time
    yield from _stream(recipe, request)


def resume_training(budget, recipe: Recipe | None, request: gr.Request):
    """Continue this session's pretraining run (same model, optimizer state, step counter, curves)."""
    run = recipe.pretraining if recipe is not None else None
    if run is None:
        raise gr.Error(tr(request, "tinygpt.error_nothing_to_resume"))
    if run.running:
        gr.Warning(tr(request, "tinygpt.error_already_running"))
        return
    low, high = tinygpt.LIMITS["max_seconds"]
    run.max_seconds = min(max(float(budget or 0), low), high)
    if run.progress >= 1.0:
        gr.Warning(tr(request, "tinygpt.error_budget_used", seconds=run.seconds))
        return
    yield from _stream(recipe, request)


def stop_training(recipe: Recipe | None) -> None:
    if recipe is not None:
        recipe.stop()


def forget(recipe: Recipe | None) -> None:
    """Gradio calls this when the session's state expires: nothing keeps training for nobody."""
    if recipe is not None:
        recipe.stop()
        for run in (recipe.tuning,):
            if run is not None:
                run.abandon()


# --- 2. fine-tuning --------------------------------------------------------------------------------------------


def render_sft(recipe: Recipe, request: gr.Request | None):
    run = recipe.tuning
    plot = line_plot(sft_frame(run), request, tr(request, "tinygpt.y_bot_loss"),
                 {"train": tr(request, "tinygpt.curve_bot_loss")})
    asks = asks_html(run.asks if run else [], request, "tinygpt.col_pretrained", "tinygpt.col_fine_tuned",
                      "tinygpt-sft-asks")
    return recipe, sft_html(run, request), plot, mask_view(run, request), asks


def start_sft(budget, steps, learning_rate, batch_size, questions, recipe: Recipe | None, request: gr.Request):
    """Fine-tune a copy of this session's pretrained model; live updates until the before/after answers are in."""
    recipe = recipe if recipe is not None else Recipe()
    asks = read_questions(questions, request)
    try:
        pretrained = recipe.require("pretrain")
        settings = sft.TinySFTSettings(learning_rate=float(learning_rate), batch_size=int(batch_size),
                                       max_steps=int(steps), max_seconds=float(budget))
        run = sft.new_sft_run(pretrained, settings, asks)
        sft.start(run)
    except (TrainingError, BusyError) as error:
        raise explain(request, error) from None
    except (TypeError, ValueError) as error:
        raise gr.Error(tr(request, "tinygpt.error_settings", error=error)) from None
    recipe.tuning = run
    finished = False
    try:
        while run.thread.is_alive():
            yield render_sft(recipe, request)
            run.wait(UPDATE_S)
        finished = True
        yield render_sft(recipe, request)
    finally:
        if not finished:
            run.abandon()


# --- 3. reinforcement learning ---------------------------------------------------------------------------------


def rule_parameter(rule: str):
    """The parameter box for a rule: its default, shown only for rules that take one."""
    value = RULE_PARAMETERS.get(rule, "")
    return gr.update(value=value, visible=rule in ("max-chars", "contains"))


def apply_preset(preset: str):
    return gr.update(value=rl.PRESETS.get(preset, RL_DEFAULTS).beta)


def render_rl(recipe: Recipe, request: gr.Request | None):
    run = recipe.reinforcing
    reward, kl, length = rl_frames(run)
    names = {k: tr(request, f"tinygpt.curve_{k}") for k in ("mean", "spread", "kl", "floor", "length")}
    asks = asks_html(run.asks if run else [], request, "tinygpt.col_fine_tuned", "tinygpt.col_reinforced",
                      "tinygpt-rl-asks")
    return (recipe, rl_html(run, request),
            line_plot(reward, request, tr(request, "tinygpt.y_reward"), {k: names[k] for k in ("mean", "spread")}),
            line_plot(kl, request, tr(request, "tinygpt.y_kl"), {k: names[k] for k in ("kl", "floor")}),
            line_plot(length, request, tr(request, "tinygpt.y_length"), {"length": names["length"]}),
            rl_samples_html(run, request), asks)


def start_rl(rule, parameter, beta, learning_rate, steps, samples, budget, questions, recipe: Recipe | None,
             request: gr.Request):
    """Reinforce a copy of this session's fine-tuned model with the chosen reward; live until it ends."""
    recipe = recipe if recipe is not None else Recipe()
    asks = read_questions(questions, request)
    try:
        fine_tuned = recipe.require("sft")
        if rule == "learned":
            reward, spec = recipe.learned_reward(), "learned"
        else:
            spec = f"{rule}:{str(parameter or '').strip()}" if rule in ("max-chars", "contains") else rule
            reward = rewards.parse_rule(spec)
        settings = rl.RLSettings(reward=spec, beta=float(beta), learning_rate=float(learning_rate),
                                 max_steps=int(steps), samples_per_step=int(samples), max_seconds=float(budget))
        run = rl.new_rl_run(fine_tuned, reward, settings, asks)
    except TrainingError as error:
        raise explain(request, error) from None
    except (TypeError, ValueError) as error:
        raise gr.Error(tr(request, "tinygpt.error_settings", error=error)) from None
    recipe.reinforcing = run
    loop = rl.train(run, update_every_s=UPDATE_S)
    try:
        try:
            for _ in loop:
                yield render_rl(recipe, request)
        except BusyError as error:
            raise explain(request, error) from None
        if run.status == "diverged":
            gr.Warning(tr(request, "tinygpt.rl_status_diverged", step=run.step, restored=run.good_step))
        yield render_rl(recipe, request)
    finally:
        loop.close()
        run.stop.set()


def offer_pair(recipe: Recipe | None, request: gr.Request):
    """Two answers of the fine-tuned model to a training question, for the user to choose between."""
    recipe = recipe if recipe is not None else Recipe()
    try:
        question, a, b = recipe.offer_pair(rl.training_prompts())
    except TrainingError as error:
        raise explain(request, error) from None
    return recipe, f"**{question}**", a, b, tr(request, "tinygpt.choices_made", n=len(recipe.choices))


def choose(first: bool):
    def pick(recipe: Recipe | None, request: gr.Request):
        if recipe is None or recipe.offered is None:
            raise gr.Error(tr(request, "tinygpt.error_no_pair"))
        n = recipe.choose(first)
        return recipe, "", "", "", tr(request, "tinygpt.choices_made", n=n)

    return pick


# --- the tab ---------------------------------------------------------------------------------------------------


def _slider(limits: dict, name: str, value, step, label: str, elem_id: str, **options):
    low, high = limits[name]
    return gr.Slider(low, high, value=value, step=step, label=T(label), elem_id=elem_id, **options)


def build(settings: Settings) -> None:
    with gr.Tab(T("tinygpt.tab"), id="tinygpt"):
        gr.Markdown(T("tinygpt.intro"))
        recipe = gr.State(None, time_to_live=RUN_TTL_S, delete_callback=forget)
        try:
            languages, topics = dialogs.list_languages(), dialogs.list_topics(DEFAULTS.lang)
        except FileNotFoundError:  # corpus package missing: the tab still builds, Start explains
            languages, topics = [DEFAULTS.lang], []
        with gr.Tabs(elem_id="tinygpt-steps"):
            with gr.Tab(T("tinygpt.step_pretrain"), id="tinygpt-pretrain"):
                gr.Markdown(T("tinygpt.pretrain_intro"))
                with gr.Row(equal_height=False):
                    with gr.Column(scale=1, min_width=300):
                        corpus = gr.Radio([(T(f"tinygpt.corpus_{c}"), c) for c in corpora.CORPORA],
                                          value=DEFAULTS.corpus, label=T("tinygpt.corpus"),
                                          info=T("tinygpt.corpus_info"), elem_id="tinygpt-corpus")
                        lang = gr.Dropdown(languages, value=DEFAULTS.lang, label=T("tinygpt.lang"),
                                           info=T("tinygpt.lang_info"), visible=False, elem_id="tinygpt-lang")
                        topic_box = gr.CheckboxGroup(topics, value=topics, label=T("tinygpt.topics"),
                                                     info=T("tinygpt.topics_info"), visible=False,
                                                     elem_id="tinygpt-topics")
                        tokenizer = gr.Radio([(T("tinygpt.tokenizer_bpe"), "bpe"),
                                              (T("tinygpt.tokenizer_char"), "char")],
                                             value=DEFAULTS.tokenizer, label=T("tinygpt.tokenizer"),
                                             info=T("tinygpt.tokenizer_info"), elem_id="tinygpt-tokenizer")
                        bpe_vocab = _slider(tinygpt.LIMITS, "bpe_vocab_size", DEFAULTS.bpe_vocab_size, 8,
                                            "tinygpt.bpe_vocab_size", "tinygpt-bpe-vocab")
                        bot_only = gr.Checkbox(DEFAULTS.bot_only, label=T("tinygpt.bot_only"),
                                               info=T("tinygpt.bot_only_info"), elem_id="tinygpt-bot-only")
                        with gr.Accordion(T("tinygpt.model_size"), open=False):
                            with gr.Row():
                                n_layer = _slider(tinygpt.LIMITS, "n_layer", DEFAULTS.n_layer, 1, "tinygpt.n_layer",
                                                  "tinygpt-n-layer", min_width=120)
                                n_head = _slider(tinygpt.LIMITS, "n_head", DEFAULTS.n_head, 1, "tinygpt.n_head",
                                                 "tinygpt-n-head", min_width=120)
                            with gr.Row():
                                n_embd = gr.Slider(32, 384, value=DEFAULTS.n_embd, step=32, label=T("tinygpt.n_embd"),
                                                   min_width=120, elem_id="tinygpt-n-embd")
                                block_size = gr.Slider(32, 256, value=DEFAULTS.block_size, step=32,
                                                       label=T("tinygpt.block_size"), min_width=120,
                                                       elem_id="tinygpt-block-size")
                            with gr.Row():
                                batch_size = gr.Slider(4, 64, value=DEFAULTS.batch_size, step=4,
                                                       label=T("tinygpt.batch_size"), min_width=120,
                                                       elem_id="tinygpt-batch-size")
                                dropout = _slider(tinygpt.LIMITS, "dropout", DEFAULTS.dropout, 0.05, "tinygpt.dropout",
                                                  "tinygpt-dropout", min_width=120)
                            learning_rate = gr.Number(DEFAULTS.learning_rate, label=T("tinygpt.learning_rate"),
                                                      minimum=tinygpt.LIMITS["learning_rate"][0],
                                                      maximum=tinygpt.LIMITS["learning_rate"][1],
                                                      elem_id="tinygpt-lr")
                    with gr.Column(scale=2):
                        with gr.Row(equal_height=True):
                            budget = gr.Slider(10, 600, value=DEFAULTS.max_seconds, step=5, label=T("tinygpt.budget"),
                                               info=T("tinygpt.budget_info"), scale=3, elem_id="tinygpt-budget")
                            with gr.Column(scale=2, min_width=240):
                                start = gr.Button(T("tinygpt.start"), variant="primary", elem_id="tinygpt-start")
                                with gr.Row():
                                    resume = gr.Button(T("tinygpt.resume"), min_width=100, elem_id="tinygpt-resume")
                                    stop = gr.Button(T("tinygpt.stop"), variant="stop", min_width=100,
                                                     elem_id="tinygpt-stop")
                        progress = gr.HTML(localized(pretrain_html, None), elem_id="tinygpt-progress")
                        plot = gr.LinePlot(x="step", y="loss", color="curve", label=T("tinygpt.plot"), height=300,
                                           elem_id="tinygpt-plot")
                        samples = gr.HTML(localized(samples_html, None), elem_id="tinygpt-samples-box")
                        download = gr.DownloadButton(T("tinygpt.download"), interactive=False, size="sm",
                                                     elem_id="tinygpt-download")

            with gr.Tab(T("tinygpt.step_sft"), id="tinygpt-sft"):
                gr.Markdown(T("tinygpt.sft_intro"))
                with gr.Row(equal_height=False):
                    with gr.Column(scale=1, min_width=300):
                        sft_budget = _slider(sft.LIMITS, "max_seconds", SFT_DEFAULTS.max_seconds, 5,
                                             "tinygpt.budget", "tinygpt-sft-budget")
                        sft_steps = _slider(sft.LIMITS, "max_steps", SFT_DEFAULTS.max_steps, 10, "tinygpt.max_steps",
                                            "tinygpt-sft-steps")
                        sft_batch = _slider(sft.LIMITS, "batch_size", SFT_DEFAULTS.batch_size, 1,
                                            "tinygpt.batch_size", "tinygpt-sft-batch")
                        sft_lr = gr.Number(SFT_DEFAULTS.learning_rate, label=T("tinygpt.learning_rate"),
                                           minimum=sft.LIMITS["learning_rate"][0],
                                           maximum=sft.LIMITS["learning_rate"][1], elem_id="tinygpt-sft-lr")
                        sft_questions = gr.Textbox("\n".join(stages.held_out_questions(count=ASKS)), lines=4,
                                                   label=T("tinygpt.questions"), info=T("tinygpt.questions_info"),
                                                   elem_id="tinygpt-sft-questions")
                        with gr.Row():
                            sft_start = gr.Button(T("tinygpt.sft_start"), variant="primary",
                                                  elem_id="tinygpt-sft-start")
                            sft_stop = gr.Button(T("tinygpt.stop"), variant="stop", elem_id="tinygpt-sft-stop")
                    with gr.Column(scale=2):
                        sft_progress = gr.HTML(localized(sft_html, None), elem_id="tinygpt-sft-progress")
                        sft_plot = gr.LinePlot(x="step", y="loss", color="curve", label=T("tinygpt.sft_plot"),
                                               height=220, elem_id="tinygpt-sft-plot")
                        sft_mask = gr.HighlightedText(label=T("tinygpt.mask"), show_legend=True,
                                                      combine_adjacent=True, elem_id="tinygpt-sft-mask")
                        sft_asks = gr.HTML(elem_id="tinygpt-sft-asks-box")

            with gr.Tab(T("tinygpt.step_rl"), id="tinygpt-rl"):
                gr.Markdown(T("tinygpt.rl_intro"))
                with gr.Row(equal_height=False):
                    with gr.Column(scale=1, min_width=300):
                        rule_name, _, rule_value = RL_DEFAULTS.reward.partition(":")
                        preset = gr.Radio([(T(f"tinygpt.preset_{k}"), k) for k in rl.PRESETS], value="kl",
                                          label=T("tinygpt.preset"), info=T("tinygpt.preset_info"),
                                          elem_id="tinygpt-rl-preset")
                        rule = gr.Dropdown([(T(f"tinygpt.rule_{r}"), r) for r in (*rewards.RULES, "learned")],
                                           value=rule_name, label=T("tinygpt.rule"), info=T("tinygpt.rule_info"),
                                           elem_id="tinygpt-rl-rule")
                        parameter = gr.Textbox(rule_value, label=T("tinygpt.rule_parameter"), max_lines=1,
                                               max_length=40, elem_id="tinygpt-rl-parameter")
                        beta = _slider(rl.LIMITS, "beta", RL_DEFAULTS.beta, 0.01, "tinygpt.beta", "tinygpt-rl-beta",
                                       info=T("tinygpt.beta_info"))
                        with gr.Accordion(T("tinygpt.rl_settings"), open=False):
                            rl_steps = _slider(rl.LIMITS, "max_steps", RL_DEFAULTS.max_steps, 10, "tinygpt.max_steps",
                                               "tinygpt-rl-steps")
                            rl_samples = _slider(rl.LIMITS, "samples_per_step", RL_DEFAULTS.samples_per_step, 1,
                                                 "tinygpt.samples_per_step", "tinygpt-rl-samples-per-step")
                            rl_budget = _slider(rl.LIMITS, "max_seconds", RL_DEFAULTS.max_seconds, 5,
                                                "tinygpt.budget", "tinygpt-rl-budget")
                            rl_lr = gr.Number(RL_DEFAULTS.learning_rate, label=T("tinygpt.learning_rate"),
                                              minimum=rl.LIMITS["learning_rate"][0],
                                              maximum=rl.LIMITS["learning_rate"][1], elem_id="tinygpt-rl-lr")
                        rl_questions = gr.Textbox("\n".join(stages.held_out_questions(count=ASKS)), lines=4,
                                                  label=T("tinygpt.questions"), info=T("tinygpt.questions_info"),
                                                  elem_id="tinygpt-rl-questions")
                        with gr.Row():
                            rl_start = gr.Button(T("tinygpt.rl_start"), variant="primary", elem_id="tinygpt-rl-start")
                            rl_stop = gr.Button(T("tinygpt.stop"), variant="stop", elem_id="tinygpt-rl-stop")
                        with gr.Accordion(T("tinygpt.teach"), open=False):
                            gr.Markdown(T("tinygpt.teach_info"))
                            offer = gr.Button(T("tinygpt.offer"), size="sm", elem_id="tinygpt-offer")
                            offered = gr.Markdown(elem_id="tinygpt-offered")
                            answer_a = gr.Textbox(label="A", interactive=False, elem_id="tinygpt-answer-a")
                            answer_b = gr.Textbox(label="B", interactive=False, elem_id="tinygpt-answer-b")
                            with gr.Row():
                                pick_a = gr.Button(T("tinygpt.pick_a"), size="sm", elem_id="tinygpt-pick-a")
                                pick_b = gr.Button(T("tinygpt.pick_b"), size="sm", elem_id="tinygpt-pick-b")
                            made = gr.Markdown(elem_id="tinygpt-choices")
                    with gr.Column(scale=2):
                        rl_progress = gr.HTML(localized(rl_html, None), elem_id="tinygpt-rl-progress")
                        with gr.Row():
                            reward_plot = gr.LinePlot(x="step", y="value", color="curve", height=200,
                                                      label=T("tinygpt.plot_reward"), elem_id="tinygpt-rl-reward")
                            kl_plot = gr.LinePlot(x="step", y="value", color="curve", label=T("tinygpt.plot_kl"),
                                                  height=200, elem_id="tinygpt-rl-kl")
                        length_plot = gr.LinePlot(x="step", y="value", color="curve", label=T("tinygpt.plot_length"),
                                                  height=160, elem_id="tinygpt-rl-length")
                        rl_samples_box = gr.HTML(localized(rl_samples_html, None), elem_id="tinygpt-rl-samples-box")
                        rl_asks = gr.HTML(elem_id="tinygpt-rl-asks-box")

            with gr.Tab(T("tinygpt.step_compare"), id="tinygpt-compare-step"):
                gr.Markdown(T("tinygpt.compare_intro"))
                compare_questions = gr.Textbox("\n".join(stages.held_out_questions(count=ASKS)), lines=4,
                                               label=T("tinygpt.questions"), elem_id="tinygpt-compare-questions")
                compare_btn = gr.Button(T("tinygpt.compare"), variant="primary", elem_id="tinygpt-compare-button")
                comparison = gr.HTML(elem_id="tinygpt-compare-box")
                gr.Markdown(T("tinygpt.blind_intro"))
                with gr.Row():
                    blind_pair = gr.Radio([(T("tinygpt.pair_pretrain_sft"), "pretrain-sft"),
                                           (T("tinygpt.pair_sft_rl"), "sft-rl")], value="sft-rl",
                                          label=T("tinygpt.blind_pair"), elem_id="tinygpt-blind-pair")
                    blind_start = gr.Button(T("tinygpt.blind_start"), elem_id="tinygpt-blind-start")
                blind_question = gr.Markdown(elem_id="tinygpt-blind-question")
                with gr.Row():
                    blind_a = gr.Textbox(label="A", interactive=False, elem_id="tinygpt-blind-a")
                    blind_b = gr.Textbox(label="B", interactive=False, elem_id="tinygpt-blind-b")
                with gr.Row():
                    vote_a = gr.Button(T("tinygpt.pick_a"), elem_id="tinygpt-vote-a")
                    vote_b = gr.Button(T("tinygpt.pick_b"), elem_id="tinygpt-vote-b")
                blind_result = gr.HTML(localized(lambda request: blind_html(None, request)[3]),
                                       elem_id="tinygpt-blind-box")
                gr.Markdown(T("tinygpt.chat_intro"))
                with gr.Row(equal_height=False):
                    with gr.Column(scale=3):
                        chatbot = gr.Chatbot(label=T("tinygpt.chatbot"), height=300, elem_id="tinygpt-chatbot")
                        with gr.Row():
                            message = gr.Textbox(placeholder=T("tinygpt.message_placeholder"), show_label=False,
                                                 scale=4, max_length=stages.MAX_PROMPT_CHARS,
                                                 elem_id="tinygpt-message")
                            send = gr.Button(T("tinygpt.send"), scale=1, elem_id="tinygpt-send")
                    with gr.Column(scale=1, min_width=220):
                        chat_stage = gr.Radio([(T(f"tinygpt.stage_{s}"), s) for s in stages.STAGES], value="pretrain",
                                              label=T("tinygpt.chat_stage"), elem_id="tinygpt-chat-stage")
                        temperature = gr.Slider(0.0, 1.5, value=0.8, step=0.05, label=T("tinygpt.temperature"),
                                                info=T("tinygpt.temperature_info"), elem_id="tinygpt-temperature")
                        gr.ClearButton([message, chatbot], value=T("tinygpt.clear_chat"), size="sm")

        # one queue slot more than the machine's one training slot: a second start reaches it and is refused at
        # once with a clear message (chat.training.run.claim), never queued behind a run for minutes
        training = {"show_progress": "hidden", "api_visibility": "private", "concurrency_limit": 2,
                        "concurrency_id": "chatlab-tinygpt"}
        outputs = [recipe, progress, plot, samples, download]
        knobs = [corpus, lang, topic_box, tokenizer, bpe_vocab, bot_only, n_layer, n_head, n_embd, block_size,
                 batch_size, learning_rate, dropout, budget]
        corpus.change(corpus_controls, corpus, [lang, topic_box], api_visibility="private")
        lang.change(topics_for, lang, topic_box, api_visibility="private")
        start.click(start_training, [*knobs, recipe], outputs, **training)
        resume.click(resume_training, [budget, recipe], outputs, **training)
        for button in (stop, sft_stop, rl_stop):
            button.click(stop_training, recipe, None, queue=False, api_visibility="private")
        sft_start.click(start_sft, [sft_budget, sft_steps, sft_lr, sft_batch, sft_questions, recipe],
                        [recipe, sft_progress, sft_plot, sft_mask, sft_asks], **training)
        rule.change(rule_parameter, rule, parameter, api_visibility="private")
        preset.change(apply_preset, preset, beta, api_visibility="private")
        rl_start.click(start_rl, [rule, parameter, beta, rl_lr, rl_steps, rl_samples, rl_budget, rl_questions,
                                  recipe],
                       [recipe, rl_progress, reward_plot, kl_plot, length_plot, rl_samples_box, rl_asks], **training)
        pair_outputs = [recipe, offered, answer_a, answer_b, made]
        offer.click(offer_pair, recipe, pair_outputs, api_visibility="private", **limits.heavy("model"))
        pick_a.click(choose(True), recipe, pair_outputs, api_visibility="private")
        pick_b.click(choose(False), recipe, pair_outputs, api_visibility="private")
        compare_btn.click(compare_stages, [compare_questions, recipe], comparison, api_visibility="private",
                          **limits.heavy("model"))
        blind_outputs = [recipe, blind_question, blind_a, blind_b, blind_result]
        blind_start.click(start_blind, [blind_pair, recipe], blind_outputs, api_visibility="private",
                          **limits.heavy("model"))
        vote_a.click(vote(True), recipe, blind_outputs, api_visibility="private")
        vote_b.click(vote(False), recipe, blind_outputs, api_visibility="private")
        for event in (message.submit, send.click):
            event(chat, [message, chatbot, temperature, chat_stage, recipe], [chatbot, message],
                  api_visibility="private")
