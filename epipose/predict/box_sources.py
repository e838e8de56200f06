"""Where each frame's person box comes from in ``epipose predict``: one ``--bbox`` for all, a ``--boxes``
table (CSV or JSON; sparse frames of a video are interpolated), a local torchvision Faster R-CNN
(``--detector``; nothing is downloaded), or none (the whole frame)."""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from epipose.io import first_line
from epipose.predict.boxes import clip_person_box, interpolate_box, person_crop_box, whole_frame_box
from epipose.predict_options import CROP, CropConvention, PredictError

log = logging.getLogger(__package__)     # "epipose.predict": every module of the command logs under its name

DETECTOR_SCORE = 0.5            # the detector's least score for a person box


def parse_bbox(text: str) -> tuple[float, float, float, float]:
    """``--bbox "x0,y0,x1,y1"`` → floats (x1 > x0, y1 > y0)."""
    try:
        vals = tuple(float(v) for v in text.split(","))
    except ValueError:
        vals = ()
    if len(vals) != 4 or not all(math.isfinite(v) for v in vals):
        raise PredictError(f"--bbox {text!r}: expected four numbers x0,y0,x1,y1")
    if vals[2] <= vals[0] or vals[3] <= vals[1]:
        raise PredictError(f"--bbox {text!r}: needs x1 > x0 and y1 > y0")
    return vals


def read_boxes(path: str | Path) -> pd.DataFrame:
    """A box table (CSV, or JSON: a list of records) → DataFrame with ``source``, ``frame`` and either
    ``x0, y0, x1, y1`` (person boxes) or ``x0, y0, size`` (crop squares, the frame shards' convention).

    ``source`` (optional): the input's file name or stem (rows without it apply to every input);
    ``frame`` (optional, default 0): the frame index in a video, 0 for an image.
    """
    path = Path(path)
    if not path.exists():
        raise PredictError(f"--boxes: file not found: {path}")
    try:
        if path.suffix.lower() == ".json":
            records = json.loads(path.read_text())
            if isinstance(records, dict):
                records = [records]
            df = pd.DataFrame.from_records(records)
        else:
            df = pd.read_csv(path)
    except (ValueError, TypeError, OSError, pd.errors.ParserError) as exc:
        raise PredictError(f"--boxes {path}: not a readable box table ({type(exc).__name__}: {exc})") from None
    if {"x0", "y0", "x1", "y1"} <= set(df.columns):
        cols = ["x0", "y0", "x1", "y1"]
    elif {"x0", "y0", "size"} <= set(df.columns):
        cols = ["x0", "y0", "size"]
    else:
        raise PredictError(f"--boxes {path}: needs columns x0,y0,x1,y1 (person boxes) or x0,y0,size (crop squares), "
                           f"has {list(df.columns)}")
    if "frame" not in df.columns:
        df["frame"] = 0
    if "source" not in df.columns:
        df["source"] = ""
    try:
        df[cols] = df[cols].astype(np.float64)
        df["frame"] = df["frame"].astype(np.int64)
    except (ValueError, TypeError) as exc:
        raise PredictError(f"--boxes {path}: non-numeric box or frame values ({exc})") from None
    if not np.isfinite(df[cols].to_numpy()).all():
        raise PredictError(f"--boxes {path}: missing or non-finite box values")
    df["source"] = df["source"].fillna("").astype(str)
    if df.duplicated(["source", "frame"]).any():
        dup = df[df.duplicated(["source", "frame"])].iloc[0]
        raise PredictError(f"--boxes {path}: two boxes for source {dup.source!r} frame {dup.frame}")
    return df[["source", "frame", *cols]]


@dataclass
class BoxSpec:
    """Where each frame's person box comes from: one ``bbox`` for all, a ``table``, a detector, or none."""

    bbox: tuple[float, float, float, float] | None = None
    table: pd.DataFrame | None = None
    table_path: str = ""
    detector: "PersonDetector | None" = None
    fraction: float | None = None                # --person-fraction: overrides the convention's
    convention: CropConvention = CROP            # the model's (``predict`` sets it: ``crop_convention``)

    @property
    def framing(self) -> CropConvention:
        """The convention person boxes are framed by: the model's, with ``fraction`` where given."""
        return self.convention if self.fraction is None else replace(self.convention, person_fraction=self.fraction)

    def crop_box(self, source: Path, frame: int, image: np.ndarray) -> tuple[float, float, float]:
        """The crop square (x0, y0, size) of ``source``'s frame ``frame`` (``image``: RGB)."""
        h, w = image.shape[:2]
        where = f"{source} frame {frame}"
        if self.bbox is not None:
            return person_crop_box(clip_person_box(self.bbox, w, h, where), self.framing)
        if self.table is not None:
            t = self.table
            rows = t[t["source"].isin([source.name, source.stem])]
            if rows.empty:
                rows = t[t["source"] == ""]
            if rows.empty:
                raise PredictError(f"--boxes {self.table_path}: no box for {source.name}")
            box = interpolate_box(rows, frame)
            if "size" in rows.columns:
                return tuple(box)
            return person_crop_box(clip_person_box(tuple(box), w, h, where), self.framing)
        if self.detector is not None:
            box = self.detector([image])[0]
            if box is not None:
                return person_crop_box(clip_person_box(box, w, h, where), self.framing)
            log.warning("%s frame %d: no person detected; the whole frame is the crop", source, frame)
        return whole_frame_box(w, h)


class PersonDetector:
    """A local torchvision Faster R-CNN (COCO weights file: ResNet-50 FPN or MobileNetV3 320 FPN) →
    the highest-scoring person box per image (None below ``DETECTOR_SCORE``). Nothing is downloaded."""

    def __init__(self, path: str | Path, device: torch.device):
        from torchvision.models import detection

        path = Path(path)
        if not path.exists():
            raise PredictError(f"--detector: weights file not found: {path}")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise PredictError(f"--detector {path}: not a readable weights file ({first_line(exc)})") from None
        state = state.get("model", state) if isinstance(state, dict) else state
        if not isinstance(state, dict):
            raise PredictError(f"--detector {path}: expected a state dict")
        if any(k.startswith("backbone.body.layer1") for k in state):
            build = detection.fasterrcnn_resnet50_fpn
        elif any(k.startswith("backbone.body.0") or k.startswith("backbone.body.features") for k in state):
            build = detection.fasterrcnn_mobilenet_v3_large_320_fpn
        else:
            raise PredictError(f"--detector {path}: not a torchvision Faster R-CNN (ResNet-50 FPN or "
                               "MobileNetV3-Large 320 FPN) state dict")
        model = build(weights=None, weights_backbone=None, num_classes=91)
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            raise PredictError(f"--detector {path}: weights do not match {build.__name__} ({exc})") from None
        self.model, self.device = model.eval().to(device), device

    @torch.inference_mode()
    def __call__(self, images: list[np.ndarray]) -> list[tuple[float, float, float, float] | None]:
        batch = [torch.from_numpy(np.ascontiguousarray(im)).permute(2, 0, 1).float().div(255).to(self.device)
                 for im in images]
        out = []
        for det in self.model(batch):
            keep = (det["labels"] == 1) & (det["scores"] >= DETECTOR_SCORE)    # COCO "person"
            if not keep.any():
                out.append(None)
                continue
            best = int(torch.argmax(torch.where(keep, det["scores"], -1.0)))
            out.append(tuple(float(v) for v in det["boxes"][best].cpu()))
        return out
