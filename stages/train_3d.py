"""Stage train_3d: the 3D pose network, initialised from the 2D one, trained on the training subjects'
frames with 3D pseudo-labels (train_3d.target: pseudo3d, the paper's self-supervised setting) or the
ground truth (gt, the fully supervised baseline; ``--target gt`` overrides the param).

Writes the network, its metrics, dvclive curves, a resumable checkpoint folder and (``--pred-out``)
its predictions on the training frames, back-projected at the labels' root depth (the refiner's input).
With ``compute.nproc: N`` > 1 run it as ``python -m epipose.launch stages/train_3d.py ...`` (dvc.yaml
does): torchrun, DistributedDataParallel; rank 0 predicts and writes the outputs.
"""

import argparse
import dataclasses
import sys
import time

import numpy as np

from epipose.camera import load_rig
from epipose.compute import load_compute, setup_runtime
from epipose.data.pose_tables import write_pred3d
from epipose.data.transforms import AugmentParams
from epipose.io import check_writable, write_results
from epipose.launch import run_stage, stage_logger
from epipose.models.pose_net import ModelParams, save_pose_net
from epipose.params import load_section, load_value
from epipose.pipeline.train_3d import Train3DParams, final_fit, summary, train_3d


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--frames", required=True, help="frame shards folder, <frames>/<subject>/<action>.<camera>.parquet")
    parser.add_argument("--pose2d", required=True, help="the 2D network to start from, e.g. models/pose2d.pt")
    parser.add_argument("--pseudo3d", default=None, help="pseudo-label table, e.g. data/pseudo3d.parquet (target pseudo3d)")
    parser.add_argument("--target", choices=["pseudo3d", "gt"], default=None,
                        help="override param train_3d.target (the fully supervised baseline stage passes gt)")
    parser.add_argument("--out", required=True, help="the trained network, e.g. models/pose3d.pt")
    parser.add_argument("--metrics", required=True, help="flat metrics JSON, e.g. metrics/train_3d.json")
    parser.add_argument("--report", required=True, help="detailed report JSON, e.g. reports/train_3d.json")
    parser.add_argument("--timings", default=None, help="seconds taken, JSON (not a metric), e.g. timings/train_3d.json")
    parser.add_argument("--pred-out", default=None, help="predictions on the training frames, e.g. data/pred3d_train.parquet")
    parser.add_argument("--live-dir", required=True, help="dvclive folder for the training curves")
    parser.add_argument("--ckpt-dir", required=True, help="per-epoch checkpoint folder (persist: true, for resume)")
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args()
    check_writable(args.out, args.metrics, args.report, args.timings, args.pred_out, args.live_dir, args.ckpt_dir)        # before any work
    compute = load_compute(args.params)
    model_params = load_section(ModelParams, "model", args.params)
    params = load_section(Train3DParams, "train_3d", args.params)
    aug = load_section(AugmentParams, "augment", args.params)
    h36m_root = load_value("data", "h36m_root", str, args.params)
    params = dataclasses.replace(params, target=args.target or params.target)
    rig = load_rig(f"{h36m_root}/cameras.json")

    t0 = time.perf_counter()
    run = train_3d(args.frames, args.pose2d, rig, model_params, params, aug, args.ckpt_dir, args.live_dir,
                   pseudo3d_path=args.pseudo3d, h36m_root=h36m_root if params.target == "gt" else None,
                   runtime=setup_runtime(compute, params.threads), progress=not args.no_progress)
    train_seconds = time.perf_counter() - t0
    if not run.fit.runtime.is_main:
        return
    model = run.fit.model
    scored, pred, fit_mpjpe = final_fit(run, rig, params, for_refiner=bool(args.pred_out), progress=not args.no_progress)
    meta = {"depth_range_mm": params.depth_range_mm, "target": params.target, "crop_size": run.cache.crop_size,
            "subjects": list(params.subjects), "train_target_mpjpe_mm": round(fit_mpjpe, 2)}
    save_pose_net(model, args.out, meta=meta)
    if args.pred_out:
        write_pred3d(args.pred_out, scored.keys, pred["pose_cam"], pred["conf"],
                     metadata={"model": args.out, "target": params.target, "flip_test": str(params.flip_test),
                               "root_depth": f"the {params.target} labels' pelvis depth"})
    history = run.fit.history
    info = dict(run.info)
    timings = {"decode_seconds": info.pop("decode_seconds"), "train_seconds": round(train_seconds, 1),
               "seconds": round(time.perf_counter() - t0, 1)}
    report = {**info, "epochs": params.epochs,
              "final_train_loss": round(history[-1]["train_loss"], 6) if history else None,
              "train_target_mpjpe_mm": round(fit_mpjpe, 2), "train_target_frames": len(scored.keys),
              "predicted_frames": int(np.isfinite(pred["pose_cam"]).all(axis=(1, 2)).sum())}
    write_results(summary(report), args.metrics, report, args.report, timings, args.timings)
    stage_logger().info("%s: %d frames, root-relative error vs its labels %.1f mm, %.0f s → %s", params.target,
                        len(run.cache), fit_mpjpe, timings["seconds"], args.out)


if __name__ == "__main__":
    sys.exit(run_stage(main))
