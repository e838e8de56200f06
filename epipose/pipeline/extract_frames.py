"""The extract_frames stage's science: decode each video, find the person, write one shard of square
person crops per video.

``frames.boxes`` says where the crops come from:

* ``auto`` (default): from the videos alone (``epipose.data.boxes``): per camera a background model
  from frames of all its videos, the person's silhouette in each frame, the crop's side following
  the tallest silhouette of a short window. No D3_Positions, no extrinsics: a user's own
  recordings (videos and intrinsics) are enough.
* ``gt``: the paper's protocol: the projection of a ``frames.box_mm`` box around the ground-truth
  pelvis (D3_Positions and the subject's extrinsics from cameras.json).

Work runs in ``frames.workers`` processes, one (subject, camera) at a time (its background is
modelled once for all its videos); memory is bounded by a camera's background frames (at ≤ 320 px)
and one video's crops. In auto mode each video is decoded twice (the silhouettes, then the crops).
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from epipose import skeleton
from epipose.data import boxes as bx
from epipose.data.crop import crop_image
from epipose.data.frames import CROP_INFO, FramesParams, crop_boxes, crop_info, encode_jpeg, shard_path, write_shard
from epipose.data.h36m import (H36MDataset, Sequence, check_distinct_videos, check_frame_rates, iter_video_frames,
                               video_info)
from epipose.io import atomic_path, write_json
from epipose.params import load_section
from epipose.stage import Folder, Runtime, StageResult

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CameraJob:
    root: str
    sequences: tuple[Sequence, ...]     # one (subject, camera): all its videos
    params: FramesParams
    out: str


def gt_boxes(dataset: H36MDataset, seq: Sequence, poses: np.ndarray, wanted: np.ndarray, box_mm: float) -> np.ndarray:
    """The paper's crops: the projection of a ``box_mm`` box around the ground-truth pelvis (``poses``:
    the sequence's world poses, (N, 32, 3))."""
    camera = dataset.rig.camera(seq.subject, seq.camera)
    pelvis = camera.world_to_camera(poses[wanted, skeleton.MPII_FROM_H36M32[skeleton.PELVIS]])
    return crop_boxes(pelvis, camera, box_mm)            # finite: read_pose_cdf refuses NaN/inf


def check_resolution(dataset: H36MDataset, seq: Sequence) -> None:
    """The camera's principal point lies in the middle 40% of its video's frame (real cameras: within a
    few % of the centre): else the intrinsics are for another resolution (a 500 px calibration of a
    1000 px video puts the principal point near a quarter of the frame, and every 3D ray elsewhere)."""
    _, width, height, _ = video_info(seq.video)
    K = dataset.rig.intrinsics[seq.camera][0]
    if not (0.3 * width < K[0, 2] < 0.7 * width and 0.3 * height < K[1, 2] < 0.7 * height):
        raise ValueError(f"{dataset.rig.source}: camera {seq.camera}'s principal point ({K[0, 2]:g}, {K[1, 2]:g}) "
                         f"is far from the centre of its {width}x{height} video {seq.video}: intrinsics for "
                         "another resolution?")


def camera_background(videos: list[Path], n_frames: int) -> tuple[np.ndarray, float]:
    """A camera's background (working resolution) from ``n_frames`` frames spread evenly over its
    videos → (background, working scale)."""
    per_video = -(-n_frames // len(videos))
    frames = []
    scale = 1.0
    for video in videos:
        n, width, height, _ = video_info(video)
        scale = bx.work_scale(width, height)
        wanted = np.unique(np.linspace(0, n - 1, min(per_video, n)).round().astype(np.int64))
        frames += [bx.reduce(image, scale) for _, image in iter_video_frames(video, wanted)]
    return bx.background(frames[:n_frames]), scale


def auto_boxes(seq: Sequence, wanted: np.ndarray, fps: float, bg: np.ndarray, scale: float, p: FramesParams
               ) -> tuple[np.ndarray, int]:
    """Crops from the video alone (``fps``: its frame rate) → (boxes (F, 3), frames in which no person
    was found)."""
    extents = np.stack([bx.silhouette_extent(image, bg, scale, p.fg_threshold)
                        for _, image in iter_video_frames(seq.video, wanted)])
    missing = int((~np.isfinite(extents).all(axis=1)).sum())
    if missing == len(extents):
        raise ValueError(f"{seq.video}: no person found in any frame (a static camera filming one person; "
                         f"check param frames.fg_threshold)")
    if missing:
        log.warning("%s: no person found in %d of %d frames: their crops follow the neighbouring frames",
                    seq.video, missing, len(extents))
    window = int(round(p.box_window_s * (fps or 50.0) / p.stride)) | 1
    return bx.square_crops(extents, p.person_fraction, p.centre_shift, 5, window), missing


def extract_sequence(dataset: H36MDataset, seq: Sequence, p: FramesParams, out_root: Path,
                     background: tuple[np.ndarray, float] | None = None) -> tuple[int, int]:
    """Write the shard of one video → (frames written, frames without a person found)."""
    missing = 0
    if p.boxes == "gt":
        poses = dataset.poses_world(seq.subject, seq.action)          # read once: frame count and boxes
        wanted = np.arange(0, dataset.usable_frames(seq, n_poses=poses.shape[0]), p.stride)
        boxes = gt_boxes(dataset, seq, poses, wanted, p.box_mm)
    else:
        n, _, _, fps = video_info(seq.video)
        wanted = np.arange(0, n, p.stride)
        boxes, missing = auto_boxes(seq, wanted, fps, *background, p)
    jpegs = [encode_jpeg(crop_image(image, *boxes[i], p.crop_size), p.jpeg_quality)
             for i, (_, image) in enumerate(iter_video_frames(seq.video, wanted))]
    write_shard(shard_path(out_root, seq.subject, seq.action, seq.camera), wanted, jpegs, boxes)
    return len(wanted), missing


def check_one_size(sequences: tuple[Sequence, ...]) -> None:
    """A camera's videos share one frame size (one background, one calibration): else refused, naming two."""
    sizes = {video_info(s.video)[1:3]: s.video for s in sequences}
    if len(sizes) > 1:
        (a, va), (b, vb) = sorted(sizes.items())[:2]
        raise ValueError(f"{vb}: {b[0]}x{b[1]} but {va} of the same camera is {a[0]}x{a[1]}: one camera films at "
                         "one size (its intrinsics are for one); convert the videos")


def _extract_camera(job: CameraJob) -> tuple[int, int]:
    dataset = H36MDataset(job.root)
    check_one_size(job.sequences)
    for seq in job.sequences:
        check_resolution(dataset, seq)
    bg = camera_background([s.video for s in job.sequences], job.params.background_frames) \
        if job.params.boxes == "auto" else None
    counts = [extract_sequence(dataset, seq, job.params, Path(job.out), bg) for seq in job.sequences]
    return sum(c[0] for c in counts), sum(c[1] for c in counts)


class _Kept(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _extract_camera_in_worker(job: CameraJob) -> tuple[tuple[int, int], list[str]]:
    """``_extract_camera`` in a pool process → (its counts, the warnings it raised): a spawned process
    has no log configuration, so they travel back and the stage logs them."""
    kept, root = _Kept(), logging.getLogger("epipose")
    root.addHandler(kept)
    try:
        return _extract_camera(job), kept.messages
    finally:
        root.removeHandler(kept)


def check_stray_files(dataset: H36MDataset, mode: str) -> list[Path]:
    """Videos and pose files the layout does not read (``H36MDataset.stray_files``): one warning naming
    them (``frames.stray_files: warn``) or the stage's error (``error``) → the files."""
    strays = dataset.stray_files()
    if strays:
        names = ", ".join(p.relative_to(dataset.root).as_posix() for p in strays[:8])
        more = f" and {len(strays) - 8} more" if len(strays) > 8 else ""
        what = (f"{dataset.root}: {len(strays)} file(s) that look like videos or pose files do not match the "
                f"layout (<S#>/Videos/<action>.<camera>.mp4, <S#>/MyPoseFeatures/D3_Positions/<action>.cdf) and "
                f"are not read: {names}{more}")
        if mode == "error":
            raise ValueError(f"{what} (param frames.stray_files: warn goes on without them)")
        log.warning("%s", what)
    return strays


def extract_frames(h36m_root: str | Path, out_root: str | Path, params: FramesParams, progress: bool = True) -> dict:
    """Extract every video of a Human3.6M-layout root into ``out_root`` (replaced atomically) → a
    summary (videos, frames, frames without a person found)."""
    dataset = H36MDataset(h36m_root)
    strays = check_stray_files(dataset, params.stray_files)
    sequences = dataset.sequences(require_poses=params.boxes == "gt")
    check_distinct_videos(sequences)
    check_frame_rates(sequences)
    if not sequences:
        if params.boxes == "gt":
            raise ValueError(f"{dataset.root}: no (subject, action, camera) with both a video and poses: param "
                             "frames.boxes: gt (the paper's crops) needs D3_Positions and extrinsics; auto needs "
                             "only the videos")
        raise ValueError(f"{dataset.root}: no videos (<subject>/Videos/<action>.<camera>.mp4)")
    groups: dict[tuple[str, str], list[Sequence]] = {}
    for seq in sequences:
        groups.setdefault((seq.subject, seq.camera), []).append(seq)
    with atomic_path(out_root, directory=True) as tmp:
        jobs = [CameraJob(str(dataset.root), tuple(g), params, str(tmp)) for _, g in sorted(groups.items())]
        bar = tqdm(total=len(jobs), desc="extract_frames", unit="camera", disable=not progress)
        if params.workers == 1:
            counts = [(_extract_camera(j), bar.update())[0] for j in jobs]
        else:
            with mp.get_context("spawn").Pool(params.workers) as pool:
                counts = []
                for c, warnings in pool.imap(_extract_camera_in_worker, jobs):
                    counts.append(c)
                    for message in warnings:
                        log.warning("%s", message)
                    bar.update()
        bar.close()
        write_json(crop_info(params), Path(tmp) / CROP_INFO)
    return {"sequences": len(sequences), "frames": int(sum(c[0] for c in counts)),
            "frames_without_person": int(sum(c[1] for c in counts)), "stray_files": len(strays),
            "stray_file_names": [p.relative_to(dataset.root).as_posix() for p in strays]}


# --- the stage ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ExtractFramesPaths:
    h36m: str                 # a Human3.6M-layout root (videos, cameras.json)
    out: str                  # the shards' folder, <out>/<subject>/<action>.<camera>.parquet

    def outputs(self) -> list[str]:
        return [Folder(self.out)]


def load_params(path: str | Path = "params.yaml") -> FramesParams:
    return load_section(FramesParams, "frames", path)


def run(paths: ExtractFramesPaths, params: FramesParams, runtime: Runtime) -> StageResult:
    """Every video's person crops into one shard each; the report counts videos and frames."""
    t0 = time.perf_counter()
    report = extract_frames(paths.h36m, paths.out, params, progress=runtime.progress)
    log.info("%d videos, %d frames (boxes: %s; person not found in %d) → %s", report["sequences"],
             report["frames"], params.boxes, report["frames_without_person"], paths.out)
    return StageResult([paths.out], {}, report, {"seconds": round(time.perf_counter() - t0, 1)})
