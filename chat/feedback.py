"""Human feedback (RLHF), live: people pick the better of two answers, a reward model learns their preference, and
the chat model is moved toward it.

The last stage of how ChatGPT is made, in three visible steps:
1. Collect: the model answers a prompt twice (sampled); the user picks the better one. Pairs are TRL's
   prompt/chosen/rejected rows, in and out as JSONL; presets give tested sets (concise, friendly, Chinese, refuse).
2. Reward model (chat.reward): Bradley–Terry on the pairs; it scores any answer, and best-of-n sampling with it is
   "alignment without training".
3. Policy update: DPO (TRL's `DPOTrainer`) on LoRA over the chat model's shared weights (chat.tuning), the original
   model as the reference (the adapter switched off). Live curves of the implicit rewards of chosen and rejected
   answers, their margin, the pair accuracy, and the KL divergence from the reference on held-out answers. The
   "over-optimise" preset reproduces reward hacking.

CLI: python -m chat.feedback --preset concise [--max-seconds S] [--ask PROMPT ...] --json
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from chat import reward, tuning
from chat.finetune import MAX_CHARS, conversation, is_right, lora_settings
from chat.tuning import LiveRun, TuningError

PRESETS: dict = json.loads((Path(__file__).parent / "presets" / "feedback.json").read_text(encoding="utf-8"))
MIN_PAIRS, MAX_PAIRS = 4, 64
ANSWER_TOKENS = 128  # greedy tokens per held-out answer (long enough to see an answer get shorter)
KL_EVERY = 4  # steps between KL measurements (each costs two forward passes over a few answers, ~3% of a step)


@dataclass
class Preference:
    prompt: str
    chosen: str  # the answer people preferred
    rejected: str  # the other one


@dataclass
class DPOSettings:
    beta: float = 0.1  # how strongly the policy is held to the reference: lower = freer to drift (and to hack)
    learning_rate: float = 1e-4  # AdamW's step for the LoRA adapter
    max_steps: int = 16  # optimizer steps; each sees `batch_size` pairs
    batch_size: int = 4
    lora_r: int = 16  # rank of the LoRA update (alpha = 2 r)
    lora_layers: int = 15  # adapt the top N transformer blocks (0 = all 30): fewer train faster (README: measured)
    max_seconds: float = 150.0  # time budget: training stops when it is spent
    seed: int = 0


LIMITS = {"beta": (0.01, 1.0), "learning_rate": (1e-7, 1e-2)} | tuning.LIMITS


def validate_settings(settings: DPOSettings) -> DPOSettings:
    return tuning.check_settings(settings, LIMITS)


# --- preferences ----------------------------------------------------------------------------------------------------


@dataclass
class FeedbackPreset:
    key: str
    settings: DPOSettings
    pairs: list[Preference]
    held_out_pairs: list[Preference]  # never trained on: the reward model's accuracy
    held_out: list[tuple[str, list[str] | None]]  # prompts answered before/after, with a right answer's words


def preset(key: str) -> FeedbackPreset:
    if key not in PRESETS:
        raise TuningError("preset", f"Unknown preset {key!r}: use one of {', '.join(PRESETS)}", preset=key)
    raw = PRESETS[key]
    data = PRESETS[raw.get("pairs_from", key)]
    return FeedbackPreset(key, DPOSettings(**raw["settings"]),
                          [Preference(*p) for p in data["pairs"]], [Preference(*p) for p in data["held_out_pairs"]],
                          [(q, words) for q, words in data["held_out"]])


def validate_pairs(pairs: list[Preference]) -> list[Preference]:
    clean = [Preference(*(str(x or "").strip() for x in (p.prompt, p.chosen, p.rejected))) for p in pairs]
    clean = [p for p in clean if p.prompt or p.chosen or p.rejected]
    for row, p in enumerate(clean, 1):
        for name in ("prompt", "chosen", "rejected"):
            text = getattr(p, name)
            if not text:
                raise TuningError("empty_field", f"Row {row} has an empty {name}.", row=row, field=name)
            if len(text) > MAX_CHARS:
                raise TuningError("too_long", f"Row {row}'s {name} is {len(text)} characters; at most {MAX_CHARS}.",
                                  row=row, chars=len(text), limit=MAX_CHARS)
        if p.chosen == p.rejected:
            raise TuningError("same", f"Row {row}: the chosen and the rejected answers are the same, so there is no "
                              "preference to learn.", row=row)
    if len(clean) < MIN_PAIRS:
        raise TuningError("too_few_pairs", f"{len(clean)} pair(s): the reward model and DPO need at least "
                          f"{MIN_PAIRS}.", n=len(clean), minimum=MIN_PAIRS)
    if len(clean) > MAX_PAIRS:
        raise TuningError("too_many", f"{len(clean)} pairs: at most {MAX_PAIRS} per run.", n=len(clean),
                          limit=MAX_PAIRS)
    return clean


def dpo_rows(pairs: list[Preference], system: str = "") -> list[dict]:
    """TRL's conversational preference rows: the prompt as messages, each answer as one assistant message."""
    return [{"prompt": conversation(p.prompt, system), "chosen": [{"role": "assistant", "content": p.chosen}],
             "rejected": [{"role": "assistant", "content": p.rejected}]} for p in pairs]


def to_jsonl(pairs: list[Preference], system: str = "") -> str:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in dpo_rows(pairs, system))


def _text(value, what: str) -> tuple[str, str]:
    """(system, text) of a prompt or an answer given as a string or as chat messages."""
    if isinstance(value, str):
        return "", value
    if isinstance(value, list) and value and all(isinstance(m, dict) and isinstance(m.get("content"), str)
                                                  for m in value):
        system = value[0]["content"] if value[0].get("role") == "system" else ""
        rest = value[1:] if system else value
        wanted = "user" if what == "prompt" else "assistant"
        if len(rest) == 1 and rest[0].get("role") == wanted:
            return system, rest[0]["content"]
    raise ValueError(f'"{what}" must be a string or one {"user" if what == "prompt" else "assistant"} message')


def from_jsonl(text: str) -> tuple[list[Preference], str]:
    """(pairs, system prompt) from JSONL rows {"prompt", "chosen", "rejected"} (strings or chat messages)."""
    pairs, systems = [], set()
    lines = [line for line in str(text or "").splitlines() if line.strip()]
    if not lines:
        raise TuningError("jsonl", "The file is empty.", line=0, reason="empty")
    for number, line in enumerate(lines, 1):
        try:
            row = json.loads(line)
            if not isinstance(row, dict) or not {"prompt", "chosen", "rejected"} <= row.keys():
                raise ValueError('each line needs "prompt", "chosen" and "rejected"')
            system, prompt = _text(row["prompt"], "prompt")
            pairs.append(Preference(prompt, _text(row["chosen"], "chosen")[1], _text(row["rejected"], "rejected")[1]))
            systems.add(system.strip())
        except (ValueError, TypeError) as error:
            raise TuningError("jsonl", f"Line {number}: {error}", line=number, reason=str(error)) from None
    if len(systems) > 1:
        raise TuningError("jsonl", "The lines use different system prompts; a run trains with one.", line=0,
                          reason="different system prompts")
    return pairs, systems.pop()


def triples(pairs: list[Preference]) -> list[tuple[str, str, str]]:
    return [(p.prompt, p.chosen, p.rejected) for p in pairs]


# --- collect: two sampled answers -----------------------------------------------------------------------------------


def two_answers(prompt: str, system: str = "", temperature: float = 0.9, seed: int | None = None,
                max_new_tokens: int = 160, loaded=None) -> tuple[str, str]:
    """Two different sampled answers to `prompt` (the fast decoder when it is there): the user picks one."""
    from chat import generation
    from chat.models import get_model

    prompt = str(prompt or "").strip()
    if not prompt:
        raise TuningError("empty_prompt", "Type a prompt first.")
    if len(prompt) > MAX_CHARS:
        raise TuningError("too_long", f"The prompt is {len(prompt)} characters; at most {MAX_CHARS}.", row=0,
                          chars=len(prompt), limit=MAX_CHARS)
    loaded = loaded or get_model()
    seed = int(seed if seed is not None else torch.randint(0, 2**31 - 1, ()).item())
    answers = []
    for attempt in range(4):  # two samples can coincide (short answers): draw again
        params = generation.GenerationParams(temperature=temperature, top_p=0.95, top_k=0,
                                             max_new_tokens=max_new_tokens, repetition_penalty=1.0,
                                             seed=seed + attempt)
        text, _ = generation.chat_reply(conversation(prompt, system), params, loaded)
        if text.strip() and text.strip() not in answers:
            answers.append(text.strip())
        if len(answers) == 2:
            return answers[0], answers[1]
    raise TuningError("no_variety", "The model gave the same answer every time; try a more open prompt.")


# --- the DPO run --------------------------------------------------------------------------------------------------


@dataclass
class DPORun(LiveRun):
    pairs: list[Preference] = field(default_factory=list)
    system: str = ""
    settings: DPOSettings = field(default_factory=DPOSettings)
    preset: str = ""
    reward_model: reward.RewardModel | None = None
    comparisons: list[dict] = field(default_factory=list)  # before/after answers with reward scores
    questions: list[tuple[str, list[str] | None]] = field(default_factory=list)


def kl_from_reference(model, tokenizer, texts: list[tuple[str, str]], system: str = "") -> float:
    """Mean per-token KL(policy ‖ reference) in nats over the answer tokens of (prompt, answer) texts, exact over the
    whole vocabulary; the reference is the same model with its adapter switched off (the original chat model)."""
    from chat.reward import _render

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
        config = DPOConfig(**tuning.cpu_training_args(
            learning_rate=s.learning_rate, max_steps=s.max_steps, per_device_train_batch_size=s.batch_size,
            seed=s.seed, data_seed=s.seed, beta=s.beta, max_length=512, precompute_ref_log_probs=True,
            precompute_ref_batch_size=8))
        # the KL callback must log before the live one reads the logs (callbacks run in order)
        return DPOTrainer(model=run.model, args=config, train_dataset=Dataset.from_list(dpo_rows(run.pairs,
                                                                                                   run.system)),
                          processing_class=copy.deepcopy(base.tokenizer),
                          callbacks=[_kl_callback(run, base.tokenizer, kl_texts), callback])

    return make


def train_reward_model(pairs: list[Preference], system: str = "", base=None) -> reward.RewardModel:
    from chat.models import get_model

    base = base or get_model()
    return reward.fit(base.model, base.tokenizer, triples(validate_pairs(pairs)), system)


def start_run(pairs: list[Preference], system: str = "", settings: DPOSettings = DPOSettings(), base=None,
              session: str | None = None, preset_key: str = "", reward_model: reward.RewardModel | None = None,
              questions: list[tuple[str, list[str] | None]] | None = None,
              kl_texts: list[tuple[str, str]] | None = None) -> DPORun:
    """Validate, claim the training slot and run DPO in a thread; at the end the policy answers `questions` next to
    the original (both scored by `reward_model`) and is published for `session` (the Chat tab's "aligned" model)."""
    from chat.models import get_model

    pairs = validate_pairs(pairs)
    validate_settings(settings)
    base = base or get_model()
    run = DPORun("dpo", int(settings.max_steps), float(settings.max_seconds), session, pairs=pairs, system=system,
                 settings=settings, preset=preset_key, reward_model=reward_model, questions=list(questions or []))
    tuning.training_slot(run)
    try:
        run.model = tuning.lora_model(base.model, lora_settings(settings), seed=int(settings.seed))
    except BaseException:
        tuning.release_slot(run)
        raise
    kl_texts = kl_texts if kl_texts is not None else [(p.prompt, p.chosen) for p in pairs[:2]]

    def finish(done: DPORun):
        if done.questions:
            done.comparisons = compare(base, done.model, done.questions, done.system, done.reward_model)
        if session is not None and not done.abandoned:
            title = f"{base.title} + DPO ({done.preset or 'your pairs'}, {done.step} steps)"
            tuning.TUNED.put(session, tuning.TunedModel("dpo", title, tuning.tuned_view(base, done.model, "dpo",
                                                                                         title), summary(done)))

    return tuning.start(run, _make_trainer(run, base, kl_texts), finish)


def compare(base, policy, questions: list[tuple[str, list[str] | None]], system: str = "",
            reward_model: reward.RewardModel | None = None, max_new_tokens: int = ANSWER_TOKENS) -> list[dict]:
    """Greedy answers of the original model and the policy to each prompt, their lengths, right-answer checks and
    reward-model scores."""
    conversations = [conversation(q, system) for q, _ in questions]
    before = tuning.BEFORE.answers(base, conversations, max_new_tokens)
    after = tuning.greedy_answers(policy, base.tokenizer, conversations, max_new_tokens)
    score_before = score_after = [None] * len(questions)
    if reward_model is not None:
        score_before = reward.scores(reward_model, base.model, base.tokenizer, [(q, a) for (q, _), a in
                                                                                 zip(questions, before)])
        score_after = reward.scores(reward_model, base.model, base.tokenizer, [(q, a) for (q, _), a in
                                                                                zip(questions, after)])
    rows = []
    for (question, words), old, new, s_old, s_new in zip(questions, before, after, score_before, score_after):
        row = {"question": question, "before": old, "after": new, "before_chars": len(old), "after_chars": len(new),
               "before_reward": s_old, "after_reward": s_new}
        if words:
            row["before_ok"], row["after_ok"] = is_right(old, words), is_right(new, words)
        rows.append(row)
    return rows


def best_of_n(prompt: str, reward_model: reward.RewardModel, n: int = 4, temperature: float = 0.9,
              seed: int | None = None, max_new_tokens: int = 128, loaded=None) -> list[dict]:
    """n sampled answers scored by the reward model, best first: alignment without training."""
    from chat import generation
    from chat.models import get_model

    if not 1 <= int(n) <= 8:
        raise TuningError("n", f"n must be between 1 and 8, got {n}", n=n)
    prompt = str(prompt or "").strip()
    if not prompt:
        raise TuningError("empty_prompt", "Type a prompt first.")
    loaded = loaded or get_model()
    seed = int(seed if seed is not None else torch.randint(0, 2**31 - 1, ()).item())
    answers = []
    for i in range(int(n)):
        params = generation.GenerationParams(temperature=temperature, top_p=0.95, top_k=0,
                                             max_new_tokens=max_new_tokens, repetition_penalty=1.0, seed=seed + i)
        answers.append(generation.chat_reply(conversation(prompt, reward_model.system), params, loaded)[0].strip())
    found = reward.scores(reward_model, loaded.model, loaded.tokenizer, [(prompt, a) for a in answers])
    ranked = sorted(zip(found, answers), key=lambda pair: -pair[0])
    return [{"answer": a, "reward": s, "best": i == 0} for i, (s, a) in enumerate(ranked)]


def summary(run: DPORun) -> dict:
    return {
        "preset": run.preset, "status": run.status, "dpo_steps": run.step,
        "dpo_seconds": round(run.elapsed, 2), "steps_per_second": round(run.steps_per_second, 3),
        "margin_end": run.last("rewards/margins"), "accuracy_end": run.last("rewards/accuracies"),
        "kl_end": run.last("kl"), "pairs": len(run.pairs), "diverged_at": run.diverged_at or None,
        "error": run.error or None, "settings": asdict(run.settings),
    }


# --- CLI ----------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="RLHF on a preset: fit the reward model, run DPO (LoRA, TRL), and "
                                     "compare answers before and after with their reward scores.")
    parser.add_argument("--preset", default="concise", choices=list(PRESETS),
                        help="preference pairs (default: concise)")
    parser.add_argument("--jsonl", help="train on this JSONL file of prompt/chosen/rejected rows instead")
    parser.add_argument("--max-seconds", type=float, default=None, help="DPO time budget (default: 150)")
    parser.add_argument("--steps", type=int, default=None, help="DPO steps (default: the preset's)")
    parser.add_argument("--lr", type=float, default=None, help="learning rate (default: the preset's)")
    parser.add_argument("--beta", type=float, default=None, help="DPO beta (default: the preset's)")
    parser.add_argument("--ask", action="append", default=[], help="a prompt answered before and after (repeat)")
    parser.add_argument("--json", action="store_true", help="print one JSON object last")
    args = parser.parse_args(argv)
    from chat.models import get_model

    try:
        chosen = preset(args.preset)
        pairs, system = (from_jsonl(Path(args.jsonl).read_text(encoding="utf-8")) if args.jsonl
                         else (chosen.pairs, ""))
        settings = DPOSettings(**{**asdict(chosen.settings), **{k: v for k, v in {
            "max_seconds": args.max_seconds, "max_steps": args.steps, "learning_rate": args.lr,
            "beta": args.beta}.items() if v is not None}})
        base = get_model()
        started = time.perf_counter()
        rm = train_reward_model(pairs, system, base)
        rm_seconds = time.perf_counter() - started
        held_out = [] if args.jsonl else triples(chosen.held_out_pairs)
        rm_accuracy = reward.accuracy(rm, base.model, base.tokenizer, held_out)
        run = start_run(pairs, system, settings, base, preset_key="" if args.jsonl else args.preset,
                        reward_model=rm, questions=[(q, None) for q in args.ask])
        while run.running:
            run.wait(1.0)
            if not args.json and run.logs:
                print(f"step {run.step}/{run.max_steps}  loss {run.last('loss'):.3f}  margin "
                      f"{run.last('rewards/margins'):.2f}  {run.elapsed:.0f} s", file=sys.stderr)
        run.wait()
    except TuningError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    result = {"reward_model_accuracy": round(rm_accuracy, 3) if held_out else None,
              "reward_model_train_accuracy": round(rm.train_accuracy, 3),
              "reward_model_seconds": round(rm_seconds, 2), "held_out_pairs": len(held_out)}
    result |= summary(run) | {"asks": [{k: r[k] for k in ("question", "before", "after", "before_reward",
                                                            "after_reward")} for r in run.comparisons]}
    if args.json:
        print(json.dumps(result, ensure_ascii=False))
    else:
        for row in result["asks"]:
            print(f"\nQ: {row['question']}\n  before ({row['before_reward']}): {row['before']}\n"
                  f"  after  ({row['after_reward']}): {row['after']}")
        print(json.dumps({k: v for k, v in result.items() if k != "asks"}, ensure_ascii=False, indent=2))
    return 0 if run.status in ("done", "timeout", "stopped") else 1


if __name__ == "__main__":
    raise SystemExit(main())
