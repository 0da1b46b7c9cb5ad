"""swclip bench (swclip/workflows/bench.py, train/bench.py): every loss timed side by side on one model;
the table and the numbers agree."""

import time
from pathlib import Path

import pytest

from swclip.cli import build_parser
from swclip.workflows import bench

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_bench_losses_synthetic_tiny():
    args = build_parser("bench").parse_intermixed_args(
        [
            "losses",
            "--batch",
            "32",
            "--steps",
            "2",
            "--warmup",
            "2",
            "--no-write",
            "--device",
            "cpu",
            "model.gps_hidden=32",
            "loss.min_fit_samples=32",
            "loss.variogram_max_lag_m=3000",
        ]
    )
    t0 = time.perf_counter()
    result = bench.measure(args)
    whole_run_s = time.perf_counter() - t0
    rows = {r["loss"]: r for r in result["rows"]}
    assert list(rows) == ["clip", "swclip", "swclip+nc", "semivariogram"]
    for name, r in rows.items():
        # every loss really trained: its own trainer took the warm-up and the timed steps, no more, no less
        assert r["optimizer_steps"] == 2 + 2, name
        # the timed steps are a part of the run: units and bookkeeping (ms vs s, steps counted twice)
        # would break this bound, which no machine load can (a consistency check, not a speed limit)
        assert 2 * r["min_step_ms"] / 1000 <= r["timed_s_total"] <= whole_run_s, name
        assert 0 <= r["data_wait_frac"] < 1 and r["peak_mem_mib"] > 0
    assert sum(r["timed_s_total"] for r in rows.values()) <= whole_run_s
    # the semivariogram loss was timed on its weighted path, with a variogram, and its refit costed apart
    assert rows["semivariogram"]["variogram"] and rows["semivariogram"]["refit_s"] > 0
    assert "variogram" not in rows["clip"]
    assert result["batch_size"] == 32 and result["data"] == "synthetic"
    table = bench.format_table(result)
    assert all(name in table for name in rows)
