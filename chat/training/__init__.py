"""What every live training run shares, and how the chat model is trained with LoRA.

run       the run base: stop, time budget, progress, NaN restore, one status vocabulary; one run at a time
lora      LoRA on the chat model's own weights, TRL on a CPU, a trainer watched live in a thread
answers   greedy answers before and after training, side by side
"""
