"""Reading experiment.json back: the committed grids and any under a runs folder, checked as they load.

No torch on this path: the app's Experiments page reads results through this module alone, and
``swclip.workflows.experiments`` (which trains) writes them.
"""

from __future__ import annotations

import json
from pathlib import Path

FORMAT = "swclip-experiment"
VERSION = 1
RESULTS_DIR = Path(__file__).resolve().parents[2] / "benchmarks" / "results"  # the committed experiments
REQUIRED = ("format", "version", "name", "status", "protocol", "world", "split", "test_rows", "runs")


def load_experiment(path) -> dict:
    """experiment.json as a dict, checked: a clear ValueError names what is wrong with a file that is not one."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found")
    try:
        exp = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} is not JSON: {err}") from None
    if not isinstance(exp, dict) or exp.get("format") != FORMAT:
        raise ValueError(
            f"{path} is not an experiment.json (format {exp.get('format') if isinstance(exp, dict) else None!r})"
        )
    if exp.get("version") != VERSION:
        raise ValueError(f"{path} has experiment format version {exp.get('version')!r}; this code reads {VERSION}")
    missing = [k for k in REQUIRED if k not in exp]
    if missing:
        raise ValueError(f"{path} lacks {', '.join(missing)}")
    n = len(exp["test_rows"].get("id", []))
    for r in exp["runs"]:
        if "test_error_m" in r and len(r["test_error_m"]) != n:
            raise ValueError(f"{path}: run {r.get('name')} has {len(r['test_error_m'])} test errors for {n} test rows")
    return exp


# the headline protocol (docs/evidence.md): Gaussian world, 100 m buffer
MAIN_EXPERIMENT = "experiment-gaussian-b100.json"


def find_experiments(runs_root=None, results_dir=None, max_depth: int = 3) -> list[Path]:
    """The committed experiments (``results_dir``, default RESULTS_DIR: ``benchmarks/results/experiment-*.json``;
    the main protocol, MAIN_EXPERIMENT, first, then by name), then every ``experiment.json`` under ``runs_root``
    at most ``max_depth`` folders down, sorted by path."""
    results_dir = RESULTS_DIR if results_dir is None else results_dir
    committed = Path(results_dir).glob("experiment-*.json") if results_dir and Path(results_dir).is_dir() else []
    found = sorted(committed, key=lambda p: (p.name != MAIN_EXPERIMENT, p.name))
    if runs_root is not None and Path(runs_root).is_dir():
        root = Path(runs_root)
        for depth in range(max_depth + 1):
            found += sorted(root.glob("/".join(["*"] * depth + ["experiment.json"])))
    return found
