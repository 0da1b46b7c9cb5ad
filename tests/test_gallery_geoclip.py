"""GeoCLIP's 100K-coordinate gallery as a run's gallery (issue 15): evaluation, prediction, the record of it.

A tiny run on a rendered 61-image world is trained with ``data.gallery=geoclip100k`` and evaluated;
the gallery is checked against the wheel's CSV read here with the csv module (not with the code's
pandas reader), its embeddings against the run's own location tower, and the predictions'
coordinates against the CSV's set.
"""

import csv
import importlib.metadata
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
CSV = Path(importlib.metadata.distribution("geoclip").locate_file("geoclip/model/gps_gallery/coordinates_100K.csv"))
TINY = [
    "model.gps_hidden=32",
    "device=cpu",
    "progress=false",
    "optim.warmup_steps=0",
    "batch_size=8",
    "run_id=run",
    "log_every=1",
    "tensorboard=false",
    "steps=2",
    "data.synthetic=false",
    "data.preload=true",
    "data.augment=false",
]


def csv_places() -> list[tuple[float, float]]:
    """The CSV's rows as (lat, lon), each distinct row once, in first-seen order (duplicates compared as text)."""
    with open(CSV, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["LAT", "LON"] and len(rows) == 100_001
    return [(float(a), float(b)) for a, b in dict.fromkeys(tuple(r) for r in rows[1:])]


@pytest.fixture(scope="module")
def places():
    return csv_places()


@pytest.fixture(scope="module")
def world_run(tmp_path_factory):
    """(world folder, trained run directory) with data.gallery=geoclip100k in its config; not evaluated."""
    from swclip.data import read_table, spatial_split
    from swclip.synth import make_world
    from swclip.training.config import load_config
    from swclip.training.loop import train

    base = tmp_path_factory.mktemp("geoclip_gallery")
    world = base / "world"
    make_world(world, seed=1, cities=["Leeds"], samples_per_city=61, image_size=32, workers=1)
    spatial_split(read_table(world / "samples.csv"), test_frac=0.3, block_m=200, buffer_m=0, seed=0).to_csv(
        world / "split.csv", index=False
    )
    cfg = load_config(
        ROOT / "swclip" / "training" / "configs" / "demo_clip.yaml",
        [
            *TINY,
            f"out_dir={base / 'runs'}",
            f"data.table={world / 'split.csv'}",
            f"data.root={world}",
            "data.gallery=geoclip100k",
        ],
    )
    return world, train(cfg)


@pytest.fixture(scope="module")
def evaluated(world_run, tmp_path_factory):
    """The run evaluated by `swclip evaluate` with no --gallery: the config's geoclip100k."""
    from swclip.cli import main

    run = tmp_path_factory.mktemp("evaluated") / "run"
    shutil.copytree(world_run[1], run)
    assert main(["evaluate", str(run), "--quiet", "--device", "cpu"]) == 0
    return run


def test_the_config_key_is_checked_and_reaches_the_manifest(world_run):
    from swclip.training.config import load_config

    with pytest.raises(ValueError, match="data.gallery 'geoclip1m' unknown"):
        load_config(ROOT / "swclip" / "training" / "configs" / "demo_clip.yaml", ["data.gallery=geoclip1m"])
    manifest = json.loads((world_run[1] / "manifest.json").read_text())
    assert manifest["data"]["gallery"] == "geoclip100k" and "gallery" not in manifest  # nothing evaluated yet


def test_evaluation_gallery_is_the_csvs_places_encoded_by_the_runs_tower(evaluated, places):
    from swclip.retrieval.gallery import Gallery
    from swclip.runs import load_run

    g = Gallery.load(evaluated / "gallery.npz")
    assert len(places) == 94_123  # 100,000 rows, 5,877 of them repeats of an earlier row
    assert g.kind == "location" and g.latlon.shape == (len(places), 2)
    np.testing.assert_array_equal(g.latlon, np.array(places))  # every distinct row, in the CSV's order
    model = load_run(evaluated).model.eval()
    rows = np.array(places)[[0, 1, 47_000, len(places) - 1]]
    with torch.inference_mode():
        again = model.encode_location(rows).numpy()
    np.testing.assert_allclose(g.embeddings[[0, 1, 47_000, len(places) - 1]], again, atol=1e-5)


def test_evaluation_predictions_are_csv_places_and_the_run_says_which_gallery(evaluated, places):
    import pandas as pd

    allowed = set(places)
    pred = pd.read_parquet(evaluated / "predictions.parquet")
    assert len(pred) > 0
    assert all((a, b) in allowed for a, b in zip(pred["pred_lat"], pred["pred_lon"]))
    assert all((a, b) in allowed for la, lo in zip(pred["topk_lat"], pred["topk_lon"]) for a, b in zip(la, lo))
    metrics = json.loads((evaluated / "metrics.json").read_text())
    assert metrics["gallery_source"] == "geoclip100k" and metrics["n_gallery"] == len(places)
    record = json.loads((evaluated / "manifest.json").read_text())["gallery"]
    assert record == {
        "source": "geoclip100k",
        "n_gallery": len(places),
        "file": "geoclip/model/gps_gallery/coordinates_100K.csv",
        "geoclip_version": importlib.metadata.version("geoclip"),
    }
    # a world gallery's knn-kde bandwidth (4 x its median nearest-neighbour spacing, about 2 km): not street level
    assert metrics["kde_bandwidth_m"] > 1_000


def test_evaluating_again_with_geoclip100k_gives_the_same_numbers(evaluated, tmp_path):
    import pandas as pd

    from swclip.cli import main

    again = tmp_path / "again"
    shutil.copytree(evaluated, again)  # its manifest now holds the 100K gallery's bandwidth (about 2 km)
    assert main(["evaluate", str(again), "--quiet", "--device", "cpu", "--gallery", "geoclip100k"]) == 0
    first, second = (json.loads((run / "metrics.json").read_text()) for run in (evaluated, again))
    assert second["kde_bandwidth_m"] == first["kde_bandwidth_m"]
    # the training-image kNN keeps its own street-level bandwidth, not the world gallery's
    assert second["image_knn"] == first["image_knn"]
    pd.testing.assert_frame_equal(
        pd.read_parquet(again / "predictions.parquet"), pd.read_parquet(evaluated / "predictions.parquet")
    )


def test_predict_searches_geoclip100k_stored_or_encoded_on_the_fly(world_run, evaluated, places, tmp_path, capsys):
    from swclip.cli import main
    from swclip.retrieval.gallery import Gallery

    world = world_run[0]
    # the run re-evaluated on its own training locations: its gallery.npz is no longer GeoCLIP's, and the
    # knn-kde bandwidth is the new gallery's (street level), not the one the manifest kept from GeoCLIP's
    split_run = tmp_path / "split_run"
    shutil.copytree(evaluated, split_run)
    assert main(["evaluate", str(split_run), "--quiet", "--device", "cpu", "--gallery", "split"]) == 0
    m = json.loads((split_run / "metrics.json").read_text())
    assert m["gallery_source"] == "split" and m["kde_bandwidth_m"] < 1_000
    assert json.loads((split_run / "manifest.json").read_text())["gallery"] == {
        "source": "split",
        "n_gallery": m["n_gallery"],
        "split": "train",
    }
    assert len(Gallery.load(split_run / "gallery.npz")) < 61

    images = [str(world / p) for p in sorted(world.glob("images/**/*.jpg"))[:3]]
    out = {}
    for name, run in (("stored", evaluated), ("on the fly", split_run)):
        capsys.readouterr()
        assert main(["predict", *images, "--run", str(run), "--gallery", "geoclip100k", "--json", "--top-k", "3"]) == 0
        out[name] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    allowed = set(places)
    for name, answers in out.items():
        assert len(answers) == 3
        assert all((r["lat"], r["lon"]) in allowed for a in answers for r in a["top_k"]), name
    for a, b in zip(out["stored"], out["on the fly"]):
        assert [(r["lat"], r["lon"]) for r in a["top_k"]] == [(r["lat"], r["lon"]) for r in b["top_k"]]
        assert a["estimate"] == pytest.approx(b["estimate"], abs=1e-6)  # same bandwidth: derived from the same gallery


def test_a_missing_geoclip_wheel_is_named_and_nothing_is_written(world_run, tmp_path, monkeypatch):
    from swclip.training.evaluation import evaluate_run

    run = tmp_path / "run"
    shutil.copytree(world_run[1], run)

    def not_installed(name):
        if name == "geoclip":
            raise importlib.metadata.PackageNotFoundError(name)
        return real(name)

    real = importlib.metadata.distribution
    monkeypatch.setattr(importlib.metadata, "distribution", not_installed)  # as if the wheel were absent
    with pytest.raises(
        FileNotFoundError, match=r"geoclip wheel, which is not installed: pip install --no-deps geoclip"
    ):
        evaluate_run(run, gallery_source="geoclip100k", device="cpu")
    assert not (run / "predictions.parquet").exists() and not (run / "gallery.npz").exists()


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
