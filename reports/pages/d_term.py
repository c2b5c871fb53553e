"""Page 3b: what the MSE law's D term rests on, one page per NVS benchmark: each run's held-out MSE against the
epochs it has trained (samples seen / D), where it bottomed out, and per data size how many independent runs hold the
frontier and whether the runs reached their minimum (data-limited) or were still improving (compute-limited).
Beside it: the D exponent refitted without the smallest data size (`fitting.d_term`, docs/benchmarks.md)."""
from __future__ import annotations

import textwrap
from typing import Iterable

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from fitting import transform_metric
from fitting.d_term import (MIN_CHECKPOINTS, TURNED_UP_TOL, beta_without_smallest_d, data_limited_by_d,
                            format_projection, frontier_runs_by_d, held_out_minima, largest_d_projection)
from reports.common import FRACTION_CMAP, NO_NVS, Study, message_page, new_page, shades, table_on
from reports.fits import MetricFit

TITLE = "What the D term rests on"


def beta_line(fit: MetricFit) -> str:
    """'beta 1.99; refitted without D = 64: 2.39' from the page's law (its fresh fit's own points), or why not."""
    law = fit.band_fit
    without = beta_without_smallest_d(law) if law is not None else None
    if without is None:
        return "no refit without the smallest D (beta fixed or absent, or fewer than 3 data sizes)"
    return f"beta {law.params['beta']:.3g}; refitted without D = {without[0]:g}: {without[1]:.3g}"


def d_term_page(study: Study, bench: str, fits: dict[tuple[str, str], MetricFit]) -> Figure:
    """Held-out MSE vs epochs per run (coloured by D, its minimum marked where it turned up) and the per-D table."""
    title = f"{TITLE} · {bench}"
    fit = fits.get((bench, "psnr"))
    points = study.eval_points(bench, "psnr")
    if fit is None or not fit.ok or points.empty or "samples" not in points.columns:
        why = fit.problem if fit is not None and fit.problem else "no MSE law or no evaluated checkpoints"
        return message_page(title, f"No D-term diagnostic for {bench}: {why}.")
    points = points.assign(y=transform_metric(points["value"], "psnr"))
    minima = held_out_minima(points)
    fig = new_page(title, "Left: held-out MSE of every run with >= "
                   f"{MIN_CHECKPOINTS} evaluated checkpoints against the epochs it has trained (clips seen / D); open "
                   f"circles: the run's minimum where its last checkpoint is > {TURNED_UP_TOL:.0%} above it (it passed "
                   "its data's best: data-limited). Right: per data size, the independent runs (trunks) on the "
                   "frontier the law is fitted to, and how many runs turned up. A D term fitted where one run "
                   "holds the frontier, or where no run reached its minimum, rests on little.")
    ax = fig.add_axes([0.06, 0.1, 0.5, 0.76])
    d_values = sorted(points["D"].unique())
    colour = dict(zip(d_values, shades(FRACTION_CMAP, len(d_values))))
    shown = points[points["run_id"].isin(minima["run_id"])]  # the runs with enough checkpoints to show a minimum
    for _, g in shown.sort_values("step").groupby("run_id"):
        d = g["D"].iloc[0]
        ax.plot(g["samples"] / d, g["y"], "-", color=colour[d], lw=1, alpha=0.8)
    for r in minima[minima["turned_up"]].itertuples():
        ax.plot(r.epochs_min, r.y_min, "o", mfc="none", mec=colour[r.D], ms=7)
    for d in d_values:
        ax.plot([], [], "-", color=colour[d], label=f"D = {d:g}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("epochs (clips seen / D)")
    ax.set_ylabel("held-out MSE (pixels in [-1, 1])")
    ax.legend(loc="upper right")
    right = fig.add_axes([0.6, 0.5, 0.37, 0.36])
    table_on(right, d_term_rows(fit.frontier, minima), ["D", "frontier runs", "turned up", "epochs at min",
                                                        "epochs at end"], font_size=8,
             col_widths=[0.1, 0.2, 0.18, 0.26, 0.26])
    lines = [beta_line(fit)]
    projection = largest_d_projection(points, minima)
    if projection:
        lines.append(format_projection(projection) + " (read off the smaller D: a lower bound where the epochs to "
                     "the minimum grow with D)")
    fig.text(0.6, 0.56, "\n".join(textwrap.fill(line, 56) for line in lines), va="top", fontsize=9)
    return fig


def d_term_rows(frontier: pd.DataFrame, minima: pd.DataFrame) -> list[list[str]]:
    """Table cells per D: frontier runs (trunks), turned up / runs, median epochs at the minimum and at the end."""
    runs = frontier_runs_by_d(frontier) if len(frontier) else pd.Series(dtype=int)
    by_d = data_limited_by_d(minima).set_index("D") if len(minima) else pd.DataFrame()
    rows = []
    for d in sorted(set(runs.index) | set(by_d.index)):
        r = by_d.loc[d] if d in by_d.index else None
        rows.append([f"{d:g}", str(int(runs.get(d, 0))),
                     "-" if r is None else f"{int(r['turned_up'])} / {int(r['runs'])}",
                     "-" if r is None or not np.isfinite(r["epochs_min"]) else f"{r['epochs_min']:.0f}",
                     "-" if r is None else f"{r['epochs_last']:.0f}"])
    return rows


def figures(study: Study, fits: dict) -> Iterable[tuple[str, Figure]]:
    if not study.nvs_benches:
        yield "03b_d_term", message_page(TITLE, NO_NVS)
    for bench in study.nvs_benches:
        yield f"03b_d_term_{bench}", d_term_page(study, bench, fits)


def page_count(n_nvs_benches: int, n_probe_benches: int, n_runs: int, holdout: bool) -> int:
    return max(1, n_nvs_benches)
