"""The policy update: DPO (TRL's DPOTrainer) on LoRA, in a thread, with the KL divergence from the reference logged
live; then the original and the aligned model answer held-out prompts side by side, scored by the reward model.
The "over-optimise" preset reproduces reward hacking."""
from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, field

import torch

from chat.feedback import reward
from chat.feedback.preferences import DPOSettings, Preference, dpo_rows, triples, validate_pairs, validate_settings
from chat.llm.params import GenerationParams
from chat.llm.prompt import conversation
from chat.training import lora, run as runs
from chat.training.answers import BEFORE, greedy_answers, is_right, loops
from chat.training.run import TrainingError

ANSWER_TOKENS = 128  # greedy tokens per held-out answer (long enough to see an answer get shorter)
KL_EVERY = 4  # steps between KL measurements (each costs two forward passes over a few answers, ~3% of a step)


@dataclass(eq=False, kw_only=True)
class DPORun(lora.LoraRun):
    pairs: list[Preference] = field(default_factory=list)
    system: str = ""
    settings: DPOSettings = field(default_factory=DPOSettings)
    preset: str = ""
    reward_model: reward.RewardModel | None = None
    comparisons: list[dict] = field(default_factory=list)  # before/after answers with reward scores
    questions: list[tuple[str, list[str] | None]] = field(default_factory=list)
    own: list[str] = field(default_factory=list)  # the presenter's own prompts among the questions


def loss_args(settings: DPOSettings) -> dict:
    """DPOConfig's loss: DPO's sigmoid loss, plus the chosen answers' next-token loss when `sft_weight` > 0."""
    if settings.sft_weight <= 0:
        return {}
    return {"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, float(settings.sft_weight)]}


def kl_from_reference(model, tokenizer, texts: list[tuple[str, str]], system: str = "") -> float:
    """Mean per-token KL(policy ‖ reference) in nats over the answer tokens of (prompt, answer) texts, exact over the
    whole vocabulary; the reference is the same model with its adapter switched off (the original chat model)."""
    from chat.feedback.reward import _render

    if not texts:
        return math.nan
    rendered = [_render(tokenizer, p, a, system) for p, a in texts]
    width = max(len(ids) for ids, _ in rendered)
    ids = torch.zeros((len(rendered), width), dtype=torch.long)
    mask = torch.zeros((len(rendered), width), dtype=torch.long)
    answer = torch.zeros((len(rendered), width), dtype=torch.bool)  # positions that predict an answer token
    for row, (tokens, head) in enumerate(rendered):  # right padding: positions stay those of the real text
        ids[row, :len(tokens)] = torch.tensor(tokens)
        mask[row, :len(tokens)] = 1
        answer[row, head - 1:len(tokens) - 1] = True
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            policy = torch.log_softmax(model(input_ids=ids, attention_mask=mask).logits[answer].float(), -1)
            with model.disable_adapter():
                ref = torch.log_softmax(model(input_ids=ids, attention_mask=mask).logits[answer].float(), -1)
    finally:
        model.train(was_training)
    return float((policy.exp() * (policy - ref)).sum(-1).mean())


def _kl_callback(run: DPORun, tokenizer, texts: list[tuple[str, str]]):
    from transformers import TrainerCallback

    class KLCallback(TrainerCallback):
        """Adds "kl" to a step's log every KL_EVERY steps (and at the last one)."""

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not logs or "loss" not in logs or not texts:
                return
            if state.global_step % KL_EVERY == 0 or state.global_step >= run.max_steps or control.should_training_stop:
                logs["kl"] = kl_from_reference(run.model, tokenizer, texts, run.system)

    return KLCallback()


def _make_trainer(run: DPORun, base, kl_texts: list[tuple[str, str]]):
    def make(callback):
        from datasets import Dataset
        from trl import DPOConfig, DPOTrainer

        s = run.settings
        config = DPOConfig(**lora.cpu_training_args(
            learning_rate=s.learning_rate, max_steps=s.max_steps, per_device_train_batch_size=s.batch_size,
            seed=s.seed, data_seed=s.seed, beta=s.beta, max_length=512, precompute_ref_log_probs=True,
            precompute_ref_batch_size=8, **loss_args(s)))
        # the KL callback must log before the live one reads the logs (callbacks run in order)
        return DPOTrainer(model=run.model, args=config, train_dataset=Dataset.from_list(dpo_rows(run.pairs,
                                                                                                   run.system)),
                          processing_class=copy.deepcopy(base.tokenizer),
                          callbacks=[_kl_callback(run, base.tokenizer, kl_texts), callback])

    return make


def train_reward_model(pairs: list[Preference], system: str = "", base=None) -> reward.RewardModel:
    from chat.llm.models import get_model

    base = base or get_model()
    return reward.fit(base.model, base.tokenizer, triples(validate_pairs(pairs)), system)


def start_run(pairs: list[Preference], system: str = "", settings: DPOSettings = DPOSettings(), base=None,
              session: str | None = None, preset_key: str = "", reward_model: reward.RewardModel | None = None,
              questions: list[tuple[str, list[str] | None]] | None = None,
              kl_texts: list[tuple[str, str]] | None = None) -> DPORun:
    """Validate, claim the training slot and run DPO in a thread; at the end the policy answers `questions` next to
    the original (both scored by `reward_model`) and is published for `session` (the Chat tab's "aligned" model)."""
    from chat.llm.models import get_model

    pairs = validate_pairs(pairs)
    validate_settings(settings)
    base = base or get_model()
    run = DPORun(kind="dpo", max_steps=int(settings.max_steps), max_seconds=float(settings.max_seconds),
                 session=session, pairs=pairs, system=system, settings=settings, preset=preset_key,
                 reward_model=reward_model, questions=list(questions or []))
    runs.claim(run)
    try:
        run.model = lora.lora_model(base.model, lora.settings_of(settings), seed=int(settings.seed))
    except BaseException:
        runs.release(run)
        raise
    kl_texts = kl_texts if kl_texts is not None else [(p.prompt, p.chosen) for p in pairs[:2]]

    def finish(done: DPORun):
        if done.questions:
            done.comparisons = compare(base, done.model, done.questions, done.system, done.reward_model)
        lora.publish(done, base, f"{base.title} + DPO ({done.preset or 'your pairs'}, {done.step} steps)",
                     summary(done))

    return lora.start(run, _make_trainer(run, base, kl_texts), finish)


def compare(base, policy, questions: list[tuple[str, list[str] | None]], system: str = "",
            reward_model: reward.RewardModel | None = None, max_new_tokens: int = ANSWER_TOKENS) -> list[dict]:
    """Greedy answers of the original model and the policy to each prompt, their lengths, right-answer checks and
    reward-model scores."""
    conversations = [conversation(q, system) for q, _ in questions]
    before = BEFORE.answers(base, conversations, max_new_tokens)
    after = greedy_answers(policy, base.tokenizer, conversations, max_new_tokens)
    score_before = score_after = [None] * len(questions)
    if reward_model is not None:
        score_before = reward.scores(reward_model, base.model, base.tokenizer, [(q, a) for (q, _), a in
                                                                                 zip(questions, before)])
        score_after = reward.scores(reward_model, base.model, base.tokenizer, [(q, a) for (q, _), a in
                                                                                zip(questions, after)])
    rows = []
    for (question, words), old, new, s_old, s_new in zip(questions, before, after, score_before, score_after):
        row = {"question": question, "before": old, "after": new, "before_chars": len(old), "after_chars": len(new),
               "before_reward": s_old, "after_reward": s_new, "before_loops": loops(old), "after_loops": loops(new)}
        if words:
            row["before_ok"], row["after_ok"] = is_right(old, words), is_right(new, words)
        rows.append(row)
    return rows


def best_of_n(prompt: str, reward_model: reward.RewardModel, n: int = 4, temperature: float = 0.9,
              seed: int | None = None, max_new_tokens: int = 128, loaded=None) -> list[dict]:
    """n sampled answers scored by the reward model, best first: alignment without training."""
    from chat.llm import generation
    from chat.llm.models import get_model

    if not 1 <= int(n) <= 8:
        raise TrainingError("n", f"n must be between 1 and 8, got {n}", n=n)
    prompt = str(prompt or "").strip()
    if not prompt:
        raise TrainingError("empty_prompt", "Type a prompt first.")
    loaded = loaded or get_model()
    seed = int(seed if seed is not None else torch.randint(0, 2**31 - 1, ()).item())
    answers = []
    for i in range(int(n)):
        params = GenerationParams(temperature=temperature, top_p=0.95, top_k=0, max_new_tokens=max_new_tokens,
                                  repetition_penalty=1.0, seed=seed + i)
        answers.append(generation.chat_reply(conversation(prompt, reward_model.system), params, loaded)[0].strip())
    found = reward.scores(reward_model, loaded.model, loaded.tokenizer, [(prompt, a) for a in answers])
    ranked = sorted(zip(found, answers), key=lambda pair: -pair[0])
    return [{"answer": a, "reward": s, "best": i == 0} for i, (s, a) in enumerate(ranked)]


def summary(run: DPORun) -> dict:
    return {
        "preset": run.preset, "status": run.status, "dpo_steps": run.step,
        "dpo_seconds": round(run.seconds, 2), "steps_per_second": round(run.steps_per_second, 3),
        "margin_end": run.last("rewards/margins"), "accuracy_end": run.last("rewards/accuracies"),
        "kl_end": run.last("kl"), "pairs": len(run.pairs), "diverged_at": run.diverged_at or None,
        "error": run.error or None, "settings": asdict(run.settings),
    }


