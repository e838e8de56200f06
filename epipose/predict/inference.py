"""The 3D network (and refiner) of ``epipose predict`` loaded, and every frame of every input through it:
cropped, in batches, by ``epipose.models.inference.infer_3d`` (the one inference path), then refined
and, for videos, smoothed over time."""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from epipose import skeleton
from epipose.camera import Camera
from epipose.compute import select_device
from epipose.data.crop import crop_image
from epipose.metrics import root_relative
from epipose.models.inference import infer_3d
from epipose.models.pose_net import load_pose3d
from epipose.models.refiner import load_refiner, refine_poses
from epipose.predict.box_sources import BoxSpec
from epipose.predict.boxes import check_box, default_camera, root_depth_from_box
from epipose.predict.inputs import Source, source_frames
from epipose.predict_options import CropConvention, PredictError, PredictOptions, crop_convention

log = logging.getLogger(__package__)     # "epipose.predict": every module of the command logs under its name


# --- the models ----------------------------------------------------------------------------------------
@dataclass
class Models:
    pose3d: torch.nn.Module
    meta: dict
    refiner: torch.nn.Module | None
    device: torch.device
    refiner_flip_test: bool | None = None      # the refiner's training input was flip-averaged (None: unknown)

    @property
    def crop_size(self) -> int:
        """The training crops' size (the model's meta), else the network input."""
        return int(self.meta.get("crop_size") or self.pose3d.config.input_size)

    @property
    def convention(self) -> CropConvention:
        """How the network's training crops frame a person (its meta ``crop``; ``crop_convention``)."""
        return crop_convention(self.meta)[0]

    @property
    def box_mm(self) -> float:
        return self.convention.box_mm


def pick_device(device: str = "auto") -> torch.device:
    """``--device``: auto | cpu | cuda | cuda:N (``epipose.compute.select_device``)."""
    try:
        return select_device(device)
    except ValueError as exc:
        raise PredictError(f"--{exc}") from None


def load_models(model_path: str | Path, refiner_path: str | Path | None = None, device: str = "auto") -> Models:
    """The 3D network (``load_pose3d``) and optionally its refiner, checked against each other."""
    dev = pick_device(device)
    model, meta = load_pose3d(model_path, map_location="cpu")
    joints = model.config.num_joints
    if joints != skeleton.NUM_JOINTS:
        raise PredictError(f"{model_path}: the network predicts {joints} joints; predict writes MPII's "
                           f"{skeleton.NUM_JOINTS}")
    refiner = None
    if refiner_path is not None:
        refiner, refiner_meta = load_refiner(refiner_path, map_location="cpu")
        if refiner.num_joints != joints:
            raise PredictError(f"{refiner_path}: the refiner is for {refiner.num_joints} joints but the 3D network "
                               f"{model_path} predicts {joints}: not a matching pair")
        refiner = refiner.to(dev)
    model = model.to(dev, memory_format=torch.channels_last)     # as the evaluate stage runs it
    flip = refiner_meta.get("input_flip_test") if refiner is not None else None
    return Models(model, meta, refiner, dev, flip)


# --- prediction ----------------------------------------------------------------------------------------
@dataclass
class SourceResult:
    """One input's predictions: per frame, ``uv`` (F, J, 2) input px, ``pose`` (F, J, 3) root-relative
    mm (refined/smoothed as asked), ``conf`` (F, J), ``boxes`` (F, 3) crop squares, ``root_depth`` (F,)."""

    source: Source
    frames: list[int] = field(default_factory=list)
    uv: list[np.ndarray] = field(default_factory=list)
    pose: list[np.ndarray] = field(default_factory=list)
    conf: list[np.ndarray] = field(default_factory=list)
    boxes: list[np.ndarray] = field(default_factory=list)
    root_depth: list[np.ndarray] = field(default_factory=list)
    root: list[np.ndarray] = field(default_factory=list)      # (F, 3) the pelvis in the camera frame, mm
    low_confidence: bool = False

    def stack(self) -> None:
        for name in ("uv", "pose", "conf", "boxes", "root_depth", "root"):
            parts = getattr(self, name)
            setattr(self, name, np.concatenate(parts) if isinstance(parts, list) else parts)


def _infer_batch(models: Models, batch: list[tuple[SourceResult, int, np.ndarray, tuple, Camera]],
                 boxes_crop: np.ndarray, opts: PredictOptions) -> None:
    """The 3D network on a batch of (result, frame, image, crop square, camera): crop, ``infer_3d``, store."""
    crops = np.stack([crop_image(im, *box, models.crop_size) for _, _, im, box, _ in batch])
    cams = [cam for *_, cam in batch]
    if opts.root_depth_mm is not None:
        depth = np.full(len(batch), opts.root_depth_mm)
    else:
        depth = np.array([root_depth_from_box(cam.K[0, 0], b[2], models.box_mm) for cam, b in zip(cams, boxes_crop)])
    out = infer_3d(models.pose3d, crops, boxes_crop, cams, depth, depth_range_mm=models.meta["depth_range_mm"],
                   batch_size=opts.batch_size, flip_test=opts.flip_test, amp=opts.amp,
                   channels_last=True)
    rr = root_relative(out["pose_cam"])
    for k, (res, frame, *_rest) in enumerate(batch):
        res.frames.append(frame)
        res.uv.append(out["uv"][k : k + 1])
        res.pose.append(rr[k : k + 1])
        res.conf.append(out["conf"][k : k + 1])
        res.boxes.append(boxes_crop[k : k + 1])
        res.root_depth.append(depth[k : k + 1])
        res.root.append(out["pose_cam"][k : k + 1, skeleton.PELVIS])


def predict_sources(sources: list[Source], models: Models, boxes: BoxSpec, opts: PredictOptions) -> list[SourceResult]:
    """Every frame of every source through the network in batches (videos streamed: memory bounded),
    then the refiner and, for videos, the temporal smoothing."""
    results = [SourceResult(s) for s in sources]
    total = sum(s.n_frames for s in sources)
    bar = tqdm(total=total or None, desc="predict", unit="frame", file=sys.stderr, disable=not opts.progress,
               mininterval=1.0)
    pending: list = []

    def flush():
        if pending:
            _infer_batch(models, pending, np.array([box for *_, box, _ in pending], dtype=np.float64), opts)
            bar.update(len(pending))
            pending.clear()

    for res in results:
        src = res.source
        cam = default_camera(src.width, src.height, opts.focal, name=src.subject)
        for frame, image in source_frames(src):
            if image.shape[:2] != (src.height, src.width):
                raise PredictError(f"{src.path} frame {frame}: size {image.shape[1]}x{image.shape[0]} differs from "
                                   f"the input's {src.width}x{src.height}")
            box = boxes.crop_box(src.path, frame, image)
            check_box(box, src.width, src.height, f"{src.path} frame {frame}")
            pending.append((res, frame, image, box, cam))
            if len(pending) >= opts.batch_size:
                flush()
        if src.kind == "video":      # images of several inputs share batches; a video's frames stream
            flush()
    flush()
    for res in results:
        if not res.frames:
            raise PredictError(f"{res.source.path}: no frame could be read")
        if res.source.kind == "video" and len(res.frames) < res.source.n_frames:
            log.warning("%s: only %d of the %d frames its header announces could be read (a truncated or damaged "
                        "file?): predictions for frames 0-%d", res.source.path, len(res.frames), res.source.n_frames,
                        res.frames[-1])
    bar.close()
    for res in results:
        res.stack()
        if models.refiner is not None:
            res.pose = refine_poses(models.refiner, res.pose, amp="none")
        if res.source.kind == "video" and opts.smooth > 0 and len(res.frames) > 1:
            from scipy.ndimage import gaussian_filter1d

            res.uv = gaussian_filter1d(res.uv, opts.smooth, axis=0, mode="nearest")
            res.pose = gaussian_filter1d(res.pose, opts.smooth, axis=0, mode="nearest")
    return results


def flag_low_confidence(results: list[SourceResult], threshold: float) -> None:
    """Flag (and warn about) each input whose mean joint confidence is below ``threshold``."""
    for res in results:
        mean = float(np.mean(res.conf))
        res.low_confidence = mean < threshold
        if res.low_confidence:
            log.warning("%s: mean joint confidence %.2f < %.2f (--warn-conf): the input looks unlike the training "
                        "data (the default models know only the synthetic renders); its poses are unreliable",
                        res.source.path, mean, threshold)
