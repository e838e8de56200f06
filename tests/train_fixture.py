"""A tiny model, data set and loss for the training loop's tests (``epipose.train.fit``), importable by the
scripts those tests run in other processes (torchrun)."""

from __future__ import annotations

import torch
from torch import nn

from epipose.train import TensorSet, TrainParams, fit


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


def overfit_pose_net(tmp_path, lr: float, head: str = "integral", repeats: int = 40):
    """A tiny 2D network trained for ``repeats`` steps over the same 8 MPII-layout images with pretrain_2d's
    loss (``head``'s) → (evaluate_pckh's report before, after, the losses, the FitResult)."""
    from epipose.data.transforms import AugmentParams
    from epipose.models.pose_net import PoseNet, PoseNetConfig
    from epipose.pipeline.pretrain_2d import Loss2D, Pretrain2DParams, build_cache, evaluate_pckh
    from mpii_fixture import make_mpii

    no_aug = AugmentParams(scale=0, rotation=0, translate=0, flip=False, color=0, occlusion_prob=0)
    root = make_mpii(tmp_path / "mpii", n_train=8, n_valid=1, seed=2)
    p = Pretrain2DParams(epochs=1, batch_size=8, lr=lr, schedule="step", lr_steps=[], warmup_steps=0,
                         amp="auto" if head == "integral" else "none", bn_recalib_batches=2, flip_test=False, head=head,
                         swap_tolerance=0.0)
    cache = build_cache(root, "train", 64, p)
    torch.manual_seed(0)
    model = PoseNet(PoseNetConfig(backbone=18, deconv_channels=16, input_size=64, head=head))
    before = evaluate_pckh(model, cache, flip_test=False)
    data = TensorSet(images=cache.images.repeat(repeats, 1, 1, 1), joints=cache.joints.repeat(repeats, 1, 1),
                     visible=cache.visible.repeat(repeats, 1))
    losses = []

    def loss_fn(m, batch, gen):
        loss, logs = Loss2D(cache.src_box, 64, no_aug, p)(m, batch, gen)
        losses.append(loss.item())
        return loss, logs

    result = fit(model, data, loss_fn, p, tmp_path / "ck", progress=False)
    return before, evaluate_pckh(result.model, cache, flip_test=False), losses, result
