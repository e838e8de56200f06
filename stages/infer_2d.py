"""Stage infer_2d: the 2D network on every frame shard → data/pose2d.parquet, and its 2D error.

With ``compute.nproc: N`` > 1 run it as ``python -m epipose.launch stages/infer_2d.py ...`` (dvc.yaml
does): the shards are split over N torchrun processes; rank 0 writes the outputs.
"""

import argparse
import sys
import time

from epipose.compute import load_compute, setup_runtime
from epipose.io import check_writable, write_results
from epipose.launch import run_stage, stage_logger
from epipose.params import load_section, load_value
from epipose.pipeline.infer_2d import Infer2DParams, run_infer_2d, summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--frames", required=True, help="frame shards folder, <frames>/<subject>/<action>.<camera>.parquet")
    parser.add_argument("--model", required=True, help="the 2D network, e.g. models/pose2d.pt")
    parser.add_argument("--out", required=True, help="output pose table, e.g. data/pose2d.parquet")
    parser.add_argument("--metrics", required=True, help="flat metrics JSON, e.g. metrics/infer_2d.json")
    parser.add_argument("--report", required=True, help="detailed report JSON, e.g. reports/infer_2d.json")
    parser.add_argument("--timings", default=None, help="seconds taken, JSON (not a metric), e.g. timings/infer_2d.json")
    parser.add_argument("--gt-root", default=None, help="Human3.6M-layout root, for the 2D error against the projected ground truth")
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args()
    check_writable(args.out, args.metrics, args.report, args.timings)        # before any work
    compute = load_compute(args.params)
    params = load_section(Infer2DParams, "infer_2d", args.params)
    num_joints = load_value("model", "num_joints", int, args.params)
    rt = setup_runtime(compute, params.threads)
    t0 = time.perf_counter()
    report = run_infer_2d(args.frames, args.model, args.out, params, num_joints=num_joints, gt_root=args.gt_root,
                           runtime=rt, progress=not args.no_progress)
    if rt.is_main:
        write_results(summary(report), args.metrics, report, args.report,
                      {"seconds": round(time.perf_counter() - t0, 1)}, args.timings)
        if "median_px" in report:
            stage_logger().info("%d frames, median 2D error %.2f px, PCKh@0.5 %.1f%%", report["frames"],
                                report["median_px"], report["pckh@0.5"])


if __name__ == "__main__":
    sys.exit(run_stage(main))
