"""Page 3: compute-optimal frontier and fitted law (paper Figure 11), one page per NVS benchmark."""
from __future__ import annotations

import math
import textwrap
from typing import Iterable

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from fitting import inverse_transform
from reports.common import (FITTED_NVS_METRICS, FRACTION_CMAP, METRIC_LABEL, NO_NVS, Study, count_label, left_out_line,
                            message_page, new_page, shades, split_by_data)
from reports.fits import MetricFit, format_holdout

def _compute_grid(front: pd.DataFrame, extend: float = 10.0) -> tuple[np.ndarray, float]:
    c_min, c_max = float(front["C"].min()), float(front["C"].max())
    return np.logspace(math.log10(c_min), math.log10(c_max * extend), 200), c_max


def frontier_page(study: Study, bench: str, fits: dict[tuple[str, str], MetricFit]) -> Figure:
    """Frontier points per D, fitted L(C, D) curves with their 95% bootstrap band, the equation and hold-out errors."""
    metrics, missing = split_by_data(study, bench, FITTED_NVS_METRICS)
    metrics = metrics or list(FITTED_NVS_METRICS[:1])
    fig = new_page(f"Compute-optimal frontier and fitted law · {bench}",
                   "Grey: every evaluated checkpoint. Filled: compute-optimal frontier per data size D (lowest error "
                   "so far at that D). Lines: fitted L(C,D) = L_inf + (A C^-alpha + B D^-beta)^gamma, dashed beyond "
                   "the data; shaded: 95% bootstrap band." + left_out_line(bench, missing))
    # one panel per metric with values, and the legend/notes panel last (2 x 2 for three metrics, else one row)
    rows, cols = (2, 2) if len(metrics) == 3 else (1, len(metrics) + 1)
    axes = list(fig.subplots(rows, cols, squeeze=False,
                             gridspec_kw={"left": 0.07, "right": 0.97, "top": 0.87 if rows == 2 else 0.82,
                                          "bottom": 0.07 if rows == 2 else 0.12, "hspace": 0.35,
                                          "wspace": 0.18 if rows == 2 else 0.28}).flat)
    d_values = sorted(study.runs["D"].unique())
    d_colour = dict(zip(d_values, shades(FRACTION_CMAP, len(d_values))))
    levels = baseline_levels(study, bench)
    for ax, metric in zip(axes, metrics):
        _frontier_panel(ax, fits[(bench, metric)], d_colour, levels if metric == "psnr" else {})
    info = axes[-1]
    info.axis("off")
    handles = [Line2D([], [], color=d_colour[d], marker="o", lw=2, label=f"D = {count_label(d)} videos")
               for d in d_values]
    handles.append(Line2D([], [], color="0.6", marker=".", ls="", label="all checkpoints"))
    handles += [Line2D([], [], color=colour, ls=":", lw=1.2, label=f"{label} (no model)")
                for name, (label, colour) in BASELINE_STYLE.items() if name in levels]
    info.legend(handles=handles, loc="upper left", frameon=False, title="data size")
    lines = ["Held-out extrapolation error (mean |relative error| of refits without the held-out points):"]
    for metric in metrics:
        fit = fits[(bench, metric)]
        lines.append(f"  {fit.target}: " + (format_holdout(fit.holdout) if fit.ok else "no fit"))
    lines.append("")
    for metric in metrics:
        fit = fits[(bench, metric)]
        lines.append(f"{fit.target}: {fit.source if fit.ok else fit.problem}")
        lines += [f"    note: {n}" for n in fit.notes[:2]]
    wrapped = []
    for line in lines:
        wrapped += textwrap.wrap(line, 85 if cols == 2 else 55, subsequent_indent="      ") or [""]
    info.text(0.0, 0.55, "\n".join(wrapped), fontsize=7.5, va="top", transform=info.transAxes, linespacing=1.4)
    return fig


BASELINE_STYLE = {"blend_psnr": ("frame blend", "tab:red"), "copy_psnr": ("nearest context view", "tab:purple")}
"""The no-model baselines drawn on the PSNR panel (`rayder_core.evaluation.baselines`): label, colour."""


def baseline_levels(study: Study, bench: str) -> dict[str, float]:
    """PSNR (dB) of the recorded no-model baselines on `bench` ({metric: median over evaluations}; they do not
    depend on the model, so every evaluation records the same value); empty when none was recorded."""
    ev = study.evals
    if ev.empty:
        return {}
    rows = ev[(ev["bench"] == bench) & ev["metric"].isin(list(BASELINE_STYLE))].dropna(subset=["value"])
    return {m: float(v) for m, v in rows.groupby("metric")["value"].median().items()}


def _frontier_panel(ax: plt.Axes, fit: MetricFit, d_colour: dict, levels: dict[str, float]) -> None:
    metric = fit.metric
    ax.set_xscale("log")
    ax.set_xlabel("training compute C (GFLOP)")
    ax.set_ylabel(METRIC_LABEL[metric])
    ax.set_title(f"{METRIC_LABEL[metric]} (fitted as {fit.target})")
    front = fit.frontier
    if front.empty:
        ax.text(0.5, 0.5, fit.problem or "no data", ha="center", va="center", transform=ax.transAxes, color="0.4",
                wrap=True)
        return
    ax.scatter(front["C"], front["value"], s=8, color="0.75", zorder=1)
    lo_v, hi_v = float(front["value"].min()), float(front["value"].max())
    pad = 0.08 * (hi_v - lo_v or abs(hi_v) or 1.0)
    for d, grp in front[front["on_frontier_d"]].groupby("D"):
        colour = d_colour.get(d, "0.3")
        ax.plot(grp["C"], grp["value"], "o", color=colour, ms=5, mec="k", mew=0.4, zorder=3)
        if not fit.ok:
            continue
        grid, c_max = _compute_grid(front)
        y_hat = inverse_transform(fit.predict(grid, d), metric)
        inside = grid <= c_max
        ax.plot(grid[inside], y_hat[inside], "-", color=colour, lw=1.6, zorder=2)
        ax.plot(grid[~inside], y_hat[~inside], "--", color=colour, lw=1.2, zorder=2)
        band = fit.band(grid, d)
        if band is not None:
            lo, hi = (inverse_transform(b, metric) for b in band)
            ax.fill_between(grid, np.minimum(lo, hi), np.maximum(lo, hi), color=colour, alpha=0.18, lw=0,
                            zorder=0)
    # Room for the equation: below the saturating curves of increasing metrics, above those of LPIPS.
    increasing = metric in ("psnr", "ssim")
    top = max([hi_v + pad * (1 if increasing else 4), *(v + pad for v in levels.values())])
    ax.set_ylim(lo_v - pad * (4 if increasing else 1), top)
    for name, value in levels.items():
        label, colour = BASELINE_STYLE[name]
        ax.axhline(value, color=colour, ls=":", lw=1.2, zorder=1)
        ax.text(0.02, value, f" {label} {value:.2f} dB", color=colour, fontsize=7, va="bottom",
                transform=ax.get_yaxis_transform())
    if fit.ok:
        text = f"{fit.formula}\nR^2 (log) = {fit.r2_log:.3f} · {fit.n_points} frontier points"
        ax.text(0.98, 0.03 if increasing else 0.97, text, transform=ax.transAxes, fontsize=7.5,
                va="bottom" if increasing else "top", ha="right", zorder=5,
                bbox={"boxstyle": "round,pad=0.3", "fc": "white", "ec": "0.7", "alpha": 0.9})
    else:
        ax.text(0.5, 0.5, "\n".join(textwrap.wrap(fit.problem, 50)), ha="center", va="center",
                transform=ax.transAxes, fontsize=8, color="tab:red",
                bbox={"boxstyle": "round", "fc": "white", "ec": "tab:red"})


def figures(study: Study, fits: dict) -> Iterable[tuple[str, Figure]]:
    if not study.nvs_benches:
        yield "03_frontier", message_page("Compute-optimal frontier and fitted law", NO_NVS)
    for bench in study.nvs_benches:
        yield f"03_frontier_{bench}", frontier_page(study, bench, fits)


def page_count(n_nvs_benches: int, n_probe_benches: int, n_runs: int, holdout: bool) -> int:
    return max(1, n_nvs_benches)
