"""The synthesize stage's science: build the synthetic Human3.6M- and MPII-layout datasets.

Work is split into tasks that depend only on ``synth.seed`` and their own keys: one per
(subject, camera) for the videos (the room is ray-cast once per camera and reused for every
action), one per chunk of MPII images. Tasks run in ``synth.workers`` processes; the output does
not depend on how many. Both datasets are built in temporary folders next to their targets and
renamed into place only when everything succeeded.
"""

from __future__ import annotations

import logging
import multiprocessing
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from epipose.camera import Camera, Rig, save_rig
from epipose.io import atomic_path
from epipose.params import ParamError, load_section
from epipose.stage import Folder, Runtime, StageResult
from epipose.synth.config import SynthParams, rng_for
from epipose.synth.motion import Body, base_action, generate_motion, load_motion_root, random_body
from epipose.synth.render import random_scene, render_background, render_frames
from epipose.synth.rig import load_given_rig, synthetic_rig
from epipose.synth.stills import render_stills
from epipose.synth.writers import (
    mpii_entry,
    video_path,
    write_jpeg,
    write_mpii_annotations,
    write_mpii_gt,
    write_poses,
    write_video,
)

log = logging.getLogger(__name__)

CLEAR_RADIUS_MM = 2100.0  # no furniture this close to the centre, where people move
# Procedural poses are stored (and rendered) rounded to a micrometre: the D3_Positions files have the
# same bytes on CPUs whose sin/cos/exp differ in the last bit.
POSE_DECIMALS_MM = 3


def make_rig(params: SynthParams) -> Rig:
    """The rig to render with: ``synth.cameras`` if given, else the synthetic one."""
    if params.cameras is not None:
        rig = load_given_rig(params.cameras, params.subjects, params.image_size)
        return Rig(rig.intrinsics, {s: rig.extrinsics[s] for s in params.subjects}, rig.source)
    return synthetic_rig(params.rig, params.subjects, params.image_size, params.seed)


def subject_body(params: SynthParams, subject: str) -> Body:
    return random_body(rng_for(params.seed, "body", subject))


def subject_motions(params: SynthParams, subject: str, body: Body) -> dict[str, np.ndarray]:
    """{sequence name: (N, 32, 3) world poses}: procedural, or read from ``synth.motion_root``."""
    if params.motion_root is None:
        return {name: np.round(generate_motion(name, params.n_frames, params.fps, body,
                                               rng_for(params.seed, "motion", subject, name)), POSE_DECIMALS_MM)
                for name in params.sequence_names(subject)}
    loaded = load_motion_root(params.motion_root, subject)
    wanted = {base_action(a) for a in params.actions}
    chosen = {name: poses[: params.n_frames] for name, poses in loaded.items() if base_action(name) in wanted}
    if not chosen:
        raise ParamError(f"param synth.actions: none of {params.actions} among the motions of {subject} in "
                         f"{params.motion_root} (have {sorted(loaded)})")
    for name, poses in chosen.items():
        if not np.isfinite(poses).all():
            raise ValueError(f"{params.motion_root}: motion {subject} {name!r} has non-finite joint positions")
    return chosen


@dataclass(frozen=True)
class VideoTask:
    """All videos of one camera of one subject."""

    out_root: str
    subject: str
    camera: Camera
    body: Body
    scene_seed: tuple[int, str, str]
    camera_azimuths: tuple[float, ...]
    n_objects: tuple[int, int]
    sequences: tuple[tuple[str, np.ndarray], ...]
    fps: float
    size: int


@dataclass(frozen=True)
class StillsTask:
    """One chunk of MPII-layout images."""

    out_root: str
    split: str
    chunk: int
    first: int
    count: int
    params: SynthParams


def run_video_task(task: VideoTask) -> tuple[int, int]:
    """Render and encode the task's videos; returns (videos, frames)."""
    scene = random_scene(rng_for(*task.scene_seed), clear_radius=CLEAR_RADIUS_MM, n_objects=task.n_objects,
                         camera_azimuths=task.camera_azimuths)
    background = render_background(scene, task.camera, task.size, task.size)
    frames = 0
    for name, poses in task.sequences:
        path = video_path(task.out_root, task.subject, name, task.camera.name)
        frames += write_video(path, render_frames(poses, task.body, task.camera, background), task.fps,
                              (task.size, task.size))
    return len(task.sequences), frames


def still_name(split: str, index: int) -> str:
    return f"synth_{split}_{index:06d}.jpg"


def run_stills_task(task: StillsTask) -> list[tuple[dict, np.ndarray]]:
    """Render, write and annotate one chunk of MPII-layout images: (json entry, head box) each."""
    p = task.params.mpii
    rng = rng_for(task.params.seed, "mpii", task.split, task.chunk)
    stills = render_stills(rng, task.count, p, (task.params.n_objects[0], task.params.n_objects[1]))
    entries = []
    for k, still in enumerate(stills):
        name = still_name(task.split, task.first + k)
        write_jpeg(Path(task.out_root) / "images" / name, still.image, p.jpeg_quality)
        entry = mpii_entry(name, still.joints, p.image_size, p.image_size)
        entries.append((entry, np.round(still.head_box, 2)))
    return entries


def _run(task: VideoTask | StillsTask):
    return ("video", run_video_task(task)) if isinstance(task, VideoTask) else ("stills", (task.split, run_stills_task(task)))


def _init_worker() -> None:
    cv2.setNumThreads(1)


def _stills_tasks(params: SynthParams, out_root: Path) -> list[StillsTask]:
    tasks = []
    per = params.mpii.images_per_chunk
    for split, n in (("train", params.mpii.n_train), ("valid", params.mpii.n_valid)):
        for chunk, first in enumerate(range(0, n, per)):
            tasks.append(StillsTask(str(out_root), split, chunk, first, min(per, n - first), params))
    return tasks


def synthesize(params: SynthParams, h36m_out: str | Path, mpii_out: str | Path, progress: bool = True) -> dict:
    """Render both datasets; returns a summary (counts and bytes)."""
    start = time.perf_counter()
    rig = make_rig(params)  # validates synth.cameras before anything is written
    with atomic_path(h36m_out, directory=True) as h36m_tmp, atomic_path(mpii_out, directory=True) as mpii_tmp:
        save_rig(rig, h36m_tmp / "cameras.json")
        tasks: list[VideoTask | StillsTask] = []
        n_sequences = 0
        for subject in params.subjects:
            body = subject_body(params, subject)
            motions = subject_motions(params, subject, body)
            for name, poses in motions.items():
                write_poses(h36m_tmp, subject, name, poses)
            n_sequences += len(motions)
            cameras = rig.cameras(subject)
            azimuths = tuple(float(np.arctan2(c.center[1], c.center[0])) for c in cameras.values())
            for cam in cameras.values():
                tasks.append(VideoTask(str(h36m_tmp), subject, cam, body, (params.seed, "scene", subject), azimuths,
                                       (params.n_objects[0], params.n_objects[1]), tuple(motions.items()),
                                       params.fps, params.image_size))
        (Path(mpii_tmp) / "annot").mkdir(parents=True, exist_ok=True)
        tasks += _stills_tasks(params, mpii_tmp)
        summary = {"videos": 0, "frames": 0, "sequences": n_sequences, "images": {"train": 0, "valid": 0}}
        entries: dict[str, list[tuple[dict, np.ndarray]]] = {"train": [], "valid": []}
        bar = tqdm(total=len(tasks), desc="synthesize", unit="task", disable=None if progress else True)
        if params.workers == 1 or len(tasks) == 1:
            _init_worker()
            results = map(_run, tasks)
            pool = None
        else:
            # spawn, not fork: a forked worker can inherit a lock held by one of the parent's BLAS/OpenCV
            # threads and wait on it for ever (seen once in a queued experiment); the tasks carry all they need
            pool = multiprocessing.get_context("spawn").Pool(min(params.workers, len(tasks)), initializer=_init_worker)
            results = pool.imap_unordered(_run, tasks, chunksize=1)
        try:
            for kind, value in results:
                if kind == "video":
                    summary["videos"] += value[0]
                    summary["frames"] += value[1]
                else:
                    split, chunk_entries = value
                    entries[split].extend(chunk_entries)
                bar.update(1)
        finally:
            bar.close()
            if pool is not None:
                pool.terminate()
                pool.join()
        for split, pairs in entries.items():
            write_mpii_annotations(mpii_tmp, split, [e for e, _ in pairs])
            if split == "valid":   # the lineage's evaluation file (head boxes for PCKh)
                write_mpii_gt(mpii_tmp, split, [e for e, _ in pairs], {e["image"]: box for e, box in pairs})
            summary["images"][split] = len(pairs)
        summary["h36m_bytes"] = sum(f.stat().st_size for f in Path(h36m_tmp).rglob("*") if f.is_file())
        summary["mpii_bytes"] = sum(f.stat().st_size for f in Path(mpii_tmp).rglob("*") if f.is_file())
    summary["seconds"] = round(time.perf_counter() - start, 2)
    log.info("synthesized %d videos (%d frames, %.1f MB) and %d + %d MPII images (%.1f MB) in %.1f s",
             summary["videos"], summary["frames"], summary["h36m_bytes"] / 1e6, summary["images"]["train"],
             summary["images"]["valid"], summary["mpii_bytes"] / 1e6, summary["seconds"])
    return summary


# --- the stage ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SynthesizePaths:
    h36m_out: str             # the Human3.6M-layout root (videos, D3_Positions, cameras.json)
    mpii_out: str             # the MPII-layout root (images/, annot/)

    def outputs(self) -> list[str]:
        return [Folder(self.h36m_out), Folder(self.mpii_out)]


def load_params(path: str | Path = "params.yaml") -> SynthParams:
    return load_section(SynthParams, "synth", path)


def run(paths: SynthesizePaths, params: SynthParams, runtime: Runtime) -> StageResult:
    """Render both datasets into their folders; the report counts what was written."""
    report = synthesize(params, paths.h36m_out, paths.mpii_out, progress=runtime.progress)
    return StageResult(paths.outputs(), {}, {k: v for k, v in report.items() if k != "seconds"},
                       {"seconds": report["seconds"]})
