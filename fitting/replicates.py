"""Runs that differ only in their seed are replicates of one grid cell: average them before the frontier.

A grid with `grid.seeds: [0, 1]` trains every (size, D, length) twice. The frontier takes, at each compute, the
lowest loss of any checkpoint (`frontier.running_frontier`); with two seeds at the same C it would pick the luckier
one, biasing every frontier point low by the seed spread and fitting the law to minima, not to expected losses.
`average_replicates` replaces the checkpoints of one cell and step by one point whose target is the mean of theirs
(in the fitted space: MSE, 1-SSIM, LPIPS; PSNRs are averaged as MSEs), with `n_replicates` and `seeds` saying what
was averaged. `ResultsStore.eval_points` provides the `replicate` key (`rayder_core.run_identity.replicate_key`).
"""
from __future__ import annotations

import pandas as pd

from .frontier import inverse_transform, transform_metric

REPLICATE_MODES = ("mean", "all")
"""mean: one point per cell and step, the replicates' mean; all: every run is its own point (the frontier then
takes the best seed at each compute)."""


def average_replicates(points: pd.DataFrame, metric: str) -> tuple[pd.DataFrame, int]:
    """(points with replicates averaged, number of cells that had more than one replicate).

    Rows are grouped by (`replicate`, `step`); a group of one row is kept as it is. A group's row is its first
    run's (lowest seed) with `value` = inverse_transform(mean of the transformed values), `compute_gflop` and
    `samples` their means (equal for replicates), `n_replicates` and `seeds` (e.g. "0,1"). Points without a
    `replicate` column, or without two runs of one cell, are returned unchanged."""
    if "replicate" not in points.columns or points.empty:
        return points, 0
    if not points.duplicated(["replicate", "step"]).any():  # nothing to average: the points as they came
        return points, 0
    df = points.copy()
    df["_y"] = transform_metric(df["value"], metric)
    order = ["replicate", "step"] + (["seed"] if "seed" in df.columns else []) + ["run_id"]
    df = df.sort_values(order)
    groups = df.groupby(["replicate", "step"], sort=False)
    first = groups.head(1).set_index(["replicate", "step"])
    n = groups["run_id"].nunique()
    first["n_replicates"] = n
    first["value"] = inverse_transform(groups["_y"].mean().reindex(first.index).to_numpy(), metric)
    for col in ("compute_gflop", "samples"):
        if col in df.columns:
            first[col] = groups[col].mean().reindex(first.index)
    if "seed" in df.columns:
        first["seeds"] = groups["seed"].agg(lambda s: ",".join(str(v) for v in s.dropna())).reindex(first.index)
    out = first.reset_index().drop(columns="_y")
    cells = out.loc[out["n_replicates"] > 1, "replicate"].nunique()
    return out[[c for c in [*points.columns, "n_replicates", "seeds"] if c in out.columns]], int(cells)


__all__ = ["REPLICATE_MODES", "average_replicates"]
