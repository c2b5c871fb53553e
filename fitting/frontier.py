"""Compute-optimal frontiers of evaluated checkpoints (paper section B.2.1).

Metrics are first turned into lower-is-better, not-log-scaled targets y:

- psnr  -> MSE on images in [-1, 1]: y = 4 * 10^(-PSNR / 10)   (PSNR with peak-to-peak 2)
- ssim  -> 1 - SSIM
- lpips -> LPIPS, mse -> MSE (already lower is better)

Then, for every data size D, a checkpoint is on the frontier when its y is strictly lower than that of every
checkpoint (of any model size, same D) with less training compute C: the running minimum over increasing C. The
joint frontier does the same across all D.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

TRANSFORMS = {
    "psnr": ("MSE", lambda v: 4.0 * 10.0 ** (-v / 10.0), lambda y: -10.0 * np.log10(y / 4.0)),
    "mse": ("MSE", lambda v: v, lambda y: y),
    "ssim": ("1-SSIM", lambda v: 1.0 - v, lambda y: 1.0 - y),
    "lpips": ("LPIPS", lambda v: v, lambda y: y),
}


def _check_metric(metric: str) -> None:
    if metric not in TRANSFORMS:
        raise ValueError(f"unknown metric {metric!r}; choose one of {sorted(TRANSFORMS)}")


def transform_metric(values: np.ndarray | pd.Series, metric: str) -> np.ndarray:
    """Raw metric as evaluated (PSNR in dB, SSIM, LPIPS, MSE on [-1, 1]) -> lower-is-better target y."""
    _check_metric(metric)
    return TRANSFORMS[metric][1](np.asarray(values, dtype=float))


def inverse_transform(y: np.ndarray, metric: str) -> np.ndarray:
    """Target y -> the raw metric (e.g. predicted MSE back to PSNR in dB), for plotting fitted laws."""
    _check_metric(metric)
    return TRANSFORMS[metric][2](np.asarray(y, dtype=float))


def target_label(metric: str) -> str:
    """Name of the fitted quantity: 'MSE' for psnr/mse, '1-SSIM' for ssim, 'LPIPS' for lpips."""
    _check_metric(metric)
    return TRANSFORMS[metric][0]


def running_frontier(C: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Boolean mask of points whose y is strictly below every point with smaller C (ties in C: the best one)."""
    C, y = np.asarray(C, dtype=float), np.asarray(y, dtype=float)
    order = np.lexsort((y, C))  # by C, then y
    ys = y[order]
    best_before = np.concatenate([[np.inf], np.minimum.accumulate(ys)[:-1]])
    mask = np.zeros(len(y), dtype=bool)
    mask[order] = ys < best_before
    return mask


def frontier(df: pd.DataFrame, metric: str, min_step: int = 0, *, c_col: str = "compute_gflop",
             d_col: str = "D") -> pd.DataFrame:
    """Per-D and joint compute-optimal frontiers of evaluated checkpoints.

    `df` is `ResultsStore.eval_points(...)` (one row per checkpoint with run_id, step, compute_gflop = C in GFLOP,
    D = number of training videos and value = the raw metric). Checkpoints with step < `min_step` (paper: 50_000)
    are dropped. Returns a copy sorted by (D, C) with added columns C, y (the transformed metric, lower is better),
    on_frontier_d (on the frontier of its own D) and on_frontier_joint (on the frontier across all D); run_id and
    step say which checkpoint each frontier point came from. `df.attrs["metric"]` records the metric.
    """
    _check_metric(metric)
    missing = [c for c in ("value", c_col, d_col, "step") if c not in df.columns]
    if missing:
        raise ValueError(f"frontier: input lacks columns {missing} (have {list(df.columns)})")
    out = df[df["step"] >= min_step].copy()
    if out.empty:
        raise ValueError(f"frontier: no checkpoints with step >= {min_step} (input had {len(df)} rows)")
    out["C"] = out[c_col].astype(float)
    out["D"] = out[d_col]
    out["y"] = transform_metric(out["value"], metric)
    bad = ~np.isfinite(out["y"]) | ~np.isfinite(out["C"]) | (out["C"] <= 0) | (out["y"] <= 0)
    if bad.any():
        cols = [c for c in ("run_id", "step", "C", "value", "y") if c in out.columns]
        raise ValueError(f"frontier: {int(bad.sum())} checkpoint(s) have a non-finite or non-positive C or "
                         f"{target_label(metric)}:\n{out.loc[bad, cols].head(10).to_string()}")
    out["on_frontier_d"] = False
    for _, idx in out.groupby("D").groups.items():
        out.loc[idx, "on_frontier_d"] = running_frontier(out.loc[idx, "C"].to_numpy(), out.loc[idx, "y"].to_numpy())
    out["on_frontier_joint"] = running_frontier(out["C"].to_numpy(), out["y"].to_numpy())
    out = out.sort_values(["D", "C"]).reset_index(drop=True)
    out.attrs["metric"] = metric
    return out
