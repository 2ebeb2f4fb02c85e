"""Supervised fine-tuning (SFT), live: teach the chat model a behaviour from a handful of demonstrations.

The middle stage of how ChatGPT is made (pretraining -> SFT -> RLHF): the model is shown prompt -> response pairs
and trained to write the responses. As TRL does it: `SFTTrainer` on prompt/completion conversations, so the loss
counts only the response tokens, on LoRA over the chat model's own, shared weights (chat.training.lora). The same
`SFTConfig` runs on GPUs and scales out with `accelerate`.

data.py (demonstrations, presets, TRL's JSONL), train.py (the run, answers before and after), __main__.py
(`python -m chat.finetune`).
"""
