"""Experiment runner and its statistics: the block bootstrap against a naive loop, selection on
validation, the job plan, a tiny `swclip experiment --quick` grid end to end with resume, lean runs against
runs with the app's artefacts, and `--grid full` (its protocol, one bar, resume)."""

import dataclasses
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from swclip.analysis import experiment_stats as es
from swclip.workflows import experiments as ex
from swclip.workflows import results

# --------------------------------------------------------------------------- statistics


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 3), st.integers(1, 12), st.integers(1, 8), st.integers(0, 2**31 - 1))
def test_weighted_median_equals_median_of_the_repeated_rows(n_seeds, n, n_draws, seed):
    rng = np.random.default_rng(seed)
    values = np.round(rng.exponential(300.0, (n_seeds, n)), 1)
    weights = rng.integers(0, 4, (n_draws, n))
    weights[:, rng.integers(0, n)] += 1  # every draw keeps at least one row
    got = es.weighted_median(values, weights)
    for r in range(n_draws):
        for s in range(n_seeds):
            assert got[r, s] == np.median(np.repeat(values[s], weights[r]))


def _naive_block_bootstrap(ea, eb, block, stat, n_boot, seed, ci=0.95):
    """The textbook loop: draw blocks with replacement, concatenate their rows, score each seed, average."""
    labels = sorted(set(block))
    rows = {b: [i for i, x in enumerate(block) if x == b] for b in labels}
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(n_boot):
        drawn = rng.integers(0, len(labels), size=len(labels))
        idx = [i for j in drawn for i in rows[labels[j]]]
        sa = np.mean([stat(ea[s][idx]) for s in range(len(ea))])
        sb = np.mean([stat(eb[s][idx]) for s in range(len(eb))])
        diffs.append(sb - sa)
    return np.percentile(diffs, [(1 - ci) / 2 * 100, (1 + ci) / 2 * 100])


def test_paired_block_bootstrap_matches_the_naive_loop():
    rng = np.random.default_rng(1)
    n = 90
    block = np.array([f"c:{i % 13}" for i in rng.permutation(n)])
    ea = rng.exponential(400.0, (3, n))
    eb = ea * rng.uniform(0.6, 1.1, (3, n))
    out = {r["statistic"]: r for r in es.paired_block_bootstrap(ea, eb, block, n_boot=300, seed=5)}
    for name, fn in (("median_m", np.median), ("mean_m", np.mean), ("acc@250m", lambda e: np.mean(e <= 250.0))):
        lo, hi = _naive_block_bootstrap(ea, eb, list(block), fn, 300, 5)
        assert out[name]["diff_lo"] == pytest.approx(lo, rel=1e-9, abs=1e-9), name
        assert out[name]["diff_hi"] == pytest.approx(hi, rel=1e-9, abs=1e-9), name
        assert out[name]["diff"] == pytest.approx(np.mean([fn(eb[s]) - fn(ea[s]) for s in range(3)]))
    assert out["median_m"]["n_blocks"] == 13 and out["median_m"]["n_seeds"] == 3


def test_block_bootstrap_is_wider_than_a_row_bootstrap_when_blocks_are_correlated():
    """Rows of one block share their error; resampling rows alone would understate the uncertainty."""
    rng = np.random.default_rng(2)
    n_blocks, per = 30, 20
    block = np.repeat(np.arange(n_blocks), per)
    shift = rng.normal(0, 200.0, n_blocks)[block]  # a per-block effect of B against A
    ea = rng.exponential(400.0, (1, n_blocks * per))
    eb = np.abs(ea + shift)
    by_block = es.paired_block_bootstrap(ea, eb, block, n_boot=400)[1]  # mean_m
    by_row = es.paired_block_bootstrap(ea, eb, np.arange(block.size), n_boot=400)[1]
    assert by_block["statistic"] == by_row["statistic"] == "mean_m"
    assert by_block["diff_hi"] - by_block["diff_lo"] > 2 * (by_row["diff_hi"] - by_row["diff_lo"])


def test_bootstrap_rejects_unpaired_input():
    with pytest.raises(ValueError, match="paired"):
        es.paired_block_bootstrap(np.ones((2, 5)), np.ones((3, 5)), list("aabbc"))
    with pytest.raises(ValueError, match="2 blocks"):
        es.paired_block_bootstrap(np.ones((1, 5)), np.ones((1, 5)), list("aaaaa"))
    with pytest.raises(ValueError, match="labels"):
        es.paired_block_bootstrap(np.ones((1, 5)), np.ones((1, 5)), list("ab"))


def _record(config, kind, seed, sigma, val_median, test_errors, nc=None):
    e = np.asarray(test_errors, dtype=float)
    summary = {
        "median_m": float(np.median(e)),
        "mean_m": float(e.mean()),
        "acc@100m": float((e <= 100).mean()),
        "acc@250m": float((e <= 250).mean()),
        "acc@500m": float((e <= 500).mean()),
        "recall@1": 0.0,
    }
    return dict(
        name=f"{config}-seed{seed}",
        config=config,
        kind=kind,
        seed=seed,
        sigma_m=sigma,
        nc_weight=nc,
        val={**summary, "median_m": val_median},
        test=summary,
        test_error_m=e.tolist(),
    )


def _fake_experiment():
    rng = np.random.default_rng(0)
    base = rng.exponential(500.0, 40)
    runs = []
    for seed, best in ((0, 50.0), (1, 150.0)):
        runs.append(_record("clip", "clip", seed, None, 900.0, base))
        for sigma in (50.0, 150.0):
            runs.append(
                _record(
                    f"swclip-s{sigma:g}",
                    "swclip",
                    seed,
                    sigma,
                    500.0 if sigma == best else 700.0,
                    base * (0.5 if sigma == best else 0.9),
                )
            )
    return dict(
        protocol=dict(select_metric="median_m"),
        runs=runs,
        test_rows=dict(id=[str(i) for i in range(40)], city=["A", "B"] * 20, block=[f"b{i % 8}" for i in range(40)]),
    )


def test_selection_on_validation_is_per_seed_and_never_reads_test():
    exp = _fake_experiment()
    recs = es.seed_records(exp)
    assert recs[es.VAL_SIGMA][0]["sigma_m"] == 50.0 and recs[es.VAL_SIGMA][1]["sigma_m"] == 150.0
    # make the test numbers say the opposite: the selection must not move
    for r in exp["runs"]:
        r["test"]["median_m"] = -r["val"]["median_m"]
    assert [es.seed_records(exp)[es.VAL_SIGMA][s]["sigma_m"] for s in (0, 1)] == [50.0, 150.0]
    table = es.summary_table(exp, n_boot=50).set_index("config")
    assert list(table.index) == ["clip", "swclip-s50", "swclip-s150", es.VAL_SIGMA]
    assert table.loc[es.VAL_SIGMA, "sigma_m"] == 100.0 and table.loc[es.VAL_SIGMA, "n_seeds"] == 2
    assert table.loc[es.VAL_SIGMA, "d_median_m"] < 0 and np.isnan(table.loc["clip", "d_median_m"])
    cities = es.per_city(exp)
    assert set(cities["city"]) == {"A", "B"} and (cities["n_seeds"] == 2).all()


# --------------------------------------------------------------------------- the plan


def test_plan_is_seed_major_and_waits_for_its_inputs():
    cfg = ex.ExperimentConfig(seeds=(3, 4), sigmas_m=(50.0, 100.0), nc_weights=(0.5,))
    jobs = ex.plan_jobs(cfg)
    assert [j["seed"] for j in jobs] == [3] * 6 + [4] * 6
    by = {j["name"]: j for j in jobs}
    assert by["swclip-var-seed3"]["after"] == ["clip-seed3"]
    assert by["swclip-nc-l0.5-seed4"]["after"] == ["swclip-s50-seed4", "swclip-s100-seed4"]
    # NC takes the validation-best σ of its own seed
    recs = {
        "swclip-s50-seed4": {"sigma_m": 50.0, "val": {"median_m": 300.0}},
        "swclip-s100-seed4": {"sigma_m": 100.0, "val": {"median_m": 200.0}},
    }
    assert ex._ready(by["swclip-nc-l0.5-seed4"], {}, cfg) is None
    assert ex._ready(by["swclip-nc-l0.5-seed4"], recs, cfg)["sigma_m"] == 100.0


# --------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_quick_grid_runs_resumes_and_refuses_a_changed_world(tmp_path, capsys):
    from swclip.cli import main

    out = tmp_path / "exp"
    argv = [
        "experiment",
        "--out",
        str(out),
        "--quick",
        "--steps",
        "2",
        "--batch-size",
        "16",
        "--samples-per-city",
        "40",
        "--nc-weights",
        "0.5",
        "--block",
        "300",
        "--buffer",
        "30",
        "--workers",
        "2",
    ]
    assert main(argv) == 0
    exp = json.loads((out / "experiment.json").read_text())
    assert exp["format"] == ex.FORMAT and exp["name"] == "gaussian-b30-quick"
    assert exp["protocol"]["seeds"] == [0, 1] and exp["protocol"]["sigmas_m"] == [50.0, 150.0, 400.0]
    assert exp["status"] == {**exp["status"], "planned": 14, "finished": 14, "complete": True, "failed": {}}
    n_test = len(exp["test_rows"]["id"])
    assert exp["split"]["counts"]["test"] == n_test > 0 and exp["split"]["buffer_m"] == 30
    for r in exp["runs"]:
        assert {"val", "test"} <= set(r) and len(r["test_error_m"]) == n_test, r["name"]
    var = [r for r in exp["runs"] if r["kind"] == "swclip-var"]
    assert all(r["sigma_m"] == r["variogram"]["sigma_m"] > 0 for r in var)
    # provenance: every run names the commit it was trained with, and the experiment lists them
    repo = Path(ex.__file__).resolve().parents[2]
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True)
    if head.returncode == 0:  # a git checkout (CI's is one)
        commits = {r["git_commit"] for r in exp["runs"]}
        assert len(commits) == 1 and commits.pop().split("-")[0] == head.stdout.strip()
        assert exp["git_commits"] == sorted({r["git_commit"] for r in exp["runs"]})
    printed = capsys.readouterr().out
    assert "| clip | 2 |" in printed and "14 of 14 runs finished" in printed

    # resume: only the run whose record is gone is trained again
    records = {p.parent.name: p.stat().st_mtime_ns for p in (out / "runs").glob("*/record.json")}
    (out / "runs" / "swclip-s150-seed1" / "record.json").unlink()
    assert main(argv + ["--quiet"]) == 0
    again = {p.parent.name: p.stat().st_mtime_ns for p in (out / "runs").glob("*/record.json")}
    changed = sorted(k for k in again if again[k] != records.get(k))
    assert changed == ["swclip-s150-seed1"]

    capsys.readouterr()
    assert main([a if a != "30" else "60" for a in argv]) == 2  # a known error: one line, status 2
    assert "buffer_m" in capsys.readouterr().err


TINY = dict(
    seeds=(0,),
    sigmas_m=(150.0,),
    nc_weights=(),
    variogram=False,
    semivariogram=False,
    steps=2,
    batch_size=16,
    samples_per_city=40,
    block_m=300.0,
    buffer_m=30.0,
)


@pytest.mark.slow
def test_lean_runs_record_the_same_numbers_as_runs_with_the_apps_artefacts(tmp_path):
    """The grid's lean runs (table read once, no image gallery, no scale metrics, nothing written) against the
    app's path (training reads its table, evaluate_run writes predictions.parquet and metrics.json): every
    recorded number the same, to the last bit."""
    import shutil

    cfg = ex.ExperimentConfig(name="tiny", **TINY)
    lean = ex.run_experiment(tmp_path / "lean", cfg, workers=1, progress=False)
    shutil.copytree(tmp_path / "lean" / "world", tmp_path / "full" / "world")  # the same world, not re-rendered
    full = ex.run_experiment(tmp_path / "full", cfg, workers=1, progress=False, artefacts=True)
    assert lean["status"]["finished"] == full["status"]["finished"] == 2 and not lean["status"]["failed"]
    for a, b in zip(lean["runs"], full["runs"]):
        assert a["name"] == b["name"] and a["timings"]["lean"] and not b["timings"]["lean"]
        assert {"median_m", "acc@250m", "recall@1"} <= set(a["val"]) and set(a["test"]) == set(b["test"])
        for key in ("val", "test", "test_error_m", "sigma_m"):
            assert a[key] == b[key], (a["name"], key)
        lean_dir, full_dir = tmp_path / "lean" / "runs" / a["name"], tmp_path / "full" / "runs" / a["name"]
        assert not (lean_dir / "predictions.parquet").exists()
        metrics = json.loads((full_dir / "metrics.json").read_text())
        assert "image_knn" in metrics and metrics["median_m"] == b["test"]["median_m"]


def test_full_grid_is_the_committed_protocol():
    """`swclip experiment --grid full` plans the protocols of the committed experiment-*.json, 130 runs."""
    cfgs = ex.grid_plan("full")
    assert sum(len(ex.plan_jobs(c)) for c in cfgs) == 130
    for cfg in cfgs:
        committed = json.loads((results.RESULTS_DIR / f"experiment-{cfg.name}.json").read_text())
        planned = json.loads(json.dumps(dataclasses.asdict(cfg)))  # tuples as JSON lists
        assert {k: committed["protocol"][k] for k in planned} == planned, cfg.name
        assert committed["status"]["planned"] == len(ex.plan_jobs(cfg))
    with pytest.raises(ValueError, match="unknown grid"):
        ex.grid_plan("huge")


@pytest.mark.slow
def test_grid_command_runs_every_experiment_resumes_and_refuses_protocol_options(tmp_path, monkeypatch, capsys):
    from swclip.cli import main

    size = {k: v for k, v in TINY.items() if k in ("steps", "batch_size", "samples_per_city", "block_m")}
    proto = {k: v for k, v in TINY.items() if k not in size}
    monkeypatch.setitem(
        ex.GRIDS,
        "full",
        (ex.ExperimentConfig(name="g", **proto), ex.ExperimentConfig(name="e", covariance="exponential", **proto)),
    )
    out, results = tmp_path / "grid", tmp_path / "results"
    argv = [
        "experiment",
        "--grid",
        "full",
        "--out",
        str(out),
        "--results",
        str(results),
        "--steps",
        "2",
        "--batch-size",
        "16",
        "--samples-per-city",
        "40",
        "--block",
        "300",
    ]
    assert main(argv) == 0
    printed = capsys.readouterr()
    assert "grid full: 4 runs in 2 experiments" in printed.out and "4/4" in printed.err  # one bar over both
    for name, cov in (("g", "gaussian"), ("e", "exponential")):
        exp = json.loads((results / f"experiment-{name}.json").read_text())
        assert exp == json.loads((out / name / "experiment.json").read_text())
        assert exp["status"]["complete"] and exp["world"]["covariance"] == cov
        assert exp["protocol"]["steps"] == 2 and exp["protocol"]["buffer_m"] == 30.0

    # resume: only the run whose record is gone is trained again, and its experiment's copy is rewritten
    records = {p: p.stat().st_mtime_ns for p in out.glob("*/runs/*/record.json")}
    (out / "e" / "runs" / "clip-seed0" / "record.json").unlink()
    (results / "experiment-e.json").unlink()
    assert main(argv + ["--quiet"]) == 0
    again = {p: p.stat().st_mtime_ns for p in out.glob("*/runs/*/record.json")}
    assert sorted(str(p.relative_to(out)) for p in again if again[p] != records.get(p)) == [
        "e/runs/clip-seed0/record.json"
    ]
    assert json.loads((results / "experiment-e.json").read_text())["status"]["finished"] == 2

    with pytest.raises(SystemExit, match="--seeds"):
        main(argv + ["--seeds", "0", "1"])
