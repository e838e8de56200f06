"""The refiner stage's science: train the Martinez-style MLP on the 3D network's training-frame
predictions (root-relative) against the root-relative pseudo-labels (or the ground truth), and
apply it (``refine_poses``, the one inference path of the refiner).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from epipose import skeleton
from epipose.data.h36m import H36MDataset
from epipose.data.transforms import flip_joints
from epipose.models.refiner import Refiner
from epipose.params import in_range
from epipose.pose3d import root_relative
from epipose.train import FitResult, TensorSet, TrainParams, amp_dtype, autocast, fit
from epipose.train3d import TargetSource, gt_targets, pseudo3d_targets, read_pred3d

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RefinerParams(TrainParams):
    """Section ``refiner`` of params.yaml: the training loop's keys plus the MLP's and the labels'."""

    target: TargetSource = "pseudo3d"        # pseudo3d (the paper's default) | gt
    width: int = in_range(16, 8192, default=1024)
    blocks: int = in_range(0, 16, default=2)
    dropout: float = in_range(0.0, 0.95, default=0.5)
    residual: bool = True                    # learn the correction (target − input) rather than the pose
    input_noise_mm: float = in_range(0.0, 1000.0, default=20.0)   # Gaussian noise on the training inputs (per coordinate)
    flip: bool = True                        # mirror half of each batch (x → −x, left/right joints swapped)
    min_views: int = in_range(0, 64, default=2)              # as train_3d: pseudo-labels from fewer views are masked
    max_reproj_err: float = in_range(0.0, 1e6, default=0.0)  # px; 0 = off


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


def mirror(poses: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """Mirror the poses (B, J, C≥1) where ``flip`` (B,): x negated, left/right joint slots swapped."""
    sign = torch.ones(poses.shape[-1], device=poses.device, dtype=poses.dtype)
    sign[0] = -1.0
    mirrored = flip_joints(poses * sign, flip)
    return torch.where(flip.view(-1, *([1] * (poses.dim() - 1))), mirrored, poses)


class RefinerLoss:
    """Mean squared error in the refiner's normalised output units over valid, non-root joints,
    with input noise (``noise_mm``) and random mirroring (``flip``) as augmentation."""

    def __init__(self, noise_mm: float = 0.0, flip: bool = False):
        self.noise_mm, self.flip, self.root = noise_mm, flip, skeleton.PELVIS

    def __call__(self, model: nn.Module, batch: dict, gen: torch.Generator):
        core = getattr(model, "module", model)
        inputs, targets, mask = batch["inputs"].float(), batch["targets"].float(), batch["mask"]
        b = len(inputs)
        if self.flip:
            flip = (torch.rand(b, generator=gen) < 0.5).to(inputs.device)
            inputs, targets = mirror(inputs, flip), mirror(targets, flip)
            mask = flip_joints(mask, flip)
        if self.noise_mm > 0:
            inputs = root_relative(inputs + torch.randn(inputs.shape, generator=gen).to(inputs.device) * self.noise_mm)
        refined = model(inputs)
        err = core.normalised_error(refined.float(), targets)
        w = mask.float().clone()
        w[:, self.root] = 0.0
        n = w.sum().clamp_min(1.0)
        loss = ((err ** 2).sum(-1) * w).sum() / (3.0 * n)
        with torch.no_grad():
            mm = ((refined.float() - targets).norm(dim=-1) * w).sum() / n
        return loss, {"err_mm": mm}


def masked_mpjpe(pred: np.ndarray, target: np.ndarray, mask: np.ndarray) -> float:
    err = np.linalg.norm(pred - target, axis=-1)
    ok = mask & np.isfinite(err)
    return float(err[ok].mean()) if ok.any() else float("nan")


@dataclass
class RefinerData:
    inputs: np.ndarray         # (N, J, 3) root-relative predictions, mm (0 where missing)
    targets: np.ndarray        # (N, J, 3) root-relative labels, mm (0 where missing)
    mask: np.ndarray           # (N, J) bool: trainable joints


def refiner_data(pred3d_path: str | Path, target: TargetSource, pseudo3d_path: str | Path | None = None,
                 h36m_root: str | Path | None = None, min_views: int = 2, max_reproj_err: float = 0.0
                 ) -> RefinerData:
    """Pair the 3D network's training-frame predictions with their labels (root-relative both)."""
    keys, pred, _ = read_pred3d(pred3d_path)
    if target == "pseudo3d":
        if pseudo3d_path is None:
            raise ValueError("param refiner.target is pseudo3d but no pseudo-label table was given (--pseudo3d)")
        labels = pseudo3d_targets(keys, pseudo3d_path, min_views, max_reproj_err, section="refiner",
                                  frames_of=f"the 3D network's predictions {pred3d_path}")
    else:
        if h36m_root is None:
            raise ValueError("param refiner.target is gt but no Human3.6M root was given (--h36m)")
        labels = gt_targets(keys, H36MDataset(h36m_root))
    inputs = root_relative(pred)
    targets = root_relative(labels.pose_cam)
    mask = labels.valid & np.isfinite(inputs).all(axis=(1, 2))[:, None] & np.isfinite(targets).all(-1)
    if not mask.any():
        raise ValueError(f"{pred3d_path}: no frame has both a finite prediction and a valid {target} label")
    inputs = np.where(np.isfinite(inputs).all(axis=(1, 2))[:, None, None], inputs, 0.0)
    targets = np.where(mask[..., None], targets, 0.0)
    return RefinerData(inputs, targets, mask)


def train_refiner(data: RefinerData, p: RefinerParams, ckpt_dir: str | Path, live_dir: str | Path | None = None,
                  num_joints: int = skeleton.NUM_JOINTS, progress: bool = True) -> tuple[FitResult, dict]:
    """Fit the refiner; returns (FitResult, info with the training-set errors before/after refinement)."""
    if data.inputs.shape[1] != num_joints:
        raise ValueError(f"the predictions have {data.inputs.shape[1]} joints but param model.num_joints is {num_joints}")
    torch.manual_seed(p.seed)
    model = Refiner(num_joints, p.width, p.blocks, p.dropout, p.residual)
    inputs, targets, mask = (torch.from_numpy(data.inputs).float(), torch.from_numpy(data.targets).float(),
                             torch.from_numpy(data.mask))
    model.set_stats(inputs, targets, mask)
    frames = mask.any(1)
    dataset = TensorSet(inputs=inputs[frames], targets=targets[frames], mask=mask[frames])
    before = masked_mpjpe(data.inputs, data.targets, data.mask)

    def evaluate(m: nn.Module) -> dict[str, float]:
        return {"train_mpjpe_mm": masked_mpjpe(refine_poses(m, data.inputs), data.targets, data.mask)}

    signature = {"inputs": float(inputs.double().sum()), "targets": float(targets.double().sum()),
                 "mask": int(mask.sum()), "frames": int(frames.sum())}
    result = fit(model, dataset, RefinerLoss(p.input_noise_mm, p.flip), p, ckpt_dir, live_dir, evaluate, signature, progress=progress)
    after = masked_mpjpe(refine_poses(result.model, data.inputs), data.targets, data.mask)
    info = {"frames": int(frames.sum()), "valid_joint_fraction": round(float(data.mask[frames.numpy()].mean()), 4),
            "train_mpjpe_before_mm": round(before, 2), "train_mpjpe_after_mm": round(after, 2)}
    log.info("refiner: training-frame error vs labels %.1f → %.1f mm", before, after)
    return result, info
