"""Stage extract_frames: Human3.6M-layout videos → one Parquet shard of person crops per video."""

import argparse
import sys

from epipose.data.frames import FramesParams
from epipose.io import check_writable
from epipose.launch import run_stage, stage_logger
from epipose.params import load_section
from epipose.pipeline.extract_frames import extract_frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--h36m", required=True, help="Human3.6M-layout root (videos and cameras.json; D3_Positions "
                        "and extrinsics only for frames.boxes: gt)")
    parser.add_argument("--out", required=True, help="output folder of shards, <out>/<subject>/<action>.<camera>.parquet")
    parser.add_argument("--params", default="params.yaml", help="params file (section frames)")
    args = parser.parse_args()
    check_writable(args.out)        # before any work
    params = load_section(FramesParams, "frames", args.params)
    summary = extract_frames(args.h36m, args.out, params)
    stage_logger().info("%d videos, %d frames (boxes: %s; person not found in %d) → %s", summary["sequences"],
                        summary["frames"], params.boxes, summary["frames_without_person"], args.out)


if __name__ == "__main__":
    sys.exit(run_stage(main))
