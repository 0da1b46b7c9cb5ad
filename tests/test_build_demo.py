"""train/build_demo.py on a tiny world: builds world + split + runs + results, then skips what is built."""

import importlib.util
import json
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]


def load_build_demo():
    spec = importlib.util.spec_from_file_location("train_build_demo", ROOT / "train" / "build_demo.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.slow
def test_build_demo_tiny_then_skip(tmp_path, monkeypatch):
    from swclip.runs import list_runs
    from swclip.workflows import demo as demo_bundle

    # a tiny, fast variant of the real bundle: same code path, fewer samples and steps
    monkeypatch.setitem(demo_bundle.WORLD, "cities", ["Glasgow", "Leeds"])
    out = tmp_path / "demo"
    # 3 runs on 2 workers, in a process pool, one thread each
    argv = [
        "--out",
        str(out),
        "--samples-per-city",
        "72",
        "--steps",
        "4",
        "--models",
        "clip",
        "swclip-s50",
        "swclip-nc-s50",
        "--workers",
        "2",
        "--quiet",
        "batch_size=16",
        "model.gps_hidden=32",
    ]
    build = load_build_demo()
    assert build.main(argv + ["--seed", "0"]) == 0

    assert (out / "world" / "world.json").is_file() and (out / "world" / "split.csv").is_file()
    split = pd.read_csv(out / "world" / "split.csv")
    assert set(split["split"]) <= {"train", "test", "buffer"} and (split["split"] == "test").any()
    assert set(split["city"]) == {"Glasgow", "Leeds"}
    for run_id in ("clip", "swclip-s50", "swclip-nc-s50"):
        for name in (
            "manifest.json",
            "model.safetensors",
            "predictions.parquet",
            "embeddings.npy",
            "gallery.npz",
            "metrics.json",
            "train_log.csv",
            ".complete",
        ):
            assert (out / run_id / name).is_file(), (run_id, name)
        assert len(pd.read_csv(out / run_id / "train_log.csv")) == 4
    manifest = json.loads((out / "swclip-s50" / "manifest.json").read_text())
    assert manifest["loss"]["name"] == "swclip" and manifest["sigma_m"] == 50 and manifest["demo"] is True
    results = json.loads((out / "results.json").read_text())
    assert set(results["results"]) == {"clip", "swclip-s50", "swclip-nc-s50"}
    assert [results["timings"][r]["threads"] for r in ("clip", "swclip-s50", "swclip-nc-s50")] == [1, 1, 1]
    for m in results["results"].values():
        assert set(m) == {"median_m", "mean_m", "acc@100m", "acc@250m", "acc@500m", "recall@1"}
    assert "| swclip-s50 |" in (out / "results.md").read_text()
    assert (out / ".complete").is_file()
    # the app's run listing finds the runs under the bundle (and not the world or checkpoints), OSV-5M's imported too
    osv5m = ["osv5m/baseline", "osv5m/plonk", "osv5m/plonk-71"]
    assert [r.run_id for r in list_runs(out)] == ["clip", *osv5m, "swclip-nc-s50", "swclip-s50"]

    # a second call rebuilds nothing: run folders untouched
    stamp = {p: p.stat().st_mtime_ns for p in out.rglob("model.safetensors")}
    assert build.main(argv) == 0
    assert {p: p.stat().st_mtime_ns for p in out.rglob("model.safetensors")} == stamp


def test_build_demo_rejects_unknown_models(tmp_path):
    from swclip.workflows.demo import build_demo

    with pytest.raises(ValueError, match="unknown demo model"):
        build_demo(tmp_path, models=["nope"], samples_per_city=8, progress=False)
