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


def _naive_two_level(ea, eb, block, city, stat, n_boot, seed, ci=0.95):
    """The textbook two-level loop, with the draws of ``two_level_draws`` (same RNG calls, same order):
    per resample, draw seeds and each city's blocks; concatenate the drawn blocks' rows, score B and A of
    each drawn seed on them, average the differences over the drawn seeds."""
    cities = sorted(set(city))
    blocks = {c: sorted({b for b, cc in zip(block, city) if cc == c}) for c in cities}
    rows = {b: [i for i, x in enumerate(block) if x == b] for b in set(block)}
    n_seeds = len(ea)
    rng = np.random.default_rng(seed)
    seeds = rng.integers(0, n_seeds, (n_boot, n_seeds))
    drawn = {c: rng.integers(0, len(blocks[c]), (n_boot, len(blocks[c]))) for c in cities}
    diffs = []
    for r in range(n_boot):
        idx = [i for c in cities for j in drawn[c][r] for i in rows[blocks[c][j]]]
        diffs.append(np.mean([stat(eb[s][idx]) - stat(ea[s][idx]) for s in seeds[r]]))
    return np.percentile(diffs, [(1 - ci) / 2 * 100, (1 + ci) / 2 * 100])


def _two_cities(n=120, seed=1, n_seeds=3):
    rng = np.random.default_rng(seed)
    city = np.array(["Leeds", "York"])[rng.integers(0, 2, n)]
    block = np.array([f"{c[0]}{rng.integers(0, 6 if c == 'Leeds' else 4)}" for c in city])
    ea = np.round(rng.exponential(400.0, (n_seeds, n)), 1)
    eb = np.round(ea * rng.uniform(0.6, 1.1, (n_seeds, n)) + rng.normal(0, 80, (n_seeds, 1)), 1).clip(0)
    return ea, eb, block, city


def test_two_level_bootstrap_matches_the_naive_loop():
    ea, eb, block, city = _two_cities()
    out = {r["statistic"]: r for r in es.two_level_bootstrap(ea, eb, block, city, n_boot=200, seed=7)}
    for name, fn in (("median_m", np.median), ("mean_m", np.mean), ("acc@250m", lambda e: np.mean(e <= 250.0))):
        lo, hi = _naive_two_level(ea, eb, list(block), list(city), fn, 200, 7)
        assert out[name]["diff_lo"] == pytest.approx(lo, rel=1e-9, abs=1e-9), name
        assert out[name]["diff_hi"] == pytest.approx(hi, rel=1e-9, abs=1e-9), name
        assert out[name]["diff"] == pytest.approx(np.mean([fn(eb[s]) - fn(ea[s]) for s in range(3)]))
    assert out["median_m"]["n_blocks"] == 10 and out["median_m"]["n_cities"] == 2 and out["median_m"]["n_seeds"] == 3


def test_two_level_interval_contains_the_block_only_spread_and_the_seeds():
    """Each seed's B − A shifts by its own amount: resampling seeds shows that spread, fixed seeds hide it;
    and with seeds that agree, the two-level interval keeps the block-only one's width (the block draw is
    shared by the seeds, not averaged over them)."""
    rng = np.random.default_rng(3)
    n = 400
    city = np.array(["A", "B"])[rng.integers(0, 2, n)]
    block = np.array([f"{c}{rng.integers(0, 10)}" for c in city])
    per_block = {b: rng.normal(0, 60.0) for b in set(block)}
    ea = rng.exponential(400.0, (5, n))
    stat = {"mean_m": es.STATISTICS["mean_m"]}

    def widths(eb):
        two = es.two_level_bootstrap(ea, eb, block, city, stat, n_boot=400)[0]
        one = es.paired_block_bootstrap(ea, eb, block, stat, n_boot=400)[0]
        return two, two["diff_hi"] - two["diff_lo"], one["diff_hi"] - one["diff_lo"]

    agree = ea + np.array([per_block[b] for b in block])  # the same per-block effect for every seed
    _, two_w, one_w = widths(agree)
    assert 0.8 * one_w < two_w < 1.5 * one_w
    two, two_w, one_w = widths(agree + np.array([-150.0, -100.0, 0.0, 40.0, -200.0])[:, None])
    assert two_w > 3 * one_w and two["diff_lo"] < -120 and two["diff_hi"] > -40  # the seeds' mean shift: -82


def test_two_level_bootstrap_rejects_bad_input():
    ea, eb, block, city = _two_cities()
    with pytest.raises(ValueError, match="paired"):
        es.two_level_bootstrap(ea, eb[:2], block, city)
    with pytest.raises(ValueError, match="spans two cities"):
        es.two_level_bootstrap(ea, eb, np.full(block.size, "b0"), city)
    with pytest.raises(ValueError, match="one label per row"):
        es.two_level_bootstrap(ea, eb, block[:-1], city)


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
    assert "| clip | clip | 2 |" in printed and "14 of 14 runs finished" in printed
    assert "Headline (pre-registered): swclip (val σ) vs clip" in printed

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


@pytest.mark.slow
def test_evidence_grid_runs_every_kind_and_reruns_to_identical_numbers(tmp_path):
    """A tiny grid with the controls, both kernels, the variogram's kernel and the long runs, run twice from
    scratch (world rendered again; two workers, then one): every recorded metric identical, each run's
    provenance recorded, and the summary's tables overall and per city in experiment.json."""
    cfg = ex.ExperimentConfig(
        name="tiny",
        **{**TINY, "seeds": (0, 1)},
        controls=True,
        clip_tuning=((0.05, 2e-3),),
        kernels=("gaussian", "exponential"),
        variogram_kernel=True,
        long_seeds=(1,),
        long_factor=2,
    )
    first = ex.run_experiment(tmp_path / "a", cfg, workers=2, progress=False)
    again = ex.run_experiment(tmp_path / "b", cfg, workers=1, progress=False)
    kinds = {r["kind"] for r in first["runs"]}
    assert kinds == {"clip", "swclip", ex.SWCLIP_EXP, ex.SWCLIP_VAR_KERNEL, ex.CLIP_TUNED, "smooth", "shuffled"} | {
        ex.CLIP_LONG,
        ex.SWCLIP_LONG,
    }
    assert first["status"]["complete"] and not first["status"]["failed"] and first["status"]["finished"] == 16
    for a, b in zip(first["runs"], again["runs"]):
        assert a["name"] == b["name"]
        for key in ("weights_sha256", "val", "test", "test_error_m", "sigma_m", "kernel", "steps"):
            assert a[key] == b[key], (a["name"], key)
    by = {r["name"]: r for r in first["runs"]}
    assert by["swclip-long-seed1"]["steps"] == by["clip-long-seed1"]["steps"] == 2 * TINY["steps"]
    assert by["swclip-varkernel-seed0"]["kernel"] == by["swclip-varkernel-seed0"]["variogram"]["kernel"]
    assert by["clip-t0.05-lr0.002-seed0"]["temperature"] == 0.05
    prov = first["provenance"]
    assert set(prov["libraries"]) >= {"torch", "numpy", "faiss", "open_clip"} and len(prov["cpu_models"]) == 1
    assert prov["threads"] == ["torch 1, faiss 1"] and prov["git_commits"] == first["git_commits"]
    summary = first["summary"]
    assert summary == again["summary"]
    overall = {r["config"]: r for r in summary["overall"]}
    assert overall[es.VAL_SIGMA]["role"] == "headline (pre-registered)" and overall[es.VAL_SIGMA]["vs"] == "clip"
    assert overall["swclip-long"]["vs"] == "clip-long" and overall[es.VAL_SMOOTH]["role"] == "exploratory"
    assert {es.VAL_CLIP, es.VAL_SHUFFLED, es.VAL_EXP} <= set(overall)
    cities = sorted(set(first["test_rows"]["city"]))
    assert sorted({r["city"] for r in summary["per_city"]}) == cities
    assert len(summary["per_city"]) == len(cities) * len(overall)
    assert {(r["b"], r["a"]) for r in summary["comparisons"]} == {
        es.HEADLINE,
        *es.CONTROL_COMPARISONS,
        (ex.SWCLIP_LONG, ex.CLIP_LONG),
    }


def test_full_grid_plans_the_evidence_protocol():
    """`swclip experiment --grid full`: the committed protocols' fields, plus the controls (main world), the
    kernel-shape runs (both worlds) and the long runs (main world, three seeds); 296 runs, 314 run-lengths."""
    cfgs = ex.grid_plan("full")
    plans = {c.name: ex.plan_jobs(c) for c in cfgs}
    assert {k: len(v) for k, v in plans.items()} == {"gaussian-b100": 186, "exponential-b100": 90, "gaussian-b30": 20}
    steps = sum((j["steps"] or c.steps) / c.steps for c in cfgs for j in plans[c.name])
    assert steps == 314
    for cfg in cfgs:
        committed = json.loads((results.RESULTS_DIR / f"experiment-{cfg.name}.json").read_text())
        planned = json.loads(json.dumps(dataclasses.asdict(cfg)))  # tuples as JSON lists
        shared = [k for k in committed["protocol"] if k in planned]
        assert {k: committed["protocol"][k] for k in shared} == {k: planned[k] for k in shared}, cfg.name
        assert {r["name"] for r in committed["runs"]} <= {j["name"] for j in plans[cfg.name]}, cfg.name
    main = {j["name"]: j for j in plans["gaussian-b100"]}
    for seed in range(5):  # the controls' budget is the σ sweep's: six runs each, per seed
        for kind in (ex.CLIP_TUNED, "smooth", "shuffled", ex.SWCLIP_EXP, "swclip"):
            assert sum(1 for j in main.values() if j["kind"] == kind and j["seed"] == seed) == 6, (kind, seed)
    long = [j for j in main.values() if j["kind"] in (ex.CLIP_LONG, ex.SWCLIP_LONG)]
    assert sorted({j["seed"] for j in long}) == [0, 1, 2] and all(j["steps"] == 1200 for j in long)
    assert main["swclip-long-seed1"]["after"] == [f"swclip-s{s:g}-seed1" for s in (25, 50, 100, 150, 250, 400)]
    assert not any(j["kind"] in ("smooth", ex.CLIP_LONG) for j in plans["exponential-b100"])
    assert sum(j["kind"] == ex.SWCLIP_VAR_KERNEL for j in plans["exponential-b100"]) == 5
    with pytest.raises(ValueError, match="unknown grid"):
        ex.grid_plan("huge")


def test_controls_get_the_sweeps_budget_and_long_runs_take_the_validation_sigma():
    cfg = ex.ExperimentConfig(seeds=(0,), sigmas_m=(50.0, 100.0), controls=True, clip_tuning=((0.07, 1e-3),))
    with pytest.raises(ValueError, match="budget"):
        ex.plan_jobs(cfg)
    with pytest.raises(ValueError, match="kernels"):
        ex.plan_jobs(dataclasses.replace(cfg, controls=False, kernels=("exponential",)))
    cfg = dataclasses.replace(cfg, clip_tuning=((0.07, 1e-3), (0.03, 2e-3)), long_seeds=(0,), nc_weights=())
    by = {j["name"]: j for j in ex.plan_jobs(cfg)}
    recs = {
        "swclip-s50-seed0": {"sigma_m": 50.0, "kernel": "gaussian", "val": {"median_m": 300.0}},
        "swclip-s100-seed0": {"sigma_m": 100.0, "kernel": "gaussian", "val": {"median_m": 200.0}},
    }
    long = ex._ready(by["swclip-long-seed0"], recs, cfg)
    assert long["sigma_m"] == 100.0 and long["steps"] == 4 * cfg.steps
    config, over = ex._overrides(by["clip-t0.03-lr0.002-seed0"], cfg, Path("s.csv"), Path("runs"))
    assert config == "demo_clip.yaml" and "optim.lr=0.002" in over
    assert f"model.init_logit_scale={float(np.log(1 / 0.03))!r}" in over
    config, over = ex._overrides(by["smooth-s50-seed0"], cfg, Path("s.csv"), Path("runs"))
    assert config == "demo_swclip.yaml"
    assert over[-3:] == ["loss.sigma_m=50.0", "loss.kernel=gaussian", "loss.name=smooth"]
    assert f"steps={4 * cfg.steps}" in ex._overrides(long, cfg, Path("s.csv"), Path("runs"))[1]


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
