"""The model: transformers' GPT2LMHeadModel at a CPU's size (seeds 001/002), nanoGPT's AdamW, the loss, and the
saved folder (save_pretrained + the tokenizer's files + tinygpt.json)."""
from __future__ import annotations

import json
import tempfile
import zipfile
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from transformers import GPT2Config, GPT2LMHeadModel

from chat.tinygpt.tokenizer import TOKENIZERS, BPETokenizer, CharTokenizer

if TYPE_CHECKING:
    from chat.tinygpt.train import TinyGPTConfig, TrainingRun

TOKENIZER_META = "tinygpt.json"  # what save_model writes next to the transformers files
# GPT-2's tanh-approximated GELU as PyTorch's fused kernel: the same function as GPT-2's default "gelu_new",
# which is written out in Python ops and took a third of the forward pass at this size
ACTIVATION = "gelu_pytorch_tanh"


def build_model(config: TinyGPTConfig, vocab_size: int, newline_id: int) -> GPT2LMHeadModel:
    """A fresh GPT-2 of the configured size. The newline ends a turn, so it is also the end-of-text token."""
    gpt2 = GPT2Config(vocab_size=vocab_size, n_positions=config.block_size, n_embd=config.n_embd,
                      n_layer=config.n_layer, n_head=config.n_head, resid_pdrop=config.dropout,
                      embd_pdrop=config.dropout, attn_pdrop=config.dropout, bos_token_id=newline_id,
                      eos_token_id=newline_id, pad_token_id=newline_id, use_cache=False,
                      activation_function=ACTIVATION)
    gpt2._attn_implementation = config.attn_implementation
    model = GPT2LMHeadModel(gpt2)
    model.config.use_cache = False  # training: no key/value cache to build and throw away
    return model


def make_optimizer(model: torch.nn.Module, config: TinyGPTConfig) -> torch.optim.AdamW:
    """nanoGPT's AdamW: weight decay on 2-D tensors (matrices, embeddings), none on biases and layer norms."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": config.weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    try:
        return torch.optim.AdamW(groups, lr=config.learning_rate, betas=(0.9, 0.99), fused=True)
    except RuntimeError:  # no fused kernel for this device / build
        return torch.optim.AdamW(groups, lr=config.learning_rate, betas=(0.9, 0.99))


def loss_of(model: GPT2LMHeadModel, x: torch.Tensor, y: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy (nats) of next-token predictions; positions with target -100 don't count. Computed here
    rather than by passing labels, which would shift them again and predict one position less."""
    logits = model(input_ids=x).logits  # (B, T, vocab)
    loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1), ignore_index=-100, reduction="sum")
    return loss if reduction == "sum" else loss / (y != -100).sum().clamp_min(1)



def save_folder(model: GPT2LMHeadModel, tokenizer, folder: str | Path, meta: dict) -> Path:
    """transformers' save_pretrained folder + the tokenizer's files + tinygpt.json (the tokenizer's kind, the
    format, and `meta`: what made the model)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save(folder)
    meta = {"tokenizer": tokenizer.kind, "format": "User: <message>\\nBot: <reply>\\n", **meta}
    (folder / TOKENIZER_META).write_text(json.dumps(meta, ensure_ascii=False, indent=1), encoding="utf-8")
    return folder


def save_model(run: TrainingRun, folder: str | Path) -> Path:
    """A pretraining run's model, with its corpus and settings."""
    dialogs = run.text.dialogs
    return save_folder(run.model, run.tokenizer, folder, {
        "stage": "pretrain", "corpus": run.config.corpus, "lang": run.config.lang,
        "topics": dialogs.topics if dialogs else [], "steps": run.step, "config": dict(asdict(run.config))})


def read_meta(folder: str | Path) -> dict:
    return json.loads((Path(folder) / TOKENIZER_META).read_text(encoding="utf-8"))


def load_model(folder: str | Path) -> tuple[GPT2LMHeadModel, CharTokenizer | BPETokenizer]:
    folder = Path(folder)
    tokenizer = TOKENIZERS[read_meta(folder)["tokenizer"]].load(folder)
    model = GPT2LMHeadModel.from_pretrained(folder).eval()
    return model, tokenizer


def export_zip(run: TrainingRun, path: str | Path, save=None) -> Path:
    """The saved model folder as one zip file (what the Download button serves); `save(folder)` writes it
    (a pretraining run's by default)."""
    path = Path(path)
    with tempfile.TemporaryDirectory() as tmp:
        folder = (save or (lambda f: save_model(run, f)))(Path(tmp) / "tinygpt")
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
            for file in sorted(folder.iterdir()):
                archive.write(file, f"tinygpt/{file.name}")
    return path


