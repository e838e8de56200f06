"""Stage evaluate: the 3D network (+ refiner, + optionally a second network such as the fully supervised
baseline) on the test subjects with the paper's protocol → metrics JSON, per-action TSV, figures, report.
One process, whatever ``compute.nproc``; on ``compute.device``."""

import argparse
import sys
from pathlib import Path
from typing import Literal

from epipose.io import atomic_path, check_writable, write_json
from epipose.launch import run_stage
from epipose.params import load_section, load_value
from epipose.pipeline.evaluate import EvaluateParams, per_action_tsv, results_markdown, run_evaluation


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--frames", required=True, help="frame shards folder, <frames>/<subject>/<action>.<camera>.parquet")
    parser.add_argument("--model", required=True, help="the 3D network, e.g. models/pose3d.pt")
    parser.add_argument("--refiner", default=None, help="the refiner, e.g. models/refiner.pt (optional)")
    parser.add_argument("--baseline", default=None, help="a second 3D network, e.g. models/pose3d_gt.pt (optional)")
    parser.add_argument("--metrics", required=True, help="metrics JSON, e.g. metrics/eval.json")
    parser.add_argument("--per-action", required=True, help="per-action TSV for dvc plots, e.g. metrics/eval_per_action.tsv")
    parser.add_argument("--figures", default=None, help="folder of example PNGs, e.g. reports/figures")
    parser.add_argument("--report", default=None, help="generated markdown report, e.g. reports/results.md")
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args()
    check_writable(args.metrics, args.per_action, args.figures, args.report)        # before any work
    params = load_section(EvaluateParams, "evaluate", args.params)
    num_joints = load_value("model", "num_joints", int, args.params)
    h36m_root = load_value("data", "h36m_root", str, args.params)
    device = load_value("compute", "device", Literal["auto", "cpu", "cuda"], args.params)

    results, info = run_evaluation(args.frames, h36m_root, args.model, params, num_joints, args.refiner,
                                   args.baseline, args.figures, device=device, progress=not args.no_progress)
    write_json({"protocol": info, **results}, args.metrics)
    per_action_tsv(results, args.per_action)
    if args.report:
        if args.figures:   # links relative to the report
            info = {**info, "figures": [str(Path(f).relative_to(Path(args.figures).parent)) for f in info["figures"]]}
        with atomic_path(args.report) as tmp:
            tmp.write_text(results_markdown(results, info))


if __name__ == "__main__":
    sys.exit(run_stage(main))
