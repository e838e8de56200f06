"""Stage extract_frames: Human3.6M-layout videos → one Parquet shard of person crops per video."""

import argparse
import logging

from epipose.data.extract import extract_frames
from epipose.data.frames import FramesParams
from epipose.params import load_section


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--h36m", required=True, help="Human3.6M-layout root (videos, D3_Positions, cameras.json)")
    parser.add_argument("--out", required=True, help="output folder of shards, <out>/<subject>/<action>.<camera>.parquet")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    params = load_section(FramesParams, "frames")
    summary = extract_frames(args.h36m, args.out, params)
    logging.info("extract_frames: %d videos, %d frames → %s", summary["sequences"], summary["frames"], args.out)


if __name__ == "__main__":
    main()
