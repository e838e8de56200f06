"""The figures of ``epipose predict``: per image a PNG, per video an H.264 MP4, each frame the input with
its 2D skeleton beside the 3D one."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from epipose.io import atomic_path
from epipose.predict.inference import SourceResult
from epipose.predict.inputs import read_image, video_frames
from epipose.viz import close_figure, figure_rgb, half_extent, pose_figure, save_figure

FIGURE_PX = (800, 400)          # PNG / MP4 frame size: image panel beside the 3D view


def frame_figure(image: np.ndarray, uv: np.ndarray, pose: np.ndarray, conf: np.ndarray, title: str,
                 lim_mm: float | None = None, kpt_thr: float = 0.0, low_confidence: bool = False):
    """The input with the 2D skeleton beside the 3D one (left limbs blue, right red); joints below
    ``kpt_thr`` are not drawn; a flagged input says so in the title."""
    hide = conf < kpt_thr
    uv, pose = np.where(hide[:, None], np.nan, uv), np.where(hide[:, None], np.nan, pose)
    if low_confidence:
        title = f"{title} — LOW CONFIDENCE: unlike the training data? unreliable"
    return pose_figure(image, [(uv, "sides")], [(pose, "sides", "3D (root-relative, camera frame)")],
                       image_title=f"2D (mean confidence {float(np.mean(conf)):.2f})", title=title,
                       size_px=FIGURE_PX, dpi=100, lim_mm=lim_mm)


def write_image_figure(res: SourceResult, path: Path, kpt_thr: float = 0.0) -> None:
    fig = frame_figure(read_image(res.source.path), res.uv[0], res.pose[0], res.conf[0], res.source.path.name,
                       kpt_thr=kpt_thr, low_confidence=res.low_confidence)
    with atomic_path(path) as tmp:
        save_figure(fig, tmp)


def write_video_figure(res: SourceResult, path: Path, progress: bool = True, kpt_thr: float = 0.0) -> None:
    """An H.264 MP4 (yuv420p, faststart: browsers and GitHub play it; ffmpeg from imageio-ffmpeg) at the
    input's rate: each frame with its 2D skeleton beside the 3D view."""
    import imageio_ffmpeg

    lim = half_extent(list(res.pose))
    index = {f: i for i, f in enumerate(res.frames)}
    with atomic_path(path) as tmp:
        writer = imageio_ffmpeg.write_frames(str(tmp), FIGURE_PX, fps=res.source.fps, codec="libx264",
                                             pix_fmt_out="yuv420p", output_params=["-movflags", "+faststart"],
                                             ffmpeg_log_level="error")
        writer.send(None)                       # start ffmpeg
        try:
            for frame, image in tqdm(video_frames(res.source.path), total=len(res.frames), desc=f"draw {path.name}",
                                     unit="frame", file=sys.stderr, disable=not progress, mininterval=1.0):
                i = index.get(frame)
                if i is None:
                    continue
                fig = frame_figure(image, res.uv[i], res.pose[i], res.conf[i], f"{res.source.path.name} frame {frame}",
                                   lim, kpt_thr, res.low_confidence)
                writer.send(np.ascontiguousarray(figure_rgb(fig)))
                close_figure(fig)
        finally:
            writer.close()


def write_figures(results: list[SourceResult], out_dir: Path, progress: bool = True, kpt_thr: float = 0.0
                  ) -> list[Path]:
    """``out_dir``/STEM.png per image and STEM.mp4 per video; their paths."""
    files = []
    for res in results:
        if res.source.kind == "image":
            path = out_dir / f"{res.source.subject}.png"
            write_image_figure(res, path, kpt_thr)
        else:
            path = out_dir / f"{res.source.subject}.mp4"
            write_video_figure(res, path, progress, kpt_thr)
        files.append(path)
    return files
