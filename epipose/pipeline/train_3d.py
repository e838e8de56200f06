"""The train_3d stage's science: the 3D network trained on the training subjects' frame shards with 3D
pseudo-labels (``train_3d.target: pseudo3d``, self-supervised) or the ground truth (``gt``, the fully
supervised baseline, the train_3d_gt stage).

The network is the 2D one with ``model.depth_bins`` depth bins (``init_from_2d``: it starts with
exactly the 2D network's 2D predictions). Targets follow the paper: per joint ``(u, v)`` in crop
pixels and the pelvis-relative depth over a ``depth_range_mm`` range (``epipose.models.codec``, with
each camera's intrinsics from cameras.json and each frame's crop box). The loss is smooth-L1 on
``(u / size, v / size, d)`` over the joints whose label is valid (``epipose.data.targets``). Crops
are decoded once into memory (``epipose.data.frames.load_frames``); augmentation (scale, rotation,
colour, occlusion, flip — mirrored x, swapped joints, depth unchanged) runs batched on the device
(``epipose.data.transforms.augment_batch``); ``epipose.train.fit`` is the loop. After training the
network predicts every training frame (``predict_frames``): the refiner's input.

Mixed 2D supervision (``train_3d.mpii_share`` > 0; Integral regression, Sun et al. 2018): each batch
is ``round(share × batch_size)`` stills of MPII's train split (``data.mpii_root``) and the rest frames,
at the same batch size and number of steps as frames alone (the per-step cost stays that of share 0;
an epoch then shows ``1 − share`` of the frames). The stills are cut as the frames are
(``mpii_stills``) and augmented with them in one call; they train x, y only: their depth terms are
left out of the loss (``smooth_l1_mixed``), and joints not visible are masked.

Semi-supervised (``train_3d.gt_subjects``): those subjects' frames train on their ground truth, the rest
on pseudo-labels; ``train_3d.gt_weight`` ≠ 1 weights the ground-truth frames' loss terms
(``frame_weights``; the loss a weighted mean, as if each such frame were in its batch that many times).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from epipose import skeleton
from epipose.camera import Rig, load_rig
from epipose.compute import ComputeParams, Runtime, load_compute
from epipose.data.frames import ActionSelection, FrameCache, load_frames, read_crop_info
from epipose.data.h36m import EXTRA_TRAIN_SUBJECTS, TRAIN_SUBJECTS, H36MDataset
from epipose.data.pose_tables import key_groups, pseudo3d_subjects, write_pred3d
from epipose.data.stills import CropCache, build_cache
from epipose.data.targets import Targets, TargetSource, gt_targets, pseudo3d_targets, semi_supervised_targets
from epipose.data.transforms import AugmentParams, augment_batch, load_voc_occluders
from epipose.io import content_hash
from epipose.metrics import masked_mpjpe, root_relative
from epipose.models.codec import encode_pose
from epipose.models.inference import infer_3d
from epipose.models.pose_net import ModelParams, PoseNet, expand_depth, load_pose_net, normalise, save_pose_net
from epipose.params import ParamError, in_range, load_section, load_value, redefault
from epipose.stage import Folder, StageResult
from epipose.train import FitResult, MixedSet, TensorSet, TrainParams, fit

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class Train3DParams(TrainParams):
    """Section ``train_3d`` of params.yaml: the training loop's keys plus the 3D stage's."""

    epochs: int = redefault(TrainParams, "epochs", 1)
    batch_size: int = redefault(TrainParams, "batch_size", 16)
    lr: float = redefault(TrainParams, "lr", 0.002)
    schedule: Literal["step", "cosine"] = redefault(TrainParams, "schedule", "cosine")
    lr_factor: float = redefault(TrainParams, "lr_factor", 0.01)
    warmup_steps: int = redefault(TrainParams, "warmup_steps", 20)
    ema_decay: float = redefault(TrainParams, "ema_decay", 0.99)
    bn_recalib_batches: int = redefault(TrainParams, "bn_recalib_batches", 25)
    log_every: int = redefault(TrainParams, "log_every", 10)
    target: TargetSource = "pseudo3d"                 # pseudo3d (self-supervised) | gt (fully supervised)
    subjects: list[str] = field(default_factory=lambda: [*TRAIN_SUBJECTS, *EXTRA_TRAIN_SUBJECTS])
    depth_range_mm: float = in_range(100.0, 20000.0, default=2000.0)   # d = (z − z_pelvis) / range
    loss_beta: float = in_range(0.0, 1.0, default=0.02)    # smooth-L1 transition, in normalised units
    min_views: int = in_range(0, 64, default=2)            # pseudo-labels from fewer views are masked
    max_reproj_err: float = in_range(0.0, 1e6, default=0.0)   # px; larger mean reprojection errors masked; 0 = off
    fit_frames: int = in_range(0, 1000000, default=256)     # training frames of the per-epoch fit curve; 0 = none
    pred_stride: int = in_range(1, 1000000, default=2)      # --pred-out: every this many training frames' predictions
    flip_test: bool = True                                  # training-frame predictions (refiner input): as evaluate.flip_test
    eval_batch_size: int = in_range(1, 65536, default=128)
    decode_workers: int = in_range(1, 64, default=2)
    gt_subjects: list[str] = field(default_factory=list)       # semi-supervised: these train on their ground truth
    exclude_actions: list[str] = field(default_factory=list)   # held-out motion: these actions are never trained on
    mpii_share: float = in_range(0.0, 1.0, default=0.5, hash_omits=0.0)   # of each batch: MPII stills (< 1)
    mpii_box_margin: float = in_range(1.0, 3.0, default=1.25, hash_omits=1.25)   # their crop side / (scale · 200)
    backbone_lr_factor: float = in_range(0.0, 10.0, default=0.3, hash_omits=1.0)  # the ResNet's lr / lr
    gt_weight: float = in_range(0.0, 1000.0, default=1.0, hash_omits=1.0)   # gt_subjects' frames' loss weight

    def __post_init__(self) -> None:
        outside = [s for s in self.gt_subjects if s not in self.subjects]
        if outside:
            raise ParamError(f"param train_3d.gt_subjects: {outside} are not among train_3d.subjects {self.subjects}")


# --- targets ---------------------------------------------------------------------------------------------
def encode_targets(cache: FrameCache, targets: Targets, rig: Rig, depth_range_mm: float
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Targets → (uvd (N, J, 3) float32 — crop px, crop px, relative depth; 0 where invalid —, valid (N, J))."""
    uvd = np.zeros(targets.pose_cam.shape)
    for (_, _, camera), idx in key_groups(cache.keys).items():
        cam = rig.intrinsic_camera(camera)
        with np.errstate(invalid="ignore", divide="ignore"):
            uvd[idx] = encode_pose(targets.pose_cam[idx], cam, cache.boxes[idx], cache.crop_size, depth_range_mm)
    valid = targets.valid & np.isfinite(uvd).all(-1)
    uvd = np.where(valid[..., None], uvd, 0.0)
    return uvd.astype(np.float32), valid


# --- the loss --------------------------------------------------------------------------------------------
def smooth_l1_3d(xy: torch.Tensor, z: torch.Tensor, target: torch.Tensor, valid: torch.Tensor, input_size: int,
                 beta: float, weight: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Smooth-L1 on (x / size, y / size, z) over valid joints (mean over valid coordinates; with
    ``weight`` (B,), each sample's terms weighted and the mean taken over the weights).

    xy (B, J, 2) input px, z (B, J) relative depth; target (B, J, 3) the same units; valid (B, J).
    Also returns the mean 2D error (input px) and depth error (relative) of the valid joints.
    """
    pred = torch.cat([xy.float() / input_size, z.float()[..., None]], dim=-1)
    tgt = torch.cat([target[..., :2].float() / input_size, target[..., 2:3].float()], dim=-1)
    w = valid.float()[..., None]
    n = w.sum().clamp_min(1.0)
    terms = F.smooth_l1_loss(pred, tgt, reduction="none", beta=beta)
    if weight is None:
        loss = (terms * w).sum() / (3.0 * n)
    else:
        lw = w * weight.float()[:, None, None]
        loss = (terms * lw).sum() / (3.0 * lw.sum().clamp_min(1e-12))
    with torch.no_grad():
        err_xy = ((xy.float() - target[..., :2].float()).norm(dim=-1) * w[..., 0]).sum() / n
        err_z = ((z.float() - target[..., 2].float()).abs() * w[..., 0]).sum() / n
    return loss, {"err_xy_px": err_xy, "err_z": err_z}


def smooth_l1_mixed(xy: torch.Tensor, z: torch.Tensor, target: torch.Tensor, valid: torch.Tensor,
                    has_depth: torch.Tensor, input_size: int, beta: float, weight: torch.Tensor | None = None
                    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``smooth_l1_3d`` for a batch mixing 3D samples with 2D-only ones (``has_depth`` (B,) False: MPII
    stills): x, y of every valid joint, z of the 3D samples' valid joints only — the stills' depth
    terms are left out (no gradient, not a zero target); the mean over the coordinates counted (with
    ``weight`` (B,): each sample's terms weighted, the mean over the weights).

    Logs ``err_xy_px`` and ``err_z`` over the 3D samples (as ``smooth_l1_3d``'s) and ``err_xy_mpii_px``
    over the stills.
    """
    pred = torch.cat([xy.float() / input_size, z.float()[..., None]], dim=-1)
    tgt = torch.cat([target[..., :2].float() / input_size, target[..., 2:3].float()], dim=-1)
    w3 = valid & has_depth[:, None]                                           # (B, J) joints with a depth
    mask = torch.cat([valid[..., None].expand(-1, -1, 2), w3[..., None]], dim=-1)   # (B, J, 3)
    terms = torch.where(mask, F.smooth_l1_loss(pred, tgt, reduction="none", beta=beta), torch.zeros((), device=xy.device))
    if weight is None:
        loss = terms.sum() / mask.sum().clamp_min(1).float()
    else:
        lw = mask.float() * weight.float()[:, None, None]
        loss = (terms * lw).sum() / lw.sum().clamp_min(1e-12)
    with torch.no_grad():
        e_xy = (xy.float() - target[..., :2].float()).norm(dim=-1)
        w2 = (valid & ~has_depth[:, None]).float()
        n3 = w3.float().sum().clamp_min(1.0)
        logs = {"err_xy_px": (e_xy * w3).sum() / n3,
                "err_z": ((z.float() - target[..., 2].float()).abs() * w3).sum() / n3,
                "err_xy_mpii_px": (e_xy * w2).sum() / w2.sum().clamp_min(1.0)}
    return loss, logs


class Loss3D:
    """The train_3d loss_fn for ``epipose.train.fit``: augment on the device, smooth-L1 on (x, y, z);
    a batch with ``has_depth`` (mixed with MPII stills, ``train_3d.mpii_share``) ``smooth_l1_mixed``."""

    def __init__(self, src_box: float, input_size: int, aug: AugmentParams, beta: float, channels_last: bool = True):
        self.src_box, self.input_size, self.aug, self.beta = src_box, input_size, aug, beta
        self.channels_last = channels_last
        self.occluders = load_voc_occluders(aug.voc_root, aug.voc_max_objects) if aug.voc_root else None

    def __call__(self, model: nn.Module, batch: dict, gen: torch.Generator):
        images, target, valid = augment_batch(batch["images"], batch["target"], batch["valid"], self.src_box,
                                              self.input_size, self.aug, gen, self.occluders)
        x = normalise(images)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        out = model(x)
        weight = batch.get("weight")           # train_3d.gt_weight ≠ 1: the ground-truth frames' loss weight
        if "has_depth" in batch:
            return smooth_l1_mixed(out["xy"], out["z"], target, valid, batch["has_depth"], self.input_size, self.beta,
                                   weight)
        return smooth_l1_3d(out["xy"], out["z"], target, valid, self.input_size, self.beta, weight)


# --- MPII stills in the batches (train_3d.mpii_share) ------------------------------------------------------
def mpii_per_batch(p: Train3DParams, nproc: int = 1) -> int:
    """The MPII stills in each global batch: ``round(mpii_share × batch_size)``, the rest frames (the
    batch size and the steps stay those of share 0); ParamError when the share is ≥ 1, rounds to no
    still or no frame, or a part does not split over the ``nproc`` processes."""
    share, b = p.mpii_share, p.batch_size
    if share <= 0:
        return 0
    k = int(round(share * b))
    if share >= 1 or not 0 < k < b:
        raise ParamError(f"param train_3d.mpii_share: {share} of train_3d.batch_size {b} is {k} MPII stills "
                         f"(needs a share below 1 that leaves 1 to {b - 1} stills)")
    if k % nproc or (b - k) % nproc:
        raise ParamError(f"param train_3d.mpii_share: {k} stills + {b - k} frames per batch do not split over "
                         f"compute.nproc {nproc} processes")
    return k


def mpii_stills(mpii_root: str | Path, crop_size: int, p: Train3DParams) -> tuple[CropCache, TensorSet]:
    """MPII's train split cut as the frames are (``crop_size`` px, the person box the whole crop: one
    augmentation for both) → (the cache, its samples: x, y targets with depth 0 and ``has_depth``
    False, the visible joints valid)."""
    stills = build_cache(mpii_root, "train", crop_size, p.mpii_box_margin, 1.0, workers=p.decode_workers)
    target = torch.cat([stills.joints, torch.zeros_like(stills.joints[..., :1])], dim=-1)
    valid = stills.visible & torch.isfinite(stills.joints).all(-1)
    return stills, TensorSet(images=stills.images, target=target, valid=valid,
                             has_depth=torch.zeros(len(stills), dtype=torch.bool))


def frame_weights(cache: FrameCache, p: Train3DParams) -> torch.Tensor | None:
    """Each frame's loss weight (N,): ``p.gt_weight`` for the frames of ``p.gt_subjects`` (their labels
    are the ground truth), 1 for the pseudo-labelled rest; None (no weights: the unweighted loss) when
    nothing is weighted — no semi-supervised subjects, target gt, or a weight of 1."""
    if p.target != "pseudo3d" or not p.gt_subjects or p.gt_weight == 1.0:
        return None
    on_truth = torch.tensor(cache.keys["subject"].isin(p.gt_subjects).to_numpy())
    return torch.where(on_truth, torch.tensor(float(p.gt_weight)), torch.tensor(1.0))


def training_set(cache: FrameCache, uvd: np.ndarray, valid: np.ndarray, p: Train3DParams,
                 mpii_root: str | Path | None, nproc: int) -> tuple[TensorSet | MixedSet, dict, dict]:
    """The frames' samples, mixed with MPII stills when ``p.mpii_share`` > 0 → (dataset, what to add
    to the data signature, what to add to the report: nothing at share 0)."""
    frames = dict(images=cache.images, target=torch.from_numpy(uvd), valid=torch.from_numpy(valid))
    weight = frame_weights(cache, p)
    if weight is not None:
        frames["weight"] = weight
    k = mpii_per_batch(p, nproc)
    if k == 0:
        return TensorSet(**frames), {}, {}
    if mpii_root is None:
        raise ValueError("param train_3d.mpii_share is > 0 but no MPII root was given (param data.mpii_root)")
    stills, still_set = mpii_stills(mpii_root, cache.crop_size, p)
    if weight is not None:
        still_set = TensorSet(**still_set.tensors, weight=torch.ones(len(stills)))
    dataset = MixedSet(TensorSet(**frames, has_depth=torch.ones(len(cache), dtype=torch.bool)), still_set, k)
    steps = max(1, len(cache) // p.batch_size) * p.epochs
    info = {"mpii_share": p.mpii_share, "mpii_stills": len(stills), "mpii_per_batch": k,
            "frames_per_batch": p.batch_size - k, "mpii_samples_drawn": steps * k}
    return dataset, {"mpii": stills.signature()}, info


# --- the network ------------------------------------------------------------------------------------------
def init_from_2d(pose2d_path: str | Path, model_params: ModelParams) -> PoseNet:
    """The 3D network initialised from the 2D one (same architecture, ``model.depth_bins`` bins)."""
    net2d, _ = load_pose_net(pose2d_path, num_joints=model_params.num_joints)
    c2 = net2d.config
    for key in ("backbone", "backbone_stages", "input_size", "deconv_layers", "deconv_channels"):
        if getattr(c2, key) != getattr(model_params, key):
            raise ValueError(f"{pose2d_path}: the 2D network has {key} {getattr(c2, key)} but param model.{key} is "
                             f"{getattr(model_params, key)} (rerun pretrain_2d)")
    config = dataclasses.replace(c2, depth_bins=model_params.depth_bins, head="integral")   # 3D: integral always
    model = PoseNet(config)
    model.load_state_dict(expand_depth(net2d.state_dict(), c2, config.depth_bins))
    return model


def summary(report: dict) -> dict[str, float | None]:
    """metrics/train_3d.json (and train_3d_gt.json): how well the network fits its own labels on
    the training frames (root-relative MPJPE, mm), the last epoch's loss, and the training subjects left
    out for want of pseudo-labels (``trainable_subjects``)."""
    return {"fit.mpjpe": report["train_target_mpjpe_mm"], "fit.final_loss": report["final_train_loss"],
            "subjects_left_out": len(report.get("subjects_left_out", {}))}


def target_mpjpe(pred_cam: np.ndarray, targets: Targets) -> float:
    """Root-relative mean error (mm) of predictions against the targets over valid joints."""
    return masked_mpjpe(root_relative(pred_cam), root_relative(targets.pose_cam), targets.valid)


@dataclass
class Train3DResult:
    fit: FitResult
    cache: FrameCache
    targets: Targets
    info: dict
    fit_frames: np.ndarray   # the fit curve's frames


def train_3d(frames_root: str | Path, pose2d_path: str | Path, rig: Rig, model_params: ModelParams,
             p: Train3DParams, aug: AugmentParams, ckpt_dir: str | Path, live_dir: str | Path | None = None,
             pseudo3d_path: str | Path | None = None, h36m_root: str | Path | None = None,
             runtime: Runtime | None = None, progress: bool = True,
             mpii_root: str | Path | None = None) -> Train3DResult:
    """Train the 3D network on ``p.subjects``' frames with ``p.target`` labels (pseudo3d or gt), mixed
    with ``mpii_root``'s train split's stills (x, y only) when ``p.mpii_share`` > 0."""
    if p.target == "pseudo3d" and pseudo3d_path is None:
        raise ValueError("param train_3d.target is pseudo3d but no pseudo-label table was given (--pseudo3d)")
    if p.target == "pseudo3d" and p.gt_subjects and h36m_root is None:
        raise ValueError("param train_3d.gt_subjects names subjects but no Human3.6M root with ground truth was given")
    if p.target == "gt" and h36m_root is None:
        raise ValueError("param train_3d.target is gt but no Human3.6M root with ground truth was given "
                         "(param data.h36m_root)")
    model = init_from_2d(pose2d_path, model_params)
    t0 = time.perf_counter()
    subjects, left_out = trainable_subjects(p, pseudo3d_path)
    cache = load_frames(frames_root, subjects, workers=p.decode_workers, progress=progress,
                        actions=ActionSelection(tuple(p.exclude_actions), True, "train_3d.exclude_actions"))
    targets = training_targets(cache, p, pseudo3d_path, h36m_root)
    uvd, valid = encode_targets(cache, targets, rig, p.depth_range_mm)
    info = {"train_frames": len(cache), "labelled_frames": int(valid.any(1).sum()),
            "valid_joint_fraction": round(float(valid.mean()), 4), "target": p.target,
            **optional_info(cache, p, left_out), "decode_seconds": round(time.perf_counter() - t0, 1)}
    dataset, mpii_signature, mpii_info = training_set(cache, uvd, valid, p, mpii_root,
                                                      runtime.world_size if runtime else 1)
    info.update(mpii_info)
    loss_fn = Loss3D(float(cache.crop_size), model.config.input_size, aug, p.loss_beta, p.channels_last)

    # Per-epoch fit curve: root-relative error (mm) against the labels on a fixed subset of training frames.
    subset = fit_subset(valid, p.fit_frames)
    sub_targets = Targets(targets.pose_cam[subset], valid[subset], targets.source)
    all_cams = rig.intrinsic_cameras(cache.keys["camera"])
    sub_cams = [all_cams[i] for i in subset]

    def evaluate(m: nn.Module) -> dict[str, float]:
        out = infer_3d(m, cache.images[subset], cache.boxes[subset], sub_cams, sub_targets.root_depth,
                       depth_range_mm=p.depth_range_mm, batch_size=p.eval_batch_size, flip_test=False, amp=p.amp,
                       channels_last=p.channels_last)
        return {"fit_mpjpe_mm": target_mpjpe(out["pose_cam"], sub_targets)}

    signature = {"frames": cache.signature(), "targets": content_hash(uvd, valid), "augment": aug,
                 "pose2d": content_hash(Path(pose2d_path)), **mpii_signature}
    torch.manual_seed(p.seed)
    result = fit(model, dataset, loss_fn, p, ckpt_dir, live_dir, evaluate if len(subset) else None, signature,
                 runtime=runtime, progress=progress, lr_factors={"backbone.": p.backbone_lr_factor})
    return Train3DResult(result, cache, Targets(targets.pose_cam, valid, targets.source), info, subset)


def trainable_subjects(p: Train3DParams, pseudo3d_path: str | Path | None) -> tuple[list[str], dict[str, str]]:
    """``p.subjects`` less those triangulate dropped (target pseudo3d; their status in the table's metadata,
    e.g. "dropped: self-calibration inconsistent") → (the subjects trained on, {left out: why}), each left
    out with a warning. A subject on its ground truth (``p.gt_subjects``) stays; one the table has no rows
    nor status for stays too (``pseudo3d_targets`` then names it: a stale table or another data root);
    no subject left is an error."""
    if p.target == "gt" or pseudo3d_path is None:
        return list(p.subjects), {}
    labelled, status = pseudo3d_subjects(pseudo3d_path)
    left_out = {s: status[s] for s in p.subjects
                if s not in labelled and s not in p.gt_subjects and status.get(s, "ok").startswith("dropped")}
    if len(left_out) == len(p.subjects):
        raise ValueError(f"{pseudo3d_path}: no pseudo-labels for any subject of param train_3d.subjects: "
                         + "; ".join(f"{s} {why}" for s, why in left_out.items()))
    for s, why in left_out.items():
        log.warning("%s: no pseudo-labels for %s (triangulate: %s): its frames are left out of training",
                    pseudo3d_path, s, why)
    return [s for s in p.subjects if s not in left_out], left_out


def training_targets(cache: FrameCache, p: Train3DParams, pseudo3d_path: str | Path | None,
                     h36m_root: str | Path | None) -> Targets:
    """The labels of the training frames: pseudo-labels (with ``p.gt_subjects``' frames on their ground
    truth) or, for target gt, the ground truth of all."""
    if p.target == "gt":
        if p.gt_subjects:
            log.warning("param train_3d.gt_subjects is ignored with target gt: every subject trains on its ground truth")
        return gt_targets(cache.keys, H36MDataset(h36m_root), what="the fully supervised baseline (train_3d_gt)")
    if p.gt_subjects:
        return semi_supervised_targets(cache.keys, pseudo3d_path, H36MDataset(h36m_root), p.gt_subjects,
                                       p.min_views, p.max_reproj_err)
    return pseudo3d_targets(cache.keys, pseudo3d_path, p.min_views, p.max_reproj_err)


def optional_info(cache: FrameCache, p: Train3DParams, left_out: dict[str, str]) -> dict:
    """The report's lines of the optional settings, present only when set (the default report is unchanged):
    the subjects left out for want of pseudo-labels and why, the subjects trained on their ground truth and
    their frames, the actions left out."""
    info: dict = {"subjects_left_out": left_out} if left_out else {}
    if p.target == "pseudo3d" and p.gt_subjects:
        info["gt_subjects"] = list(p.gt_subjects)
        info["gt_frames"] = int(cache.keys["subject"].isin(p.gt_subjects).sum())
        if p.gt_weight != 1.0:
            info["gt_weight"] = p.gt_weight
    if p.exclude_actions:
        info["excluded_actions"] = list(p.exclude_actions)
    return info


def fit_subset(valid: np.ndarray, n: int) -> np.ndarray:
    """``n`` training frames with a labelled pelvis, evenly spaced (the fit curve's and, without
    ``--pred-out``, the final fit's frames)."""
    labelled = np.flatnonzero(valid[:, skeleton.PELVIS])
    if n <= 0 or not len(labelled):
        return np.zeros(0, dtype=int)
    return labelled[np.linspace(0, len(labelled) - 1, min(n, len(labelled))).astype(int)]


# --- predictions on the training frames (the refiner's input) ---------------------------------------------
def score_on_labels(run: Train3DResult, rig: Rig, p: Train3DParams, for_refiner: bool, progress: bool = True
              ) -> tuple[FrameCache, dict[str, np.ndarray], float]:
    """The trained network's fit to its own labels → (the frames scored, ``predict_frames`` on them,
    root-relative MPJPE in mm): on every ``p.pred_stride``-th training frame when its predictions are
    wanted (the refiner's input), else on the fit curve's frames (or all, when it has none): the
    3D network's flip-averaged prediction costs ~12 ms a frame on 2 CPU cores."""
    if for_refiner or not len(run.fit_frames):
        scored = np.arange(0, len(run.cache), p.pred_stride if for_refiner else 1)
    else:
        scored = run.fit_frames
    targets = Targets(run.targets.pose_cam[scored], run.targets.valid[scored], run.targets.source)
    cache = run.cache.subset(scored)
    pred = predict_frames(run.fit.model, cache, rig, targets.root_depth, p.depth_range_mm, p.eval_batch_size,
                          p.flip_test, p.amp, p.channels_last, progress=progress)
    return cache, pred, target_mpjpe(pred["pose_cam"], targets)


def predict_frames(model: PoseNet, cache: FrameCache, rig: Rig, root_depth_mm: np.ndarray, depth_range_mm: float,
                   batch_size: int = 128, flip_test: bool = True, amp: str = "auto", channels_last: bool = True,
                   progress: bool = True) -> dict[str, np.ndarray]:
    """``infer_3d`` on every cached frame, back-projected with each camera's intrinsics at ``root_depth_mm``."""
    return infer_3d(model, cache.images, cache.boxes, rig.intrinsic_cameras(cache.keys["camera"]), root_depth_mm,
                    depth_range_mm=depth_range_mm, batch_size=batch_size, flip_test=flip_test, amp=amp,
                    channels_last=channels_last, progress=progress)


# --- the stage ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Train3DPaths:
    frames: str               # frame shards, <frames>/<subject>/<action>.<camera>.parquet
    pose2d: str               # the 2D network to start from (models/pose2d.pt)
    pseudo3d: str | None      # the pseudo-labels (data/pseudo3d.parquet; target pseudo3d)
    out: str                  # the trained network (models/pose3d.pt)
    live_dir: str             # dvclive folder for the training curves
    ckpt_dir: str             # per-epoch checkpoints (resume)
    pred_out: str | None = None   # its predictions on the training frames (the refiner's input)

    def outputs(self) -> list[str]:
        return [self.out, Folder(self.live_dir), Folder(self.ckpt_dir), self.pred_out]


@dataclass(frozen=True)
class Train3DConfig:
    compute: ComputeParams
    model: ModelParams
    train_3d: Train3DParams
    augment: AugmentParams
    h36m_root: str            # data.h36m_root: cameras.json (intrinsics), and the ground truth for target gt
    mpii_root: str            # data.mpii_root: the MPII stills of train_3d.mpii_share


def load_params(path: str | Path = "params.yaml", target: str | None = None) -> Train3DConfig:
    """The stage's params; ``target`` overrides ``train_3d.target`` (the fully supervised stage passes gt)."""
    compute = load_compute(path)
    model = load_section(ModelParams, "model", path)
    p = load_section(Train3DParams, "train_3d", path)
    augment = load_section(AugmentParams, "augment", path)
    h36m_root = load_value("data", "h36m_root", str, path)
    mpii_root = load_value("data", "mpii_root", str, path)
    mpii_per_batch(p, compute.nproc)                    # the share validated before any work
    return Train3DConfig(compute, model, dataclasses.replace(p, target=target or p.target), augment, h36m_root,
                         mpii_root)


def run(paths: Train3DPaths, params: Train3DConfig, runtime: Runtime) -> StageResult | None:
    """Train the 3D network, score its fit to its own labels, write it (and its training-frame predictions)."""
    p = params.train_3d
    rig = load_rig(f"{params.h36m_root}/cameras.json")
    t0 = time.perf_counter()
    trained = train_3d(paths.frames, paths.pose2d, rig, params.model, p, params.augment, paths.ckpt_dir,
                       paths.live_dir, pseudo3d_path=paths.pseudo3d,
                       h36m_root=params.h36m_root if p.target == "gt" or p.gt_subjects else None, runtime=runtime,
                       progress=runtime.progress, mpii_root=params.mpii_root)
    train_seconds = time.perf_counter() - t0
    if not runtime.is_main:
        return None
    scored, pred, fit_mpjpe = score_on_labels(trained, rig, p, for_refiner=bool(paths.pred_out),
                                              progress=runtime.progress)
    crop = read_crop_info(paths.frames)          # how the training crops were cut: predict frames people so
    meta = {"depth_range_mm": p.depth_range_mm, "target": p.target, "crop_size": trained.cache.crop_size,
            **({"crop": crop, "box_mm": crop["box_mm"]} if crop else {}),
            "subjects": [s for s in p.subjects if s not in trained.info.get("subjects_left_out", {})],
            "train_target_mpjpe_mm": round(fit_mpjpe, 2)}
    if p.target == "pseudo3d" and p.gt_subjects:          # semi-supervised: evaluate names it so
        meta["gt_subjects"] = list(p.gt_subjects)
    save_pose_net(trained.fit.model, paths.out, meta=meta)
    if paths.pred_out:
        write_pred3d(paths.pred_out, scored.keys, pred["pose_cam"], pred["conf"],
                     metadata={"model": paths.out, "target": p.target, "flip_test": str(p.flip_test),
                               "root_depth": f"the {p.target} labels' pelvis depth"})
    history, info = trained.fit.history, dict(trained.info)
    timings = {"decode_seconds": info.pop("decode_seconds"), "train_seconds": round(train_seconds, 1),
               "seconds": round(time.perf_counter() - t0, 1)}
    report = {**info, "epochs": p.epochs,
              "final_train_loss": round(history[-1]["train_loss"], 6) if history else None,
              "train_target_mpjpe_mm": round(fit_mpjpe, 2), "train_target_frames": len(scored.keys),
              "predicted_frames": int(np.isfinite(pred["pose_cam"]).all(axis=(1, 2)).sum())}
    log.info("%s: %d frames, root-relative error vs its labels %.1f mm, %.0f s → %s", p.target,
             len(trained.cache), fit_mpjpe, timings["seconds"], paths.out)
    return StageResult([o for o in (paths.out, paths.pred_out) if o], summary(report), report, timings)
