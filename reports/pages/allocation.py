"""Page 7: compute-optimal allocation for a few budgets, one page per NVS benchmark."""
from __future__ import annotations

import math
from typing import Iterable

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from fitting import inverse_transform
from reports.common import (FITTED_NVS_METRICS, METRIC_LABEL, NO_NVS, Study, count_label, message_page, new_page, sci,
                            table_on)
from reports.fits import MetricFit

def allocation_budgets(study: Study) -> np.ndarray:
    """Four compute budgets (GFLOP): powers of ten from one decade below the largest run to 100x beyond it."""
    c_max = float(study.checkpoints["compute_gflop"].max())
    k = math.floor(math.log10(c_max))
    return 10.0 ** np.arange(k - 1, k + 3)


def flops_per_sample(study: Study) -> pd.Series:
    """Training FLOPs per sample of each preset (median over its checkpoints of flops / samples)."""
    ck = study.checkpoints[study.checkpoints["samples"] > 0].merge(study.runs[["run_id", "preset"]], on="run_id")
    return (ck["flops"] / ck["samples"]).groupby(ck["preset"]).median()


def allocation_table(study: Study, fit: MetricFit, budgets: np.ndarray) -> tuple[list[str], list[list[str]]]:
    """Rows per budget: predicted metric at every data size D, the best D, the model size and how much data.

    The law L(C, D) has no model-size term, so the size comes from the data: the preset of the frontier point (at
    the best D) with the largest compute <= the budget, i.e. the size that is compute-optimal there. Beyond the
    largest trained compute it is the last frontier size (marked *: extrapolated). Samples = budget / (training
    FLOPs per sample of that preset); epochs = samples / D.
    """
    d_values = sorted(study.runs["D"].unique())
    fps = flops_per_sample(study)
    columns = ["budget C (GFLOP)"] + [f"{METRIC_LABEL[fit.metric].split(' ')[0]} @ D={count_label(d)}"
                                      for d in d_values] + ["best D", "model size", "samples (epochs)"]
    rows = []
    front = fit.frontier_points
    for budget in budgets:
        preds = inverse_transform(fit.predict(np.full(len(d_values), budget), np.asarray(d_values, float)),
                                  fit.metric)
        best = int(np.nanargmax(preds) if fit.metric in ("psnr", "ssim") else np.nanargmin(preds))
        d_best = d_values[best]
        at_d = front[front["D"] == d_best].sort_values("C")
        below = at_d[at_d["C"] <= budget]
        leader = (below.iloc[-1] if len(below) else at_d.iloc[0]) if len(at_d) else None
        extrapolated = bool(len(at_d)) and budget > float(at_d["C"].max())
        fmt = "{:.2f}" if fit.metric == "psnr" else "{:.3f}"
        row = [sci(budget, 1) + ("*" if extrapolated else "")]
        row += [fmt.format(p) + (" ←" if i == best else "") for i, p in enumerate(preds)]
        row.append(count_label(d_best))
        if leader is None:
            row += ["n/a", "n/a"]
        else:
            preset = leader["preset"]
            samples = budget * 1e9 / float(fps[preset]) if preset in fps else float("nan")
            row += [f"{preset}{'*' if extrapolated else ''}",
                    f"{count_label(samples)} ({samples / d_best:.3g} ep)" if np.isfinite(samples) else "n/a"]
        rows.append(row)
    return columns, rows


def allocation_page(study: Study, bench: str, fits: dict[tuple[str, str], MetricFit]) -> Figure:
    usable = [fits[(bench, m)] for m in FITTED_NVS_METRICS if fits[(bench, m)].ok]
    if not usable or study.checkpoints.empty:
        return message_page(f"Compute-optimal allocation · {bench}",
                            "No fitted law, so no allocation can be predicted (see the fitted-parameters page for "
                            "why). Evaluate more checkpoints of at least two data fractions.")
    budgets = allocation_budgets(study)
    fig = new_page(f"Compute-optimal allocation · {bench}",
                   "Predicted metric for a training budget C at each data size D, from the fitted L(C,D) (arrow: "
                   "best D). Model size: the preset on the compute-optimal frontier at that budget and D. "
                   "* = beyond the largest trained compute (extrapolated).")
    height = 0.8 / len(usable)
    for i, fit in enumerate(usable):
        columns, rows = allocation_table(study, fit, budgets)
        top = 0.88 - i * height
        ax = fig.add_axes((0.03, top - height + 0.04, 0.94, height - 0.05))
        n_d = len(columns) - 4
        table_on(ax, rows, columns, font_size=8.5,
                 col_widths=[0.13] + [0.5 / max(n_d, 1)] * n_d + [0.09, 0.1, 0.18])
        ax.set_title(f"{METRIC_LABEL[fit.metric]} · law: {fit.formula}", loc="left", fontsize=9)
    fig.text(0.03, 0.03, "Method: grid search over the store's data sizes D with the fitted law; the law has no "
             "model-size term, so the model size is read off the measured frontier (the fitting package's "
             "optimal_allocation applies to N-D laws, not to L(C,D)). Training FLOPs per sample per preset are "
             "measured from the store (flops / samples).", fontsize=7.5, color="0.3", wrap=True)
    return fig


def figures(study: Study, fits: dict) -> Iterable[tuple[str, Figure]]:
    if not study.nvs_benches:
        yield "07_allocation", message_page("Compute-optimal allocation", NO_NVS)
    for bench in study.nvs_benches:
        yield f"07_allocation_{bench}", allocation_page(study, bench, fits)


def page_count(n_nvs_benches: int, n_probe_benches: int, n_runs: int, holdout: bool) -> int:
    return max(1, n_nvs_benches)
