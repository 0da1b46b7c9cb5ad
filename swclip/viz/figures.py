"""Plotly chart builders for the app (maps live in ``swclip.viz.maps``).

Each function takes plain arrays or DataFrames and returns a
``plotly.graph_objects.Figure``, so the charts are testable without
Streamlit. Plotly's cartesian charts work offline (plotly.js ships with
Streamlit); its geo charts do not (their topojson comes from a CDN), so the
small maps here are cartesian lon/lat plots with the aspect fixed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from swclip.kernels import kernel_weights
from swclip.viz.scale import fmt_m

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")
# No template: Streamlit applies its own theme, and plotly's template costs time on every figure.
_LAYOUT = dict(
    margin=dict(l=50, r=20, t=40, b=60), height=380, legend=dict(orientation="h", yanchor="top", y=-0.28, x=0)
)  # legend below: narrow columns keep their plot
NICE_TICKS_M = (1, 10, 25, 50, 100, 250, 500, 1000, 5000, 25_000, 100_000, 1_000_000, 10_000_000)


def _fig(title: str, data: Sequence = (), **layout: Any) -> go.Figure:
    """One constructor call: incremental add_trace / update_layout re-validate the whole figure each time."""
    return go.Figure(data=list(data), layout=dict(title=dict(text=title, font=dict(size=14)), **{**_LAYOUT, **layout}))


def length_axis(max_m: float, title: str, n: int = 6) -> dict:
    """A linear axis of lengths in metres from 0 to ``max_m`` with round ticks labelled for people
    ('0 m', '50 km', '100 km'): the data stay in metres. -> plotly axis dict."""
    max_m = max(float(max_m), 1.0)
    raw = max_m / n
    step = min((s * 10.0 ** math.floor(math.log10(raw)) for s in (1, 2, 5, 10)), key=lambda v: (v < raw, v))
    ticks = np.arange(0.0, max_m + step / 2, step)
    return dict(title=title, tickvals=ticks.tolist(), ticktext=[fmt_m(t) if t else "0" for t in ticks])


def _rules(fig: go.Figure, lines: Sequence[dict]) -> go.Figure:
    """Vertical (``x``) or horizontal (``y``) reference lines with optional labels, added in one update.

    Each dict: x or y, and optionally colour, dash, width, opacity, text, position ("top" or "bottom").
    plotly's add_vline is slow per line (benchmarks/figures.py); the soft-label page redraws on every slider move.
    """
    shapes, notes = [], []
    for ln in lines:
        vertical = "x" in ln
        v = float(ln["x"] if vertical else ln["y"])
        style = dict(color=ln.get("colour", "grey"), dash=ln.get("dash", "solid"), width=ln.get("width", 1))
        if vertical:
            shapes.append(
                dict(
                    type="line",
                    xref="x",
                    yref="paper",
                    x0=v,
                    x1=v,
                    y0=0,
                    y1=1,
                    line=style,
                    opacity=ln.get("opacity", 1.0),
                )
            )
        else:
            shapes.append(
                dict(
                    type="line",
                    xref="paper",
                    yref="y",
                    x0=0,
                    x1=1,
                    y0=v,
                    y1=v,
                    line=style,
                    opacity=ln.get("opacity", 1.0),
                )
            )
        if ln.get("text"):
            top = ln.get("position", "top") == "top"
            notes.append(
                dict(
                    x=v,
                    y=1 if top else 0,
                    xref="x",
                    yref="paper",
                    text=ln["text"],
                    showarrow=False,
                    xanchor="left",
                    yanchor="top" if top else "bottom",
                    font=dict(size=11),
                )
                if vertical
                else dict(
                    x=1,
                    y=v,
                    xref="paper",
                    yref="y",
                    text=ln["text"],
                    showarrow=False,
                    xanchor="right",
                    yanchor="bottom",
                    font=dict(size=11),
                )
            )
    fig.update_layout(shapes=list(fig.layout.shapes) + shapes, annotations=list(fig.layout.annotations) + notes)
    return fig


# ----------------------------------------------------------------- soft labels


def kernel_curve(
    sigma_m: float, kernel: str, max_m: float | None = None, compare: Sequence[str] = ("gaussian", "exponential")
) -> go.Figure:
    """k_σ(d) against distance d (metres), the chosen kernel bold, the others faint; σ marked."""
    max_m = max_m or max(4.0 * sigma_m, 100.0)
    d = np.linspace(0.0, max_m, 400)
    traces = []
    for i, name in enumerate(dict.fromkeys([kernel, *compare])):
        y = (d == 0).astype(float) if name == "onehot" else kernel_weights(d, sigma_m, name)
        traces.append(
            go.Scatter(
                x=d,
                y=y,
                name=name,
                mode="lines",
                line=dict(width=3 if name == kernel else 1, color=PALETTE[i]),
                opacity=1.0 if name == kernel else 0.5,
            )
        )
    fig = _fig(
        f"Kernel k_σ(d), σ = {fmt_m(sigma_m)}",
        traces,
        xaxis=length_axis(max_m, "distance d"),
        yaxis=dict(title="weight", range=[0, 1.05]),
        height=300,
    )
    return _rules(fig, [dict(x=sigma_m, dash="dot", text="σ")])


def target_heatmap(targets: Any, title: str, zmax: float | None = None, height: int = 420) -> go.Figure:
    """(B, B) target matrix as a heatmap, row i = image i, column j = location j.

    Colour is the target probability; ``zmax`` fixes the scale so two
    matrices side by side compare (default: the largest off-diagonal mass,
    so soft structure is visible next to the 1/row diagonal).
    """
    q = np.asarray(targets, dtype=np.float32)
    if zmax is None:
        off = q.copy()
        np.fill_diagonal(off, 0.0)
        zmax = float(max(off.max(), 1e-6)) if q.shape[0] > 1 else 1.0
    heat = go.Heatmap(
        z=q,
        zmin=0.0,
        zmax=zmax,
        colorscale="Viridis",
        colorbar=dict(title="q", thickness=12),
        hovertemplate="i=%{y} j=%{x} q=%{z:.3g}<extra></extra>",
    )
    return _fig(
        title,
        [heat],
        height=height,
        xaxis=dict(title="location j (space-filling order)", constrain="domain"),
        yaxis=dict(title="image i", autorange="reversed", scaleanchor="x", constrain="domain"),
    )


def effective_positives_figure(neff: Any, batch_size: int) -> go.Figure:
    """Effective positives 1/Σq² per row (space-filling order), with its median."""
    n = np.asarray(neff, dtype=np.float64)
    bars = go.Bar(x=np.arange(len(n)), y=n, marker_color=PALETTE[0], name="per row")
    fig = _fig(
        f"Effective positives per row (median {np.median(n):.2f} of {batch_size})",
        [bars],
        xaxis_title="row i (space-filling order)",
        yaxis_title="1 / Σ_j q_ij²",
        height=300,
    )
    return _rules(fig, [dict(y=float(np.median(n)), dash="dot", colour=PALETTE[1], text="median")])


# ----------------------------------------------------------------- errors


def _length_ticks(lo: float, hi: float) -> tuple[list, list]:
    ticks = [t for t in NICE_TICKS_M if lo / 3 <= t <= hi * 3]
    return ticks, [fmt_m(t) for t in ticks]


def error_histogram(errors: Mapping[str, Any], log_x: bool = True, bins: int = 40) -> go.Figure:
    """Histogram of error_m per group (run or city), log-spaced bins in metres.

    Binned here (numpy) and drawn as bars, so the browser gets ``bins`` numbers per group, not one per
    sample (210,000 samples would be megabytes of JSON).
    """
    fig = _fig("Error distribution", xaxis_title="error (m)", yaxis_title="samples", barmode="overlay", bargap=0)
    vals = {name: np.asarray(v, dtype=np.float64) for name, v in errors.items()}
    allv = np.concatenate(list(vals.values())) if vals else np.array([1.0])
    allv = allv[np.isfinite(allv)]
    lo, hi = max(float(allv.min()) if allv.size else 1.0, 1.0), max(float(allv.max()) if allv.size else 10.0, 10.0)
    edges = (
        np.linspace(np.log10(lo), np.log10(hi) + 1e-9, bins + 1) if log_x else np.linspace(0.0, hi, bins + 1)
    )  # shared bins
    traces = []
    for i, (name, v) in enumerate(vals.items()):
        x = np.log10(np.maximum(v, 1.0)) if log_x else v
        counts, _ = np.histogram(x[np.isfinite(x)], edges)
        traces.append(
            go.Bar(
                x=(edges[:-1] + edges[1:]) / 2,
                y=counts,
                width=np.diff(edges),
                name=str(name),
                opacity=0.6,
                marker_color=PALETTE[i % len(PALETTE)],
            )
        )
    fig.add_traces(traces)
    if log_x:
        ticks, text = _length_ticks(lo, hi)
        fig.update_xaxes(tickvals=np.log10(ticks), ticktext=text, title="error (log scale)")
    return fig


def error_cdf(
    errors: Mapping[str, Any], thresholds_m: Sequence[float] = (25, 50, 100, 250, 500, 1000), max_points: int = 2000
) -> go.Figure:
    """Empirical CDF of error_m per group on a log x axis, thresholds as dotted lines.

    A group of more than ``max_points`` samples is drawn through its exact quantiles at ``max_points``
    evenly spaced fractions (the curve a reader sees is the same; the browser gets 2,000 points, not 210,000).
    """
    fig = _fig(
        "Share of samples within distance",
        xaxis_title="error (log scale)",
        yaxis_title="fraction ≤ error",
        xaxis_type="log",
    )
    traces = []
    for i, (name, v) in enumerate(errors.items()):
        v = np.sort(np.asarray(v, dtype=np.float64))
        if v.size == 0:
            continue
        y = np.arange(1, v.size + 1) / v.size
        if v.size > max_points:
            pick = np.unique(np.linspace(0, v.size - 1, max_points).round().astype(int))
            v, y = v[pick], y[pick]
        traces.append(
            go.Scatter(
                x=np.maximum(v, 0.5),
                y=y,
                name=str(name),
                mode="lines",
                line=dict(color=PALETTE[i % len(PALETTE)], width=2, shape="hv"),
            )
        )
    fig.add_traces(traces)
    _rules(fig, [dict(x=t, dash="dot", colour="lightgrey") for t in thresholds_m])
    allv = (
        np.concatenate([np.asarray(v, dtype=np.float64).ravel() for v in errors.values()])
        if errors
        else np.array([1.0])
    )
    lo, hi = max(float(np.nanmin(allv)), 0.5), max(float(np.nanmax(allv)), 1.0)
    ticks, text = _length_ticks(lo, hi)
    fig.update_xaxes(tickvals=ticks, ticktext=text, tickangle=0)
    fig.update_yaxes(range=[0, 1.01])
    return fig


def rva_figure(curves: Mapping[str, Mapping[str, Any]], title: str = "Recall vs Area") -> go.Figure:
    """Recall-vs-Area curves, one per run: share of queries whose truth lies inside the knn-kde density's
    highest-density region of at most A km² (``swclip.analysis.metrics.hdr_area_km2``).

    curves: {name: {"areas_km2": (G,), "recall": (G,)}}; x log scale, reference areas as dotted lines.
    """
    fig = _fig(
        title,
        xaxis_title="search area A (km², log scale)",
        yaxis_title="recall: truth inside the area",
        xaxis_type="log",
    )
    fig.add_traces(
        [
            go.Scatter(
                x=np.asarray(c["areas_km2"], dtype=np.float64),
                y=np.asarray(c["recall"], dtype=np.float64),
                name=str(name),
                mode="lines",
                line=dict(color=PALETTE[i % len(PALETTE)], width=2, shape="hv"),
            )
            for i, (name, c) in enumerate(curves.items())
        ]
    )
    refs = ((1.0, "1 km²"), (1000.0, "a city"), (250_000.0, "a country"))
    _rules(fig, [dict(x=a, dash="dot", colour="lightgrey", text=t) for a, t in refs])
    fig.update_yaxes(range=[0, 1.01])
    return fig


# ----------------------------------------------------------------- variograms


def variogram_figure(
    curves: Sequence[Mapping[str, Any]],
    sigma_m: float | None = None,
    suggested_sigma_m: float | None = None,
    true_ranges_m: Sequence[float] = (),
    title: str = "Semivariogram",
    y_title: str = "γ(h)",
) -> go.Figure:
    """Empirical (markers) and fitted (line) semivariograms, one colour per curve.

    Each curve: ``name``, ``lags_m`` (L,), ``gamma`` (L,), optional ``fit_h_m``
    and ``fit_gamma`` for the model line, optional ``range_m``. Vertical lines:
    the sidebar σ, the σ the fitted range suggests, and true field ranges.
    """
    finite = [np.asarray(c["lags_m"], dtype=np.float64) for c in curves]
    finite = [v[np.isfinite(v)] for v in finite]
    top = max([float(v.max()) for v in finite if v.size] + [float(c.get("range_m") or 0) for c in curves] + [1.0])
    fig = _fig(title, xaxis=length_axis(top * 1.05, "lag h"), yaxis_title=y_title, height=400)
    rules = []
    for i, c in enumerate(curves):
        colour = PALETTE[i % len(PALETTE)]
        fig.add_trace(
            go.Scatter(
                x=np.asarray(c["lags_m"]),
                y=np.asarray(c["gamma"]),
                mode="markers",
                name=f"{c['name']} (empirical)",
                marker=dict(color=colour, size=7),
            )
        )
        if c.get("fit_h_m") is not None:
            fig.add_trace(
                go.Scatter(
                    x=np.asarray(c["fit_h_m"]),
                    y=np.asarray(c["fit_gamma"]),
                    mode="lines",
                    name=f"{c['name']} (fit)",
                    line=dict(color=colour, width=2),
                )
            )
        if c.get("range_m"):
            rules.append(dict(x=float(c["range_m"]), dash="dash", colour=colour, opacity=0.6))
    if sigma_m:
        rules.append(dict(x=float(sigma_m), colour="black", width=2, text=f"σ = {fmt_m(sigma_m)}"))
    if suggested_sigma_m:
        rules.append(
            dict(
                x=float(suggested_sigma_m),
                colour=PALETTE[4],
                dash="dashdot",
                text=f"suggested σ {fmt_m(suggested_sigma_m)}",
                position="bottom",
            )
        )
    rules += [dict(x=float(r), colour="lightgrey", dash="dot") for r in true_ranges_m]
    _rules(fig, rules)
    lags = [float(np.nanmax(c["lags_m"])) for c in curves if len(c["lags_m"]) and np.isfinite(c["lags_m"]).any()]
    if lags:
        fig.update_xaxes(range=[0, max(lags) * 1.05])
    return fig


# ----------------------------------------------------------------- embeddings


def embedding_scatter(
    xy: Any,
    colours: Any,
    anchor: int | None = None,
    highlight: Sequence[int] = (),
    title: str = "Embeddings, 2-D projection",
    hover: Sequence[str] | None = None,
) -> go.Figure:
    """2-D projection of embeddings, each dot coloured by where it is (``maps.position_colours``)."""
    xy = np.asarray(xy, dtype=np.float64)
    rgb = np.asarray(colours, dtype=np.uint8)
    fig = _fig(title, xaxis_title="component 1", yaxis_title="component 2", height=420, showlegend=True)
    fig.add_trace(
        # SVG up to a few thousand points (click-to-select is most reliable there), WebGL beyond.
        (go.Scatter if len(xy) <= 3000 else go.Scattergl)(
            x=xy[:, 0],
            y=xy[:, 1],
            mode="markers",
            name="samples",
            marker=dict(size=5, color=[f"rgb({r},{g},{b})" for r, g, b in rgb], opacity=0.8),
            text=hover,
            hovertemplate="%{text}<extra></extra>" if hover is not None else None,
        )
    )
    if len(highlight):
        h = np.asarray(highlight, dtype=int)
        fig.add_trace(
            go.Scatter(
                x=xy[h, 0],
                y=xy[h, 1],
                mode="markers",
                name="neighbours",
                marker=dict(size=11, color="rgba(0,0,0,0)", line=dict(color="black", width=2)),
            )
        )
    if anchor is not None:
        fig.add_trace(
            go.Scatter(
                x=[xy[anchor, 0]],
                y=[xy[anchor, 1]],
                mode="markers",
                name="anchor",
                marker=dict(size=16, symbol="star", color="gold", line=dict(color="black", width=1)),
            )
        )
    return fig


def mini_map(
    truth_latlon: Sequence[float],
    pred_latlon: Sequence[float] | None = None,
    others_latlon: Any = None,
    streets: Sequence[Any] = (),
    height: int = 260,
    title: str = "",
) -> go.Figure:
    """A small offline map as a cartesian lon/lat plot (aspect fixed for the latitude).

    Truth is a green circle, prediction a red cross with a line from the
    truth, ``others`` (e.g. nearest training images) small blue dots; streets
    grey lines for context.
    """
    traces = []
    pts = [np.asarray(truth_latlon, dtype=np.float64).reshape(1, 2)]
    if len(streets):
        # All streets as one trace, separated by None: one trace per street is slow to build and draw.
        xs, ys = [], []
        for p in streets:
            p = np.asarray(p, dtype=np.float64)
            xs += p[:, 1].tolist() + [None]
            ys += p[:, 0].tolist() + [None]
        traces.append(
            go.Scatter(x=xs, y=ys, mode="lines", line=dict(color="#c8c8c8", width=1), hoverinfo="skip", name="streets")
        )
    if others_latlon is not None and len(others_latlon):
        o = np.asarray(others_latlon, dtype=np.float64).reshape(-1, 2)
        pts.append(o)
        traces.append(
            go.Scatter(x=o[:, 1], y=o[:, 0], mode="markers", marker=dict(size=6, color=PALETTE[0]), name="neighbours")
        )
    t = pts[0][0]
    if pred_latlon is not None:
        p = np.asarray(pred_latlon, dtype=np.float64)
        pts.append(p.reshape(1, 2))
        traces.append(
            go.Scatter(
                x=[t[1], p[1]],
                y=[t[0], p[0]],
                mode="lines",
                line=dict(color=PALETTE[1], width=1, dash="dot"),
                hoverinfo="skip",
                name="error",
            )
        )
        traces.append(
            go.Scatter(
                x=[p[1]],
                y=[p[0]],
                mode="markers",
                marker=dict(size=12, symbol="x", color=PALETTE[1]),
                name="prediction",
            )
        )
    traces.append(
        go.Scatter(
            x=[t[1]],
            y=[t[0]],
            mode="markers",
            marker=dict(size=12, color=PALETTE[2], line=dict(color="white", width=1)),
            name="truth",
        )
    )
    allp = np.concatenate(pts)
    pad_lat = max(np.ptp(allp[:, 0]) * 0.15, 2e-4)
    pad_lon = max(np.ptp(allp[:, 1]) * 0.15, 2e-4)
    axis = dict(showticklabels=False, showgrid=False, zeroline=False)
    return _fig(
        title,
        traces,
        height=height,
        margin=dict(l=5, r=5, t=30 if title else 5, b=5),
        showlegend=False,
        xaxis=dict(range=[allp[:, 1].min() - pad_lon, allp[:, 1].max() + pad_lon], **axis),
        yaxis=dict(
            range=[allp[:, 0].min() - pad_lat, allp[:, 0].max() + pad_lat],
            scaleanchor="x",
            scaleratio=1.0 / max(math.cos(math.radians(float(t[0]))), 1e-3),
            **axis,
        ),
    )


def train_curves(log: pd.DataFrame) -> go.Figure:
    """Loss terms against step from a run's train_log.csv (every column named loss*)."""
    fig = _fig("Training loss", xaxis_title="step", yaxis_title="loss", height=280)
    cols = [c for c in log.columns if c.startswith("loss")] if "step" in log else []
    for i, c in enumerate(cols):
        fig.add_trace(
            go.Scatter(x=log["step"], y=log[c], name=c, mode="lines", line=dict(color=PALETTE[i % len(PALETTE)]))
        )
    return fig
