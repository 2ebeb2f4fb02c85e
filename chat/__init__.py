"""ChatLab services: plain Python (no Gradio) behind each tab of the app.

tokens      -- ChatGPT's BPE encodings (tiktoken), counting and token segments
models      -- the chat model registry, loading and on-disk cache
generation  -- streaming chat generation, stop, and next-token candidates
mnist       -- the classic MNIST CNN, trained live
tinygpt     -- a tiny GPT trained from scratch on dialogs
tuning      -- LoRA training of the chat model, live (shared by finetune and feedback)
finetune    -- supervised fine-tuning (SFT) on demonstrations
reward      -- the reward model: Bradley–Terry on the chat model's features
feedback    -- human feedback: preferences, reward model, DPO
remote      -- any OpenAI-compatible server as the chat backend (the openai client)
bench       -- the one benchmark entry point: python -m chat.bench <what>
"""
