"""Soft labels: what SW-CLIP's targets look like for a batch from one city, at the sidebar's σ.

The matrix is ``swclip.method.soft_labels.soft_targets``, the very function the loss
calls. Rows and columns follow a Hilbert curve through the batch, so
geographic neighbours sit together and the soft mass shows as blocks.
"""

import time

import numpy as np
import streamlit as st

from appkit import frame, loaders, urlstate
from swclip.geo import place_ids
from swclip.kernels import KERNELS
from swclip.method.soft_labels import effective_positives, soft_targets
from swclip.viz import figures, maps
from swclip.viz.scale import fmt_m
from swclip.viz.spatial_bins import hilbert_order

view = frame.ensure_frame()
run = frame.require_run(view, "the soft-label page")

st.title("Soft labels")
df_all = loaders.predictions(view.runs_root, run.run_id, run.stamp)
cities = sorted(df_all["city"].astype(str).unique()) if "city" in df_all else []
pooled = view.city_or_none() is None and frame.few_per_city(view, run)  # a world sample: every city in one batch
city = None if pooled else view.city_or_none() or (cities[0] if cities else None)
if pooled:
    st.caption("A few photos per city: the batch is drawn from every city (pick one in the sidebar to see it alone).")
elif view.city_or_none() is None and city:
    st.caption(f"Soft labels are per city; showing **{city}** (pick one in the sidebar).")
samples = loaders.sample_table(view.runs_root, run.run_id, run.stamp)
if samples is not None and "city" in samples:
    source = "the run's sample table"  # what training batches are drawn from
    rows_all = samples if city is None else samples.loc[samples["city"].astype(str) == city]
else:
    source = "the evaluation samples (the sample table is not under the runs directory)"
    rows_all = loaders.city_predictions(view.runs_root, run.run_id, run.stamp, city)
latlon_all = rows_all[["lat", "lon"]].to_numpy(np.float64)
place_all = (
    rows_all["place_id"].astype(str).to_numpy() if "place_id" in rows_all else place_ids(latlon_all)
)  # (N,) photos of one place share it

if len(latlon_all) < 2:
    st.warning("This city has fewer than two samples; there is no batch to show.")
    st.stop()

c1, c2, c3 = st.columns([2, 2, 1])
with c1:
    kernel = urlstate.url_widget(
        st.radio, "Kernel", "kernel", "gaussian", valid=lambda v: v in KERNELS, options=list(KERNELS), horizontal=True
    )
with c2:
    batch = frame.batch_slider(len(latlon_all))
with c3:
    seed = urlstate.url_widget(
        st.number_input,
        "Seed",
        "seed",
        0,
        parse=int,
        valid=lambda v: isinstance(v, int) and v >= 0,
        min_value=0,
        step=1,
    )

t0 = time.perf_counter()
rng = np.random.default_rng(int(seed))
pick = rng.choice(len(latlon_all), size=min(int(batch), len(latlon_all)), replace=False)
latlon = latlon_all[pick]
order = hilbert_order(latlon)
latlon = latlon[order]  # (B, 2) in space-filling order
place = place_all[pick][order]  # (B,)
_, place_code = np.unique(place, return_inverse=True)
per_place = np.bincount(place_code)[place_code]  # (B,) photos of each row's place in the batch
sigma_m = view.sigma_m
q = soft_targets(latlon, sigma_m, kernel)  # (B, B), rows sum to 1
onehot = soft_targets(latlon, 0.0, "onehot")
neff = effective_positives(q)  # (B,)
compute_s = time.perf_counter() - t0

n_places = int(place_code.max()) + 1
st.markdown(
    f"**{city or 'all cities'}** · B = {len(latlon)} photos of {n_places} places drawn from {source} · "
    f"σ = {fmt_m(sigma_m)} · "
    f"kernel `{kernel}` · median effective positives per row **{np.median(neff):.2f}** "
    f"(one-hot: the photos of the row's own place, **{np.median(per_place):.0f}** per place here; "
    f"1 only when every place has one photo). Targets computed in {compute_s * 1000:.0f} ms."
)
st.caption(
    "Positives per place: photos of one place (the same coordinates, or the same `place_id`) are positives of "
    "each other under every kernel, one-hot included, so several photos per place show as square blocks."
)

left, right = st.columns(2)
with left:
    st.plotly_chart(
        figures.target_heatmap(q, f"SW-CLIP targets Q (σ = {fmt_m(sigma_m)}, {kernel})"), width="stretch", key="q"
    )
with right:
    st.plotly_chart(
        figures.target_heatmap(onehot, "One-hot CLIP targets (σ → 0)", zmax=1.0), width="stretch", key="onehot"
    )

left, right = st.columns(2)
with left:
    rgb = maps.ramp(np.arange(len(latlon)), 0, len(latlon) - 1)
    pts = maps.points_frame(latlon, rgb, row=np.arange(len(latlon)), neff=np.round(neff, 2))
    st.markdown(
        "**The batch on the map**, coloured by its position along the space-filling order (the matrix's row order)."
    )
    deck = frame.city_deck(
        view,
        run,
        city,
        [maps.scatter_layer(pts, radius_m=14)],
        latlon_all,
        tooltip={"text": "row {row}\neffective positives {neff}"},
    )
    st.pydeck_chart(deck, height=430, key="batch_map")
with right:
    st.plotly_chart(figures.kernel_curve(sigma_m, kernel), width="stretch", key="kernel")
    st.plotly_chart(figures.effective_positives_figure(neff, len(latlon)), width="stretch", key="neff")
