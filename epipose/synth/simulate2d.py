"""Multi-view 2D detections simulated from 3D ground truth: projection plus detector-like noise.

Used by the triangulation tests and benchmark (and usable as a stand-in for the 2D network):
ground-truth world poses (MPII order, mm) are projected through a rig's cameras (with lens
distortion) and perturbed by a ``NoiseModel``:
- Gaussian pixel noise;
- outlier joints, displaced by a random 30–150 px (a wrong detection);
- left/right swaps of whole views (the left and right joints exchanged, a common failure),
  either with a confidence that drops for the perturbed joints or with the detector staying
  confident (as real detectors do).
Clean joints get a confidence in ``conf_clean``, perturbed ones ``conf_perturbed``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from epipose import skeleton
from epipose.camera import Camera
from epipose.data.pose_tables import KEYS, from_dense
from epipose.synth.motion import generate_motion, random_body

LATERAL = np.array(sorted({j for pair in skeleton.FLIP_PAIRS for j in pair}))


@dataclass(frozen=True)
class NoiseModel:
    name: str
    sigma_px: float = 0.0
    outlier_rate: float = 0.0                  # fraction of observations (view, frame, joint) displaced
    outlier_px: tuple[float, float] = (30.0, 150.0)
    swap_rate: float = 0.0                     # fraction of (view, frame) with left/right swapped
    confident_swaps: bool = False              # swapped joints keep a clean confidence
    conf_clean: tuple[float, float] = (0.7, 1.0)
    conf_perturbed: tuple[float, float] = (0.05, 0.35)


NOISE_MODELS: dict[str, NoiseModel] = {m.name: m for m in (
    NoiseModel("exact", conf_clean=(1.0, 1.0)),
    NoiseModel("gauss2", sigma_px=2.0),
    NoiseModel("outliers_swaps4", sigma_px=4.0, outlier_rate=0.05, swap_rate=0.03),
    NoiseModel("confident_swaps4", sigma_px=4.0, outlier_rate=0.05, swap_rate=0.03, confident_swaps=True),
)}


@dataclass(frozen=True)
class Perturbation:
    outliers: np.ndarray   # (T, V, J) bool
    swaps: np.ndarray      # (T, V) bool


def procedural_motions(subjects, actions, n_frames: int, seed: int = 0, fps: float = 50.0) -> dict[tuple[str, str], np.ndarray]:
    """Ground truth for simulations: {(subject, action): (n_frames, 16, 3)} world mm, MPII order, one random
    body per subject (``epipose.synth.motion``), deterministic for a seed."""
    out = {}
    for i, subject in enumerate(subjects):
        rng = np.random.default_rng([seed, i])
        body = random_body(rng)
        for action in actions:
            out[(subject, action)] = skeleton.h36m32_to_mpii(generate_motion(action, n_frames, fps, body, rng))
    return out


@dataclass(frozen=True)
class SimulatedTruth:
    """The ground truth of simulated sequences with the dataset's methods that scoring reads
    (``epipose.data.targets.GroundTruth``, as ``H36MDataset``): for ``epipose.evaluation``."""

    sequences: dict[tuple[str, str], np.ndarray]       # (subject, action): (T, 16, 3) world mm, MPII order
    cameras: dict[str, dict[str, Camera]]              # subject: {name: Camera}

    def has_ground_truth(self, subject: str, action: str, camera: str) -> bool:
        return (subject, action) in self.sequences and camera in self.cameras.get(subject, {})

    def poses_mpii_camera(self, subject: str, action: str, camera: str) -> np.ndarray:
        """The sequence in that camera's frame, (T, 16, 3) mm."""
        return self.cameras[subject][camera].world_to_camera(self.sequences[(subject, action)])

    def pose_path(self, subject: str, action: str) -> Path:
        return Path(f"<simulated {subject} {action}>")


def camera_frame_truth(sequences: dict[tuple[str, str], np.ndarray],
                       cameras: dict[str, dict[str, Camera]]) -> SimulatedTruth:
    """The ground truth of ``sequences`` seen by ``cameras`` (for ``epipose.evaluation``'s scoring)."""
    return SimulatedTruth(sequences, cameras)


def project_views(poses_world: np.ndarray, cameras: list[Camera] | tuple[Camera, ...]) -> np.ndarray:
    """(T, J, 3) world poses → (T, V, J, 2) distorted pixels."""
    return np.stack([c.project(np.asarray(poses_world, dtype=np.float64)) for c in cameras], axis=1)


def apply_noise(uv: np.ndarray, model: NoiseModel, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, Perturbation]:
    """(T, V, J, 2) exact pixels → noisy pixels, confidences (T, V, J) and what was perturbed."""
    uv = np.array(uv, dtype=np.float64)
    T, V, J, _ = uv.shape
    conf = rng.uniform(*model.conf_clean, size=(T, V, J))
    if model.sigma_px > 0:
        uv += rng.normal(0.0, model.sigma_px, uv.shape)
    swaps = rng.random((T, V)) < model.swap_rate
    if swaps.any():
        perm = list(skeleton.FLIP_PERM)
        uv[swaps] = uv[swaps][:, perm]
        if not model.confident_swaps:
            lat = np.zeros((T, V, J), dtype=bool)
            tt, vv = np.nonzero(swaps)
            lat[tt[:, None], vv[:, None], LATERAL[None, :]] = True
            conf[lat] = rng.uniform(*model.conf_perturbed, size=int(lat.sum()))
    outliers = rng.random((T, V, J)) < model.outlier_rate
    n_out = int(outliers.sum())
    if n_out:
        ang = rng.uniform(0, 2 * np.pi, n_out)
        mag = rng.uniform(*model.outlier_px, n_out)
        uv[outliers] += np.stack([np.cos(ang), np.sin(ang)], axis=-1) * mag[:, None]
        conf[outliers] = rng.uniform(*model.conf_perturbed, size=n_out)
    return uv, conf, Perturbation(outliers, swaps)


def pose2d_rows(subject: str, action: str, cameras: list[str] | tuple[str, ...], frames: np.ndarray,
                uv: np.ndarray, conf: np.ndarray) -> pd.DataFrame:
    """One sequence (T, V, J, ...) → pose2d rows (subject, action, camera, frame, joint, u, v, conf)."""
    T, V = uv.shape[:2]
    frames = np.asarray(frames, dtype=np.int32)
    keys = pd.DataFrame({
        "subject": subject, "action": action,
        "camera": np.repeat(np.asarray(cameras, dtype=object), T),
        "frame": np.tile(frames, V),
    })[KEYS]
    values = np.concatenate([uv, conf[..., None]], axis=-1).transpose(1, 0, 2, 3).reshape(V * T, skeleton.NUM_JOINTS, 3)
    df = from_dense(keys, values, ["u", "v", "conf"])
    return df.astype({"u": np.float32, "v": np.float32, "conf": np.float32})


def simulate_pose2d(sequences: dict[tuple[str, str], np.ndarray], cameras: dict[str, dict[str, Camera]],
                    model: NoiseModel, seed: int = 0, stride: int = 1) -> tuple[pd.DataFrame, dict[tuple[str, str], Perturbation]]:
    """Ground-truth world poses per (subject, action) (T, 16, 3) MPII mm, cameras per subject
    ({subject: {name: Camera}}) → a pose2d table of every ``stride``-th frame, and the perturbations."""
    parts, perturbed = [], {}
    for i, ((subject, action), poses) in enumerate(sorted(sequences.items())):
        rng = np.random.default_rng([seed, i])
        names = sorted(cameras[subject])
        frames = np.arange(0, len(poses), stride)
        uv = project_views(poses[frames], [cameras[subject][n] for n in names])
        uv, conf, pert = apply_noise(uv, model, rng)
        parts.append(pose2d_rows(subject, action, names, frames, uv, conf))
        perturbed[(subject, action)] = pert
    return pd.concat(parts, ignore_index=True), perturbed
