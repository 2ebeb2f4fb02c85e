"""One person's recipe in the app: the three stages' runs, the choices that teach a reward model, and a blind
comparison. What the Tiny GPT tab keeps per browser session; nothing here imports gradio."""
from __future__ import annotations

import random
from dataclasses import dataclass, field

from chat.llm.params import GenerationParams
from chat.llm.sampling import sampling_generator
from chat.tinygpt.rewards import LearnedReward, fit_reward
from chat.tinygpt.sample import reply_text, sample_batch
from chat.tinygpt.stages import STAGES, Stage, answers, prompt_ids
from chat.training.compare import BlindTest
from chat.training.run import TrainingError

OFFER = GenerationParams(temperature=1.0, top_k=0, top_p=1.0, repetition_penalty=1.0)  # answers to choose from
BLIND_QUESTIONS = 12  # pairs in a blind comparison
NAMES = {"pretrain": "pretrained", "sft": "fine-tuned", "rl": "reinforced"}


@dataclass(eq=False)
class Recipe:
    pretraining: object = None  # train.TrainingRun
    tuning: object = None  # sft.TinySFTRun
    reinforcing: object = None  # rl.RLRun
    choices: list[tuple[str, str, str]] = field(default_factory=list)  # (question, chosen, rejected)
    offered: tuple[str, str, str] | None = None  # the pair on screen: (question, answer A, answer B)
    blind: BlindTest | None = None

    def runs(self) -> list:
        return [r for r in (self.pretraining, self.tuning, self.reinforcing) if r is not None]

    def training(self) -> bool:
        return any(r.running for r in self.runs())

    def stop(self) -> None:
        for run in self.runs():
            run.stop.set()

    def stage(self, name: str) -> Stage | None:
        """A stage's model, once its run has trained at least one step and is not training."""
        if name == "pretrain":
            run = self.pretraining
            return Stage("pretrain", run.model, run.tokenizer) if run is not None and run.trained else None
        run = self.tuning if name == "sft" else self.reinforcing
        if run is None or run.running or run.status == "error" or not run.step:
            return None
        return run.stage

    def require(self, name: str) -> Stage:
        found = self.stage(name)
        if found is None:
            raise TrainingError("missing_stage", f"train the {NAMES[name]} model first", stage=name)
        return found

    def stages(self) -> list[Stage]:
        return [s for s in (self.stage(name) for name in STAGES) if s is not None]

    # --- a reward model from the user's choices

    def offer_pair(self, prompts: list[str], seed: int | None = None) -> tuple[str, str, str]:
        """Two different sampled answers of the fine-tuned model to a random training question."""
        stage = self.require("sft")
        pick = random.Random(seed)
        for _ in range(6):
            question = pick.choice(prompts)
            ids = prompt_ids(stage.tokenizer, question)
            room = min(48, stage.block_size - len(ids))
            rows = sample_batch(stage.model, ids, 2, room, OFFER, sampling_generator(pick.randrange(2**31)),
                                stage.tokenizer)
            first, second = (reply_text(stage.tokenizer, row) for row in rows)
            if first and second and first != second:
                self.offered = (question, first, second)
                return self.offered
        raise TrainingError("no_pair", "the model gave the same answer twice: ask again")

    def choose(self, first: bool) -> int:
        """The user preferred the offered pair's first (or second) answer; returns the choices made so far."""
        if self.offered is None:
            raise TrainingError("no_pair", "ask for two answers first")
        question, a, b = self.offered
        self.choices.append((question, a, b) if first else (question, b, a))
        self.offered = None
        return len(self.choices)

    def learned_reward(self) -> LearnedReward:
        return fit_reward(self.require("sft"), self.choices)

    # --- the blind comparison

    def judge(self):
        """The reward the RL stage was trained on (a rule or the learned model), to judge the blind pairs too."""
        return self.reinforcing.reward if self.reinforcing is not None else None

    def start_blind(self, earlier: str, later: str, questions: list[str], seed: int = 0) -> BlindTest:
        old, new = self.require(earlier), self.require(later)
        questions = questions[:BLIND_QUESTIONS]
        rows = list(zip(questions, answers(old, questions), answers(new, questions)))
        self.blind = BlindTest.of(earlier, later, rows, seed=seed, judge=self.judge())
        return self.blind
