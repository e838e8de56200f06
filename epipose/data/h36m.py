"""Reader (and, for the synthetic data, writer) of the native Human3.6M layout.

```
<root>/cameras.json
<root>/<S>/Videos/<Action>.<camera>.mp4
<root>/<S>/MyPoseFeatures/D3_Positions/<Action>.cdf   variable "Pose": (1, N, 96), mm, world frame
```
Real-data quirks survived with a warning: S1's action names differ between videos and poses
(TakingPhoto/Photo, WalkingDog/WalkDog), a camera's video may be missing (S11 Directions,
54138969), and video and pose frame counts can differ by a few frames (the shorter is used).
Sequences are keyed by the pose file's action name.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import cdflib
import cv2
import numpy as np
from cdflib.cdfwrite import CDF

from epipose import skeleton
from epipose.camera import Rig, load_rig
from epipose.io import atomic_path

log = logging.getLogger(__name__)

FPS = 50.0
TRAIN_SUBJECTS = ("S1", "S5", "S6", "S7", "S8")
TEST_SUBJECTS = ("S9", "S11")
# The synthetic default data's further training people (not in Human3.6M, named after its pattern).
EXTRA_TRAIN_SUBJECTS = tuple(f"S{i}" for i in range(12, 27))
# Video-name → pose-name aliases of the real release (the action stem, before any " 1"/" 2").
ACTION_ALIASES = {"TakingPhoto": "Photo", "WalkingDog": "WalkDog"}
_VIDEO_RE = re.compile(r"^(?P<action>.+)\.(?P<camera>[^.]+)\.mp4$")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".m4v", ".webm")     # what looks like a video, any case


def action_name(action: str) -> str:
    """Human3.6M's per-action grouping merges takes: "Walking 1" → "Walking"."""
    return action.split(" ")[0]


def check_distinct_videos(sequences: list[Sequence]) -> None:
    """One recording filed under two camera ids (a copy, a renamed file) would triangulate a person from
    one view twice: refuse two videos of a (subject, action) with the same bytes, naming both. Only
    videos of equal size are read."""
    groups: dict[tuple[str, str, int], list[Path]] = {}
    for seq in sequences:
        groups.setdefault((seq.subject, seq.action, seq.video.stat().st_size), []).append(seq.video)
    for videos in (g for g in groups.values() if len(g) > 1):
        digests: dict[str, Path] = {}
        for video in videos:
            digest = hashlib.sha256(video.read_bytes()).hexdigest()
            if digest in digests:
                raise ValueError(f"{video}: the same video as {digests[digest]} (one recording under two camera "
                                 "ids); keep one")
            digests[digest] = video


def check_frame_rates(sequences: list[Sequence], tolerance: float = 0.01) -> None:
    """The videos of one (subject, action) must share a frame rate (their headers'): frame f of each is
    paired with frame f of the others, so a 25-fps camera among 50-fps ones pairs every frame with
    another moment (camera errors of ~25°, labels 50% worse, and the epipolar check can still pass).
    Refused naming both videos; resampling is not done."""
    groups: dict[tuple[str, str], list[tuple[float, Path]]] = {}
    for seq in sequences:
        groups.setdefault((seq.subject, seq.action), []).append((video_info(seq.video)[3], seq.video))
    for rates in groups.values():
        (lo, slow), (hi, fast) = min(rates), max(rates)
        if lo > 0 and hi / lo - 1.0 > tolerance:
            raise ValueError(f"{slow}: {lo:g} fps, but {fast} of the same recording is {hi:g} fps: their frames "
                             "would be paired with other moments; convert the videos to one frame rate")


def canonical_action(name: str) -> str:
    """The pose-file spelling of an action name (``"TakingPhoto 1"`` → ``"Photo 1"``)."""
    stem, sep, rest = name.partition(" ")
    return ACTION_ALIASES.get(stem, stem) + sep + rest


# --- D3_Positions .cdf ----------------------------------------------------------------------
def read_pose_cdf(path: str | Path) -> np.ndarray:
    """Read ``Pose`` from a D3_Positions file → (N, 32, 3) float64, mm, world frame."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"pose file not found: {path}")
    try:
        pose = np.asarray(cdflib.CDF(str(path)).varget("Pose"), dtype=np.float64)
    except Exception as exc:  # cdflib raises assorted errors on corrupt files
        raise ValueError(f"{path}: cannot read variable 'Pose' ({type(exc).__name__}: {exc})") from None
    if pose.ndim == 3 and pose.shape[0] == 1:
        pose = pose[0]
    if pose.ndim != 2 or pose.shape[1] != 96:
        raise ValueError(f"{path}: expected 'Pose' of shape (1, N, 96), got {pose.shape}")
    pose = pose.reshape(-1, 32, 3)
    bad = ~np.isfinite(pose).all(-1)
    if bad.any():
        frame, joint = np.argwhere(bad)[0]
        raise ValueError(f"{path}: ground truth not finite at frame {frame}, joint {skeleton.H36M32_NAMES[joint]} "
                         f"({int(bad.any(-1).sum())} frames)")
    return pose


def write_pose_cdf(path: str | Path, poses32: np.ndarray) -> None:
    """Write (N, 32, 3) mm poses as a D3_Positions file (uncompressed, byte-deterministic)."""
    poses32 = np.asarray(poses32, dtype=np.float64)
    if poses32.ndim != 3 or poses32.shape[1:] != (32, 3):
        raise ValueError(f"expected poses of shape (N, 32, 3), got {poses32.shape}")
    n = poses32.shape[0]
    with atomic_path(path) as tmp:
        cdf = CDF(str(tmp), cdf_spec={"Compressed": False}, delete=True)
        cdf.write_var(
            {"Variable": "Pose", "Data_Type": CDF.CDF_DOUBLE, "Num_Elements": 1, "Rec_Vary": True,
             "Dim_Sizes": [n, 96], "Compress": 0},
            var_data=poses32.reshape(1, n, 96),
        )
        cdf.close()


# --- videos ---------------------------------------------------------------------------------
def video_info(path: str | Path) -> tuple[int, int, int, float]:
    """(n_frames from the container header, width, height, fps); clear error if unreadable."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"video not found: {path}")
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise ValueError(f"{path}: cannot open video (corrupt or unsupported)")
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        fps = float(cap.get(cv2.CAP_PROP_FPS))
    finally:
        cap.release()
    if n <= 0 or w <= 0 or h <= 0:
        raise ValueError(f"{path}: video reports no frames (corrupt or truncated)")
    return n, w, h, fps


def iter_video_frames(path: str | Path, wanted: np.ndarray | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """Decode a video once, front to back, yielding ``(index, BGR image)`` for ``wanted`` indices.

    Raises ``ValueError`` naming the file if it cannot be opened or ends before the last
    wanted frame (a truncated or corrupt file).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"video not found: {path}")
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise ValueError(f"{path}: cannot open video (corrupt or unsupported)")
    wanted_set = None if wanted is None else set(int(i) for i in wanted)
    last = None if wanted is None else (max(wanted_set) if wanted_set else -1)
    index = 0
    try:
        while last is None or index <= last:
            if wanted_set is None or index in wanted_set:
                ok, image = cap.read()
                if not ok:
                    break
                yield index, image
            else:
                if not cap.grab():
                    break
            index += 1
    finally:
        cap.release()
    if last is not None and index <= last:
        raise ValueError(f"{path}: video ends after {index} frames but frame {last} was expected (truncated or corrupt)")
    if last is None and index == 0:
        raise ValueError(f"{path}: no decodable frames (corrupt or truncated)")


# --- the dataset ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Sequence:
    subject: str
    action: str          # pose-file spelling
    camera: str
    video: Path
    poses: Path | None   # None: a recording without ground truth


class H36MDataset:
    """A Human3.6M-layout root: cameras, ground-truth poses and per-camera videos."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"Human3.6M root not found: {self.root} (param data.h36m_root)")

    @cached_property
    def rig(self) -> Rig:
        return load_rig(self.root / "cameras.json")

    def subjects(self) -> list[str]:
        found = [p.name for p in self.root.iterdir() if p.is_dir() and re.fullmatch(r"S\d+", p.name)]
        return sorted(found, key=lambda s: int(s[1:]))

    def pose_path(self, subject: str, action: str) -> Path:
        return self.root / subject / "MyPoseFeatures" / "D3_Positions" / f"{action}.cdf"

    def actions(self, subject: str) -> list[str]:
        folder = self.root / subject / "MyPoseFeatures" / "D3_Positions"
        return sorted(p.stem for p in folder.glob("*.cdf"))

    def sequences(self, subjects: list[str] | tuple[str, ...] | None = None,
                  require_poses: bool = True) -> list[Sequence]:
        """Every (subject, action, camera) with a video (and, with ``require_poses``, a pose file), sorted.

        With ``require_poses`` (the paper's ground-truth crops) videos without poses and poses without
        a camera's video are skipped with a warning (real releases have both), and a subject or a
        video's camera that cameras.json does not calibrate (intrinsics and the subject's extrinsics)
        is an error naming cameras.json: its crops cannot be computed, and skipping it would drop
        data silently. Without it (a recording without ground truth) every video whose camera has
        intrinsics is a sequence; its ``poses`` is the pose file if there is one, else None.
        """
        subjects = list(subjects) if subjects is not None else self.subjects()
        if not require_poses:
            return [seq for subject in subjects for seq in self._videos(subject)]
        out: list[Sequence] = []
        for subject in subjects:
            if not (self.root / subject).is_dir():
                raise FileNotFoundError(f"subject folder not found: {self.root / subject}")
            actions = set(self.actions(subject))
            if not actions:
                log.warning("%s: no D3_Positions .cdf files, subject skipped", self.root / subject)
            if actions and subject not in self.rig.extrinsics:
                raise ValueError(f"{self.rig.source}: no extrinsics for subject {subject}, which has poses "
                                 f"under {self.root / subject} (have {sorted(self.rig.extrinsics)})")
            cams = self.rig.extrinsics.get(subject, {})
            videos: dict[tuple[str, str], Path] = {}
            for video in sorted((self.root / subject / "Videos").glob("*.mp4")):
                m = _VIDEO_RE.match(video.name)
                if not m:
                    continue
                action = canonical_action(m["action"])
                if action not in actions:
                    if "_ALL" not in m["action"]:
                        log.warning("%s: no pose file for this video, skipped", video)
                    continue
                if m["camera"] not in cams or m["camera"] not in self.rig.intrinsics:
                    what = "intrinsics" if m["camera"] not in self.rig.intrinsics else f"extrinsics of {subject}"
                    raise ValueError(f"{self.rig.source}: camera {m['camera']} of {video} is not in its {what}")
                videos[(action, m["camera"])] = video
            for action in sorted(actions):
                for cam in sorted(cams):
                    video = videos.get((action, cam))
                    if video is None:
                        log.warning("%s %s: no video for camera %s, skipped", subject, action, cam)
                        continue
                    out.append(Sequence(subject, action, cam, video, self.pose_path(subject, action)))
        return out

    def _videos(self, subject: str) -> list[Sequence]:
        """A subject's videos, each with its pose file if it has one; cameras need intrinsics only."""
        if not (self.root / subject).is_dir():
            raise FileNotFoundError(f"subject folder not found: {self.root / subject}")
        out = []
        for video in sorted((self.root / subject / "Videos").glob("*.mp4")):
            m = _VIDEO_RE.match(video.name)
            if not m or "_ALL" in m["action"]:
                continue
            if m["camera"] not in self.rig.intrinsics:
                raise ValueError(f"{self.rig.source}: camera {m['camera']} of {video} is not in its intrinsics "
                                 f"(have {self.rig.camera_names})")
            action = canonical_action(m["action"])
            poses = self.pose_path(subject, action)
            out.append(Sequence(subject, action, m["camera"], video, poses if poses.exists() else None))
        if not out:
            log.warning("%s: no videos (<action>.<camera>.mp4 under Videos/), subject skipped", self.root / subject)
        return sorted(out, key=lambda s: (s.action, s.camera))

    def stray_files(self) -> list[Path]:
        """Files under the root that look like videos or pose files but that the layout never reads — a
        subject folder not named S<n>, a video not ``<subject>/Videos/<action>.<camera>.mp4``, a pose file
        not ``<subject>/MyPoseFeatures/D3_Positions/<action>.cdf`` — sorted, so none is dropped unsaid."""
        out = []
        for path in sorted(self.root.rglob("*")):
            suffix = path.suffix.lower()
            if suffix not in (*VIDEO_SUFFIXES, ".cdf") or not path.is_file():
                continue
            parts = path.relative_to(self.root).parts
            if not re.fullmatch(r"S\d+", parts[0]):
                out.append(path)
            elif suffix == ".cdf":
                if parts[1:3] != ("MyPoseFeatures", "D3_Positions") or len(parts) != 4 or path.suffix != ".cdf":
                    out.append(path)
            elif parts[1:2] != ("Videos",) or len(parts) != 3 or not _VIDEO_RE.match(path.name):
                out.append(path)
        return out

    def has_ground_truth(self, subject: str, action: str, camera: str) -> bool:
        """Whether the root has the poses of (subject, action) and the extrinsics of camera for subject."""
        return self.pose_path(subject, action).exists() and self.rig.has_extrinsics(subject, camera)

    def poses_world(self, subject: str, action: str) -> np.ndarray:
        """Ground truth (N, 32, 3), mm, world frame."""
        return read_pose_cdf(self.pose_path(subject, action))

    def poses_mpii_camera(self, subject: str, action: str, camera: str) -> np.ndarray:
        """Ground truth in MPII order and ``camera``'s frame: (N, 16, 3) mm."""
        cam = self.rig.camera(subject, camera)
        return cam.world_to_camera(skeleton.h36m32_to_mpii(self.poses_world(subject, action)))

    def usable_frames(self, seq: Sequence, n_poses: int | None = None) -> int:
        """min(video frames, pose frames), warning when they differ (a real-data quirk)."""
        n_video = video_info(seq.video)[0]
        if n_poses is None:
            n_poses = self.poses_world(seq.subject, seq.action).shape[0]
        if n_video != n_poses:
            log.warning("%s: %d video frames vs %d pose frames, using the shorter", seq.video, n_video, n_poses)
        return min(n_video, n_poses)
