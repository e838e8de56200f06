"""Stage evaluate: the 3D network (+ refiner, + the fully supervised baseline) on the test subjects
with the paper's protocol → flat metrics (``<role>.<metric>``), the detailed report JSON, the plots'
tables, figures and the markdown report. One process, whatever ``compute.nproc``; on ``compute.device``."""

import sys

from epipose.compute import setup_runtime
from epipose.io import write_results
from epipose.launch import check_outputs, run_stage, stage_parser
from epipose.pipeline.evaluate import EvaluatePaths, load_params, run


def main() -> None:
    parser = stage_parser(__doc__)
    parser.add_argument("--frames", required=True, help="frame shards folder, <frames>/<subject>/<action>.<camera>.parquet")
    parser.add_argument("--model", required=True, help="the 3D network, e.g. models/pose3d.pt")
    parser.add_argument("--refiner", default=None, help="the refiner, e.g. models/refiner.pt (optional)")
    parser.add_argument("--baseline", default=None, help="the fully supervised network, e.g. models/pose3d_gt.pt (optional)")
    parser.add_argument("--plots", required=True, help="folder for the plots' TSVs (eval_*.tsv), e.g. reports/plots")
    parser.add_argument("--figures", default=None, help="folder of PNGs (examples, curves), e.g. reports/figures")
    parser.add_argument("--markdown", default=None, help="generated markdown report, e.g. reports/results.md")
    parser.add_argument("--rig-figure", default=None, help="triangulate's camera figure to embed in the report")
    args = parser.parse_args()
    paths = EvaluatePaths(args.frames, args.model, args.plots, args.refiner, args.baseline, args.figures, args.markdown,
                          args.rig_figure)
    check_outputs(paths, args)                                   # before any work
    params = load_params(args.params)
    result = run(paths, params, setup_runtime(params.compute, params.evaluate.threads, progress=not args.no_progress))
    write_results(result, args.metrics, args.report, args.timings)


if __name__ == "__main__":
    sys.exit(run_stage(main))
