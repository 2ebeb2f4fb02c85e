"""Tiny GPT: how ChatGPT is made, end to end on one small GPT-2 trained from scratch on a CPU, live.

Pretraining (split like nanoGPT): corpora.py (Shakespeare's plays, Tiny Shakespeare, chatterbot's dialogs as
training text), data.py (the dialogs), tokenizer.py (characters or a byte-level BPE learned on the corpus), model.py
(transformers' GPT2LMHeadModel at a CPU's size, its loss, save and load), train.py (the live pretraining loop),
yardsticks.py (uniform, bigram and SmolLM2 lines; the memorisation meter), sample.py (continuations, replies).
Then: stages.py (the stages' models, saved and answering), sft.py (fine-tuning on dialogs with TRL's SFTTrainer),
rewards.py (rules and a reward model from the user's choices), rl.py (REINFORCE with a KL penalty, live),
recipe.py (one session's stages in the app), __main__.py (`python -m chat.tinygpt pretrain|sft|rl|compare`).
Nothing here imports gradio.
"""
