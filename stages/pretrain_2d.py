"""Stage pretrain_2d: train the 2D pose network on MPII-layout data, report PCKh@0.5 on its valid split.

With ``compute.nproc: N`` > 1 run it as ``python -m epipose.launch stages/pretrain_2d.py ...`` (dvc.yaml
does): torchrun, DistributedDataParallel; rank 0 writes the outputs.
"""

import argparse
import sys
import time

from epipose.compute import load_compute, setup_runtime
from epipose.data.transforms import AugmentParams
from epipose.io import check_writable, write_results
from epipose.launch import run_stage, stage_logger
from epipose.models.pose_net import load_model_params, save_pose_net
from epipose.params import load_section
from epipose.pipeline.pretrain_2d import Pretrain2DParams, pretrain_2d, summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mpii", required=True, help="MPII-layout root (images/, annot/train.json, annot/valid.json)")
    parser.add_argument("--out", required=True, help="the trained network, e.g. models/pose2d.pt")
    parser.add_argument("--metrics", required=True, help="flat metrics JSON, e.g. metrics/pretrain_2d.json")
    parser.add_argument("--report", required=True, help="detailed report JSON, e.g. reports/pretrain_2d.json")
    parser.add_argument("--timings", default=None, help="seconds taken, JSON (not a metric), e.g. timings/pretrain_2d.json")
    parser.add_argument("--live-dir", required=True, help="dvclive folder for the training curves")
    parser.add_argument("--ckpt-dir", required=True, help="per-epoch checkpoint folder (persist: true, for resume)")
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args()
    check_writable(args.out, args.metrics, args.report, args.timings, args.live_dir, args.ckpt_dir)        # before any work
    compute = load_compute(args.params)
    model_params = load_model_params(args.params)        # not model.depth_bins: the 2D network has none
    params = load_section(Pretrain2DParams, "pretrain_2d", args.params)
    aug = load_section(AugmentParams, "augment", args.params)

    t0 = time.perf_counter()
    result, report, info = pretrain_2d(args.mpii, model_params, params, aug, args.ckpt_dir, args.live_dir,
                                       runtime=setup_runtime(compute, params.threads), progress=not args.no_progress)
    if report is not None:                      # the main process
        seconds = time.perf_counter() - t0
        timings = {"seconds": round(seconds, 1), "decode_seconds": info.pop("decode_seconds")}
        save_pose_net(result.model, args.out, meta={"pckh@0.5": report["pckh@0.5"], "mpii_root": str(args.mpii),
                                                         "skeleton_scale": report["skeleton_scale"],
                                                         "skeleton_scale_flip_test": params.flip_test})
        write_results(summary(report), args.metrics, {**report, **info, "epochs": params.epochs}, args.report,
                      timings, args.timings)
        stage_logger().info("PCKh@0.5 %.2f%% on %d valid joints, %.0f s → %s", report["pckh@0.5"], report["count"],
                            seconds, args.out)


if __name__ == "__main__":
    sys.exit(run_stage(main))
