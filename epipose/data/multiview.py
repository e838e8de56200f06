"""A pose2d table as multi-view arrays, and a correction of its 2D skeletons.

``SubjectViews``: one subject's rows as dense (frames, views, joints) arrays, the layout of
``epipose.geometry`` (``CameraGroup.triangulate``, self-calibration); ``enlarge_skeletons`` undoes
a 2D network's shrinking of every skeleton it draws (its ``metrics.skeleton_scale``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from epipose import skeleton
from epipose.data.pose_tables import POSE2D_VALUES, from_dense, to_dense


@dataclass(frozen=True)
class SubjectViews:
    """One subject's 2D poses: every (action, frame) seen by any of ``cameras``, as arrays."""

    subject: str
    cameras: tuple[str, ...]       # V
    timestamps: pd.DataFrame       # T rows: action, frame (sorted)
    uv: np.ndarray                 # (T, V, J, 2) pixels, NaN where absent
    conf: np.ndarray               # (T, V, J), 0 where absent
    keys: pd.DataFrame             # one row per input (subject, action, camera, frame): + t, v indices

    @classmethod
    def from_table(cls, df: pd.DataFrame, cameras: list[str]) -> "SubjectViews":
        keys, values = to_dense(df, ["u", "v", "conf"])
        ts = keys[["action", "frame"]].drop_duplicates().sort_values(["action", "frame"]).reset_index(drop=True)
        t_index = pd.MultiIndex.from_frame(ts).get_indexer(pd.MultiIndex.from_frame(keys[["action", "frame"]]))
        v_index = keys["camera"].map({c: i for i, c in enumerate(cameras)}).to_numpy()
        T, V = len(ts), len(cameras)
        uv = np.full((T, V, skeleton.NUM_JOINTS, 2), np.nan)
        conf = np.zeros((T, V, skeleton.NUM_JOINTS))
        uv[t_index, v_index] = values[..., :2]
        conf[t_index, v_index] = np.nan_to_num(values[..., 2], nan=0.0)
        keys = keys.assign(t=t_index, v=v_index)
        return cls(str(df["subject"].iloc[0]), tuple(cameras), ts, uv, conf, keys)

    def weights(self, min_conf: float) -> np.ndarray:
        """(T, V, J) each observation's weight: its confidence, 0 where absent, not finite or below ``min_conf``."""
        ok = np.isfinite(self.uv).all(-1) & np.isfinite(self.conf) & (self.conf >= min_conf) & (self.conf > 0)
        return np.where(ok, self.conf, 0.0)

    def present(self) -> np.ndarray:
        """(T, V) bool: the camera has a row in that frame."""
        out = np.zeros(self.conf.shape[:2], dtype=bool)
        out[self.keys["t"].to_numpy(), self.keys["v"].to_numpy()] = True
        return out


def enlarge_skeletons(pose2d: pd.DataFrame, scale: float) -> pd.DataFrame:
    """Undo a 2D network's shrinking: every detected skeleton (one camera, one frame) enlarged about
    the mean of its joints by 1 / ``scale`` (``metrics.skeleton_scale`` of the network)."""
    if scale == 1.0 or not len(pose2d):
        return pose2d
    keys, values = to_dense(pose2d, POSE2D_VALUES)
    values = values.astype(np.float64)
    uv = values[..., :2]
    finite = np.isfinite(uv)
    centre = np.where(finite, uv, 0.0).sum(1, keepdims=True) / np.maximum(finite.sum(1, keepdims=True), 1)
    values[..., :2] = centre + (uv - centre) / scale
    return from_dense(keys, values.astype(np.float32), POSE2D_VALUES)
