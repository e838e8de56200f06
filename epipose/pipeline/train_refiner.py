"""The train_refiner stage's science: the Martinez-style MLP (``epipose.models.refiner``) trained on the
3D network's training-frame predictions (root-relative, ``data/pred3d_train.parquet``) against the
root-relative pseudo-labels (``data/pseudo3d.parquet``): no ground truth anywhere, as the paper.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import nn

from epipose import skeleton
from epipose.compute import ComputeParams, Runtime, load_compute
from epipose.data.pose_tables import read_pred3d
from epipose.data.targets import pseudo3d_targets
from epipose.io import content_hash, read_parquet_metadata
from epipose.metrics import masked_mpjpe, root_relative
from epipose.models.refiner import Refiner, mirror, refine_poses, save_refiner, swap_sides, turn, up_axis
from epipose.params import in_range, load_section, load_value, redefault
from epipose.stage import Folder, StageResult
from epipose.train import FitResult, TensorSet, TrainParams, fit

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RefinerParams(TrainParams):
    """Section ``refiner`` of params.yaml: the training loop's keys plus the MLP's and the labels'."""

    batch_size: int = redefault(TrainParams, "batch_size", 64)
    schedule: Literal["step", "cosine"] = redefault(TrainParams, "schedule", "cosine")
    lr_factor: float = redefault(TrainParams, "lr_factor", 0.01)
    grad_clip: float = redefault(TrainParams, "grad_clip", 1.0)
    amp: Literal["auto", "bf16", "fp16", "none"] = redefault(TrainParams, "amp", "none")
    channels_last: bool = redefault(TrainParams, "channels_last", False)
    eval_every: int = redefault(TrainParams, "eval_every", 5)
    width: int = in_range(16, 8192, default=1024)
    blocks: int = in_range(0, 16, default=2)
    dropout: float = in_range(0.0, 0.95, default=0.5)
    residual: bool = True                    # learn the correction (target − input) rather than the pose
    input_noise_mm: float = in_range(0.0, 1000.0, default=20.0)   # Gaussian noise on the training inputs (per coordinate)
    flip: bool = True                        # mirror half of each batch (x → −x, left/right joints swapped)
    yaw_deg: float = in_range(0.0, 180.0, default=0.0)   # turn each training pose about the people's up axis by
                                                         # U(±yaw_deg), its error kept in the camera frame; 0 = off
    min_views: int = in_range(0, 64, default=2)              # as train_3d: pseudo-labels from fewer views are masked
    max_reproj_err: float = in_range(0.0, 1e6, default=0.0)  # px; 0 = off


class RefinerLoss:
    """Mean squared error in the refiner's normalised output units over valid, non-root joints,
    with input noise (``noise_mm``), random mirroring (``flip``) and random turns about ``up``
    (``yaw_deg``: the label turned, the 3D network's error on it kept as it was in the camera frame, so
    the refiner sees the poses facing new ways with the errors a camera makes) as augmentation."""

    def __init__(self, noise_mm: float = 0.0, flip: bool = False, yaw_deg: float = 0.0,
                 up: torch.Tensor | None = None):
        if yaw_deg > 0 and up is None:
            raise ValueError("RefinerLoss: yaw_deg needs the up axis")
        self.noise_mm, self.flip, self.root = noise_mm, flip, skeleton.PELVIS
        self.yaw, self.up = math.radians(yaw_deg), up

    def turned(self, inputs: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor, gen: torch.Generator
               ) -> tuple[torch.Tensor, torch.Tensor]:
        angles = ((torch.rand(len(inputs), generator=gen) * 2.0 - 1.0) * self.yaw).to(inputs.device)
        moved = turn(targets, self.up, angles)
        inputs = torch.where(mask[..., None], moved + (inputs - targets), turn(inputs, self.up, angles))
        return inputs, moved

    def __call__(self, model: nn.Module, batch: dict, gen: torch.Generator):
        core = getattr(model, "module", model)
        inputs, targets, mask = batch["inputs"].float(), batch["targets"].float(), batch["mask"]
        b = len(inputs)
        if self.flip:
            flip = (torch.rand(b, generator=gen) < 0.5).to(inputs.device)
            inputs, targets = mirror(inputs, flip), mirror(targets, flip)
            mask = swap_sides(mask, flip)
        if self.yaw > 0:
            inputs, targets = self.turned(inputs, targets, mask, gen)
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


@dataclass
class RefinerData:
    inputs: np.ndarray         # (N, J, 3) root-relative predictions, mm (0 where missing)
    targets: np.ndarray        # (N, J, 3) root-relative labels, mm (0 where missing)
    mask: np.ndarray           # (N, J) bool: trainable joints
    flip_test: bool | None = None   # the predictions averaged with the mirrored crop (their file says; None: unknown)


def refiner_data(pred3d_path: str | Path, pseudo3d_path: str | Path, min_views: int = 2,
                 max_reproj_err: float = 0.0) -> RefinerData:
    """Pair the 3D network's training-frame predictions with their pseudo-labels (root-relative both)."""
    keys, pred, _ = read_pred3d(pred3d_path)
    flip = read_parquet_metadata(pred3d_path).get("flip_test")
    labels = pseudo3d_targets(keys, pseudo3d_path, min_views, max_reproj_err, section="refiner",
                              frames_of=f"the 3D network's predictions {pred3d_path}")
    inputs = root_relative(pred)
    targets = root_relative(labels.pose_cam)
    mask = labels.valid & np.isfinite(inputs).all(axis=(1, 2))[:, None] & np.isfinite(targets).all(-1)
    if not mask.any():
        raise ValueError(f"{pred3d_path}: no frame has both a finite prediction and a valid pseudo-label")
    inputs = np.where(np.isfinite(inputs).all(axis=(1, 2))[:, None, None], inputs, 0.0)
    targets = np.where(mask[..., None], targets, 0.0)
    return RefinerData(inputs, targets, mask, {"True": True, "False": False}.get(flip))


def train_refiner(data: RefinerData, p: RefinerParams, ckpt_dir: str | Path, live_dir: str | Path | None = None,
                  num_joints: int = skeleton.NUM_JOINTS, runtime: Runtime | None = None,
                  progress: bool = True) -> tuple[FitResult, dict]:
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

    signature = content_hash(inputs, targets, mask)
    up = up_axis(targets, mask) if p.yaw_deg > 0 else None
    loss = RefinerLoss(p.input_noise_mm, p.flip, p.yaw_deg, up)
    result = fit(model, dataset, loss, p, ckpt_dir, live_dir, evaluate, signature, runtime=runtime, progress=progress)
    after = masked_mpjpe(refine_poses(result.model, data.inputs), data.targets, data.mask)
    info = {"frames": int(frames.sum()), "valid_joint_fraction": round(float(data.mask[frames.numpy()].mean()), 4),
            "input_flip_test": data.flip_test,
            "train_mpjpe_before_mm": round(before, 2), "train_mpjpe_after_mm": round(after, 2)}
    log.info("refiner: training-frame error vs labels %.1f → %.1f mm", before, after)
    return result, info


def summary(report: dict) -> dict[str, float]:
    """metrics/train_refiner.json: root-relative MPJPE (mm) of the 3D network's training-frame
    predictions against the pseudo-labels, before and after the refiner."""
    return {"refiner.fit_mpjpe_before": report["train_mpjpe_before_mm"],
            "refiner.fit_mpjpe_after": report["train_mpjpe_after_mm"]}


# --- the stage ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TrainRefinerPaths:
    pred3d: str               # the 3D network's training-frame predictions (data/pred3d_train.parquet)
    pseudo3d: str             # the pseudo-labels (data/pseudo3d.parquet)
    out: str                  # the trained refiner (models/refiner.pt)
    live_dir: str             # dvclive folder for the training curves
    ckpt_dir: str             # per-epoch checkpoints (resume)

    def outputs(self) -> list[str]:
        return [self.out, Folder(self.live_dir), Folder(self.ckpt_dir)]


@dataclass(frozen=True)
class TrainRefinerConfig:
    refiner: RefinerParams
    compute: ComputeParams
    num_joints: int


def load_params(path: str | Path = "params.yaml") -> TrainRefinerConfig:
    return TrainRefinerConfig(load_section(RefinerParams, "refiner", path), load_compute(path),
                              load_value("model", "num_joints", int, path))


def run(paths: TrainRefinerPaths, params: TrainRefinerConfig, runtime: Runtime) -> StageResult | None:
    """Train the refiner on the 3D network's predictions against the pseudo-labels; write it."""
    t0 = time.perf_counter()
    p = params.refiner
    data = refiner_data(paths.pred3d, paths.pseudo3d, p.min_views, p.max_reproj_err)
    result, info = train_refiner(data, p, paths.ckpt_dir, paths.live_dir, params.num_joints, runtime=runtime,
                                 progress=runtime.progress)
    if not runtime.is_main:
        return None
    save_refiner(result.model, paths.out, meta={"target": "pseudo3d", **info})
    report = {**info, "target": "pseudo3d", "epochs": p.epochs}
    return StageResult([paths.out], summary(report), report, {"seconds": round(time.perf_counter() - t0, 1)})
