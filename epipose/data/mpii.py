"""Reader of the MPII layout (the json of the Simple-Baselines / Integral-regression lineage).

```
<root>/images/<name>.jpg
<root>/annot/train.json, valid.json
  [{"image": "<name>.jpg", "center": [x, y], "scale": s, "joints": [[x, y] x16], "joints_vis": [0|1 x16]}]
<root>/annot/gt_valid.mat   (optional; MATLAB v5, the lineage's evaluation file)
  headboxes_src (2, 2, N): [[x0, y0], [x1, y1]] per annotation, px, 1-based
  pos_gt_src (16, 2, N): the joints, 1-based;  jnt_missing (16, N): 1 = not annotated
  dataset_joints (1, 16): MPII joint names
```
``scale`` = person height / 200 px; joints in MPII order, pixels of the original image.

PCKh head size (the MPII protocol): ``HEAD_SIZE_FACTOR × ‖head box diagonal‖`` with the factor
0.6, from ``gt_<split>.mat`` when the root has one (its entries in the json's order; its joints
must match the json's). Without it the head size falls back to ``0.6 × ‖head_top − upper_neck‖``:
the head segment is shorter than the box diagonal, so that PCKh is *stricter* than the official
one (2–3× on the synthetic data, whose upper_neck is H36M's Neck/Nose, at the nose). Annotations
whose head is not visible have no head size and are left out of PCKh.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from epipose import skeleton

SPLITS = ("train", "valid")
HEAD_SIZE_FACTOR = 0.6
PIXEL_STD = 200.0   # MPII's unit of ``scale``


@dataclass(frozen=True)
class MPIISplit:
    """One split as arrays: N annotations (one person each)."""

    root: Path
    split: str
    images: list[str]          # file names under <root>/images
    centers: np.ndarray        # (N, 2) float64, px
    scales: np.ndarray         # (N,) person height / 200
    joints: np.ndarray         # (N, 16, 2) float64, px
    visible: np.ndarray        # (N, 16) bool
    head_boxes: np.ndarray | None = None   # (N, 2, 2) [[x0, y0], [x1, y1]] px, from gt_<split>.mat

    def __len__(self) -> int:
        return len(self.images)

    def image_path(self, i: int) -> Path:
        return self.root / "images" / self.images[i]

    def head_sizes(self) -> np.ndarray:
        if self.head_boxes is not None:
            return head_box_sizes(self.head_boxes)
        return head_sizes(self.joints, self.visible)


def annotation_path(root: str | Path, split: str) -> Path:
    if split not in SPLITS:
        raise ValueError(f"unknown MPII split {split!r} (expected one of {SPLITS})")
    return Path(root) / "annot" / f"{split}.json"


def load_split(root: str | Path, split: str, num_joints: int = skeleton.NUM_JOINTS) -> MPIISplit:
    """Read and validate ``<root>/annot/<split>.json``; every error names the file (and entry)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"MPII root not found: {root} (param data.mpii_root)")
    path = annotation_path(root, split)
    if not path.exists():
        raise FileNotFoundError(f"MPII annotation file not found: {path}")
    try:
        entries = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(entries, list):
        raise ValueError(f"{path}: expected a list of annotations, got {type(entries).__name__}")
    if not entries:
        raise ValueError(f"{path}: no annotations")
    n = len(entries)
    images: list[str] = []
    centers = np.zeros((n, 2))
    scales = np.zeros(n)
    joints = np.zeros((n, num_joints, 2))
    visible = np.zeros((n, num_joints), dtype=bool)
    for i, e in enumerate(entries):
        where = f"{path}: entry {i}"
        if not isinstance(e, dict):
            raise ValueError(f"{where}: expected an object")
        missing = [k for k in ("image", "center", "scale", "joints", "joints_vis") if k not in e]
        if missing:
            raise ValueError(f"{where}: missing key(s) {missing}")
        if not isinstance(e["image"], str) or not e["image"]:
            raise ValueError(f"{where}: 'image' must be a file name")
        images.append(e["image"])
        try:
            c = np.asarray(e["center"], dtype=np.float64)
            j = np.asarray(e["joints"], dtype=np.float64)
            v = np.asarray(e["joints_vis"], dtype=np.float64)
            s = float(e["scale"])
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{where}: non-numeric center/scale/joints/joints_vis ({exc})") from None
        if c.shape != (2,):
            raise ValueError(f"{where}: 'center' must be [x, y], got shape {c.shape}")
        if not (np.isfinite(s) and s > 0):
            raise ValueError(f"{where}: 'scale' must be a positive number, got {e['scale']!r}")
        if j.shape != (num_joints, 2):
            raise ValueError(f"{where}: 'joints' must be {num_joints} [x, y] pairs, got shape {j.shape}")
        if v.ndim == 2:          # some exports store [v, v] per joint
            v = v[:, 0]
        if v.shape != (num_joints,):
            raise ValueError(f"{where}: 'joints_vis' must have {num_joints} values, got shape {v.shape}")
        centers[i], scales[i], joints[i], visible[i] = c, s, j, v > 0
    visible &= np.isfinite(joints).all(axis=-1)
    boxes = load_head_boxes(gt_path(root, split), joints, visible) if gt_path(root, split).exists() else None
    return MPIISplit(root, split, images, centers, scales, joints, visible, boxes)


def gt_path(root: str | Path, split: str) -> Path:
    return Path(root) / "annot" / f"gt_{split}.mat"


def load_head_boxes(path: Path, joints: np.ndarray, visible: np.ndarray, tol_px: float = 1.5) -> np.ndarray:
    """Head boxes (N, 2, 2) from a ``gt_<split>.mat``, checked against the json's joints (N, 16, 2)."""
    from scipy.io import loadmat

    try:
        gt = loadmat(path)
    except Exception as exc:  # scipy raises several types for a damaged file
        raise ValueError(f"{path}: not a readable MATLAB file ({exc})") from None
    missing = [k for k in ("headboxes_src", "pos_gt_src") if k not in gt]
    if missing:
        raise ValueError(f"{path}: missing variable(s) {missing}")
    n, j = joints.shape[:2]
    boxes, pos = np.asarray(gt["headboxes_src"], np.float64), np.asarray(gt["pos_gt_src"], np.float64)
    if boxes.shape != (2, 2, n) or pos.shape != (j, 2, n):
        raise ValueError(f"{path}: headboxes_src {boxes.shape} / pos_gt_src {pos.shape} do not match the "
                         f"json's {n} annotations of {j} joints (expected (2, 2, {n}) / ({j}, 2, {n}))")
    diff = np.abs(pos.transpose(2, 0, 1) - 1.0 - joints).max(axis=-1)
    bad = visible & ~(diff <= tol_px)
    if bad.any():
        i = int(np.flatnonzero(bad.any(axis=1))[0])
        raise ValueError(f"{path}: pos_gt_src of annotation {i} differs from the json's joints by "
                         f"{np.nanmax(diff[i][visible[i]]):.1f} px: the two files are not in the same order")
    return boxes.transpose(2, 0, 1) - 1.0


def head_box_sizes(boxes: np.ndarray) -> np.ndarray:
    """(N, 2, 2) head boxes → (N,) PCKh normaliser in px: 0.6 × the box diagonal (MPII's SC_BIAS)."""
    return HEAD_SIZE_FACTOR * np.linalg.norm(boxes[:, 1] - boxes[:, 0], axis=-1)


def gt_mat_bytes(joints: np.ndarray, visible: np.ndarray, head_boxes: np.ndarray) -> bytes:
    """A ``gt_<split>.mat`` (see the module doc) for (N, 16, 2) joints, (N, 16) visibility and
    (N, 2, 2) head boxes in 0-based px; byte-deterministic (the MAT header's date is fixed)."""
    from scipy.io import savemat

    buf = io.BytesIO()
    savemat(buf, {
        "dataset_joints": np.array([list(skeleton.MPII_NAMES)], dtype=object),
        "jnt_missing": (~visible).T.astype(np.float64),
        "pos_gt_src": (joints + 1.0).transpose(1, 2, 0),
        "headboxes_src": (head_boxes + 1.0).transpose(1, 2, 0),
    }, do_compression=False, oned_as="row")
    data = buf.getvalue()
    header = b"MATLAB 5.0 MAT-file, written by epipose".ljust(116, b" ")
    return header + data[116:]


def head_sizes(joints: np.ndarray, visible: np.ndarray) -> np.ndarray:
    """(N, 16, 2), (N, 16) → (N,) PCKh normaliser in px; NaN where the head is not annotated."""
    d = np.linalg.norm(joints[:, skeleton.HEAD_TOP] - joints[:, skeleton.UPPER_NECK], axis=-1)
    ok = visible[:, skeleton.HEAD_TOP] & visible[:, skeleton.UPPER_NECK] & (d > 0)
    return np.where(ok, HEAD_SIZE_FACTOR * d, np.nan)
