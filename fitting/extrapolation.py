"""Extrapolation validation: does a law fitted on small budgets predict the large ones?

- `prediction_interval(fit, X)`: a lack-of-fit interval for small n. The log residuals of the fit give
  s^2 = sum(r^2) / (n - p) (p = free parameters); at a new point the interval is
  log(y_hat) +- t_{(1+ci)/2, n-p} * s * sqrt(1 + h0), where h0 = g0' (J'J)^-1 g0 is the leverage of the new point
  (J: Jacobian of log y_hat w.r.t. the free parameters at the fitted points, g0: the same at the new point). It is
  the classical nonlinear-regression prediction interval (Seber & Wild 1989, section 5.1), valid when the log
  residuals are roughly Gaussian and the law is right; the bootstrap band (`FitResult.predict_band`) covers the
  parameter uncertainty only.
- `predict_holdout(fit, points)`: measured vs predicted at held-out points with both intervals (the demo's
  held-out validation run uses it).
- `holdout_above(df, c_max, ...)`: fit on the points with x0 < c_max, predict the rest ("fit below, predict above").
- `growing_prefix(df, ...)`: fit on growing prefixes of the compute range (smallest budgets first) and report the
  error of predicting every later budget: an extrapolation-error curve.

Errors are relative errors in the fitted target (e.g. MSE for psnr): rel_err = predicted / measured - 1.
"""
from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import stats
from tqdm.auto import tqdm

from .fit import FitResult, FitWarning, fit_law
from .laws import DEFAULT_LAW


def _free_jacobian_log(fit: FitResult, X: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """log predictions and d log(y_hat) / d(free parameter) at inputs X, columns scaled to unit norm-free units.

    Positive constants are differentiated w.r.t. their logarithm (as they are fitted), which makes the columns
    comparable; the leverage does not depend on this choice of parametrisation (it is invariant under any
    invertible linear reparametrisation of the columns, and log is a local one)."""
    law = fit.constrained_law()
    P = {n: np.float64(fit.params[n]) for n in law.param_names}
    yhat, J = law.evaluate(P, X, True)
    cols = [J[n] * (P[n] if n in law.log_params else 1.0) / yhat for n in law.param_names]
    return np.log(yhat), np.stack(cols, axis=1)


def prediction_interval(fit: FitResult, X: Sequence[np.ndarray], ci: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Student-t lack-of-fit prediction interval (lo, hi) for the target at raw inputs X (see the module docstring).

    Needs a FitResult from `fit_law` (it keeps the fitted points) with more points than free parameters.
    """
    if fit.inputs is None or fit.targets is None:
        raise ValueError("prediction_interval needs a FitResult made by fit_law (it keeps the fitted points)")
    n, p = len(fit.targets), fit.n_free
    if n <= p:
        raise ValueError(f"prediction_interval: {n} points and {p} free parameters leave no degrees of freedom")
    X = [np.atleast_1d(np.asarray(x, dtype=float)) for x in X]
    log_fit, J = _free_jacobian_log(fit, fit.inputs)
    r = np.log(fit.targets) - log_fit
    s = float(np.sqrt(np.sum(r * r) / (n - p)))
    log_new, G = _free_jacobian_log(fit, X)
    scale = np.linalg.norm(J, axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    cov = np.linalg.pinv((J / scale).T @ (J / scale), rcond=1e-12)
    Gs = G / scale
    h0 = np.einsum("ij,jk,ik->i", Gs, cov, Gs)
    half = stats.t.ppf((1 + ci) / 2, n - p) * s * np.sqrt(1.0 + np.maximum(h0, 0.0))
    return np.exp(log_new - half), np.exp(log_new + half)


def predict_holdout(fit: FitResult, points: pd.DataFrame, *, ci: float = 0.95, y: str | None = None) -> pd.DataFrame:
    """Predictions of `fit` at held-out `points` with a bootstrap band and a Student-t lack-of-fit interval.

    `points` must have the fit's input columns (e.g. C, D) and its target column (`y`, default the fit's y, e.g.
    the MSE). Returns one row per point: the input columns, measured, predicted, rel_err (predicted / measured - 1),
    band_lo/band_hi (bootstrap percentile band at level `ci`; NaN without bootstrap), lo/hi (lack-of-fit prediction
    interval at level `ci`) and inside (lo <= measured <= hi).
    """
    ycol = y or fit.y
    missing = [c for c in [*fit.x, ycol] if c not in points.columns]
    if missing:
        raise ValueError(f"predict_holdout: points lack columns {missing} (have {list(points.columns)})")
    X = [points[c].to_numpy(dtype=float) for c in fit.x]
    measured = points[ycol].to_numpy(dtype=float)
    pred = fit.law.predict(fit.params, X)
    out = pd.DataFrame({c: X[i] for i, c in enumerate(fit.x)})
    out["measured"], out["predicted"] = measured, pred
    out["rel_err"] = pred / measured - 1.0
    q = (100 * (1 - ci) / 2, 100 * (1 + ci) / 2)
    if fit.n_bootstrap and np.isfinite(fit.bootstrap_params).all(axis=1).any():
        lo_b, hi_b = fit.predict_band(*X[:2], q=q, **({"U": X[2]} if len(X) == 3 else {}))
        out["band_lo"], out["band_hi"] = lo_b, hi_b
    else:
        out["band_lo"] = out["band_hi"] = np.nan
    lo, hi = prediction_interval(fit, X, ci)
    out["lo"], out["hi"] = lo, hi
    out["inside"] = (lo <= measured) & (measured <= hi)
    return out


def holdout_above(df: pd.DataFrame, c_max: float, law: str = DEFAULT_LAW, x: Sequence[str] = ("C", "D"),
                  y: str = "y", *, ci: float = 0.95, by: str | None = None,
                  **fit_kw) -> tuple[FitResult, pd.DataFrame]:
    """Fit `law` on the rows with `by` < `c_max` and predict the rows with `by` >= c_max (`predict_holdout`).

    `by` defaults to x[0] (C); a frontier table is reduced to its per-D frontier points first."""
    x = list(x)
    by = by or x[0]
    if by not in df.columns:
        raise ValueError(f"holdout_above: data lacks column {by!r} (have {list(df.columns)})")
    if "on_frontier_d" in df.columns:
        df = df[df["on_frontier_d"].astype(bool)]
    below = df[df[by] < c_max]
    above = df[df[by] >= c_max]
    if above.empty:
        raise ValueError(f"holdout_above: no points with {by} >= {c_max:g} to predict (max is {df[by].max():g})")
    fit_kw.setdefault("holdout", False)
    res = fit_law(below, law=law, x=x, y=y, **fit_kw)
    return res, predict_holdout(res, above, ci=ci)


def budget_bins(c: np.ndarray, n_bins: int | None = None) -> np.ndarray:
    """Budget index of every point: its rank among the distinct values of c when there are at most 12 (isoFLOP-style
    designs), else one of `n_bins` (default 8) equal-width bins in log c."""
    c = np.asarray(c, dtype=float)
    uniq = np.unique(c)
    if n_bins is None and len(uniq) <= 12:
        return np.searchsorted(uniq, c)
    edges = np.linspace(np.log(c.min()), np.log(c.max()), (n_bins or 8) + 1)
    return np.clip(np.searchsorted(edges, np.log(c), side="right") - 1, 0, len(edges) - 2)


def growing_prefix(df: pd.DataFrame, law: str = DEFAULT_LAW, x: Sequence[str] = ("C", "D"), y: str = "y", *,
                   n_bins: int | None = None, min_budgets: int = 2, ci: float = 0.95, progress: bool | None = None,
                   by: str | None = None, **fit_kw) -> pd.DataFrame:
    """Fit on growing prefixes of the compute range and predict every later budget.

    The points are grouped into budgets by column `by` (default x[0], e.g. C; with x = N,D pass by="C" to order
    by compute instead of model size) (`budget_bins`). For k = min_budgets-1, ..., K-2 a fresh fit on
    budgets 0..k (no bootstrap unless asked) predicts each later budget j > k. One row per (k, j): by, train_max
    (largest `by` value in the training prefix), budget, budget_x0 (geometric mean of `by` over budget j), steps_ahead (j - k),
    n_train, n_test, mean_abs_rel_err and max_abs_rel_err (of the target, as fractions), rmse_log (RMS log
    residual) and coverage (fraction of test points inside the lack-of-fit interval at `ci`). Prefixes with too few
    points for the law are skipped.
    """
    x = list(x)
    by = by or x[0]
    missing = [c for c in [*x, y, by] if c not in df.columns]
    if missing:
        raise ValueError(f"growing_prefix: data lacks columns {missing} (have {list(df.columns)})")
    if "on_frontier_d" in df.columns:
        df = df[df["on_frontier_d"].astype(bool)]
    df = df.reset_index(drop=True)
    b = budget_bins(df[by].to_numpy(dtype=float), n_bins)
    K = int(b.max()) + 1
    fit_kw = {"bootstrap": 0, "holdout": False, **fit_kw}
    rows = []
    for k in tqdm(range(max(min_budgets, 1) - 1, K - 1), desc=f"growing prefix {law}", disable=(
            None if progress is None else not progress), leave=False):
        train = df[b <= k]
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FitWarning)
                res = fit_law(train, law=law, x=x, y=y, **fit_kw)
        except ValueError:  # too few points for the law
            continue
        for j in range(k + 1, K):
            test = df[b == j]
            if test.empty:
                continue
            ph = predict_holdout(res, test, ci=ci, y=y)
            err = ph["rel_err"].abs()
            rows.append({"law": law, "by": by, "train_max": float(train[by].max()), "budget": j,
                         "budget_x0": float(np.exp(np.log(test[by].to_numpy(dtype=float)).mean())),
                         "steps_ahead": j - k, "n_train": len(train), "n_test": len(test),
                         "mean_abs_rel_err": float(err.mean()), "max_abs_rel_err": float(err.max()),
                         "rmse_log": float(np.sqrt(np.mean(np.log1p(ph["rel_err"]) ** 2))),
                         "coverage": float(ph["inside"].mean())})
    if not rows:
        raise ValueError(f"growing_prefix: no prefix of the {K} budgets had enough points to fit law {law!r}")
    return pd.DataFrame(rows)
