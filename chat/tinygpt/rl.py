"""Reinforcement learning from a reward, live: the fine-tuned Tiny GPT samples replies, a reward scores them, and
the policy moves toward the better ones while a KL penalty holds it near the model it started from.

Each step: one prompt from chatterbot's training questions, `samples_per_step` replies to it sampled at temperature 1
(the policy itself, with a key/value cache), their rewards, and one AdamW step of REINFORCE with a leave-one-out
baseline (RLOO: each reply is judged against the mean of the others to the same prompt, a group-relative
advantage). The KL penalty is in the reward, as in InstructGPT: reward - β · log(π/π_ref) summed over the reply's
tokens, which makes the step an unbiased estimate of the gradient of E[reward] - β · KL(π ‖ π_ref), whose best policy
is the reference reweighted by exp(reward / β). The live views: reward mean and spread, KL per reply (the exact
per-token KL summed over the reply), reply length, and every step's samples with their rewards and advantages.

For a yes/no reward the KL has a floor: no policy reaches success rate r from the reference's base rate p0 with less
KL per reply than KL(Bernoulli(r) ‖ Bernoulli(p0)) (the data-processing inequality: a reply's success is a function
of the reply). The loop measures p0 first, then draws that floor under the KL curve.

Under `accelerate launch --num_processes N` each process samples and scores its share of the replies (every reply
draws from its own seeded generator, so the replies are the same for 1 or N processes) and the gradients are
averaged: N processes train as one does.
"""
from __future__ import annotations

import copy
import math
import random
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F

from chat.llm.params import GenerationParams
from chat.tinygpt.data import load_corpus
from chat.tinygpt.sample import reply_text, sample_batch
from chat.tinygpt.sft import MAX_ASKS, bot_loss, dialog_examples
from chat.tinygpt.stages import MAX_PROMPT_CHARS, Stage, answers, check_question, prompt_ids
from chat.training.run import Run, TrainingError, check_settings, exclusive

POLICY = GenerationParams(temperature=1.0, top_k=0, top_p=1.0, repetition_penalty=1.0)  # sampling = the policy
BASE_RATE_SAMPLES = 128  # replies of the starting model that measure the reward's base rate
FIRST_LAST = 10  # steps averaged into reward_first and reward_last


@dataclass
class RLSettings:
    reward: str = "contains:you"  # a rule (rewards.RULES), or "learned" for a reward model from the user's choices
    beta: float = 0.1  # KL penalty: how strongly the policy is held to the fine-tuned model (0 = free to drift)
    learning_rate: float = 5e-4  # AdamW's step
    samples_per_step: int = 16  # replies to one prompt per step: the group their advantages are relative to
    max_new_tokens: int = 48  # reply length at most (tokens)
    max_steps: int = 300  # optimizer steps at most (the time budget usually ends the run first)
    max_seconds: float = 60.0  # training time budget
    seed: int = 0  # prompt order and samples


LIMITS = {"beta": (0.0, 10.0), "learning_rate": (1e-6, 1e-2), "samples_per_step": (2, 64),
          "max_new_tokens": (4, 64), "max_steps": (1, 2000), "max_seconds": (5.0, 600.0), "seed": (0, 2**31 - 1)}
PRESETS = {  # the tab's presets: a rule held near the fine-tuned model, and the same with no KL penalty at all
    "kl": RLSettings(),
    "no_kl": RLSettings(beta=0.0),
}


def bernoulli_kl(rate: float, base: float) -> float:
    """KL(Bernoulli(rate) ‖ Bernoulli(base)) in nats: the least KL per reply that moves a yes/no success rate
    from `base` to `rate`."""
    base = min(max(base, 1e-6), 1 - 1e-6)
    total = 0.0
    for p, q in ((rate, base), (1 - rate, 1 - base)):
        if p > 0:
            total += p * math.log(p / q)
    return total


@dataclass(eq=False, kw_only=True)
class RLRun(Run):
    kind: str = "tinygpt-rl"
    settings: RLSettings
    reward: object  # rewards.Rule or rewards.LearnedReward: reward(prompt, reply) -> float
    reference: Stage  # the fine-tuned model, frozen
    stage: Stage  # the policy being trained (a copy of the reference)
    optimizer: torch.optim.Optimizer
    prompts: list[str]  # the questions replies are sampled for, in the order steps take them
    val_rows: list[dict] = field(default_factory=list)  # held-out dialogs: the Bot turns' loss before and after
    val_loss_before: float = math.nan
    val_loss_after: float = math.nan
    base_rate: float = math.nan  # the reference's mean reward, before training
    base_samples: int = 0  # replies that measured it
    history: list[dict] = field(default_factory=list)  # one per step: figures and samples
    questions: list[str] = field(default_factory=list)
    asks: list[dict] = field(default_factory=list)  # {"question", "before", "after"} once training ends
    started: float = 0.0

    @property
    def model(self):
        return self.stage.model

    @property
    def base_estimate(self) -> float:
        """The base rate as the floor uses it: (successes + 1/2) / (replies + 1), Jeffreys' estimate, which stays
        above 0 when no reply of the sample succeeded (the true rate is small, not zero)."""
        return (self.base_rate * self.base_samples + 0.5) / (self.base_samples + 1)

    def floor(self, rate: float) -> float | None:
        """The least KL per reply that reaches mean reward `rate` from the base rate (yes/no rewards only)."""
        if not getattr(self.reward, "binary", False) or not self.base_samples:
            return None
        return bernoulli_kl(rate, self.base_estimate)


def training_prompts(lang: str = "english") -> list[str]:
    """The training dialogs' first questions, each once (the held-out dialogs are never prompts)."""
    return [q for q in dict.fromkeys(turns[0] for turns in load_corpus(lang).train) if len(q) <= MAX_PROMPT_CHARS]


def new_rl_run(fine_tuned: Stage, reward, settings: RLSettings | None = None, questions: list[str] = (),
               lang: str = "english") -> RLRun:
    """Validate, and prepare the policy (a copy of the fine-tuned model), its optimizer and the prompts."""
    settings = settings if settings is not None else RLSettings()
    check_settings(settings, LIMITS)
    if len(questions) > MAX_ASKS:
        raise TrainingError("too_many_asks", f"at most {MAX_ASKS} questions", limit=MAX_ASKS)
    questions = [check_question(q) for q in questions]
    stage = fine_tuned.next_copy("rl")
    stage.model.eval()  # no dropout: sampling and the update see the same policy
    reference = Stage(fine_tuned.name, fine_tuned.model.eval(), fine_tuned.tokenizer, fine_tuned.meta)  # read only
    # questions that leave the reply at least half the context
    prompts = [q for q in training_prompts(lang) if len(prompt_ids(stage.tokenizer, q)) <= stage.block_size // 2]
    random.Random(settings.seed).shuffle(prompts)
    corpus = load_corpus(lang)
    optimizer = torch.optim.AdamW(stage.model.parameters(), lr=settings.learning_rate, betas=(0.9, 0.99),
                                  weight_decay=0.0)  # no decay: it would pull the policy away from the reference
    return RLRun(max_steps=int(settings.max_steps), max_seconds=float(settings.max_seconds), settings=settings,
                 reward=reward, reference=reference, stage=stage, optimizer=optimizer, prompts=prompts,
                 val_rows=dialog_examples(stage.tokenizer, corpus.val, stage.block_size), questions=questions)


def _generators(seed: int, step: int, rows: range) -> list[torch.Generator]:
    """One generator per reply, seeded by (seed, step, reply): the same replies whatever process draws them."""
    return [torch.Generator().manual_seed(hash((seed, step, row)) & 0x7FFF_FFFF_FFFF) for row in rows]


def _sample(run: RLRun, model, prompt: list[int], rows: range, step: int) -> list[list[int]]:
    room = min(run.settings.max_new_tokens, run.stage.block_size - len(prompt))
    return sample_batch(model, prompt, len(rows), room, POLICY, _generators(run.settings.seed, step, rows),
                        run.stage.tokenizer)


def _token_logprobs(model, prompt: list[int], replies: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor,
                                                                                     torch.Tensor]:
    """(log π of each reply token (B, L), log π over the vocabulary at those positions (B, L, V), mask (B, L))."""
    width = max(len(r) for r in replies)
    pad = int(model.config.eos_token_id)
    ids = torch.full((len(replies), len(prompt) + width), pad)
    mask = torch.zeros((len(replies), width), dtype=torch.bool)
    for i, reply in enumerate(replies):  # right padding: the real tokens never attend to it
        ids[i, :len(prompt)] = torch.tensor(prompt)
        ids[i, len(prompt):len(prompt) + len(reply)] = torch.tensor(reply)
        mask[i, :len(reply)] = True
    logits = model(input_ids=ids).logits[:, len(prompt) - 1:-1].float()  # (B, L, V): predictions of the reply
    logp = F.log_softmax(logits, dim=-1)
    chosen = logp.gather(2, ids[:, len(prompt):, None]).squeeze(2)
    return chosen, logp, mask


def base_rate(run: RLRun, samples: int = BASE_RATE_SAMPLES, per_prompt: int = 2) -> float:
    """The reference's mean reward over `samples` replies, `per_prompt` to each of many training prompts (before
    any update): the rate over the prompts RL will see, not over a few of them."""
    scores = []
    for index in range(samples // per_prompt):
        question = run.prompts[index % len(run.prompts)]
        prompt = prompt_ids(run.stage.tokenizer, question)
        for reply in _sample(run, run.reference.model, prompt, range(per_prompt), -1 - index):
            scores.append(run.reward(question, reply_text(run.stage.tokenizer, reply)))
    return sum(scores) / len(scores)


def rl_step(run: RLRun, model, accelerator=None) -> dict:
    """One step: sample, score, and update. Returns the step's record (figures and samples)."""
    settings, tokenizer = run.settings, run.stage.tokenizer
    question = run.prompts[run.step % len(run.prompts)]
    prompt = prompt_ids(tokenizer, question)
    world, rank = (accelerator.num_processes, accelerator.process_index) if accelerator else (1, 0)
    n = settings.samples_per_step
    mine = range(rank * n // world, (rank + 1) * n // world)
    policy = accelerator.unwrap_model(model) if accelerator else model
    replies = _sample(run, policy, prompt, mine, run.step)
    texts = [reply_text(tokenizer, r) for r in replies]
    rewards = torch.tensor([run.reward(question, t) for t in texts], dtype=torch.float32)
    chosen, logp, mask = _token_logprobs(model, prompt, replies)
    with torch.no_grad():
        ref_chosen, ref_logp, _ = _token_logprobs(run.reference.model, prompt, replies)
        log_ratio = ((chosen - ref_chosen) * mask).sum(1)  # (B,) log π/π_ref of each reply: KL's sample
        exact_kl = ((logp.exp() * (logp - ref_logp)).sum(-1) * mask).sum(1)  # (B,) exact per-token KL, summed
        shaped = rewards - settings.beta * log_ratio
        lengths = mask.sum(1).float()
        everything = torch.stack([rewards, shaped, exact_kl, lengths])
        if accelerator:
            everything = accelerator.gather(everything.T.contiguous()).T  # every process sees all n replies
        all_rewards, all_shaped, all_kl, all_lengths = everything
        others = (all_shaped.sum() - all_shaped) / (n - 1)  # leave-one-out baseline
        advantage = (all_shaped - others)[mine.start:mine.stop]
    # REINFORCE: -A · log π(reply), over the step's n replies; each process's share, scaled so that DDP's average of
    # the processes' gradients is the gradient of the whole step
    loss = -(advantage * (chosen * mask).sum(1)).sum() / n * world
    for group in run.optimizer.param_groups:
        group["lr"] = learning_rate(settings, run.progress)
    run.optimizer.zero_grad(set_to_none=True)
    (accelerator.backward(loss) if accelerator else loss.backward())
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    run.optimizer.step()
    all_advantage = all_shaped - (all_shaped.sum() - all_shaped) / (n - 1)
    return {"step": run.step + 1, "prompt": question, "reward_mean": float(all_rewards.mean()),
            "reward_std": float(all_rewards.std()) if n > 1 else 0.0, "kl": float(all_kl.mean()),
            "length": float(all_lengths.mean()),
            "samples": [{"reply": t, "reward": round(float(r), 3), "advantage": round(float(a), 3)}
                        for t, r, a in zip(texts, rewards, all_advantage[mine.start:mine.stop])]}


def learning_rate(settings: RLSettings, progress: float) -> float:
    """A cosine from the set rate down to 0 as the run's budget (steps or seconds) is used: the last steps, small,
    let the KL penalty pull back the drift the noisy early steps caused."""
    return settings.learning_rate * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def _finite(model) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


def _snapshot(run: RLRun) -> dict:
    return {"model": {k: v.detach().clone() for k, v in run.model.state_dict().items()},
            "optimizer": copy.deepcopy(run.optimizer.state_dict()), "history": len(run.history)}


@exclusive
def train(run: RLRun, update_every_s: float = 0.5, accelerator=None) -> Iterator[RLRun]:
    """The live loop: yields `run` at most every `update_every_s` seconds; ends on its steps, its time budget, a
    stop (within one step) or a non-finite weight (back to the last good step). Resumes where it stopped."""
    model = run.model
    if accelerator is not None:
        model, run.optimizer = accelerator.prepare(model, run.optimizer)
    run.status, run.message = "running", ""
    run.stop.clear()
    start, last_update = time.perf_counter(), 0.0
    seconds_before = run.seconds
    try:
        if not run.history:
            run.val_loss_before = bot_loss(run.reference.model, run.val_rows, run.stage.tokenizer.newline_id)
            run.base_rate, run.base_samples = base_rate(run), BASE_RATE_SAMPLES
            run.keep(_snapshot(run))
            yield run
        while True:
            run.seconds = seconds_before + time.perf_counter() - start
            reason = run.why_stop()
            if reason is not None:
                run.status, run.message = reason, f"{reason} at step {run.step}"
                break
            record = rl_step(run, model, accelerator)
            if not _finite(run.model):
                good = run.diverge(f"a weight became NaN/inf at step {run.step + 1}; back to step {run.good_step}")
                run.model.load_state_dict(good["model"])
                run.optimizer.load_state_dict(good["optimizer"])
                del run.history[good["history"]:]
                run.step = run.good_step
                break
            run.step += 1
            run.history.append(record)
            if run.step % 10 == 0:
                run.keep(_snapshot(run))
            now = time.perf_counter()
            if now - last_update >= update_every_s:
                last_update = now
                run.seconds = seconds_before + now - start
                yield run
        run.seconds = seconds_before + time.perf_counter() - start
        run.val_loss_after = bot_loss(run.model, run.val_rows, run.stage.tokenizer.newline_id)
        if run.questions:
            final, run.status = run.status, "evaluating"
            yield run
            old, new = answers(run.reference, run.questions), answers(run.stage, run.questions)
            run.asks = [{"question": q, "before": b, "after": a} for q, b, a in zip(run.questions, old, new)]
            run.status = final
        run.stage.meta = summary(run)
    finally:
        run.model.eval()
        if run.status in ("running", "evaluating"):  # closed mid-run (the browser went away)
            run.status, run.message = "stopped", f"stopped at step {run.step}"
            run.stop.set()
    yield run


def summary(run: RLRun) -> dict:
    history = run.history
    first, last = history[:FIRST_LAST], history[-FIRST_LAST:]
    mean = lambda rows, key: sum(r[key] for r in rows) / len(rows) if rows else math.nan
    reward_last, kl_last = mean(last, "reward_mean"), mean(last, "kl")
    floor = run.floor(reward_last) if history else None
    return {
        "stage": "rl", "status": run.status, "message": run.message, "reward": getattr(run.reward, "spec", "?"),
        "beta": run.settings.beta, "steps": run.step, "samples_per_step": run.settings.samples_per_step,
        "max_new_tokens": run.settings.max_new_tokens, "seconds": round(run.seconds, 2),
        "steps_per_second": round(run.steps_per_second, 3), "base_rate": round(run.base_rate, 4),
        "reward_first": round(mean(first, "reward_mean"), 4), "reward_last": round(reward_last, 4),
        "kl_last": round(kl_last, 4), "kl_floor": round(floor, 4) if floor is not None else None,
        "kl_over_floor": round(kl_last / floor, 3) if floor else None,
        "length_last": round(mean(last, "length"), 2),
        "val_loss_before": round(run.val_loss_before, 4), "val_loss_after": round(run.val_loss_after, 4),
        "asks": run.asks, "settings": asdict(run.settings), "diverged_at": run.diverged_at or None,
        "curve": [{"step": r["step"], "reward": round(r["reward_mean"], 4), "kl": round(r["kl"], 4),
                   "length": round(r["length"], 2)} for r in history],
    }
