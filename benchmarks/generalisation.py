"""Benchmark: how well the 3D networks generalise — the same evaluation (evaluate's protocol and code)
on people the networks were trained on (seen) and on the test subjects (unseen).

The gap between the two is what more training people, poses and rooms can close; the seen error
is the network's fit (and, for the self-supervised one, its pseudo-labels' error). Run it in a
clone after ``dvc repro`` (it reads ``data/frames``, ``data/raw/h36m`` and ``models/``)::

    python benchmarks/generalisation.py [--seen S1,S5] [--unseen S9,S11]   # ~1 min on 2 cores

Writes ``benchmarks/out/generalisation.json``; prints MPJPE (16 joints, the root included, as
evaluate) seen and unseen per network and their ratio unseen / seen.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from pathlib import Path

from epipose.compute import select_device
from epipose.params import load_section, load_value
from epipose.pipeline.evaluate import EvaluateParams, run_evaluation

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seen", default="S1,S5", help="training subjects to evaluate on (comma-separated)")
    parser.add_argument("--unseen", default=None, help="test subjects (default: param evaluate.subjects)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "generalisation.json"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    params_path = ROOT / "params.yaml"
    p = load_section(EvaluateParams, "evaluate", params_path)
    h36m_root = ROOT / load_value("data", "h36m_root", str, params_path)
    groups = {"seen": args.seen.split(","), "unseen": args.unseen.split(",") if args.unseen else list(p.subjects)}
    results = {}
    for name, subjects in groups.items():
        res, _ = run_evaluation(ROOT / "data" / "frames", h36m_root, ROOT / "models" / "pose3d.pt",
                                dataclasses.replace(p, subjects=subjects, seen_subjects=True), refiner_path=ROOT / "models" / "refiner.pt",
                                baseline_path=ROOT / "models" / "pose3d_gt.pt", device=select_device("auto", p.threads),
                                progress=False)
        results[name] = {"subjects": subjects, "frames": res["pose3d"]["frames"],
                         **{role: {k: r[k] for k in ("mpjpe", "mpjpe_15j", "p_mpjpe")} for role, r in res.items()}}
    print(f"{'network':<16}{'seen':>10}{'unseen':>10}{'ratio':>8}   (MPJPE mm; seen {','.join(groups['seen'])}: "
          f"{results['seen']['frames']} frames, unseen {','.join(groups['unseen'])}: {results['unseen']['frames']})")
    for role in ("baseline_gt", "pose3d", "pose3d_refined"):
        seen, unseen = results["seen"][role]["mpjpe"], results["unseen"][role]["mpjpe"]
        results.setdefault("ratio", {})[role] = round(unseen / seen, 3)
        print(f"{role:<16}{seen:>10.1f}{unseen:>10.1f}{unseen / seen:>8.2f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
