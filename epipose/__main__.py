"""The ``epipose`` command line (``python -m epipose`` or the ``epipose`` console script).

``epipose predict INPUT... --model models/pose3d.pt [--refiner models/refiner.pt] --out DIR``:
3D poses from single RGB images, folders of images, or videos (see ``epipose.predict``).

``epipose import-seed SOURCE --as pose3d|pose2d --out FILE``: one of EpipolarPose's released networks as
this project's network file (see ``epipose.models.seed_import``).
"""

from __future__ import annotations

import argparse
import logging
import sys

from epipose import predict_options as O      # torch-free: --help answers at once; predict is imported to run


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


class _Formatter(argparse.ArgumentDefaultsHelpFormatter):
    """Defaults shown where there is one (not "None" on required or optional-without-default options)."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False or action.required:
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="epipose", description="epipose: self-supervised 3D human pose.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser(
        "predict", help="3D poses from images, folders or videos with a trained model",
        description="Run the trained 3D network (and refiner) on images, folders of images or videos. Writes "
                    "DIR/predictions.parquet (2D joints in pixels, root-relative 3D joints in mm in the camera frame, "
                    "confidence), a PNG per image and an MP4 per video. Without a box the whole frame is the person "
                    "crop (the person should fill ~80% of its height).",
        formatter_class=_Formatter)
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders of images/videos, or videos")
    p.add_argument("--model", required=True, help="the 3D network written by train_3d, e.g. models/pose3d.pt")
    p.add_argument("--refiner", default=None, help="the refiner written by train_refiner, e.g. models/refiner.pt")
    p.add_argument("--out", required=True, help="output folder")
    box = p.add_mutually_exclusive_group()
    box.add_argument("--bbox", default=None, help="one person box x0,y0,x1,y1 (pixels) for every image/frame")
    box.add_argument("--boxes", default=None,
                     help="CSV or JSON (list of records) of boxes: columns [source,] [frame,] x0,y0,x1,y1 (person "
                          "boxes) or x0,y0,size (crop squares as in the frame shards)")
    box.add_argument("--detector", default=None,
                     help="a local torchvision Faster R-CNN COCO weights file (ResNet-50 FPN or MobileNetV3 320 FPN) "
                          "to find the person; nothing is downloaded")
    p.add_argument("--person-fraction", type=_number, default=None,
                   help="share of the crop side a person box's longer side takes (default: the model's training "
                        "crops' median, from how they were cut: the default data's gt crops "
                        f"{O.gt_convention().person_fraction:.3g}, its auto crops "
                        f"{O.auto_convention().person_fraction:.3g})")
    p.add_argument("--focal", type=_number, default=None,
                   help=f"focal length in pixels (default: {O.DEFAULT_FOCAL_FACTOR} x the larger image side)")
    p.add_argument("--root-depth", type=_number, default=None,
                   help="pelvis depth in mm (default: focal x 2000 mm / crop side in pixels)")
    p.add_argument("--smooth", type=_number, default=0.0,
                   help="videos: Gaussian smoothing of the 2D and 3D joints over time, sigma in frames (0: off)")
    p.add_argument("--batch-size", type=int, default=32, help="crops per network batch")
    p.add_argument("--no-flip", action="store_true", help="no flip test (faster, slightly less accurate)")
    p.add_argument("--amp", choices=["auto", "bf16", "fp16", "none"], default="auto",
                   help="autocast: auto = bf16/fp16 on CUDA")
    p.add_argument("--device", default="auto", help="auto (CUDA when available, else CPU), cpu, cuda, cuda:N")
    p.add_argument("--no-figures", action="store_true", help="only the Parquet table (no PNG/MP4)")
    p.add_argument("--kpt-thr", type=_number, default=0.0, help="figures: hide joints with a lower confidence")
    p.add_argument("--warn-conf", type=_number, default=O.WARN_CONF,
                   help="warn (log and figure title) when an input's mean joint confidence is lower: it probably "
                        "looks unlike the training data")
    p.add_argument("--export", nargs="+", choices=list(O.EXPORTS), default=[],
                   help="also write predictions.csv (with the root position) and/or predictions.json")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    s = sub.add_parser(
        "import-seed", help="EpipolarPose's released networks as this project's network files",
        description="Convert a network released by EpipolarPose (github.com/mkocabas/EpipolarPose: "
                    "models/h36m/*.pth.tar, models/mpii/mpii_integral*.pth.tar; ResNet-18/34/50) into a network file "
                    "that evaluate (--model) and epipose predict read: joints mapped to MPII's 16, its pixel and depth "
                    "conventions and crops recorded (epipose.models.seed_import). Prints the file written.",
        formatter_class=_Formatter)
    s.add_argument("source", help="the released .pth.tar (a state dict, DataParallel's module. prefix or not)")
    s.add_argument("--as", dest="role", choices=["pose3d", "pose2d"], required=True,
                   help="pose3d: a Human3.6M model (evaluate, predict); pose2d: an MPII model (infer_2d)")
    s.add_argument("--out", required=True, help="the network file to write, e.g. models/seed_pose3d.pt")
    return parser


def run_predict(args: argparse.Namespace):
    """The predict command → ``epipose.predict.PredictOutput``."""
    from epipose import predict as P

    if args.person_fraction is not None and not 0.05 <= args.person_fraction <= 1.0:
        raise O.PredictError(f"--person-fraction {args.person_fraction}: must be in [0.05, 1]")
    opts = O.PredictOptions(focal=args.focal, root_depth_mm=args.root_depth, batch_size=args.batch_size,
                            flip_test=not args.no_flip, amp=args.amp, smooth=args.smooth,
                            figures=not args.no_figures, progress=not args.no_progress, kpt_thr=args.kpt_thr,
                            warn_conf=args.warn_conf, export=tuple(args.export))
    boxes = P.BoxSpec(fraction=args.person_fraction)
    if args.bbox is not None:
        boxes.bbox = P.parse_bbox(args.bbox)
    elif args.boxes is not None:
        boxes.table, boxes.table_path = P.read_boxes(args.boxes), args.boxes
    elif args.detector is not None:
        boxes.detector = P.PersonDetector(args.detector, P.pick_device(args.device))
    return P.predict(args.inputs, args.model, args.out, args.refiner, boxes, opts, args.device)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from tqdm.contrib.logging import logging_redirect_tqdm

    try:
        if args.command == "import-seed":
            from epipose.models.seed_import import convert

            files = [convert(args.source, args.out, args.role)]
        else:
            with logging_redirect_tqdm():            # warnings above the progress bars, not inside them
                files = run_predict(args).files
    except (O.PredictError, FileNotFoundError, ValueError) as exc:
        parser.exit(2, f"epipose {args.command}: error: {' '.join(str(exc).split())}\n")
    for path in files:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
