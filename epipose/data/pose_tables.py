"""The pose tables' contract: ``data/pose2d.parquet``, ``data/pseudo3d.parquet``, ``data/pred3d_train.parquet``
and ``epipose predict``'s ``predictions.parquet``.

One row per (subject, action, camera, frame, joint), joints named in MPII order, rows sorted
by subject, action, camera, frame and MPII joint index. Dense helpers turn a table into
``(F, 16, C)`` arrays (F = distinct (subject, action, camera, frame) keys) and back.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from epipose import skeleton
from epipose.io import read_parquet_metadata, write_parquet

KEYS = ["subject", "action", "camera", "frame"]
_KEY_FIELDS = [
    pa.field("subject", pa.string()), pa.field("action", pa.string()), pa.field("camera", pa.string()),
    pa.field("frame", pa.int32()), pa.field("joint", pa.string()),
]
POSE2D_SCHEMA = pa.schema(_KEY_FIELDS + [
    pa.field("u", pa.float32()), pa.field("v", pa.float32()), pa.field("conf", pa.float32()),
])
PSEUDO3D_SCHEMA = pa.schema(_KEY_FIELDS + [
    pa.field("x", pa.float32()), pa.field("y", pa.float32()), pa.field("z", pa.float32()),
    pa.field("reproj_err", pa.float32()), pa.field("n_views", pa.int8()),
])
# ``epipose predict``'s output: subject = the input's file stem, action and camera "", frame = the
# image's index in its input (a video's frame index); u, v in the input's pixels; x, y, z the
# root-relative pose (pelvis at 0) in the camera's frame, mm; conf in [0, 1].
PREDICTION_SCHEMA = pa.schema(_KEY_FIELDS + [
    pa.field("u", pa.float32()), pa.field("v", pa.float32()),
    pa.field("x", pa.float32()), pa.field("y", pa.float32()), pa.field("z", pa.float32()),
    pa.field("conf", pa.float32()),
])
# The 3D network's predictions on the training frames (input of the refiner): pseudo3d-like,
# x, y, z in each camera's frame in mm (back-projected at the target's root depth), plus conf.
PRED3D_SCHEMA = pa.schema(_KEY_FIELDS + [
    pa.field("x", pa.float32()), pa.field("y", pa.float32()), pa.field("z", pa.float32()),
    pa.field("conf", pa.float32()),
])
POSE2D_VALUES = ["u", "v", "conf"]
PSEUDO3D_VALUES = ["x", "y", "z", "reproj_err", "n_views"]
PREDICTION_VALUES = ["u", "v", "x", "y", "z", "conf"]
PRED3D_VALUES = ["x", "y", "z", "conf"]


class TableError(ValueError):
    """A pose table does not follow its contract (the message names the file)."""


STRING_COLUMNS = ("subject", "action", "camera", "joint")


def check_table(df: pd.DataFrame, schema: pa.Schema, source: str) -> None:
    """Raise ``TableError`` naming ``source`` if columns, their types or values, joint names or the row
    layout (every frame: each of the 16 joints once) are wrong."""
    missing = [n for n in schema.names if n not in df.columns]
    if missing:
        raise TableError(f"{source}: missing column(s) {missing} (expected {schema.names})")
    for name in STRING_COLUMNS:
        nulls = int(df[name].isna().sum())
        if nulls:
            raise TableError(f"{source}: column {name!r} has {nulls} empty (null) value(s)")
        kind = pd.api.types.infer_dtype(df[name], skipna=False)
        if len(df) and kind != "string":
            raise TableError(f"{source}: column {name!r} must hold strings (e.g. camera \"54138969\"), found {kind} "
                             "values")
    bad = sorted(set(df["joint"].unique()) - set(skeleton.MPII_NAMES))
    if bad:
        raise TableError(f"{source}: unknown joint name(s) {bad[:5]} (expected MPII names {list(skeleton.MPII_NAMES)})")
    for name in schema.names:
        if name in STRING_COLUMNS:
            continue
        if not pd.api.types.is_numeric_dtype(df[name]):
            raise TableError(f"{source}: column {name!r} is not numeric (dtype {df[name].dtype})")
    _check_values(df, source)
    _check_layout(df, source)


def _check_values(df: pd.DataFrame, source: str) -> None:
    """Frame indices: integers in [0, 2³¹); confidences in [0, 1] (NaN allowed: no detection)."""
    frame = df["frame"]
    if not pd.api.types.is_integer_dtype(frame):
        raise TableError(f"{source}: column 'frame' must hold integers (the video's frame index), got {frame.dtype}")
    if len(frame) and (frame.min() < 0 or frame.max() >= 2**31):
        bad = int(frame.min()) if frame.min() < 0 else int(frame.max())
        raise TableError(f"{source}: frame index {bad} is outside [0, 2^31)")
    if "conf" in df.columns:
        conf = df["conf"].to_numpy(np.float64)
        outside = (conf < 0) | (conf > 1)
        if outside.any():
            raise TableError(f"{source}: confidence {conf[outside][0]:g} is outside [0, 1] (column 'conf', "
                             f"{int(outside.sum())} rows)")


def _check_layout(df: pd.DataFrame, source: str) -> None:
    groups = df.groupby(KEYS, sort=False, observed=True)["joint"]
    counts, distinct = groups.size(), groups.nunique()
    wrong = counts[(counts != skeleton.NUM_JOINTS) | (distinct != counts)]
    if len(wrong):
        key = wrong.index[0]
        subject, action, camera, frame = (k.item() if hasattr(k, "item") else k for k in key)
        where = f"{source}: subject {subject} action {action!r} camera {camera} frame {frame}"
        if counts[key] != skeleton.NUM_JOINTS:
            raise TableError(f"{where} has {counts[key]} joint rows, expected {skeleton.NUM_JOINTS}")
        names = df.loc[groups.groups[key], "joint"]
        raise TableError(f"{where} has joint {names[names.duplicated()].iloc[0]!r} twice and lacks "
                         f"{sorted(set(skeleton.MPII_NAMES) - set(names))}")


def sort_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Canonical row order: subject, action, camera, frame, then MPII joint index."""
    joint_idx = df["joint"].map(skeleton.JOINT_INDEX)
    order = df.assign(_j=joint_idx).sort_values(KEYS + ["_j"], kind="stable").index
    return df.loc[order].reset_index(drop=True)


def read_table(path: str | Path, schema: pa.Schema) -> pd.DataFrame:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"pose table not found: {path}")
    try:
        df = pq.read_table(path).to_pandas()
    except Exception as exc:
        raise TableError(f"{path}: not a readable Parquet file ({type(exc).__name__}: {exc})") from None
    check_table(df, schema, str(path))
    return df.astype({f.name: f.type.to_pandas_dtype() for f in schema if not pa.types.is_string(f.type)})


def read_pose2d(path: str | Path) -> pd.DataFrame:
    return read_table(path, POSE2D_SCHEMA)


def read_pseudo3d(path: str | Path) -> pd.DataFrame:
    return read_table(path, PSEUDO3D_SCHEMA)


SUBJECT_STATUS_KEY = "epipose.triangulate.subject_status"   # pseudo3d metadata: {subject: "ok" | "dropped: why"}


def pseudo3d_subjects(path: str | Path) -> tuple[set[str], dict[str, str]]:
    """The subjects with rows in a pseudo-label table, and triangulate's status of every subject it saw
    (its ``SUBJECT_STATUS_KEY`` metadata; {} for a table without it)."""
    subjects = set(read_pseudo3d(path)["subject"].unique())
    status = read_parquet_metadata(path).get(SUBJECT_STATUS_KEY)
    return subjects, json.loads(status) if status else {}


def read_predictions(path: str | Path) -> pd.DataFrame:
    """``epipose predict``'s table (PREDICTION_SCHEMA)."""
    return read_table(path, PREDICTION_SCHEMA)


def write_table(df: pd.DataFrame, path: str | Path, schema: pa.Schema, metadata: dict[str, str] | None = None) -> None:
    """Validate, sort and cast ``df`` to ``schema`` and write it atomically."""
    check_table(df, schema, str(path))
    df = sort_rows(df[schema.names])
    write_parquet(df, path, metadata=metadata, schema=schema)


def write_pose2d(df: pd.DataFrame, path: str | Path, metadata: dict[str, str] | None = None) -> None:
    write_table(df, path, POSE2D_SCHEMA, metadata)


def write_pseudo3d(df: pd.DataFrame, path: str | Path, metadata: dict[str, str] | None = None) -> None:
    write_table(df, path, PSEUDO3D_SCHEMA, metadata)


def to_dense(df: pd.DataFrame, columns: list[str]) -> tuple[pd.DataFrame, np.ndarray]:
    """Table → (keys DataFrame with one row per frame, array (F, 16, len(columns))).

    Requires every frame to have all 16 joints (``check_table`` guarantees it).
    """
    df = sort_rows(df)
    keys = df[KEYS].iloc[:: skeleton.NUM_JOINTS].reset_index(drop=True)
    values = df[columns].to_numpy().reshape(len(keys), skeleton.NUM_JOINTS, len(columns))
    return keys, values


def from_dense(keys: pd.DataFrame, values: np.ndarray, columns: list[str]) -> pd.DataFrame:
    """Inverse of ``to_dense``: keys (F rows) and values (F, 16, C) → a long table."""
    f, j, c = values.shape
    if j != skeleton.NUM_JOINTS or c != len(columns) or f != len(keys):
        raise ValueError(f"values of shape {values.shape} do not match {len(keys)} keys × 16 joints × {columns}")
    out = keys.loc[keys.index.repeat(j), KEYS].reset_index(drop=True)
    out["frame"] = out["frame"].astype(np.int32)
    out["joint"] = np.tile(np.asarray(skeleton.MPII_NAMES, dtype=object), f)
    flat = values.reshape(f * j, c)
    for i, name in enumerate(columns):
        out[name] = flat[:, i]
    return out


# --- frame keys (subject, action, camera, frame) ----------------------------------------------------
def key_groups(keys: pd.DataFrame) -> dict[tuple[str, ...], np.ndarray]:
    """Row indices per (subject, action, camera), sorted by key."""
    g = keys.groupby(["subject", "action", "camera"], sort=True).indices
    return {tuple(k): np.asarray(v) for k, v in g.items()}


def row_lookup(keys: pd.DataFrame, table_keys: pd.DataFrame) -> np.ndarray:
    """For each row of ``keys``, its row in ``table_keys`` (both with KEYS columns), -1 if absent."""
    def index(df: pd.DataFrame) -> pd.MultiIndex:
        return pd.MultiIndex.from_arrays([df[k].astype(str) if k != "frame" else df[k].astype(np.int64) for k in KEYS])

    return index(table_keys).get_indexer(index(keys))


# --- the 3D network's predictions on the training frames ---------------------------------------------
def write_pred3d(path: str | Path, keys: pd.DataFrame, pose_cam: np.ndarray, conf: np.ndarray,
                 metadata: dict[str, str] | None = None) -> None:
    """Write the predictions table (PRED3D_SCHEMA, rows sorted)."""
    values = np.concatenate([pose_cam, conf[..., None]], axis=-1)
    write_table(from_dense(keys, values, PRED3D_VALUES), path, PRED3D_SCHEMA, metadata)


def read_pred3d(path: str | Path) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """The predictions table → (keys, pose_cam (F, J, 3) mm, conf (F, J))."""
    keys, values = to_dense(read_table(path, PRED3D_SCHEMA), PRED3D_VALUES)
    return keys, values[..., :3].astype(np.float64), values[..., 3].astype(np.float64)
