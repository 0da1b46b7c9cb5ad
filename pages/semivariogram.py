"""Semivariogram: how fast embeddings and errors decorrelate with distance, per city and over the whole run,
and the σ it suggests."""

import numpy as np
import pandas as pd
import streamlit as st

from appkit import frame, loaders, urlstate
from swclip import catalog
from swclip.analysis.empirical_variogram import bin_pairs, variogram_pairs
from swclip.analysis.metrics import log10_error
from swclip.analysis.spatial_stats import local_morans_i, morans_i
from swclip.analysis.variogram import MODELS, RANGE_NOT_REACHED, fit_best, fit_variogram, suggested_sigma_from_fit
from swclip.viz import figures, maps
from swclip.viz.scale import fmt_m

LISA_RGB = {
    "HH": (215, 25, 28),
    "LL": (44, 123, 182),
    "HL": (253, 174, 97),
    "LH": (171, 217, 233),
    "ns": (150, 150, 150),
}

view = frame.ensure_frame()
run = frame.require_run(view, "the semivariogram page")
st.title("Semivariogram")

if frame.few_per_city(view, run) and view.city_or_none() is None:
    city = None
    st.caption("A few photos per city: the variograms pool every city (pick one in the sidebar to see it alone).")
else:
    city = frame.one_city(view, run, "Variograms are per city")

sc = loaders.run_scale(view.runs_root, run.run_id, run.stamp, city)
c1, c2, c3, c4 = st.columns(4)
with c4:
    lags = (0, *sc.lag_choices_m)
    max_lag = urlstate.url_widget(
        st.select_slider,
        "Largest lag",
        "maxlag",
        sc.lag_default_m,
        parse=int,
        valid=lambda v: v in lags,
        options=lags,
        format_func=lambda v: "auto (half the widest pair)" if v == 0 else fmt_m(v),
    )
with c1:
    model = urlstate.url_widget(
        st.selectbox,
        "Model",
        "model",
        "best",
        valid=lambda v: v in ("best", *MODELS),
        options=["best", *MODELS],
        help="'best': the lowest RMSE of all scikit-gstat models",
    )
with c2:
    n_bins = urlstate.url_widget(
        st.slider,
        "Lag bins",
        "bins",
        sc.bins_default,
        parse=int,
        valid=lambda v: isinstance(v, int) and 5 <= v <= 60,
        min_value=5,
        max_value=60,
    )
with c3:
    kernel = urlstate.url_widget(
        st.radio,
        "Kernel for the suggested σ",
        "vkernel",
        "gaussian",
        valid=lambda v: v in ("gaussian", "exponential"),
        options=["gaussian", "exponential"],
        horizontal=True,
    )

GLOBAL_SAMPLES = 20_000  # the global variogram's samples (seeded), whose pairs are then sampled too


@st.cache_resource(show_spinner="Measuring pairs…", max_entries=32)
def pairs_of(runs_root, run_id, stamp, city, what):
    """The sampled pairs (distance, dissimilarity) of a run's embeddings ('embedding') or log10 errors
    ('error') in one city, or over every city (city None: a seeded sample of GLOBAL_SAMPLES samples);
    None without embeddings. Kept per run identity, so a new bin count or largest lag only rebins them."""
    r = next(x for x in loaders.discover(runs_root)[0] if x.run_id == run_id)
    rows = loaders.city_rows(runs_root, r, city)  # rows of embeddings.npy = the predictions' index
    if city is None and len(rows) > GLOBAL_SAMPLES:
        rows = np.sort(np.random.default_rng(0).choice(rows, GLOBAL_SAMPLES, replace=False))
    df = loaders.predictions(runs_root, run_id, stamp).loc[rows]
    latlon = df[["lat", "lon"]].to_numpy(np.float64)
    if what == "embedding":
        emb = loaders.embeddings(runs_root, run_id, stamp)
        if emb is None:
            return None
        return variogram_pairs(latlon, embeddings=np.asarray(emb[rows], dtype=np.float32), max_pairs=300_000, seed=0)
    return variogram_pairs(latlon, values=log10_error(df["error_m"]), max_pairs=300_000, seed=0)


@st.cache_data(show_spinner="Fitting variograms…", max_entries=64)
def variogram_of(runs_root, run_id, stamp, city, what, model, bins, max_lag_m):
    """Empirical + fitted variogram of :func:`pairs_of`'s pairs (great-circle lags up to max_lag_m, 0: auto)."""
    pairs = pairs_of(runs_root, run_id, stamp, city, what)
    if pairs is None:
        return None, None
    emp = bin_pairs(pairs, bins=bins, max_lag_m=max_lag_m or None)
    fit = fit_best(emp) if model == "best" else fit_variogram(emp, model)
    return emp, fit


def curve(name, emp, fit):
    c = {"name": name, "lags_m": emp.lag_m, "gamma": emp.gamma}
    if fit is not None and fit.ok:
        h = np.linspace(0, float(np.nanmax(emp.bin_edges_m)), 200)
        c.update(fit_h_m=h, fit_gamma=fit.gamma(h), range_m=fit.range_m)
    return c


def fit_row(name, emp, fit):
    # the bandwidth rule expects the 95 % range; scikit-gstat's gaussian/spherical ranges sit at 98-100 %;
    # a range at the largest lag suggests no σ (it is only a lower bound)
    sigma = suggested_sigma_from_fit(fit, kernel)
    row = {
        "variogram": name,
        "model": fit.model if fit.ok else "—",
        "nugget": fit.nugget,
        "sill": fit.sill,
        "range": fmt_m(fit.range_m) if fit.ok else "—",
        f"suggested σ, {kernel}": fmt_m(sigma) if sigma is not None else RANGE_NOT_REACHED if fit.ok else "—",
        "largest lag": fmt_m(fit.max_lag_m) if fit.ok else "—",
        "pairs used": emp.n_pairs_used if emp is not None else 0,
        "note": "" if fit.ok else fit.reason,
    }
    if fit.ok and fit.range_at_bound:
        row["note"] = f"{RANGE_NOT_REACHED} by {fmt_m(fit.max_lag_m)}: the true range may be longer; widen the lags"
    elif fit.ok and fit.warning:
        row["note"] = fit.warning
    return row


world = loaders.world(view.runs_root, run.run_id, run.stamp)
true_ranges = catalog.city_true_ranges(world, city)

curves, rows, suggested = [], [], None
where = city or "all cities"
for r in view.selected:
    emp, fit = variogram_of(view.runs_root, r.run_id, r.stamp, city, "embedding", model, n_bins, max_lag)
    if emp is None:
        if r.kind == "imported":
            st.caption(f"{r.run_id}: imported without embeddings, so no embedding variogram; its errors' is below.")
        else:
            st.warning(f"{r.run_id} has no embeddings.npy: no embedding variogram.")
        continue
    curves.append(curve(r.run_id, emp, fit))
    rows.append(fit_row(f"{r.run_id}: embeddings (1 − cos)", emp, fit))
    if r is run:  # the main run's
        suggested = suggested_sigma_from_fit(fit, kernel)

if curves:
    st.plotly_chart(
        figures.variogram_figure(
            curves,
            sigma_m=view.sigma_m,
            suggested_sigma_m=suggested,
            true_ranges_m=list(true_ranges.values()),
            title=f"Embedding dissimilarity γ(h) in {where}",
            y_title="γ(h): mean 1 − cos between embeddings",
        ),
        width="stretch",
        key="vg_emb",
    )
legend = (
    "Black line: the sidebar σ. Orange dash-dot: the σ the main run's fitted range suggests. Dashed: fitted ranges."
)
if true_ranges:
    legend += (
        f" Dotted grey: the demo world's true field ranges in {city} "
        f"({', '.join(f'{v:.0f}' for v in sorted(true_ranges.values()))} m)."
    )
if curves:
    st.caption(legend)

emp_e, fit_e = variogram_of(view.runs_root, run.run_id, run.stamp, city, "error", model, n_bins, max_lag)
rows.append(fit_row(f"{run.run_id}: log10 error", emp_e, fit_e))
st.dataframe(
    pd.DataFrame(rows),
    hide_index=True,
    width="stretch",
    column_config={
        "nugget": st.column_config.NumberColumn(format="%.4f"),
        "sill": st.column_config.NumberColumn(format="%.4f"),
    },
)

sc_all = loaders.run_scale(view.runs_root, run.run_id, run.stamp, None)
if sc_all.kind != "street" and city is not None:
    st.subheader("Over every city: the global variogram")
    g_lags = (0, *sc_all.lag_choices_m)
    g_lag = urlstate.url_widget(
        st.select_slider,
        "Largest lag (global)",
        "gmaxlag",
        sc_all.lag_default_m,
        parse=int,
        valid=lambda v: v in g_lags,
        options=g_lags,
        format_func=lambda v: "auto (half the widest pair)" if v == 0 else fmt_m(v),
    )
    g_curves, g_rows = [], []
    for r in view.selected:
        emp, fit = variogram_of(view.runs_root, r.run_id, r.stamp, None, "embedding", model, n_bins, g_lag)
        if emp is None:
            continue
        g_curves.append(curve(r.run_id, emp, fit))
        g_rows.append(fit_row(f"{r.run_id}: embeddings, all cities", emp, fit))
    if g_curves:
        st.plotly_chart(
            figures.variogram_figure(
                g_curves,
                sigma_m=view.sigma_m,
                title="Embedding dissimilarity γ(h) over every city",
                y_title="γ(h): mean 1 − cos between embeddings",
            ),
            width="stretch",
            key="vg_global",
        )
        st.dataframe(pd.DataFrame(g_rows), hide_index=True, width="stretch")
        st.caption(
            f"Great-circle lags up to {fmt_m(g_lag) if g_lag else 'half the widest pair'}, "
            f"on a seeded sample of at most {GLOBAL_SAMPLES:,} samples and 300,000 of their pairs, "
            f"as the semivariogram paper samples pairs over OSV-5M. "
            f"The run spans about {fmt_m(sc_all.extent_m)}; the per-city variogram above is {city}'s. "
            "Both default to the same largest lag, half the samples' extent, so on the same rows they agree."
        )

st.subheader(f"Spatial structure of the errors of {run.run_id}")


@st.cache_data(show_spinner="Moran's I and LISA (999 permutations)…", max_entries=32)
def autocorrelation(runs_root, run_id, stamp, city):
    df = loaders.city_predictions(runs_root, run_id, stamp, city)
    latlon = df[["lat", "lon"]].to_numpy(np.float64)
    values = log10_error(df["error_m"])
    place = df["place_id"].astype(str).to_numpy()  # one value per place: co-located headings are one observation
    k = min(8, df["place_id"].nunique() - 2)
    return morans_i(values, latlon, k=max(k, 1), permutations=999, seed=0, place=place), local_morans_i(
        values, latlon, k=max(k, 1), permutations=999, seed=0, place=place
    )


left, right = st.columns([1, 2])
with left:
    st.plotly_chart(
        figures.variogram_figure(
            [curve("log10 error", emp_e, fit_e)],
            sigma_m=view.sigma_m,
            title="Error variogram",
            y_title="γ(h) of log10 error",
        ),
        width="stretch",
        key="vg_err",
    )
gi, lisa = autocorrelation(view.runs_root, run.run_id, run.stamp, city)
with right:
    if gi.ok:
        verdict = (
            "errors cluster in space"
            if gi.I > gi.expected_I and gi.p_value < 0.05
            else "no significant clustering"
            if gi.p_value >= 0.05
            else "errors are dispersed"
        )
        st.markdown(
            f"**Global Moran's I** of log10 error over {gi.n:,} places (each the mean of its photos; "
            f"{gi.k} nearest places as neighbours): I = **{gi.I:.3f}** "
            f"(expected {gi.expected_I:.3f} without structure), permutation p = **{gi.p_value:.3f}** "
            f"({gi.permutations} permutations): {verdict}."
        )
    else:
        st.info(f"No Moran's I: {gi.reason}")
    if lisa.ok:
        df = loaders.city_predictions(view.runs_root, run.run_id, run.stamp, city)
        labels = np.asarray(lisa.labels)
        rgb = np.array([LISA_RGB.get(lab, LISA_RGB["ns"]) for lab in labels], dtype=np.uint8)
        pts = maps.points_frame(
            df[["lat", "lon"]], rgb, id=df["id"].astype(str), error_m=df["error_m"].round(0), cluster=labels
        )
        st.pydeck_chart(
            frame.city_deck(
                view,
                run,
                city,
                [maps.scatter_layer(pts, radius_m=18, alpha=240)],
                df[["lat", "lon"]].to_numpy(),
                tooltip={"text": "{id}: {cluster}, error {error_m} m"},
                width_px=600,
            ),
            height=430,
            key="lisa",
        )
        counts = lisa.counts()
        st.caption(
            "LISA clusters (p ≤ 0.05): **HH** red, large errors among large errors ({HH}); "
            "**LL** blue, small among small ({LL}); "
            "**HL** orange ({HL}) and **LH** light blue ({LH}) are outliers; grey not significant ({ns}).".format(
                **counts
            )
        )
    else:
        st.info(f"No LISA map: {lisa.reason}")
