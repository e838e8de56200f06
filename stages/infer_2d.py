"""Stage infer_2d: the 2D network on every frame shard → data/pose2d.parquet, and its 2D error.

With ``compute.nproc: N`` > 1 run it as ``python -m epipose.launch stages/infer_2d.py ...`` (dvc.yaml
does): the shards are split over N torchrun processes; rank 0 writes the outputs.
"""

import sys

from epipose.compute import setup_runtime
from epipose.io import write_results
from epipose.launch import check_outputs, run_stage, stage_parser
from epipose.pipeline.infer_2d import Infer2DPaths, load_params, run


def main() -> None:
    parser = stage_parser(__doc__)
    parser.add_argument("--frames", required=True, help="frame shards folder, <frames>/<subject>/<action>.<camera>.parquet")
    parser.add_argument("--model", required=True, help="the 2D network, e.g. models/pose2d.pt")
    parser.add_argument("--out", required=True, help="output pose table, e.g. data/pose2d.parquet")
    parser.add_argument("--gt-root", default=None, help="Human3.6M-layout root, for the 2D error against the projected ground truth")
    args = parser.parse_args()
    paths = Infer2DPaths(args.frames, args.model, args.out, args.gt_root)
    check_outputs(paths, args)                                   # before any work
    params = load_params(args.params)
    result = run(paths, params, setup_runtime(params.compute, params.infer_2d.threads, progress=not args.no_progress))
    write_results(result, args.metrics, args.report, args.timings)


if __name__ == "__main__":
    sys.exit(run_stage(main))
