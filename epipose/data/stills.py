"""MPII-layout stills as an in-memory crop cache: each annotated person cut out of its image once
(``epipose.data.transforms.decode_crops``), with its joints in the crop's pixels.

Two stages train on it: pretrain_2d (the 2D network; crops with ``context`` × the person box around
it, for zoom-out and rotation) and train_3d (``train_3d.mpii_share``: 2D-only samples mixed into the
3D batches, cut at the frames' geometry so one augmentation serves both).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from epipose import skeleton
from epipose.data import mpii
from epipose.data.transforms import decode_crops, person_boxes
from epipose.io import content_hash

log = logging.getLogger(__name__)


@dataclass
class CropCache:
    """An MPII split decoded once: crops around each person and their joints."""

    images: torch.Tensor       # uint8 RGB (N, 3, S, S)
    joints: torch.Tensor       # (N, J, 2) float32, cache pixels
    visible: torch.Tensor      # (N, J) bool
    boxes: np.ndarray          # (N, 3) the cached square (x0, y0, side) in original pixels
    src_box: float             # the person box's side in cache pixels
    split: mpii.MPIISplit

    def __len__(self) -> int:
        return len(self.images)

    def signature(self) -> str:
        """The content hash of every box, joint and pixel."""
        return content_hash(self.boxes, self.joints, self.visible, self.images)

    def to_original(self, xy_cache: np.ndarray) -> np.ndarray:
        k = self.boxes[:, None, 2:3] / self.images.shape[-1]
        return xy_cache * k + self.boxes[:, None, :2]


def build_cache(root: str | Path, split: str, size: int, box_margin: float, context: float, limit: int = 0,
                num_joints: int = skeleton.NUM_JOINTS, workers: int = 2) -> CropCache:
    """``split`` of the MPII-layout ``root`` (its first ``limit`` annotations; 0 = all) as ``size``-px
    crops of ``context`` × the person box (side = scale · 200 · ``box_margin``) around each person."""
    s = mpii.load_split(root, split, num_joints)
    n = len(s) if limit <= 0 else min(limit, len(s))
    boxes = person_boxes(s.centers[:n], s.scales[:n], box_margin * context)
    t0 = time.perf_counter()
    crops = decode_crops([s.image_path(i) for i in range(n)], boxes, size, workers=workers)
    log.info("decoded %d %s crops at %d px in %.1f s", n, split, size, time.perf_counter() - t0)
    joints = (s.joints[:n] - boxes[:, None, :2]) * (size / boxes[:, None, 2:3])
    return CropCache(
        images=torch.from_numpy(crops).permute(0, 3, 1, 2).contiguous(),
        joints=torch.from_numpy(joints.astype(np.float32)),
        visible=torch.from_numpy(s.visible[:n].copy()),
        boxes=boxes, src_box=size / context, split=s,
    )
