"""A tiny model, data set and loss for the training loop's tests (``epipose.train.fit``), importable by the
scripts those tests run in other processes (torchrun)."""

from __future__ import annotations

import torch
from torch import nn

from epipose.train import TensorSet, TrainParams


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                                 nn.Flatten(), nn.Linear(8, 2))

    def forward(self, x):
        return self.net(x)


def tiny_data(n=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 12, 12, generator=g)
    y = torch.stack([x[:, 0].mean((1, 2)), x[:, 1].std((1, 2))], 1)
    return TensorSet(x=x, y=y)


class TinyLoss:
    """MSE with a dash of per-step randomness (noise from the step generator), counting calls."""

    def __init__(self, fail_at_call=None):
        self.calls, self.fail_at_call = 0, fail_at_call

    def __call__(self, model, batch, gen):
        self.calls += 1
        if self.fail_at_call is not None and self.calls == self.fail_at_call:
            raise KeyboardInterrupt("simulated kill")
        noise = torch.randn(batch["x"].shape, generator=gen) * 0.01
        pred = model(batch["x"] + noise)
        return ((pred - batch["y"]) ** 2).mean(), {"abs": (pred - batch["y"]).abs().mean()}


# threads fixed: floating-point sums depend on the thread count, which ``threads: 0`` chooses from the
# machine's load when a training starts (two runs compared bit for bit could get different counts)
TINY = TrainParams(epochs=3, batch_size=8, lr=1e-2, amp="none", channels_last=False, log_every=2, seed=3, threads=1)
