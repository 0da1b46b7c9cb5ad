"""swclip.catalog: run discovery, demo detection, world context and path confinement (no Streamlit)."""

import json

import numpy as np
import pandas as pd
import pytest

from swclip import catalog, runs
from swclip.synth import make_world


def _run(root, name, evaluated=True, **manifest):
    d = root / name
    d.mkdir(parents=True)
    if evaluated:
        runs.write_predictions(
            d, pd.DataFrame({"id": ["a"], "city": ["London"], "lat": [51.5], "lon": [-0.1], "error_m": [10.0]})
        )
    runs.atomic_write_json(
        d / "manifest.json", {"schema_version": runs.SCHEMA_VERSION, "model": {"arch": "x"}, **manifest}
    )
    return d


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    world = make_world(
        root / "demo" / "world", seed=1, cities=["London", "Leeds"], samples_per_city=20, image_size=16, workers=1
    )
    _run(
        root,
        "demo/clip",
        loss={"name": "clip", "sigma_m": 150.0},
        sigma_m=0.0,
        data={"root": "/elsewhere/world", "table": "/elsewhere/world/samples.csv"},
    )
    _run(root, "demo/swclip-s50", loss={"name": "swclip", "sigma_m": 50.0}, sigma_m=50.0)
    _run(root, "real/run1", loss={"name": "swclip", "sigma_m": 80.0})
    _run(root, "real/training", evaluated=False, loss={"name": "clip"})
    return root, world


def test_discovery_sigma_and_demo_detection(bundle):
    root, _ = bundle
    found, broken = catalog.discover_runs(root)
    by_id = {r.run_id: r for r in found}
    assert set(by_id) == {"demo/clip", "demo/swclip-s50", "real/run1"}
    assert broken == [("real/training", broken[0][1])] and "not evaluated yet" in broken[0][1]
    assert by_id["demo/clip"].sigma_m is None  # loss.sigma_m is only the config default for a one-hot run
    assert by_id["demo/swclip-s50"].sigma_m == 50.0
    assert by_id["real/run1"].sigma_m == 80.0  # no top-level sigma_m: the swclip loss config's
    assert by_id["demo/clip"].is_demo and by_id["demo/swclip-s50"].is_demo
    assert not by_id["real/run1"].is_demo
    assert by_id["demo/swclip-s50"].label == "demo/swclip-s50 · swclip · σ=50 m"
    assert catalog.discover_runs(root / "missing") == ([], [])


def test_world_context_comes_from_the_world_files(bundle):
    root, world = bundle
    found, _ = catalog.discover_runs(root)
    run = next(r for r in found if r.run_id == "demo/clip")
    path = catalog.find_world(run, root)
    assert path == (root / "demo" / "world" / "world.json").resolve()
    meta = catalog.read_world(path)
    ranges = catalog.city_true_ranges(meta, "Leeds")
    expected = {f["name"]: f["range_m"] for c in world.meta["cities"] if c["name"] == "Leeds" for f in c["fields"]}
    assert ranges == expected and len(ranges) == 12
    streets = catalog.read_streets(path)
    assert set(streets) == {"London", "Leeds"}
    geo = json.loads((root / "demo" / "world" / "streets.geojson").read_text())
    n_london = sum(f["properties"]["city"] == "London" for f in geo["features"])
    assert len(streets["London"]) == n_london
    first = next(f for f in geo["features"] if f["properties"]["city"] == "London")
    np.testing.assert_allclose(streets["London"][0], np.asarray(first["geometry"]["coordinates"])[:, ::-1])
    # The bundle was moved: the manifest's absolute data paths are gone, the world beside the run is used.
    assert catalog.image_root(run, root) == (root / "demo" / "world").resolve()
    assert catalog.table_path(run, root) == (root / "demo" / "world" / "samples.csv").resolve()


def test_image_paths_stay_inside_the_root(bundle):
    root, world = bundle
    img_root = root / "demo" / "world"
    rel = world.table["image"].iloc[0]
    assert catalog.image_path(img_root, rel, root) == (img_root / rel).resolve()
    assert catalog.image_path(img_root, "../../../../etc/passwd", root) is None
    assert catalog.image_path(img_root, "/etc/passwd", root) is None
    assert catalog.image_path(img_root, "images/none.jpg", root) is None
    assert catalog.image_path(None, rel, root) is None


def test_metrics_fall_back_to_the_manifest(bundle, tmp_path):
    run_dir = _run(tmp_path, "r", metrics={"median_m": 12.0, "n": 3})
    run = catalog.discover_runs(tmp_path)[0][0]
    assert catalog.overall_metrics(catalog.read_metrics(run)) == {"median_m": 12.0, "n": 3}
    runs.write_metrics(run_dir, {"overall": {"median_m": 7.0}, "per_city": {}})
    assert catalog.overall_metrics(catalog.read_metrics(run)) == {"median_m": 7.0}
