"""Compare: two runs on the same evaluation samples, side by side."""

import numpy as np
import pandas as pd
import streamlit as st

from appkit import frame, loaders, urlstate
from swclip.analysis.compare import higher_is_better, manifest_diff, paired_bootstrap, paired_errors, verdicts
from swclip.viz import figures, maps

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
c1, c2, c3 = st.columns([2, 2, 1])
with c1:
    a_id = urlstate.url_widget(st.selectbox, "Run A (reference)", "a", default_a, valid=lambda v: v in by_id, options=ids, format_func=lambda i: by_id[i].label)
with c2:
    b_id = urlstate.url_widget(st.selectbox, "Run B", "b", default_b, valid=lambda v: v in by_id, options=ids, format_func=lambda i: by_id[i].label)
with c3:
    n_boot = urlstate.url_widget(st.select_slider, "Bootstrap resamples", "boot", 1000, parse=int, valid=lambda v: v in (200, 500, 1000, 2000, 5000), options=(200, 500, 1000, 2000, 5000))
ra, rb = by_id[a_id], by_id[b_id]
if a_id == b_id:
    st.warning("Pick two different runs.")
    st.stop()

pa = loaders.predictions(view.runs_root, ra.run_id, ra.stamp)
pb = loaders.predictions(view.runs_root, rb.run_id, rb.stamp)
try:
    joined = paired_errors(pa, pb)
except ValueError as e:
    st.error(f"Cannot compare: {e}")
    st.stop()
city = view.city_or_none()
if city is not None and "city" in joined:
    joined = joined[joined["city"].astype(str) == city].reset_index(drop=True)
scope = city or "all cities"
st.markdown(f"**{len(joined)}** shared evaluation samples ({scope}). A = `{a_id}`, B = `{b_id}`; differences are B − A, 95 % paired-bootstrap intervals ({n_boot} resamples, seed 0).")
if len(joined) < 2:
    st.warning("Fewer than two shared samples here.")
    st.stop()


@st.cache_data(show_spinner="Bootstrapping…", max_entries=32)
def boot(ea, eb, n):
    return paired_bootstrap(ea, eb, n_boot=n, seed=0)


table = boot(joined["error_a_m"].to_numpy(), joined["error_b_m"].to_numpy(), int(n_boot))


def fmt(v, stat):
    return f"{v:.3f}" if higher_is_better(stat) else f"{v:.0f}"


rows = []
for r, v in zip(table.itertuples(), verdicts(table)):
    rows.append({
        "statistic": r.statistic,
        "A": f"{fmt(r.a, r.statistic)} [{fmt(r.a_lo, r.statistic)}, {fmt(r.a_hi, r.statistic)}]",
        "B": f"{fmt(r.b, r.statistic)} [{fmt(r.b_lo, r.statistic)}, {fmt(r.b_hi, r.statistic)}]",
        "B − A": f"{fmt(r.diff, r.statistic)} [{fmt(r.diff_lo, r.statistic)}, {fmt(r.diff_hi, r.statistic)}]",
        "verdict": v,
    })
st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")

left, right = st.columns(2)
with left:
    st.plotly_chart(figures.error_cdf({f"A: {a_id}": joined["error_a_m"], f"B: {b_id}": joined["error_b_m"]}), width="stretch", key="cdf")
with right:
    map_city = city or str(joined["city"].iloc[0]) if "city" in joined else None
    sub = joined if city or "city" not in joined else joined[joined["city"].astype(str) == map_city]
    delta = np.log2(np.maximum(sub["error_b_m"].to_numpy(), 1.0) / np.maximum(sub["error_a_m"].to_numpy(), 1.0))
    pts = maps.points_frame(sub[["lat", "lon"]], maps.diverging(delta, 3.0), id=sub["id"], a_m=sub["error_a_m"].round(0), b_m=sub["error_b_m"].round(0))
    st.markdown(f"**Where the error changed** in {map_city}: blue, B is better; red, B is worse (colour saturates at 8×).")
    st.pydeck_chart(frame.city_deck(view, ra, map_city, [maps.scatter_layer(pts, radius_m=16, alpha=240)], sub[["lat", "lon"]].to_numpy(), tooltip={"text": "{id}: A {a_m} m → B {b_m} m"}), height=430, key="change_map")
    st.caption(f"B better on {int((delta < 0).sum())} samples, worse on {int((delta > 0).sum())}, equal on {int((delta == 0).sum())}.")

st.subheader("Manifest diff")
diff = manifest_diff(ra.manifest, rb.manifest)
if diff.empty:
    st.write("The manifests agree (apart from ids, times and weight hashes).")
else:
    st.dataframe(diff.rename(columns={"a": f"A: {a_id}", "b": f"B: {b_id}"}), hide_index=True, width="stretch")
