"""Writers of the native layouts: Human3.6M videos and poses, MPII images and annotations.

```
<h36m_root>/cameras.json
<h36m_root>/<S>/Videos/<Action>.<camera>.mp4
<h36m_root>/<S>/MyPoseFeatures/D3_Positions/<Action>.cdf
<mpii_root>/images/<name>.jpg
<mpii_root>/annot/train.json, valid.json, gt_valid.mat
```
Every file is written beside its target and renamed into place (``epipose.io.atomic_path``).
The mp4 files come from OpenCV's FFmpeg 'mp4v' encoder, which writes byte-identical files for
identical frames (checked by the tests).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np

from epipose import skeleton
from epipose.data.h36m import write_pose_cdf
from epipose.data.mpii import gt_mat_bytes, gt_path
from epipose.io import atomic_path

FOURCC = "mp4v"


def video_path(root: str | Path, subject: str, action: str, camera: str) -> Path:
    return Path(root) / subject / "Videos" / f"{action}.{camera}.mp4"


def pose_path(root: str | Path, subject: str, action: str) -> Path:
    return Path(root) / subject / "MyPoseFeatures" / "D3_Positions" / f"{action}.cdf"


def write_poses(root: str | Path, subject: str, action: str, poses32: np.ndarray) -> Path:
    """The ground truth of one sequence as a D3_Positions .cdf (N, 32, 3 mm, world frame)."""
    path = pose_path(root, subject, action)
    write_pose_cdf(path, poses32)
    return path


def write_video(path: str | Path, frames: Iterable[np.ndarray], fps: float, size: tuple[int, int]) -> int:
    """Encode BGR ``frames`` of ``size`` (width, height) as an mp4; returns the number of frames."""
    path = Path(path)
    with atomic_path(path) as tmp:
        # FFmpeg picks the container from the extension: encode to "<tmp>.mp4", then move onto tmp.
        encoding = tmp.with_name(tmp.name + ".mp4")
        writer = cv2.VideoWriter(str(encoding), cv2.VideoWriter_fourcc(*FOURCC), float(fps), size)
        try:
            if not writer.isOpened():
                raise OSError(f"{path}: OpenCV cannot open an '{FOURCC}' video writer")
            n = 0
            for frame in frames:
                if frame.shape[:2] != (size[1], size[0]):
                    raise ValueError(f"{path}: frame of shape {frame.shape} does not match the video size {size}")
                writer.write(frame)
                n += 1
            writer.release()
            if n == 0:
                raise ValueError(f"{path}: no frames to write")
            os.replace(encoding, tmp)
        finally:
            writer.release()
            encoding.unlink(missing_ok=True)
    return n


def write_jpeg(path: str | Path, image: np.ndarray, quality: int) -> int:
    """Write a JPEG (deterministic bytes for identical pixels); returns its size."""
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise OSError(f"{path}: JPEG encoding failed")
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.tobytes())
    return len(buf)


def joints_inside(uv: np.ndarray, width: int, height: int) -> np.ndarray:
    """Whether each pixel position (..., 2) lies inside a ``width`` × ``height`` image."""
    return (uv[..., 0] >= 0) & (uv[..., 0] <= width - 1) & (uv[..., 1] >= 0) & (uv[..., 1] <= height - 1)


def mpii_entry(image: str, joints_uv: np.ndarray, width: int, height: int) -> dict:
    """One MPII annotation: 16 joints in MPII order; ``joints_vis`` = inside the image.

    ``center`` is the centre of the joints' bounding box and ``scale`` its larger side / 200 px,
    the convention of the MPII json of the Simple-Baselines lineage (crop = 200 · scale · 1.25).
    Joints outside the image keep their (outside) coordinates, with ``joints_vis`` 0.
    """
    joints_uv = np.asarray(joints_uv, dtype=np.float64)
    if joints_uv.shape != (skeleton.NUM_JOINTS, 2):
        raise ValueError(f"{image}: expected ({skeleton.NUM_JOINTS}, 2) joints, got {joints_uv.shape}")
    lo, hi = joints_uv.min(axis=0), joints_uv.max(axis=0)
    vis = joints_inside(joints_uv, width, height)
    return {
        "image": image,
        "center": [round(float(c), 2) for c in (lo + hi) / 2],
        "scale": round(float((hi - lo).max() / 200.0), 4),
        "joints": [[round(float(u), 2), round(float(v), 2)] for u, v in joints_uv],
        "joints_vis": [int(v) for v in vis],
    }


def write_mpii_annotations(root: str | Path, split: str, entries: list[dict]) -> Path:
    """``<root>/annot/<split>.json``, entries sorted by image name."""
    path = Path(root) / "annot" / f"{split}.json"
    ordered = sorted(entries, key=lambda e: e["image"])
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(ordered, separators=(",", ":")) + "\n")
    return path


def write_mpii_gt(root: str | Path, split: str, entries: list[dict], head_boxes: dict[str, np.ndarray]) -> Path:
    """``<root>/annot/gt_<split>.mat`` with the head boxes (by image name), in the json's order."""
    path = gt_path(root, split)
    ordered = sorted(entries, key=lambda e: e["image"])
    joints = np.array([e["joints"] for e in ordered], dtype=np.float64).reshape(-1, skeleton.NUM_JOINTS, 2)
    visible = np.array([e["joints_vis"] for e in ordered], dtype=bool).reshape(-1, skeleton.NUM_JOINTS)
    boxes = np.array([head_boxes[e["image"]] for e in ordered], dtype=np.float64).reshape(-1, 2, 2)
    with atomic_path(path) as tmp:
        tmp.write_bytes(gt_mat_bytes(joints, visible, boxes))
    return path
