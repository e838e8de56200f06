"""The pretrain_2d stage's science: the 2D network trained on MPII-layout data — crop cache, training
loss, PCKh evaluation (with ``epipose.models.inference.predict_2d``, the path infer_2d runs too).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import nn

from epipose import skeleton
from epipose.compute import ComputeParams, Runtime, amp_dtype, load_compute
from epipose.data import stills
from epipose.data.stills import CropCache
from epipose.data.transforms import AugmentParams, augment_batch, load_voc_occluders
from epipose.metrics import pckh, skeleton_scale
from epipose.models import heatmap_codec
from epipose.models.inference import predict_2d
from epipose.models.pose_net import ModelParams, PoseNet, PoseNetConfig, load_model_params, normalise, save_pose_net
from epipose.params import in_range, load_section, redefault
from epipose.stage import Folder, StageResult
from epipose.train import TensorSet, TrainParams, fit

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Pretrain2DParams(TrainParams):
    """Section ``pretrain_2d`` of params.yaml: the training loop's keys plus the data's."""

    epochs: int = redefault(TrainParams, "epochs", 24)
    lr: float = redefault(TrainParams, "lr", 0.002)
    schedule: Literal["step", "cosine"] = redefault(TrainParams, "schedule", "cosine")
    lr_factor: float = redefault(TrainParams, "lr_factor", 0.01)
    warmup_steps: int = redefault(TrainParams, "warmup_steps", 50)
    eval_every: int = redefault(TrainParams, "eval_every", 8)
    box_margin: float = in_range(1.0, 3.0, default=1.25)     # crop side = scale · 200 · margin (Simple Baselines)
    context: float = in_range(1.0, 3.0, default=1.4)         # cached crop = context × the crop, for zoom-out/rotation
    cache_scale: float = in_range(0.5, 4.0, default=1.0)     # cached px per input px
    max_train: int = in_range(0, 10**9, default=0)            # 0 = every training annotation
    flip_test: bool = True                                   # average with the mirrored image at evaluation
    eval_batch_size: int = in_range(1, 65536, default=128)
    decode_workers: int = in_range(1, 64, default=2)
    heatmap_weight: float = in_range(0.0, 100.0, default=0.0)  # auxiliary heatmap cross-entropy; 0 = L1 only (the paper)
    heatmap_sigma: float = in_range(0.1, 10.0, default=1.0)    # its Gaussian target's sigma, heatmap cells
    swap_tolerance: float = in_range(0.0, 1.0, default=0.3)    # weight of the left/right-tolerant L1 (l1_loss_2d)
    head: Literal["integral", "heatmap"] = in_range(default="heatmap", hash_omits="integral")  # heatmap: Simple
    #                                   Baselines' head (Gaussian targets of heatmap_sigma cells, MSE; models.heatmap_codec)
    heatmap_swap_tolerance: float = in_range(0.0, 1.0, default=0.0, hash_omits=0.0)  # the heatmap head's
    #                                   left/right-tolerant term (heatmap_codec.loss); 0 = Simple Baselines' MSE


def build_cache(root: str | Path, split: str, input_size: int, p: Pretrain2DParams, limit: int = 0,
                num_joints: int = skeleton.NUM_JOINTS) -> CropCache:
    """``split`` cached for pretraining: ``p.context`` × the person box at ``p.cache_scale`` px per input px."""
    size = int(round(input_size * p.context * p.cache_scale))
    return stills.build_cache(root, split, size, p.box_margin, p.context, limit, num_joints, p.decode_workers)


def l1_loss_2d(xy: torch.Tensor, target: torch.Tensor, visible: torch.Tensor, input_size: int,
               swap_tolerance: float = 0.0) -> torch.Tensor:
    """Mean L1 of soft-argmax x, y over visible joints, in units of the input size (as the paper).

    ``swap_tolerance`` w > 0 mixes in a left/right-tolerant term: per image, the smaller of the
    L1 to the target and to the target with every left/right pair swapped,
    ``loss = w · min(straight, swapped) + (1 − w) · straight``. A network that cannot yet tell
    a person's left from right (a front from a back view) otherwise minimises the L1 by putting
    both joints of each pair on their midpoint, and stays stuck there; the tolerant term pays
    for separating the limbs first, the straight term then for naming them.
    """
    w = visible.float()[..., None]
    per_image = ((xy.float() - target.float()).abs() * w).sum((1, 2))            # (B,)
    norm = (w.sum() * 2).clamp_min(1.0) * input_size
    if swap_tolerance <= 0:
        return per_image.sum() / norm
    perm = list(skeleton.FLIP_PERM)
    ws = visible[:, perm].float()[..., None]
    swapped = ((xy.float() - target[:, perm].float()).abs() * ws).sum((1, 2))
    mixed = swap_tolerance * torch.minimum(per_image, swapped) + (1.0 - swap_tolerance) * per_image
    return mixed.sum() / norm


def heatmap_ce_loss(logits: torch.Tensor, target: torch.Tensor, visible: torch.Tensor, stride: float,
                    sigma: float) -> torch.Tensor:
    """Cross-entropy between each joint's 2D heatmap distribution (the softmax volume integrated
    over depth) and a Gaussian of ``sigma`` cells at the target; mean over visible joints.

    An auxiliary term (Integral regression's heatmap + integral variants; DSNT's regulariser):
    it gives the diffuse heatmaps of a fresh network a strong gradient towards the joint, so the
    L1 on the expectation starts working many steps sooner, and keeps the heatmaps unimodal.
    """
    b, j, d, h, w = logits.shape
    logp = torch.log_softmax(logits.float().reshape(b, j, -1), dim=-1).reshape(b, j, d, h, w)
    logp2d = torch.logsumexp(logp, dim=2) if d > 1 else logp[:, :, 0]
    cells = (target[..., :2].float() - (stride - 1.0) / 2.0) / stride                # (B, J, 2) in cells
    gx = torch.arange(w, device=logits.device, dtype=torch.float32)
    gy = torch.arange(h, device=logits.device, dtype=torch.float32)
    tx = torch.softmax(-((gx - cells[..., :1]) ** 2) / (2 * sigma**2), dim=-1)       # (B, J, W)
    ty = torch.softmax(-((gy - cells[..., 1:2]) ** 2) / (2 * sigma**2), dim=-1)      # (B, J, H)
    ce = -torch.einsum("bjh,bjw,bjhw->bj", ty, tx, logp2d)
    wv = visible.float()
    return (ce * wv).sum() / wv.sum().clamp_min(1.0)


class Loss2D:
    """The pretraining loss_fn for ``epipose.train.fit``, its keys from ``p``: augment on the device; the
    integral head: L1 on x, y (as the paper; ``swap_tolerance``), plus ``heatmap_weight`` ×
    ``heatmap_ce_loss`` when that weight is > 0; the heatmap head: ``heatmap_codec.loss``."""

    def __init__(self, src_box: float, input_size: int, aug: AugmentParams, p: Pretrain2DParams = Pretrain2DParams()):
        self.src_box, self.input_size, self.aug, self.head = src_box, input_size, aug, p.head
        self.swap_tolerance, self.heatmap_swap_tolerance = p.swap_tolerance, p.heatmap_swap_tolerance
        self.channels_last = p.channels_last
        self.heatmap_weight, self.heatmap_sigma = p.heatmap_weight, p.heatmap_sigma
        self.occluders = load_voc_occluders(aug.voc_root, aug.voc_max_objects) if aug.voc_root else None

    def __call__(self, model: nn.Module, batch: dict, gen: torch.Generator):
        images, joints, vis = augment_batch(batch["images"], batch["joints"], batch["visible"], self.src_box,
                                            self.input_size, self.aug, gen, self.occluders)
        x = normalise(images)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        out = model(x, return_logits=self.heatmap_weight > 0 or self.head == "heatmap")
        if self.head == "heatmap":                 # Simple Baselines: MSE to Gaussian targets
            heatmaps = out["logits"][:, :, 0]
            stride = self.input_size / heatmaps.shape[-1]
            target, weight = heatmap_codec.encode(joints, vis, heatmaps.shape[-1], stride, self.heatmap_sigma)
            return heatmap_codec.loss(heatmaps, target, weight, list(skeleton.FLIP_PERM),
                                      self.heatmap_swap_tolerance), {}
        l1 = l1_loss_2d(out["xy"], joints, vis, self.input_size, self.swap_tolerance)
        if self.heatmap_weight <= 0:
            return l1, {}
        stride = self.input_size / out["logits"].shape[-1]
        ce = heatmap_ce_loss(out["logits"], joints, vis, stride, self.heatmap_sigma)
        return l1 + self.heatmap_weight * ce, {"l1": l1.detach(), "heatmap_ce": ce.detach()}


def evaluate_pckh(model: nn.Module, cache: CropCache, batch_size: int = 128, flip_test: bool = True,
                  amp: torch.dtype | None = None, channels_last: bool = True) -> dict:
    """PCKh@0.5 (and @0.1, per joint) on a cached split, in original-image pixels; and the size of
    the skeletons the network draws relative to the true ones (``metrics.skeleton_scale``), which
    triangulate corrects for (``triangulate.skeleton_scale``)."""
    device = next(model.parameters()).device
    preds = []
    model.eval()
    for i in range(0, len(cache), batch_size):
        images = cache.images[i : i + batch_size].to(device)
        xy, _ = predict_2d(model, images, cache.src_box, flip_test, amp, channels_last)
        preds.append(xy.cpu().numpy())
    pred = cache.to_original(np.concatenate(preds).astype(np.float64))
    n = len(cache)
    gt, vis = cache.split.joints[:n], cache.split.visible[:n]
    heads = cache.split.head_sizes()[:n]
    at05 = pckh(pred, gt, vis, heads, 0.5)
    at01 = pckh(pred, gt, vis, heads, 0.1)
    swaps = left_right_swaps(pred, gt, vis, heads)
    return {"pckh@0.5": at05["total"], "pckh@0.1": at01["total"], "per_joint@0.5": at05["per_joint"],
            "per_joint@0.1": at01["per_joint"], "count": at05["count"], "lr_swap_rate": swaps,
            "skeleton_scale": round(skeleton_scale(pred, gt, vis), 4), "flip_test": flip_test}


def left_right_swaps(pred: np.ndarray, gt: np.ndarray, vis: np.ndarray, heads: np.ndarray) -> float:
    """Percentage of visible left/right pairs whose prediction is closer to the swapped truth
    (by more than 0.5 head sizes): the left/right confusions."""
    n_swap = n_all = 0
    for a, b in skeleton.FLIP_PAIRS:
        ok = vis[:, a] & vis[:, b] & np.isfinite(heads)
        if not ok.any():
            continue
        straight = np.linalg.norm(pred[ok, a] - gt[ok, a], axis=-1) + np.linalg.norm(pred[ok, b] - gt[ok, b], axis=-1)
        crossed = np.linalg.norm(pred[ok, a] - gt[ok, b], axis=-1) + np.linalg.norm(pred[ok, b] - gt[ok, a], axis=-1)
        n_swap += int((crossed + 0.5 * heads[ok] < straight).sum())
        n_all += int(ok.sum())
    return 100.0 * n_swap / n_all if n_all else float("nan")


def pretrain_2d(mpii_root: str | Path, model_params: ModelParams, p: Pretrain2DParams, aug: AugmentParams,
                ckpt_dir: str | Path, live_dir: str | Path | None = None, runtime: Runtime | None = None,
                progress: bool = True):
    """Train the 2D network on ``mpii_root``'s train split.

    Returns (FitResult, ``evaluate_pckh``'s report of the returned weights on the valid split —
    None on the processes of a distributed run other than the main one —, info: image counts and
    decoding time).
    """
    config = PoseNetConfig.from_params(model_params, depth_bins=1, head=p.head)
    t0 = time.perf_counter()
    train = build_cache(mpii_root, "train", config.input_size, p, limit=p.max_train, num_joints=config.num_joints)
    valid = build_cache(mpii_root, "valid", config.input_size, p, num_joints=config.num_joints)
    info = {"train_images": len(train), "valid_images": len(valid), "decode_seconds": round(time.perf_counter() - t0, 1)}
    log.info("crop caches ready in %.1f s (%d train, %d valid)", info["decode_seconds"], len(train), len(valid))
    torch.manual_seed(p.seed)
    model = PoseNet(config, pretrained=model_params.pretrained)
    dataset = TensorSet(images=train.images, joints=train.joints, visible=train.visible)
    loss_fn = Loss2D(train.src_box, config.input_size, aug, p)

    def report_of(m: nn.Module) -> dict:
        dev = next(m.parameters()).device
        return evaluate_pckh(m, valid, p.eval_batch_size, p.flip_test, amp_dtype(p.amp, dev), p.channels_last)

    reports: list[dict] = []

    def evaluate(m: nn.Module) -> dict[str, float]:
        reports.append(report_of(m))
        return {"pckh": reports[-1]["pckh@0.5"]}

    signature = {"train": train.signature(), "valid": valid.signature(), "augment": aug}
    result = fit(model, dataset, loss_fn, p, ckpt_dir, live_dir, evaluate, signature, runtime=runtime, progress=progress)
    report = None
    if result.runtime is None or result.runtime.is_main:
        # fit's last evaluation scored the weights it returns; a run resumed complete evaluated nothing
        report = reports[-1] if result.epochs_run > 0 else report_of(result.model)
    return result, report, info


def summary(report: dict) -> dict[str, float]:
    """metrics/pretrain_2d.json: PCKh on MPII's validation split."""
    return {"mpii.pckh@0.5": round(report["pckh@0.5"], 3), "mpii.pckh@0.1": round(report["pckh@0.1"], 3),
            "mpii.skeleton_scale": report["skeleton_scale"]}


# --- the stage ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Pretrain2DPaths:
    mpii: str                 # an MPII-layout root (images/, annot/train.json, annot/valid.json)
    out: str                  # the trained network (models/pose2d.pt)
    live_dir: str             # dvclive folder for the training curves
    ckpt_dir: str             # per-epoch checkpoints (resume)

    def outputs(self) -> list[str]:
        return [self.out, Folder(self.live_dir), Folder(self.ckpt_dir)]


@dataclass(frozen=True)
class Pretrain2DConfig:
    compute: ComputeParams
    model: ModelParams        # without model.depth_bins: the 2D network has none
    pretrain_2d: Pretrain2DParams
    augment: AugmentParams


def load_params(path: str | Path = "params.yaml") -> Pretrain2DConfig:
    return Pretrain2DConfig(load_compute(path), load_model_params(path), load_section(Pretrain2DParams, "pretrain_2d", path),
                            load_section(AugmentParams, "augment", path))


def run(paths: Pretrain2DPaths, params: Pretrain2DConfig, runtime: Runtime) -> StageResult | None:
    """Train the 2D network on MPII's train split, score it on its valid split, write it."""
    t0 = time.perf_counter()
    p = params.pretrain_2d
    result, report, info = pretrain_2d(paths.mpii, params.model, p, params.augment, paths.ckpt_dir, paths.live_dir,
                                       runtime=runtime, progress=runtime.progress)
    if report is None:                      # not the main process
        return None
    save_pose_net(result.model, paths.out, meta={"pckh@0.5": report["pckh@0.5"], "mpii_root": str(paths.mpii),
                                                  "skeleton_scale": report["skeleton_scale"],
                                                  "skeleton_scale_flip_test": p.flip_test})
    seconds = time.perf_counter() - t0
    log.info("PCKh@0.5 %.2f%% on %d valid joints, %.0f s → %s", report["pckh@0.5"], report["count"], seconds, paths.out)
    timings = {"seconds": round(seconds, 1), "decode_seconds": info.pop("decode_seconds")}
    return StageResult([paths.out], summary(report), {**report, **info, "epochs": p.epochs}, timings)
