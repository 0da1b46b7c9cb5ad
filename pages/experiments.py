"""Experiments: does SW-CLIP help on the demo world, and by how much? Seeds, validation-chosen σ, block bootstrap."""

from pathlib import Path

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
    "The evidence behind the README's headline: a grid of configs × seeds trained by `swclip experiment`, "
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


@st.cache_data(show_spinner="Reading the experiment…", max_entries=8)
def load(p: str, mtime: float):
    exp = rx.load_experiment(p)
    return exp, es.summary_table(exp, n_boot=1000, seed=0), es.per_city(exp)


try:
    exp, table, cities = load(str(path), path.stat().st_mtime)
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

st.subheader("Against CLIP on test: paired block bootstrap")
st.caption(
    "B − CLIP, 95 % interval from 1,000 resamples of the held-out blocks, paired seed by seed (mean over seeds); "
    "negative median differences and positive accuracy differences favour B. An interval that contains 0 does not "
    "separate B from CLIP."
)
rows = []
for _, r in table.iterrows():
    if r["config"] == "clip":
        continue
    rows.append(
        {
            "config": r["config"],
            "seeds": r["n_paired"],
            "σ (m)": r["sigma_m"],
            "test median (m)": r["test_median_m"],
            "Δ median (m)": r["d_median_m"],
            "Δ median 95 % CI": f"[{r['d_median_m_lo']:+.0f}, {r['d_median_m_hi']:+.0f}]",
            "Δ acc@250 m": r["d_acc@250m"],
            "Δ acc@250 m 95 % CI": f"[{r['d_acc@250m_lo']:+.3f}, {r['d_acc@250m_hi']:+.3f}]",
            "separates from CLIP": "yes" if (r["d_median_m_hi"] < 0 or r["d_median_m_lo"] > 0) else "no (overlaps 0)",
        }
    )
st.dataframe(
    pd.DataFrame(rows),
    hide_index=True,
    width="stretch",
    column_config={
        "σ (m)": st.column_config.NumberColumn(format="%.0f"),
        "test median (m)": st.column_config.NumberColumn(format="%.0f"),
        "Δ median (m)": st.column_config.NumberColumn(format="%+.0f"),
        "Δ acc@250 m": st.column_config.NumberColumn(format="%+.3f"),
    },
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
    f"`{es.VAL_SIGMA}` and `{es.VAL_NC}` are the configs chosen on validation, seed by seed; the `swclip-s*` rows "
    "are the whole sweep, reported on test for reference (choosing among them on test would be optimistic)."
)

st.subheader("Per city (test)")
city_metric = url_widget(
    st.selectbox,
    "Per-city metric",
    "exp_city_metric",
    "median_m",
    valid=lambda v: v in ("median_m", "acc@250m", "acc@500m", "mean_m"),
    options=("median_m", "acc@250m", "acc@500m", "mean_m"),
    format_func=lambda m: vx.METRIC_LABELS[m],
)
per = es.per_city(exp, city_metric) if city_metric != "median_m" else cities
st.plotly_chart(vx.per_city_figure(per, vx.METRIC_LABELS[city_metric]), width="stretch")
