"""ChatLab services: plain Python (no Gradio) behind each tab of the app.

tokens      -- ChatGPT's BPE encodings (tiktoken), counting and token segments
models      -- the chat model registry, loading and on-disk cache
generation  -- streaming chat generation, stop, and next-token candidates
mnist       -- the classic MNIST CNN, trained live
tinygpt     -- a tiny GPT trained from scratch on dialogs
bench       -- the one benchmark entry point: python -m chat.bench <what>
"""
