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

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # many tiny BLAS calls: threads only contend

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402


from tqdm import tqdm  # noqa: E402

from epipose.camera import load_rig, save_rig  # noqa: E402
from epipose.data.pose_tables import read_pose2d, write_pseudo3d  # noqa: E402
from epipose.io import atomic_path, check_writable, read_parquet_metadata, write_results  # noqa: E402
from epipose.launch import run_stage, stage_logger  # noqa: E402
from epipose.params import load_section  # noqa: E402
from epipose.params import ParamError  # noqa: E402
from epipose.pipeline.triangulate import (TriangulateParams, error_tables, evaluate_against_gt,  # noqa: E402
                                          enlarge_skeletons, ground_truth, ground_truth_2d, labels_vs_gt, recovered_rig,
                                          rig_panels, skeleton_scale_for, summary, triangulate_table)
from epipose.viz import rig_figure, save_figure  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pose2d", required=True, help="input 2D poses (data/pose2d.parquet)")
    parser.add_argument("--cameras", required=True, help="cameras.json (intrinsics; extrinsics used only if known)")
    parser.add_argument("--out", required=True, help="output 3D pseudo-labels (data/pseudo3d.parquet)")
    parser.add_argument("--cameras-out", help="output cameras.json of the cameras used (data/cameras_estimated.json)")
    parser.add_argument("--metrics", help="output flat metrics JSON (metrics/triangulate.json)")
    parser.add_argument("--report", help="output detailed report JSON, per subject and pair (reports/triangulate.json)")
    parser.add_argument("--plots", help="folder for the error tables (pseudo3d_error_by_*.tsv), e.g. reports/plots")
    parser.add_argument("--rig-figure", help="output PNG of the recovered cameras seen from above")
    parser.add_argument("--timings", help="seconds taken, JSON (not a metric), e.g. timings/triangulate.json")
    parser.add_argument("--gt-root", help="Human3.6M-layout root with ground-truth D3_Positions, for the metrics")
    parser.add_argument("--params", default="params.yaml", help="params file (section triangulate)")
    args = parser.parse_args()
    check_writable(args.out, args.cameras_out, args.metrics, args.report, args.plots, args.rig_figure,
                   args.timings)                                    # before any work
    t0 = time.perf_counter()
    log = stage_logger()
    params = load_section(TriangulateParams, "triangulate", args.params)
    rig = load_rig(args.cameras)
    pose2d = read_pose2d(args.pose2d)
    gt = ground_truth(args.gt_root) if args.gt_root else None
    if params.input_2d == "ground_truth":
        if not args.gt_root:
            raise ParamError("param triangulate.input_2d: ground_truth needs --gt-root (the data root with D3_Positions)")
        pose2d = ground_truth_2d(pose2d, args.gt_root)
        log.info("input_2d: ground truth projected into each camera (the 2D network's detections replaced)")
    skeleton_scale = skeleton_scale_for(params, read_parquet_metadata(args.pose2d))
    if skeleton_scale != 1.0:
        pose2d = enlarge_skeletons(pose2d, skeleton_scale)
        log.info("2D skeletons enlarged by 1 / %.4f (param triangulate.skeleton_scale: %s)", skeleton_scale,
                 params.skeleton_scale)
    log.info("%d rows from %s, mode %s", len(pose2d), args.pose2d, params.mode)
    out = triangulate_table(pose2d, rig, params, progress=lambda xs: tqdm(xs, desc="subjects", file=sys.stderr))
    report = {**out.report, "skeleton_scale": skeleton_scale}
    if gt is not None:
        report["ground_truth"] = evaluate_against_gt(out.table, gt)
    if not len(out.table):
        log.warning("no row could be triangulated: %s will be empty", args.out)
    json.dumps(report, allow_nan=False)  # fail before writing anything
    write_pseudo3d(out.table, args.out, out.metadata)
    if args.cameras_out:
        save_rig(recovered_rig(out, rig, params), args.cameras_out)
    if args.plots:
        write_error_tables(out.table, gt, args.plots)
    if args.rig_figure:
        panels, axis_labels = rig_panels(out, rig)
        with atomic_path(args.rig_figure) as tmp:
            truth = any(p["true"] is not None for p in panels.values())
            title = "Recovered cameras from above (red ×)" + (
                ", the true ones (green ○)" if truth else ", in each subject's reference camera frame")
            save_figure(rig_figure(panels, title, axis_labels), tmp)
    write_results(summary(report), args.metrics, report, args.report, {"seconds": round(time.perf_counter() - t0, 1)},
                  args.timings)
    log.info("wrote %s: %d rows, coverage %.4f", args.out, len(out.table), report["coverage"])


def write_error_tables(table, gt, folder: str) -> None:
    tables = error_tables(labels_vs_gt(table, gt) if gt is not None and len(table) else None)
    for name, df in tables.items():
        with atomic_path(Path(folder) / f"{name}.tsv") as tmp:
            df.to_csv(tmp, sep="\t", index=False, float_format="%.3f")


if __name__ == "__main__":
    sys.exit(run_stage(main))
