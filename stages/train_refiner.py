"""Stage train_refiner: the Martinez-style MLP on the 3D network's root-relative predictions on the
training frames, against the root-relative pseudo-labels. Runs under ``python -m epipose.launch`` like
the other training stages (``compute.nproc``)."""

import sys

from epipose.compute import setup_runtime
from epipose.io import write_results
from epipose.launch import check_outputs, run_stage, stage_parser
from epipose.pipeline.train_refiner import TrainRefinerPaths, load_params, run


def main() -> None:
    parser = stage_parser(__doc__)
    parser.add_argument("--pred3d", required=True, help="the 3D network's training-frame predictions, e.g. data/pred3d_train.parquet")
    parser.add_argument("--pseudo3d", required=True, help="pseudo-label table, e.g. data/pseudo3d.parquet")
    parser.add_argument("--out", required=True, help="the trained refiner, e.g. models/refiner.pt")
    parser.add_argument("--live-dir", required=True, help="dvclive folder for the training curves")
    parser.add_argument("--ckpt-dir", required=True, help="per-epoch checkpoint folder (persist: true, for resume)")
    args = parser.parse_args()
    paths = TrainRefinerPaths(args.pred3d, args.pseudo3d, args.out, args.live_dir, args.ckpt_dir)
    check_outputs(paths, args)                                   # before any work
    params = load_params(args.params)
    result = run(paths, params, setup_runtime(params.compute, params.refiner.threads, progress=not args.no_progress))
    write_results(result, args.metrics, args.report, args.timings)


if __name__ == "__main__":
    sys.exit(run_stage(main))
