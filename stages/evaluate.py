"""Stage evaluate: the 3D network (+ refiner, + the fully supervised baseline) on the test subjects
with the paper's protocol → flat metrics (``<role>.<metric>``), the detailed report JSON, the plots'
tables, figures and the markdown report. One process, whatever ``compute.nproc``; on ``compute.device``."""

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Literal

from epipose.io import atomic_path, check_writable, write_results
from epipose.launch import run_stage
from epipose.params import load_section, load_value
from epipose.pipeline.evaluate import (EvaluateParams, draw_summary_figures, results_markdown, run_evaluation,
                                       summary, write_plots)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--frames", required=True, help="frame shards folder, <frames>/<subject>/<action>.<camera>.parquet")
    parser.add_argument("--model", required=True, help="the 3D network, e.g. models/pose3d.pt")
    parser.add_argument("--refiner", default=None, help="the refiner, e.g. models/refiner.pt (optional)")
    parser.add_argument("--baseline", default=None, help="the fully supervised network, e.g. models/pose3d_gt.pt (optional)")
    parser.add_argument("--metrics", required=True, help="flat metrics JSON, e.g. metrics/eval.json")
    parser.add_argument("--report", required=True, help="detailed results JSON, e.g. reports/eval.json")
    parser.add_argument("--plots", required=True, help="folder for the plots' TSVs (eval_*.tsv), e.g. reports/plots")
    parser.add_argument("--figures", default=None, help="folder of PNGs (examples, curves), e.g. reports/figures")
    parser.add_argument("--markdown", default=None, help="generated markdown report, e.g. reports/results.md")
    parser.add_argument("--rig-figure", default=None, help="triangulate's camera figure to embed in the report")
    parser.add_argument("--timings", default=None, help="seconds taken, JSON (not a metric), e.g. timings/evaluate.json")
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args()
    check_writable(args.metrics, args.report, args.plots, args.figures, args.markdown, args.timings)  # before any work
    params = load_section(EvaluateParams, "evaluate", args.params)
    num_joints = load_value("model", "num_joints", int, args.params)
    h36m_root = load_value("data", "h36m_root", str, args.params)
    device = load_value("compute", "device", Literal["auto", "cpu", "cuda"], args.params)

    t0 = time.perf_counter()
    results, info = run_evaluation(args.frames, h36m_root, args.model, params, num_joints, args.refiner,
                                   args.baseline, args.figures, device=device, progress=not args.no_progress)
    write_plots(results, args.plots)
    if args.figures:
        info["figures"] = [str(f) for f in draw_summary_figures(results, info["methods"], args.figures)] + info["figures"]
    report = {"protocol": info, **results}
    if args.markdown:
        figures = info.get("figures", []) + ([args.rig_figure] if args.rig_figure else [])
        here = Path(args.markdown).parent   # links relative to the report
        info = {**info, "figures": [Path(os.path.relpath(f, here)).as_posix() for f in figures]}
        with atomic_path(args.markdown) as tmp:
            tmp.write_text(results_markdown(results, info))
    write_results(summary(results), args.metrics, report, args.report, {"seconds": round(time.perf_counter() - t0, 1)},
                  args.timings)


if __name__ == "__main__":
    sys.exit(run_stage(main))
