"""Runs: what is in the runs directory, with headline metrics; the landing page."""

import pandas as pd
import streamlit as st

from appkit import frame, loaders
from swclip import catalog
from swclip.viz import figures

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

rows = []
for run in view.available:
    overall = catalog.overall_metrics(catalog.read_metrics(run))
    rows.append(
        {
            "run": run.run_id,
            "kind": run.kind,
            "model / source": f"{run.manifest.get('model')} · {run.source}" if run.kind == "imported" else "",
            "demo": run.is_demo,
            "σ (m)": run.sigma_m,
            "median error (m)": overall.get("median_m"),
            "mean error (m)": overall.get("mean_m"),
            "acc@100m": overall.get("acc@100m"),
            "acc@1km": overall.get("acc@1km"),
            "samples": overall.get("n_rows", overall.get("n")),
            "coverage": overall.get("coverage", 1.0),
        }
    )
st.dataframe(
    pd.DataFrame(rows),
    hide_index=True,
    width="stretch",
    column_config={
        "median error (m)": st.column_config.NumberColumn(format="%.0f"),
        "mean error (m)": st.column_config.NumberColumn(format="%.0f"),
        "acc@100m": st.column_config.NumberColumn(format="%.2f"),
        "acc@1km": st.column_config.NumberColumn(format="%.2f"),
    },
)

run = view.run
log = loaders.train_log(view.runs_root, run.run_id, run.stamp)
if log is not None and len(log):
    st.plotly_chart(figures.train_curves(log), width="stretch")
