"""Experiments: does SW-CLIP help on the demo world, and by how much? Seeds, validation-chosen σ, controls, and a
two-level bootstrap over seeds and held-out blocks."""

from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from appkit import frame
from appkit.urlstate import url_widget
from swclip.analysis import experiment_stats as es
from swclip.analysis.variogram import suggest_sigma_m
from swclip.io import resolve_inside
from swclip.synth.world import RANGE_MIN_M
from swclip.viz import experiments as vx
from swclip.workflows import results as rx

view = frame.ensure_frame()
st.title("Experiments")
st.caption(
    "The evidence behind the headline (docs/evidence.md): a grid of configs × seeds trained by `swclip experiment`, "
    "σ and λ chosen on a validation split, test reported once. The Runs page shows single demo runs; this page "
    "shows whether the differences survive other seeds and other held-out places."
)

found = rx.find_experiments(view.runs_root)
runs_root = Path(view.runs_root).resolve()


def label(p: Path) -> str:
    try:
        return f"runs: {p.resolve().relative_to(runs_root)}"
    except ValueError:
        return f"committed: {p.name}"


labels = {label(p): p for p in found}
c1, c2 = st.columns([2, 3])
with c2:
    typed = url_widget(
        st.text_input,
        "…or an experiment.json inside the runs folder (path relative to it)",
        "exp_path",
        "",
        placeholder="experiments/gaussian-b100/experiment.json",
    )
path = None
if typed.strip():
    try:
        path = resolve_inside(runs_root, typed.strip())
    except (OSError, ValueError) as err:  # RunError (a ValueError): outside the runs folder
        st.error(f"Cannot open `{typed}`: {err}")
        st.stop()
with c1:
    if not labels and path is None:
        st.warning(
            "No experiment found: none committed in `benchmarks/results/` and no `experiment.json` in the runs folder. "
            "Run one with `swclip experiment --out runs/experiments/try --quick`."
        )
        st.stop()
    if labels:
        names = list(labels)
        chosen = url_widget(
            st.selectbox,
            "Experiment",
            "exp",
            names[0],
            valid=lambda v: v in labels,
            options=names,
            disabled=path is not None,
        )
        path = path or labels[chosen]


@st.cache_data(show_spinner="Reading the experiment and bootstrapping its intervals…", max_entries=8)
def load(p: str, mtime: float):
    exp = rx.load_experiment(p)
    return exp, es.summary_table(exp, n_boot=BOOT, seed=0), es.comparisons_table(exp, n_boot=BOOT, seed=0)


@st.cache_data(show_spinner="Bootstrapping the city's intervals…", max_entries=32)
def load_city(p: str, mtime: float, city: str):
    exp = rx.load_experiment(p)
    return es.summary_table(exp, n_boot=BOOT, seed=0, city=city), es.comparisons_table(exp, BOOT, 0, city=city)


BOOT = 1000  # bootstrap resamples (seed 0), as experiment.json's summary


def fmt_ci(lo: float, hi: float, digits: int = 0) -> str:
    return "" if not np.isfinite(lo) else f"[{lo:+.{digits}f}, {hi:+.{digits}f}]"


def delta_rows(table: pd.DataFrame) -> pd.DataFrame:
    """The Δ columns of ``summary_table`` rows (all but the baselines) as the page shows them."""
    rows = []
    for _, r in table.iterrows():
        if r["role"] == "baseline":
            continue
        rows.append(
            {
                "config": r["config"],
                "vs": r["vs"],
                "role": r["role"],
                "seeds": r["n_paired"],
                "σ (m)": r["sigma_m"],
                "test median (m)": r["test_median_m"],
                "Δ median (m)": r["d_median_m"],
                "Δ median 95 % CI (seeds + blocks)": fmt_ci(r["d_median_m_lo"], r["d_median_m_hi"]),
                "block-only CI (seeds fixed)": fmt_ci(r["d_median_m_block_lo"], r["d_median_m_block_hi"]),
                "Δ acc@250 m": r["d_acc@250m"],
                "Δ acc@250 m 95 % CI (seeds + blocks)": fmt_ci(r["d_acc@250m_lo"], r["d_acc@250m_hi"], 3),
                "separates (seeds + blocks)": separates(r),
            }
        )
    return pd.DataFrame(rows)


def separates(r) -> str:
    if not np.isfinite(r["d_median_m_lo"]):
        return ""
    return "yes" if (r["d_median_m_hi"] < 0 or r["d_median_m_lo"] > 0) else "no (overlaps 0)"


DELTA_COLUMNS = {
    "σ (m)": st.column_config.NumberColumn(format="%.0f"),
    "test median (m)": st.column_config.NumberColumn(format="%.0f"),
    "Δ median (m)": st.column_config.NumberColumn(format="%+.0f"),
    "Δ acc@250 m": st.column_config.NumberColumn(format="%+.3f"),
}


try:
    exp, table, comparisons = load(str(path), path.stat().st_mtime)
except (OSError, ValueError) as err:
    st.error(f"Cannot read `{path}`: {err}")
    st.stop()
if table.empty:
    st.warning("This experiment has no finished run yet.")
    st.stop()

status, proto, world, split = exp["status"], exp["protocol"], exp["world"], exp["split"]
if not status["complete"]:
    st.warning(
        f"**Partial experiment**: {status['finished']} of {status['planned']} runs finished. Seeds per config are "
        "in the table; read the spreads with that in mind.",
        icon=":material/hourglass_bottom:",
    )
if status.get("failed"):
    st.error("Runs that failed or were skipped: " + "; ".join(f"{k}: {v}" for k, v in status["failed"].items()))
counts = split.get("counts", {})
st.markdown(
    f"**{exp['name']}** · world: {world['covariance']} field covariance, {len(world['cities'])} cities, "
    f"true field ranges {world['range_m']['min']:.0f}–{world['range_m']['max']:.0f} m · "
    f"split: {split['block_m']:g} m blocks, **{split['buffer_m']:g} m buffer**, "
    f"train {counts.get('train')} / val {counts.get('val')} / test {counts.get('test')} "
    f"(buffer {counts.get('buffer')}) · {proto['steps']} steps × batch {proto['batch_size']} per run · "
    f"selection: {proto['selection']}."
)
if exp.get("git_commits"):  # written since 2026-12-01; earlier files do not say
    st.caption(
        "Code: " + ", ".join(f"`{c[:12]}`" for c in exp["git_commits"]) + " (the commit each run was trained with)."
    )
prov = exp.get("provenance")
if prov:  # CPU model, threads and library versions; files written before these were recorded do not say
    libs = ", ".join(f"{k} {'/'.join(v)}" for k, v in prov["libraries"].items() if k in ("torch", "numpy", "faiss"))
    st.caption(
        f"Machine: {'; '.join(prov['cpu_models'])} · threads per run: {'; '.join(prov['threads'])} · {libs}, "
        f"open_clip {'/'.join(prov['libraries'].get('open_clip', ['?']))}. Numbers reproduce exactly on the same "
        "CPU model and versions; on another CPU they can differ in the last digits and beyond."
    )
st.caption(
    f"Nearest training location to each test image (the floor of a top-1 gallery prediction): median "
    f"{exp['oracle_test']['median_m']:.0f} m. "
    f"Under a {split['buffer_m']:g} m buffer every prediction is at least that far off."
)

metrics = [m for m in es.METRICS if f"test_{m}" in table]
c1, c2 = st.columns([3, 1])
with c1:
    metric = url_widget(
        st.selectbox,
        "Metric",
        "exp_metric",
        "median_m",
        valid=lambda v: v in metrics,
        options=metrics,
        format_func=lambda m: vx.METRIC_LABELS.get(m, m),
    )
with c2:
    split_name = url_widget(
        st.radio,
        "Split",
        "exp_split",
        "test",
        valid=lambda v: v in ("test", "val"),
        options=("test", "val"),
        horizontal=True,
    )
by_config = table.set_index("config")
val_sigma = by_config.loc[es.VAL_SIGMA, "sigma_m_values"] if es.VAL_SIGMA in by_config.index else None
var_sigma = by_config.loc["swclip-var", "sigma_m_values"] if "swclip-var" in by_config.index else None
truth = suggest_sigma_m(world["range_m"]["min"], "gaussian") if world["range_m"]["min"] >= RANGE_MIN_M * 0.5 else None
try:
    st.plotly_chart(vx.sigma_figure(table, metric, split_name, val_sigma, var_sigma, truth), width="stretch")
except ValueError as err:
    st.info(f"No σ curve: {err}")
st.caption(
    "Band: ±1 standard deviation across seeds. Marks: the mean over seeds of each seed's validation-best σ and of "
    "each seed's variogram-suggested σ (suggest_sigma_m of the practical range of the CLIP run's image-embedding "
    "variogram, fitted on the training split), and the σ the same rule gives for the world's shortest true range."
)

st.subheader("Against CLIP on test: two-level paired bootstrap")
head = table[table["role"].str.startswith("headline")]
if not head.empty:
    h = head.iloc[0]
    st.markdown(
        f"**Pre-registered headline**: `{h['config']}` against `{h['vs']}`, test median error "
        f"**{h['d_median_m']:+.0f} m, 95 % interval {fmt_ci(h['d_median_m_lo'], h['d_median_m_hi'])}** over seeds and "
        f"held-out blocks ({h['n_paired']} seeds); "
        + ("the interval excludes 0." if separates(h) == "yes" else "the interval contains 0: no separation.")
        + " Every other row is exploratory: many comparisons, no correction for multiplicity."
    )
st.caption(
    f"B − its baseline (`vs`: one-hot CLIP; the long runs against CLIP trained as long), mean over seeds. The 95 % "
    f"interval resamples the seeds, then each city's held-out test blocks within each drawn seed ({BOOT:,} "
    "resamples, B and A on the same seeds and rows). The block-only interval fixes the seeds and resamples blocks "
    "alone; it is narrower because it ignores how much another set of seeds would move the numbers. Negative "
    "median differences and positive accuracy differences favour B."
)
st.dataframe(delta_rows(table), hide_index=True, width="stretch", column_config=DELTA_COLUMNS)

if not comparisons.empty and len(comparisons) > 1:
    st.subheader("SW-CLIP against its controls (exploratory)")
    st.caption(
        "Each side chosen per seed on validation with the same budget as SW-CLIP's σ sweep: CLIP tuned over "
        "temperature init and learning rate; label smoothing with SW-CLIP's off-diagonal mass at each σ, spread "
        "uniformly (no spatial structure); SW-CLIP's kernel on shuffled locations. The long rows: 4× the steps."
    )
    st.dataframe(
        pd.DataFrame(
            {
                "B": comparisons["b"],
                "A": comparisons["a"],
                "role": comparisons["role"],
                "seeds": comparisons["n_paired"],
                "B test median (m)": comparisons["b_test_median_m"].round(0),
                "A test median (m)": comparisons["a_test_median_m"].round(0),
                "Δ median (m)": comparisons["d_median_m"].round(0),
                "95 % CI (seeds + blocks)": [
                    fmt_ci(lo, hi) for lo, hi in zip(comparisons["d_median_m_lo"], comparisons["d_median_m_hi"])
                ],
                "block-only CI": [
                    fmt_ci(lo, hi)
                    for lo, hi in zip(comparisons["d_median_m_block_lo"], comparisons["d_median_m_block_hi"])
                ],
            }
        ),
        hide_index=True,
        width="stretch",
    )

st.subheader("Every config, mean ± sd across seeds")
show = pd.DataFrame(
    {
        "config": table["config"],
        "seeds": table["n_seeds"],
        "σ (m)": table["sigma_m"].round(0),
        **{
            f"{s} {vx.METRIC_LABELS.get(m, m)}": [
                f"{a:.3f} ± {b:.3f}" if m.startswith(("acc", "recall")) else f"{a:.0f} ± {b:.0f}"
                for a, b in zip(table[f"{s}_{m}"], table[f"{s}_{m}_sd"].fillna(0))
            ]
            for s in ("val", "test")
            for m in ("median_m", "acc@250m")
        },
    }
)
st.dataframe(show, hide_index=True, width="stretch")
st.caption(
    f"`{es.VAL_SIGMA}`, `{es.VAL_NC}` and the other `(val …)` rows are the configs chosen on validation, seed by "
    "seed; the `swclip-s*`, `swclip-exp-s*`, `smooth-s*`, `shuffled-s*` and `clip-t*` rows are the whole sweeps, "
    "reported on test for reference (choosing among them on test would be optimistic)."
)

st.subheader("Per city (test)")
city_names = es.held_out_cities(exp)
city = url_widget(st.selectbox, "City", "exp_city", city_names[0], valid=lambda v: v in city_names, options=city_names)
city_table, city_comparisons = load_city(str(path), path.stat().st_mtime, city)
st.caption(
    f"Every row again on {city}'s test rows only (σ and λ still chosen on the whole validation split), with the "
    "same intervals (the blocks resampled are that city's)."
)
st.dataframe(delta_rows(city_table), hide_index=True, width="stretch", column_config=DELTA_COLUMNS)
city_metric = url_widget(
    st.selectbox,
    "Per-city metric",
    "exp_city_metric",
    "median_m",
    valid=lambda v: v in ("median_m", "acc@250m", "acc@500m", "mean_m"),
    options=("median_m", "acc@250m", "acc@500m", "mean_m"),
    format_func=lambda m: vx.METRIC_LABELS[m],
)
per = es.per_city(exp, city_metric)
st.plotly_chart(vx.per_city_figure(per, vx.METRIC_LABELS[city_metric]), width="stretch")
