"""Runs: what is in the runs directory, with headline metrics; the landing page."""

import pandas as pd
import streamlit as st

from appkit import frame, loaders
from swclip import catalog
from swclip.analysis.metrics import leaderboard, threshold_label
from swclip.viz import figures
from swclip.viz.scale import fmt_m

view = frame.ensure_frame()
frame.require_run(view, "the explorer")

st.title("Runs")
st.caption(
    f"Runs directory: `{view.runs_root}` · {len(view.available)} run(s). "
    "Pick runs, city and σ in the sidebar; the URL keeps the view."
)
st.caption(
    "Single runs are one seed each: for whether SW-CLIP's gains survive other seeds and other held-out places "
    "(σ chosen on a validation split, block bootstrap against CLIP), see the **Experiments** page."
)

# The columns follow the main run's scale (the sidebar): metres and acc@100 m … in a city, km beyond.
sc = view.scale
acc_keys = [threshold_label(t) for t in sc.headline_thresholds_m]
u = sc.unit
rows = []
for run in view.available:
    overall = catalog.overall_metrics(catalog.read_metrics(run))
    per_place = catalog.read_metrics(run).get("per_place") or {}
    length = {k: (None if overall.get(k) is None else sc.in_unit(float(overall[k]))) for k in ("median_m", "mean_m")}
    rows.append(
        {
            "run": run.run_id,
            "kind": run.kind,
            "model / source": f"{run.manifest.get('model')} · {run.source}" if run.kind == "imported" else "",
            "demo": run.is_demo,
            "σ": fmt_m(run.sigma_m) if run.sigma_m else "one-hot",
            f"median error ({u})": length["median_m"],
            f"mean error ({u})": length["mean_m"],
            **{k: overall.get(k) for k in acc_keys},
            "samples": overall.get("n_rows", overall.get("n")),
            "coverage": overall.get("coverage", 1.0),
            "places": per_place.get("n"),
        }
    )
st.dataframe(
    pd.DataFrame(rows),
    hide_index=True,
    width="stretch",
    column_config={
        f"median error ({u})": st.column_config.NumberColumn(format=sc.number_format),
        f"mean error ({u})": st.column_config.NumberColumn(format=sc.number_format),
    }
    | {k: st.column_config.NumberColumn(format="%.2f") for k in acc_keys},
)
st.caption(
    f"{sc.describe()}. Accuracy columns are the share of samples within each distance; "
    "'places' counts distinct places (photos of one place share a place id) where evaluation recorded them."
)

# The selected runs on the photos they all hold: a fair table for models that abstain or cover other photos.
scored = {r.run_id: loaders.id_errors(view.runs_root, r.run_id, r.stamp) for r in view.selected}
scored = {name: e for name, e in scored.items() if e is not None}
board, n_shared = leaderboard(scored) if len(scored) >= 2 else ({}, 0)
if n_shared:
    st.subheader(f"Leaderboard on the {n_shared:,} photos every selected run holds")
    kinds = {r.run_id: r.kind for r in view.selected}
    table = pd.DataFrame(
        [
            {
                "run": name,
                "kind": kinds[name],
                "coverage": s["coverage"],
                "GeoScore": s["geoscore"],
                f"median error ({u})": None if s["n"] == 0 else sc.in_unit(s["median_m"]),
                **{k: s.get(k) for k in acc_keys},
            }
            for name, s in board.items()
        ]
    ).sort_values("GeoScore", ascending=False)
    st.dataframe(
        table,
        hide_index=True,
        width="stretch",
        column_config={f"median error ({u})": st.column_config.NumberColumn(format=sc.number_format)}
        | {k: st.column_config.NumberColumn(format="%.2f") for k in acc_keys},
    )
    st.caption(
        "Every run scored on the same photos (the ids all selected runs hold), best GeoScore first. A model that "
        "gave no prediction for a photo loses it: coverage is the answered share, GeoScore scores it 0, and the "
        "median and accuracies are over the answered photos. Compare tests a pair with a paired bootstrap."
    )
elif len(scored) >= 2:
    st.caption("The selected runs share no photo id: no leaderboard (pick runs evaluated on the same photos).")

run = view.run
log = loaders.train_log(view.runs_root, run.run_id, run.stamp)
if log is not None and len(log):
    st.plotly_chart(figures.train_curves(log), width="stretch")
