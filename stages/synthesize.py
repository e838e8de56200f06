"""Stage synthesize: render synthetic data in the native Human3.6M and MPII layouts (params ``synth``)."""

import argparse
import logging
import sys

from epipose.data.synth.build import synthesize
from epipose.data.synth.config import SynthParams
from epipose.params import ParamError, load_section


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--h36m-out", required=True, help="output Human3.6M-layout root (videos, D3_Positions, cameras.json)")
    parser.add_argument("--mpii-out", required=True, help="output MPII-layout root (images/, annot/train.json, valid.json)")
    parser.add_argument("--params", default="params.yaml", help="params file (section synth)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        params = load_section(SynthParams, "synth", args.params)
        synthesize(params, args.h36m_out, args.mpii_out)
    except (ParamError, FileNotFoundError) as exc:  # bad params or inputs: one clear line, no traceback
        logging.error("synthesize: %s", exc)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
