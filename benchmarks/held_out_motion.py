"""Benchmark: how well the 3D networks generalise to motion they never trained on — the held-out-motion
protocol. The three networks (self-supervised, + refiner, fully supervised) are trained again without two
of the actions (``train_3d.exclude_actions``: never in train_3d's or train_3d_gt's frames, so never in the
refiner's input either) and evaluated, with evaluate's protocol and code (``evaluate.actions``), on the
unseen test people's held-out actions and on their trained actions; beside it, seen (training people,
trained actions) against unseen people, and the committed networks (trained on every action) on the same
split: how much of the gap is the actions being harder.

The stages' ``run`` are called directly in a temp folder on the committed pseudo-labels and 2D network (the
same code as ``dvc repro``; only train_3d, train_3d_gt and train_refiner run again, with the params.yaml
of this clone plus the exclusion). Run it in a clone after ``dvc repro``, on an otherwise idle machine::

    python benchmarks/held_out_motion.py [--held-out SittingDown,Walking] [--seen S1,S5]   # ~6 min on 2 cores

(``--params`` and ``--root`` point it at another workspace, e.g. a tiny profile's, to try it quickly.)
Writes ``benchmarks/out/held_out_motion.json``; prints MPJPE per network on held-out and trained motions
of the unseen people and their ratio held-out / trained (the target: ≤ 1.3), and unseen / seen people.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import tempfile
from pathlib import Path

from epipose.compute import select_device
from epipose.data.frames import list_shards, parse_shard_path
from epipose.data.h36m import action_name
from epipose.pipeline.evaluate import EvaluateParams, run_evaluation
from epipose.params import load_section, load_value

from ablation import train, write_params       # noqa: E402  (benchmarks/, the script's folder)

ROOT = Path(__file__).resolve().parents[1]
ROLES = ("baseline_gt", "pose3d", "pose3d_refined")


def train_without(root: Path, params_path: Path, held_out: list[str], work: Path) -> dict[str, Path]:
    """train_3d (self-supervised, with its training-frame predictions), train_3d_gt and train_refiner on
    every action but ``held_out`` (``ablation.train`` with ``train_3d.exclude_actions``) → the three
    networks' paths under ``work``."""
    params = write_params(params_path, {"train_3d.exclude_actions": held_out}, work / "params.yaml")
    models, _ = train(root, params, root / "data" / "pseudo3d.parquet", {"self", "refiner", "full"}, work)
    return models


def evaluate(root: Path, h36m_root: Path, p: EvaluateParams, models: dict[str, Path], subjects: list[str],
             actions: list[str]) -> dict:
    """MPJPE (and frames) of the three networks on ``subjects``' frames of ``actions``."""
    res, info = run_evaluation(root / "data" / "frames", h36m_root, models["pose3d"],
                               dataclasses.replace(p, subjects=subjects, actions=actions, seen_subjects=True),
                               refiner_path=models["refiner"],
                               baseline_path=models["baseline_gt"], device=select_device("auto", p.threads),
                               progress=False)
    return {"subjects": subjects, "actions": actions, "frames": info["frames"], **{r: res[r]["mpjpe"] for r in ROLES}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--held-out", default="SittingDown,Walking", help="actions never trained on (comma-separated)")
    parser.add_argument("--seen", default="S1,S5", help="training subjects to evaluate on (comma-separated)")
    parser.add_argument("--root", default=str(ROOT), help="the workspace whose dvc repro outputs are used")
    parser.add_argument("--params", default=None, help="params file (default: the workspace's params.yaml)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "held_out_motion.json"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    root = Path(args.root).resolve()
    params_path = Path(args.params) if args.params else root / "params.yaml"
    p = load_section(EvaluateParams, "evaluate", params_path)
    h36m_root = root / load_value("data", "h36m_root", str, params_path)
    held_out, seen = args.held_out.split(","), args.seen.split(",")
    every = sorted({action_name(parse_shard_path(s)[1]) for s in list_shards(root / "data" / "frames", p.subjects)})
    trained = [a for a in every if a not in held_out]
    committed = {"pose3d": root / "models" / "pose3d.pt", "baseline_gt": root / "models" / "pose3d_gt.pt",
                 "refiner": root / "models" / "refiner.pt"}
    with tempfile.TemporaryDirectory(prefix="held_out_motion.") as work:
        models = train_without(root, params_path, held_out, Path(work))
        groups = {"unseen_held_out": evaluate(root, h36m_root, p, models, list(p.subjects), held_out),
                  "unseen_trained": evaluate(root, h36m_root, p, models, list(p.subjects), trained),
                  "seen_trained": evaluate(root, h36m_root, p, models, seen, trained),
                  "committed_unseen_held_out": evaluate(root, h36m_root, p, committed, list(p.subjects), held_out),
                  "committed_unseen_trained": evaluate(root, h36m_root, p, committed, list(p.subjects), trained)}
    ratio = lambda a, b: {r: round(groups[a][r] / groups[b][r], 3) for r in ROLES}  # noqa: E731
    result = {"held_out": held_out, "trained": trained, "groups": groups,
              "ratio_held_out_over_trained": ratio("unseen_held_out", "unseen_trained"),
              "ratio_unseen_over_seen": ratio("unseen_trained", "seen_trained"),
              "committed_ratio_held_out_over_trained": ratio("committed_unseen_held_out", "committed_unseen_trained")}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"MPJPE (mm), trained without {', '.join(held_out)}; unseen {','.join(p.subjects)}, seen {','.join(seen)}:")
    print(f"{'network':<16}{'held-out':>10}{'trained':>10}{'ratio':>8}{'seen':>10}{'unseen/seen':>13}"
          f"{'all-actions ratio':>19}")
    for r in ROLES:
        g = groups
        print(f"{r:<16}{g['unseen_held_out'][r]:>10.1f}{g['unseen_trained'][r]:>10.1f}"
              f"{result['ratio_held_out_over_trained'][r]:>8.2f}{g['seen_trained'][r]:>10.1f}"
              f"{result['ratio_unseen_over_seen'][r]:>13.2f}{result['committed_ratio_held_out_over_trained'][r]:>19.2f}")


if __name__ == "__main__":
    main()
