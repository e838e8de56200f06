"""The 3D network: trained on the training subjects' frame shards with 3D pseudo-labels (or ground truth).

The network is the 2D one with ``model.depth_bins`` depth bins (``expand_depth``: it starts with
exactly the 2D network's 2D predictions). Targets follow the paper: per joint ``(u, v)`` in crop
pixels and the pelvis-relative depth over a ``depth_range_mm`` range (``epipose.pose3d.encode_pose``,
with each camera's intrinsics from cameras.json and each frame's crop box). The loss is smooth-L1
on ``(u / size, v / size, d)`` over the joints whose label is valid (see ``pseudo3d_targets``).
Crops are decoded once into memory (``load_frames``); augmentation (scale, rotation, colour,
occlusion, flip — mirrored x, swapped joints, depth unchanged) runs batched on the device
(``epipose.data.transforms.augment_batch``); ``epipose.train.fit`` is the loop.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from epipose import skeleton
from epipose.camera import Rig
from epipose.data import frames as fr
from epipose.data.h36m import TRAIN_SUBJECTS, H36MDataset
from epipose.data.pose_tables import KEYS, PSEUDO3D_VALUES, from_dense, read_pseudo3d, read_table, to_dense, write_table
from epipose.data.transforms import AugmentParams, augment_batch, load_voc_occluders
from epipose.models.pose_net import ModelParams, PoseNet, expand_depth, load_pose_net, normalise
from epipose.params import in_range
from epipose.pose3d import encode_pose, infer_3d, root_relative
from epipose.train import FitResult, TensorSet, TrainParams, fit

log = logging.getLogger(__name__)

TargetSource = Literal["pseudo3d", "gt"]

# The 3D network's predictions on the training frames (input of the refiner): pseudo3d-like,
# x, y, z in each camera's frame in mm (back-projected at the target's root depth), plus conf.
PRED3D_SCHEMA = pa.schema([
    pa.field("subject", pa.string()), pa.field("action", pa.string()), pa.field("camera", pa.string()),
    pa.field("frame", pa.int32()), pa.field("joint", pa.string()),
    pa.field("x", pa.float32()), pa.field("y", pa.float32()), pa.field("z", pa.float32()),
    pa.field("conf", pa.float32()),
])


@dataclass(frozen=True)
class Train3DParams(TrainParams):
    """Section ``train_3d`` of params.yaml: the training loop's keys plus the 3D stage's."""

    target: TargetSource = "pseudo3d"                 # pseudo3d (self-supervised) | gt (fully supervised)
    subjects: list[str] = field(default_factory=lambda: list(TRAIN_SUBJECTS))
    depth_range_mm: float = in_range(100.0, 20000.0, default=2000.0)   # d = (z − z_pelvis) / range
    loss_beta: float = in_range(0.0, 1.0, default=0.02)    # smooth-L1 transition, in normalised units
    min_views: int = in_range(0, 64, default=2)            # pseudo-labels from fewer views are masked
    max_reproj_err: float = in_range(0.0, 1e6, default=0.0)   # px; larger mean reprojection errors masked; 0 = off
    fit_frames: int = in_range(0, 1000000, default=256)     # training frames of the per-epoch fit curve; 0 = none
    flip_test: bool = True                                  # predictions on the training frames (refiner input)
    eval_batch_size: int = in_range(1, 65536, default=128)
    decode_workers: int = in_range(1, 64, default=2)


# --- frames decoded once -----------------------------------------------------------------------------------
@dataclass
class FrameCache:
    """Frame shards decoded into memory: one row per (subject, action, camera, frame), sorted."""

    images: torch.Tensor       # uint8 RGB (N, 3, S, S)
    keys: pd.DataFrame         # subject, action, camera, frame
    boxes: np.ndarray          # (N, 3) x0, y0, size: each crop's square in original pixels
    root: Path

    def __len__(self) -> int:
        return len(self.images)

    @property
    def crop_size(self) -> int:
        return int(self.images.shape[-1])

    def signature(self) -> str:
        h = hashlib.sha256()
        h.update(pd.util.hash_pandas_object(self.keys, index=False).to_numpy().tobytes())
        h.update(np.ascontiguousarray(self.boxes).tobytes())
        h.update(self.images[:, :, ::7, ::7].numpy().tobytes())
        return h.hexdigest()[:16]


def load_frames(frames_root: str | Path, subjects: list[str] | tuple[str, ...], stride: int = 1, workers: int = 2,
                progress: bool = True) -> FrameCache:
    """Decode the crops of ``subjects``' shards under ``frames_root`` once.

    ``stride``: keep the frames whose index (at the video's native rate) is a multiple of it.
    Every subject must have shards (the error names the folder and the subject).
    """
    root = Path(frames_root)
    shards = fr.list_shards(root, subjects)
    have = {p.parent.name for p in shards}
    missing = [s for s in subjects if s not in have]
    if missing:
        raise FileNotFoundError(f"{root}: no frame shards for subject(s) {missing} (run extract_frames; "
                                f"the subjects come from params)")
    keyed = sorted((fr.parse_shard_path(p), p) for p in shards)
    t0 = time.perf_counter()
    parts, keys, boxes = [], [], []

    def load(item):
        (subject, action, camera), path = item
        df = fr.read_shard(path).sort_values("frame", kind="stable")
        df = df[df["frame"] % stride == 0]
        if df["frame"].duplicated().any():
            raise ValueError(f"{path}: duplicate frame indices")
        images = fr.decode_shard_crops(list(df["jpeg"]), path, df["frame"].tolist()) if len(df) else None
        k = pd.DataFrame({"subject": subject, "action": action, "camera": camera,
                          "frame": df["frame"].to_numpy(np.int32)})
        return images, k, df[["x0", "y0", "size"]].to_numpy(np.float64), path

    with ThreadPoolExecutor(max(1, workers)) as pool:
        for images, k, b, path in tqdm(pool.map(load, keyed), total=len(keyed), desc="decode crops", unit="shard",
                                       file=sys.stderr, disable=not progress, mininterval=1.0):
            if images is None:
                continue
            if parts and images.shape[1:] != parts[0].shape[1:]:
                raise ValueError(f"{path}: crops of {images.shape[1]} px, other shards have {parts[0].shape[1]} px")
            parts.append(images)
            keys.append(k)
            boxes.append(b)
    if not parts:
        raise ValueError(f"{root}: no frames of subjects {list(subjects)} with an index divisible by {stride}")
    images = torch.from_numpy(np.concatenate(parts)).permute(0, 3, 1, 2).contiguous()
    cache = FrameCache(images, pd.concat(keys, ignore_index=True), np.concatenate(boxes), root)
    log.info("decoded %d crops (%d px) of %s from %d shards in %.1f s", len(cache), cache.crop_size,
             ",".join(subjects), len(keyed), time.perf_counter() - t0)
    return cache


# --- targets ---------------------------------------------------------------------------------------------
@dataclass
class Targets:
    """3D labels of a cache's frames: camera-frame mm and which joints may be trained on."""

    pose_cam: np.ndarray       # (N, J, 3) float64, NaN where there is no label
    valid: np.ndarray          # (N, J) bool
    source: str

    @property
    def root_depth(self) -> np.ndarray:
        """(N,) the pelvis depth in mm (NaN where the pelvis has no valid label)."""
        return np.where(self.valid[:, skeleton.PELVIS], self.pose_cam[:, skeleton.PELVIS, 2], np.nan)


def row_lookup(keys: pd.DataFrame, table_keys: pd.DataFrame) -> np.ndarray:
    """For each row of ``keys``, its row in ``table_keys`` (both with KEYS columns), -1 if absent."""
    def index(df: pd.DataFrame) -> pd.MultiIndex:
        return pd.MultiIndex.from_arrays([df[k].astype(str) if k != "frame" else df[k].astype(np.int64) for k in KEYS])

    return index(table_keys).get_indexer(index(keys))


def pseudo3d_targets(keys: pd.DataFrame, path: str | Path, min_views: int = 2, max_reproj_err: float = 0.0,
                     section: str = "train_3d", frames_of: str = "the training frames (param train_3d.subjects)"
                     ) -> Targets:
    """Labels from ``data/pseudo3d.parquet`` (x, y, z in each camera's frame, mm).

    A joint is valid when its x, y, z are finite, z > 0, ``n_views >= min_views``, its
    ``reproj_err <= max_reproj_err`` (when > 0), and its frame's pelvis is valid (depths are
    pelvis-relative). Frames without rows are invalid; a subject of ``keys`` without any row is an
    error (``frames_of`` says where the frames come from; ``section`` names the params section).
    """
    table_keys, values = to_dense(read_pseudo3d(path), PSEUDO3D_VALUES)
    labelled = set(table_keys["subject"].unique())
    missing = sorted(set(keys["subject"]) - labelled, key=lambda s: (len(s), s))
    if missing:
        raise ValueError(f"{path}: no pseudo-labels for subject(s) {missing} of {frames_of}; "
                         f"the table has {sorted(labelled)}")
    idx = row_lookup(keys, table_keys)
    n = len(keys)
    pose = np.full((n, skeleton.NUM_JOINTS, 3), np.nan)
    n_views = np.zeros((n, skeleton.NUM_JOINTS))
    reproj = np.full((n, skeleton.NUM_JOINTS), np.nan)
    hit = idx >= 0
    pose[hit] = values[idx[hit], :, 0:3]
    reproj[hit] = values[idx[hit], :, 3]
    n_views[hit] = values[idx[hit], :, 4]
    valid = np.isfinite(pose).all(-1) & (pose[..., 2] > 0) & (n_views >= min_views)
    if max_reproj_err > 0:
        with np.errstate(invalid="ignore"):
            valid &= reproj <= max_reproj_err
    valid &= valid[:, skeleton.PELVIS : skeleton.PELVIS + 1]
    if not valid.any():
        raise ValueError(f"{path}: no valid pseudo-label for the {n} frames "
                         f"(check params {section}.min_views / {section}.max_reproj_err)")
    log.info("%s: labels for %d of %d frames, %.1f%% of the joints valid", path, int(hit.sum()), n,
             100.0 * valid.mean())
    return Targets(pose, valid, "pseudo3d")


def key_groups(keys: pd.DataFrame) -> dict[tuple[str, ...], np.ndarray]:
    """Row indices per (subject, action, camera), sorted by key."""
    g = keys.groupby(["subject", "action", "camera"], sort=True).indices
    return {tuple(k): np.asarray(v) for k, v in g.items()}


def gt_targets(keys: pd.DataFrame, dataset: H36MDataset) -> Targets:
    """Labels from the ground truth (``H36MDataset.poses_mpii_camera``): every joint valid."""
    pose = np.full((len(keys), skeleton.NUM_JOINTS, 3), np.nan)
    for (subject, action, camera), idx in key_groups(keys).items():
        gt = dataset.poses_mpii_camera(subject, action, camera)
        frames = keys["frame"].to_numpy()[idx]
        if frames.max() >= len(gt):
            raise ValueError(f"{dataset.pose_path(subject, action)}: has {len(gt)} frames but shard "
                             f"{subject}/{action}.{camera} has frame {int(frames.max())}")
        pose[idx] = gt[frames]
    return Targets(pose, np.isfinite(pose).all(-1), "gt")


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
                 beta: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Smooth-L1 on (x / size, y / size, z) over valid joints (mean over valid coordinates).

    xy (B, J, 2) input px, z (B, J) relative depth; target (B, J, 3) the same units; valid (B, J).
    Also returns the mean 2D error (input px) and depth error (relative) of the valid joints.
    """
    pred = torch.cat([xy.float() / input_size, z.float()[..., None]], dim=-1)
    tgt = torch.cat([target[..., :2].float() / input_size, target[..., 2:3].float()], dim=-1)
    w = valid.float()[..., None]
    n = w.sum().clamp_min(1.0)
    loss = (F.smooth_l1_loss(pred, tgt, reduction="none", beta=beta) * w).sum() / (3.0 * n)
    with torch.no_grad():
        err_xy = ((xy.float() - target[..., :2].float()).norm(dim=-1) * w[..., 0]).sum() / n
        err_z = ((z.float() - target[..., 2].float()).abs() * w[..., 0]).sum() / n
    return loss, {"err_xy_px": err_xy, "err_z": err_z}


class Loss3D:
    """The train_3d loss_fn for ``epipose.train.fit``: augment on the device, smooth-L1 on (x, y, z)."""

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
        return smooth_l1_3d(out["xy"], out["z"], target, valid, self.input_size, self.beta)


# --- the network ------------------------------------------------------------------------------------------
def init_from_2d(pose2d_path: str | Path, model_params: ModelParams) -> PoseNet:
    """The 3D network initialised from the 2D one (same architecture, ``model.depth_bins`` bins)."""
    net2d, _ = load_pose_net(pose2d_path, num_joints=model_params.num_joints)
    c2 = net2d.config
    for key in ("backbone", "backbone_stages", "input_size", "deconv_layers", "deconv_channels"):
        if getattr(c2, key) != getattr(model_params, key):
            raise ValueError(f"{pose2d_path}: the 2D network has {key} {getattr(c2, key)} but param model.{key} is "
                             f"{getattr(model_params, key)} (rerun pretrain_2d)")
    config = dataclasses.replace(c2, depth_bins=model_params.depth_bins)
    model = PoseNet(config)
    model.load_state_dict(expand_depth(net2d.state_dict(), c2, config.depth_bins))
    return model


def load_pose3d(path: str | Path, num_joints: int | None = None, map_location: str | torch.device = "cpu"
                ) -> tuple[PoseNet, dict]:
    """A trained 3D network (``save_pose_net`` file with ``depth_range_mm`` in its meta) → (model, meta)."""
    model, meta = load_pose_net(path, num_joints=num_joints, map_location=map_location)
    if model.config.depth_bins < 2 or "depth_range_mm" not in meta:
        raise ValueError(f"{path}: not a 3D network (depth bins {model.config.depth_bins}, meta keys {sorted(meta)}); "
                         "train it with the train_3d stage")
    return model, meta


def cameras_of(keys: pd.DataFrame, rig: Rig) -> list:
    """The intrinsic camera of every row of ``keys`` (one shared object per camera name)."""
    cams = {name: rig.intrinsic_camera(name) for name in keys["camera"].unique()}
    return [cams[c] for c in keys["camera"]]


def target_mpjpe(pred_cam: np.ndarray, targets: Targets) -> float:
    """Root-relative mean error (mm) of predictions against the targets over valid joints."""
    err = np.linalg.norm(root_relative(pred_cam) - root_relative(targets.pose_cam), axis=-1)
    ok = targets.valid & np.isfinite(err)
    return float(err[ok].mean()) if ok.any() else float("nan")


@dataclass
class Train3DResult:
    fit: FitResult
    cache: FrameCache
    targets: Targets
    info: dict


def train_3d(frames_root: str | Path, pose2d_path: str | Path, rig: Rig, model_params: ModelParams,
             p: Train3DParams, aug: AugmentParams, ckpt_dir: str | Path, live_dir: str | Path | None = None,
             pseudo3d_path: str | Path | None = None, h36m_root: str | Path | None = None,
             progress: bool = True) -> Train3DResult:
    """Train the 3D network on ``p.subjects``' frames with ``p.target`` labels (pseudo3d or gt)."""
    if p.target == "pseudo3d" and pseudo3d_path is None:
        raise ValueError("param train_3d.target is pseudo3d but no pseudo-label table was given (--pseudo3d)")
    if p.target == "gt" and h36m_root is None:
        raise ValueError("param train_3d.target is gt but no Human3.6M root was given (--h36m)")
    model = init_from_2d(pose2d_path, model_params)
    t0 = time.perf_counter()
    cache = load_frames(frames_root, p.subjects, workers=p.decode_workers, progress=progress)
    if p.target == "pseudo3d":
        targets = pseudo3d_targets(cache.keys, pseudo3d_path, p.min_views, p.max_reproj_err)
    else:
        targets = gt_targets(cache.keys, H36MDataset(h36m_root))
    uvd, valid = encode_targets(cache, targets, rig, p.depth_range_mm)
    info = {"train_frames": len(cache), "labelled_frames": int(valid.any(1).sum()),
            "valid_joint_fraction": round(float(valid.mean()), 4), "target": p.target,
            "decode_seconds": round(time.perf_counter() - t0, 1)}
    dataset = TensorSet(images=cache.images, target=torch.from_numpy(uvd), valid=torch.from_numpy(valid))
    loss_fn = Loss3D(float(cache.crop_size), model.config.input_size, aug, p.loss_beta, p.channels_last)

    # Per-epoch fit curve: root-relative error (mm) against the labels on a fixed subset of training frames.
    labelled = np.flatnonzero(valid[:, skeleton.PELVIS])
    subset = labelled[np.linspace(0, len(labelled) - 1, min(p.fit_frames, len(labelled))).astype(int)] \
        if p.fit_frames > 0 and len(labelled) else np.zeros(0, dtype=int)
    sub_targets = Targets(targets.pose_cam[subset], valid[subset], targets.source)
    all_cams = cameras_of(cache.keys, rig)
    sub_cams = [all_cams[i] for i in subset]

    def evaluate(m: nn.Module) -> dict[str, float]:
        out = infer_3d(m, cache.images[subset], cache.boxes[subset], sub_cams, sub_targets.root_depth,
                       depth_range_mm=p.depth_range_mm, batch_size=p.eval_batch_size, flip_test=False, amp=p.amp,
                       channels_last=p.channels_last)
        return {"fit_mpjpe_mm": target_mpjpe(out["pose_cam"], sub_targets)}

    signature = {"frames": cache.signature(), "targets": hashlib.sha256(uvd.tobytes() + valid.tobytes()).hexdigest()[:16],
                 "augment": aug, "pose2d": _file_hash(pose2d_path)}
    torch.manual_seed(p.seed)
    result = fit(model, dataset, loss_fn, p, ckpt_dir, live_dir, evaluate if len(subset) else None, signature,
                 progress=progress)
    return Train3DResult(result, cache, Targets(targets.pose_cam, valid, targets.source), info)


def _file_hash(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


# --- predictions on the training frames (the refiner's input) ---------------------------------------------
def predict_frames(model: PoseNet, cache: FrameCache, rig: Rig, root_depth_mm: np.ndarray, depth_range_mm: float,
                   batch_size: int = 128, flip_test: bool = True, amp: str = "auto", channels_last: bool = True,
                   progress: bool = True) -> dict[str, np.ndarray]:
    """``infer_3d`` on every cached frame, back-projected with each camera's intrinsics at ``root_depth_mm``."""
    return infer_3d(model, cache.images, cache.boxes, cameras_of(cache.keys, rig), root_depth_mm,
                    depth_range_mm=depth_range_mm, batch_size=batch_size, flip_test=flip_test, amp=amp,
                    channels_last=channels_last, progress=progress)


def write_pred3d(path: str | Path, keys: pd.DataFrame, pose_cam: np.ndarray, conf: np.ndarray,
                 metadata: dict[str, str] | None = None) -> None:
    """Write the predictions table (PRED3D_SCHEMA, rows sorted)."""
    values = np.concatenate([pose_cam, conf[..., None]], axis=-1)
    write_table(from_dense(keys, values, ["x", "y", "z", "conf"]), path, PRED3D_SCHEMA, metadata)


def read_pred3d(path: str | Path) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """The predictions table → (keys, pose_cam (F, J, 3) mm, conf (F, J))."""
    keys, values = to_dense(read_table(path, PRED3D_SCHEMA), ["x", "y", "z", "conf"])
    return keys, values[..., :3].astype(np.float64), values[..., 3].astype(np.float64)
