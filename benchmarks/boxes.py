"""Person boxes from the videos alone (``frames.boxes: auto``) against the paper's ground-truth crops
(``gt``), on the same frames, measured with the ground truth:

* joints inside: the fraction of projected ground-truth joints inside the crop (goal ≥ 99.5%), and
  of frames with every joint inside;
* fill: the person's height (vertical extent of the projected joints) over the crop side, median
  and 5th–95th percentile, per action — how the person fills the crop the 3D network sees;
* size: the auto crop's side over the gt crop's;
* predict's convention for each box kind (``epipose.predict_options.CROP_CONVENTIONS``): a tight person
  box (the projected joints' extent, head top to feet) → the crop: the box's longer side over the crop
  side (``person_fraction``) and how far the crop centre lies above the box centre, × the side
  (``centre_shift``), medians over the frames.

    python benchmarks/boxes.py --h36m data/raw/h36m [--params params.yaml]

Both box kinds come from ``epipose.pipeline.extract_frames`` (the stage's own functions, on the
frames the stage samples); nothing is encoded. Writes ``benchmarks/out/boxes.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from epipose import skeleton  # noqa: E402
from epipose.data.frames import FramesParams  # noqa: E402
from epipose.data.h36m import H36MDataset, video_info  # noqa: E402
from epipose.params import load_section  # noqa: E402
from epipose.pipeline.extract_frames import auto_boxes, camera_background, gt_boxes  # noqa: E402


def inside(uv: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """(F, J) whether each projected joint lies inside its frame's crop."""
    x0, y0, s = boxes[:, 0:1], boxes[:, 1:2], boxes[:, 2:3]
    return (uv[..., 0] >= x0) & (uv[..., 0] <= x0 + s) & (uv[..., 1] >= y0) & (uv[..., 1] <= y0 + s)


def summary(ins: np.ndarray, fill: np.ndarray) -> dict:
    return {"joints_inside_pct": round(100 * float(ins.mean()), 3),
            "frames_all_inside_pct": round(100 * float(ins.all(1).mean()), 3),
            "fill_p5_p50_p95": [round(float(v), 3) for v in np.percentile(fill, [5, 50, 95])]}


def convention(uv: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """(F, 2): the tight joint box's longer side / crop side, and (box centre y − crop centre y) / side."""
    lo, hi = uv.min(1), uv.max(1)
    side = boxes[:, 2]
    return np.stack([(hi - lo).max(1) / side, ((lo[:, 1] + hi[:, 1]) / 2 - (boxes[:, 1] + side / 2)) / side], 1)


def measure(h36m: Path, p: FramesParams) -> dict:
    ds = H36MDataset(h36m)
    sequences = ds.sequences()
    rows: dict[str, list] = {"action": [], "auto_in": [], "gt_in": [], "auto_fill": [], "gt_fill": [], "ratio": [],
                             "auto_conv": [], "gt_conv": []}
    for subject, camera in sorted({(s.subject, s.camera) for s in sequences}):
        group = [s for s in sequences if (s.subject, s.camera) == (subject, camera)]
        background = camera_background([s.video for s in group], p.background_frames)
        for seq in group:
            poses = ds.poses_world(subject, seq.action)
            wanted = np.arange(0, ds.usable_frames(seq, n_poses=poses.shape[0]), p.stride)
            gt = gt_boxes(ds, seq, poses, wanted, p.box_mm)
            auto, _ = auto_boxes(seq, wanted, video_info(seq.video)[3], *background, p)
            cam = ds.rig.camera(subject, camera)
            uv = cam.project(skeleton.h36m32_to_mpii(poses)[wanted])
            height = np.ptp(uv[..., 1], axis=1)
            rows["action"] += [seq.action.split(" ")[0]] * len(wanted)
            rows["auto_in"].append(inside(uv, auto))
            rows["gt_in"].append(inside(uv, gt))
            rows["auto_fill"].append(height / auto[:, 2])
            rows["gt_fill"].append(height / gt[:, 2])
            rows["ratio"].append(auto[:, 2] / gt[:, 2])
            rows["auto_conv"].append(convention(uv, auto))
            rows["gt_conv"].append(convention(uv, gt))
    cat = {k: np.concatenate(v) if k != "action" else np.asarray(v) for k, v in rows.items()}
    out = {"frames": int(len(cat["action"])), "auto": summary(cat["auto_in"], cat["auto_fill"]),
           "gt": summary(cat["gt_in"], cat["gt_fill"]),
           "size_ratio_p5_p50_p95": [round(float(v), 3) for v in np.percentile(cat["ratio"], [5, 50, 95])],
           "predict_convention": {kind: {"person_fraction": round(float(np.median(cat[f"{kind}_conv"][:, 0])), 3),
                                         "centre_shift": round(float(np.median(cat[f"{kind}_conv"][:, 1])), 3)}
                                  for kind in ("auto", "gt")},
           "per_action": {}}
    for action in sorted(set(cat["action"])):
        m = cat["action"] == action
        out["per_action"][action] = {"auto": summary(cat["auto_in"][m], cat["auto_fill"][m]),
                                     "gt": summary(cat["gt_in"][m], cat["gt_fill"][m])}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--h36m", default="data/raw/h36m", help="Human3.6M-layout root with ground truth")
    parser.add_argument("--params", default="params.yaml", help="params file (section frames)")
    args = parser.parse_args()
    p = load_section(FramesParams, "frames", args.params)
    res = measure(Path(args.h36m), p)
    out = ROOT / "benchmarks" / "out" / "boxes.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n")
    a, g = res["auto"], res["gt"]
    print(f"{res['frames']} frames; auto vs gt (the paper's crops), same frames")
    print(f"joints inside the crop:   auto {a['joints_inside_pct']:.2f}%   gt {g['joints_inside_pct']:.2f}%   "
          f"(ratio {a['joints_inside_pct'] / g['joints_inside_pct']:.4f})")
    print(f"frames all inside:        auto {a['frames_all_inside_pct']:.2f}%   gt {g['frames_all_inside_pct']:.2f}%")
    print(f"person height / side:     auto {a['fill_p5_p50_p95']}   gt {g['fill_p5_p50_p95']}   (p5, median, p95)")
    print(f"auto side / gt side:      {res['size_ratio_p5_p50_p95']}")
    print(f"predict's convention:     {res['predict_convention']}")
    for action, r in res["per_action"].items():
        print(f"  {action:12s} fill auto {r['auto']['fill_p5_p50_p95']}  gt {r['gt']['fill_p5_p50_p95']}  "
              f"inside auto {r['auto']['joints_inside_pct']:.2f}%")


if __name__ == "__main__":
    main()
