"""Shared bits of the benchmarks (benchmarks/*.py and ``swclip bench``): machine description, interleaved timing,
result files in benchmarks/results/ of the checkout."""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

# SWCLIP_RESULTS_DIR: another folder (benchmarks/gpu_check.py collects the steps' results there)
RESULTS_DIR = Path(
    os.environ.get("SWCLIP_RESULTS_DIR") or Path(__file__).resolve().parents[1] / "benchmarks" / "results"
)


def cpu_model() -> str | None:
    """The CPU's model name from /proc/cpuinfo (Linux), or None: figures from two machines do not compare."""
    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), None)
    except OSError:
        return None


def machine() -> dict:
    """What the figures were measured on."""
    info = {
        "cpu_model": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        # 1/5/15-min load averages when the result is written: on a shared machine they say how much to trust it
        "load_average": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
    }
    return info


def machine_tag() -> str:
    """File-name tag: the GPU's name, or 'cpu<N>'."""
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0).lower().replace(" ", "-")
    return f"cpu{os.cpu_count()}"


def interleaved_times(
    fns: dict[str, Callable[[], None]], repeats: int, warmup: int = 1, sync: Callable[[], None] = lambda: None
) -> dict:
    """Time each callable ``repeats`` times, round-robin so that load drifts hit all alike.

    Returns {name: {"median_s", "min_s", "runs"}}.
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
            sync()
    times: dict[str, list] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - t0)
    return {name: {"median_s": statistics.median(t), "min_s": min(t), "runs": len(t)} for name, t in times.items()}


def write_result(name: str, payload: dict) -> Path:
    """benchmarks/results/<name>-<machine tag>.json with the machine description."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}-{machine_tag()}.json"
    path.write_text(json.dumps({"machine": machine(), **payload}, indent=2) + "\n")
    return path


def batch_size_args(doc: str, batches: list[int], repeats_help: str, argv=None):
    """The command line of a per-batch-size benchmark: --batch B..., --repeats N, --no-write."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, nargs="+", default=batches, help="batch sizes B")
    p.add_argument("--repeats", type=int, default=8, help=repeats_help)
    p.add_argument("--no-write", action="store_true", help="print only")
    return p.parse_args(argv)


def report_batch_times(name: str, what: str, rows: list[dict], write: bool = True) -> None:
    """Print rows of {"batch", "median_s", "min_s"} with the 1-min load; write them to results unless told not to."""
    load = os.getloadavg()[0]
    print(f"{'B':>6} {'median ms':>10} {'min ms':>8}   (1-min load {load:.1f})")
    for r in rows:
        print(f"{r['batch']:>6} {1000 * r['median_s']:>10.1f} {1000 * r['min_s']:>8.1f}")
    if write:
        path = write_result(name, {"what": what, "load_avg_1min": load, "rows": rows})
        print(f"wrote {path}  ({machine()['cpu_cores']} cores)")
