"""Stage synthesize: render synthetic data in the native Human3.6M and MPII layouts (params ``synth``)."""

import argparse
import sys

from epipose.io import check_writable
from epipose.launch import run_stage
from epipose.params import load_section
from epipose.pipeline.synthesize import synthesize
from epipose.synth.config import SynthParams


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--h36m-out", required=True, help="output Human3.6M-layout root (videos, D3_Positions, cameras.json)")
    parser.add_argument("--mpii-out", required=True, help="output MPII-layout root (images/, annot/train.json, valid.json)")
    parser.add_argument("--params", default="params.yaml", help="params file (section synth)")
    args = parser.parse_args()
    check_writable(args.h36m_out, args.mpii_out)        # before any work
    params = load_section(SynthParams, "synth", args.params)
    synthesize(params, args.h36m_out, args.mpii_out)


if __name__ == "__main__":
    sys.exit(run_stage(main))
