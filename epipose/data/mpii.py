"""Reader of the MPII layout (the json of the Simple-Baselines / Integral-regression lineage).

```
<root>/images/<name>.jpg
<root>/annot/train.json, valid.json
  [{"image": "<name>.jpg", "center": [x, y], "scale": s, "joints": [[x, y] x16], "joints_vis": [0|1 x16]}]
```
``scale`` = person height / 200 px; joints in MPII order, pixels of the original image.

PCKh head size: this json carries no head boxes, so the head size is
``HEAD_SIZE_FACTOR × ‖head_top − upper_neck‖`` with the factor 0.6 of MPII's own protocol
(which applies 0.6 to the head box's diagonal). The head segment is shorter than the box
diagonal (≈ 1.3× the segment on MPII), so this PCKh is somewhat *stricter* than the official one.
Annotations whose head is not visible have no head size and are left out of PCKh.
"""

from __future__ import annotations

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

    def __len__(self) -> int:
        return len(self.images)

    def image_path(self, i: int) -> Path:
        return self.root / "images" / self.images[i]

    def head_sizes(self) -> np.ndarray:
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
    return MPIISplit(root, split, images, centers, scales, joints, visible)


def head_sizes(joints: np.ndarray, visible: np.ndarray) -> np.ndarray:
    """(N, 16, 2), (N, 16) → (N,) PCKh normaliser in px; NaN where the head is not annotated."""
    d = np.linalg.norm(joints[:, skeleton.HEAD_TOP] - joints[:, skeleton.UPPER_NECK], axis=-1)
    ok = visible[:, skeleton.HEAD_TOP] & visible[:, skeleton.UPPER_NECK] & (d > 0)
    return np.where(ok, HEAD_SIZE_FACTOR * d, np.nan)
