"""Multi-view test data for the triangulation: a distorted 4-camera rig and procedural motion.

The rig is Human3.6M-like (4 cameras at the corners of the room, ~5 m from the subject, 1000 px
images, real-looking lens distortion), per-subject extrinsics jittered; the motion comes from
``epipose.synth.motion``. Self-contained (no data files).
"""

from __future__ import annotations

import numpy as np

from epipose.camera import Camera, Rig, look_at
from epipose.synth.simulate2d import camera_frame_truth, procedural_motions

CAMERAS = ("cam_a", "cam_b", "cam_c", "cam_d")
_DIST = (-0.20, 0.24, -0.0014, -0.0010, -0.003)


def make_rig(subjects=("S1", "S5"), seed: int = 0) -> Rig:
    rng = np.random.default_rng(seed)
    intr, extr = {}, {s: {} for s in subjects}
    for i, cam in enumerate(CAMERAS):
        f = 1145.0 + rng.normal(0, 5)
        K = np.array([[f, 0.0, 512.0 + rng.normal(0, 3)], [0.0, f * 0.999, 515.0 + rng.normal(0, 3)], [0, 0, 1.0]])
        intr[cam] = (K, np.array(_DIST) * (1 + rng.normal(0, 0.05, 5)))
        az = np.radians(45.0 + 90.0 * i + rng.normal(0, 5))
        for s in subjects:
            c = np.array([5000 * np.cos(az), 5000 * np.sin(az), 1600.0]) + rng.normal(0, 100, 3)
            R, t = look_at(c, np.array([0.0, 0.0, 1000.0]) + rng.normal(0, 100, 3))
            extr[s][cam] = (R, t)
    return Rig(intr, extr, source="<test rig>")


def motions(subjects=("S1", "S5"), actions=("Walking 1", "Greeting 1"), n_frames: int = 150,
            seed: int = 0) -> dict[tuple[str, str], np.ndarray]:
    """{(subject, action): (n_frames, 16, 3) world mm, MPII order}."""
    return procedural_motions(subjects, actions, n_frames, seed)


def cameras(rig: Rig, subjects) -> dict[str, dict[str, Camera]]:
    return {s: rig.cameras(s) for s in subjects}


gt_lookup = camera_frame_truth
