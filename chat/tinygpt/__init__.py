"""Tiny GPT: a small GPT-2 trained from scratch on a CPU, live, then chatted with.

Split like nanoGPT: data.py (the corpora, as training text), tokenizer.py (characters or a byte-level BPE learned
on the corpus), model.py (transformers' GPT2LMHeadModel at a CPU's size, its loss, save and load), train.py (the
live pretraining loop), sample.py (continuations and chat replies), __main__.py (`python -m chat.tinygpt`).
Nothing here imports gradio.
"""
