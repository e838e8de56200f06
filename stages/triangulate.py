"""Stage triangulate: multi-view 2D poses → 3D pseudo-labels in every camera's frame (params ``triangulate``).

    python stages/triangulate.py --pose2d data/pose2d.parquet --cameras <h36m_root>/cameras.json \
        --out data/pseudo3d.parquet [--cameras-out data/cameras_estimated.json] \
        [--metrics metrics/triangulate.json --report reports/triangulate.json] [--plots reports/plots]
        [--rig-figure reports/rig_topview.png] [--gt-root <h36m_root>]

``triangulate.extrinsics: estimated`` (default) ignores the extrinsics of cameras.json (the paper's
self-supervised setting; they are only used to report camera errors), ``known`` uses them.
``--cameras-out`` writes the cameras the labels were triangulated with as a cameras.json (estimated:
the recovered rig, per subject, metric). ``--gt-root`` (a Human3.6M-layout root with D3_Positions)
adds pseudo-label accuracy to the metrics where it has ground truth, and ``--plots`` its error by the
number of views and by the reprojection error (headers only without it). ``--rig-figure`` draws the
recovered cameras from above (beside the true ones where cameras.json has extrinsics).
Nothing is written unless everything succeeded.
"""

import sys

from epipose.io import write_results
from epipose.launch import check_outputs, run_stage, stage_parser
from epipose.pipeline.triangulate import TriangulatePaths, load_params, run
from epipose.stage import Runtime


def main() -> None:
    parser = stage_parser(__doc__)
    parser.add_argument("--pose2d", required=True, help="input 2D poses (data/pose2d.parquet)")
    parser.add_argument("--cameras", required=True, help="cameras.json (intrinsics; extrinsics used only if known)")
    parser.add_argument("--out", required=True, help="output 3D pseudo-labels (data/pseudo3d.parquet)")
    parser.add_argument("--cameras-out", help="output cameras.json of the cameras used (data/cameras_estimated.json)")
    parser.add_argument("--plots", help="folder for the error tables (pseudo3d_error_by_*.tsv), e.g. reports/plots")
    parser.add_argument("--rig-figure", help="output PNG of the recovered cameras seen from above")
    parser.add_argument("--gt-root", help="Human3.6M-layout root with ground-truth D3_Positions, for the metrics")
    args = parser.parse_args()
    paths = TriangulatePaths(args.pose2d, args.cameras, args.out, args.cameras_out, args.plots, args.rig_figure,
                             args.gt_root)
    check_outputs(paths, args)                                   # before any work
    params = load_params(args.params)
    write_results(run(paths, params, Runtime(progress=not args.no_progress)), args.metrics, args.report, args.timings)


if __name__ == "__main__":
    sys.exit(run_stage(main))
