"""The refiner: a Martinez-style residual MLP that cleans the 3D network's root-relative poses.

Input and output are (B, J, 3) root-relative poses in mm (the root, the pelvis, stays at the
origin). The model works on normalised poses: inputs are standardised with per-coordinate
statistics of its training inputs, its output is de-standardised with those of its training
targets — or, with ``residual=True``, of the corrections ``target − input``, which are added to
the input (the MLP then only learns what to change). The statistics are buffers, so a
checkpoint (``save_refiner``) carries them. ``refine_poses`` is the one way to apply a refiner
(evaluate, ``epipose predict``); ``mirror`` and ``turn`` are its training augmentations.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from epipose import skeleton
from epipose.compute import amp_dtype, autocast
from epipose.io import read_model_file, write_torch
from epipose.metrics import root_relative

# Standard deviations below this (mm) are treated as this: the root's coordinates are always 0.
MIN_STD_MM = 1.0


class ResidualBlock(nn.Module):
    def __init__(self, width: int, dropout: float):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(width, width), nn.BatchNorm1d(width), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(width, width), nn.BatchNorm1d(width), nn.ReLU(inplace=True), nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.net(x)


def _masked_stats(values: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-coordinate mean and std of (N, J, 3) values over the entries where ``mask`` (N, J)."""
    w = mask.double()[..., None].expand_as(values)
    v = torch.where(w > 0, values.double(), torch.zeros((), dtype=torch.float64))
    n = w.sum(0).clamp_min(1.0)
    mean = v.sum(0) / n
    var = (((v - mean) * w) ** 2).sum(0) / (n - 1.0).clamp_min(1.0)
    return mean.reshape(-1), var.sqrt().clamp_min(MIN_STD_MM).reshape(-1)


class Refiner(nn.Module):
    """Linear → (BN, ReLU, dropout) → ``blocks`` residual blocks → linear, on normalised poses."""

    def __init__(self, num_joints: int = skeleton.NUM_JOINTS, width: int = 1024, blocks: int = 2,
                 dropout: float = 0.5, residual: bool = False, root: int = skeleton.PELVIS):
        super().__init__()
        dim = num_joints * 3
        self.num_joints, self.residual, self.root = num_joints, residual, root
        self.config = {"num_joints": num_joints, "width": width, "blocks": blocks, "dropout": dropout,
                       "residual": residual, "root": root}
        self.inp = nn.Sequential(nn.Linear(dim, width), nn.BatchNorm1d(width), nn.ReLU(inplace=True), nn.Dropout(dropout))
        self.blocks = nn.Sequential(*[ResidualBlock(width, dropout) for _ in range(blocks)])
        self.out = nn.Linear(width, dim)
        for name in ("in_mean", "out_mean"):
            self.register_buffer(name, torch.zeros(dim))
        for name in ("in_std", "out_std"):
            self.register_buffer(name, torch.ones(dim))

    def set_stats(self, inputs: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        """Normalisation statistics from training inputs and targets, (N, J, 3) mm each.

        ``mask`` (N, J) bool: the target joints to use (all if None). Inputs use every frame
        with any valid joint; standard deviations are at least ``MIN_STD_MM``.
        """
        if inputs.shape != targets.shape or inputs.shape[1:] != (self.num_joints, 3):
            raise ValueError(f"inputs {tuple(inputs.shape)} and targets {tuple(targets.shape)} must both be "
                             f"(N, {self.num_joints}, 3)")
        mask = torch.ones(inputs.shape[:2], dtype=torch.bool) if mask is None else mask.bool()
        frames = mask.any(1, keepdim=True).expand_as(mask)
        in_mean, in_std = _masked_stats(inputs, frames)
        out_mean, out_std = _masked_stats(targets - inputs if self.residual else targets, mask)
        for name, value in (("in_mean", in_mean), ("in_std", in_std), ("out_mean", out_mean), ("out_std", out_std)):
            getattr(self, name).copy_(value.to(getattr(self, name)))

    def normalise_input(self, poses: torch.Tensor) -> torch.Tensor:
        return (poses.reshape(len(poses), -1) - self.in_mean) / self.in_std

    def denormalise_output(self, z: torch.Tensor) -> torch.Tensor:
        return (z * self.out_std + self.out_mean).reshape(len(z), self.num_joints, 3)

    def forward_normalised(self, z: torch.Tensor) -> torch.Tensor:
        return self.out(self.blocks(self.inp(z)))

    def forward(self, poses: torch.Tensor) -> torch.Tensor:
        """(B, J, 3) root-relative mm → refined (B, J, 3) root-relative mm (the root at the origin)."""
        out = self.denormalise_output(self.forward_normalised(self.normalise_input(poses)))
        if self.residual:
            out = poses + out
        return out - out[:, self.root : self.root + 1]

    def normalised_error(self, refined: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """(refined − target) in units of the output statistics, (B, J, 3): the training residual."""
        return (refined - targets) / self.out_std.reshape(self.num_joints, 3)


# --- applying it ----------------------------------------------------------------------------------------
@torch.inference_mode()
def refine_poses(refiner: Refiner, poses: np.ndarray, batch_size: int = 1024, amp: str = "none") -> np.ndarray:
    """Root-relative poses (N, J, 3) mm → refined root-relative poses (N, J, 3) mm (NaN frames stay NaN)."""
    poses = np.asarray(poses, dtype=np.float64)
    device = next(refiner.parameters()).device
    dtype = amp_dtype(amp, device)
    was_training = refiner.training
    refiner.eval()
    out = np.full(poses.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(poses).all(axis=(1, 2)))
    for start in range(0, len(ok), batch_size):
        idx = ok[start : start + batch_size]
        x = torch.from_numpy(root_relative(poses[idx])).float().to(device)
        with autocast(device, dtype):
            y = refiner(x)
        out[idx] = y.double().cpu().numpy()
    refiner.train(was_training)
    return out


def swap_sides(values: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """Left/right joint slots (axis 1, ``skeleton.FLIP_PERM``) swapped where ``flip`` (B,); any trailing shape."""
    return torch.where(flip.view(-1, *([1] * (values.dim() - 1))), values[:, list(skeleton.FLIP_PERM)], values)


def mirror(poses: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """Mirror the poses (B, J, C≥1) where ``flip`` (B,): x negated, left/right joint slots swapped."""
    sign = torch.ones(poses.shape[-1], device=poses.device, dtype=poses.dtype)
    sign[0] = -1.0
    return swap_sides(torch.where(flip.view(-1, *([1] * (poses.dim() - 1))), poses * sign, poses), flip)


def up_axis(poses: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The people's up in their camera frame: the mean unit direction pelvis → thorax of the (N, J, 3)
    root-relative poses whose both joints ``mask`` (N, J) holds → a unit (3,) vector."""
    spine = poses[:, skeleton.THORAX] - poses[:, skeleton.PELVIS]
    ok = mask[:, skeleton.THORAX] & mask[:, skeleton.PELVIS] & (spine.norm(dim=-1) > 0)
    if not ok.any():
        raise ValueError("no pose has both a pelvis and a thorax to tell the people's up direction")
    mean = (spine[ok] / spine[ok].norm(dim=-1, keepdim=True)).double().mean(0)
    return (mean / mean.norm()).to(poses.dtype)


def turn(poses: torch.Tensor, axis: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """Rotate (B, J, 3) root-relative poses by ``angles`` (B,) radians about the unit ``axis`` (3,) through
    the root (Rodrigues): a person turning on the spot, seen by the same camera."""
    k = axis.to(poses).expand_as(poses)
    c, s = torch.cos(angles).view(-1, 1, 1).to(poses), torch.sin(angles).view(-1, 1, 1).to(poses)
    return poses * c + torch.cross(k, poses, dim=-1) * s + k * (k * poses).sum(-1, keepdim=True) * (1.0 - c)


# --- checkpoints ---------------------------------------------------------------------------------------
def save_refiner(model: Refiner, path: str | Path, meta: dict | None = None) -> None:
    """Write ``{"config", "state_dict" (with the statistics), "joint_names", "meta"}`` atomically."""
    state = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}
    names = list(skeleton.MPII_NAMES) if model.num_joints == skeleton.NUM_JOINTS else None
    write_torch({"config": dict(model.config), "state_dict": state, "joint_names": names, "meta": meta or {}}, path)


def load_refiner(path: str | Path, num_joints: int | None = None, map_location: str | torch.device = "cpu"
                 ) -> tuple[Refiner, dict]:
    """Rebuild a refiner from ``save_refiner``'s file → (model in eval mode, meta); a joint count
    other than ``num_joints`` (param ``model.num_joints``) is refused naming both."""
    path = Path(path)
    payload = read_model_file(path, "refiner checkpoint", "refiner checkpoint", "the train_refiner stage", map_location)
    config = dict(payload["config"])
    if num_joints is not None and config.get("num_joints") != num_joints:
        raise ValueError(f"{path}: the refiner is for {config.get('num_joints')} joints but param "
                         f"model.num_joints is {num_joints}")
    try:
        model = Refiner(**config)
        model.load_state_dict(payload["state_dict"])
    except (TypeError, RuntimeError) as exc:
        raise ValueError(f"{path}: weights do not match the stored config ({exc})") from None
    return model.eval(), dict(payload.get("meta") or {})
