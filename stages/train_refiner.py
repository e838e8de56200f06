"""Stage train_refiner: the Martinez-style MLP on the 3D network's root-relative predictions on the
training frames, against the root-relative pseudo-labels. Runs under ``python -m epipose.launch`` like
the other training stages (``compute.nproc``)."""

import argparse
import sys
import time

from epipose.compute import load_compute, setup_runtime
from epipose.io import check_writable, write_results
from epipose.launch import run_stage
from epipose.models.refiner import save_refiner
from epipose.params import load_section, load_value
from epipose.pipeline.train_refiner import RefinerParams, refiner_data, summary, train_refiner


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pred3d", required=True, help="the 3D network's training-frame predictions, e.g. data/pred3d_train.parquet")
    parser.add_argument("--pseudo3d", required=True, help="pseudo-label table, e.g. data/pseudo3d.parquet")
    parser.add_argument("--out", required=True, help="the trained refiner, e.g. models/refiner.pt")
    parser.add_argument("--metrics", required=True, help="flat metrics JSON, e.g. metrics/train_refiner.json")
    parser.add_argument("--report", required=True, help="detailed report JSON, e.g. reports/train_refiner.json")
    parser.add_argument("--timings", default=None, help="seconds taken, JSON (not a metric), e.g. timings/train_refiner.json")
    parser.add_argument("--live-dir", required=True, help="dvclive folder for the training curves")
    parser.add_argument("--ckpt-dir", required=True, help="per-epoch checkpoint folder (persist: true, for resume)")
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args()
    check_writable(args.out, args.metrics, args.report, args.timings, args.live_dir, args.ckpt_dir)        # before any work
    compute = load_compute(args.params)
    params = load_section(RefinerParams, "refiner", args.params)
    num_joints = load_value("model", "num_joints", int, args.params)

    t0 = time.perf_counter()
    data = refiner_data(args.pred3d, args.pseudo3d, params.min_views, params.max_reproj_err)
    result, info = train_refiner(data, params, args.ckpt_dir, args.live_dir, num_joints,
                                 runtime=setup_runtime(compute, params.threads), progress=not args.no_progress)
    if result.runtime.is_main:
        save_refiner(result.model, args.out, meta={"target": "pseudo3d", **info})
        report = {**info, "target": "pseudo3d", "epochs": params.epochs}
        write_results(summary(report), args.metrics, report, args.report,
                      {"seconds": round(time.perf_counter() - t0, 1)}, args.timings)


if __name__ == "__main__":
    sys.exit(run_stage(main))
