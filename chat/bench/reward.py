"""Which reward model: chat.feedback.reward's linear Bradley–Terry head on frozen layer-9 features against TRL's
RewardTrainer (the anchor: a LoRA sequence-classification copy of the chat model, 3 epochs), trained on each
preset's pairs; accuracy on its held-out pairs, and seconds."""
from __future__ import annotations

import argparse

from chat.bench.common import chat_model


def reward_trainer_accuracy(base, train, held_out) -> tuple[float, float]:
    """TRL's RewardTrainer on `train`: (seconds, held-out accuracy). Measured, not shipped."""
    import copy
    import time

    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForSequenceClassification
    from trl import RewardConfig, RewardTrainer

    from chat.feedback.preferences import dpo_rows
    from chat.llm.prompt import conversation
    from chat.training.lora import cpu_training_args

    start = time.perf_counter()
    model = AutoModelForSequenceClassification.from_pretrained(base.model.config._name_or_path, num_labels=1,
                                                               dtype=torch.float32)
    tokenizer = copy.deepcopy(base.tokenizer)
    model.config.pad_token_id = tokenizer.pad_token_id
    steps = 3 * len(train) // 4
    trainer = RewardTrainer(model=model, args=RewardConfig(**cpu_training_args(
        learning_rate=1e-4, max_steps=steps, per_device_train_batch_size=4, max_length=512)),
        train_dataset=Dataset.from_list(dpo_rows(train)), processing_class=tokenizer,
        peft_config=LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="SEQ_CLS"))
    trainer.train()
    seconds = time.perf_counter() - start
    scorer = trainer.model.eval()

    def score(prompt: str, answer: str) -> float:
        text = tokenizer.apply_chat_template(conversation(prompt) + [{"role": "assistant", "content": answer}],
                                             tokenize=False)
        with torch.inference_mode():
            return float(scorer(**tokenizer(text, return_tensors="pt", add_special_tokens=False)).logits[0, 0])

    right = sum(score(p.prompt, p.chosen) > score(p.prompt, p.rejected) for p in held_out)
    return seconds, right / len(held_out)


def run(args: argparse.Namespace) -> dict:
    import time

    from chat.feedback import reward
    from chat.feedback.preferences import preset, triples

    base = chat_model()
    figures = {}
    for key in ("concise", "friendly", "chinese", "refuse"):
        chosen = preset(key)
        held = triples(chosen.held_out_pairs)
        start = time.perf_counter()
        head = reward.fit(base.model, base.tokenizer, triples(chosen.pairs))
        head_seconds = time.perf_counter() - start
        trl_seconds, trl_accuracy = reward_trainer_accuracy(base, chosen.pairs, chosen.held_out_pairs)
        figures[key] = {"head_accuracy": round(reward.accuracy(head, base.model, base.tokenizer, held), 3),
                        "head_seconds": round(head_seconds, 2), "reward_trainer_accuracy": round(trl_accuracy, 3),
                        "reward_trainer_seconds": round(trl_seconds, 1), "held_out_pairs": len(held)}
    return figures
