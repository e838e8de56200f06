"""``epipose predict``: the trained 3D network (and refiner) on a user's images, folders or videos.

One RGB image is enough. Each image (or video frame) is cut into the square person crop the
network was trained on, run through ``epipose.models.inference.infer_3d`` — the one inference path,
also used by train_3d and the evaluate stage — optionally refined (``epipose.models.refiner.refine_poses``)
and, for videos, optionally smoothed over time.

**The person crop.** The training crops (frame shards) are the projection of a 2000 mm square
around the pelvis; in them the person's extent (head top to feet) spans a median
``CROP.person_fraction`` = 82% of the crop side, its centre ``CROP.centre_shift`` = 4% of the side
below the crop centre (measured on the default synthetic data's ground truth). A user's person box
``x0,y0,x1,y1`` (tight around the person) becomes the square of side ``max(w, h) / 0.82``, centred
4% of that side above the box centre. Boxes may instead be given as ``x0,y0,size`` — the crop
square itself, the frame shards' convention — used as is. Without any box the whole frame is the
person crop (the square of side ``max(W, H)`` centred on the frame, black padding): the person
should then fill ~80% of the frame's height, as in the training crops. A local torchvision
Faster R-CNN file (``--detector``) can supply the boxes; nothing is downloaded.

**The camera and the scale.** Without calibration the camera is a pinhole with focal
``--focal`` px, else ``DEFAULT_FOCAL_FACTOR`` = 1.15 × the larger image side (Human3.6M's field of
view), principal point at the image centre, no lens distortion. The root (pelvis) depth is
``--root-depth`` mm, else from the box: the crop is the projection of a ``box_mm`` (2000 mm)
square at the pelvis, so ``Z_root = focal × box_mm / crop side px``. The root-relative x, y, z (mm,
camera frame: x right, y down, z forward) then follow from the crop size alone — the focal
cancels out up to perspective effects of the depth offsets — so the default focal is harmless.

Outputs (``--out DIR``): ``predictions.parquet`` (``PREDICTION_SCHEMA``: subject = the input's
file stem, action and camera "", frame, joint, u, v in input pixels, root-relative x, y, z mm,
conf), one PNG per image (the input with the 2D skeleton, beside the 3D skeleton) and one MP4
per video (the same per frame).
"""

from __future__ import annotations

import json
import logging
import math
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from epipose import skeleton
from epipose.camera import Camera
from epipose.compute import select_device
from epipose.data.crop import crop_image
from epipose.data.pose_tables import KEYS, PREDICTION_SCHEMA, PREDICTION_VALUES, from_dense, write_table
from epipose.io import atomic_path, check_writable
from epipose.metrics import root_relative
from epipose.models.inference import infer_3d
from epipose.models.pose_net import load_pose3d
from epipose.models.refiner import load_refiner, refine_poses
from epipose.predict_options import (CROP, DEFAULT_FOCAL_FACTOR, EXPORTS, IMAGE_EXTS, VIDEO_EXTS,  # noqa: F401
                                     WARN_CONF, CropConvention, PredictError, PredictOptions)
from epipose.viz import close_figure, figure_rgb, half_extent, pose_figure, save_figure

log = logging.getLogger(__name__)

FIGURE_PX = (800, 400)          # PNG / MP4 frame size: image panel beside the 3D view
DETECTOR_SCORE = 0.5            # the detector's least score for a person box
TABLE_NAME = "predictions.parquet"


# --- crops, boxes and the camera ----------------------------------------------------------------------
def person_crop_box(bbox: tuple[float, float, float, float], fraction: float = CROP.person_fraction
                    ) -> tuple[float, float, float]:
    """A person box (x0, y0, x1, y1) → the training crops' square (x0, y0, size): side max(w, h) /
    ``fraction``, centred ``CROP.centre_shift`` × the side above the box centre (``CropConvention``)."""
    x0, y0, x1, y1 = (float(v) for v in bbox)
    size = max(x1 - x0, y1 - y0) / fraction
    cx, cy = (x0 + x1) / 2.0, (y0 + y1) / 2.0 - CROP.centre_shift * size
    return cx - size / 2.0, cy - size / 2.0, size


def whole_frame_box(width: int, height: int) -> tuple[float, float, float]:
    """The whole frame as the person crop: the square of side max(W, H) centred on it."""
    size = float(max(width, height))
    return (width - size) / 2.0, (height - size) / 2.0, size


def default_camera(width: int, height: int, focal: float | None = None, name: str = "") -> Camera:
    """The documented pinhole for uncalibrated images: focal (px) or 1.15 × max side, centred, no distortion."""
    f = float(focal) if focal is not None else DEFAULT_FOCAL_FACTOR * max(width, height)
    K = np.array([[f, 0.0, (width - 1) / 2.0], [0.0, f, (height - 1) / 2.0], [0.0, 0.0, 1.0]])
    return Camera(K, name=name)


def root_depth_from_box(focal: float, size: np.ndarray, box_mm: float) -> np.ndarray:
    """Z_root (mm) = focal × box_mm / crop side (px): the crop is the projection of a box_mm square."""
    return float(focal) * float(box_mm) / np.asarray(size, dtype=np.float64)


def check_box(box: tuple[float, float, float], width: int, height: int, where: str) -> None:
    """The crop square must be finite, non-empty and overlap the image."""
    x0, y0, size = box
    if not all(math.isfinite(v) for v in box) or size <= 1.0:
        raise PredictError(f"{where}: bad person box (crop square x0={x0:g}, y0={y0:g}, size={size:g})")
    if x0 >= width or y0 >= height or x0 + size <= 0 or y0 + size <= 0:
        raise PredictError(f"{where}: the person box (crop square x0={x0:.1f}, y0={y0:.1f}, size={size:.1f}) "
                           f"lies outside the {width}x{height} image")


# --- box sources ---------------------------------------------------------------------------------------
def parse_bbox(text: str) -> tuple[float, float, float, float]:
    """``--bbox "x0,y0,x1,y1"`` → floats (x1 > x0, y1 > y0)."""
    try:
        vals = tuple(float(v) for v in text.split(","))
    except ValueError:
        vals = ()
    if len(vals) != 4 or not all(math.isfinite(v) for v in vals):
        raise PredictError(f"--bbox {text!r}: expected four numbers x0,y0,x1,y1")
    if vals[2] <= vals[0] or vals[3] <= vals[1]:
        raise PredictError(f"--bbox {text!r}: needs x1 > x0 and y1 > y0")
    return vals


def read_boxes(path: str | Path) -> pd.DataFrame:
    """A box table (CSV, or JSON: a list of records) → DataFrame with ``source``, ``frame`` and either
    ``x0, y0, x1, y1`` (person boxes) or ``x0, y0, size`` (crop squares, the frame shards' convention).

    ``source`` (optional): the input's file name or stem (rows without it apply to every input);
    ``frame`` (optional, default 0): the frame index in a video, 0 for an image.
    """
    path = Path(path)
    if not path.exists():
        raise PredictError(f"--boxes: file not found: {path}")
    try:
        if path.suffix.lower() == ".json":
            records = json.loads(path.read_text())
            if isinstance(records, dict):
                records = [records]
            df = pd.DataFrame.from_records(records)
        else:
            df = pd.read_csv(path)
    except (ValueError, TypeError, OSError, pd.errors.ParserError) as exc:
        raise PredictError(f"--boxes {path}: not a readable box table ({type(exc).__name__}: {exc})") from None
    if {"x0", "y0", "x1", "y1"} <= set(df.columns):
        cols = ["x0", "y0", "x1", "y1"]
    elif {"x0", "y0", "size"} <= set(df.columns):
        cols = ["x0", "y0", "size"]
    else:
        raise PredictError(f"--boxes {path}: needs columns x0,y0,x1,y1 (person boxes) or x0,y0,size (crop squares), "
                           f"has {list(df.columns)}")
    if "frame" not in df.columns:
        df["frame"] = 0
    if "source" not in df.columns:
        df["source"] = ""
    try:
        df[cols] = df[cols].astype(np.float64)
        df["frame"] = df["frame"].astype(np.int64)
    except (ValueError, TypeError) as exc:
        raise PredictError(f"--boxes {path}: non-numeric box or frame values ({exc})") from None
    if not np.isfinite(df[cols].to_numpy()).all():
        raise PredictError(f"--boxes {path}: missing or non-finite box values")
    df["source"] = df["source"].fillna("").astype(str)
    if df.duplicated(["source", "frame"]).any():
        dup = df[df.duplicated(["source", "frame"])].iloc[0]
        raise PredictError(f"--boxes {path}: two boxes for source {dup.source!r} frame {dup.frame}")
    return df[["source", "frame", *cols]]


def interpolate_box(rows: pd.DataFrame, frame: int) -> np.ndarray:
    """One input's box rows (``frame`` + box columns) → its box at ``frame``: the row's own, else linear
    between the nearest boxed frames before and after it, else the nearest one (before the first /
    after the last). Sparse boxes (every 10th frame, a few keyframes) are enough for a video."""
    rows = rows.sort_values("frame")
    cols = [c for c in rows.columns if c not in ("source", "frame")]
    frames = rows["frame"].to_numpy(np.float64)
    return np.array([np.interp(frame, frames, rows[c].to_numpy(np.float64)) for c in cols])


@dataclass
class BoxSpec:
    """Where each frame's person box comes from: one ``bbox`` for all, a ``table``, a detector, or none."""

    bbox: tuple[float, float, float, float] | None = None
    table: pd.DataFrame | None = None
    table_path: str = ""
    detector: "PersonDetector | None" = None
    fraction: float = CROP.person_fraction

    def crop_box(self, source: Path, frame: int, image: np.ndarray) -> tuple[float, float, float]:
        """The crop square (x0, y0, size) of ``source``'s frame ``frame`` (``image``: RGB)."""
        h, w = image.shape[:2]
        if self.bbox is not None:
            return person_crop_box(self.bbox, self.fraction)
        if self.table is not None:
            t = self.table
            rows = t[t["source"].isin([source.name, source.stem])]
            if rows.empty:
                rows = t[t["source"] == ""]
            if rows.empty:
                raise PredictError(f"--boxes {self.table_path}: no box for {source.name}")
            box = interpolate_box(rows, frame)
            if "size" in rows.columns:
                return tuple(box)
            return person_crop_box(tuple(box), self.fraction)
        if self.detector is not None:
            box = self.detector([image])[0]
            if box is not None:
                return person_crop_box(box, self.fraction)
            log.warning("%s frame %d: no person detected; the whole frame is the crop", source, frame)
        return whole_frame_box(w, h)


class PersonDetector:
    """A local torchvision Faster R-CNN (COCO weights file: ResNet-50 FPN or MobileNetV3 320 FPN) →
    the highest-scoring person box per image (None below ``DETECTOR_SCORE``). Nothing is downloaded."""

    def __init__(self, path: str | Path, device: torch.device):
        from torchvision.models import detection

        path = Path(path)
        if not path.exists():
            raise PredictError(f"--detector: weights file not found: {path}")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise PredictError(f"--detector {path}: not a readable weights file ({type(exc).__name__}: {exc})") from None
        state = state.get("model", state) if isinstance(state, dict) else state
        if not isinstance(state, dict):
            raise PredictError(f"--detector {path}: expected a state dict")
        if any(k.startswith("backbone.body.layer1") for k in state):
            build = detection.fasterrcnn_resnet50_fpn
        elif any(k.startswith("backbone.body.0") or k.startswith("backbone.body.features") for k in state):
            build = detection.fasterrcnn_mobilenet_v3_large_320_fpn
        else:
            raise PredictError(f"--detector {path}: not a torchvision Faster R-CNN (ResNet-50 FPN or "
                               "MobileNetV3-Large 320 FPN) state dict")
        model = build(weights=None, weights_backbone=None, num_classes=91)
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            raise PredictError(f"--detector {path}: weights do not match {build.__name__} ({exc})") from None
        self.model, self.device = model.eval().to(device), device

    @torch.inference_mode()
    def __call__(self, images: list[np.ndarray]) -> list[tuple[float, float, float, float] | None]:
        batch = [torch.from_numpy(np.ascontiguousarray(im)).permute(2, 0, 1).float().div(255).to(self.device)
                 for im in images]
        out = []
        for det in self.model(batch):
            keep = (det["labels"] == 1) & (det["scores"] >= DETECTOR_SCORE)    # COCO "person"
            if not keep.any():
                out.append(None)
                continue
            best = int(torch.argmax(torch.where(keep, det["scores"], -1.0)))
            out.append(tuple(float(v) for v in det["boxes"][best].cpu()))
        return out


# --- inputs --------------------------------------------------------------------------------------------
@dataclass
class Source:
    """One input: an image file or a video."""

    path: Path
    kind: str                   # "image" | "video"
    width: int = 0
    height: int = 0
    fps: float = 0.0
    n_frames: int = 0           # as the container says (videos: may be off; the frames read count)

    @property
    def subject(self) -> str:
        return self.path.stem


def read_image(path: Path) -> np.ndarray:
    """RGB uint8 image; a clear error for an unreadable file."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise PredictError(f"{path}: not a readable image")
    return image[..., ::-1].copy()


def open_video(path: Path) -> cv2.VideoCapture:
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise PredictError(f"{path}: not a readable video")
    return cap


def video_frames(path: Path) -> Iterator[tuple[int, np.ndarray]]:
    """(index, RGB frame) of a video, streamed."""
    cap = open_video(path)
    try:
        i = 0
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            yield i, frame[..., ::-1].copy()
            i += 1
    finally:
        cap.release()


def collect_sources(inputs: list[str | Path]) -> list[Source]:
    """Image files, videos, and folders (their images and videos, sorted by name) → sources, checked."""
    sources = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTS + VIDEO_EXTS)
            if not found:
                raise PredictError(f"{path}: folder holds no image ({', '.join(IMAGE_EXTS)}) or video "
                                   f"({', '.join(VIDEO_EXTS)})")
            sources += [_source(p) for p in found]
        elif path.exists():
            sources.append(_source(path))
        else:
            raise PredictError(f"input not found: {path}")
    stems = [s.subject for s in sources]
    dup = sorted({s for s in stems if stems.count(s) > 1})
    if dup:
        raise PredictError(f"inputs share the file stem(s) {dup}: the table names each input by its stem")
    return sources


def _source(path: Path) -> Source:
    ext = path.suffix.lower()
    if ext in VIDEO_EXTS:
        cap = open_video(path)
        w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        fps, n = float(cap.get(cv2.CAP_PROP_FPS) or 0.0), int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        cap.release()
        if w <= 0 or h <= 0:
            raise PredictError(f"{path}: not a readable video (no frame size)")
        return _sized(Source(path, "video", w, h, fps if fps > 0 else 25.0, n))
    if ext in IMAGE_EXTS:
        # Header-only size check is not available in OpenCV: read it (images are read again when drawn).
        h, w = read_image(path).shape[:2]
        return _sized(Source(path, "image", w, h, 0.0, 1))
    raise PredictError(f"{path}: unknown input type {ext!r} (images: {', '.join(IMAGE_EXTS)}; "
                       f"videos: {', '.join(VIDEO_EXTS)})")


MIN_SIDE_PX = 16                # smaller inputs hold no person to see


def _sized(source: Source) -> Source:
    if min(source.width, source.height) < MIN_SIDE_PX:
        raise PredictError(f"{source.path}: {source.width}x{source.height} {source.kind} is too small "
                           f"(at least {MIN_SIDE_PX} px a side)")
    return source


def check_out_dir(out_dir: str | Path) -> Path:
    """``--out``: a folder that exists or can be made, and is writable — checked before any work."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise PredictError(f"--out {out_dir}: is a file, not a folder")
    try:
        check_writable(out_dir / TABLE_NAME)
    except OSError as exc:
        raise PredictError(f"--out {out_dir}: {exc}") from None
    return out_dir


def source_frames(source: Source) -> Iterator[tuple[int, np.ndarray]]:
    if source.kind == "image":
        yield 0, read_image(source.path)
    else:
        yield from video_frames(source.path)


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
    def box_mm(self) -> float:
        return float(self.meta.get("box_mm") or CROP.box_mm)


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


def prediction_table(results: list[SourceResult]) -> pd.DataFrame:
    """PREDICTION_SCHEMA rows of all results (subject = the input's stem; action, camera "")."""
    keys = pd.concat([pd.DataFrame({"subject": r.source.subject, "action": "", "camera": "",
                                    "frame": np.asarray(r.frames, dtype=np.int32)}) for r in results],
                     ignore_index=True)
    values = np.concatenate([np.concatenate([r.uv, r.pose, r.conf[..., None]], axis=-1) for r in results])
    return from_dense(keys[KEYS], values, PREDICTION_VALUES)


def flag_low_confidence(results: list[SourceResult], threshold: float) -> None:
    """Flag (and warn about) each input whose mean joint confidence is below ``threshold``."""
    for res in results:
        mean = float(np.mean(res.conf))
        res.low_confidence = mean < threshold
        if res.low_confidence:
            log.warning("%s: mean joint confidence %.2f < %.2f (--warn-conf): the input looks unlike the training "
                        "data (the default models know only the synthetic renders); its poses are unreliable",
                        res.source.path, mean, threshold)


def write_exports(results: list[SourceResult], table: pd.DataFrame, out_dir: Path, formats) -> list[Path]:
    """predictions.csv (the table's rows plus the frame's root position root_x/y/z, camera frame mm) and
    predictions.json (per input and frame: the root and each joint's uv, xyz, conf)."""
    files = []
    if "csv" in formats:
        roots = pd.concat([pd.DataFrame({"subject": r.source.subject, "frame": np.asarray(r.frames, dtype=np.int32),
                                         "root_x": r.root[:, 0], "root_y": r.root[:, 1], "root_z": r.root[:, 2]})
                           for r in results], ignore_index=True)
        files.append(out_dir / "predictions.csv")
        with atomic_path(files[-1]) as tmp:
            table.merge(roots, on=["subject", "frame"], how="left").to_csv(tmp, index=False, float_format="%.3f")
    if "json" in formats:
        doc = [{"input": r.source.path.name, "frames": [
            {"frame": int(f), "root_mm": np.round(r.root[i], 3).tolist(),
             "joints": {n: {"uv": np.round(r.uv[i, j], 3).tolist(), "xyz_mm": np.round(r.pose[i, j], 3).tolist(),
                            "conf": round(float(r.conf[i, j]), 4)} for j, n in enumerate(skeleton.MPII_NAMES)}}
            for i, f in enumerate(r.frames)]} for r in results]
        files.append(out_dir / "predictions.json")
        with atomic_path(files[-1]) as tmp:
            tmp.write_text(json.dumps(doc, indent=1) + "\n")
    return files


# --- figures ---------------------------------------------------------------------------------------------
def frame_figure(image: np.ndarray, uv: np.ndarray, pose: np.ndarray, conf: np.ndarray, title: str,
                 lim_mm: float | None = None, kpt_thr: float = 0.0, low_confidence: bool = False):
    """The input with the 2D skeleton beside the 3D one (left limbs blue, right red); joints below
    ``kpt_thr`` are not drawn; a flagged input says so in the title."""
    hide = conf < kpt_thr
    uv, pose = np.where(hide[:, None], np.nan, uv), np.where(hide[:, None], np.nan, pose)
    if low_confidence:
        title = f"{title} — LOW CONFIDENCE: unlike the training data? unreliable"
    return pose_figure(image, [(uv, "sides")], [(pose, "sides", "3D (root-relative, camera frame)")],
                       image_title=f"2D (mean confidence {float(np.mean(conf)):.2f})", title=title,
                       size_px=FIGURE_PX, dpi=100, lim_mm=lim_mm)


def write_image_figure(res: SourceResult, path: Path, kpt_thr: float = 0.0) -> None:
    fig = frame_figure(read_image(res.source.path), res.uv[0], res.pose[0], res.conf[0], res.source.path.name,
                       kpt_thr=kpt_thr, low_confidence=res.low_confidence)
    with atomic_path(path) as tmp:
        save_figure(fig, tmp)


def write_video_figure(res: SourceResult, path: Path, progress: bool = True, kpt_thr: float = 0.0) -> None:
    """An H.264 MP4 (yuv420p, faststart: browsers and GitHub play it; ffmpeg from imageio-ffmpeg) at the
    input's rate: each frame with its 2D skeleton beside the 3D view."""
    import imageio_ffmpeg

    lim = half_extent(list(res.pose))
    index = {f: i for i, f in enumerate(res.frames)}
    with atomic_path(path) as tmp:
        writer = imageio_ffmpeg.write_frames(str(tmp), FIGURE_PX, fps=res.source.fps, codec="libx264",
                                             pix_fmt_out="yuv420p", output_params=["-movflags", "+faststart"],
                                             ffmpeg_log_level="error")
        writer.send(None)                       # start ffmpeg
        try:
            for frame, image in tqdm(video_frames(res.source.path), total=len(res.frames), desc=f"draw {path.name}",
                                     unit="frame", file=sys.stderr, disable=not progress, mininterval=1.0):
                i = index.get(frame)
                if i is None:
                    continue
                fig = frame_figure(image, res.uv[i], res.pose[i], res.conf[i], f"{res.source.path.name} frame {frame}",
                                   lim, kpt_thr, res.low_confidence)
                writer.send(np.ascontiguousarray(figure_rgb(fig)))
                close_figure(fig)
        finally:
            writer.close()


# --- the command ---------------------------------------------------------------------------------------
@dataclass
class PredictOutput:
    results: list[SourceResult]
    table: pd.DataFrame
    files: list[Path]


def predict(inputs: list[str | Path], model_path: str | Path, out_dir: str | Path, refiner_path: str | Path | None = None,
            boxes: BoxSpec | None = None, opts: PredictOptions | None = None, device: str = "auto") -> PredictOutput:
    """Predict every input's poses and write ``out_dir``/predictions.parquet (+ figures)."""
    opts = opts or PredictOptions()
    boxes = boxes or BoxSpec()
    out_dir = check_out_dir(out_dir)
    sources = collect_sources(inputs)
    models = load_models(model_path, refiner_path, device)
    if models.refiner_flip_test not in (None, opts.flip_test):
        log.warning("the refiner %s was trained on %s predictions, these are %s: it corrects what it has not seen",
                    refiner_path, *("flip-averaged" if f else "single-view" for f in (models.refiner_flip_test, opts.flip_test)))
    results = predict_sources(sources, models, boxes, opts)
    flag_low_confidence(results, opts.warn_conf)
    table = prediction_table(results)
    box_note = ("--bbox" if boxes.bbox is not None else f"--boxes {boxes.table_path}" if boxes.table is not None
                else "detector" if boxes.detector is not None else "whole frame")
    metadata = {
        "model": str(model_path), "refiner": str(refiner_path or ""), "boxes": box_note,
        "person_fraction": f"{boxes.fraction:g}",
        "focal_px": f"{opts.focal:g}" if opts.focal else f"{DEFAULT_FOCAL_FACTOR:g} x the larger image side",
        "root_depth": f"{opts.root_depth_mm:g} mm" if opts.root_depth_mm else
                      f"focal x {models.box_mm:g} mm / crop side px",
        "xyz": "root-relative (pelvis at 0), camera frame (x right, y down, z forward), mm",
        "smooth_sigma_frames": f"{opts.smooth:g}", "flip_test": str(opts.flip_test),
        "low_confidence_inputs": json.dumps([r.source.subject for r in results if r.low_confidence]),
    }
    files = [out_dir / TABLE_NAME]
    write_table(table, files[0], PREDICTION_SCHEMA, metadata)
    files += write_exports(results, table, out_dir, opts.export)
    if opts.figures:
        for res in results:
            if res.source.kind == "image":
                path = out_dir / f"{res.source.subject}.png"
                write_image_figure(res, path, opts.kpt_thr)
            else:
                path = out_dir / f"{res.source.subject}.mp4"
                write_video_figure(res, path, opts.progress, opts.kpt_thr)
            files.append(path)
    log.info("predicted %d frames of %d input(s) → %s", len(table) // skeleton.NUM_JOINTS, len(sources), out_dir)
    return PredictOutput(results, table, files)
