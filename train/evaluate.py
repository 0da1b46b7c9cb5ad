#!/usr/bin/env python
"""`swclip evaluate` as a script: `python train/evaluate.py --help`
(the package is installed editable by `make install`).

The work lives in the library; see `swclip evaluate --help` and swclip/cli.py.
"""

import sys

from swclip.cli import main as swclip_main


def main(argv=None) -> int:
    return swclip_main(["evaluate", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
