"""Stage extract_frames: Human3.6M-layout videos → one Parquet shard of person crops per video."""

import sys

from epipose.io import write_results
from epipose.launch import check_outputs, run_stage, stage_parser
from epipose.pipeline.extract_frames import ExtractFramesPaths, load_params, run
from epipose.stage import Runtime


def main() -> None:
    parser = stage_parser(__doc__)
    parser.add_argument("--h36m", required=True, help="Human3.6M-layout root (videos and cameras.json; D3_Positions "
                        "and extrinsics only for frames.boxes: gt)")
    parser.add_argument("--out", required=True, help="output folder of shards, <out>/<subject>/<action>.<camera>.parquet")
    args = parser.parse_args()
    paths = ExtractFramesPaths(args.h36m, args.out)
    check_outputs(paths, args)                                   # before any work
    result = run(paths, load_params(args.params), Runtime(progress=not args.no_progress))
    write_results(result, args.metrics, args.report, args.timings)


if __name__ == "__main__":
    sys.exit(run_stage(main))
