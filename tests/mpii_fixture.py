"""A tiny MPII-layout data set for tests: stick figures drawn with OpenCV.

Each image shows one figure with random limb angles, size and position on a noisy background;
left limbs are drawn in a different colour from right limbs, so left/right is learnable.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from epipose import skeleton


def random_pose(rng: np.random.Generator, height: float, center: np.ndarray) -> np.ndarray:
    """(16, 2) MPII joints of a standing-ish figure ``height`` px tall around ``center``."""
    u = height / 8.0
    j = np.zeros((16, 2))
    pelvis = np.asarray(center, dtype=np.float64)
    j[6] = pelvis
    lean = rng.normal(0, 0.15)
    up = np.array([np.sin(lean), -np.cos(lean)])
    side = np.array([-up[1], up[0]])
    j[7] = pelvis + up * 2.6 * u                        # thorax
    j[8] = j[7] + up * 0.5 * u                          # upper neck
    j[9] = j[8] + up * 1.0 * u                          # head top
    j[2], j[3] = pelvis - side * 0.6 * u, pelvis + side * 0.6 * u   # r_hip, l_hip (figure faces the camera)
    j[12], j[13] = j[7] - side * 1.0 * u, j[7] + side * 1.0 * u     # shoulders

    def limb(start: np.ndarray, angle: float, length: float) -> np.ndarray:
        return start + length * np.array([np.sin(angle), np.cos(angle)])

    for hip, knee, ankle, sgn in ((2, 1, 0, -1), (3, 4, 5, 1)):
        a1 = lean + sgn * rng.uniform(0.0, 0.5) + rng.normal(0, 0.2)
        j[knee] = limb(j[hip], a1, 1.9 * u)
        j[ankle] = limb(j[knee], a1 + rng.uniform(-0.6, 0.1) * sgn, 1.9 * u)
    for sho, elb, wri, sgn in ((12, 11, 10, -1), (13, 14, 15, 1)):
        a1 = lean + sgn * rng.uniform(0.2, 2.6)
        j[elb] = limb(j[sho], a1, 1.3 * u)
        j[wri] = limb(j[elb], a1 + sgn * rng.uniform(-1.2, 1.2), 1.2 * u)
    return j


LEFT_COLOUR = (40, 200, 40)      # BGR
RIGHT_COLOUR = (40, 40, 220)
BODY_COLOUR = (220, 160, 40)


def draw(image: np.ndarray, joints: np.ndarray, thickness: int) -> None:
    left = {3, 4, 5, 13, 14, 15}
    right = {0, 1, 2, 10, 11, 12}
    for a, b in skeleton.BONES:
        colour = LEFT_COLOUR if b in left else RIGHT_COLOUR if b in right else BODY_COLOUR
        cv2.line(image, tuple(np.round(joints[a]).astype(int)), tuple(np.round(joints[b]).astype(int)), colour,
                 thickness, cv2.LINE_AA)
    head = (joints[8] + joints[9]) / 2
    cv2.circle(image, tuple(np.round(head).astype(int)), max(2, int(np.linalg.norm(joints[9] - joints[8]) / 2)),
               BODY_COLOUR, -1, cv2.LINE_AA)


def make_mpii(root: str | Path, n_train: int = 16, n_valid: int = 8, image_size: int = 160, seed: int = 0) -> Path:
    """Write ``<root>/images/*.jpg`` and ``<root>/annot/{train,valid}.json``; returns root."""
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "annot").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("valid", n_valid)):
        entries = []
        for i in range(n):
            image = (rng.uniform(60, 140, (image_size, image_size, 3))).astype(np.uint8)
            image = cv2.GaussianBlur(image, (5, 5), 0)
            height = rng.uniform(0.45, 0.7) * image_size
            center = rng.uniform(0.4, 0.6, 2) * image_size
            joints = random_pose(rng, height, center)
            draw(image, joints, thickness=max(2, int(height / 30)))
            name = f"{split}_{i:05d}.jpg"
            cv2.imwrite(str(root / "images" / name), image, [cv2.IMWRITE_JPEG_QUALITY, 95])
            top, bottom = joints[:, 1].min(), joints[:, 1].max()
            box_c = (joints.min(0) + joints.max(0)) / 2
            entries.append({"image": name, "center": box_c.round(2).tolist(), "scale": float((bottom - top) / 200.0),
                            "joints": joints.round(2).tolist(), "joints_vis": [1] * 16})
        (root / "annot" / f"{split}.json").write_text(json.dumps(entries))
    return root
