"""Benchmark: the pseudo-labels cut from the auto person boxes (``frames.boxes: auto``: from the videos
alone) against those cut from the paper's ground-truth boxes (``gt``), per action — on the default data
and on motion the auto boxes' constants were never fitted to (a workspace whose synth params add the
``Freestyle`` action: reaching, crouching, kneeling, bending, one-leg stances; ``synth.extra_subject_actions``).

Both box kinds run the same chain in one process (the stages' own ``run``: extract_frames → infer_2d with
the workspace's 2D network → triangulate), so the ratio auto / gt of the labels' N-MPJPE compares crops
only. The target (issue: real recordings): auto within 1.05 × gt on every action.

    python benchmarks/boxes_labels.py [--root WORKSPACE]     # after dvc repro there; ~5 min on 2 cores

Writes ``benchmarks/out/boxes_labels.json``; prints N-MPJPE (mm) per action for each kind and the ratio.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from epipose.compute import select_device  # noqa: E402
from epipose.data.h36m import H36MDataset, action_name  # noqa: E402
from epipose.evaluation.pseudo_labels import evaluate_against_gt  # noqa: E402
from epipose.params import load_value  # noqa: E402
from epipose.pipeline import extract_frames, infer_2d, triangulate  # noqa: E402
from epipose.stage import Runtime  # noqa: E402

from ablation import write_params  # noqa: E402  (benchmarks/, the script's folder)

KINDS = ("gt", "auto")


def labels_for(kind: str, root: Path, h36m: Path, work: Path) -> pd.DataFrame:
    """The workspace's chain from its videos to pseudo-labels, with ``frames.boxes: kind`` → pseudo3d."""
    params = write_params(root / "params.yaml", {"frames.boxes": kind}, work / f"params.{kind}.yaml")
    frames, pose2d, pseudo = work / f"frames.{kind}", work / f"pose2d.{kind}.parquet", work / f"pseudo3d.{kind}.parquet"
    extract_frames.run(extract_frames.ExtractFramesPaths(str(h36m), str(frames)), extract_frames.load_params(params),
                       Runtime(progress=False))
    config = infer_2d.load_params(params)
    device = select_device(config.compute.device, config.infer_2d.threads)
    infer_2d.run(infer_2d.Infer2DPaths(str(frames), str(root / "models" / "pose2d.pt"), str(pose2d)), config,
                 Runtime(device=device, progress=False))
    triangulate.run(triangulate.TriangulatePaths(str(pose2d), str(h36m / "cameras.json"), str(pseudo)),
                    triangulate.load_params(params), Runtime(progress=False))
    return pd.read_parquet(pseudo)


def per_action(table: pd.DataFrame, truth: H36MDataset) -> dict[str, float]:
    """N-MPJPE (mm) of the labels against the ground truth, per action and over all."""
    groups = table.groupby(table["action"].map(action_name))
    out = {a: evaluate_against_gt(rows, truth).get("n_mpjpe_mm") for a, rows in groups}
    return {**out, "all": evaluate_against_gt(table, truth).get("n_mpjpe_mm")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default=str(ROOT), help="the workspace (after dvc repro: data and models/pose2d.pt)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "boxes_labels.json"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    root = Path(args.root).resolve()
    h36m = root / load_value("data", "h36m_root", str, root / "params.yaml")
    truth = H36MDataset(h36m)
    with tempfile.TemporaryDirectory(prefix="boxes_labels.") as work:
        n_mpjpe = {kind: per_action(labels_for(kind, root, h36m, Path(work)), truth) for kind in KINDS}
    ratio = {a: round(n_mpjpe["auto"][a] / n_mpjpe["gt"][a], 3) for a in n_mpjpe["gt"] if a in n_mpjpe["auto"]}
    result = {"root": str(root), "n_mpjpe_mm": n_mpjpe, "ratio_auto_over_gt": ratio}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"pseudo-label N-MPJPE (mm) by person boxes, {root}:")
    print(f"{'action':<14}{'gt':>8}{'auto':>8}{'auto/gt':>9}")
    for a, r in ratio.items():
        print(f"{a:<14}{n_mpjpe['gt'][a]:>8.1f}{n_mpjpe['auto'][a]:>8.1f}{r:>9.3f}")


if __name__ == "__main__":
    main()
