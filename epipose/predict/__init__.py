"""``epipose predict``: the trained 3D network (and refiner) on a user's images, folders or videos.

One RGB image is enough. Each image (or video frame) is cut into a square person crop framed like
the network's training crops, run through ``epipose.models.inference.infer_3d`` — the one inference
path, also used by train_3d and the evaluate stage — optionally refined
(``epipose.models.refiner.refine_poses``) and, for videos, optionally smoothed over time.

One module per job: ``inputs`` (images, videos, folders found and read), ``box_sources`` (where each
frame's person box comes from), ``boxes`` (box → crop square, the camera and the root depth),
``inference`` (the models loaded, batched inference, refiner, smoothing), ``exports`` (the Parquet
table, CSV, JSON) and ``render`` (PNG and MP4 figures); ``predict`` below runs them in that order.
The options, defaults and crop convention are torch-free, in ``epipose.predict_options``.

**The person crop.** A person box ``x0,y0,x1,y1`` (``--bbox``, ``--boxes`` or ``--detector``, tight
around the person, head top to feet) is clipped to the image (refused when less than half of it lies
inside) and becomes the square the model's training crops would have cut: side ``max(w, h) /
person_fraction``, centred ``centre_shift`` × that side above the box centre (``CropConvention``). The
model says how its crops were cut (its meta ``crop``: train_3d copies the frames' crop.json, written by
extract_frames), and ``crop_convention`` turns that into the framing, from medians measured on the default
data (``benchmarks/boxes.py``): the paper's ``gt`` crops (the projection of a ``frames.box_mm`` square
around the ground-truth pelvis: a person box of 1598 mm, 0.80 of the side at 2000 mm, its centre 82 mm
below the crop's) or the default ``auto`` crops (cut from the person's silhouette, side = the tallest
silhouette within ``frames.box_window_s`` / ``frames.person_fraction``: a person box 0.862 × that
height; 0.82 of the side at the defaults). A model without it is framed as ``gt`` crops at 2000 mm.
``--person-fraction`` overrides the fraction. Boxes may instead be given as ``x0,y0,size`` — the crop
square itself, the frame shards' convention — used as is. Without any box the whole frame is the person
crop (the square of side ``max(W, H)`` centred on the frame, black padding): the person should then
fill ~80% of the frame's height. A local torchvision Faster R-CNN file (``--detector``) can supply the
boxes; nothing is downloaded.

What a single box cannot carry: the ``auto`` crops keep a person's standing size (the tallest silhouette
of a 2-s window), predict frames each frame by its own box, so a sitting or bending person is cropped
tighter than in training; sparse boxes are interpolated but not smoothed.

**The camera and the scale.** Without calibration the camera is a pinhole with focal
``--focal`` px, else ``DEFAULT_FOCAL_FACTOR`` = 1.15 × the larger image side (Human3.6M's field of
view), principal point at the image centre, no lens distortion. The root (pelvis) depth is
``--root-depth`` mm, else from the box: the crop is taken as the projection of a ``box_mm`` square at
the pelvis (the model's meta ``box_mm``, from its crops' ``frames.box_mm``; else 2000 mm), so
``Z_root = focal × box_mm / crop side px`` — exact for ``gt`` crops; for another crop of the person,
off by the factor ``gt`` crop side / its side. The root-relative x, y, z (mm, camera frame: x right, y down, z
forward) then follow from the crop size alone — the focal cancels out up to perspective effects of
the depth offsets — so the default focal is harmless.

Outputs (``--out DIR``): ``predictions.parquet`` (``PREDICTION_SCHEMA``: subject = the input's
file stem, action and camera "", frame, joint, u, v in input pixels, root-relative x, y, z mm,
conf), one PNG per image (the input with the 2D skeleton, beside the 3D skeleton) and one MP4
per video (the same per frame).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from epipose import skeleton
from epipose.data.pose_tables import PREDICTION_SCHEMA, write_table
from epipose.predict.box_sources import BoxSpec, PersonDetector, parse_bbox, read_boxes
from epipose.predict.exports import TABLE_NAME, check_out_dir, prediction_table, table_metadata, write_exports
from epipose.predict.inference import SourceResult, flag_low_confidence, load_models, pick_device, predict_sources
from epipose.predict.inputs import collect_sources
from epipose.predict.render import write_figures
from epipose.predict_options import (CROP, CropConvention, PredictError, PredictOptions, auto_convention,
                                     crop_convention, gt_convention)

__all__ = ["predict", "PredictOutput", "PredictOptions", "PredictError", "BoxSpec", "parse_bbox", "read_boxes",
           "PersonDetector", "pick_device", "CROP", "CropConvention", "crop_convention",
           "gt_convention", "auto_convention"]

log = logging.getLogger(__name__)


@dataclass
class PredictOutput:
    results: list[SourceResult]
    table: pd.DataFrame
    files: list[Path]


def predict(inputs: list[str | Path], model_path: str | Path, out_dir: str | Path, refiner_path: str | Path | None = None,
            boxes: BoxSpec | None = None, opts: PredictOptions | None = None, device: str = "auto") -> PredictOutput:
    """Predict every input's poses and write ``out_dir``/predictions.parquet (+ figures)."""
    opts = opts or PredictOptions()
    boxes = boxes or BoxSpec()
    out_dir = check_out_dir(out_dir)
    sources = collect_sources(inputs)
    models = load_models(model_path, refiner_path, device)
    convention, source = crop_convention(models.meta)
    boxes = dataclasses.replace(boxes, convention=convention)
    log.info("person boxes framed as %s: crop side = box side / %.3g, centre %.3g x side above the box's",
             source, boxes.framing.person_fraction, convention.centre_shift)
    if models.refiner_flip_test not in (None, opts.flip_test):
        log.warning("the refiner %s was trained on %s predictions, these are %s: it corrects what it has not seen",
                    refiner_path, *("flip-averaged" if f else "single-view" for f in (models.refiner_flip_test, opts.flip_test)))
    results = predict_sources(sources, models, boxes, opts)
    flag_low_confidence(results, opts.warn_conf)
    table = prediction_table(results)
    files = [out_dir / TABLE_NAME]
    write_table(table, files[0], PREDICTION_SCHEMA,
                table_metadata(model_path, refiner_path, boxes, opts, models.box_mm, results))
    files += write_exports(results, table, out_dir, opts.export)
    if opts.figures:
        files += write_figures(results, out_dir, opts.progress, opts.kpt_thr)
    log.info("predicted %d frames of %d input(s) → %s", len(table) // skeleton.NUM_JOINTS, len(sources), out_dir)
    return PredictOutput(results, table, files)
