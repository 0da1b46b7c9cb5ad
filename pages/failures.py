"""Failures: the worst predictions of one city or of all, a page at a time, with what the model matched them to."""

import numpy as np
import streamlit as st

from appkit import frame, loaders, urlstate
from swclip.analysis.failures import SampleLocator, topk_matches
from swclip.geo import haversine_m
from swclip.viz import figures, maps
from swclip.viz.scale import fmt_m

view = frame.ensure_frame()
run = frame.require_run(view, "the failure gallery")
st.title("Failures")

df_all = loaders.predictions(view.runs_root, run.run_id, run.stamp)
city = view.city_or_none()

c1, c2, c3, c4 = st.columns([2, 2, 2, 1])
with c1:
    per_page = urlstate.url_widget(
        st.slider,
        "Failures per page",
        "worst",
        6,
        parse=int,
        valid=lambda v: isinstance(v, int) and 1 <= v <= 30,
        min_value=1,
        max_value=30,
    )
with c2:
    stops = view.scale.error_stops_m[:-1]  # 0 … ten times the extent, on the run's scale
    min_err = urlstate.url_widget(
        st.select_slider,
        "Only errors of at least",
        "minerr",
        0,
        parse=int,
        valid=lambda v: v in stops,
        options=stops,
        format_func=fmt_m,
    )
with c3:
    order = urlstate.url_widget(
        st.radio,
        "Rank by",
        "rank",
        "retrieval error",
        valid=lambda v: v in ("retrieval error", "knn-kde error"),
        options=["retrieval error", "knn-kde error"],
        horizontal=True,
    )
col = "kde_error_m" if order == "knn-kde error" and "kde_error_m" in df_all else "error_m"


@st.cache_data(show_spinner=False, max_entries=32)
def ranked(runs_root, run_id, stamp, city, col, min_err):
    """Rows (predictions index) of the city's (or every) sample with col ≥ min_err, worst first."""
    df = loaders.predictions(runs_root, run_id, stamp)
    sel = df if city is None else df[df["city"].astype(str) == city]
    sel = sel[sel[col] >= min_err]
    return sel.index.to_numpy()[np.argsort(-sel[col].to_numpy(np.float64), kind="stable")]


order_rows = ranked(view.runs_root, run.run_id, run.stamp, city, col, min_err)
n_pages = max(1, -(-len(order_rows) // int(per_page)))
with c4:
    page_no = urlstate.url_widget(
        st.number_input,
        f"Page (of {n_pages:,})",
        "fpage",
        1,
        parse=int,
        valid=lambda v: isinstance(v, int) and 1 <= v <= n_pages,
        min_value=1,
        max_value=n_pages,
        step=1,
    )
rows = order_rows[(page_no - 1) * int(per_page) : page_no * int(per_page)]
worst = df_all.loc[rows].rename_axis("row").reset_index()  # row: into embeddings.npy and the top-k arrays

export_cols = [
    c
    for c in (
        "id",
        "city",
        "lat",
        "lon",
        "pred_lat",
        "pred_lon",
        "error_m",
        "kde_lat",
        "kde_lon",
        "kde_error_m",
        "radius_m",
        "image",
    )
    if c in df_all
]
n_export = min(len(order_rows), 10_000)
st.download_button(
    f"Export the worst {n_export:,} (CSV)",
    df_all.loc[order_rows[:n_export], export_cols].to_csv(index=False).encode(),
    file_name=f"failures_{run.run_id.replace('/', '_')}.csv",
    mime="text/csv",
)
st.caption(
    f"{len(order_rows):,} samples{f' in {city}' if city else ' over all cities'} "
    f"with a {order} of at least {min_err} m, worst first: "
    f"page {page_no} of {n_pages:,} ({len(worst)} shown)."
)

img_root = loaders.image_root(view.runs_root, run.run_id, run.stamp)
samples = loaders.sample_table(view.runs_root, run.run_id, run.stamp)
streets = loaders.streets(view.runs_root, run.run_id, run.stamp)
locator = SampleLocator(samples[["lat", "lon"]].to_numpy(np.float64)) if samples is not None else None
imported = frame.imported_lacks(
    run, "no training table, so each failure shows its photo, truth and prediction without matched training images"
)
if not img_root:
    st.info(f"{loaders.NO_IMAGES}: the gallery shows maps and numbers only.")


@st.cache_data(show_spinner="Searching the training images…", max_entries=64)
def nearest_training(runs_root, run_id, stamp, rows, k=5):
    """{row: the k training images nearest that query in embedding space (image_gallery.npz): [(path, latlon, cos)]}.

    One search for the page's rows (a tuple, in file order): each search reads the whole gallery
    (500,000 × 512 is 1 GB), so six queries in one pass cost about what one does; cached per run and
    rows, so a rerun that shows the same failures (another threshold, the other ranking) searches nothing."""
    image_index = loaders.image_neighbours(runs_root, run_id, stamp)
    eval_emb = loaders.embeddings(runs_root, run_id, stamp) if image_index else None
    if image_index is None or eval_emb is None or len(rows) == 0:
        return {}
    gallery, index = image_index
    q = np.asarray(eval_emb[list(rows)], dtype=np.float32)  # (Q, D); float16 memory map -> float32
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    scores, idx = index.search(q, k)
    return {
        int(r): [(gallery.ids[i], gallery.latlon[i], float(sc)) for sc, i in zip(s_r, i_r) if i >= 0]
        for r, s_r, i_r in zip(rows, scores, idx)
    }


near_by_row = nearest_training(
    view.runs_root, run.run_id, run.stamp, tuple(int(r) for r in np.sort(worst["row"].to_numpy()))
)


topk = loaders.topk(view.runs_root, run.run_id, run.stamp)


def matches(row):
    """The training samples at the model's top-k candidate locations (the gallery is the training locations)."""
    if locator is None or topk is None:
        return []
    cand = topk[0][int(row["row"])]  # (K, 2)
    return [(rank, samples.iloc[i]) for rank, i in topk_matches(cand[:, 0], cand[:, 1], locator)]


for rank, (_, row) in enumerate(worst.iterrows(), start=(page_no - 1) * int(per_page) + 1):
    lines = streets.get(str(row.get("city", "")), [])
    with st.container(border=True):
        left, mid, right = st.columns([1, 2, 3])
        with left:
            thumb = loaders.thumbnail(view.runs_root, img_root, str(row.get("image", ""))) if img_root else None
            if thumb is not None:
                st.image(thumb, caption="query", width="stretch")
            st.markdown(
                f"**#{rank} · {row['id']}**  \n{row.get('city', '')}  \nerror **{fmt_m(row['error_m'])}**"
                + (f"  \nknn-kde {fmt_m(row['kde_error_m'])}" if "kde_error_m" in row else "")
            )
        m = matches(row)
        near_imgs = near_by_row.get(int(row["row"]), [])
        truth = (row["lat"], row["lon"])
        with mid:
            pred = (row["pred_lat"], row["pred_lon"])
            near = maps.streets_near(lines, truth)
            if near_imgs:
                others = np.array([ll for _, ll, _ in near_imgs], dtype=np.float64).reshape(-1, 2)
                what = "the training images nearest in embedding space"
            else:
                others = np.array([[s["lat"], s["lon"]] for _, s in m], dtype=np.float64).reshape(-1, 2)
                what = "training images at the model's top-k locations"
            st.plotly_chart(
                figures.mini_map(truth, pred, others, near),
                width="stretch",
                key=f"mm_{run.run_id}_{row['row']}",
                config={"displayModeBar": False},
            )
            st.caption("green: truth · red ×: prediction" + ("" if imported else f" · blue: {what}"))
            if m and "city" in m[0][1] and str(m[0][1]["city"]) != str(row["city"]):
                st.markdown(
                    f"Matched to **{m[0][1]['city']}**: the model placed this {str(row['city'])} photo in another city."
                )
        with right:
            if near_imgs:
                st.caption("Nearest training images (image embeddings), with how far each was taken from the truth")
                dist_m = haversine_m(np.array([ll for _, ll, _ in near_imgs]), np.array([truth] * len(near_imgs)))
                cols = st.columns(len(near_imgs))
                for (path, ll, cos), d, cc in zip(near_imgs, dist_m, cols):
                    with cc:
                        t = loaders.thumbnail(view.runs_root, img_root, str(path)) if img_root else None
                        if t is not None:
                            st.image(t, width="stretch")
                        st.caption(f"{fmt_m(d)} away · cos {cos:.2f}")
            elif m:
                cols = st.columns(min(len(m), 5))
                for (k, s), cc in zip(m[:5], cols):
                    with cc:
                        t = loaders.thumbnail(view.runs_root, img_root, str(s.get("image", ""))) if img_root else None
                        if t is not None:
                            st.image(t, width="stretch")
                        st.caption(f"#{k} · {float(s['lat']):.5f}, {float(s['lon']):.5f}")
            elif not imported:  # an imported run says so once, above
                st.caption("No training sample table here to show what the model matched.")
