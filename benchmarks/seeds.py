"""Benchmark: the headline comparison over seeds — the 3D networks (self-supervised, + refiner, fully
supervised) trained again with other seeds through DVC's experiment queue, the committed run as seed 0.

Each queued experiment sets ``train_3d.seed`` and ``refiner.seed`` (the pseudo-labels and the 2D
network stay the committed ones: only train_3d, train_3d_gt, train_refiner and evaluate rerun), so
the spread is the training's own. Run it in a clone whose committed ``dvc.lock`` matches its
workspace (``dvc status`` clean), on an otherwise idle machine::

    python benchmarks/seeds.py [--seeds 3]          # ~5 min per extra seed on 2 cores

Writes ``benchmarks/out/seeds.json``; prints every metric's mean ± sd (sample, n−1) over the seeds and
the ratio self-supervised / fully supervised (the baseline measured in the same run).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KEYS = ("pose3d.mpjpe", "pose3d.n_mpjpe", "pose3d_refined.mpjpe", "baseline_gt.mpjpe", "baseline_gt.n_mpjpe")


def dvc(*args: str) -> str:
    proc = subprocess.run(["dvc", *args], cwd=ROOT, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"dvc {' '.join(args)} failed: {proc.stderr.strip()[-2000:]}")
    return proc.stdout


def experiment_metrics(name: str) -> dict:
    """metrics/eval.json of a finished experiment, read from its git ref."""
    ref = next((line.split()[-1] for line in subprocess.run(["git", "show-ref"], cwd=ROOT, capture_output=True,
                text=True).stdout.splitlines() if line.split()[-1].startswith("refs/exps/")
                and line.split()[-1].endswith("/" + name)), None)
    if ref is None:
        sys.exit(f"experiment {name} has no result (dvc queue logs {name})")
    out = subprocess.run(["git", "show", f"{ref}:metrics/eval.json"], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout
    return json.loads(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "seeds.json"))
    args = parser.parse_args()
    if "up to date" not in dvc("status"):
        sys.exit("dvc status is not clean: commit a complete run first (dvc repro; git add dvc.lock metrics dvclive reports)")
    runs = {0: json.loads((ROOT / "metrics" / "eval.json").read_text())}
    names = {s: f"seed{s}-{int(time.time())}" for s in range(1, args.seeds)}
    for s, name in names.items():
        dvc("exp", "run", "--queue", "-S", f"train_3d.seed={s}", "-S", f"refiner.seed={s}", "-n", name)
    dvc("queue", "start", "-j", "1")
    while any(w in dvc("queue", "status") for w in ("Queued", "Running")):
        time.sleep(10)
    for s, name in names.items():
        runs[s] = experiment_metrics(name)
    for m in runs.values():
        m["ratio_self_over_full"] = round(m["pose3d.mpjpe"] / m["baseline_gt.mpjpe"], 4)
    summary = {}
    for key in (*KEYS, "ratio_self_over_full"):
        values = [runs[s][key] for s in sorted(runs)]
        summary[key] = {"mean": round(statistics.mean(values), 4),
                        "sd": round(statistics.stdev(values), 4) if len(values) > 1 else None, "values": values}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"seeds": sorted(runs), "experiments": names, "summary": summary}, indent=2) + "\n")
    print(f"{len(runs)} seeds (train_3d.seed, refiner.seed = {sorted(runs)}):")
    for key, r in summary.items():
        print(f"  {key:<24} {r['mean']:9.3f} ± {r['sd'] if r['sd'] is not None else float('nan'):.3f}   {r['values']}")


if __name__ == "__main__":
    main()
