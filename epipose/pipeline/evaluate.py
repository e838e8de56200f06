"""The evaluate stage's science: the 3D networks (and the refiner) on the test subjects, with the paper's protocol.

Protocol (EpipolarPose, after Sun et al.'s integral regression): the test subjects' frames whose index
in the video is a multiple of ``evaluate.stride`` (the default data's 10-fps videos: 1, every frame;
real Human3.6M at 50 fps with ``frames.stride`` 5: 5, every extracted frame; the paper: 64); the
network's output is back-projected with the **ground-truth root depth** and the camera intrinsics
(lens included), then made root-relative (pelvis at the origin) and compared with the root-relative
ground truth in the camera's frame (``epipose.evaluation.pose3d``). Metrics: MPJPE, N-MPJPE,
P-MPJPE, PCK3D@150 mm, AUC (0–150 mm) and PSS@k (k-means clusters of the training subjects' ground
truth), per action (takes merged: "Walking 1" counts as "Walking") and overall, frame-averaged. This
module runs the networks and writes the plots' tables, the figures and the markdown report.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import torch

from epipose import skeleton
from epipose.camera import Rig
from epipose.compute import ComputeParams, check_compute
from epipose.data.frames import ActionSelection, FrameCache, load_frames
from epipose.data.h36m import TEST_SUBJECTS, H36MDataset
from epipose.data.pose_tables import key_groups
from epipose.evaluation.pose3d import PCK_CURVE_MM, TestSet, evaluate_predictions, load_test_set
from epipose.io import atomic_path
from epipose.metrics import root_relative
from epipose.models.codec import encode_pose
from epipose.models.inference import InferenceParams, infer_3d
from epipose.models.pose_net import load_pose3d
from epipose.models.refiner import load_refiner, refine_poses
from epipose.params import ParamError, in_range, load_section, load_value, redefault
from epipose.stage import Folder, Runtime, StageResult
from epipose.viz import pose_figure, pyplot, save_figure

log = logging.getLogger(__name__)

# The seed's released Human3.6M models (github.com/mkocabas/EpipolarPose; mm, GT root depth), by setting:
# (setting, backbone, metric, value).
PAPER = {
    "fully_supervised_r18": ("Fully supervised", "ResNet-18", "MPJPE", 63.0),
    "fully_supervised_r50": ("Fully supervised", "ResNet-50", "MPJPE", 51.8),
    "self_supervised_rt": ("Self-supervised with R/t (extrinsics known)", "ResNet-50", "MPJPE", 76.6),
    "self_supervised_no_rt": ("Self-supervised without R/t", "ResNet-50", "N-MPJPE", 78.8),
    "self_supervised_2d_gt": ("Self-supervised, triangulated from ground-truth 2D", "ResNet-50", "MPJPE", 55.0),
    "refined": ("Self-supervised + refinement unit", "MLP", "MPJPE", 60.5),
    "semi_supervised_s1": ("Self-supervised, Subject 1's ground truth too", "ResNet-50", "MPJPE", 65.3),
}
# The seed's row in the setting of each of ours (this project's self-supervision uses no extrinsics).
LIKE_FOR_LIKE = {"fully_supervised": "fully_supervised_r18", "self_supervised": "self_supervised_no_rt",
                 "self_supervised+refiner": "refined", "semi_supervised": "semi_supervised_s1"}
METHOD_OF_TARGET = {"pseudo3d": "self_supervised", "gt": "fully_supervised"}
METHOD_LABELS = {"self_supervised": "Self-supervised (pseudo-labels)", "self_supervised+refiner": "Self-supervised + refiner",
                 "fully_supervised": "Fully supervised (ground truth)", "fully_supervised+refiner": "Fully supervised + refiner",
                 "semi_supervised": "Semi-supervised (train_3d.gt_subjects' ground truth, the rest pseudo-labels)",
                 "semi_supervised+refiner": "Semi-supervised + refiner"}


def method_of(meta: dict, path: str | Path) -> str:
    """What a 3D network was trained on, from its file's meta: ``fully_supervised`` (target gt),
    ``semi_supervised`` (pseudo-labels, some subjects on their ground truth), ``self_supervised``."""
    if meta.get("target") == "pseudo3d" and meta.get("gt_subjects"):
        return "semi_supervised"
    return METHOD_OF_TARGET.get(meta.get("target"), Path(path).stem)


# Results are keyed by role, whatever the networks were trained on (their method is in the report):
# the stage's network (--model), it refined (--refiner), the fully supervised baseline (--baseline).
ROLES = ("pose3d", "pose3d_refined", "baseline_gt")
SUMMARY_KEYS = ("mpjpe", "mpjpe_15j", "n_mpjpe", "p_mpjpe", "pck3d", "auc")      # per role, in metrics/eval.json


@dataclass(frozen=True)
class EvaluateParams(InferenceParams):
    """Section ``evaluate`` of params.yaml: how the networks run on the test frames (``InferenceParams``)
    and the protocol."""

    batch_size: int = redefault(InferenceParams, "batch_size", 128)
    subjects: list[str] = field(default_factory=lambda: list(TEST_SUBJECTS))
    stride: int = in_range(1, 100000, default=1)          # keep the frames whose video index is a multiple (the paper: 64)
    pck_threshold_mm: float = in_range(1.0, 10000.0, default=150.0)
    pss_k: list[int] = field(default_factory=lambda: [50, 100])
    pss_max_poses: int = in_range(100, 10**7, default=20000)   # training GT poses (evenly spaced) for the clusters
    seed: int = 0                                          # k-means initialisation
    figures: int = in_range(0, 1000, default=4)            # test frames drawn to reports/figures
    actions: list[str] = field(default_factory=list)       # only these actions' test frames ([]: every action)
    seen_subjects: bool = False                            # true: subjects a network trained on may be scored

    def __post_init__(self) -> None:
        bad = [k for k in self.pss_k if not 1 <= k <= self.pss_max_poses]
        if bad:
            raise ParamError(f"param evaluate.pss_k: {bad} must be numbers of clusters from 1 to "
                             f"evaluate.pss_max_poses ({self.pss_max_poses})")


# --- outputs ----------------------------------------------------------------------------------------------
def summary(results: dict) -> dict[str, float | None]:
    """metrics/eval.json: ``<role>.<metric>`` for every role evaluated (flat; names independent of params)."""
    return {f"{role}.{k}": results[role][k] for role in ROLES if role in results for k in SUMMARY_KEYS}


def _write_tsv(df: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, sep="\t", index=False, float_format="%.3f")


def write_plots(results: dict, folder: str | Path) -> dict[str, Path]:
    """The plots' data in ``folder``: MPJPE per action and per joint (long tables, label = "name | role")
    and the PCK3D curve (one column per role) → {plot: path}."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for role, res in results.items():
        for action, r in res["per_action"].items():
            rows.append((f"{action} | {role}", action, role, r["mpjpe"], r["p_mpjpe"], r["frames"]))
        rows.append((f"all | {role}", "all", role, res["mpjpe"], res["p_mpjpe"], res["frames"]))
    paths = {name: folder / f"eval_{name}.tsv" for name in ("per_action", "per_joint", "pck3d_curve")}
    _write_tsv(pd.DataFrame(rows, columns=["label", "action", "method", "mpjpe", "p_mpjpe", "frames"]),
               paths["per_action"])
    joints = [(f"{j} | {role}", j, role, e) for role, res in results.items() for j, e in res["per_joint_mpjpe"].items()]
    _write_tsv(pd.DataFrame(joints, columns=["label", "joint", "method", "mpjpe"]), paths["per_joint"])
    curve = pd.DataFrame({"threshold_mm": PCK_CURVE_MM, **{role: res["pck3d_curve"] for role, res in results.items()}})
    _write_tsv(curve, paths["pck3d_curve"])
    return paths


def _save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        save_figure(fig, tmp)


def draw_summary_figures(results: dict, labels: dict[str, str], folder: str | Path) -> list[Path]:
    """The PCK3D curve and the per-joint MPJPE of every role as PNGs (for reports/results.md)."""
    plt = pyplot()
    folder = Path(folder)
    fig, ax = plt.subplots(figsize=(5.5, 3.6), dpi=90)
    for role, res in results.items():
        ax.plot(PCK_CURVE_MM, res["pck3d_curve"], label=labels[role])
    ax.set(title="PCK3D vs threshold (test subjects)", xlabel="threshold (mm)", ylabel="joints within (%)", ylim=(0, 100))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    _save(fig, folder / "pck3d_curve.png")
    fig, ax = plt.subplots(figsize=(7.5, 3.6), dpi=90)
    width = 0.8 / len(results)
    x = np.arange(len(skeleton.MPII_NAMES))
    for k, (role, res) in enumerate(results.items()):
        ax.bar(x + (k - (len(results) - 1) / 2) * width, list(res["per_joint_mpjpe"].values()), width, label=labels[role])
    ax.set_xticks(x, skeleton.MPII_NAMES, rotation=60, ha="right", fontsize=7)
    ax.set(title="MPJPE per joint (test subjects; the pelvis is the root)", ylabel="MPJPE (mm)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    _save(fig, folder / "per_joint_mpjpe.png")
    return [folder / "pck3d_curve.png", folder / "per_joint_mpjpe.png"]


def _every(stride: int) -> str:
    return "every frame" if stride == 1 else f"every {stride}{'nd' if stride == 2 else 'rd' if stride == 3 else 'th'} frame"


def _fmt(v) -> str:
    return "–" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.1f}"


def _paper(label: str) -> str:
    method = next((m for m, lab in METHOD_LABELS.items() if lab == label), None)
    if method not in LIKE_FOR_LIKE:
        return "–"
    _, backbone, metric, value = PAPER[LIKE_FOR_LIKE[method]]
    return f"{value:.1f} {metric} ({backbone})"


def _paper_table() -> list[str]:
    lines = ["", "## The paper's numbers, by setting", "",
             "The seed's released Human3.6M models (github.com/mkocabas/EpipolarPose): compare like with like — "
             "this project's self-supervision uses no extrinsics (the *without R/t* row, reported as N-MPJPE) "
             "and a ResNet-18 backbone. Absolute numbers on the synthetic default data are not comparable with "
             "these: other people, renders, motions (procedural) and a far smaller training budget.", "",
             "| setting | backbone | metric | value |", "|---|---|---|---:|"]
    lines += [f"| {setting} | {backbone} | {metric} | {value:.1f} |" for setting, backbone, metric, value in PAPER.values()]
    return lines


def results_markdown(results: dict, info: dict) -> str:
    """The generated report: our numbers per role, overall and per action, beside the paper's in the
    same setting; the figures listed in ``info["figures"]`` (paths relative to the report) embedded."""
    roles, labels = list(results), info["methods"]
    pss = [k for k in results[roles[0]] if k.startswith("pss@")]
    cols = ["mpjpe", "mpjpe_15j", "n_mpjpe", "p_mpjpe", "pck3d", "auc", *pss]
    head = ["MPJPE", "MPJPE 15 joints", "N-MPJPE", "P-MPJPE", f"PCK3D@{info['pck_threshold_mm']:g}", "AUC",
            *[p.upper() for p in pss]]
    lines = [
        "# EpipolarPose reproduction: results",
        "",
        "Generated by `stages/evaluate.py` (do not edit). Protocol: test subjects "
        f"{', '.join(info['subjects'])}, {_every(info['stride'])} of the videos "
        f"({info['frames']} frames, {info['cameras']} cameras); each prediction is back-projected with the "
        "ground-truth root depth and the camera intrinsics, then made root-relative (pelvis); errors in mm, "
        "PCK3D/AUC/PSS in %. Joints: the 16 MPII joints, the root (pelvis, error 0) included, as the seed's "
        "code — \"MPJPE 15 joints\" leaves it out (16/15 of the MPJPE). Overall numbers are frame-averaged; "
        "the per-action table also gives the mean of the actions (Human3.6M's convention).",
        "",
        f"Data: `{info['h36m_root']}`. The paper column is the seed's model in the same setting "
        "(its metric and backbone named; all its settings below); on the synthetic default data the absolute "
        "numbers are not comparable with it.",
        "",
        "| method | metrics key | " + " | ".join(head) + " | the paper, same setting |",
        "|---|---|" + "---:|" * (len(head) + 1),
    ]
    for r in roles:
        lines.append(f"| {labels[r]} | `{r}` | " + " | ".join(_fmt(results[r][c]) for c in cols)
                     + f" | {_paper(labels[r])} |")
    lines += _comparisons(results, labels) + _per_action_table(results, labels)
    figures = info.get("figures", [])
    summary_figs = [f for f in figures if Path(f).stem in ("pck3d_curve", "per_joint_mpjpe", "rig_topview")]
    if summary_figs:
        lines += ["", "## Curves and the recovered cameras", ""]
        lines += [f"![{Path(f).stem}]({f})" for f in summary_figs]
    examples = [f for f in figures if f not in summary_figs]
    if examples:
        lines += ["", "## Example test frames", ""]
        lines += [f"![{Path(f).stem}]({f})" for f in examples]
    return "\n".join(lines + _paper_table()) + "\n"


def _per_action_table(results: dict, labels: dict[str, str]) -> list[str]:
    roles = list(results)
    lines = ["", "## MPJPE per action (mm)", "",
             "| action | frames | " + " | ".join(labels[r] for r in roles) + " |",
             "|---|---:|" + "---:|" * len(roles)]
    for a, r0 in results[roles[0]]["per_action"].items():
        lines.append(f"| {a} | {r0['frames']} | " + " | ".join(_fmt(results[r]["per_action"][a]["mpjpe"]) for r in roles) + " |")
    lines.append(f"| **all frames** | {results[roles[0]]['frames']} | "
                 + " | ".join(f"**{_fmt(results[r]['mpjpe'])}**" for r in roles) + " |")
    lines.append("| **mean of the actions** | | "
                 + " | ".join(f"**{_fmt(results[r]['action_averaged']['mpjpe'])}**" for r in roles) + " |")
    return lines


def _comparisons(results: dict, labels: dict[str, str]) -> list[str]:
    lines = []
    self_sup, full = METHOD_LABELS["self_supervised"], METHOD_LABELS["fully_supervised"]
    if "baseline_gt" in results and labels.get("pose3d") == self_sup and labels["baseline_gt"] == full:
        r, b = results["pose3d"], results["baseline_gt"]
        lines += ["", f"Self-supervised / fully supervised (same training frames): MPJPE **{r['mpjpe'] / b['mpjpe']:.3f}**, "
                      f"N-MPJPE {r['n_mpjpe'] / b['n_mpjpe']:.3f}. The seed has no ResNet-18 self-supervised model; "
                      f"with ResNet-50 its no-R/t model's N-MPJPE is {PAPER['self_supervised_no_rt'][3] / PAPER['fully_supervised_r50'][3]:.2f}"
                      " × its fully supervised MPJPE."]
    if "pose3d_refined" in results:
        a, b = results["pose3d"]["mpjpe"], results["pose3d_refined"]["mpjpe"]
        lines += ["", f"The refiner changes the MPJPE of {labels['pose3d']} by {b - a:+.1f} mm ({100 * (b - a) / a:+.1f}%; "
                      f"the seed's refined model: {PAPER['refined'][3]:.1f} MPJPE, its self-supervised ones "
                      f"{PAPER['self_supervised_rt'][3]:.1f} MPJPE with R/t, {PAPER['self_supervised_no_rt'][3]:.1f} "
                      "N-MPJPE without)."]
    return lines


def draw_example_figures(folder: str | Path, cache: FrameCache, rig: Rig, idx: np.ndarray, uv_pred: np.ndarray,
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


def check_refiner_input(meta: dict, flip_test: bool, path: str | Path) -> None:
    """The refiner corrects the kind of prediction it was trained on: single-view or averaged with the
    mirrored crop (``train_3d.flip_test`` for its training input) must match ``evaluate.flip_test``."""
    trained = meta.get("input_flip_test")
    if trained is not None and bool(trained) != flip_test:
        raise ParamError(f"param evaluate.flip_test is {str(flip_test).lower()} but the refiner {path} was trained on "
                         f"predictions with flip_test {str(bool(trained)).lower()} (param train_3d.flip_test): set both alike")


def check_unseen(meta: dict, p: EvaluateParams, path: str | Path) -> None:
    """Refuse to score a network on people it trained on (its file's ``subjects``), unless
    ``evaluate.seen_subjects`` says that is meant (a seen-people benchmark)."""
    seen = [s for s in p.subjects if s in meta.get("subjects", [])]
    if seen and not p.seen_subjects:
        raise ParamError(f"param evaluate.subjects: {seen} trained {path} (its subjects: {meta['subjects']}); the "
                         "test people must be unseen (evaluate.seen_subjects: true scores seen people on purpose)")


def run_evaluation(frames_root: str | Path, h36m_root: str | Path, model_path: str | Path, p: EvaluateParams,
                   num_joints: int = skeleton.NUM_JOINTS, refiner_path: str | Path | None = None,
                   baseline_path: str | Path | None = None, figures_dir: str | Path | None = None,
                   device: torch.device | str = "cpu", progress: bool = True) -> tuple[dict, dict]:
    """Evaluate ``model_path`` (role ``pose3d``), + ``refiner_path`` (``pose3d_refined``) and the fully
    supervised ``baseline_path`` (``baseline_gt``) on the test frames → (results per role, info; its
    ``methods`` names what each role's network was trained on). One process, on ``device`` (the
    stage's runtime's, or ``epipose.compute.select_device``'s)."""
    paths = {role: path for role, path in (("baseline_gt", baseline_path), ("pose3d", model_path)) if path is not None}
    networks = {role: load_pose3d(path, num_joints, map_location=device) for role, path in paths.items()}
    for role, (_, meta) in networks.items():
        check_unseen(meta, p, paths[role])
    dataset = H36MDataset(h36m_root)
    cache = load_frames(frames_root, p.subjects, stride=p.stride, workers=p.decode_workers, progress=progress,
                        actions=ActionSelection(tuple(p.actions), False, "evaluate.actions"))
    test = load_test_set(cache, dataset, p.pss_k, p.pss_max_poses, p.seed)
    cache = test.cache                     # the frames with ground truth
    cams = dataset.rig.intrinsic_cameras(cache.keys["camera"])
    memory_format = torch.channels_last if p.channels_last else torch.contiguous_format
    preds: dict[str, np.ndarray] = {}
    methods: dict[str, str] = {}           # role → what its network was trained on
    labels: dict[str, str] = {}
    uv_main = None
    for role, (model, meta) in networks.items():
        model = model.to(memory_format=memory_format)
        methods[role] = method_of(meta, paths[role])
        labels[role] = METHOD_LABELS.get(methods[role], methods[role])
        out = infer_3d(model, cache.images, cache.boxes, cams, test.root_depth, depth_range_mm=meta["depth_range_mm"],
                       batch_size=p.batch_size, flip_test=p.flip_test, amp=p.amp, channels_last=p.channels_last,
                       progress=progress)
        preds[role] = root_relative(out["pose_cam"])
        uv_main = out["uvd"][..., :2]
    if refiner_path is not None:
        refiner, meta = load_refiner(refiner_path, num_joints, map_location=device)
        check_refiner_input(meta, p.flip_test, refiner_path)
        preds["pose3d_refined"] = refine_poses(refiner, preds["pose3d"], amp="none")
        labels["pose3d_refined"] = METHOD_LABELS.get(f"{methods['pose3d']}+refiner", f"{labels['pose3d']} + refiner")
    results = evaluate_predictions(cache.keys, {r: preds[r] for r in ROLES if r in preds}, test.gt_rr,
                                   test.centroids, p.pck_threshold_mm)
    info = {**protocol_info(test, p, str(h36m_root)), "methods": labels}
    shown = "pose3d_refined" if refiner_path is not None else "pose3d"
    if figures_dir is not None:
        idx = figure_frames(len(cache), p.figures)
        files = draw_example_figures(figures_dir, cache, dataset.rig, idx, uv_main, preds[shown], test.gt_cam, labels[shown])
        info["figures"] = [str(f) for f in files]
    for role, r in results.items():
        log.info("%s (%s): MPJPE %.1f mm, P-MPJPE %.1f mm on %d frames", role, labels[role], r["mpjpe"], r["p_mpjpe"],
                 r["frames"])
    return results, info


def protocol_info(test: TestSet, p: EvaluateParams, h36m_root: str) -> dict:
    """The report's ``protocol``: the test frames evaluated and how."""
    return {"subjects": sorted(set(test.cache.keys["subject"]), key=lambda s: (len(s), s)), "stride": p.stride,
            "frames": len(test.cache), "sequences": len(key_groups(test.cache.keys)),
            "cameras": len(set(test.cache.keys["camera"])), "h36m_root": str(h36m_root),
            "frames_without_gt": test.frames_without_gt, "pck_threshold_mm": p.pck_threshold_mm,
            **({"actions": list(p.actions)} if p.actions else {})}


# --- the stage -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EvaluatePaths:
    frames: str                       # frame shards folder (data/frames)
    model: str                        # the 3D network (models/pose3d.pt)
    plots: str                        # folder of the plots' TSVs (reports/plots)
    refiner: str | None = None        # the refiner (models/refiner.pt)
    baseline: str | None = None       # the fully supervised network (models/pose3d_gt.pt)
    figures: str | None = None        # folder of PNGs (reports/figures)
    markdown: str | None = None       # the generated report (reports/results.md)
    rig_figure: str | None = None     # an input: triangulate's camera figure, embedded in the markdown

    def outputs(self) -> list[str | None]:
        return [Folder(self.plots), self.figures and Folder(self.figures), self.markdown]


@dataclass(frozen=True)
class EvaluateConfig:
    evaluate: EvaluateParams
    num_joints: int
    h36m_root: str
    compute: ComputeParams            # one process, whatever compute.nproc, on compute.device


def load_params(path: str | Path = "params.yaml") -> EvaluateConfig:
    evaluate = load_section(EvaluateParams, "evaluate", path)
    num_joints = load_value("model", "num_joints", int, path)
    h36m_root = load_value("data", "h36m_root", str, path)
    device = load_value("compute", "device", Literal["auto", "cpu", "cuda"], path)
    return EvaluateConfig(evaluate, num_joints, h36m_root, check_compute(ComputeParams(nproc=1, device=device)))


def run(paths: EvaluatePaths, params: EvaluateConfig, runtime: Runtime) -> StageResult:
    """The networks on the test frames: the plots' tables, figures and the markdown report written; the
    metrics and the report returned. One process, on ``runtime.device``."""
    t0 = time.perf_counter()
    results, info = run_evaluation(paths.frames, params.h36m_root, paths.model, params.evaluate, params.num_joints,
                                   paths.refiner, paths.baseline, paths.figures, device=runtime.device,
                                   progress=runtime.progress)
    write_plots(results, paths.plots)
    if paths.figures:
        info["figures"] = [str(f) for f in draw_summary_figures(results, info["methods"], paths.figures)] + info["figures"]
    report = {"protocol": info, **results}
    if paths.markdown:
        figures = info.get("figures", []) + ([paths.rig_figure] if paths.rig_figure else [])
        here = Path(paths.markdown).parent   # links relative to the report
        info = {**info, "figures": [Path(os.path.relpath(f, here)).as_posix() for f in figures]}
        with atomic_path(paths.markdown) as tmp:
            tmp.write_text(results_markdown(results, info))
    outputs = [o for o in paths.outputs() if o]
    return StageResult(outputs, summary(results), report, {"seconds": round(time.perf_counter() - t0, 1)})
