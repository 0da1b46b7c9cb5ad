"""Error map: where a run's evaluation predictions go wrong, per city."""

import numpy as np
import pandas as pd
import streamlit as st

from appkit import frame, loaders, urlstate
from swclip.analysis.metrics import THRESHOLDS_M, summarize, threshold_label
from swclip.viz import figures, maps
from swclip.viz.spatial_bins import hex_bins

view = frame.ensure_frame()
run = frame.require_run(view, "the error map")
st.title("Error map")

df_all = loaders.predictions(view.runs_root, run.run_id, run.stamp)
city = frame.one_city(view, run, "The map shows one city at a time, the charts below every city")
df = loaders.city_predictions(view.runs_root, run.run_id, run.stamp, city)
err = df["error_m"].to_numpy(np.float64)

def fmt_m(m: float) -> str:
    return f"{m / 1000:g} km" if m >= 1000 else f"{m:g} m"


ERROR_STOPS_M = (0, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10_000, 100_000, 1_000_000, 20_000_000)
c1, c2, c3 = st.columns([3, 2, 2])
with c1:
    lo, hi = urlstate.url_widget(
        st.select_slider, "Show errors between (m)", "err", (ERROR_STOPS_M[0], ERROR_STOPS_M[-1]),
        parse=lambda s: tuple(int(x) for x in s.split("-")), fmt=lambda v: f"{v[0]}-{v[1]}",
        valid=lambda v: isinstance(v, (tuple, list)) and len(v) == 2 and all(x in ERROR_STOPS_M for x in v) and v[0] < v[1],
        options=ERROR_STOPS_M, format_func=fmt_m,
    )
with c2:
    worst_n = urlstate.url_widget(st.slider, "Lines for the worst N", "worst", 20, parse=int, valid=lambda v: isinstance(v, int) and 0 <= v <= 200, min_value=0, max_value=200, step=5)
with c3:
    hex_r = urlstate.url_widget(st.select_slider, "Hexagons of median error, radius (m)", "hex", 150, parse=int, valid=lambda v: v in (0, 50, 100, 150, 250, 500, 1000), options=(0, 50, 100, 150, 250, 500, 1000), format_func=lambda r: "off" if r == 0 else f"{r} m")

keep = (err >= lo) & (err <= hi)
shown = df[keep].reset_index(drop=True)
st.markdown(f"**{city}**: {int(keep.sum())} of {len(df)} evaluation samples with error between {fmt_m(lo)} and {fmt_m(hi)} · median error {np.median(err):.0f} m")

latlon = shown[["lat", "lon"]].to_numpy(np.float64)
vmin, vmax = max(float(np.percentile(err, 2)), 1.0), max(float(np.percentile(err, 98)), 10.0)
layers = []
if hex_r and len(shown):
    bins = hex_bins(latlon, shown["error_m"].to_numpy(), float(hex_r))
    layers.append(maps.hex_layer(bins, vmin, vmax, log=True, alpha=110))
pts = maps.points_frame(latlon, maps.ramp(shown["error_m"], vmin, vmax, log=True), error_m=shown["error_m"].round(0), id=shown["id"].astype(str))
layers.append(maps.scatter_layer(pts, radius_m=10, alpha=230))
if worst_n and len(shown):
    worst = shown.nlargest(int(worst_n), "error_m")
    layers.append(maps.line_layer(worst[["lat", "lon"]], worst[["pred_lat", "pred_lon"]], id=worst["id"].astype(str), error_m=worst["error_m"].round(0)))
    layers.append(maps.scatter_layer(maps.points_frame(worst[["pred_lat", "pred_lon"]], np.tile([220, 40, 40], (len(worst), 1))), radius_m=8, pickable=False))
frame_latlon = df[["lat", "lon"]].to_numpy(np.float64)
deck = frame.city_deck(view, run, city, layers, frame_latlon, tooltip={"html": "<b>{id}</b><br/>error {error_m} m"}, width_px=900, height_px=520)
st.pydeck_chart(deck, height=520, key="error_map")
st.caption(
    f"Dots: evaluation samples at their true spot, coloured by error on a log scale (viridis, dark = {vmin:.0f} m, yellow = {vmax:.0f} m). "
    "Red lines run from the truth to the prediction for the worst samples. Hexagons: median error of the samples inside. "
    "Pan and zoom do not rerun the page."
)

st.subheader("Distribution and accuracy")
groups = {c: g["error_m"].to_numpy() for c, g in df_all.groupby("city")} if view.city_or_none() is None else {city: err, "all cities": df_all["error_m"].to_numpy()}
left, right = st.columns(2)
with left:
    st.plotly_chart(figures.error_histogram(groups), width="stretch", key="hist")
with right:
    st.plotly_chart(figures.error_cdf(groups), width="stretch", key="cdf")

summary = summarize(df_all["error_m"].to_numpy(), df_all["city"].astype(str).to_numpy())
rows = [{"city": "all cities", **summary}] + [{"city": c, **v} for c, v in summary.get("per_city", {}).items()]
table = pd.DataFrame(rows)
acc_cols = [threshold_label(t) for t in THRESHOLDS_M]
table = table[["city", "n", "median_m", "mean_m", "p90_m", *acc_cols]]
st.dataframe(
    table, hide_index=True, width="stretch",
    column_config={c: st.column_config.NumberColumn(format="%.0f") for c in ("median_m", "mean_m", "p90_m")}
    | {c: st.column_config.ProgressColumn(c, min_value=0.0, max_value=1.0, format="%.2f") for c in acc_cols},
)
