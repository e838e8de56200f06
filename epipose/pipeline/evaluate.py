"""The evaluate stage's science: the 3D networks (and the refiner) on the test subjects, with the paper's protocol.

Protocol (EpipolarPose, after Sun et al.'s integral regression): every ``evaluate.stride``-th frame
(index at the video's native 50 fps) of the test subjects' shards; the network's output is
back-projected with the **ground-truth root depth** and the camera intrinsics (lens included),
then made root-relative (pelvis at the origin) and compared with the root-relative ground truth in
the camera's frame. Metrics (``epipose.metrics``): MPJPE, N-MPJPE, P-MPJPE, PCK3D@150 mm, AUC
(0–150 mm) and PSS@k (k-means clusters of the training subjects' ground truth), per action (takes
merged: "Walking 1" counts as "Walking") and overall, frame-averaged.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import torch

from epipose import metrics as M
from epipose import skeleton
from epipose.camera import Rig
from epipose.compute import select_device
from epipose.data.frames import FrameCache, load_frames
from epipose.data.h36m import TEST_SUBJECTS, TRAIN_SUBJECTS, H36MDataset
from epipose.data.pose_tables import key_groups
from epipose.data.targets import gt_targets
from epipose.io import atomic_path
from epipose.metrics import root_relative
from epipose.models.codec import encode_pose
from epipose.models.inference import infer_3d
from epipose.models.pose_net import load_pose3d
from epipose.models.refiner import load_refiner, refine_poses
from epipose.params import in_range
from epipose.viz import pose_figure, save_figure

log = logging.getLogger(__name__)

# The paper's Human3.6M MPJPE (mm, Protocol #1 with the GT root depth), Table 1 of Kocabas et al. 2019.
PAPER_MPJPE = {"fully_supervised": 51.8, "self_supervised": 76.6, "self_supervised+refiner": 60.5}
METHOD_OF_TARGET = {"pseudo3d": "self_supervised", "gt": "fully_supervised"}
METHOD_LABELS = {"self_supervised": "Self-supervised (pseudo-labels)", "self_supervised+refiner": "Self-supervised + refiner",
                 "fully_supervised": "Fully supervised (ground truth)", "fully_supervised+refiner": "Fully supervised + refiner"}


@dataclass(frozen=True)
class EvaluateParams:
    """Section ``evaluate`` of params.yaml."""

    subjects: list[str] = field(default_factory=lambda: list(TEST_SUBJECTS))
    stride: int = in_range(1, 100000, default=10)          # native-frame stride (the paper: 64)
    batch_size: int = in_range(1, 65536, default=128)
    flip_test: bool = True
    amp: Literal["auto", "bf16", "fp16", "none"] = "auto"
    channels_last: bool = True
    threads: int = in_range(0, 256, default=0)             # torch CPU threads; 0 = all cores
    decode_workers: int = in_range(1, 64, default=2)
    pck_threshold_mm: float = in_range(1.0, 10000.0, default=150.0)
    pss_k: list[int] = field(default_factory=lambda: [50, 100])
    pss_max_poses: int = in_range(100, 10**7, default=20000)   # training GT poses (evenly spaced) for the clusters
    seed: int = 0                                          # k-means initialisation
    figures: int = in_range(0, 1000, default=4)            # test frames drawn to reports/figures


# --- ground truth -----------------------------------------------------------------------------------------
def pss_centroids(dataset: H36MDataset, ks: list[int], max_poses: int, seed: int = 0,
                  fallback: np.ndarray | None = None) -> dict[int, np.ndarray]:
    """k-means centroids of the training subjects' normalised ground-truth poses, in every camera's frame.

    Without training subjects under the root, ``fallback`` poses (e.g. the test ground truth) are used.
    """
    subjects = [s for s in TRAIN_SUBJECTS if s in dataset.subjects()]
    poses = []
    for subject in subjects:
        for action in dataset.actions(subject):
            world = skeleton.h36m32_to_mpii(dataset.poses_world(subject, action))
            for cam in dataset.rig.cameras(subject).values():
                poses.append(cam.world_to_camera(world))
    if poses:
        poses = np.concatenate(poses)
    elif fallback is not None:
        log.warning("%s: no training subject found; PSS clusters fitted on the test ground truth", dataset.root)
        poses = fallback
    else:
        raise ValueError(f"{dataset.root}: no training subject ({', '.join(TRAIN_SUBJECTS)}) for the PSS clusters")
    if len(poses) > max_poses:
        poses = poses[np.linspace(0, len(poses) - 1, max_poses).astype(int)]
    out = {}
    for k in ks:
        if len(poses) < k:
            raise ValueError(f"param evaluate.pss_k: k={k} needs at least {k} ground-truth poses, "
                             f"{dataset.root} gives {len(poses)}")
        out[k] = M.fit_pose_clusters(poses, k, seed)
    return out


# --- metrics ----------------------------------------------------------------------------------------------
def pose_metrics(pred_rr: np.ndarray, gt_rr: np.ndarray, centroids: dict[int, np.ndarray],
                 pck_threshold_mm: float = 150.0) -> dict[str, float]:
    """The paper's metrics for root-relative predictions and ground truth (N, J, 3) mm."""
    out = {
        "frames": int(len(pred_rr)),
        "mpjpe": M.mpjpe(pred_rr, gt_rr),
        "n_mpjpe": M.n_mpjpe(pred_rr, gt_rr),
        "p_mpjpe": M.p_mpjpe(pred_rr, gt_rr),
        f"pck3d@{pck_threshold_mm:g}": M.pck3d(pred_rr, gt_rr, pck_threshold_mm),
        "auc": M.auc(pred_rr, gt_rr),
    }
    for k, c in sorted(centroids.items()):
        out[f"pss@{k}"] = M.pss(pred_rr, gt_rr, k, centroids=c)
    # Degenerate predictions (e.g. every joint at the root) have no Procrustes/scale fit: None, not NaN, in JSON.
    return {k: (round(v, 3) if math.isfinite(v) else None) if isinstance(v, float) else v for k, v in out.items()}


def action_name(action: str) -> str:
    """Human3.6M's per-action grouping merges takes: "Walking 1" → "Walking"."""
    return action.split(" ")[0]


def evaluate_predictions(keys: pd.DataFrame, preds: dict[str, np.ndarray], gt_rr: np.ndarray,
                         centroids: dict[int, np.ndarray], pck_threshold_mm: float = 150.0) -> dict:
    """Per method: overall (frame-averaged) and per-action metrics of root-relative predictions."""
    actions = keys["action"].map(action_name).to_numpy()
    results = {}
    for method, pred in preds.items():
        if not np.isfinite(pred).all():
            bad = int((~np.isfinite(pred).all(axis=(1, 2))).sum())
            raise ValueError(f"{method}: {bad} test frames have non-finite predictions")
        res = pose_metrics(pred, gt_rr, centroids, pck_threshold_mm)
        res["per_action"] = {a: pose_metrics(pred[actions == a], gt_rr[actions == a], centroids, pck_threshold_mm)
                             for a in sorted(set(actions))}
        results[method] = res
    return results


# --- outputs ----------------------------------------------------------------------------------------------
def per_action_tsv(results: dict, path: str | Path) -> None:
    """Long table for a dvc bar plot: one row per (action, method) with its MPJPE (+ ``all``)."""
    rows = []
    for method, res in results.items():
        for action, r in res["per_action"].items():
            rows.append((f"{action} | {method}", action, method, r["mpjpe"], r["p_mpjpe"], r["frames"]))
        rows.append((f"all | {method}", "all", method, res["mpjpe"], res["p_mpjpe"], res["frames"]))
    df = pd.DataFrame(rows, columns=["label", "action", "method", "mpjpe", "p_mpjpe", "frames"])
    with atomic_path(path) as tmp:
        df.to_csv(tmp, sep="\t", index=False, float_format="%.3f")


def _fmt(v) -> str:
    return "–" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.1f}"


def results_markdown(results: dict, info: dict) -> str:
    """The generated report: our numbers per method, overall and per action, next to the paper's."""
    methods = list(results)
    pck = next(k for k in results[methods[0]] if k.startswith("pck3d@"))
    pss = [k for k in results[methods[0]] if k.startswith("pss@")]
    cols = ["mpjpe", "n_mpjpe", "p_mpjpe", pck, "auc", *pss]
    head = ["MPJPE", "N-MPJPE", "P-MPJPE", pck.upper().replace("PCK3D", "PCK3D"), "AUC", *[p.upper() for p in pss]]
    lines = [
        "# EpipolarPose reproduction: results",
        "",
        "Generated by `stages/evaluate.py` (do not edit). Protocol: test subjects "
        f"{', '.join(info['subjects'])}, every {info['stride']}th frame at the videos' native rate "
        f"({info['frames']} frames, {info['cameras']} cameras); each prediction is back-projected with the "
        "ground-truth root depth and the camera intrinsics, then made root-relative (pelvis); errors in mm, "
        "PCK3D/AUC/PSS in %. Overall numbers are frame-averaged.",
        "",
        f"Data: `{info['h36m_root']}`. On the project's synthetic Human3.6M-layout data the numbers are not "
        "comparable with the paper's (different people, images, motion and scale); the paper's column is for "
        "orientation only.",
        "",
        "| method | " + " | ".join(head) + " | paper MPJPE |",
        "|---|" + "---:|" * (len(head) + 1),
    ]
    for m in methods:
        r = results[m]
        lines.append(f"| {METHOD_LABELS.get(m, m)} | " + " | ".join(_fmt(r[c]) for c in cols)
                     + f" | {_fmt(PAPER_MPJPE.get(m))} |")
    if "self_supervised" in results and "fully_supervised" in results:
        ratio = results["self_supervised"]["mpjpe"] / results["fully_supervised"]["mpjpe"]
        lines += ["", f"Self-supervised / fully supervised MPJPE (same training frames): **{ratio:.3f}** "
                      f"(the paper: {PAPER_MPJPE['self_supervised'] / PAPER_MPJPE['fully_supervised']:.3f})."]
    if "self_supervised" in results and "self_supervised+refiner" in results:
        a, b = results["self_supervised"]["mpjpe"], results["self_supervised+refiner"]["mpjpe"]
        lines += ["", f"The refiner changes the self-supervised MPJPE by {b - a:+.1f} mm ({100 * (b - a) / a:+.1f}%; "
                      f"the paper: {PAPER_MPJPE['self_supervised+refiner'] - PAPER_MPJPE['self_supervised']:+.1f} mm)."]
    actions = list(results[methods[0]]["per_action"])
    lines += ["", "## MPJPE per action (mm)", "",
              "| action | frames | " + " | ".join(METHOD_LABELS.get(m, m) for m in methods) + " |",
              "|---|---:|" + "---:|" * len(methods)]
    for a in actions:
        n = results[methods[0]]["per_action"][a]["frames"]
        lines.append(f"| {a} | {n} | " + " | ".join(_fmt(results[m]["per_action"][a]["mpjpe"]) for m in methods) + " |")
    lines.append(f"| **all** | {results[methods[0]]['frames']} | "
                 + " | ".join(f"**{_fmt(results[m]['mpjpe'])}**" for m in methods) + " |")
    if info.get("figures"):
        lines += ["", "## Example test frames", ""]
        lines += [f"![{Path(f).stem}](figures/{Path(f).name})" for f in info["figures"]]
    return "\n".join(lines) + "\n"


def draw_figures(folder: str | Path, cache: FrameCache, rig: Rig, idx: np.ndarray, uv_pred: np.ndarray,
                 pred_rr: np.ndarray, gt_cam: np.ndarray, title: str) -> list[Path]:
    """One PNG per chosen test frame: the crop with the predicted (red) and true (green) 2D skeleton,
    and the predicted and true root-relative 3D skeletons side by side. ``uv_pred`` in crop pixels."""
    folder = Path(folder)
    written = []
    gt_rr = root_relative(gt_cam)
    cams = rig.intrinsic_cameras(cache.keys["camera"])
    with atomic_path(folder, directory=True) as tmp:
        for i in idx:
            key = cache.keys.iloc[i]
            gt_uv = encode_pose(gt_cam[i : i + 1], cams[i], cache.boxes[i : i + 1], cache.crop_size)[0, :, :2]
            err = float(np.linalg.norm(pred_rr[i] - gt_rr[i], axis=-1).mean())
            fig = pose_figure(cache.images[i].permute(1, 2, 0).numpy(), [(gt_uv, "lime"), (uv_pred[i], "red")],
                              [(pred_rr[i], "red", f"3D prediction (MPJPE {err:.0f} mm)"),
                               (gt_rr[i], "green", "3D ground truth")],
                              image_title="2D: prediction (red), truth (green)",
                              title=f"{title} — {key.subject} {key.action} camera {key.camera} frame {key.frame}")
            name = f"{key.subject}_{key.action.replace(' ', '_')}_{key.camera}_{int(key.frame):05d}.png"
            save_figure(fig, tmp / name)
            written.append(folder / name)
    return written


def figure_frames(n_frames: int, n: int) -> np.ndarray:
    """``n`` evenly spaced frame indices out of ``n_frames`` (deterministic)."""
    if n <= 0 or n_frames == 0:
        return np.zeros(0, dtype=int)
    return np.unique(np.linspace(0, n_frames - 1, min(n, n_frames) + 2)[1:-1].round().astype(int))


@dataclass
class TestSet:
    cache: FrameCache
    gt_cam: np.ndarray          # (N, J, 3) mm in each camera's frame
    centroids: dict[int, np.ndarray]
    frames_without_gt: int = 0  # test frames left out: their sequence has no ground truth

    @property
    def gt_rr(self) -> np.ndarray:
        return root_relative(self.gt_cam)

    @property
    def root_depth(self) -> np.ndarray:
        return self.gt_cam[:, skeleton.PELVIS, 2]


def load_test_set(cache: FrameCache, dataset: H36MDataset, p: EvaluateParams) -> TestSet:
    """The test frames that have ground truth (sequences without it are left out, with a log line
    and their count in the protocol), their ground truth and the PSS clusters."""
    gt = gt_targets(cache.keys, dataset, what="the evaluation")
    scored = gt.valid.all(axis=1)
    if not scored.all():
        cache = cache.subset(np.flatnonzero(scored))
    centroids = pss_centroids(dataset, p.pss_k, p.pss_max_poses, p.seed, fallback=gt.pose_cam[scored])
    return TestSet(cache, gt.pose_cam[scored], centroids, int((~scored).sum()))


def run_evaluation(frames_root: str | Path, h36m_root: str | Path, model_path: str | Path, p: EvaluateParams,
                   num_joints: int = skeleton.NUM_JOINTS, refiner_path: str | Path | None = None,
                   baseline_path: str | Path | None = None, figures_dir: str | Path | None = None,
                   device: str = "auto", progress: bool = True) -> tuple[dict, dict]:
    """Evaluate ``model_path`` (+ ``refiner_path``) and optionally a second network ``baseline_path``
    (e.g. the fully supervised one) on the test frames → (results per method, info). One process, on
    ``device`` (``epipose.compute.select_device``: auto = CUDA when available)."""
    device = select_device(device, p.threads)
    dataset = H36MDataset(h36m_root)
    cache = load_frames(frames_root, p.subjects, stride=p.stride, workers=p.decode_workers, progress=progress)
    test = load_test_set(cache, dataset, p)
    cache = test.cache                     # the frames with ground truth
    cams = dataset.rig.intrinsic_cameras(cache.keys["camera"])
    memory_format = torch.channels_last if p.channels_last else torch.contiguous_format
    preds: dict[str, np.ndarray] = {}
    main: dict = {}
    for path in [q for q in (baseline_path, model_path) if q is not None]:
        model, meta = load_pose3d(path, num_joints, map_location=device)
        model = model.to(memory_format=memory_format)
        method = METHOD_OF_TARGET.get(meta.get("target"), Path(path).stem)
        if method in preds:
            method = f"{method} ({Path(path).stem})"
        out = infer_3d(model, cache.images, cache.boxes, cams, test.root_depth, depth_range_mm=meta["depth_range_mm"],
                       batch_size=p.batch_size, flip_test=p.flip_test, amp=p.amp, channels_last=p.channels_last,
                       progress=progress)
        preds[method] = root_relative(out["pose_cam"])
        if path == model_path:
            main = {"method": method, "uv": out["uvd"][..., :2]}
    if refiner_path is not None:
        refiner, _ = load_refiner(refiner_path, num_joints, map_location=device)
        preds[f"{main['method']}+refiner"] = refine_poses(refiner, preds[main["method"]], amp="none")
    results = evaluate_predictions(cache.keys, preds, test.gt_rr, test.centroids, p.pck_threshold_mm)
    info = info_of(test, p, str(h36m_root))
    shown = f"{main['method']}+refiner" if refiner_path is not None else main["method"]
    if figures_dir is not None:
        idx = figure_frames(len(cache), p.figures)
        files = draw_figures(figures_dir, cache, dataset.rig, idx, main["uv"], preds[shown], test.gt_cam,
                             METHOD_LABELS.get(shown, shown))
        info["figures"] = [str(f) for f in files]
    for method, r in results.items():
        log.info("%s: MPJPE %.1f mm, P-MPJPE %.1f mm on %d frames", method, r["mpjpe"], r["p_mpjpe"], r["frames"])
    return results, info


def info_of(test: TestSet, p: EvaluateParams, h36m_root: str) -> dict:
    return {"subjects": sorted(set(test.cache.keys["subject"]), key=lambda s: (len(s), s)), "stride": p.stride,
            "frames": len(test.cache), "sequences": len(key_groups(test.cache.keys)),
            "cameras": len(set(test.cache.keys["camera"])), "h36m_root": str(h36m_root),
            "frames_without_gt": test.frames_without_gt}
