"""The recipe's stages, one model each: pretrained → fine-tuned (SFT) → reinforced (RL). Each stage starts from a
copy of the one before; the CLI saves each in its own folder of the recipe folder (`<recipe>/pretrain`, `/sft`,
`/rl`), the tab keeps them in the session. And how a stage answers a question: the chat format's prompt, `User: …`
then `Bot:`, and the reply up to its newline.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path

from transformers import GPT2LMHeadModel

from chat.llm.params import GenerationParams
from chat.llm.sampling import sampling_generator
from chat.tinygpt.data import clean_turn, prompt_segments
from chat.tinygpt.model import load_model, read_meta, save_folder
from chat.tinygpt.sample import reply_text, sample_batch
from chat.tinygpt.tokenizer import encode_segments
from chat.training.run import TrainingError

STAGES = ("pretrain", "sft", "rl")
PREVIOUS = {"sft": "pretrain", "rl": "sft"}
COMMANDS = {"pretrain": "pretrain", "sft": "sft", "rl": "rl"}  # the CLI command that makes each stage
ANSWER_TOKENS = 48  # new tokens per answer, at most
MAX_PROMPT_CHARS = 200  # a question longer than this is refused, never silently cut
GREEDY = GenerationParams(temperature=0.0, top_k=0, top_p=1.0, repetition_penalty=1.0)


@dataclass(eq=False)
class Stage:
    """One stage's model, its tokenizer, and what made it (its run's summary)."""

    name: str  # one of STAGES
    model: GPT2LMHeadModel
    tokenizer: object
    meta: dict = field(default_factory=dict)

    @property
    def block_size(self) -> int:
        return int(self.model.config.n_positions)

    def next_copy(self, name: str) -> Stage:
        """A trainable copy for the next stage (this stage stays as it is, for comparisons)."""
        model = copy.deepcopy(self.model)
        # a trainer (accelerate) may leave its own `forward` wrapper on the instance; copied, it would still run the
        # original model's weights, and the copy would never learn
        model.__dict__.pop("forward", None)
        model.train()
        model.requires_grad_(True)
        return Stage(name, model, self.tokenizer, {"from": self.name})


def recipe_dir(folder: str | Path | None = None) -> Path:
    """The recipe's folder: `folder`, or ChatLab's cache (tinygpt/recipe)."""
    if folder:
        return Path(folder)
    from chat.paths import cache_dir

    return cache_dir("tinygpt", "recipe")


def save_stage(stage: Stage, root: str | Path) -> Path:
    return save_folder(stage.model, stage.tokenizer, Path(root) / stage.name, {**stage.meta, "stage": stage.name})


def load_stage(root: str | Path, name: str) -> Stage:
    """A saved stage, or TrainingError("missing_stage") naming the command that makes it."""
    folder = Path(root) / name
    if not (folder / "config.json").exists():
        raise TrainingError("missing_stage", f"no {name} model in {Path(root)}: run `python -m chat.tinygpt "
                            f"{COMMANDS[name]}` first (with the same --dir)", stage=name, folder=str(root))
    model, tokenizer = load_model(folder)
    return Stage(name, model, tokenizer, read_meta(folder))


def check_question(question: str) -> str:
    """The question on one line, or TrainingError for an empty or overlong one."""
    text = clean_turn(question) or ""
    if not text:
        raise TrainingError("empty_prompt", "the question is empty")
    if len(text) > MAX_PROMPT_CHARS:
        raise TrainingError("long_prompt", f"the question has {len(text)} characters; at most {MAX_PROMPT_CHARS}",
                            chars=len(text), limit=MAX_PROMPT_CHARS)
    return text


def prompt_ids(tokenizer, question: str) -> list[int]:
    """`User: <question>\\nBot:` as token ids, tokenized piece by piece as in training."""
    ids, _ = encode_segments(tokenizer, prompt_segments([], check_question(question)))
    return ids


def answer_room(stage: Stage, prompt: list[int], max_tokens: int = ANSWER_TOKENS) -> int:
    """Tokens an answer may take: what the context leaves after the prompt (a prompt over half the context is
    refused first)."""
    if len(prompt) > stage.block_size // 2:
        raise TrainingError("long_prompt", f"the question takes {len(prompt)} tokens; at most "
                            f"{stage.block_size // 2} fit this model's context", chars=len(prompt),
                            limit=stage.block_size // 2)
    return min(max_tokens, stage.block_size - len(prompt))


def answer_ids(stage: Stage, question: str, max_tokens: int = ANSWER_TOKENS,
               params: GenerationParams = GREEDY, seed: int = 0) -> tuple[list[int], list[int]]:
    """(prompt ids, answer ids) of the stage's reply to `question`: greedy unless `params` says otherwise."""
    prompt = prompt_ids(stage.tokenizer, question)
    room = answer_room(stage, prompt, max_tokens)
    row = sample_batch(stage.model, prompt, 1, room, params, sampling_generator(seed), stage.tokenizer)[0]
    return prompt, row


def answers(stage: Stage, questions: list[str], max_tokens: int = ANSWER_TOKENS) -> list[str]:
    """The stage's greedy reply to each question."""
    return [reply_text(stage.tokenizer, answer_ids(stage, q, max_tokens)[1]) for q in questions]


def held_out_questions(lang: str = "english", count: int = 8) -> list[str]:
    """The first questions of held-out dialogs (never trained on): the default questions of every comparison."""
    from chat.tinygpt.data import load_corpus

    found = list(dict.fromkeys(turns[0] for turns in load_corpus(lang).val))
    return [q for q in found if len(q) <= MAX_PROMPT_CHARS][:count]


def side_by_side(stages: list[Stage], questions: list[str], max_tokens: int = ANSWER_TOKENS) -> list[dict]:
    """Each stage's greedy answer to each question, and every later stage's answer token by token with its rank
    under the stage before (chat.training.compare): {"question", "answers": {stage: text},
    "tokens": {stage: [(text, rank)]}, "shares": {stage: {unshifted, marginal, shifted}}}."""
    from chat.training.compare import shift_shares, token_ranks

    rows = []
    for question in questions:
        row = {"question": check_question(question), "answers": {}, "tokens": {}, "shares": {}}
        previous = None
        for stage in stages:
            prompt, ids = answer_ids(stage, question, max_tokens)
            row["answers"][stage.name] = reply_text(stage.tokenizer, ids)
            if previous is not None:
                ranks = token_ranks(previous.model, prompt, ids)
                row["tokens"][stage.name] = [(stage.tokenizer.decode([t]), r) for t, r in zip(ids, ranks)]
                row["shares"][stage.name] = shift_shares(ranks)
            previous = stage
        rows.append(row)
    return rows


def overall_shares(rows: list[dict], stage: str) -> dict[str, float]:
    """The token classes' shares of a stage over all the rows' answers (every token counts once)."""
    from chat.training.compare import shift_shares

    return shift_shares([rank for row in rows for _, rank in row["tokens"].get(stage, [])])
