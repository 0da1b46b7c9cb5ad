"""Negatives: which negatives the semivariogram-weighted loss treats as false or hard, for a batch from one city.

The weights are ``swclip.method.semivariogram_loss.negative_weights``, the very function the loss
calls, on a seeded batch of the run's evaluation embeddings, with the γ(h) the run's loss used (its
manifest's ``loss_variogram``) or, when it saved none, one fitted here from the run's embeddings.
"""

import time

import numpy as np
import streamlit as st

from appkit import frame, loaders, urlstate
from swclip.geo import PLACE_TOLERANCE_M
from swclip.method.negatives import batch_negatives, run_variogram, share_by_distance, strongest_pairs
from swclip.method.semivariogram_loss import VARIANTS
from swclip.viz import negatives as figs
from swclip.viz.scale import fmt_m
from swclip.viz.spatial_bins import hilbert_order

view = frame.ensure_frame()
run = frame.require_run(view, "the negatives page")

st.title("Negatives")
emb_all = loaders.embeddings(view.runs_root, run.run_id, run.stamp)
if emb_all is None and frame.imported_lacks(
    run, "Negatives needs image embeddings, and none were imported (`swclip import --embeddings FILE.npy`)"
):
    st.stop()
city = frame.one_city(view, run, "Negatives are per city")
df = loaders.predictions(view.runs_root, run.run_id, run.stamp)
if emb_all is None:
    st.warning("This run has no embeddings.npy: evaluate it first (`python train/evaluate.py <run>`).")
    st.stop()
rows = loaders.city_rows(view.runs_root, run, city)
latlon_city = df.iloc[rows][["lat", "lon"]].to_numpy(np.float64)
emb_city = emb_all[rows]
manifest = run.manifest or {}
used = manifest.get("loss_variogram") or {}

c1, c2, c3, c4, c5 = st.columns([2, 2, 2, 2, 1])
with c1:
    variant = urlstate.url_widget(
        st.radio,
        "Variant",
        "variant",
        used.get("variant", "swclip"),
        valid=lambda v: v in VARIANTS,
        options=list(VARIANTS),
        horizontal=True,
    )
with c2:
    beta = urlstate.url_widget(
        st.slider,
        "β",
        "beta",
        float(used.get("beta", 1.0)),
        parse=float,
        valid=lambda v: isinstance(v, float) and 0.0 <= v <= 5.0,
        min_value=0.0,
        max_value=5.0,
        step=0.1,
    )
with c3:
    margin = urlstate.url_widget(
        st.slider,
        "Margin m",
        "margin",
        float(used.get("margin", 0.0)),
        parse=float,
        valid=lambda v: isinstance(v, float) and 0.0 <= v <= 0.5,
        min_value=0.0,
        max_value=0.5,
        step=0.01,
    )
with c4:
    batch = frame.batch_slider(len(latlon_city))
with c5:
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

if len(latlon_city) < 2:
    st.warning("This city has fewer than two samples; there is no batch to show.")
    st.stop()


@st.cache_data(show_spinner="Fitting γ(h) to the run's embeddings…", max_entries=32)
def variogram_for(runs_root: str, run_id: str, stamp: float, city: str, variant: str):
    """The γ(h) to show for this run and variant (the run's own, or fitted from this city's embeddings)."""
    r = loaders.open_run(runs_root, run_id)
    sel = loaders.city_rows(runs_root, view.run, city)
    pred = loaders.predictions(runs_root, run_id, stamp)
    loss_cfg = (r.manifest.get("loss") or {}) if isinstance(r.manifest.get("loss"), dict) else {}
    return run_variogram(
        r.manifest,
        np.asarray(r.embeddings(mmap=False), np.float32)[sel],
        pred.iloc[sel][["lat", "lon"]].to_numpy(np.float64),
        variant,
        range_kind=loss_cfg.get("range_kind", "practical"),
        max_lag_m=loss_cfg.get("variogram_max_lag_m")
        or loaders.run_scale(runs_root, run_id, stamp, city).lag_default_m,  # the view's lag rule
    )


variogram, source = variogram_for(view.runs_root, run.run_id, run.stamp, city, variant)
if variogram is None:
    st.warning(
        f"No weights to show: {source}. The loss would train as its base loss here "
        "(swclip: one-hot InfoNCE; chen2025: GeoCLIP's cross-entropy)."
    )
    st.stop()

t0 = time.perf_counter()
rng = np.random.default_rng(int(seed))
pick = rng.choice(len(latlon_city), size=min(int(batch), len(latlon_city)), replace=False)
pick = pick[hilbert_order(latlon_city[pick])]  # neighbours sit together in the matrix
neg = batch_negatives(emb_city[pick], latlon_city[pick], variogram, variant, float(beta), float(margin))
shares = share_by_distance(neg)
false_share, hard_share = neg.shares()
compute_s = time.perf_counter() - t0

label = "ρ" if variogram.split_kind == "rho" else f"{variogram.split_kind} range"
st.markdown(
    f"**{city}** · B = {len(pick)} · variant `{variant}` · β = {beta:g} · m = {margin:g} · γ: {variogram.fit.model}, "
    f"{label} **{fmt_m(variogram.split_m)}** ({source}). "
    f"False negatives **{100 * false_share:.1f} %**, hard negatives **{100 * hard_share:.1f} %** of the "
    f"{neg.n_negatives:,} negatives (pairs of different places). Computed in {compute_s * 1000:.0f} ms."
)
st.caption(
    f"Same-place pairs are positives, never negatives: {neg.n_same_place:,} pair(s) in this batch are photos of "
    f"one place (at most {fmt_m(PLACE_TOLERANCE_M)} apart, e.g. the headings of one panorama); the loss gives them "
    "weight 1 and they are left out of the false and hard counts."
)
if variant == "chen2025":
    st.caption(
        "chen2025 re-weights only the hard (red) pairs: near, and less alike than γ(h) expects; their logits are "
        "multiplied by exp(β p). The false (blue) pairs, near and more alike, keep weight 1 in this variant."
    )
else:
    st.caption(
        "swclip: false (blue) negatives, near and more alike than γ(h) expects, get weight exp(−β(r − m)) < 1; "
        "hard (red) negatives, far and alike, exp(β(r − m)) > 1."
    )

left, right = st.columns(2)
with left:
    st.plotly_chart(figs.negatives_heatmap(neg), width="stretch", key="weights")
with right:
    st.plotly_chart(figs.gamma_figure(neg, variogram), width="stretch", key="gamma")
st.plotly_chart(figs.share_figure(shares), width="stretch", key="shares")

img_root = loaders.image_root(view.runs_root, run.run_id, run.stamp)
paths = df.iloc[rows]["image"].astype(str).to_numpy()[pick] if "image" in df else None
for kind, title in (("false", "Strongest false negatives (near and alike)"), ("hard", "Strongest hard negatives")):
    st.subheader(title)
    top = strongest_pairs(neg, kind, k=4)
    if top.empty:
        st.caption("None in this batch.")
        continue
    cols = st.columns(len(top))
    for col, (_, p) in zip(cols, top.iterrows()):
        with col:
            for idx in (int(p["i"]), int(p["j"])):
                thumb = (
                    loaders.thumbnail(view.runs_root, img_root, paths[idx])
                    if (img_root and paths is not None)
                    else None
                )
                if thumb is not None:
                    st.image(thumb, width=96)
            st.caption(f"{fmt_m(p['h_m'])} apart · c = {p['cos_dist']:.3f} · γ(h) = {p['gamma']:.3f}")
if not img_root:
    st.info(f"{loaders.NO_IMAGES}: the pairs are listed without thumbnails.")
