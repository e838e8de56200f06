"""The extract_frames stage's science: decode each video once, crop the person, write one shard per video."""

from __future__ import annotations

import logging
import multiprocessing as mp
from pathlib import Path

import numpy as np
from tqdm import tqdm

from epipose import skeleton
from epipose.data.frames import FramesParams, crop_boxes, crop_image, encode_jpeg, shard_path, write_shard
from epipose.data.h36m import H36MDataset, Sequence, iter_video_frames
from epipose.io import atomic_path

log = logging.getLogger(__name__)


def extract_sequence(dataset: H36MDataset, seq: Sequence, params: FramesParams, out_root: Path) -> int:
    """Write the shard of one video; returns the number of frames written."""
    poses = dataset.poses_world(seq.subject, seq.action)
    n = dataset.usable_frames(seq, n_poses=poses.shape[0])
    wanted = np.arange(0, n, params.stride)
    camera = dataset.rig.camera(seq.subject, seq.camera)
    pelvis = camera.world_to_camera(poses[wanted, skeleton.MPII_FROM_H36M32[skeleton.PELVIS]])
    boxes = crop_boxes(pelvis, camera, params.box_mm)
    jpegs = [
        encode_jpeg(crop_image(image, *boxes[i], params.crop_size), params.jpeg_quality)
        for i, (_, image) in enumerate(iter_video_frames(seq.video, wanted))
    ]
    write_shard(shard_path(out_root, seq.subject, seq.action, seq.camera), wanted, jpegs, boxes)
    return len(wanted)


def _worker(args: tuple[str, Sequence, FramesParams, str]) -> int:
    root, seq, params, out = args
    return extract_sequence(H36MDataset(root), seq, params, Path(out))


def extract_frames(h36m_root: str | Path, out_root: str | Path, params: FramesParams) -> dict:
    """Extract every sequence of a Human3.6M-layout root into ``out_root`` (replaced atomically).

    Runs ``params.workers`` processes over videos; memory is bounded by one video per worker.
    Returns a summary (sequences, frames).
    """
    dataset = H36MDataset(h36m_root)
    sequences = dataset.sequences()
    if not sequences:
        raise ValueError(f"{dataset.root}: no (subject, action, camera) sequence with both video and poses")
    with atomic_path(out_root, directory=True) as tmp:
        jobs = [(str(dataset.root), seq, params, str(tmp)) for seq in sequences]
        bar = tqdm(total=len(jobs), desc="extract_frames", unit="video")
        if params.workers == 1:
            counts = [(_worker(j), bar.update())[0] for j in jobs]
        else:
            with mp.get_context("spawn").Pool(params.workers) as pool:
                counts = [(c, bar.update())[0] for c in pool.imap(_worker, jobs)]
        bar.close()
    return {"sequences": len(sequences), "frames": int(sum(counts))}
