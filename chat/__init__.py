"""ChatLab's services: plain Python behind each tab of the app (only chat/ui/ imports gradio).

llm/        the chat model at run time: settings and the one sampler, loading, prompts, streamed replies, the
            next-token view, the fast CPU decoder, continuous batching, remote servers, the inside view
training/   what every live training run shares (one run base, one run at a time) and LoRA with TRL
finetune/   supervised fine-tuning of the chat model (SFT)
feedback/   human feedback: preferences, the reward model, DPO
tinygpt/    the whole recipe on one tiny GPT trained from scratch
mnist/      seed 000's CNN, trained live
ui/         one module per tab, and the UI strings (locales/)
bench/      python -m chat.bench <what>: each benchmark against its anchor
tokens.py   ChatGPT's tokenizers (tiktoken): exact counts and token boundaries
settings.py every flag and environment variable, read once into the object app.py passes down
budget.py   the server-wide limits on heavy work; checks.py: range checks; paths.py: packaged files, the cache;
            downloads.py: download folders; local_server.py: start a local server and wait until it answers
"""
