"""Stage triangulate: multi-view 2D poses → 3D pseudo-labels in every camera's frame (params ``triangulate``).

    python stages/triangulate.py --pose2d data/pose2d.parquet --cameras <h36m_root>/cameras.json \
        --out data/pseudo3d.parquet [--cameras-out data/cameras_estimated.json] \
        [--metrics metrics/triangulate.json] [--gt-root <h36m_root>]

``triangulate.extrinsics: estimated`` (default) ignores the extrinsics of cameras.json (the paper's
self-supervised setting; they are only used to report camera errors), ``known`` uses them.
``--cameras-out`` writes the cameras the labels were triangulated with as a cameras.json (estimated:
the recovered rig, per subject, metric). ``--gt-root`` (a Human3.6M-layout root with D3_Positions)
adds pseudo-label accuracy to the metrics where it has ground truth.
Nothing is written unless everything succeeded.
"""

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # many tiny BLAS calls: threads only contend

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402

from tqdm import tqdm  # noqa: E402

from epipose.camera import load_rig, save_rig  # noqa: E402
from epipose.data.pose_tables import read_pose2d, write_pseudo3d  # noqa: E402
from epipose.io import check_writable, write_json  # noqa: E402
from epipose.launch import run_stage, stage_logger  # noqa: E402
from epipose.params import load_section  # noqa: E402
from epipose.pipeline.triangulate import (TriangulateParams, evaluate_against_gt, ground_truth,  # noqa: E402
                                          recovered_rig, triangulate_table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pose2d", required=True, help="input 2D poses (data/pose2d.parquet)")
    parser.add_argument("--cameras", required=True, help="cameras.json (intrinsics; extrinsics used only if known)")
    parser.add_argument("--out", required=True, help="output 3D pseudo-labels (data/pseudo3d.parquet)")
    parser.add_argument("--cameras-out", help="output cameras.json of the cameras used (data/cameras_estimated.json)")
    parser.add_argument("--metrics", help="output metrics JSON (metrics/triangulate.json)")
    parser.add_argument("--gt-root", help="Human3.6M-layout root with ground-truth D3_Positions, for the metrics")
    parser.add_argument("--params", default="params.yaml", help="params file (section triangulate)")
    args = parser.parse_args()
    check_writable(args.out, args.cameras_out, args.metrics)        # before any work
    log = stage_logger()
    params = load_section(TriangulateParams, "triangulate", args.params)
    rig = load_rig(args.cameras)
    pose2d = read_pose2d(args.pose2d)
    gt = ground_truth(args.gt_root) if args.gt_root else None
    log.info("%d rows from %s, mode %s", len(pose2d), args.pose2d, params.mode)
    out = triangulate_table(pose2d, rig, params, progress=lambda xs: tqdm(xs, desc="subjects", file=sys.stderr))
    report = dict(out.report)
    if gt is not None:
        report["ground_truth"] = evaluate_against_gt(out.table, gt)
    if not len(out.table):
        log.warning("no row could be triangulated: %s will be empty", args.out)
    json.dumps(report, allow_nan=False)  # fail before writing anything
    write_pseudo3d(out.table, args.out, out.metadata)
    if args.cameras_out:
        save_rig(recovered_rig(out, rig, params), args.cameras_out)
    if args.metrics:
        write_json(report, args.metrics)
    log.info("wrote %s: %d rows, coverage %.4f", args.out, len(out.table), report["coverage"])


if __name__ == "__main__":
    sys.exit(run_stage(main))
