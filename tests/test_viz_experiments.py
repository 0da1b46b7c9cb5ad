"""The Experiments page's σ figure against the committed experiment.json, read independently."""

import json
from pathlib import Path

import numpy as np

from swclip.analysis.experiment_stats import summary_table
from swclip.viz.experiments import sigma_figure

EXPERIMENT = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "experiment-gaussian-b100.json"


def test_sigma_figure_draws_each_sigmas_mean_and_sd_across_seeds_with_metre_ticks():
    exp = json.loads(EXPERIMENT.read_text())
    # the reference: per σ of the sweep, the test median of every seed, straight from the runs
    by_sigma = {}
    for run in exp["runs"]:
        if (
            run["kind"] == "swclip"
            and run["config"].startswith("swclip-s")
            and run["config"][8:].replace(".", "").isdigit()
        ):
            by_sigma.setdefault(float(run["sigma_m"]), []).append(run["test"]["median_m"])
    sigmas = sorted(by_sigma)
    mean = np.array([np.mean(by_sigma[s]) for s in sigmas])
    sd = np.array([np.std(by_sigma[s], ddof=1) for s in sigmas])
    clip = [r["test"]["median_m"] for r in exp["runs"] if r["config"] == "clip"]

    fig = sigma_figure(summary_table(exp, n_boot=10), "median_m", "test")
    line = next(t for t in fig.data if t.name == "SW-CLIP, mean across seeds")
    np.testing.assert_allclose(line.x, sigmas)
    np.testing.assert_allclose(line.y, mean, rtol=1e-9)
    band = next(t for t in fig.data if t.name == "SW-CLIP ± 1 sd across seeds")
    n = len(sigmas)
    np.testing.assert_allclose(band.y[:n], mean - sd, rtol=1e-9)
    np.testing.assert_allclose(band.y[n:], (mean + sd)[::-1], rtol=1e-9)
    clip_line = next(t for t in fig.data if t.name.startswith("one-hot CLIP (mean"))
    np.testing.assert_allclose(clip_line.y, [np.mean(clip)] * 2, rtol=1e-9)
    assert f"{len(clip)} seeds" in clip_line.name
    # the σ axis: log, ticked at the grid's σ values and labelled in metres, no unlabelled minor ticks
    assert fig.layout.xaxis.type == "log"
    assert list(fig.layout.xaxis.tickvals) == sigmas
    assert list(fig.layout.xaxis.ticktext) == [f"{s:g} m" for s in sigmas]
    assert fig.layout.xaxis.minor.ticks == ""
