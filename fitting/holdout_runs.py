"""Validate a law fitted on a grid against runs that were not part of it (a grid's `holdout:` runs).

The law is fitted on the grid's frontier alone (`--sweep <name>`); every evaluated checkpoint of the held-out runs
(`<name>-holdout`) is then a prediction problem: the law's value at the checkpoint's (C, D) against the measured
target (e.g. MSE), with the bootstrap band and the Student-t lack-of-fit interval of `fitting.extrapolation`. The summary
is the relative error at each held-out run's final checkpoint (the issue-10 target: |error| <= 5% of MSE).
"""
from __future__ import annotations

import pandas as pd

from .extrapolation import predict_holdout
from .fit import FitResult
from .frontier import transform_metric

HOLDOUT_SUFFIX = "-holdout"  # the sweep of a grid's held-out runs is the grid's name + this suffix


def holdout_points(store, bench: str, metric: str, sweep: str) -> pd.DataFrame:
    """Every evaluated checkpoint of the runs of `sweep` on `bench`: run_id, step, C (GFLOP), D, value, y."""
    pts = store.eval_points(bench, metric, sweep=sweep)
    if pts.empty:
        return pts
    pts = pts.copy()
    pts["C"] = pts["compute_gflop"].astype(float)
    pts["D"] = pts["D"].astype(float)
    pts["y"] = transform_metric(pts["value"], metric)
    return pts.sort_values(["run_id", "step"]).reset_index(drop=True)


def validate_holdout(fit: FitResult, points: pd.DataFrame, *, ci: float = 0.95) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Predict every held-out checkpoint with `fit`. Returns (per-checkpoint table: run_id, step, C, D, measured,
    predicted, rel_err, band_lo/band_hi (bootstrap), lo/hi (lack-of-fit), inside; per-run summary at the final
    checkpoint: run_id, step, C, D, measured, predicted, rel_err, inside, max_abs_rel_err over the run's checkpoints
    and beyond_grid_c (C beyond the largest fitted C, i.e. an extrapolation in compute))."""
    if points.empty:
        raise ValueError("validate_holdout: no evaluated checkpoints of held-out runs")
    table = predict_holdout(fit, points[["C", "D", "y"]].rename(columns={"y": fit.y}), ci=ci)
    table.insert(0, "step", points["step"].to_numpy())
    table.insert(0, "run_id", points["run_id"].to_numpy())
    c_max = float(fit.inputs[0].max()) if fit.inputs else float("nan")  # the largest fitted C
    rows = []
    for run_id, g in table.groupby("run_id", sort=False):
        last = g.sort_values("step").iloc[-1]
        rows.append({"run_id": run_id, "step": int(last["step"]), "C": float(last["C"]), "D": float(last["D"]),
                     "measured": float(last["measured"]), "predicted": float(last["predicted"]),
                     "rel_err": float(last["rel_err"]), "inside": bool(last["inside"]),
                     "max_abs_rel_err": float(g["rel_err"].abs().max()),
                     "beyond_grid_c": bool(float(last["C"]) > c_max)})
    return table, pd.DataFrame(rows)


def store_holdout_validation(store, fit: FitResult, table: pd.DataFrame, summary: pd.DataFrame, *, bench: str,
                             metric: str, sweep: str) -> str:
    """Record a `validate_holdout` result in the store's `extrapolations` table (kind 'holdout_run', one row per
    held-out run, its per-checkpoint table in `detail`; the report's held-out page reads it). Returns the record id."""
    rows = [{"train_max": float(fit.inputs[0].max()) if fit.inputs else float("nan"), "target_x0": r["C"],
             "n_train": fit.n_points, "n_test": int((table["run_id"] == r["run_id"]).sum()),
             "mean_abs_rel_err": abs(r["rel_err"]), "max_abs_rel_err": r["max_abs_rel_err"],
             "coverage": float(r["inside"]), "detail": table[table["run_id"] == r["run_id"]].to_dict(orient="list")}
            for _, r in summary.iterrows()]
    return store.write_extrapolation(rows, kind="holdout_run", law=fit.law.name, metric=metric, bench=bench,
                                     sweep=sweep, x_cols=list(fit.x), y_col=fit.y, data_hash=fit.data_hash)


def format_holdout(summary: pd.DataFrame, label: str = "MSE") -> str:
    """One line per held-out run: measured vs predicted at its final checkpoint (marked when a `finished` column says
    the run stopped before its last step)."""
    lines = []
    for _, r in summary.iterrows():
        stopped = " (stopped before its last step)" if not r.get("finished", True) else ""
        lines.append(f"held-out {r['run_id']} at step {r['step']}{stopped} (C = {r['C']:.4g} GFLOP, D = {r['D']:.0f}"
                     f"{', beyond the grid' if r['beyond_grid_c'] else ''}): {label} measured {r['measured']:.4g}, "
                     f"predicted {r['predicted']:.4g} ({r['rel_err']:+.1%}; "
                     f"{'inside' if r['inside'] else 'outside'} the 95% interval; "
                     f"max |error| over its checkpoints {r['max_abs_rel_err']:.1%})")
    return "\n".join(lines)
