"""train/bench.py: every loss timed side by side on one model; the table and the numbers agree."""

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_bench_losses_synthetic_tiny():
    spec = importlib.util.spec_from_file_location("train_bench", ROOT / "train" / "bench.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    args = bench.build_parser().parse_intermixed_args(["losses", "--batch", "32", "--steps", "2", "--warmup", "2", "--no-write",
                                            "--device", "cpu", "model.gps_hidden=32", "loss.min_fit_samples=32",
                                            "loss.variogram_max_lag_m=3000"])
    result = bench.run(args)
    rows = {r["loss"]: r for r in result["rows"]}
    assert list(rows) == ["clip", "swclip", "swclip+nc", "semivariogram"]
    assert rows["clip"]["ratio_to_clip"] == pytest.approx(1.0)
    for r in rows.values():
        assert r["step_ms"] > 0 and r["images_per_s"] == pytest.approx(32 / (r["step_ms"] / 1000))
        assert 0 <= r["data_wait_frac"] < 1 and r["peak_mem_mib"] > 0
        assert r["ratio_to_clip"] == pytest.approx(r["step_ms"] / rows["clip"]["step_ms"])
    assert "refit_s" in rows["semivariogram"]
    assert result["batch_size"] == 32 and result["data"] == "synthetic"
    table = bench.format_table(result)
    assert all(name in table for name in rows)
