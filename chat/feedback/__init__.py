"""Human feedback (RLHF), live: people pick the better of two answers, a reward model learns their preference, and
the chat model is moved toward it.

The last stage of how ChatGPT is made, in three visible steps:
1. Collect (preferences.py): the model answers a prompt twice (sampled); the user picks the better one. Pairs are
   TRL's prompt/chosen/rejected rows, in and out as JSONL; presets give tested sets (concise, friendly, Chinese,
   refuse, over-optimise).
2. Reward model (reward.py): Bradley–Terry on the pairs; it scores any answer, and best-of-n sampling with it is
   "alignment without training".
3. Policy update (dpo.py): DPO (TRL's `DPOTrainer`) on LoRA over the chat model's shared weights, the original
   model as the reference (the adapter switched off), with live curves and the KL divergence from the reference.

`python -m chat.feedback` (__main__.py) runs the three steps on a preset.
"""
