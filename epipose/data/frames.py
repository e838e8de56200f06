"""Frame shards: one Parquet file of square person crops per video.

Contract (docs/data-contracts.md): ``data/frames/<subject>/<action>.<camera>.parquet`` with columns
``frame`` int32 (index at the video's native rate), ``jpeg`` binary (the square crop, resized
to ``crop_size``), ``x0``, ``y0``, ``size`` float32 (the crop's square in original pixels).
A crop pixel ``(u_c, v_c)`` maps to the original image by ``u = x0 + u_c * size / crop_size``
(same for v), in OpenCV pixel coordinates for both images (``epipose.data.crop``). ``load_frames`` decodes the shards of
some subjects once into a ``FrameCache`` (the 3D stages' in-memory frames).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import cv2
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from epipose.camera import Camera
from epipose.data.h36m import action_name
from epipose.io import content_hash, write_parquet
from epipose.params import ParamError, in_range

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

SHARD_SCHEMA = pa.schema([
    pa.field("frame", pa.int32()), pa.field("jpeg", pa.binary()),
    pa.field("x0", pa.float32()), pa.field("y0", pa.float32()), pa.field("size", pa.float32()),
])


@dataclass(frozen=True)
class FramesParams:
    """Section ``frames`` of params.yaml."""

    stride: int = in_range(1, 100000, default=1)
    crop_size: int = in_range(16, 1024, default=128)
    jpeg_quality: int = in_range(1, 100, default=90)
    boxes: Literal["auto", "gt"] = "auto"                        # the videos alone | the GT pelvis (the paper)
    box_mm: float = in_range(100.0, 10000.0, default=2000.0)     # gt: the crop is a box this wide around the pelvis
    person_fraction: float = in_range(0.1, 2.0, default=0.95)    # auto: standing silhouette height / crop side
    centre_shift: float = in_range(-0.5, 0.5, default=-0.07)     # auto: crop centre below the silhouette's, × side
    box_window_s: float = in_range(0.0, 600.0, default=2.0)      # auto: side = the tallest silhouette of this window
    background_frames: int = in_range(3, 100000, default=63)     # auto: frames per camera for its background
    fg_threshold: float = in_range(1.0, 255.0, default=30.0)     # auto: foreground = this far from the background
    workers: int = in_range(1, 64, default=2)
    stray_files: Literal["warn", "error"] = "warn"   # videos/pose files outside the layout: named in a warning | an error


# --- how the crops were cut: crop.json beside the shards ---------------------------------------
CROP_INFO = "crop.json"


def crop_info(p: FramesParams) -> dict:
    """How extract_frames cuts the crops with ``p``: the box kind and the params that frame a person
    (the 3D network's training crops; train_3d writes it into the model, predict frames people by it)."""
    info: dict = {"boxes": p.boxes, "box_mm": p.box_mm, "crop_size": p.crop_size}
    if p.boxes == "auto":
        info.update(person_fraction=p.person_fraction, centre_shift=p.centre_shift, box_window_s=p.box_window_s)
    return info


def read_crop_info(frames_root: str | Path) -> dict:
    """``crop_info`` of the frames under ``frames_root`` ({} for frames written before it existed)."""
    path = Path(frames_root) / CROP_INFO
    if not path.is_file():
        return {}
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: not a readable crop description ({exc})") from None
    if not isinstance(info, dict) or info.get("boxes") not in ("auto", "gt"):
        raise ValueError(f"{path}: expected an object with boxes auto or gt, got {info!r}")
    return info


# --- geometry of the crop -----------------------------------------------------------------
def crop_boxes(pelvis_cam: np.ndarray, camera: Camera, box_mm: float) -> np.ndarray:
    """Square crops (F, 3) = (x0, y0, size) around the projection of a ``box_mm`` box.

    The box is centred on the pelvis, parallel to the image plane; its projected extent
    (through the lens) gives the side, its centre the projected pelvis.
    """
    half = box_mm / 2.0
    offsets = np.array([[-half, 0, 0], [half, 0, 0], [0, -half, 0], [0, half, 0]])
    pts = camera.project_camera(pelvis_cam[:, None, :] + offsets)          # (F, 4, 2)
    centre = camera.project_camera(pelvis_cam)                               # (F, 2)
    size = np.maximum(pts[:, 1, 0] - pts[:, 0, 0], pts[:, 3, 1] - pts[:, 2, 1])
    return np.stack([centre[:, 0] - size / 2, centre[:, 1] - size / 2, size], axis=-1)


def encode_jpeg(image: np.ndarray, quality: int) -> bytes:
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()


def decode_jpeg(data: bytes) -> np.ndarray:
    """JPEG bytes → BGR uint8 image."""
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError("undecodable JPEG bytes")
    return image


def decode_shard_crops(jpegs: list[bytes], source: Path | list[Path], frames: list[int] | None = None) -> np.ndarray:
    """JPEG crops of a shard (or of several: ``source`` per crop) → uint8 RGB (B, S, S, 3); errors name
    the shard and the frame."""
    sources = source if isinstance(source, list) else [source] * len(jpegs)
    images = []
    for i, data in enumerate(jpegs):
        try:
            images.append(decode_jpeg(data)[..., ::-1])
        except Exception as exc:
            which = f"frame {frames[i]}" if frames is not None else f"item {i}"
            raise ValueError(f"{sources[i]}: {which}: undecodable JPEG crop ({exc})") from None
    shapes = sorted({im.shape for im in images})
    if len(shapes) != 1 or shapes[0][0] != shapes[0][1]:
        where = ", ".join(sorted({str(sources[i]) for i, im in enumerate(images) if im.shape != images[0].shape}
                                 | {str(sources[0])}))
        raise ValueError(f"{where}: crops must be square and all of one size (one frames.crop_size), "
                         f"got shapes {shapes[:3]}")
    return np.ascontiguousarray(np.stack(images))


# --- shard I/O ------------------------------------------------------------------------------
def shard_path(root: str | Path, subject: str, action: str, camera: str) -> Path:
    return Path(root) / subject / f"{action}.{camera}.parquet"


def parse_shard_path(path: Path) -> tuple[str, str, str]:
    """``<root>/<subject>/<action>.<camera>.parquet`` → (subject, action, camera)."""
    action, _, camera = path.name[: -len(".parquet")].rpartition(".")
    if not action:
        raise ValueError(f"{path}: shard name must be <action>.<camera>.parquet")
    return path.parent.name, action, camera


def write_shard(path: str | Path, frames: np.ndarray, jpegs: list[bytes], boxes: np.ndarray) -> None:
    df = pd.DataFrame({
        "frame": np.asarray(frames, dtype=np.int32), "jpeg": jpegs,
        "x0": boxes[:, 0].astype(np.float32), "y0": boxes[:, 1].astype(np.float32),
        "size": boxes[:, 2].astype(np.float32),
    })
    write_parquet(df, path, schema=SHARD_SCHEMA)


def read_shard(path: str | Path, columns: list[str] | None = None) -> pd.DataFrame:
    """Read one shard, checking its schema; errors name the file."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"frame shard not found: {path}")
    try:
        table = pq.read_table(path, columns=columns)
    except Exception as exc:
        raise ValueError(f"{path}: not a readable frame shard ({type(exc).__name__}: {exc})") from None
    want = columns or SHARD_SCHEMA.names
    for name in want:
        if name not in table.column_names:
            raise ValueError(f"{path}: missing column {name!r} (expected {SHARD_SCHEMA.names})")
        if not table.schema.field(name).type.equals(SHARD_SCHEMA.field(name).type):
            raise ValueError(f"{path}: column {name!r} has type {table.schema.field(name).type}, "
                             f"expected {SHARD_SCHEMA.field(name).type}")
    return table.to_pandas()


def list_shards(root: str | Path, subjects: list[str] | tuple[str, ...] | None = None) -> list[Path]:
    """Every shard under ``root`` (optionally only ``subjects``), sorted."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"frames folder not found: {root}")
    shards = sorted(root.glob("*/*.parquet"))
    if subjects is not None:
        shards = [p for p in shards if p.parent.name in set(subjects)]
    return shards


@dataclass(frozen=True)
class ActionSelection:
    """Some of the data's actions, by Human3.6M action name (takes merged: "Walking 1" is "Walking"):
    only these (``exclude`` false) or every action but these (``exclude`` true); ``key`` is the param
    that names them (errors)."""

    names: tuple[str, ...]
    exclude: bool
    key: str

    def select(self, shards: list[Path]) -> list[Path]:
        """The shards of the selected actions; a name none of ``shards`` has is a ``ParamError``."""
        actions = [action_name(parse_shard_path(p)[1]) for p in shards]
        known = sorted(set(actions))
        unknown = [a for a in self.names if a not in known]
        if unknown:
            raise ParamError(f"param {self.key}: unknown action(s) {unknown} (the data's actions: {known})")
        return [p for p, a in zip(shards, actions) if (a in self.names) != self.exclude]


# --- frames decoded once -----------------------------------------------------------------------------------
@dataclass
class FrameCache:
    """Frame shards decoded into memory: one row per (subject, action, camera, frame), sorted."""

    images: "torch.Tensor"     # uint8 RGB (N, 3, S, S)
    keys: pd.DataFrame         # subject, action, camera, frame
    boxes: np.ndarray          # (N, 3) x0, y0, size: each crop's square in original pixels
    root: Path

    def __len__(self) -> int:
        return len(self.images)

    @property
    def crop_size(self) -> int:
        return int(self.images.shape[-1])

    def subset(self, index: np.ndarray) -> "FrameCache":
        """The frames at ``index`` (keys renumbered)."""
        return FrameCache(self.images[index], self.keys.iloc[index].reset_index(drop=True), self.boxes[index],
                          self.root)

    def signature(self) -> str:
        """The content hash of every key, box and pixel."""
        return content_hash(self.keys, self.boxes, self.images)


def load_frames(frames_root: str | Path, subjects: list[str] | tuple[str, ...], stride: int = 1, workers: int = 2,
                progress: bool = True, actions: ActionSelection | None = None) -> FrameCache:
    """Decode the crops of ``subjects``' shards under ``frames_root`` once.

    ``stride``: keep the frames whose index (at the video's native rate) is a multiple of it.
    ``actions``: only the shards of these actions (None or no names: all).
    Every subject must have shards (the error names the folder and the subject).
    """
    root = Path(frames_root)
    shards = list_shards(root, subjects)
    have = {p.parent.name for p in shards}
    missing = [s for s in subjects if s not in have]
    if missing:
        raise FileNotFoundError(f"{root}: no frame shards for subject(s) {missing} (run extract_frames; "
                                f"the subjects come from params)")
    if actions is not None and actions.names:
        shards = actions.select(shards)
    keyed = sorted((parse_shard_path(p), p) for p in shards)
    t0 = time.perf_counter()
    parts, keys, boxes = [], [], []

    def load(item):
        (subject, action, camera), path = item
        df = read_shard(path).sort_values("frame", kind="stable")
        df = df[df["frame"] % stride == 0]
        if df["frame"].duplicated().any():
            raise ValueError(f"{path}: duplicate frame indices")
        images = decode_shard_crops(list(df["jpeg"]), path, df["frame"].tolist()) if len(df) else None
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
    import torch  # here: extract_frames' workers use this module and need no torch

    images = torch.from_numpy(np.concatenate(parts)).permute(0, 3, 1, 2).contiguous()
    cache = FrameCache(images, pd.concat(keys, ignore_index=True), np.concatenate(boxes), root)
    log.info("decoded %d crops (%d px) of %s from %d shards in %.1f s", len(cache), cache.crop_size,
             ",".join(subjects), len(keyed), time.perf_counter() - t0)
    return cache
