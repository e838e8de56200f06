"""Stage train_refiner: the Martinez-style MLP on the 3D network's root-relative predictions on the
training frames, against the root-relative pseudo-labels (refiner.target: pseudo3d) or ground truth (gt).
Runs under ``python -m epipose.launch`` like the other training stages (``compute.nproc``)."""

import argparse
import logging
import time

import torch.distributed as dist

from epipose.compute import load_compute
from epipose.io import write_json
from epipose.models.refiner import save_refiner
from epipose.params import load_section, load_value
from epipose.refine import RefinerParams, refiner_data, train_refiner


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pred3d", required=True, help="the 3D network's training-frame predictions, e.g. data/pred3d_train.parquet")
    parser.add_argument("--pseudo3d", default=None, help="pseudo-label table, e.g. data/pseudo3d.parquet (target pseudo3d)")
    parser.add_argument("--out", required=True, help="the trained refiner, e.g. models/refiner.pt")
    parser.add_argument("--metrics", required=True, help="metrics JSON, e.g. metrics/train_refiner.json")
    parser.add_argument("--live-dir", required=True, help="dvclive folder for the training curves")
    parser.add_argument("--ckpt-dir", required=True, help="per-epoch checkpoint folder (persist: true, for resume)")
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    load_compute(args.params)
    params = load_section(RefinerParams, "refiner", args.params)
    num_joints = load_value("model", "num_joints", int, args.params)
    h36m_root = load_value("data", "h36m_root", str, args.params)

    t0 = time.perf_counter()
    data = refiner_data(args.pred3d, params.target, args.pseudo3d, h36m_root if params.target == "gt" else None,
                        params.min_views, params.max_reproj_err)
    result, info = train_refiner(data, params, args.ckpt_dir, args.live_dir, num_joints, progress=not args.no_progress)
    if result.runtime is None or result.runtime.is_main:
        save_refiner(result.model, args.out, meta={"target": params.target, **info})
        metrics = {**info, "target": params.target, "epochs": params.epochs, "resumed_from_epoch": result.resumed_from,
                   "seconds": round(time.perf_counter() - t0, 1)}
        write_json(metrics, args.metrics)
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
