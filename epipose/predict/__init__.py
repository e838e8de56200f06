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
around the person, head top to feet) becomes the square of side ``max(w, h) / 0.82``, centred 4% of
that side above the box centre (``CropConvention``: the medians of the person's extent in the paper's
crops, ``frames.boxes: gt`` — the projection of a ``frames.box_mm`` = 2000 mm square around the
ground-truth pelvis — on the default synthetic data). Boxes may instead be given as ``x0,y0,size`` —
the crop square itself, the frame shards' convention — used as is. Without any box the whole frame is
the person crop (the square of side ``max(W, H)`` centred on the frame, black padding): the person
should then fill ~80% of the frame's height. A local torchvision Faster R-CNN file (``--detector``)
can supply the boxes; nothing is downloaded.

**Where this differs from the training crops.** The default training crops are not the ``gt`` crops
that convention was measured on: ``frames.boxes: auto`` (``params.yaml``, ``epipose.data.boxes``)
cuts them from the person's silhouette against the room's background — side = the tallest silhouette
within ``frames.box_window_s`` (2 s) / ``frames.person_fraction`` (0.95), centre 0.07 × the side above
the silhouette's — fitted to approximate the ``gt`` crops (README, "The person boxes": crop side /
``gt`` crop side median 1.01, 5th–95th percentile 0.93–1.17, on the previous default data). predict
frames each frame's own box instead: a sitting or bending person's tight box gives a smaller crop,
where the training crops keep the standing size; sparse boxes are interpolated but not smoothed;
and nothing in the model file says how its crops were made, so a model trained on other crops is
still framed this way.

**The camera and the scale.** Without calibration the camera is a pinhole with focal
``--focal`` px, else ``DEFAULT_FOCAL_FACTOR`` = 1.15 × the larger image side (Human3.6M's field of
view), principal point at the image centre, no lens distortion. The root (pelvis) depth is
``--root-depth`` mm, else from the box: the crop is taken as the projection of a ``box_mm`` square at
the pelvis (the model's meta ``box_mm`` where present, else 2000 mm; train_3d does not write it), so
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
from epipose.predict_options import CROP, CropConvention, PredictError, PredictOptions

__all__ = ["predict", "PredictOutput", "PredictOptions", "PredictError", "BoxSpec", "parse_bbox", "read_boxes",
           "PersonDetector", "pick_device", "CROP", "CropConvention"]

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
