"""MNIST: seed 000's CNN, trained live on real digits, then shown a drawing.

Split like pytorch/examples' mnist and nanoGPT: data.py (the 5,000 packaged digits or full MNIST IDX files),
model.py (the network), train.py (the live training loop, checkpoints, what the tab plots), sketch.py (a drawing
-> an MNIST-like digit -> probabilities), __main__.py (`python -m chat.mnist`). Nothing here imports gradio.
"""
