"""Benchmark: how far the 2D network's own training run moves every number downstream — the spread over
``pretrain_2d.seed`` against the spread over the 3D networks' seeds (the baseline, measured in the same run).

``ablation.py``'s spreads keep the 2D network and the pseudo-labels fixed (the workspace's ``dvc repro``) and
vary only the 3D trainings. But the 2D network is trained too, and everything after it (its detections,
the pseudo-labels, the 3D networks it initialises) changes with it. For each 2D seed k this script makes
a root ``--work``/seed{k} sharing the workspace's ``data/raw`` and ``data/frames`` (links) with its own
``params.yaml`` (``pretrain_2d.seed`` = k, the stages' threads pinned), runs pretrain_2d, infer_2d and
triangulate there with dvc.yaml's commands (the same launcher), then trains and scores the 3D networks
at 3D seed ``--seed-3d`` with ``ablation.one_run`` (self-supervised, + refiner, fully supervised; unseen
and seen people). The baseline: the workspace's own 2D network and labels (its ``dvc repro``) with the 3D
seeds ``--seeds-3d`` (ablation's cache serves those ``ablation.py`` already trained); with
``pretrain_2d.seed`` 0 in params.yaml, 2D seed 0's root retrains the workspace's 2D network, and the script
says whether it is the same bytes. Run it in a clone after ``dvc repro``, on an otherwise idle machine (a 2D seed: ~9 min on
2 cores with AMX, pretrain_2d 5 of them)::

    python benchmarks/seeds_2d.py --seeds 0-4

Writes ``benchmarks/out/seeds_2d.json`` after every run (a finished run is not repeated: an interrupted run
resumes); prints each 2D seed's MPII PCKh@0.5, pseudo-label N-MPJPE and the networks' MPJPE (mm), mean ± sd
(n−1) over the 2D seeds and over the 3D seeds, and their ratio.
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import shlex
import statistics
import subprocess
import sys
from pathlib import Path

import pandas as pd
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ablation  # noqa: E402  (the benchmark next to this one: its training and scoring of the 3D networks)

from epipose.params import read_params  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
STAGES_2D = ("pretrain_2d", "infer_2d", "triangulate")
NETS = ("self", "refiner", "full")


def make_root(workspace: Path, root: Path, seed: int, threads: int) -> None:
    """``root``: the workspace's data/raw and data/frames linked, its params.yaml with ``pretrain_2d.seed`` =
    ``seed`` and the 2D stages' threads pinned."""
    (root / "data").mkdir(parents=True, exist_ok=True)
    for name in ("raw", "frames"):
        link = root / "data" / name
        if not link.exists():
            link.symlink_to((workspace / "data" / name).resolve(), target_is_directory=True)
    ablation.write_params(workspace / "params.yaml", {"pretrain_2d.seed": seed, "pretrain_2d.threads": threads,
                                                      "infer_2d.threads": threads}, root / "params.yaml")


def run_2d_stages(workspace: Path, root: Path) -> None:
    """pretrain_2d, infer_2d and triangulate in ``root``: dvc.yaml's commands, ``${...}`` filled from its
    params, the stage scripts the workspace's."""
    stages = yaml.safe_load((workspace / "dvc.yaml").read_text())["stages"]
    params = read_params(root / "params.yaml")
    for name in STAGES_2D:
        cmd = stages[name]["cmd"]
        for key in ("data.mpii_root", "data.h36m_root"):
            cmd = cmd.replace("${" + key + "}", params["data"][key.split(".")[1]])
        args = shlex.split(cmd)
        args[args.index(f"stages/{name}.py")] = str(workspace / "stages" / f"{name}.py")
        print(f"seed root {root.name}: {name}", file=sys.stderr, flush=True)
        subprocess.run([sys.executable if a == "python" else a for a in args], cwd=root, check=True)


def upstream(root: Path) -> dict[str, float]:
    """The 2D network's MPII PCKh@0.5 and the pseudo-labels' N-MPJPE (mm) of ``root``'s metrics."""
    pretrain = json.loads((root / "metrics" / "pretrain_2d.json").read_text())
    labels = json.loads((root / "metrics" / "triangulate.json").read_text())
    return {"pckh": pretrain["mpii.pckh@0.5"], "labels_n_mpjpe": labels["pseudo3d.n_mpjpe"]}


def mean_sd(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else float("nan")
    return f"{statistics.mean(values):6.1f} ± {sd:4.1f}"


def report(runs: dict, seeds_2d: list[int], seeds_3d: list[int]) -> None:
    """Each 2D seed's row, then mean ± sd over the 2D seeds and over the 3D seeds, and sd(2D) / sd(3D)."""
    print(f"{'2D seed':>8} {'PCKh':>6} {'labels':>7} " + " ".join(f"{n + ' unseen':>14}" for n in NETS))
    for k in seeds_2d:
        r = runs[f"2d{k}"]
        print(f"{k:>8} {r['pckh']:6.2f} {r['labels_n_mpjpe']:7.1f} "
              + " ".join(f"{r['unseen'][n]:14.1f}" for n in NETS) + f"   the workspace's: {r['same_as_workspace']}")
    over_2d = {n: [runs[f"2d{k}"]["unseen"][n] for k in seeds_2d] for n in NETS}
    over_3d = {n: [runs[f"3d{s}"]["unseen"][n] for s in seeds_3d] for n in NETS}
    for what, table in ((f"over the {len(seeds_2d)} 2D seeds (3D seed fixed)", over_2d),
                        (f"over the {len(seeds_3d)} 3D seeds (2D network fixed)", over_3d)):
        print(f"{what:>48}: " + ", ".join(f"{n} {mean_sd(v)}" for n, v in table.items()))
    print("sd over 2D seeds / sd over 3D seeds: " + ", ".join(
        f"{n} {statistics.stdev(over_2d[n]) / statistics.stdev(over_3d[n]):.2f}" for n in NETS))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0-4", help="pretrain_2d seeds")
    parser.add_argument("--seeds-3d", default="0-4", help="the baseline: 3D seeds on the workspace's 2D network")
    parser.add_argument("--seed-3d", type=int, default=0, help="the 3D seed of every 2D seed's networks")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--seen", default="S1,S5")
    parser.add_argument("--work", default=str(ROOT / "benchmarks" / "out" / "seeds_2d"))
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "seeds_2d.json"))
    parser.add_argument("--cache", default=str(ROOT / "benchmarks" / "out" / "ablation_cache"))
    args = parser.parse_args()
    seeds_2d, seeds_3d = ablation.parse_seeds(args.seeds), ablation.parse_seeds(args.seeds_3d)
    out, cache = Path(args.out), Path(args.cache) if args.cache else None
    runs = json.loads(out.read_text()) if out.exists() else {}
    networks, seen = set(NETS), args.seen.split(",")
    todo = [(f"3d{s}", ROOT, {}, s) for s in seeds_3d]
    todo += [(f"2d{k}", Path(args.work).resolve() / f"seed{k}", {}, args.seed_3d) for k in seeds_2d]
    for key, root, overrides, seed in todo:
        if key in runs:
            continue
        if root != ROOT:
            make_root(ROOT, root, int(key[2:]), args.threads)
            if not (root / "data" / "pseudo3d.parquet").exists():
                run_2d_stages(ROOT, root)
            overrides = {"@root": str(root)}
        record = ablation.one_run(root, root / "params.yaml", overrides, seed, None, networks, seen, args.threads, cache)
        runs[key] = {**(upstream(root) if root != ROOT else {}), **record}
        if root != ROOT:         # 2D seed 0 with the workspace's seed: its dvc repro again, the same bytes?
            runs[key]["same_as_workspace"] = {
                "pose2d.pt": filecmp.cmp(root / "models" / "pose2d.pt", ROOT / "models" / "pose2d.pt", shallow=False),
                "pseudo3d rows": bool(pd.read_parquet(root / "data" / "pseudo3d.parquet").equals(
                    pd.read_parquet(ROOT / "data" / "pseudo3d.parquet")))}
        print(f"{key}: {runs[key]}", flush=True)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(runs, indent=1) + "\n")
    report(runs, seeds_2d, seeds_3d)


if __name__ == "__main__":
    main()
