"""Benchmark: peak memory of the streaming stages (extract_frames, infer_2d) as the data grows.

Both stages stream: extract_frames holds one video's crops per worker process, infer_2d one shard
and a decoded batch, with fixed-size error statistics. Their peak memory should not depend on the
size of the data set. This runs each stage script as dvc does (a child process, the project's
params for ``frames``, ``infer_2d`` and ``model``) on

* ``default``: the default data (``--default-h36m``, e.g. the ``data/raw/h36m`` a ``dvc repro`` made;
  synthesized from params.yaml's ``synth`` when not given),
* ``base``: a synthetic set of ``--subjects`` × ``--actions`` with ``synth.n_frames`` frames per
  sequence (default: params.yaml's subjects and actions, i.e. the default data again),
* ``scaled``: the same sequences ``--scale`` × longer (``--scale`` × ``synth.n_frames`` frames),

and reports each run's wall time and peak resident memory: the largest single process
(``wait4``'s ``ru_maxrss``, exact) and the whole process tree (workers included; sampled from
/proc every 20 ms), with the ratios scaled / base and scaled / default (target: about 1).
infer_2d uses ``--model`` or random weights of params.yaml's ``model`` (memory does not depend
on the weights).

    python benchmarks/memory.py --default-h36m data/raw/h36m        # the default data and 10x it: long
    python benchmarks/memory.py --default-h36m data/raw/h36m --subjects S1 S9 --actions Walking --scale 10

Writes ``benchmarks/out/memory.json`` and prints a table. Timings on a shared machine are noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PAGE = os.sysconf("SC_PAGE_SIZE")


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return out


def tree_rss(pid: int) -> int:
    """Resident bytes of ``pid`` and all its descendants (now)."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            total += int(Path(f"/proc/{p}/statm").read_text().split()[1]) * PAGE
        except (OSError, IndexError, ValueError):
            continue
        todo += _children(p)
    return total


def measure(cmd: list[str], cwd: Path) -> dict:
    """Run ``cmd``; wall seconds, peak RSS of its largest process and of its whole tree (MiB)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = [0]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], tree_rss(proc.pid))
            done.wait(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    done.set()
    sampler.join()
    if proc.returncode:
        raise SystemExit(f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n{err.decode()[-3000:]}")
    return {"seconds": round(time.perf_counter() - t0, 1), "max_process_rss_mib": round(usage.ru_maxrss / 1024, 1),
            "tree_rss_mib": round(peak[0] / 2**20, 1)}


def write_params(folder: Path, synth: dict | None = None) -> dict:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    if synth:
        params["synth"] = {**params["synth"], **synth}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return params


def python(code: str) -> str:
    """Run ``code`` in a child: this process stays small (a forked child's ru_maxrss starts at its
    parent's resident size), so it imports neither torch nor OpenCV itself."""
    return subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(ROOT)}, check=True,
                          capture_output=True, text=True).stdout


def dataset_size(h36m: Path) -> dict:
    return json.loads(python(
        "import json; from epipose.data.h36m import H36MDataset, video_info; "
        f"seqs = H36MDataset({str(h36m)!r}).sequences(); "
        "print(json.dumps({'videos': len(seqs), 'video_frames': sum(video_info(s.video)[0] for s in seqs)}))"))


def run_set(name: str, folder: Path, h36m: Path | None, synth: dict | None, model: Path) -> dict:
    """(Synthesize,) extract_frames and infer_2d in ``folder``; their measurements."""
    write_params(folder, synth)
    info: dict = {"name": name}
    if h36m is None:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, str(ROOT / "stages/synthesize.py"), "--h36m-out", "h36m", "--mpii-out", "mpii"],
                       cwd=folder, env={**os.environ, "PYTHONPATH": str(ROOT)}, check=True, stderr=subprocess.DEVNULL)
        info["synthesize_seconds"] = round(time.perf_counter() - t0, 1)
        h36m = folder / "h36m"
    info.update(h36m=str(h36m), **dataset_size(h36m))
    print(f"[{name}] {info['videos']} videos, {info['video_frames']} frames", file=sys.stderr, flush=True)
    info["extract_frames"] = measure([sys.executable, str(ROOT / "stages/extract_frames.py"), "--h36m", str(h36m),
                                      "--out", "frames"], folder)
    print(f"[{name}] extract_frames {info['extract_frames']}", file=sys.stderr, flush=True)
    info["infer_2d"] = measure([sys.executable, "-m", "epipose.launch", str(ROOT / "stages/infer_2d.py"),
                                "--frames", "frames", "--model", str(model), "--out", "pose2d.parquet",
                                "--metrics", "infer_2d.json", "--no-progress"], folder)
    info["crops"] = json.loads((folder / "infer_2d.json").read_text())["frames"]
    print(f"[{name}] infer_2d {info['infer_2d']} on {info['crops']} crops", file=sys.stderr, flush=True)
    return info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=int, default=10, help="sequence length factor of the scaled set (default 10)")
    parser.add_argument("--default-h36m", type=Path, default=None,
                        help="the default data (a Human3.6M-layout root); default: synthesize it from params.yaml")
    parser.add_argument("--subjects", nargs="+", default=None, help="subjects of the base/scaled sets (default: params)")
    parser.add_argument("--actions", nargs="+", default=None, help="actions of the base/scaled sets (default: params)")
    parser.add_argument("--model", type=Path, default=None, help="a pose2d checkpoint (default: random weights)")
    parser.add_argument("--workdir", type=Path, default=ROOT / "benchmarks" / "out" / "memory")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "memory.json")
    args = parser.parse_args()

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    model = args.model
    if model is None:
        model = args.workdir / "pose2d_random.pt"
        python("from epipose.models.pose_net import PoseNet, PoseNetConfig, load_model_params, save_pose_net; "
               f"save_pose_net(PoseNet(PoseNetConfig.from_params(load_model_params({str(ROOT / 'params.yaml')!r}))), "
               f"{str(model)!r})")
    model = model.resolve()
    subset = {"mpii": {**params["synth"]["mpii"], "n_train": 0, "n_valid": 0}}   # MPII is not measured
    if args.subjects:
        subset["subjects"] = args.subjects
    if args.actions:
        subset["actions"] = args.actions
    n = params["synth"]["n_frames"]
    default_h36m = args.default_h36m.resolve() if args.default_h36m else None
    sets = [run_set("default", args.workdir / "default", default_h36m, {"mpii": subset["mpii"]}, model)]
    if args.subjects or args.actions:
        sets.append(run_set("base", args.workdir / "base", None, {**subset, "n_frames": n}, model))
    sets.append(run_set(f"scaled_x{args.scale}", args.workdir / "scaled", None, {**subset, "n_frames": n * args.scale},
                        model))

    ref = {s["name"]: s for s in sets}
    base = ref.get("base", ref["default"])
    scaled = sets[-1]
    ratios = {}
    for stage in ("extract_frames", "infer_2d"):
        for key in ("max_process_rss_mib", "tree_rss_mib"):
            ratios[f"{stage}.{key}.scaled/base"] = round(scaled[stage][key] / base[stage][key], 3)
            ratios[f"{stage}.{key}.scaled/default"] = round(scaled[stage][key] / ref["default"][stage][key], 3)
    result = {"scale": args.scale, "frames_params": params["frames"], "infer_2d_params": params["infer_2d"],
              "cpus": len(os.sched_getaffinity(0)), "sets": sets, "ratios": ratios}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")

    print(f"{'set':<12} {'videos':>6} {'frames':>7} {'crops':>6} | {'extract_frames: s, max proc, tree MiB':>38} | "
          f"{'infer_2d: s, max proc, tree MiB':>32}")
    for s in sets:
        e, i = s["extract_frames"], s["infer_2d"]
        print(f"{s['name']:<12} {s['videos']:>6} {s['video_frames']:>7} {s['crops']:>6} | "
              f"{e['seconds']:>12} {e['max_process_rss_mib']:>12} {e['tree_rss_mib']:>12} | "
              f"{i['seconds']:>10} {i['max_process_rss_mib']:>10} {i['tree_rss_mib']:>10}")
    for k, v in ratios.items():
        print(f"{k:<48} {v}")
    print(f"→ {args.out}")


if __name__ == "__main__":
    main()
