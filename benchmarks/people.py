"""Benchmark: what the number of training people buys — the 3D networks trained on Human3.6M's five
training subjects only against the committed run on twenty (the five and 15 synthetic people), with
the same optimiser steps, the same pseudo-labels' recipe and the same test frames.

One queued experiment per seed sets ``train_3d.subjects`` to S1, S5, S6, S7, S8 and
``train_3d.epochs`` so that the step count matches the committed run's (by default four epochs of
1,620 frames against one of 6,480: 405 steps each); train_3d, train_3d_gt, train_refiner and evaluate rerun.
Run it in a clone whose committed ``dvc.lock`` matches its workspace, on an otherwise idle machine::

    python benchmarks/people.py [--seeds 1]          # ~6 min per seed on 2 cores

Writes ``benchmarks/out/people.json``; prints each network's MPJPE with 5 and with 20 training
people and their ratio (the baseline, twenty people, is the committed run).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import yaml
from seeds import ROOT, dvc, experiment_metrics

FIVE = ["S1", "S5", "S6", "S7", "S8"]
KEYS = ("baseline_gt.mpjpe", "pose3d.mpjpe", "pose3d_refined.mpjpe")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "people.json"))
    args = parser.parse_args()
    if "up to date" not in dvc("status"):
        raise SystemExit("dvc status is not clean: commit a complete run first")
    params = yaml.safe_load((ROOT / "params.yaml").read_text())["train_3d"]
    if params["seed"] != 0 or set(FIVE) >= set(params["subjects"]):
        raise SystemExit("the committed run must be seed 0 on more people than Human3.6M's five")
    epochs = params["epochs"] * len(params["subjects"]) // len(FIVE)
    names = {s: f"five-people-seed{s}-{int(time.time())}" for s in range(args.seeds)}
    for s, name in names.items():
        dvc("exp", "run", "--queue", "-S", f"train_3d.subjects=[{','.join(FIVE)}]", "-S", f"train_3d.epochs={epochs}",
            "-S", f"train_3d.seed={s}", "-S", f"refiner.seed={s}", "-n", name)
    dvc("queue", "start", "-j", "1")
    while any(w in dvc("queue", "status") for w in ("Queued", "Running")):
        time.sleep(10)
    many = json.loads((ROOT / "metrics" / "eval.json").read_text())
    five = {s: experiment_metrics(name) for s, name in names.items()}
    result = {"people": {"five": FIVE, "many": params["subjects"]}, "epochs_five": epochs, "experiments": names,
              "seed0": {k: {"five": five[0][k], "many": many[k], "ratio_five_over_many": round(five[0][k] / many[k], 4)}
                        for k in KEYS},
              "five_all_seeds": {k: [five[s][k] for s in sorted(five)] for k in KEYS}}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"MPJPE (mm), seed 0, {len(FIVE)} vs {len(params['subjects'])} training people, the same steps:")
    for k, r in result["seed0"].items():
        print(f"  {k:<22} {r['five']:8.1f} {r['many']:8.1f}   ratio {r['ratio_five_over_many']:.3f}")


if __name__ == "__main__":
    main()
