"""The cameras triangulate recovered against the true ones: the relative pose of every camera pair."""

from __future__ import annotations

import numpy as np

from epipose.geometry.angles import angle_between_deg, rotation_angle_deg
from epipose.geometry.camera_group import CameraGroup
from epipose.io import json_float

ERRORS = ("rotation_deg", "translation_direction_deg", "baseline_error_pct")


def camera_errors(R: np.ndarray, t: np.ndarray, ok: np.ndarray, truth: CameraGroup) -> dict[str, dict]:
    """Per camera pair ("a-b"), the recovered relative pose against the true one (``truth``: the same
    cameras with their true extrinsics): rotation (deg), translation direction (deg) and baseline
    length (%, the metric scale). Cameras given per frame, world → camera ``R`` (T, V, 3, 3), ``t``
    (T, V, 3) where ``ok`` (T, V): the median over the frames where both have a pose (None where
    none); static cameras are one frame."""
    out: dict[str, dict] = {}
    for a in range(ok.shape[1]):
        for b in range(a + 1, ok.shape[1]):
            name = f"{truth.names[a]}-{truth.names[b]}"
            sel = ok[:, a] & ok[:, b]
            if not sel.any():
                out[name] = dict.fromkeys(ERRORS)
                continue
            Re = R[sel, b] @ np.swapaxes(R[sel, a], -1, -2)
            te = t[sel, b] - (Re @ t[sel, a][..., None])[..., 0]
            Rt = truth.R[b] @ truth.R[a].T
            tt = truth.t[b] - Rt @ truth.t[a]
            out[name] = {
                "rotation_deg": json_float(np.median(rotation_angle_deg(Re @ Rt.T)), 5),
                "translation_direction_deg": json_float(np.median(angle_between_deg(te, tt[None])), 5),
                "baseline_error_pct": json_float(100.0 * (np.median(np.linalg.norm(te, axis=-1)) / np.linalg.norm(tt) - 1.0), 3),
            }
    return out


def _summary(values: list[float | None]) -> dict:
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=np.float64)
    if not len(v):
        return {"mean": None, "max": None, "n": 0}
    return {"mean": json_float(v.mean(), 5), "max": json_float(np.abs(v).max(), 5), "n": int(len(v))}


def camera_error_summary(errors: list[dict[str, dict]]) -> dict[str, dict]:
    """The mean, the largest magnitude and the count of each error over every pair of ``errors`` (one
    ``camera_errors`` per subject) → the report's ``camera_*_error_*`` entries."""
    pairs = [e for subject in errors for e in subject.values()]
    return {report: _summary([e[key] for e in pairs]) for key, report in (
        ("rotation_deg", "camera_rotation_error_deg"),
        ("translation_direction_deg", "camera_translation_direction_error_deg"),
        ("baseline_error_pct", "camera_baseline_error_pct"))}
