"""Benchmark: pretrain_2d's training step with the stages' thread choice (``threads: 0`` →
``epipose.compute.auto_threads``) against all cores, on an idle machine and beside one busy
process (a pure-Python loop holding one core), in the same run.

Each measurement is a fresh process (threads are chosen at its start, as a stage's are) timing
``--steps`` steps of ``benchmarks/train_step.py``'s default network. Run it on an otherwise idle
machine::

    python benchmarks/threads_under_load.py [--steps 20]

Writes ``benchmarks/out/threads_under_load.json``; prints ms per step and the ratios
all-cores / auto (> 1: auto is faster).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _busy() -> None:
    while True:
        pass


def child(steps: int, threads: int) -> dict:
    """In a fresh process: choose threads like a stage, time the steps."""
    import torch

    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from train_step import time_steps

    from epipose.compute import auto_threads, cpu_cores
    from epipose.data.transforms import AugmentParams
    from epipose.models.pose_net import load_model_params
    from epipose.params import load_section
    from epipose.pipeline.pretrain_2d import Pretrain2DParams

    torch.set_num_threads(threads or auto_threads())
    params = str(ROOT / "params.yaml")
    r = time_steps(load_model_params(params), load_section(Pretrain2DParams, "pretrain_2d", params),
                   load_section(AugmentParams, "augment", params), fused=True, steps=steps)
    return {"threads": torch.get_num_threads(), "cores": cpu_cores(), "ms_per_step": r["ms_per_step"]}


def measure(steps: int, threads: int, loaded: bool) -> dict:
    busy = multiprocessing.get_context("spawn").Process(target=_busy, daemon=True) if loaded else None
    if busy is not None:
        busy.start()
        time.sleep(1.0)
    try:
        out = subprocess.run([sys.executable, __file__, "--child", str(threads), "--steps", str(steps)],
                             capture_output=True, text=True, check=True).stdout
    finally:
        if busy is not None:
            busy.terminate()
            busy.join()
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "threads_under_load.json"))
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.steps, args.child)))
        return
    from epipose.compute import cpu_cores

    cores = cpu_cores()
    result = {}
    for state in ("idle", "beside_one_busy_process"):
        loaded = state != "idle"
        result[state] = {"all_cores": measure(args.steps, cores, loaded), "auto": measure(args.steps, 0, loaded)}
        r = result[state]
        r["ratio_all_cores_over_auto"] = round(r["all_cores"]["ms_per_step"] / r["auto"]["ms_per_step"], 2)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"pretrain_2d step, {cores} cores, {args.steps} steps per measurement (ms per step):")
    for state, r in result.items():
        print(f"  {state:>24}: all cores ({r['all_cores']['threads']} threads) {r['all_cores']['ms_per_step']:7.1f}   "
              f"auto ({r['auto']['threads']} threads) {r['auto']['ms_per_step']:7.1f}   ratio {r['ratio_all_cores_over_auto']}")


if __name__ == "__main__":
    main()
