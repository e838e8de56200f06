"""Benchmark: infer_2d's path against a naive loop, on the same frames, and against the machine's peak.

* **infer_2d path**: ``epipose.pipeline.infer_2d.run_infer_2d`` as the stage runs it (batched, JPEG decoding
  on threads overlapping the network, ``torch.inference_mode``, AMP where the hardware has it,
  channels_last, streamed Parquet output) on a subset of the frame shards;
* **naive loop**: the same shards, frame by frame: decode one JPEG, one fp32 forward pass
  at batch 1 (two with flip test, as the stage), map back, collect rows in a list, write once;
* **FLOPs per frame** (torch's flop counter; × 2 with flip test) and the machine's measured
  matmul peak in the same precisions, so the achieved fraction of peak is visible.

Usage::

    python benchmarks/inference.py --frames data/frames --model models/pose2d.pt --max-frames 2000
    python benchmarks/inference.py --frames data/frames              # random weights from params.yaml

Writes ``benchmarks/out/inference.json`` and prints a summary.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from epipose.compute import amp_dtype  # noqa: E402
from epipose.data.crop import crop_to_original  # noqa: E402
from epipose.data import frames as fr  # noqa: E402
from epipose.models.pose_net import (PoseNet, PoseNetConfig, count_flops, load_model_params, load_pose_net,  # noqa: E402
                                     normalise, save_pose_net)
from epipose.params import load_section  # noqa: E402
from epipose.pipeline.infer_2d import Infer2DParams, run_infer_2d, sorted_shards  # noqa: E402


def pick_shards(frames_root: Path, max_frames: int) -> list[tuple[tuple[str, str, str], Path]]:
    chosen, total = [], 0
    for key, path in sorted_shards(frames_root):
        if total >= max_frames:
            break
        n = len(fr.read_shard(path, columns=["frame"]))
        chosen.append((key, path))
        total += n
    return chosen


def naive_loop(model: torch.nn.Module, shards, flip_test: bool) -> tuple[int, float]:
    """Frame by frame, fp32, batch 1; returns (frames, seconds)."""
    model = model.float().to(memory_format=torch.contiguous_format).eval()
    size = model.config.input_size
    rows, n = [], 0
    t0 = time.perf_counter()
    with torch.no_grad():
        for key, path in shards:
            shard = fr.read_shard(path).sort_values("frame")
            for r in shard.itertuples():
                img = fr.decode_jpeg(r.jpeg)[..., ::-1].copy()
                s = img.shape[0]
                x = torch.nn.functional.interpolate(torch.from_numpy(img).permute(2, 0, 1)[None].float(), size=(size, size),
                                                    mode="bilinear", align_corners=False)
                preds = [model(normalise(x))["xy"][0].numpy()]
                if flip_test:
                    xy = model(normalise(torch.flip(x, dims=[3])))["xy"][0].numpy()
                    xy[:, 0] = size - 1 - xy[:, 0]
                    preds.append(xy[list(_flip_perm())])
                xy = np.mean(preds, axis=0) * (s / size)
                uv = crop_to_original(xy, r.x0, r.y0, r.size, s)
                rows.append((key, r.frame, uv))
                n += 1
    pd.DataFrame({"frame": [r[1] for r in rows], "u": [r[2][0, 0] for r in rows]}).to_parquet(
        Path(tempfile.gettempdir()) / "naive_bench.parquet")
    return n, time.perf_counter() - t0


def _flip_perm():
    from epipose.skeleton import FLIP_PERM

    return FLIP_PERM


def matmul_peak(dtype: torch.dtype, n: int = 2048, reps: int = 5) -> float:
    """Measured GFLOP/s of an n×n matmul in ``dtype`` on this machine (a practical peak)."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    torch.matmul(a, b)
    t0 = time.perf_counter()
    for _ in range(reps):
        torch.matmul(a, b)
    return 2 * n**3 * reps / (time.perf_counter() - t0) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", default="data/frames")
    parser.add_argument("--model", default=None, help="a pose2d checkpoint; default: random weights from params.yaml")
    parser.add_argument("--max-frames", type=int, default=1500)
    parser.add_argument("--naive-frames", type=int, default=300, help="frames for the (slow) naive loop")
    parser.add_argument("--params", default=str(ROOT / "params.yaml"))
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "inference.json"))
    args = parser.parse_args()
    params = load_section(Infer2DParams, "infer_2d", args.params)
    torch.set_num_threads(params.threads or len(os.sched_getaffinity(0)))

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model_path = args.model
        if model_path is None:
            mp = load_model_params(args.params)
            model_path = tmp / "random.pt"
            save_pose_net(PoseNet(PoseNetConfig.from_params(mp)), model_path)
        model, _ = load_pose_net(model_path)
        shards = pick_shards(Path(args.frames), args.max_frames)
        subset = tmp / "frames"
        for (subject, action, camera), path in shards:
            link = fr.shard_path(subset, subject, action, camera)
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(Path(path).resolve())
        run_infer_2d(subset, model_path, tmp / "warmup.parquet", dataclasses.replace(params), progress=False)
        t0 = time.perf_counter()
        metrics = run_infer_2d(subset, model_path, tmp / "pose2d.parquet", params, progress=False)
        fast_s = time.perf_counter() - t0
        fast_n = metrics["frames"]
        naive_shards = pick_shards(subset, args.naive_frames)
        naive_n, naive_s = naive_loop(model, naive_shards, params.flip_test)

    views = 2 if params.flip_test else 1
    flops = count_flops(model.float(), model.config.input_size) * views
    amp = amp_dtype(params.amp, torch.device("cpu"))
    peak_fast = matmul_peak(amp or torch.float32)
    peak_fp32 = matmul_peak(torch.float32)
    fast_fps, naive_fps = fast_n / fast_s, naive_n / naive_s
    result = {
        "device": "cpu" if not torch.cuda.is_available() else torch.cuda.get_device_name(),
        "threads": torch.get_num_threads(),
        "input_size": model.config.input_size, "flip_test": params.flip_test, "batch_size": params.batch_size,
        "precision": str(amp).replace("torch.", "") if amp else "float32",
        "gflops_per_frame": round(flops / 1e9, 3),
        "infer_2d": {"frames": fast_n, "seconds": round(fast_s, 2), "frames_per_s": round(fast_fps, 1),
                     "gflops_per_s": round(fast_fps * flops / 1e9, 1),
                     "matmul_peak_gflops_per_s": round(peak_fast, 1),
                     "fraction_of_peak": round(fast_fps * flops / 1e9 / peak_fast, 3)},
        "naive": {"frames": naive_n, "seconds": round(naive_s, 2), "frames_per_s": round(naive_fps, 1),
                  "gflops_per_s": round(naive_fps * flops / 1e9, 1), "matmul_peak_gflops_per_s": round(peak_fp32, 1),
                  "fraction_of_peak": round(naive_fps * flops / 1e9 / peak_fp32, 3)},
        "speedup": round(fast_fps / naive_fps, 2),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
