"""What ``epipose predict`` writes besides its figures: the output folder checked first, predictions.parquet
(``PREDICTION_SCHEMA``, with its metadata) and the optional predictions.csv / predictions.json."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from epipose import skeleton
from epipose.data.pose_tables import KEYS, PREDICTION_VALUES, from_dense
from epipose.io import atomic_path, check_writable
from epipose.predict.box_sources import BoxSpec
from epipose.predict.inference import SourceResult
from epipose.predict_options import DEFAULT_FOCAL_FACTOR, PredictError, PredictOptions

TABLE_NAME = "predictions.parquet"


def check_out_dir(out_dir: str | Path) -> Path:
    """``--out``: a folder that exists or can be made, and is writable — checked before any work."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise PredictError(f"--out {out_dir}: is a file, not a folder")
    try:
        check_writable(out_dir / TABLE_NAME)
    except OSError as exc:
        raise PredictError(f"--out {out_dir}: {exc}") from None
    return out_dir


def prediction_table(results: list[SourceResult]) -> pd.DataFrame:
    """PREDICTION_SCHEMA rows of all results (subject = the input's stem; action, camera "")."""
    keys = pd.concat([pd.DataFrame({"subject": r.source.subject, "action": "", "camera": "",
                                    "frame": np.asarray(r.frames, dtype=np.int32)}) for r in results],
                     ignore_index=True)
    values = np.concatenate([np.concatenate([r.uv, r.pose, r.conf[..., None]], axis=-1) for r in results])
    return from_dense(keys[KEYS], values, PREDICTION_VALUES)


def table_metadata(model_path: str | Path, refiner_path: str | Path | None, boxes: BoxSpec, opts: PredictOptions,
                   box_mm: float, results: list[SourceResult]) -> dict[str, str]:
    """predictions.parquet's metadata: the models, where the boxes came from, the camera, scale and options."""
    box_note = ("--bbox" if boxes.bbox is not None else f"--boxes {boxes.table_path}" if boxes.table is not None
                else "detector" if boxes.detector is not None else "whole frame")
    return {
        "model": str(model_path), "refiner": str(refiner_path or ""), "boxes": box_note,
        "person_fraction": f"{boxes.framing.person_fraction:g}", "centre_shift": f"{boxes.framing.centre_shift:g}",
        "focal_px": f"{opts.focal:g}" if opts.focal else f"{DEFAULT_FOCAL_FACTOR:g} x the larger image side",
        "root_depth": f"{opts.root_depth_mm:g} mm" if opts.root_depth_mm else
                      f"focal x {box_mm:g} mm / crop side px",
        "xyz": "root-relative (pelvis at 0), camera frame (x right, y down, z forward), mm",
        "smooth_sigma_frames": f"{opts.smooth:g}", "flip_test": str(opts.flip_test),
        "low_confidence_inputs": json.dumps([r.source.subject for r in results if r.low_confidence]),
    }


def write_exports(results: list[SourceResult], table: pd.DataFrame, out_dir: Path, formats) -> list[Path]:
    """predictions.csv (the table's rows plus the frame's root position root_x/y/z, camera frame mm) and
    predictions.json (per input and frame: the root and each joint's uv, xyz, conf)."""
    files = []
    if "csv" in formats:
        roots = pd.concat([pd.DataFrame({"subject": r.source.subject, "frame": np.asarray(r.frames, dtype=np.int32),
                                         "root_x": r.root[:, 0], "root_y": r.root[:, 1], "root_z": r.root[:, 2]})
                           for r in results], ignore_index=True)
        files.append(out_dir / "predictions.csv")
        with atomic_path(files[-1]) as tmp:
            table.merge(roots, on=["subject", "frame"], how="left").to_csv(tmp, index=False, float_format="%.3f")
    if "json" in formats:
        doc = [{"input": r.source.path.name, "frames": [
            {"frame": int(f), "root_mm": np.round(r.root[i], 3).tolist(),
             "joints": {n: {"uv": np.round(r.uv[i, j], 3).tolist(), "xyz_mm": np.round(r.pose[i, j], 3).tolist(),
                            "conf": round(float(r.conf[i, j]), 4)} for j, n in enumerate(skeleton.MPII_NAMES)}}
            for i, f in enumerate(r.frames)]} for r in results]
        files.append(out_dir / "predictions.json")
        with atomic_path(files[-1]) as tmp:
            tmp.write_text(json.dumps(doc, indent=1) + "\n")
    return files
