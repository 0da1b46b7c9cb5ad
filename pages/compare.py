"""Compare: two runs on the same evaluation samples, side by side."""

import numpy as np
import pandas as pd
import streamlit as st

from appkit import frame, loaders, urlstate
from swclip.analysis.compare import (
    PairedBootstrap,
    PlacePairedBootstrap,
    higher_is_better,
    manifest_diff,
    paired_errors,
    statistics_at,
    verdicts,
)
from swclip.viz import figures, maps
from swclip.viz.scale import POINTS_MAX, fmt_m
from swclip.viz.spatial_bins import h3_bins

view = frame.ensure_frame()
run = frame.require_run(view, "the comparison")
st.title("Compare two runs")
if len(view.available) < 2:
    st.info("Only one run is available; a comparison needs two.")
    st.stop()

by_id = {r.run_id: r for r in view.available}
ids = list(by_id)
default_a = view.selected[0].run_id
default_b = view.selected[1].run_id if len(view.selected) > 1 else next(i for i in ids if i != default_a)


@st.cache_data(show_spinner="Pairing the runs' samples…", max_entries=16)
def paired(runs_root, a, a_stamp, b, b_stamp, city):
    """The two runs' shared samples (one city's, or all), paired by id; a str when they cannot be paired."""
    try:
        joined = paired_errors(loaders.predictions(runs_root, a, a_stamp), loaders.predictions(runs_root, b, b_stamp))
    except ValueError as e:
        return str(e)
    if city is not None and "city" in joined:
        joined = joined[joined["city"].astype(str) == city].reset_index(drop=True)
    return joined


c1, c2, c3 = st.columns([2, 2, 1])
with c1:
    a_id = urlstate.url_widget(
        st.selectbox,
        "Run A (reference)",
        "a",
        default_a,
        valid=lambda v: v in by_id,
        options=ids,
        format_func=lambda i: by_id[i].label,
    )
with c2:
    b_id = urlstate.url_widget(
        st.selectbox,
        "Run B",
        "b",
        default_b,
        valid=lambda v: v in by_id,
        options=ids,
        format_func=lambda i: by_id[i].label,
    )
ra, rb = by_id[a_id], by_id[b_id]
city = view.city_or_none()
joined = (
    paired(view.runs_root, ra.run_id, ra.stamp, rb.run_id, rb.stamp, city)
    if a_id != b_id
    else "pick two different runs"
)
with c3:
    # 1,000 resamples of 210,000 pairs take about 1.3 s on 2 shared cores (5,000: 5 s);
    # past 50,000 pairs the intervals are narrow anyway
    n_default = 1000 if isinstance(joined, str) or len(joined) <= 50_000 else 200
    n_boot = urlstate.url_widget(
        st.select_slider,
        "Bootstrap resamples",
        "boot",
        n_default,
        parse=int,
        valid=lambda v: v in (200, 500, 1000, 2000, 5000),
        options=(200, 500, 1000, 2000, 5000),
    )
if a_id == b_id:
    st.warning("Pick two different runs.")
    st.stop()
if isinstance(joined, str):
    st.error(f"Cannot compare: {joined}")
    st.stop()
scope = city or "all cities"
sc = loaders.run_scale(view.runs_root, ra.run_id, ra.stamp, city)
if len(joined) < 2:
    st.warning("Fewer than two shared samples here.")
    st.stop()


@st.cache_resource(show_spinner=False, max_entries=16)
def bootstrap(runs_root, a, a_stamp, b, b_stamp, city, thresholds_m):
    """The pair's bootstrap (seed 0), keyed by run identity: it keeps its resamples, so a larger count
    only draws the new ones (hashing 210,000 errors per rerun would cost more than the key). Places
    (PlacePairedBootstrap) when some place has several photos, else samples (PairedBootstrap)."""
    j = paired(runs_root, a, a_stamp, b, b_stamp, city)
    stats = statistics_at(thresholds_m)
    ea, eb = j["error_a_m"].to_numpy(), j["error_b_m"].to_numpy()
    if "place_id" in j and 2 <= j["place_id"].nunique() < len(j):
        return PlacePairedBootstrap(ea, eb, j["place_id"].to_numpy(), stats, seed=0)
    return PairedBootstrap(ea, eb, stats, seed=0)


with st.spinner("Bootstrapping…"):
    boot = bootstrap(view.runs_root, ra.run_id, ra.stamp, rb.run_id, rb.stamp, city, sc.headline_thresholds_m)
    table = boot.table(int(n_boot))
by_place = isinstance(boot, PlacePairedBootstrap)
n_places = boot.n_places if by_place else int(joined["place_id"].nunique()) if "place_id" in joined else len(joined)
st.markdown(
    f"**{len(joined):,}** shared evaluation samples ({scope}) at **{n_places:,}** places. "
    f"A = `{a_id}`, B = `{b_id}`; differences are B − A, "
    f"95 % paired-bootstrap intervals ({n_boot} resamples of "
    + ("**places**, each with all its photos: photos of one place are not independent" if by_place else "samples")
    + ", seed 0)."
)


def change_delta(j):
    """log2(B / A) of each pair's error (errors below 1 m count as 1 m)."""
    return np.log2(np.maximum(j["error_b_m"].to_numpy(), 1.0) / np.maximum(j["error_a_m"].to_numpy(), 1.0))


@st.cache_data(show_spinner="Binning the change into H3 cells…", max_entries=16)
def change_cells(runs_root, a, a_stamp, b, b_stamp, city, edge_m):
    """H3 cells of the median log2(B / A), keyed by run identity: 210,000 pairs take a second to bin."""
    j = paired(runs_root, a, a_stamp, b, b_stamp, city)
    return h3_bins(j[["lat", "lon"]].to_numpy(np.float64), change_delta(j), edge_m)


def fmt(v, stat):
    return f"{v:.3f}" if higher_is_better(stat) else fmt_m(v) if v >= 0 else "−" + fmt_m(-v)


rows = []
for r, v in zip(table.itertuples(), verdicts(table)):
    rows.append(
        {
            "statistic": r.statistic,
            "A": f"{fmt(r.a, r.statistic)} [{fmt(r.a_lo, r.statistic)}, {fmt(r.a_hi, r.statistic)}]",
            "B": f"{fmt(r.b, r.statistic)} [{fmt(r.b_lo, r.statistic)}, {fmt(r.b_hi, r.statistic)}]",
            "B − A": f"{fmt(r.diff, r.statistic)} [{fmt(r.diff_lo, r.statistic)}, {fmt(r.diff_hi, r.statistic)}]",
            "verdict": v,
        }
    )
st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")

left, right = st.columns(2)
with left:
    st.plotly_chart(
        figures.error_cdf(
            {f"A: {a_id}": joined["error_a_m"], f"B: {b_id}": joined["error_b_m"]}, thresholds_m=sc.thresholds_m
        ),
        width="stretch",
        key="cdf",
    )
    curves = {
        f"A: {a_id}": loaders.rva(view.runs_root, ra.run_id, ra.stamp, city),
        f"B: {b_id}": loaders.rva(view.runs_root, rb.run_id, rb.stamp, city),
    }
    curves = {k: v for k, v in curves.items() if v is not None}
    if curves:
        st.plotly_chart(figures.rva_figure(curves, title=f"Recall vs Area, {scope}"), width="stretch", key="rva")
        st.caption(
            "Share of samples whose true spot lies inside the knn-kde density's highest-density region "
            "of at most that area "
            "(" + ", ".join(f"{k}: {v['n_queries']:,} queries, {v['source']}" for k, v in curves.items()) + ")."
        )
with right:
    delta = change_delta(joined)
    latlon = joined[["lat", "lon"]].to_numpy(np.float64)
    if len(joined) <= POINTS_MAX:
        pts = maps.points_frame(
            latlon,
            maps.diverging(delta, 3.0),
            id=joined["id"],
            a=joined["error_a_m"].map(fmt_m),
            b=joined["error_b_m"].map(fmt_m),
        )
        layer = maps.scatter_layer(pts, radius_m=16, alpha=240)
        tooltip = {"text": "{id}: A {a} → B {b}"}
    else:
        bins = change_cells(view.runs_root, ra.run_id, ra.stamp, rb.run_id, rb.stamp, city, sc.hex_default_m)
        layer = maps.hex_layer(bins, -3.0, 3.0, log=False, alpha=220, colours=maps.diverging(bins["value"], 3.0))
        tooltip = {"text": "{id} log2(B/A) {value}"}
    st.markdown(
        f"**Where the error changed** in {scope}: blue, B is better; red, B is worse (colour saturates at 8×)"
        + (
            "."
            if len(joined) <= POINTS_MAX
            else f"; more than {POINTS_MAX:,} samples, so H3 cells of the median change."
        )
    )
    st.pydeck_chart(frame.city_deck(view, ra, city, [layer], latlon, tooltip=tooltip), height=430, key="change_map")
    st.caption(
        f"B better on {int((delta < 0).sum()):,} samples, worse on {int((delta > 0).sum()):,}, "
        f"equal on {int((delta == 0).sum()):,}."
    )

st.subheader("Manifest diff")
diff = manifest_diff(ra.manifest, rb.manifest)
if diff.empty:
    st.write("The manifests agree (apart from ids, times and weight hashes).")
else:
    st.dataframe(diff.rename(columns={"a": f"A: {a_id}", "b": f"B: {b_id}"}), hide_index=True, width="stretch")
