"""The inputs of ``epipose predict``: image files, videos and folders of them found, checked and read
(RGB uint8; a video's frames streamed)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from epipose.predict_options import IMAGE_EXTS, VIDEO_EXTS, PredictError


@dataclass
class Source:
    """One input: an image file or a video."""

    path: Path
    kind: str                   # "image" | "video"
    width: int = 0
    height: int = 0
    fps: float = 0.0
    n_frames: int = 0           # as the container says (videos: may be off; the frames read count)

    @property
    def subject(self) -> str:
        return self.path.stem


def read_image(path: Path) -> np.ndarray:
    """RGB uint8 image; a clear error for an unreadable or truncated file."""
    data = np.fromfile(path, dtype=np.uint8)
    check_complete(path, data.tobytes())
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if len(data) else None
    if image is None:
        raise PredictError(f"{path}: not a readable image")
    return image[..., ::-1].copy()


def check_complete(path: Path, data: bytes) -> None:
    """A JPEG or PNG that ends before its end marker (a copy or download cut short) is refused, named as
    such: ``cv2.imread`` fills a truncated JPEG's missing rows with grey with only libjpeg's warning on
    stderr, and a pose would be predicted for a person half made up."""
    if data[:3] == b"\xff\xd8\xff" and not data.rstrip(b"\x00\r\n ").endswith(b"\xff\xd9"):
        raise PredictError(f"{path}: truncated JPEG (no end-of-image marker): the file was cut short")
    if data[:8] == b"\x89PNG\r\n\x1a\n" and b"IEND" not in data[-12:]:
        raise PredictError(f"{path}: truncated PNG (no IEND chunk): the file was cut short")


def open_video(path: Path) -> cv2.VideoCapture:
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise PredictError(f"{path}: not a readable video")
    return cap


def video_frames(path: Path) -> Iterator[tuple[int, np.ndarray]]:
    """(index, RGB frame) of a video, streamed."""
    cap = open_video(path)
    try:
        i = 0
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            yield i, frame[..., ::-1].copy()
            i += 1
    finally:
        cap.release()


def collect_sources(inputs: list[str | Path]) -> list[Source]:
    """Image files, videos, and folders (their images and videos, sorted by name) → sources, checked."""
    sources = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTS + VIDEO_EXTS)
            if not found:
                raise PredictError(f"{path}: folder holds no image ({', '.join(IMAGE_EXTS)}) or video "
                                   f"({', '.join(VIDEO_EXTS)})")
            sources += [_source(p) for p in found]
        elif path.exists():
            sources.append(_source(path))
        else:
            raise PredictError(f"input not found: {path}")
    stems = [s.subject for s in sources]
    dup = sorted({s for s in stems if stems.count(s) > 1})
    if dup:
        raise PredictError(f"inputs share the file stem(s) {dup}: the table names each input by its stem")
    return sources


def _source(path: Path) -> Source:
    ext = path.suffix.lower()
    if ext in VIDEO_EXTS:
        cap = open_video(path)
        w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        fps, n = float(cap.get(cv2.CAP_PROP_FPS) or 0.0), int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        cap.release()
        if w <= 0 or h <= 0:
            raise PredictError(f"{path}: not a readable video (no frame size)")
        return _sized(Source(path, "video", w, h, fps if fps > 0 else 25.0, n))
    if ext in IMAGE_EXTS:
        # Header-only size check is not available in OpenCV: read it (images are read again when drawn).
        h, w = read_image(path).shape[:2]
        return _sized(Source(path, "image", w, h, 0.0, 1))
    raise PredictError(f"{path}: unknown input type {ext!r} (images: {', '.join(IMAGE_EXTS)}; "
                       f"videos: {', '.join(VIDEO_EXTS)})")


MIN_SIDE_PX = 16                # smaller inputs hold no person to see


def _sized(source: Source) -> Source:
    if min(source.width, source.height) < MIN_SIDE_PX:
        raise PredictError(f"{source.path}: {source.width}x{source.height} {source.kind} is too small "
                           f"(at least {MIN_SIDE_PX} px a side)")
    return source


def source_frames(source: Source) -> Iterator[tuple[int, np.ndarray]]:
    if source.kind == "image":
        yield 0, read_image(source.path)
    else:
        yield from video_frames(source.path)
