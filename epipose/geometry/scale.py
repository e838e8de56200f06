"""Metric scale of an up-to-scale reconstruction from a prior on human bone lengths.

A reconstruction without extrinsics is known up to a similarity; its scale is fixed by comparing
the subject's bone lengths (per bone, the median over frames, so occasional bad frames do not
matter) with a prior of mean adult bone lengths in mm: scale = Σ prior / Σ measured over the
bones that were measured. Summing before dividing weights long, reliably measured bones (legs,
torso) most; the error is the subject's deviation from the mean body size (a few percent).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from epipose import skeleton


@dataclass(frozen=True)
class ScaleEstimate:
    scale: float                     # multiply the reconstruction by this to get mm (NaN if unknown)
    measured: tuple[float, ...]      # per bone, median length in reconstruction units (NaN if unmeasured)
    n_frames: int                    # frames with at least one measured bone


def bone_length_scale(points: np.ndarray, prior_mm: np.ndarray | list[float] | tuple[float, ...],
                      min_frames: int = 1) -> ScaleEstimate:
    """points (T, 16, 3) in MPII order, arbitrary units (NaN = missing) → scale to mm."""
    prior = np.asarray(prior_mm, dtype=np.float64)
    if prior.shape != (len(skeleton.BONES),):
        raise ValueError(f"bone-length prior needs {len(skeleton.BONES)} values (skeleton.BONES order), got {prior.shape}")
    points = np.asarray(points, dtype=np.float64).reshape(-1, skeleton.NUM_JOINTS, 3)
    lengths = skeleton.bone_lengths(points)                       # (T, B), NaN where a joint is missing
    ok = np.isfinite(lengths) & (lengths > 0)
    counts = ok.sum(0)
    med = np.full(len(prior), np.nan)
    for b in np.flatnonzero(counts >= min_frames):
        med[b] = np.median(lengths[ok[:, b], b])
    use = np.isfinite(med)
    n_frames = int(ok.any(1).sum())
    if not use.any():
        return ScaleEstimate(float("nan"), tuple(med.tolist()), n_frames)
    return ScaleEstimate(float(prior[use].sum() / med[use].sum()), tuple(med.tolist()), n_frames)
