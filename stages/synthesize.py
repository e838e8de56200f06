"""Stage synthesize: render synthetic data in the native Human3.6M and MPII layouts (params ``synth``)."""

import sys

from epipose.io import write_results
from epipose.launch import check_outputs, run_stage, stage_parser
from epipose.pipeline.synthesize import SynthesizePaths, load_params, run
from epipose.stage import Runtime


def main() -> None:
    parser = stage_parser(__doc__)
    parser.add_argument("--h36m-out", required=True, help="output Human3.6M-layout root (videos, D3_Positions, cameras.json)")
    parser.add_argument("--mpii-out", required=True, help="output MPII-layout root (images/, annot/train.json, valid.json)")
    args = parser.parse_args()
    paths = SynthesizePaths(args.h36m_out, args.mpii_out)
    check_outputs(paths, args)                                   # before any work
    result = run(paths, load_params(args.params), Runtime(progress=not args.no_progress))
    write_results(result, args.metrics, args.report, args.timings)


if __name__ == "__main__":
    sys.exit(run_stage(main))
