"""The ``swclip`` command line: one subcommand per task.

Each subcommand lives beside the code it drives, as a module exposing
``configure(parser)`` and ``run(args) -> int``; this file only lists them, and
imports each lazily so ``swclip --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "info": ("swclip.cli", "print versions, the torch device and where runs are looked for"),
    "synth": ("swclip.synth.cli", "render the procedural demo world (eight UK cities) into a folder"),
    "predict": ("swclip.index", "predict where photos were taken with a trained run (top-k places, knn-kde estimate)"),
}


def configure(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``swclip info`` (none)."""


def run(args: argparse.Namespace) -> int:
    """``swclip info``: versions and device, the first thing to paste into a bug report."""
    import platform

    import torch

    import swclip

    print(f"swclip {swclip.__version__}, python {platform.python_version()}, torch {torch.__version__}")
    print(f"cuda available: {torch.cuda.is_available()}" + (f" ({torch.cuda.get_device_name(0)})" if torch.cuda.is_available() else ""))
    for name in ("open_clip", "faiss", "streamlit", "skgstat", "esda"):
        try:
            mod = importlib.import_module(name)
            print(f"{name} {getattr(mod, '__version__', '?')}")
        except ImportError as e:
            print(f"{name}: not installed ({e})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="swclip", description="SW-CLIP Explorer: street-view geo-localization with Spatially-Weighted CLIP.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        importlib.import_module(module).configure(p)
        p.set_defaults(_module=module)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    return int(importlib.import_module(args._module).run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
