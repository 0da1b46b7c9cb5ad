"""Neighbourhoods: does a photo's embedding neighbourhood match its geographic one, and how does σ change it?"""

import numpy as np
import pandas as pd
import streamlit as st
from threadpoolctl import threadpool_limits

from appkit import frame, loaders, urlstate
from swclip.analysis.compare import shares_any_id
from swclip.analysis.spatial_stats import neighbourhood_overlap, pca_2d
from swclip.geo import haversine_m
from swclip.viz import figures, maps
from swclip.viz.scale import fmt_m

view = frame.ensure_frame()
run0 = frame.require_run(view, "the neighbourhood page")
st.title("Neighbourhoods")
if loaders.embeddings(view.runs_root, run0.run_id, run0.stamp) is None and frame.imported_lacks(
    run0, "Neighbourhoods needs image embeddings, and none were imported (`swclip import --embeddings FILE.npy`)"
):
    st.stop()

df0 = loaders.predictions(view.runs_root, run0.run_id, run0.stamp)
city = view.city_or_none()  # None: every city, through a seeded sample of NB_MAX samples
where = city or "all cities"
NB_MAX = 2_000  # kNN, overlap@k and PCA on at most this many samples (all pairs of embeddings)
K_MAX = 24  # the k slider's top: one search at K_MAX serves every k (neighbourhood_overlap's knn=)


@st.cache_data(show_spinner=False, max_entries=256)
def shares_samples(runs_root, run_id0, stamp0, city, run_id, stamp):
    """Whether run_id has any of run_id0's samples (one city's, or all), keyed by run identity."""
    d0 = loaders.predictions(runs_root, run_id0, stamp0)
    return shares_any_id(
        (d0 if city is None else d0.loc[d0["city"].astype(str) == city])["id"],
        loaders.predictions(runs_root, run_id, stamp)["id"],
    )


# Runs on the same evaluation samples, ordered by σ (one-hot CLIP first): the bandwidth sweep.
sweep = [
    r
    for r in view.available
    if loaders.embeddings(view.runs_root, r.run_id, r.stamp) is not None
    and shares_samples(view.runs_root, run0.run_id, run0.stamp, city, r.run_id, r.stamp)
]
sweep.sort(key=lambda r: (r.sigma_m or 0.0, r.run_id))
if not sweep:
    st.warning("No run here has embeddings.npy for this city's samples.")
    st.stop()
nearest = min(sweep, key=lambda r: abs(np.log((r.sigma_m or 1.0) / view.sigma_m)))
by_id = {r.run_id: r for r in sweep}


def sweep_label(i):
    r = by_id[i]
    return f"{'★ ' if r is nearest else ''}{r.run_id} ({'one-hot' if not r.sigma_m else f'σ = {fmt_m(r.sigma_m)}'})"


c1, c2 = st.columns([3, 1])
with c1:
    run_id = urlstate.url_widget(
        st.radio,
        "Run (★: nearest to the sidebar σ)",
        "nrun",
        nearest.run_id,
        valid=lambda v: v in by_id,
        options=list(by_id),
        format_func=sweep_label,
        horizontal=True,
    )
with c2:
    k = urlstate.url_widget(
        st.slider,
        "k neighbours",
        "k",
        8,
        parse=int,
        valid=lambda v: isinstance(v, int) and 1 <= v <= K_MAX,
        min_value=1,
        max_value=K_MAX,
    )
run = by_id[run_id]


@st.cache_resource(show_spinner="Finding neighbours…", max_entries=16)
def sample_knn(runs_root, run_id, stamp, city):
    """Everything but k: the city's (or, for None, a seeded sample of NB_MAX) rows sorted by id, their
    embeddings (N, D) and latlon (N, 2), the overlap at K_MAX (its kNN serve every smaller k) and a 2-D PCA.
    Sorted by id first, so runs on the same samples pick the same ones. Shared, treat as read-only."""
    df = loaders.predictions(runs_root, run_id, stamp)
    pos = np.arange(len(df)) if city is None else np.flatnonzero(df["city"].astype(str).to_numpy() == city)
    pos = pos[np.argsort(df["id"].astype(str).to_numpy()[pos], kind="stable")]  # same order in every run
    if len(pos) > NB_MAX:
        pos = pos[np.sort(np.random.default_rng(0).choice(len(pos), NB_MAX, replace=False))]
    emb = np.asarray(loaders.embeddings(runs_root, run_id, stamp)[df.index.to_numpy()[pos]], dtype=np.float32)  # (N, D)
    latlon = df.iloc[pos][["lat", "lon"]].to_numpy(np.float64)
    table = df.iloc[pos].reset_index(drop=True)
    place = table["place_id"].astype(str).to_numpy()  # neighbours are other places' photos
    others = len(pos) - int(table["place_id"].value_counts().max()) if len(pos) else 0
    if len(pos) < 3 or others < 1:
        return table, emb, latlon, None, None
    # One thread: on the shared 2-core machine two BLAS / OpenMP threads made the PCA's SVD 30x slower
    # (32 s against 1 s).
    with threadpool_limits(1):
        wide = neighbourhood_overlap(emb, latlon, min(K_MAX, others), place=place)
        xy = pca_2d(emb)
    return table, emb, latlon, wide, xy


@st.cache_data(show_spinner=False, max_entries=64)
def neighbourhoods(runs_root, run_id, stamp, city, k):
    """(table, embedding kNN (N, k), geographic kNN (N, k), overlap@k, PCA (N, 2)) of :func:`sample_knn`'s samples."""
    table, emb, latlon, wide, xy = sample_knn(runs_root, run_id, stamp, city)
    if wide is None:
        return table, None, None, None, None
    knn = (wide.embedding_knn, wide.geo_knn) if wide.ok else None
    ov = neighbourhood_overlap(emb, latlon, min(k, wide.k), knn=knn)
    return table, ov.embedding_knn, ov.geo_knn, ov, xy


table, e_knn, g_knn, ov, xy = neighbourhoods(view.runs_root, run.run_id, run.stamp, city, int(k))
n = len(table)
if n < 3:
    st.warning("Too few samples in this city.")
    st.stop()
if not ov.ok:
    st.warning(f"No neighbourhoods for this run: {ov.reason}")
    st.stop()
if city is None:
    st.caption(
        f"All cities: a seeded sample of {n:,} of the run's samples "
        "(the same ids in every run evaluated on the same samples); "
        "pick a city in the sidebar for all of its samples."
    )
k = e_knn.shape[1]
anchor = urlstate.url_widget(
    st.number_input,
    f"Anchor sample (0 – {n - 1}, or click a dot in the projection)",
    "anchor",
    0,
    parse=int,
    valid=lambda v: isinstance(v, int) and 0 <= v < n,
    min_value=0,
    max_value=n - 1,
    step=1,
)

a_ll = table.loc[anchor, ["lat", "lon"]].to_numpy(np.float64)
e_idx, g_idx = e_knn[anchor], g_knn[anchor]
e_dist = haversine_m(np.repeat(a_ll[None], k, 0), table.loc[e_idx, ["lat", "lon"]].to_numpy(np.float64))
g_dist = haversine_m(np.repeat(a_ll[None], k, 0), table.loc[g_idx, ["lat", "lon"]].to_numpy(np.float64))
overlap_a = float(ov.overlap[anchor])
st.markdown(
    f"Anchor **{table.loc[anchor, 'id']}** in {table.loc[anchor, 'city'] if 'city' in table else where} · "
    f"overlap@{k} for this anchor **{overlap_a:.2f}**, "
    f"mean over {where} **{ov.mean_overlap:.3f}** (chance {ov.chance_overlap:.3f}) · "
    f"median distance to embedding neighbours "
    f"**{fmt_m(np.median(e_dist))}** against **{fmt_m(np.median(g_dist))}** for the geographic ones."
)

img_root = loaders.image_root(view.runs_root, run.run_id, run.stamp)


def strip(title, idx, dist):
    st.markdown(title)
    cols = st.columns(min(len(idx) + 1, 9))
    items = [(anchor, None)] + list(zip(idx, dist))
    for j, (i, d) in enumerate(items[: len(cols)]):
        with cols[j]:
            thumb = (
                loaders.thumbnail(view.runs_root, img_root, str(table.loc[i, "image"]))
                if "image" in table and img_root
                else None
            )
            cap = "anchor" if d is None else fmt_m(d) + (" ✓" if i in set(g_idx) and i in set(e_idx) else "")
            if thumb is not None:
                st.image(thumb, caption=cap, width="stretch")
            else:
                st.caption(cap)


strip(f"**{k} nearest in embedding space** (distance on the ground; ✓ also a geographic neighbour)", e_idx, e_dist)
strip(f"**{k} nearest on the ground**", g_idx, g_dist)
if not img_root:
    st.caption(f"{loaders.NO_IMAGES}, so no thumbnails; the distances still hold.")


def on_pick():
    sel = st.session_state.get("proj")
    pts = (
        (sel or {}).get("selection", {}).get("points", [])
        if isinstance(sel, dict)
        else getattr(getattr(sel, "selection", None), "points", [])
    )
    if pts and pts[0].get("curve_number", 0) == 0 and "point_index" in pts[0]:
        st.session_state["url:anchor"] = int(pts[0]["point_index"])


colours = maps.position_colours(table[["lat", "lon"]].to_numpy(np.float64))
left, right = st.columns(2)
with left:
    fig = figures.embedding_scatter(
        xy,
        colours,
        anchor=anchor,
        highlight=e_idx,
        title=f"Embeddings of {where} (PCA), coloured by position",
        hover=[f"{i}: {s}" for i, s in enumerate(table["id"].astype(str))],
    )
    st.plotly_chart(fig, width="stretch", key="proj", on_select=on_pick, selection_mode="points")
with right:
    pts = maps.points_frame(table[["lat", "lon"]], colours, idx=np.arange(n), id=table["id"].astype(str))
    ring = maps.points_frame(table.loc[e_idx, ["lat", "lon"]], np.tile([0, 0, 0], (k, 1)))
    star = maps.points_frame(a_ll[None], np.array([[255, 200, 0]]))
    layers = [
        maps.scatter_layer(pts, radius_m=12),
        maps.scatter_layer(
            ring,
            radius_m=30,
            alpha=255,
            pickable=False,
            stroked=True,
            filled=False,
            line_width_min_pixels=2,
            get_line_color=[0, 0, 0],
        ),
        maps.scatter_layer(star, radius_m=45, alpha=255, pickable=False),
    ]
    st.markdown("**The same colours on the map.** Gold: anchor; black rings: its embedding neighbours.")
    st.pydeck_chart(
        frame.city_deck(
            view, run, city, layers, table[["lat", "lon"]].to_numpy(np.float64), tooltip={"text": "{idx}: {id}"}
        ),
        height=430,
        key="nb_map",
    )

st.subheader("Across the bandwidth sweep")
sc = loaders.run_scale(view.runs_root, run.run_id, run.stamp, city)  # lengths in the view's unit
rows = []
for r in sweep:
    _, _, _, ov_r, _ = neighbourhoods(view.runs_root, r.run_id, r.stamp, city, int(k))
    if ov_r is None or not ov_r.ok:
        continue
    rows.append(
        {
            "run": ("★ " if r is nearest else "") + r.run_id,
            "σ": fmt_m(r.sigma_m) if r.sigma_m else "one-hot",
            f"mean overlap@{k}": ov_r.mean_overlap,
            f"median distance to embedding neighbours ({sc.unit})": sc.in_unit(ov_r.median_embedding_neighbour_dist_m),
            "shown": r is run,
        }
    )
st.dataframe(
    pd.DataFrame(rows),
    hide_index=True,
    width="stretch",
    column_config={
        f"mean overlap@{k}": st.column_config.ProgressColumn(min_value=0.0, max_value=1.0, format="%.3f"),
        f"median distance to embedding neighbours ({sc.unit})": st.column_config.NumberColumn(format=sc.number_format),
    },
)
st.caption(
    "Switch the run above to watch the anchor's neighbourhood change with σ; "
    "the anchor is the same sample in every run."
)
