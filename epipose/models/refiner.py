"""The refiner: a Martinez-style residual MLP that cleans the 3D network's root-relative poses.

Input and output are (B, 16, 3) root-relative poses in mm; the model normalises them with
per-coordinate statistics of its training inputs/targets, stored as buffers so a checkpoint
carries them.
"""

from __future__ import annotations

import torch
from torch import nn

from epipose import skeleton


class ResidualBlock(nn.Module):
    def __init__(self, width: int, dropout: float):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(width, width), nn.BatchNorm1d(width), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(width, width), nn.BatchNorm1d(width), nn.ReLU(inplace=True), nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.net(x)


class Refiner(nn.Module):
    """Linear → (BN, ReLU, dropout) → ``blocks`` residual blocks → linear, on normalised poses."""

    def __init__(self, num_joints: int = skeleton.NUM_JOINTS, width: int = 1024, blocks: int = 2,
                 dropout: float = 0.5):
        super().__init__()
        dim = num_joints * 3
        self.num_joints = num_joints
        self.config = {"num_joints": num_joints, "width": width, "blocks": blocks, "dropout": dropout}
        self.inp = nn.Sequential(nn.Linear(dim, width), nn.BatchNorm1d(width), nn.ReLU(inplace=True), nn.Dropout(dropout))
        self.blocks = nn.Sequential(*[ResidualBlock(width, dropout) for _ in range(blocks)])
        self.out = nn.Linear(width, dim)
        for name in ("in_mean", "out_mean"):
            self.register_buffer(name, torch.zeros(dim))
        for name in ("in_std", "out_std"):
            self.register_buffer(name, torch.ones(dim))

    def set_stats(self, inputs: torch.Tensor, targets: torch.Tensor, eps: float = 1e-3) -> None:
        """Normalisation statistics from training inputs and targets, (N, J, 3) each."""
        x, y = inputs.reshape(len(inputs), -1).double(), targets.reshape(len(targets), -1).double()
        self.in_mean.copy_(x.mean(0)); self.in_std.copy_(x.std(0).clamp_min(eps))
        self.out_mean.copy_(y.mean(0)); self.out_std.copy_(y.std(0).clamp_min(eps))

    def normalise_input(self, poses: torch.Tensor) -> torch.Tensor:
        return (poses.reshape(len(poses), -1) - self.in_mean) / self.in_std

    def denormalise_output(self, z: torch.Tensor) -> torch.Tensor:
        return (z * self.out_std + self.out_mean).reshape(len(z), self.num_joints, 3)

    def normalise_target(self, poses: torch.Tensor) -> torch.Tensor:
        return (poses.reshape(len(poses), -1) - self.out_mean) / self.out_std

    def forward_normalised(self, z: torch.Tensor) -> torch.Tensor:
        return self.out(self.blocks(self.inp(z)))

    def forward(self, poses: torch.Tensor) -> torch.Tensor:
        """(B, J, 3) root-relative mm → refined (B, J, 3) mm."""
        return self.denormalise_output(self.forward_normalised(self.normalise_input(poses)))
