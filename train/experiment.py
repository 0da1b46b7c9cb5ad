#!/usr/bin/env python
"""`swclip experiment` as a script: `python train/experiment.py --help`
(the package is installed editable by `make install`).

The work lives in the library (swclip/workflows/experiments.py); see `swclip experiment --help`.
"""

import sys

from swclip.cli import main as swclip_main


def main(argv=None) -> int:
    return swclip_main(["experiment", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
