"""Predict: where was this photo taken? Upload photos or pick evaluation samples."""

import json
import math

import numpy as np
import pandas as pd
import streamlit as st
from streamlit_folium import st_folium

from appkit import frame, loaders, urlstate
from swclip.data import ImageError, open_image, tiny_image_warning
from swclip.geo import haversine_m
from swclip.viz import maps
from swclip.viz.scale import fmt_m

view = frame.ensure_frame()
run = frame.require_run(view, "prediction")
st.title("Predict a location")
if frame.imported_lacks(run, "predicting a new photo needs a trained run's model; pick one in the sidebar"):
    st.stop()

PICK_MAX = 5_000  # evaluation samples offered to pick from (the largest errors when there are more)

c1, c2 = st.columns([3, 2])
with c1:
    uploads = st.file_uploader(
        "Photos (JPEG, HEIC, PNG, WebP…); they stay in memory and are never written to disk",
        accept_multiple_files=True,
        key="uploads",
    )
with c2:
    df = loaders.city_predictions(view.runs_root, run.run_id, run.stamp, view.city_or_none())
    img_root = loaders.image_root(view.runs_root, run.run_id, run.stamp)
    if len(df) > PICK_MAX:  # a list of 210,000 ids would be megabytes on every rerun
        df = df.nlargest(PICK_MAX, "error_m")
    options = df["id"].astype(str).tolist() if img_root and "image" in df else []
    picked = urlstate.url_widget(
        st.multiselect,
        "…or evaluation samples" + (f" (the {PICK_MAX:,} largest errors)" if len(df) == PICK_MAX else ""),
        "pick",
        [],
        parse=lambda s: [x for x in s.split(",") if x],
        fmt=",".join,
        valid=lambda v: isinstance(v, list) and all(x in options for x in v),
        options=options,
        max_selections=24,
        help=None if options else f"{loaders.NO_IMAGES}.",
    )
    top_k = urlstate.url_widget(
        st.slider,
        "Top-k places",
        "topk",
        5,
        parse=int,
        valid=lambda v: isinstance(v, int) and 1 <= v <= 20,
        min_value=1,
        max_value=20,
    )

# (name, PIL image, true latlon or None, where the truth came from)
queries, errors = [], []
for f in uploads or []:
    data = f.getvalue()  # bytes in memory; nothing touches the disk
    try:
        img = open_image(data)
    except ImageError as e:
        errors.append(f"**{f.name}**: {str(e).replace('<', '').replace('>', '')}")
        continue
    truth = loaders.exif_latlon(data)
    queries.append((f.name, img, truth, "EXIF GPS" if truth else None))
by_id = df.set_index(df["id"].astype(str))
for sid in picked:
    path = loaders.sample_image_path(view.runs_root, img_root, str(by_id.loc[sid, "image"]))
    try:
        img = open_image(path) if path else None
    except ImageError as e:
        errors.append(f"**{sid}**: {e}")
        continue
    if img is not None:
        queries.append((sid, img, (float(by_id.loc[sid, "lat"]), float(by_id.loc[sid, "lon"])), "evaluation label"))
for msg in errors:
    st.error(f"Skipped {msg}")

if not queries:
    st.info(
        f"Upload a photo or pick an evaluation sample to see where run `{run.run_id}` puts it. "
        "The model and its gallery load with the first photo (once per server)."
    )
    st.stop()

# Loaded only now: a 1M-entry gallery is gigabytes, and the page is useful before a photo arrives.
predictor, problem = loaders.predictor(view.runs_root, run.run_id, run.stamp)
if predictor is None:
    st.error(f"This run cannot predict here: {problem}")
    st.stop()
st.caption(
    f"Run `{run.run_id}` · gallery of {len(predictor.gallery):,} candidate locations · "
    f"knn-kde bandwidth {fmt_m(predictor.kde_bandwidth_m)}"
)

for name, img, _, _ in queries:
    tiny = tiny_image_warning(img.size, predictor.input_px, name)
    if tiny:
        st.warning(tiny)

with st.spinner(f"Predicting {len(queries)} photo(s)…"):
    preds = predictor.predict([q[1] for q in queries], top_k=int(top_k), progress=False)

rows = []
for (name, _, truth, source), p in zip(queries, preds):
    row = {
        "photo": name,
        "pred_lat": p.latlon[0],
        "pred_lon": p.latlon[1],
        "top1_prob": float(p.prob[0]),
        "kde_lat": p.estimate[0],
        "kde_lon": p.estimate[1],
        "radius_m": p.radius_m,
        "true_lat": truth[0] if truth else np.nan,
        "true_lon": truth[1] if truth else np.nan,
        "truth_from": source or "",
    }
    if truth:
        # as in predictions.parquet: error_m is the top-1 candidate's error, kde_error_m the knn-kde estimate's
        row["error_m"] = float(haversine_m(np.array([p.latlon]), np.array([truth]))[0])
        row["kde_error_m"] = float(haversine_m(np.array([p.estimate]), np.array([truth]))[0])
    rows.append(row)
table = pd.DataFrame(rows)

choice = 0
if len(queries) > 1:
    choice = st.selectbox("Show on the map", range(len(queries)), format_func=lambda i: queries[i][0], key="show")
name, img, truth, source = queries[choice]
p = preds[choice]

left, right = st.columns([1, 2])
with left:
    st.image(img, caption=name, width="stretch")
    st.markdown(f"**knn-kde estimate** {p.estimate[0]:.5f}, {p.estimate[1]:.5f}, within about **{fmt_m(p.radius_m)}**")
    if truth:
        err = haversine_m(np.array([p.estimate]), np.array([truth]))[0]
        st.markdown(f"**True spot** ({source}) {truth[0]:.5f}, {truth[1]:.5f}: error **{fmt_m(err)}**")
    st.dataframe(
        pd.DataFrame(p.as_rows()).round({"lat": 5, "lon": 5, "prob": 3, "score": 3}), hide_index=True, width="stretch"
    )
with right:
    import folium

    m = maps.folium_map(p.estimate, zoom=view.scale.map_zoom if view.scale else 15)  # the run's scale
    lines = loaders.streets(view.runs_root, run.run_id, run.stamp)
    near = maps.streets_near([line for lines_c in lines.values() for line in lines_c], p.estimate)
    maps.folium_streets(m, near)
    folium.Circle(
        p.estimate,
        radius=float(p.radius_m),
        color="#9467bd",
        fill=True,
        fill_opacity=0.08,
        tooltip=f"confidence radius {fmt_m(p.radius_m)}",
    ).add_to(m)
    for rank, ((la, lo), pr) in enumerate(zip(p.latlon_topk, p.prob), start=1):
        folium.CircleMarker(
            (float(la), float(lo)),
            radius=4 + 18 * math.sqrt(float(pr)),
            color="#1f77b4",
            fill=True,
            fill_opacity=0.6,
            tooltip=f"#{rank}: p = {pr:.3f}",
        ).add_to(m)
    folium.CircleMarker(
        p.estimate, radius=7, color="#9467bd", fill=True, fill_opacity=1.0, tooltip="knn-kde estimate"
    ).add_to(m)
    pts = [p.estimate] + [tuple(x) for x in p.latlon_topk]
    if truth:
        folium.CircleMarker(
            truth, radius=8, color="#2ca02c", fill=True, fill_opacity=1.0, tooltip=f"true spot ({source})"
        ).add_to(m)
        folium.PolyLine([truth, p.estimate], color="#d62728", weight=2, dash_array="6", tooltip="error").add_to(m)
        pts.append(truth)
    arr = np.asarray(pts, dtype=np.float64)
    m.fit_bounds([arr.min(0).tolist(), arr.max(0).tolist()], padding=(30, 30))
    st_folium(m, height=480, use_container_width=True, returned_objects=[], key=f"pmap_{choice}")
    st.caption(
        "Blue: top-k candidates (size ∝ probability); purple: the knn-kde estimate and its confidence circle; "
        "green: the true spot. "
        "Tiles need the network; offline the locally drawn layers still show."
    )

if len(queries) > 1:
    st.subheader(f"All {len(queries)} photos")
    st.dataframe(table, hide_index=True, width="stretch")
features = [
    {
        "type": "Feature",
        "geometry": {"type": "Point", "coordinates": [r["kde_lon"], r["kde_lat"]]},
        "properties": {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()},
    }
    for r in rows
]
d1, d2 = st.columns(2)
d1.download_button("Download predictions (CSV)", table.to_csv(index=False).encode(), "predictions.csv", "text/csv")
d2.download_button(
    "Download predictions (GeoJSON)",
    json.dumps({"type": "FeatureCollection", "features": features}).encode(),
    "predictions.geojson",
    "application/geo+json",
)
