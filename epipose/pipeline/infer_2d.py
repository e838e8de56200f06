"""The infer_2d stage's science: the 2D network on every frame shard → ``data/pose2d.parquet`` (+ its 2D error).

Streaming: shards are read one at a time and their JPEG crops flow through the network in
batches of ``infer_2d.batch_size`` that run across shard boundaries (the next batch decoded on
worker threads while the network runs on the current one); each shard's rows are appended to the
Parquet file as one row group as soon as its last crop is predicted, in the table's canonical
order (shards sorted by subject, action, camera; frames sorted). Peak memory is set by the batch,
not by the number or the length of the shards: the error statistics are fixed-size histograms
and counters.

Predictions are mapped from crop pixels back to the original (distorted) image with the shard's
``x0, y0, size`` (``epipose.data.crop.crop_to_original``). With a Human3.6M-layout root the 2D
error against the projected ground truth is reported (``epipose.evaluation.pose2d``: median / mean
pixels overall and per joint, PCKh@0.5, for the train and the test subjects). Shards without ground
truth (a recording without D3_Positions or extrinsics) are counted (``shards_without_gt``) and left
out of the error; the table is made without ground truth.

Under torchrun (``compute.nproc`` > 1) the shards are dealt round-robin to the processes; each
writes its row groups to a hidden part file beside the output, the statistics are summed over
the processes, and rank 0 copies the row groups into the output in the canonical order: the file
is the one a single process writes.
"""

from __future__ import annotations

import logging
import sys
import time
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass
from itertools import groupby, islice
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
import torch.distributed as dist
from tqdm import tqdm

from epipose import skeleton
from epipose.compute import ComputeParams, Runtime, amp_dtype, load_compute, setup_runtime
from epipose.data import frames as fr
from epipose.data.crop import crop_to_original
from epipose.data.pose_tables import POSE2D_SCHEMA
from epipose.evaluation.pose2d import Pose2DError
from epipose.io import atomic_path
from epipose.models.inference import InferenceParams, predict_2d
from epipose.models.pose_net import fuse_for_inference, load_pose_net
from epipose.params import load_section, load_value
from epipose.stage import StageResult

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class Infer2DParams(InferenceParams):
    """Section ``infer_2d`` of params.yaml: how the 2D network runs on every frame shard."""


# --- shards --------------------------------------------------------------------------------------------
def sorted_shards(frames_root: str | Path) -> list[tuple[tuple[str, str, str], Path]]:
    """Every shard under ``frames_root`` keyed (subject, action, camera), in the pose table's row order."""
    shards = [(fr.parse_shard_path(p), p) for p in fr.list_shards(frames_root)]
    if not shards:
        raise FileNotFoundError(f"no frame shards (<subject>/<action>.<camera>.parquet) under {frames_root}")
    return sorted(shards, key=lambda kp: kp[0])


@dataclass
class _OpenShard:
    tag: object
    shard: pd.DataFrame
    path: Path
    xy: list
    conf: list
    remaining: int


def predict_shards(model: torch.nn.Module, shards: Iterable[tuple[object, pd.DataFrame, Path]], batch_size: int,
                   flip_test: bool, amp, channels_last: bool, pool: ThreadPoolExecutor, workers: int
                   ) -> Iterator[tuple[object, pd.DataFrame, np.ndarray, np.ndarray, int]]:
    """The network over the crops of a stream of (tag, shard, path), in batches of ``batch_size``
    crops that run across shard boundaries (every batch full but the last, whatever the shards'
    lengths: peak memory is set by the batch, and small shards do not starve a GPU). The next
    batch is decoded on ``workers`` threads while the network runs on the current one. Yields
    (tag, shard, xy (F, J, 2) crop px, conf (F, J), crop size) per shard, in input order."""
    device = next(model.parameters()).device
    opened: deque[_OpenShard] = deque()

    def crops() -> Iterator[tuple[_OpenShard, bytes, int]]:
        for tag, shard, path in shards:
            entry = _OpenShard(tag, shard, path, [], [], len(shard))
            opened.append(entry)
            yield from ((entry, jpeg, int(f)) for jpeg, f in zip(shard["jpeg"], shard["frame"]))

    def chunks() -> Iterator[list[tuple[_OpenShard, bytes, int]]]:
        it = crops()
        while chunk := list(islice(it, batch_size)):
            yield chunk

    def submit(chunk: list) -> list:
        step = -(-len(chunk) // workers)
        return [pool.submit(fr.decode_shard_crops, [c[1] for c in part], [c[0].path for c in part],
                            [c[2] for c in part])
                for part in (chunk[a : a + step] for a in range(0, len(chunk), step))]

    crop_size = None
    batches = chunks()
    chunk = next(batches, None)
    pending = submit(chunk) if chunk else []
    while chunk:
        parts = [f.result() for f in pending]
        following = next(batches, None)
        pending = submit(following) if following else []
        if len({p.shape[1:] for p in parts}) != 1 or (crop_size is not None and parts[0].shape[1] != crop_size):
            names = sorted({str(c[0].path) for c in chunk})
            raise ValueError(f"crops of different sizes in {', '.join(names[:4])}: all shards must come from one "
                             f"frames.crop_size")
        images = parts[0] if len(parts) == 1 else np.concatenate(parts)
        crop_size = images.shape[1]
        t = torch.from_numpy(images).permute(0, 3, 1, 2).to(device, non_blocking=True)
        xy, conf = predict_2d(model, t, float(crop_size), flip_test, amp, channels_last)
        xy, conf = xy.cpu().numpy(), conf.cpu().numpy()
        start = 0
        for entry, group in groupby(chunk, key=lambda c: c[0]):   # consecutive runs of one shard
            n = sum(1 for _ in group)
            entry.xy.append(xy[start : start + n])
            entry.conf.append(conf[start : start + n])
            entry.remaining -= n
            start += n
        while opened and opened[0].remaining == 0:
            done = opened.popleft()
            yield done.tag, done.shard, np.concatenate(done.xy), np.concatenate(done.conf), int(crop_size)
        chunk = following


def shard_table(key: tuple[str, str, str], frames: np.ndarray, uv: np.ndarray, conf: np.ndarray) -> pa.Table:
    """Rows of ``data/pose2d.parquet`` for one shard (frames sorted), in the POSE2D schema."""
    f, j = uv.shape[:2]
    subject, action, camera = key
    cols = {
        "subject": pa.array([subject] * (f * j), pa.string()),
        "action": pa.array([action] * (f * j), pa.string()),
        "camera": pa.array([camera] * (f * j), pa.string()),
        "frame": pa.array(np.repeat(frames.astype(np.int32), j), pa.int32()),
        "joint": pa.array(np.tile(np.asarray(skeleton.MPII_NAMES[:j], dtype=object), f), pa.string()),
        "u": pa.array(uv[..., 0].reshape(-1).astype(np.float32), pa.float32()),
        "v": pa.array(uv[..., 1].reshape(-1).astype(np.float32), pa.float32()),
        "conf": pa.array(np.clip(conf, 0.0, 1.0).reshape(-1).astype(np.float32), pa.float32()),
    }
    return pa.table(cols, schema=POSE2D_SCHEMA)


def skeleton_scale_of(meta: dict, flip_test: bool) -> float | None:
    """The 2D network's skeleton scale (``metrics.skeleton_scale`` on its validation split, in its
    meta), when it was measured with the same flip test as this inference; else None."""
    scale = meta.get("skeleton_scale")
    if scale is None:
        return None
    if bool(meta.get("skeleton_scale_flip_test")) != flip_test:
        log.warning("the 2D network measured its skeleton scale with flip test %s, infer_2d.flip_test is %s: "
                    "not carried to triangulate", meta.get("skeleton_scale_flip_test"), flip_test)
        return None
    return float(scale)


def _part_path(out_path: str | Path, rank: int) -> Path:
    out = Path(out_path)
    return out.with_name(f".{out.name}.rank{rank}.part")


def _remove_parts(out_path: str | Path) -> None:
    out = Path(out_path)
    for stale in out.parent.glob(f".{out.name}.rank*.part"):
        stale.unlink(missing_ok=True)


def _merge_parts(out_path: str | Path, schema: pa.Schema, written: list[int], rt: Runtime,
                 error: Pose2DError | None, n_frames: int) -> int:
    """Distributed run: sum the 2D error statistics over the processes (in place) and let rank 0 copy
    every process's row groups into ``out_path`` in global shard order. Returns the total frame count."""
    for s in (error.stats.values() if error is not None else ()):
        for name in ("hist", "sum", "pckh_ok", "pckh_n"):
            t = torch.from_numpy(getattr(s, name)).to(rt.device)     # nccl reduces CUDA tensors only
            dist.all_reduce(t)
            setattr(s, name, t.cpu().numpy())
    total = torch.tensor([n_frames], dtype=torch.int64, device=rt.device)
    dist.all_reduce(total)
    everyone: list = [None] * rt.world_size
    dist.all_gather_object(everyone, written)
    if rt.is_main:
        order = sorted((index, rank, k) for rank, indices in enumerate(everyone) for k, index in enumerate(indices))
        files = [pq.ParquetFile(_part_path(out_path, r)) for r in range(rt.world_size)]
        with atomic_path(out_path) as tmp:
            with pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
                for _, rank, k in order:
                    writer.write_table(files[rank].read_row_group(k))
        for f in files:
            f.close()
    dist.barrier()                                 # the output is complete before the parts go
    _part_path(out_path, rt.rank).unlink(missing_ok=True)
    return int(total.item())


def _read_shards(mine: list) -> Iterator[tuple[tuple[int, tuple], pd.DataFrame, Path]]:
    """Each shard read, frames sorted and checked; empty shards skipped with a warning."""
    for index, (key, path) in mine:
        shard = fr.read_shard(path)
        shard = shard.sort_values("frame", kind="stable").reset_index(drop=True)
        if len(shard) == 0:
            log.warning("%s: empty shard, skipped", path)
            continue
        if shard["frame"].duplicated().any():
            raise ValueError(f"{path}: duplicate frame indices")
        yield (index, key), shard, path


def run_infer_2d(frames_root: str | Path, model_path: str | Path, out_path: str | Path, p: Infer2DParams,
                 num_joints: int = skeleton.NUM_JOINTS, gt_root: str | Path | None = None,
                 runtime: Runtime | None = None, progress: bool = True) -> dict:
    """Write ``out_path`` (pose2d.parquet) from every shard; return the metrics dict.

    ``runtime``: the stage's (``epipose.compute.setup_runtime``: device, torchrun's process group);
    default one process, device auto.
    """
    if num_joints != skeleton.NUM_JOINTS:
        raise ValueError(f"param model.num_joints is {num_joints}, but pose2d.parquet holds the "
                         f"{skeleton.NUM_JOINTS} MPII joints")
    shards = sorted_shards(frames_root)
    rt = runtime or setup_runtime(ComputeParams(), p.threads)
    model, meta = load_pose_net(model_path, num_joints=num_joints, map_location=rt.device)
    memory_format = torch.channels_last if p.channels_last else torch.contiguous_format
    model = fuse_for_inference(model).to(device=rt.device, memory_format=memory_format).eval()
    error = Pose2DError(gt_root, [key for key, _ in shards], num_joints) if gt_root is not None else None
    if error is not None and error.without and rt.is_main:
        log.info("%d of %d shards have no ground truth (D3_Positions and extrinsics) in %s: the 2D error is "
                 "over the others", len(error.without), len(shards), gt_root)
    t0 = time.perf_counter()
    metadata = {b"model": str(Path(model_path).name).encode(), b"flip_test": str(p.flip_test).encode(),
                b"input_size": str(model.config.input_size).encode()}
    scale = skeleton_scale_of(meta, p.flip_test)
    if scale is not None:
        metadata[b"skeleton_scale"] = repr(scale).encode()
    schema = POSE2D_SCHEMA.with_metadata(metadata)
    mine = list(enumerate(shards))[rt.rank :: rt.world_size]
    if rt.distributed:
        if rt.is_main:
            Path(out_path).parent.mkdir(parents=True, exist_ok=True)
            _remove_parts(out_path)                # of a killed run
        dist.barrier()
    # A single process writes the output (atomically); under torchrun each writes a hidden part.
    with atomic_path(out_path) if not rt.distributed else nullcontext(_part_path(out_path, rt.rank)) as tmp:
        written, n_frames = _write_rows(tmp, schema, model, mine, p, rt, error, progress)
    if rt.distributed:
        n_frames = _merge_parts(out_path, schema, written, rt, error, n_frames)
    seconds = time.perf_counter() - t0
    log.info("infer_2d: %d frames from %d shards in %.1f s (%.1f frames/s)", n_frames, len(shards), seconds,
             n_frames / max(seconds, 1e-9))
    metrics: dict = {"frames": n_frames, "shards": len(shards), "flip_test": p.flip_test, "skeleton_scale": scale}
    if error is not None:
        metrics.update(error.report())
    return metrics


def _write_rows(path: Path, schema: pa.Schema, model: torch.nn.Module, mine: list, p: Infer2DParams, rt: Runtime,
                error: Pose2DError | None, progress: bool) -> tuple[list[int], int]:
    """This process's shards through the network into ``path``, one row group per shard, and their 2D
    error into ``error`` → (the global index of each shard written, frames written)."""
    written: list[int] = []
    n_frames = 0
    amp = amp_dtype(p.amp, rt.device)
    with ThreadPoolExecutor(max(1, p.decode_workers)) as pool, \
            pq.ParquetWriter(path, schema, compression="zstd") as writer:
        bar = tqdm(total=len(mine), desc="infer_2d", unit="shard", file=sys.stderr,
                   disable=not (progress and rt.is_main))
        for (index, key), shard, xy, conf, crop_size in predict_shards(
                model, _read_shards(mine), p.batch_size, p.flip_test, amp, p.channels_last, pool,
                max(1, p.decode_workers)):
            frames = shard["frame"].to_numpy(np.int64)
            uv = crop_to_original(xy, shard["x0"].to_numpy()[:, None], shard["y0"].to_numpy()[:, None],
                                     shard["size"].to_numpy()[:, None], crop_size)
            writer.write_table(shard_table(key, frames, uv, conf))
            written.append(index)
            n_frames += len(frames)
            bar.update(1)
            if error is not None:
                error.add(key, frames, uv)
        bar.close()
    return written, n_frames


def summary(report: dict) -> dict[str, float]:
    """metrics/infer_2d.json: the 2D error against the projected ground truth (empty without it; the mean
    px, pulled by a few swapped limbs, is in the report only: dvc metrics show stays one screen)."""
    names = {"pckh@0.5": "pose2d.pckh@0.5", "median_px": "pose2d.median_px"}
    return {new: report[old] for old, new in names.items() if old in report}


# --- the stage -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Infer2DPaths:
    frames: str                     # frame shards folder (data/frames)
    model: str                      # the 2D network (models/pose2d.pt)
    out: str                        # the pose table (data/pose2d.parquet)
    gt_root: str | None = None      # Human3.6M-layout root: the 2D error against the projected ground truth

    def outputs(self) -> list[str]:
        return [self.out]


@dataclass(frozen=True)
class Infer2DConfig:
    compute: ComputeParams
    infer_2d: Infer2DParams
    num_joints: int


def load_params(path: str | Path = "params.yaml") -> Infer2DConfig:
    return Infer2DConfig(load_compute(path), load_section(Infer2DParams, "infer_2d", path),
                         load_value("model", "num_joints", int, path))


def run(paths: Infer2DPaths, params: Infer2DConfig, runtime: Runtime) -> StageResult | None:
    """The 2D network on every shard into ``paths.out``; the 2D error where ``paths.gt_root`` has ground truth."""
    t0 = time.perf_counter()
    report = run_infer_2d(paths.frames, paths.model, paths.out, params.infer_2d, num_joints=params.num_joints,
                          gt_root=paths.gt_root, runtime=runtime, progress=runtime.progress)
    if not runtime.is_main:
        return None
    if "median_px" in report:
        log.info("%d frames, median 2D error %.2f px, PCKh@0.5 %.1f%%", report["frames"], report["median_px"],
                 report["pckh@0.5"])
    return StageResult([paths.out], summary(report), report, {"seconds": round(time.perf_counter() - t0, 1)})
