"""Seed 000's CNN, layer for layer, and its predictions."""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F



class Dropout(nn.Dropout):
    """nn.Dropout drawing its masks from `generator` (the run's own random stream) instead of torch's global one."""

    generator: torch.Generator | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0 or self.generator is None:
            return super().forward(x)
        keep = torch.empty_like(x).bernoulli_(1 - self.p, generator=self.generator)
        return x * keep / (1 - self.p)


class Net(nn.Module):
    """Seed 000's CNN, layer for layer."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, kernel_size=5)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=5)
        self.fc1 = nn.Linear(1024, 512)
        self.dropout = Dropout(0.5)
        self.fc2 = nn.Linear(512, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x (B, 1, 28, 28) -> logits (B, 10)
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)  # (B, 32, 12, 12)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)  # (B, 64, 4, 4)
        x = self.dropout(F.relu(self.fc1(x.flatten(1))))  # (B, 512)
        return self.fc2(x)


def seeded_net(generator: torch.Generator) -> Net:
    """A fresh Net initialised from `generator` exactly as torch.manual_seed(seed); Net() would (PyTorch's default
    init of each layer in order), without touching torch's global generator, which other threads share."""
    with torch.device("meta"):
        model = Net()
    model = model.to_empty(device="cpu")
    for layer in (model.conv1, model.conv2, model.fc1, model.fc2):  # nn.Conv2d / nn.Linear.reset_parameters
        nn.init.kaiming_uniform_(layer.weight, a=math.sqrt(5), generator=generator)
        fan_in, _ = nn.init._calculate_fan_in_and_fan_out(layer.weight)
        bound = 1 / math.sqrt(fan_in)
        nn.init.uniform_(layer.bias, -bound, bound, generator=generator)
    model.dropout.generator = generator
    return model



@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Class probabilities (N, 10) for normalised images (N, 1, 28, 28); leaves the model in eval mode."""
    model.eval()
    return torch.cat([F.softmax(model(images[i:i + batch_size]), dim=1) for i in range(0, len(images), batch_size)])


