"""Stage train_3d: the 3D pose network, initialised from the 2D one, trained on the training subjects'
frames with 3D pseudo-labels (train_3d.target: pseudo3d, the paper's self-supervised setting) or the
ground truth (gt, the fully supervised baseline; ``--target gt`` overrides the param).

Writes the network, its metrics, dvclive curves, a resumable checkpoint folder and (``--pred-out``)
its predictions on the training frames, back-projected at the labels' root depth (the refiner's input).
With ``compute.nproc: N`` > 1 run it as ``python -m epipose.launch stages/train_3d.py ...`` (dvc.yaml
does): torchrun, DistributedDataParallel; rank 0 predicts and writes the outputs.
"""

import sys

from epipose.compute import setup_runtime
from epipose.io import write_results
from epipose.launch import check_outputs, run_stage, stage_parser
from epipose.pipeline.train_3d import Train3DPaths, load_params, run


def main() -> None:
    parser = stage_parser(__doc__)
    parser.add_argument("--frames", required=True, help="frame shards folder, <frames>/<subject>/<action>.<camera>.parquet")
    parser.add_argument("--pose2d", required=True, help="the 2D network to start from, e.g. models/pose2d.pt")
    parser.add_argument("--pseudo3d", default=None, help="pseudo-label table, e.g. data/pseudo3d.parquet (target pseudo3d)")
    parser.add_argument("--target", choices=["pseudo3d", "gt"], default=None,
                        help="override param train_3d.target (the fully supervised baseline stage passes gt)")
    parser.add_argument("--out", required=True, help="the trained network, e.g. models/pose3d.pt")
    parser.add_argument("--pred-out", default=None, help="predictions on the training frames, e.g. data/pred3d_train.parquet")
    parser.add_argument("--live-dir", required=True, help="dvclive folder for the training curves")
    parser.add_argument("--ckpt-dir", required=True, help="per-epoch checkpoint folder (persist: true, for resume)")
    args = parser.parse_args()
    paths = Train3DPaths(args.frames, args.pose2d, args.pseudo3d, args.out, args.live_dir, args.ckpt_dir, args.pred_out)
    check_outputs(paths, args)                                   # before any work
    params = load_params(args.params, target=args.target)
    result = run(paths, params, setup_runtime(params.compute, params.train_3d.threads, progress=not args.no_progress))
    write_results(result, args.metrics, args.report, args.timings)


if __name__ == "__main__":
    sys.exit(run_stage(main))
