"""Stage pretrain_2d: train the 2D pose network on MPII-layout data, report PCKh@0.5 on its valid split.

With ``compute.nproc: N`` > 1 run it as ``python -m epipose.launch stages/pretrain_2d.py ...`` (dvc.yaml
does): torchrun, DistributedDataParallel; rank 0 writes the outputs.
"""

import sys

from epipose.compute import setup_runtime
from epipose.io import write_results
from epipose.launch import check_outputs, run_stage, stage_parser
from epipose.pipeline.pretrain_2d import Pretrain2DPaths, load_params, run


def main() -> None:
    parser = stage_parser(__doc__)
    parser.add_argument("--mpii", required=True, help="MPII-layout root (images/, annot/train.json, annot/valid.json)")
    parser.add_argument("--out", required=True, help="the trained network, e.g. models/pose2d.pt")
    parser.add_argument("--live-dir", required=True, help="dvclive folder for the training curves")
    parser.add_argument("--ckpt-dir", required=True, help="per-epoch checkpoint folder (persist: true, for resume)")
    args = parser.parse_args()
    paths = Pretrain2DPaths(args.mpii, args.out, args.live_dir, args.ckpt_dir)
    check_outputs(paths, args)                                   # before any work
    params = load_params(args.params)
    result = run(paths, params, setup_runtime(params.compute, params.pretrain_2d.threads, progress=not args.no_progress))
    write_results(result, args.metrics, args.report, args.timings)


if __name__ == "__main__":
    sys.exit(run_stage(main))
