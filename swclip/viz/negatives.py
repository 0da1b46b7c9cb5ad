"""Plotly figures of the Negatives page (testable without Streamlit)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from swclip.method.negatives import BatchNegatives
from swclip.viz.figures import _fig, _rules, length_axis
from swclip.viz.scale import fmt_m

FALSE_COLOUR, HARD_COLOUR = "#1f77b4", "#d62728"  # blue: false negatives, red: hard negatives


def negatives_heatmap(neg: BatchNegatives, title: str = "", height: int = 440) -> go.Figure:
    """(B, B) map: false negatives in blue, hard negatives in red, the shade their strength |r − m|; others white."""
    signed = np.where(neg.hard, neg.strength, 0.0) - np.where(neg.false, neg.strength, 0.0)
    zmax = float(np.abs(signed).max()) or 1.0
    colours = [[0.0, FALSE_COLOUR], [0.5, "#ffffff"], [1.0, HARD_COLOUR]]
    hm = go.Heatmap(
        z=signed,
        zmin=-zmax,
        zmax=zmax,
        colorscale=colours,
        colorbar=dict(title="false ← |r| → hard", len=0.8),
        customdata=np.stack([neg.h_m, np.exp(neg.log_w)], -1),
        hovertemplate=(
            "row %{y}, col %{x}<br>%{customdata[0]:.0f} m apart<br>weight %{customdata[1]:.3f}<extra></extra>"
        ),
    )
    return _fig(
        title or "Negatives of the batch: false (blue) and hard (red)",
        [hm],
        height=height,
        yaxis=dict(autorange="reversed", title="image i"),
        xaxis=dict(title="column j"),
    )


def gamma_figure(neg: BatchNegatives, variogram, max_points: int = 4000, seed: int = 0) -> go.Figure:
    """The batch's pairs (distance, cosine distance) coloured by class, the fitted γ(h), and the split distance."""
    iu = np.triu_indices(neg.h_m.shape[0], 1)
    iu = (iu[0][~neg.same_place[iu]], iu[1][~neg.same_place[iu]])  # negatives only: same-place pairs are positives
    h, c = neg.h_m[iu], neg.cos_dist[iu]
    cls = np.where(neg.false[iu] | neg.false.T[iu], 1, np.where(neg.hard[iu] | neg.hard.T[iu], 2, 0))
    if h.size > max_points:
        keep = np.random.default_rng(seed).choice(h.size, max_points, replace=False)
        h, c, cls = h[keep], c[keep], cls[keep]
    traces = [
        go.Scattergl(
            x=h[cls == k], y=c[cls == k], mode="markers", name=name, marker=dict(size=4, color=colour, opacity=0.6)
        )
        for k, name, colour in ((0, "other negatives", "#b0b0b0"), (1, "false", FALSE_COLOUR), (2, "hard", HARD_COLOUR))
    ]
    grid = np.linspace(0.0, max(float(neg.h_m.max()), 1.0), 200)
    traces.append(
        go.Scatter(
            x=grid,
            y=variogram.fit.gamma(grid),
            mode="lines",
            name=f"γ(h), {variogram.fit.model}",
            line=dict(color="black", width=2),
        )
    )
    fig = _fig(
        "γ(h) and the batch's pairs",
        traces,
        xaxis=length_axis(grid[-1], "distance h"),
        yaxis=dict(title="cosine distance 1 − v·v'"),
    )
    label = {"rho": "ρ", "practical": "practical range", "effective": "effective range"}.get(
        variogram.split_kind, "range"
    )
    return _rules(
        fig, [dict(x=min(variogram.split_m, grid[-1]), dash="dash", text=f"{label} {fmt_m(variogram.split_m)}")]
    )


def share_figure(shares: pd.DataFrame) -> go.Figure:
    """Share of false and hard negatives per distance bin."""
    return _fig(
        "Share of false and hard negatives against distance",
        [
            go.Scatter(
                x=shares["lag_m"],
                y=shares["false_share"],
                mode="lines+markers",
                name="false",
                line=dict(color=FALSE_COLOUR),
            ),
            go.Scatter(
                x=shares["lag_m"],
                y=shares["hard_share"],
                mode="lines+markers",
                name="hard",
                line=dict(color=HARD_COLOUR),
            ),
        ],
        xaxis=length_axis(float(np.nanmax(shares["lag_m"])) * 1.05 if len(shares) else 1.0, "distance h"),
        yaxis=dict(title="share of pairs", range=[0, 1]),
    )
