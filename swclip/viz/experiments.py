"""Figures of an experiment (``swclip.workflows.experiments``): a metric against σ with its spread across seeds.

Takes the DataFrame of ``swclip.analysis.experiment_stats.summary_table``; returns plotly figures,
testable without Streamlit.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from swclip.analysis import experiment_stats as es
from swclip.viz.figures import PALETTE, _fig

METRIC_LABELS = {
    "median_m": "median error (m)",
    "mean_m": "mean error (m)",
    "acc@100m": "acc@100 m",
    "acc@250m": "acc@250 m",
    "acc@500m": "acc@500 m",
    "recall@1": "recall@1",
}


def sweep_rows(table: pd.DataFrame) -> pd.DataFrame:
    """The σ sweep's rows (configs ``swclip-s<σ>``), by σ."""
    sweep = table[table["config"].str.fullmatch(r"swclip-s[0-9.]+")]
    return sweep.sort_values("sigma_m")


def sigma_figure(
    table: pd.DataFrame,
    metric: str = "median_m",
    split: str = "test",
    val_sigma_m: list | None = None,
    variogram_sigma_m: list | None = None,
    truth_sigma_m: float | None = None,
    title: str | None = None,
) -> go.Figure:
    """``metric`` on ``split`` against σ (log axis): SW-CLIP's mean across seeds with a ±1 sd band,
    one-hot CLIP as a horizontal band (mean ± sd), and vertical marks at the validation-chosen σ,
    the variogram-suggested σ (the means of the per-seed values, which are listed in the hover) and
    the σ that ``suggest_sigma_m`` gives for the world's shortest true field range.
    """
    col, sd = f"{split}_{metric}", f"{split}_{metric}_sd"
    sweep = sweep_rows(table)
    if sweep.empty:
        raise ValueError("the experiment has no finished σ-sweep run")
    x = sweep["sigma_m"].to_numpy(float)
    y, s = sweep[col].to_numpy(float), np.nan_to_num(sweep[sd].to_numpy(float))
    label = METRIC_LABELS.get(metric, metric)
    traces = []
    clip = table[table["config"] == "clip"]
    lo_x, hi_x = x.min() / 1.3, x.max() * 1.3
    if not clip.empty:
        cm, cs = float(clip[col].iloc[0]), float(np.nan_to_num(clip[sd].iloc[0]))
        traces += [
            go.Scatter(
                x=[lo_x, hi_x, hi_x, lo_x],
                y=[cm - cs, cm - cs, cm + cs, cm + cs],
                fill="toself",
                mode="none",
                fillcolor="rgba(127,127,127,0.2)",
                name="one-hot CLIP ± 1 sd",
                hoverinfo="skip",
            ),
            go.Scatter(
                x=[lo_x, hi_x],
                y=[cm, cm],
                mode="lines",
                line=dict(color="#7f7f7f", dash="dash"),
                name=f"one-hot CLIP (mean of {int(clip['n_seeds'].iloc[0])} seeds)",
            ),
        ]
    traces += [
        go.Scatter(
            x=np.r_[x, x[::-1]],
            y=np.r_[y - s, (y + s)[::-1]],
            fill="toself",
            mode="none",
            fillcolor="rgba(31,119,180,0.2)",
            name="SW-CLIP ± 1 sd across seeds",
            hoverinfo="skip",
        ),
        go.Scatter(
            x=x,
            y=y,
            mode="lines+markers",
            line=dict(color=PALETTE[0]),
            name="SW-CLIP, mean across seeds",
            customdata=np.c_[s, sweep["n_seeds"].to_numpy()],
            hovertemplate="σ = %{x:.0f} m<br>%{y:.3~f} ± %{customdata[0]:.3~f} (%{customdata[1]} seeds)<extra></extra>",
        ),
    ]
    # the marks are traces, not layout shapes: on a log axis plotly reads annotation positions as log10
    ys = np.r_[y - s, y + s] if clip.empty else np.r_[y - s, y + s, cm - cs, cm + cs]
    y0, y1 = float(np.nanmin(ys)), float(np.nanmax(ys))
    marks = []
    for values, colour, text in (
        (val_sigma_m, PALETTE[1], "validation-chosen σ"),
        (variogram_sigma_m, PALETTE[2], "variogram-suggested σ"),
    ):
        vals = [float(v) for v in (values or []) if v is not None and np.isfinite(v)]
        if vals:
            marks.append(
                (
                    float(np.mean(vals)),
                    colour,
                    "dot",
                    f"{text}: {np.mean(vals):.0f} m (per seed {', '.join(f'{v:.0f}' for v in vals)})",
                )
            )
    if truth_sigma_m is not None:
        marks.append(
            (float(truth_sigma_m), "#000000", "longdash", f"σ for the shortest true range: {truth_sigma_m:.0f} m")
        )
    for xv, colour, dash, text in marks:
        traces.append(
            go.Scatter(
                x=[xv, xv],
                y=[y0, y1],
                mode="lines",
                line=dict(color=colour, dash=dash, width=2),
                name=text,
                hovertemplate=text + "<extra></extra>",
            )
        )
    # ticks at the grid's own σ values, in metres: plotly's log-axis minor ticks read "2, 3, 5" without a unit
    xaxis = dict(type="log", title="σ (m)", tickvals=x.tolist(), ticktext=[f"{v:g} m" for v in x], minor=dict(ticks=""))
    return _fig(title or f"{label} on {split} against σ", traces, xaxis=xaxis, yaxis=dict(title=label), height=460)


HEADLINE_CONFIGS = (
    "clip",
    es.VAL_SIGMA,
    es.SWCLIP_VAR,
    es.VAL_NC,
    "semivariogram",
    es.VAL_EXP,
    es.VAL_CLIP,
    es.VAL_SMOOTH,
    es.VAL_SHUFFLED,
)


def per_city_figure(per_city: pd.DataFrame, label: str, configs=HEADLINE_CONFIGS) -> go.Figure:
    """Grouped bars: one group per city, one bar per config (mean across seeds, ±1 sd error bar).

    per_city: ``swclip.analysis.experiment_stats.per_city`` (config, city, mean, sd, n_seeds).
    """
    traces = []
    for i, config in enumerate(c for c in configs if c in set(per_city["config"])):
        d = per_city[per_city["config"] == config].sort_values("city")
        traces.append(
            go.Bar(
                x=d["city"],
                y=d["mean"],
                name=config,
                marker_color=PALETTE[i % len(PALETTE)],
                error_y=dict(type="data", array=d["sd"].fillna(0).to_numpy(), visible=True),
                customdata=d["n_seeds"],
                hovertemplate="%{x}: %{y:.3~f} (%{customdata} seeds)<extra>" + config + "</extra>",
            )
        )
    return _fig(f"{label} per city, test (mean ± sd across seeds)", traces, barmode="group", yaxis=dict(title=label))
