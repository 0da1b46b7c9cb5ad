"""`swclip import`: published prediction tables become runs; bad input is refused with the count and first row.

References are the published tables' own columns (OSV-5M's distance, score and *_hit per row), not our output.
"""

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from swclip import catalog
from swclip.analysis.metrics import admin_hits, summarize_answered
from swclip.cli import main
from swclip.data.predictions import PredictionsError, prediction_models, resolve_columns
from swclip.io import RunError, sha256_file
from swclip.runs import Run, list_runs, load_run, read_predictions
from swclip.workflows.importer import import_file, import_predictions

SAMPLE = Path(__file__).resolve().parents[1] / "assets" / "osv5m_sample"
HEAD = SAMPLE / "osv5m_game_select_head.csv"
OLD = SAMPLE / "osv5m_game_select_0a7efba.csv"


def small(n=6, **extra) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    df = pd.DataFrame(
        {
            "id": [f"p{i}" for i in range(n)],
            "true_lat": rng.uniform(-50, 50, n),
            "true_lon": rng.uniform(-120, 120, n),
            "pred_lat": rng.uniform(-50, 50, n),
            "pred_lon": rng.uniform(-120, 120, n),
            "city": ["A", "B"] * (n // 2),
        }
    )
    return df.assign(**extra)


# ----------------------------------------------------------------- conventions


@pytest.mark.parametrize(
    "names",
    [
        ("latitude", "longitude", "pred_latitude", "pred_longitude"),  # OSV-5M
        ("true_lat", "true_lon", "pred_lat", "pred_lon"),
        ("gt_lat", "gt_long", "predicted_lat", "predicted_long"),
    ],
)
def test_published_conventions_are_recognised(names):
    cols = resolve_columns(["id", *names, "city"])
    assert [cols[k] for k in ("lat", "lon", "pred_lat", "pred_lon")] == list(names)
    assert cols["city"] == "city"


def test_wide_table_lists_its_models_and_ignores_units_and_ranks():
    cols = ["id", "lat", "lon", "pred_lat", "pred_lon", "pred_lat_base", "pred_lon_base", "pred_lat_1", "pred_lon_1"]
    assert prediction_models(cols + ["pred_lat_radians", "pred_lon_radians"]) == {
        "model": ("pred_lat", "pred_lon"),
        "base": ("pred_lat_base", "pred_lon_base"),
    }
    with pytest.raises(PredictionsError, match=r"2 models \['model', 'base'\]"):
        resolve_columns(cols)
    assert resolve_columns(cols, model="base")["pred_lat"] == "pred_lat_base"


def test_osv5m_head_table_gives_one_run_per_model_with_their_numbers(tmp_path):
    written = import_file(HEAD, tmp_path / "osv5m")
    assert [p.name for p in written] == ["model", "base"]
    theirs = pd.read_csv(HEAD)
    for run_dir, suffix in zip(written, ("", "_base")):
        m = Run.open(run_dir).manifest
        assert m["kind"] == "imported" and m["source"]["sha256"] == sha256_file(HEAD)
        assert m["columns"]["pred_lat"] == f"pred_lat{suffix}" and m["columns"]["lat"] == "true_lat"
        df = read_predictions(run_dir)
        # their distance column is OSV-5M's haversine (R = 6,371 km); ours uses R = 6,371.0088 km
        np.testing.assert_allclose(df["error_m"] / 1000, theirs[f"distance{suffix}"] * 6371.0088 / 6371, rtol=1e-9)
        metrics = json.loads((run_dir / "metrics.json").read_text())
        assert metrics["geoscore"] == pytest.approx(theirs[f"score{suffix}"].mean(), rel=1e-5)
        assert metrics["coverage"] == 1.0 and metrics["n_rows"] == 50
        assert metrics["osv5m"]["median_km"] == pytest.approx(np.median(theirs[f"distance{suffix}"]), rel=1e-12)


def test_osv5m_admin_hits_agree_with_their_hit_columns():
    """Our per-row admin hits against OSV-5M's own city_hit / area_hit / region_hit / country_hit (HEAD table).

    City, region and country agree on every row for both models. Area (our sub-region) agrees on every
    row whose true area is named (24 of 50); on the 26 rows without one, OSV-5M counts two empty names
    as a hit, our key (admin2_admin1_cc) hits only when the region matches too, and admin_accuracy skips them.
    """
    t = pd.read_csv(HEAD)
    true = t[["true_lat", "true_lon"]].to_numpy()
    measured = {}
    for suffix in ("", "_base"):
        hits = admin_hits(t[[f"pred_lat{suffix}", f"pred_lon{suffix}"]].to_numpy(), true, mode=1)
        for theirs, ours in (("city", "city"), ("area", "sub-region"), ("region", "region"), ("country", "country")):
            agree = hits[ours] == t[f"{theirs}_hit{suffix}"].to_numpy(bool)
            named = hits[f"has_{ours}"]
            measured[f"{theirs}{suffix}"] = (int(agree.sum()), int(agree[named].sum()), int(named.sum()))
    assert measured == {
        "city": (50, 50, 50),
        "area": (32, 24, 24),
        "region": (50, 50, 50),
        "country": (50, 50, 50),
        "city_base": (50, 50, 50),
        "area_base": (30, 24, 24),
        "region_base": (50, 50, 50),
        "country_base": (50, 50, 50),
    }


def test_columns_mapping_jsonl_and_parquet(tmp_path):
    df = small().rename(columns={"true_lat": "y", "true_lon": "x", "pred_lat": "py", "pred_lon": "px", "id": "photo"})
    df.to_json(tmp_path / "p.jsonl", orient="records", lines=True)
    df.to_parquet(tmp_path / "p.parquet")
    code = main(
        ["import", str(tmp_path / "p.jsonl"), "--out", str(tmp_path / "j"), "--model", "vlm"]
        + ["--columns", "id=photo", "lat=y", "lon=x", "pred_lat=py", "pred_lon=px"]
    )
    assert code == 0
    cols = {"id": "photo", "lat": "y", "lon": "x", "pred_lat": "py", "pred_lon": "px"}
    (run_dir,) = import_file(tmp_path / "p.parquet", tmp_path / "q", columns=cols)
    a, b = read_predictions(tmp_path / "j"), read_predictions(run_dir)
    np.testing.assert_allclose(a["error_m"], b["error_m"], rtol=1e-9)  # JSON keeps ~15 digits
    assert Run.open(run_dir).manifest["model"] == "q"


def test_topk_suffixes_give_recall_vs_area_and_embeddings_are_kept(tmp_path):
    df = small(8)
    rng = np.random.default_rng(1)
    for i in (1, 2, 3):
        df[f"pred_lat_{i}"] = df["pred_lat"] + rng.normal(0, 1, len(df))
        df[f"pred_lon_{i}"] = df["pred_lon"] + rng.normal(0, 1, len(df))
        df[f"prob_{i}"] = [0.5, 0.3, 0.2][i - 1]
    emb = rng.normal(size=(8, 4)).astype(np.float32)
    run_dir = import_predictions(df, tmp_path / "g", model="geoclip", source={"description": "test"}, embeddings=emb)
    run = Run.open(run_dir)
    latlon, prob = run.topk()
    assert latlon.shape == (8, 3, 2) and prob.shape == (8, 3)
    np.testing.assert_array_equal(latlon[:, 1, 0], df["pred_lat_2"])
    assert run.embeddings().shape == (8, 4)
    assert "rva" in run.metrics() and run.metrics()["top_k"] == 3


def test_embeddings_listed_by_id_are_stored_in_table_order(tmp_path, capsys):
    small(8).to_csv(tmp_path / "p.csv", index=False)
    order = [5, 2, 7, 0, 1, 6, 3, 4]  # the embedding file's own order
    emb = np.array([[float(i), -float(i)] for i in order], dtype=np.float32)  # row k holds table row order[k]
    np.save(tmp_path / "emb.npy", emb)
    (tmp_path / "ids.txt").write_text("".join(f"p{i}\n" for i in order))
    argv = ["import", str(tmp_path / "p.csv"), "--embeddings", str(tmp_path / "emb.npy")]
    assert main([*argv, "--embedding-ids", str(tmp_path / "ids.txt"), "--out", str(tmp_path / "r")]) == 0
    stored = np.load(tmp_path / "r" / "embeddings.npy", allow_pickle=False).astype(np.float32)
    np.testing.assert_array_equal(stored[:, 0], np.arange(8))  # row i of the run is table row i

    bad = {
        "missing": ([f"p{i}" for i in order[:-1]] + ["p99"], "1 table id(s) have no embedding, first 'p4'"),
        "repeated": ([f"p{i}" for i in order[:-1]] + ["p5"], "1 embedding id(s) repeat, first 'p5'"),
        "count": ([f"p{i}" for i in order[:-1]], "7 embedding ids for 8 embedding rows"),
    }
    for name, (ids, said) in bad.items():
        (tmp_path / "ids.txt").write_text("\n".join(ids) + "\n")
        assert main([*argv, "--embedding-ids", str(tmp_path / "ids.txt"), "--out", str(tmp_path / name)]) == 2
        err = capsys.readouterr().err.strip()
        assert said in err and "\n" not in err, (name, err)
        assert not (tmp_path / name).exists()


# ----------------------------------------------------------------- abstentions


def test_abstentions_are_kept_counted_and_score_zero(tmp_path):
    df = small(6)
    df.loc[[1, 3], ["pred_lat", "pred_lon"]] = np.nan  # both in city B
    run_dir = import_predictions(df, tmp_path / "a", model="vlm", source={})
    out = read_predictions(run_dir)
    assert len(out) == 6 and out["error_m"].isna().sum() == 2
    m = json.loads((run_dir / "metrics.json").read_text())
    assert (m["n_rows"], m["n"], m["n_abstained"]) == (6, 4, 2)
    assert m["coverage"] == pytest.approx(4 / 6)
    # independent reference: a loop over the rows, GeoScore 0 for an abstention
    answered = out["error_m"].dropna().to_numpy()
    scores = [5000 * math.exp(-(e / 1000) / 1492.7) if not math.isnan(e) else 0.0 for e in out["error_m"]]
    assert m["geoscore"] == pytest.approx(sum(scores) / 6)
    assert m["median_m"] == pytest.approx(float(np.median(answered)))
    assert m["per_city"]["B"]["n_abstained"] == 2 and m["per_city"]["B"]["coverage"] == pytest.approx(1 / 3)
    usable, problems = catalog.check_predictions(out, run_id="a")
    assert len(usable) == 4 and "no prediction for 2 of 6" in problems[0] and len(problems) == 1


def test_summarize_answered_of_no_answer():
    m = summarize_answered([np.nan, np.nan])
    assert m["n"] == 0 and m["coverage"] == 0.0 and m["geoscore"] == 0.0 and math.isnan(m["median_m"])


# ----------------------------------------------------------------- bad input


def test_missing_column_is_named_with_the_columns_found(tmp_path):
    df = small().drop(columns=["pred_lon"])
    with pytest.raises(PredictionsError, match=r"missing column\(s\) 'pred_lat'.*the table has \['id', 'true_lat'"):
        import_predictions(df, tmp_path / "r", model="m", source={})
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    "row, cells, message",
    [
        (3, {"true_lat": np.nan}, r"missing true latitude/longitude in 1 row\(s\); first: row 3, id 'p3'"),
        (2, {"pred_lat": 200.0}, r"predicted latitude outside \[-90, 90\] in 1 row\(s\); first: row 2, id 'p2'"),
        (4, {"true_lon": 400.0}, r"true longitude outside \[-180, 360\] in 1 row\(s\); first: row 4"),
        (1, {"pred_lon": np.nan}, r"only one of latitude/longitude in 1 row\(s\); first: row 1"),
        (5, {"pred_lat": "north"}, r"pred_lat \('pred_lat'\) is not a number in 1 row\(s\); first: row 5"),
    ],
)
def test_malformed_coordinates_are_errors_with_count_and_first_row(tmp_path, row, cells, message):
    df = small().astype({"pred_lat": object})
    for col, value in cells.items():
        df.loc[row, col] = value
    with pytest.raises(PredictionsError, match=message):
        import_predictions(df, tmp_path / "r", model="m", source={})
    assert not (tmp_path / "r").exists() and not list(tmp_path.iterdir())


def test_duplicate_ids_are_refused(tmp_path):
    df = small()
    df.loc[[2, 5], "id"] = "dup"
    with pytest.raises(PredictionsError, match=r"1 id\(s\) occur more than once \(2 row\(s\); first: row 2, id 'dup'"):
        import_predictions(df, tmp_path / "r", model="m", source={})


def test_missing_images_are_counted(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "p0.jpg").write_bytes(b"x")
    df = small(image=[f"p{i}.jpg" for i in range(6)])
    df.loc[1, "image"] = ""  # no photo for this row: allowed
    with pytest.raises(PredictionsError, match=r"4 of 6 image\(s\) not found .* first: row 2, id 'p2', image 'p2.jpg'"):
        import_predictions(df, tmp_path / "r", model="m", source={}, images_root=tmp_path / "img")


def test_existing_run_is_kept_without_force_and_a_failed_replace_loses_nothing(tmp_path):
    first = import_predictions(small(), tmp_path / "r", model="m", source={})
    before = (first / "predictions.parquet").read_bytes()
    with pytest.raises(FileExistsError, match="already exists; pass force=True"):
        import_predictions(small(8), tmp_path / "r", model="m", source={})
    bad = small(8)
    bad.loc[0, "pred_lat"] = 200.0
    with pytest.raises(PredictionsError):
        import_predictions(bad, tmp_path / "r", model="m", source={}, force=True)
    bad_emb = np.zeros((3, 2))
    with pytest.raises(PredictionsError, match="one row per table row"):
        import_predictions(small(8), tmp_path / "r", model="m", source={}, force=True, embeddings=bad_emb)
    assert (first / "predictions.parquet").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]  # no temporary folder left
    import_predictions(small(8), tmp_path / "r", model="m", source={}, force=True)
    assert len(read_predictions(first)) == 8


def test_cli_reports_bad_input_in_one_line(tmp_path, capsys):
    small().drop(columns=["true_lat"]).to_csv(tmp_path / "p.csv", index=False)
    assert main(["import", str(tmp_path / "p.csv"), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("swclip: error: missing column(s) 'lat'") and "\n" not in err
    assert main(["import", str(tmp_path / "p.csv"), "--out", str(tmp_path / "r"), "--columns", "lat"]) == 2


# ----------------------------------------------------------------- the run contract


def test_imported_runs_are_listed_not_demo_and_cannot_load_a_model(tmp_path):
    import_file(OLD, tmp_path / "osv5m" / "old")
    (tmp_path / "world").mkdir()
    (tmp_path / "world" / "world.json").write_text("{}")  # inside a demo bundle, still not the demo world
    found, broken = catalog.discover_runs(tmp_path)
    assert broken == [] and [r.run_id for r in found] == ["osv5m/old"]
    info = found[0]
    assert info.kind == "imported" and not info.is_demo and info.source.endswith("osv5m_game_select_0a7efba.csv")
    assert "imported: old" in info.label
    with pytest.raises(RunError, match="imported predictions of 'old'.*needs a trained run"):
        load_run(info.path)
    assert list_runs(tmp_path)[0].error is None


def test_demo_bundle_imports_osv5m_sample_with_its_photos(tmp_path):
    from swclip.workflows.demo import OSV5M_RUNS, build_osv5m_sample

    runs_dir = build_osv5m_sample(tmp_path / "osv5m", progress=False)
    assert [p.name for p in runs_dir] == list(OSV5M_RUNS) == ["plonk", "baseline", "plonk-71"]
    assert (tmp_path / "osv5m" / "ATTRIBUTION.md").is_file()
    found, broken = catalog.discover_runs(tmp_path)
    assert broken == [] and {r.run_id for r in found} == {f"osv5m/{r}" for r in OSV5M_RUNS}
    for info in found:
        df = read_predictions(info.path)
        root = catalog.image_root(info, tmp_path)
        shown = [catalog.image_path(root, rel, tmp_path) for rel in df["image"]]
        # HEAD's table: 21 of 50 photos exist in either repository; the 0a7efba table: all 71
        assert sum(p is not None for p in shown) == {"osv5m/plonk-71": 71}.get(info.run_id, 21)
    model, base = (json.loads((tmp_path / "osv5m" / r / "metrics.json").read_text()) for r in ("plonk", "baseline"))
    # OSV-5M's own numbers for these rows (NOTES.md: country 0.66 / 0.24, region 0.28 / 0.06, city 0.08 / 0.02)
    assert (model["osv5m"]["acc_country"], base["osv5m"]["acc_country"]) == (0.66, 0.24)
    assert (model["osv5m"]["acc_city"], base["osv5m"]["acc_city"]) == (0.08, 0.02)
    stamp = (tmp_path / "osv5m" / "plonk" / "manifest.json").stat().st_mtime_ns
    build_osv5m_sample(tmp_path / "osv5m", progress=False)  # built: nothing rewritten
    assert (tmp_path / "osv5m" / "plonk" / "manifest.json").stat().st_mtime_ns == stamp


def test_a_write_that_fails_midway_leaves_no_run_and_keeps_the_old_one(tmp_path):
    first = import_predictions(small(), tmp_path / "r", model="m", source={})
    before = {p.name: p.read_bytes() for p in first.iterdir()}
    # predictions and metrics are written, then the manifest fails: the source holds something JSON cannot hold
    with pytest.raises(TypeError):
        import_predictions(small(8), tmp_path / "r", model="m", source={"bad": object()}, force=True)
    with pytest.raises(TypeError):
        import_predictions(small(8), tmp_path / "new", model="m", source={"bad": object()})
    assert {p.name: p.read_bytes() for p in first.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]
