"""Fit a scaling law to (frontier) points: multi-start L-BFGS-B with analytic gradients, bootstrap, hold-outs.

Objectives (both minimised with scipy's L-BFGS-B at its default tolerances):

- `huber` (default): Huber loss (delta, default 1e-3) on log residuals log(L_hat) - log(L), SUMMED over points.
  Summing matters: the mean is n times smaller, so L-BFGS-B's absolute tolerance stops it early (Besiroglu et al.
  2024); `reduction="mean"` is available to show exactly that.
- `lsq`: least squares in metric space, normalised as SSE / SST (= 1 - R^2), which is scale free.

Positive constants (L_inf, A, B, E, offsets) are optimised as log(value); exponents directly, within bounds.
Starting points: the law's grid over its exponents/offsets; at each grid point the linear constants are solved by
weighted least squares (variable projection), every grid point is scored with the real objective and the best
`n_starts` are refined. The best optimum is kept and `n_starts_at_best` says how many refinements reached it.
"""
from __future__ import annotations

import hashlib
import math
import os
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import optimize
from threadpoolctl import ThreadpoolController, threadpool_limits
from tqdm.auto import tqdm

from .laws import DEFAULT_LAW, Law, constrain, expand_params, get_law, law_from_spec
from .pareto import target_label

OBJECTIVES = ("huber", "lsq")
CI_METHODS = ("percentile", "basic")
EXPONENT_NAMES = {"alpha", "beta", "gamma", "alpha2", "beta2", "delta", "kappa"}
# Relative tolerance of every L-BFGS-B run (see _Problem.minimize). scipy's defaults are absolute for objectives
# below 1: on a summed log-Huber of ~3e-4 they stop refits after ~20 iterations, long before the optimum of weakly
# identified laws (Eq. 4: alpha 0.24 instead of 0.084 at a 1.4% worse objective) and keep bootstrap refits at their
# warm start, which makes bootstrap CIs far too narrow.
DEFAULT_TOL = 1e-12


_CONTROLLER: ThreadpoolController | None = None


def _one_blas_thread():
    """threadpool_limits(1, "blas") without re-scanning the loaded libraries at every call (~7 ms each): for the
    many short warm-started refits of cross-validation."""
    global _CONTROLLER
    if _CONTROLLER is None:
        _CONTROLLER = ThreadpoolController()
    return _CONTROLLER.limit(limits=1, user_api="blas")


class FitWarning(UserWarning):
    """A fit finished but something about it is suspicious (not converged, parameter at a bound, ...)."""


# ---------------------------------------------------------------------------------------------------- objective
class _Problem:
    """Objective, gradient and bounds of one law on one data set, in the fit space u (log for positive constants)."""

    def __init__(self, law: Law, X: list[np.ndarray], y: np.ndarray, objective: str, delta: float,
                 reduction: str, tol: float | None = DEFAULT_TOL, scale: float = 1.0) -> None:
        self.law, self.X, self.y = law, X, y
        self.objective, self.delta, self.reduction = objective, delta, reduction
        # L-BFGS-B sees objective / scale (scale = the best grid start's objective, so it starts near 1) and stops
        # when a step improves it by less than tol (relative) or the projected gradient is below 1e4 * tol.
        self.tol, self.scale = tol, scale
        self.logy = np.log(y)
        self.sst = float(np.sum((y - y.mean()) ** 2)) or 1.0
        self.is_log = np.array([n in law.log_params for n in law.param_names])
        lo = np.array([law.bounds[n][0] for n in law.param_names], dtype=float)
        hi = np.array([law.bounds[n][1] for n in law.param_names], dtype=float)
        self.lo = np.where(self.is_log, np.log(np.where(self.is_log, lo, 1.0)), lo)
        self.hi = np.where(self.is_log, np.log(np.where(self.is_log, hi, 1.0)), hi)

    def subset(self, idx: np.ndarray) -> "_Problem":
        return _Problem(self.law, [x[idx] for x in self.X], self.y[idx], self.objective, self.delta, self.reduction,
                        self.tol, self.scale)

    def params(self, u: np.ndarray) -> dict[str, np.ndarray]:
        v = np.where(self.is_log, np.exp(np.clip(u, -700, 700)), u)
        return {n: v[..., i] for i, n in enumerate(self.law.param_names)}

    def to_u(self, P: dict[str, np.ndarray]) -> np.ndarray:
        v = np.stack([np.asarray(P[n], dtype=float) for n in self.law.param_names], axis=-1)
        with np.errstate(divide="ignore", invalid="ignore"):
            u = np.where(self.is_log, np.log(np.maximum(v, 1e-300)), v)
        return np.clip(u, self.lo, self.hi)

    def loss(self, yhat: np.ndarray) -> np.ndarray:
        """Objective for predictions yhat (..., n); rows with invalid predictions score +inf."""
        with np.errstate(all="ignore"):
            if self.objective == "lsq":
                f = np.sum((yhat - self.y) ** 2, axis=-1) / self.sst
            else:
                r = np.abs(np.log(yhat) - self.logy)
                h = np.where(r <= self.delta, 0.5 * r * r, self.delta * r - 0.5 * self.delta ** 2)
                f = np.sum(h, axis=-1) if self.reduction == "sum" else np.mean(h, axis=-1)
        return np.where(np.isfinite(f), f, np.inf)

    def fun(self, u: np.ndarray) -> tuple[float, np.ndarray]:
        P = self.params(u)
        with np.errstate(all="ignore"):
            yhat, J = self.law.evaluate(P, self.X, True)
            if not np.all(np.isfinite(yhat)) or np.any(yhat <= 0):
                return 1e30, np.zeros_like(u)
            if self.objective == "lsq":
                f = float(np.sum((yhat - self.y) ** 2) / self.sst)
                dy = 2.0 * (yhat - self.y) / self.sst
            else:
                r = np.log(yhat) - self.logy
                a = np.abs(r)
                f = float(np.sum(np.where(a <= self.delta, 0.5 * r * r, self.delta * a - 0.5 * self.delta ** 2)))
                dy = np.clip(r, -self.delta, self.delta) / yhat
                if self.reduction == "mean":
                    f, dy = f / len(r), dy / len(r)
            g = np.array([np.dot(dy, J[n]) * (P[n] if log else 1.0)
                          for n, log in zip(self.law.param_names, self.is_log)])
        if not (np.isfinite(f) and np.all(np.isfinite(g))):
            return 1e30, np.zeros_like(u)
        return f, g

    def minimize(self, u0: np.ndarray) -> optimize.OptimizeResult:
        """L-BFGS-B from u0; `.fun` of the result is the unscaled objective."""
        bounds = list(zip(self.lo, self.hi))
        if self.tol is None:  # scipy's defaults on the raw objective (absolute tolerances when it is below 1)
            return optimize.minimize(self.fun, u0, jac=True, method="L-BFGS-B", bounds=bounds)

        def scaled(u: np.ndarray) -> tuple[float, np.ndarray]:
            f, g = self.fun(u)
            return (f, g) if f >= 1e30 else (f / self.scale, g / self.scale)
        res = optimize.minimize(scaled, u0, jac=True, method="L-BFGS-B", bounds=bounds,
                                options={"ftol": self.tol, "gtol": 1e4 * self.tol, "maxiter": 20_000,
                                         "maxfun": 40_000})
        if res.fun < 1e30:
            res.fun = res.fun * self.scale
        return res

    def grid_starts(self) -> tuple[np.ndarray, np.ndarray]:
        """Score every grid point (after solving its linear constants); return starts (G, P) and scores, best first."""
        law, X, y = self.law, self.X, self.y
        G = {k: np.asarray(v, dtype=float)[:, None] for k, v in law.grid(X).items()}
        phis, absorb = law.basis(G, X)
        n_grid = len(next(iter(G.values())))
        Phi = np.stack([np.broadcast_to(p, (n_grid, len(y))) for p in phis], axis=-1) / y[None, :, None]
        with np.errstate(all="ignore"):
            scale = np.max(np.abs(Phi), axis=1, keepdims=True)
            scale = np.where(np.isfinite(scale) & (scale > 0), scale, 1.0)
            Pn = np.nan_to_num(Phi / scale)
            M = np.einsum("gnk,gnl->gkl", Pn, Pn) + 1e-12 * np.eye(Pn.shape[-1])
            # target (y - basis_shift) / y: a fixed L_inf is subtracted before solving for the other constants
            b = np.einsum("gnk,n->gk", Pn, (y - law.basis_shift) / y)
            coef = np.linalg.solve(M, b[..., None])[..., 0] / scale[:, 0, :]
            # Keep every term positive: a negative coefficient becomes a negligible one (1e-6 of the mean target).
            floor = 1e-6 * y.mean() / np.maximum(np.max(np.stack([np.broadcast_to(p, (n_grid, len(y)))
                                                                  for p in phis], -1), axis=1), 1e-300)
            coef = np.where(np.isfinite(coef) & (coef > floor), coef, floor)
            P = absorb(G, [coef[:, k:k + 1] for k in range(coef.shape[1])])
            P = {n: np.broadcast_to(P[n], (n_grid, 1)) for n in law.param_names}
            scores = self.loss(law.evaluate(P, X, False)[0])
        starts = self.to_u({n: P[n][:, 0] for n in law.param_names})
        order = np.argsort(scores, kind="stable")
        return starts[order], scores[order]


# ---------------------------------------------------------------------------------------------------- result
@dataclass
class FitResult:
    """A fitted law. `params`/`ci_low`/`ci_high` are in natural units (C in the units of the x columns)."""

    law: Law
    x: list[str]
    y: str
    params: dict[str, float]
    ci_low: dict[str, float]
    ci_high: dict[str, float]
    r2: float
    r2_log: float
    rmse: float
    objective: float
    objective_name: str
    n_points: int
    n_starts: int
    n_starts_at_best: int
    n_bootstrap: int
    bootstrap_params: np.ndarray  # (n_bootstrap, n_params), natural units, NaN rows for failed resamples
    holdout: dict
    data_hash: str
    warnings: list[str] = field(default_factory=list)
    metric: str | None = None
    bench: str | None = None
    sweep: str | None = None
    elapsed_s: float = 0.0
    fixed: dict[str, float] = field(default_factory=dict)  # parameter -> value it was fixed at (natural units)
    tied: dict[str, str] = field(default_factory=dict)  # parameter -> the free parameter it was tied to
    # The fitted points (raw input columns and target) and, for warm-started refits (cross-validation in
    # fitting.compare), the fit-space problem and its distinct optima. Not part of the record.
    inputs: list[np.ndarray] | None = field(default=None, repr=False, compare=False)
    targets: np.ndarray | None = field(default=None, repr=False, compare=False)
    _problem: "_Problem | None" = field(default=None, repr=False, compare=False)
    _optima: list = field(default_factory=list, repr=False, compare=False)

    def constrained_law(self) -> Law:
        """The law over the free parameters only (the registry law when nothing is fixed or tied)."""
        return constrain(self.law, self.fixed, self.tied)

    def refit_predict(self, train: np.ndarray, test: np.ndarray, tol: float | None = 1e-7) -> np.ndarray:
        """Refit on the fitted points selected by boolean mask `train` (L-BFGS-B warm-started at this fit's optima,
        so cheap) and predict the target at the points of mask `test`; NaN where the refit fails. `tol` is the
        relative L-BFGS-B tolerance of the refit (looser than a full fit's: the prediction, not the parameters,
        is wanted; on 50 synthetic kaplan points 1e-6..1e-8 moved held-out predictions by < 0.1% relative to
        1e-12, at 3-20x less time).

        Used for leave-one-out style cross-validation; for honest extrapolation tests use fresh fits instead
        (fitting.validate), since the full-data optimum has seen the held-out points.
        """
        if self._problem is None:
            raise ValueError("refit_predict needs a FitResult made by fit_law in this process")
        train, test = np.asarray(train, dtype=bool), np.asarray(test, dtype=bool)
        n_free = len(self._problem.law.param_names)
        if train.sum() <= n_free:
            return np.full(int(test.sum()), np.nan)
        sub = self._problem.subset(np.flatnonzero(train))
        sub.tol = tol if tol is not None else sub.tol
        with _one_blas_thread():  # see fit_law: tiny BLAS calls, one thread
            best = _best_of(sub, self._optima)
        if best is None:
            return np.full(int(test.sum()), np.nan)
        return self._problem.law.predict(self._problem.params(best.x), [xi[test] for xi in self._problem.X])

    @property
    def n_free(self) -> int:
        """Number of fitted (free) parameters: fixed and tied ones do not count (degrees of freedom n - n_free)."""
        return len(self.law.param_names) - len(self.fixed) - len(self.tied)

    @property
    def law_label(self) -> str:
        """Law name with its constraints, e.g. 'additive[beta=alpha]' (the plain name when unconstrained)."""
        items = [f"{n}={v:g}" for n, v in sorted(self.fixed.items())] + [f"{n}={t}" for n, t in sorted(self.tied.items())]
        return self.law.name + (f"[{','.join(items)}]" if items else "")

    def _inputs(self, C, D, U=None) -> list[np.ndarray]:
        if self.law.n_inputs == 1:
            return [np.asarray(C, dtype=float)]
        if D is None or (self.law.n_inputs == 3 and U is None):
            raise ValueError(f"law {self.law.name!r} needs {self.law.n_inputs} inputs ({', '.join(self.x)})")
        args = (C, D) if self.law.n_inputs == 2 else (C, D, U)
        return [np.asarray(a, dtype=float) for a in np.broadcast_arrays(*args)]

    def predict(self, C, D=None, U=None) -> np.ndarray:
        """Predicted target (e.g. MSE on [-1, 1]) at compute C (GFLOP) and data D (videos); arrays broadcast.

        Three-input laws (data_constrained) also take U, the unique data (same units as D)."""
        return self.law.predict(self.params, self._inputs(C, D, U))

    def predict_band(self, C, D=None, q: tuple[float, float] = (2.5, 97.5), U=None) -> tuple[np.ndarray, np.ndarray]:
        """Percentile band (q in %) of bootstrap predictions at (C, D[, U]); needs bootstrap > 0."""
        ok = np.all(np.isfinite(self.bootstrap_params), axis=1)
        if not ok.any():
            raise ValueError("predict_band needs a fit with bootstrap > 0")
        X = self._inputs(C, D, U)
        Pb = {n: self.bootstrap_params[ok, i].reshape((-1,) + (1,) * X[0].ndim)
              for i, n in enumerate(self.law.param_names)}
        preds = self.law.evaluate(Pb, X, False)[0]
        return np.percentile(preds, q[0], axis=0), np.percentile(preds, q[1], axis=0)

    def formula(self, digits: int = 2) -> str:
        """The fitted law printed like the paper's Eq. 4, e.g. 'MSE(C,D) ~ 0.0033 + (200 C^-0.40 + ...)^2.82'."""
        values = {n: (f"{v:.2f}" if n in EXPONENT_NAMES else _sig(v, digits)) for n, v in self.params.items()}
        body = self.law.template.format(x0=self.x[0], x1=self.x[-1], **values)
        label = target_label(self.metric) if self.metric else self.y
        return f"{label}({','.join(self.x)}) ~ {body}, R^2 = {self.r2:.3f}"

    def optimal_allocation(self, budget, cost: float = 6.0) -> tuple[np.ndarray, np.ndarray]:
        """Minimise L(x0, x1) subject to cost * x0 * x1 = budget (e.g. N params, D tokens, budget in FLOPs).

        Closed form for `additive` (Hoffmann et al. 2022, Eq. 4); numerical (bounded scalar search over log x0)
        for the other two-input laws. Returns (x0_opt, x1_opt) arrays shaped like `budget`.
        """
        if self.law.n_inputs != 2:
            raise ValueError(f"law {self.law.name!r} has one input; there is nothing to allocate")
        budget = np.asarray(budget, dtype=float)
        p = self.params
        if self.law.name == "additive":
            a, b = p["alpha"], p["beta"]
            g = (a * p["A"] / (b * p["B"])) ** (1.0 / (a + b))
            x0 = g * (budget / cost) ** (b / (a + b))
            return x0, budget / cost / x0
        x0 = np.empty_like(budget)
        for i, c in np.ndenumerate(budget):
            total = math.log(c / cost)
            res = optimize.minimize_scalar(lambda t: float(self.predict(math.exp(t), math.exp(total - t))),
                                           bounds=(0.0, total), method="bounded", options={"xatol": 1e-10})
            x0[i] = math.exp(res.x)
        return x0, budget / cost / x0

    def summary(self) -> str:
        lines = [self.formula(), f"  law {self.law.name} (Eq. {self.law.equation}), {self.objective_name}, "
                 f"objective {self.objective:.6g}, R^2 {self.r2:.4f} (log {self.r2_log:.4f}), RMSE {self.rmse:.3g}, "
                 f"{self.n_points} points, {self.n_starts_at_best}/{self.n_starts} starts reached the best, "
                 f"{self.elapsed_s:.2f} s"]
        if self.fixed or self.tied:
            lines.append(f"  {self.n_free} free parameters (constraints: {self.law_label})")
        for n, v in self.params.items():
            if n in self.fixed:
                lines.append(f"  {n:>7} = {v:.6g}  (fixed)")
                continue
            if n in self.tied:
                lines.append(f"  {n:>7} = {self.tied[n]}  (tied)")
                continue
            ci = (f"  [{self.ci_low[n]:.4g}, {self.ci_high[n]:.4g}]" if self.n_bootstrap else "")
            shared = [m for m, t in self.tied.items() if t == n]
            lines.append(f"  {n:>7} = {v:.6g}{ci}" + (f"  (shared with {', '.join(shared)})" if shared else ""))
        if self.holdout:
            lines.append("  hold-out errors (mean |relative error| %): " + ", ".join(
                f"{k}: {_fmt_holdout(v)}" for k, v in self.holdout.items()))
        lines += [f"  WARNING: {w}" for w in self.warnings]
        return "\n".join(lines)

    def to_record(self, **overrides) -> dict:
        """Row for `ResultsStore.write_fit` (metric/bench/sweep can be given here if the fit did not know them)."""
        rec = {"sweep": self.sweep, "law": self.law_label, "metric": self.metric or self.y, "bench": self.bench,
               "x_cols": list(self.x), "y_col": self.y, "params": dict(self.params), "ci_low": dict(self.ci_low),
               "ci_high": dict(self.ci_high), "r2": self.r2, "r2_log": self.r2_log, "rmse": self.rmse,
               "n_points": self.n_points, "objective": self.objective, "n_starts": self.n_starts,
               "n_starts_at_best": self.n_starts_at_best, "n_bootstrap": self.n_bootstrap,
               "data_hash": self.data_hash, "holdout": self.holdout, "formula": None, "fixed": dict(self.fixed),
               "tied": dict(self.tied), "n_free": self.n_free}
        rec.update(overrides)
        for k in ("metric", "bench", "sweep"):
            setattr(self, k, rec[k]) if k in overrides else None
        rec["formula"] = self.formula()
        return rec


def _sig(v: float, digits: int) -> str:
    if v == 0 or not math.isfinite(v):
        return str(v)
    if 1e-4 <= abs(v) < 1e6:
        decimals = digits - 1 - int(math.floor(math.log10(abs(v))))
        return f"{round(v, decimals):.{max(decimals, 0)}f}"
    mant, exp = f"{v:.{digits - 1}e}".split("e")
    return f"{mant}e{int(exp)}"


def _fmt_holdout(v) -> str:
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {x:.2f}" for k, x in v.items()) + "}"
    return f"{v:.2f}" if isinstance(v, float) else str(v)


# ---------------------------------------------------------------------------------------------------- fitting
def _best_of(problem: _Problem, starts: Sequence[np.ndarray]):
    best = None
    for u0 in starts:
        res = problem.minimize(u0)
        if np.isfinite(res.fun) and (best is None or res.fun < best.fun):
            best = res
    return best


def _refit_chunk(law_spec: tuple, X: list[np.ndarray], y: np.ndarray, objective: str, delta: float, reduction: str,
                 tol: float | None, scale: float, index_sets: list[np.ndarray], starts: list[np.ndarray],
                 restarts: int) -> np.ndarray:
    """Refit on each index set (bootstrap resamples) from the given starts (warm: the full-data optimum) and the
    `restarts` best grid points of the resample; rows of fit-space parameters."""
    # one BLAS thread while fitting (see fit_law); a context manager, so it never leaks into the caller's process
    with threadpool_limits(limits=1, user_api="blas"):
        problem = _Problem(law_from_spec(law_spec), X, y, objective, delta, reduction, tol, scale)
        out = np.full((len(index_sets), len(problem.law.param_names)), np.nan)
        for i, idx in enumerate(index_sets):
            sub = problem.subset(idx)
            best = _best_of(sub, list(starts) + (list(sub.grid_starts()[0][:restarts]) if restarts else []))
            if best is not None:
                out[i] = best.x
    return out


def _data_hash(X: list[np.ndarray], y: np.ndarray) -> str:
    rows = np.column_stack(X + [y]).astype(np.float64)
    rows = rows[np.lexsort(rows.T[::-1])]
    return hashlib.sha256(rows.tobytes()).hexdigest()[:16]


def _r2(obs: np.ndarray, pred: np.ndarray) -> float:
    return float(1.0 - np.sum((obs - pred) ** 2) / np.sum((obs - obs.mean()) ** 2))


def _prepare(df: pd.DataFrame, x: list[str], y: str, n_params: int) -> tuple[pd.DataFrame, list[np.ndarray], np.ndarray]:
    missing = [c for c in [*x, y] if c not in df.columns]
    if missing:
        raise ValueError(f"fit_law: data lacks columns {missing} (have {list(df.columns)})")
    if "on_frontier_d" in df.columns:  # a frontier() table: fit its per-D frontier points
        df = df[df["on_frontier_d"].astype(bool)]
    vals = df[[*x, y]].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float)
    bad = ~np.all(np.isfinite(vals) & (vals > 0), axis=1)
    if bad.any():
        raise ValueError(f"fit_law: {int(bad.sum())} row(s) have non-finite or non-positive {x + [y]} "
                         f"(all must be > 0):\n{df[bad].head(10).to_string()}")
    if len(df) <= n_params:
        raise ValueError(f"fit_law: {len(df)} points cannot determine {n_params} parameters; need more than "
                         f"{n_params}")
    return df, [vals[:, i] for i in range(len(x))], vals[:, -1]


def _holdout_errors(problem: _Problem, starts: list[np.ndarray], x: list[str], refs: list[float],
                    frac: float) -> dict:
    """Extrapolation errors (mean |relative error| in %, metric space) of refits with data held out.

    `leave_one_<x1>_out`: for each value of the second input (when it takes 3 to 10 distinct values, e.g. data
    fractions), fit without it and predict it. `largest_<x0>`: fit without the top `frac` of the first input.
    """
    X, y, law = problem.X, problem.y, problem.law
    n_par = len(law.param_names)

    def ape(train: np.ndarray) -> float | None:
        if train.sum() <= n_par or (~train).sum() == 0:
            return None
        best = _best_of(problem.subset(np.flatnonzero(train)), starts)
        if best is None:
            return None
        pred = law.predict(problem.params(best.x), [xi[~train] for xi in X])
        return float(100.0 * np.mean(np.abs(pred / y[~train] - 1.0)))

    out: dict = {}
    if law.n_inputs == 2 and 3 <= len(np.unique(X[1])) <= 10:
        lodo = {}
        for d in np.unique(X[1]):
            err = ape(X[1] != d)
            if err is not None:
                lodo[f"{d * refs[1]:.6g}"] = err
        if lodo:
            out[f"leave_one_{x[1]}_out"] = lodo
    cut = np.quantile(X[0], 1.0 - frac)
    err = ape(X[0] < cut)
    if err is not None:
        out[f"largest_{x[0]}"] = err
    return out


def fit_law(df: pd.DataFrame, law: str = DEFAULT_LAW, x: Sequence[str] = ("C", "D"), y: str = "y", *,
            objective: str = "huber", delta: float = 1e-3, reduction: str = "sum", bootstrap: int = 1000,
            seed: int = 0, n_starts: int | None = 8, holdout: bool = True, holdout_frac: float = 0.2,
            ci: float = 0.95, ci_method: str = "percentile", boot_restarts: int = 0, tol: float | None = DEFAULT_TOL,
            n_jobs: int | None = None, progress: bool | None = None,
            metric: str | None = None, bench: str | None = None, sweep: str | None = None,
            fix: dict[str, float] | None = None, tie: dict[str, str] | None = None) -> FitResult:
    """Fit `law` to the rows of `df` (columns `x` as inputs, `y` as the positive, lower-is-better target).

    A table from `frontier()` is reduced to its per-D frontier points (column on_frontier_d). `n_starts` best grid
    points are refined (None: every grid point, i.e. brute force). `bootstrap` resamples of the points (seeded,
    in `n_jobs` processes, default min(2, CPUs)) give CIs at level `ci` and prediction bands; each resample is
    refitted by L-BFGS-B warm-started at the full-data optimum plus `boot_restarts` runs from the resample's best
    grid points (weakly identified laws can have a better optimum in another basin); the best is kept. `ci_method` "percentile" takes the
    bootstrap quantiles, "basic" reflects them about the estimate (2 theta_hat - q; positive constants in log
    space). `tol` is L-BFGS-B's relative tolerance (None: scipy's defaults, absolute for objectives < 1). `holdout`
    adds leave-one-D-out and largest-C (top `holdout_frac` of x[0]) extrapolation errors. Suspicious outcomes are
    reported as FitWarning and kept in `.warnings`; impossible inputs raise ValueError.

    `fix` ({"L_inf": 0.0}, natural units) fixes parameters and `tie` ({"beta": "alpha"}) sets a parameter equal to
    another one; only the free parameters are fitted, bootstrapped and counted (`FitResult.n_free`). Constraints on
    constants or offsets switch off the input normalisation (fixed values then mean what they say in raw units).
    """
    # L-BFGS-B calls BLAS on tiny vectors; multi-threaded OpenBLAS makes each call ~50x slower on a busy machine.
    with threadpool_limits(limits=1, user_api="blas"):
        return _fit_law(df, law, list(x), y, objective, delta, reduction, bootstrap, seed, n_starts, holdout,
                        holdout_frac, ci, ci_method, boot_restarts, tol, n_jobs, progress, metric, bench, sweep,
                        dict(fix or {}), dict(tie or {}))


def _fit_law(df, law, x, y, objective, delta, reduction, bootstrap, seed, n_starts, holdout, holdout_frac, ci,
             ci_method, boot_restarts, tol, n_jobs, progress, metric, bench, sweep, fix, tie) -> FitResult:
    t0 = time.perf_counter()
    base_law = get_law(law)
    law_obj = constrain(base_law, fix, tie)  # validates the constraints (clear errors naming the parameter)
    x = list(x)
    if len(x) != law_obj.n_inputs:
        raise ValueError(f"law {law!r} takes {law_obj.n_inputs} input column(s), got x={x}")
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    if ci_method not in CI_METHODS:
        raise ValueError(f"ci_method must be one of {CI_METHODS}, got {ci_method!r}")
    if reduction not in ("sum", "mean"):
        raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")
    metric = metric or df.attrs.get("metric")
    data, X, yv = _prepare(df, x, y, len(law_obj.param_names))
    # Fit on inputs divided by their geometric mean: log A and alpha then no longer move together.
    refs = [float(np.exp(np.mean(np.log(xi)))) for xi in X]
    for j, k in base_law.ref_of.items():
        refs[j] = refs[k]
    if any(n in base_law.powers or n in base_law.offsets for n in (*fix, *tie, *tie.values())):
        refs = [1.0] * len(refs)  # a fixed/tied constant or offset is only meaningful in the raw units
    problem = _Problem(law_obj, [xi / r for xi, r in zip(X, refs)], yv, objective, delta, reduction, tol)

    grid_u, grid_f = problem.grid_starts()
    chosen = grid_u[np.isfinite(grid_f)]
    if np.isfinite(grid_f[0]) and grid_f[0] > 0:
        problem.scale = float(grid_f[0])
    if n_starts is not None:
        chosen = chosen[:n_starts]
    if len(chosen) == 0:
        raise RuntimeError(f"fit_law: no grid start of law {law!r} gives finite predictions on these data")
    results = [(u0, problem.minimize(u0)) for u0 in chosen]
    finite = [(u0, r) for u0, r in results if np.isfinite(r.fun) and r.fun < 1e30]
    if not finite:
        raise RuntimeError(f"fit_law: every start of law {law!r} failed")
    u_start, best = min(finite, key=lambda t: t[1].fun)
    tol = max(1e-6 * abs(best.fun), 1e-10)
    n_at_best = sum(r.fun <= best.fun + tol for _, r in finite)

    notes = _diagnose(problem, best, u_start, len(finite), len(results))
    # Distinct optima (best first) seed the bootstrap and hold-out refits.
    optima: list[np.ndarray] = []
    for _, r in sorted(finite, key=lambda t: t[1].fun):
        if all(np.max(np.abs(r.x - o)) > 1e-3 for o in optima):
            optima.append(r.x)
        if len(optima) == 2:
            break

    full = base_law.denormalise(expand_params(law_obj, problem.params(best.x)), refs)
    P = {n: float(full[n]) for n in base_law.param_names}
    yhat = base_law.predict(P, X)
    boot_norm = _bootstrap(problem, optima[:1], bootstrap, seed, n_jobs, progress, boot_restarts)
    boot_dict = base_law.denormalise(expand_params(law_obj, {n: boot_norm[:, i] for i, n in
                                                             enumerate(law_obj.param_names)}), refs)
    boot = np.stack([np.broadcast_to(boot_dict[n], (len(boot_norm),)) for n in base_law.param_names], axis=1)
    ok = np.all(np.isfinite(boot), axis=1)
    if bootstrap and ok.sum() < bootstrap:
        notes.append(f"{bootstrap - int(ok.sum())} of {bootstrap} bootstrap refits failed and were dropped")
    ci_low, ci_high = _bootstrap_ci(base_law, P, boot[ok], ci, ci_method)
    for n in fix:
        ci_low[n] = ci_high[n] = P[n]
    hold = _holdout_errors(problem, optima, x, refs, holdout_frac) if holdout else {}
    for w in notes:
        warnings.warn(f"fit of {law!r}: {w}", FitWarning, stacklevel=3)
    objective_name = (f"huber(delta={delta:g}, {reduction} of log residuals)" if objective == "huber"
                      else "least squares in metric space (SSE/SST)")
    return FitResult(
        law=base_law, x=x, y=y, params=P, ci_low=ci_low, ci_high=ci_high, r2=_r2(yv, yhat),
        r2_log=_r2(np.log(yv), np.log(yhat)), rmse=float(np.sqrt(np.mean((yhat - yv) ** 2))), objective=float(best.fun),
        objective_name=objective_name, n_points=len(yv), n_starts=len(results), n_starts_at_best=int(n_at_best),
        n_bootstrap=int(bootstrap), bootstrap_params=boot, holdout=hold, data_hash=_data_hash(X, yv), warnings=notes,
        metric=metric, bench=bench, sweep=sweep, elapsed_s=time.perf_counter() - t0, fixed=dict(fix),
        tied=dict(tie), inputs=X, targets=yv, _problem=problem, _optima=optima)


def _bootstrap_ci(law: Law, est: dict[str, float], boot: np.ndarray, ci: float,
                  method: str) -> tuple[dict[str, float], dict[str, float]]:
    """Two-sided bootstrap CIs at level `ci` from refitted parameters `boot` (rows, natural units)."""
    nan = {n: float("nan") for n in law.param_names}
    if len(boot) == 0:
        return nan, dict(nan)
    q = (100 * (1 - ci) / 2, 100 * (1 + ci) / 2)
    low, high = {}, {}
    for i, n in enumerate(law.param_names):
        lo, hi = np.percentile(boot[:, i], q)
        if method == "basic":  # reflect the quantiles about the estimate; positive constants in log space
            if n in law.log_params:
                lo, hi = est[n] ** 2 / hi, est[n] ** 2 / lo
            else:
                lo, hi = 2 * est[n] - hi, 2 * est[n] - lo
        low[n], high[n] = float(lo), float(hi)
    return low, high


def _diagnose(problem: _Problem, best, u_start: np.ndarray, n_finite: int, n_total: int) -> list[str]:
    notes = []
    if not best.success:
        notes.append(f"L-BFGS-B did not report convergence at the best optimum: {best.message}")
    if n_finite < n_total:
        notes.append(f"{n_total - n_finite} of {n_total} starts ended with invalid predictions")
    span = problem.hi - problem.lo
    for i, n in enumerate(problem.law.param_names):
        if best.x[i] <= problem.lo[i] + 1e-6 * span[i] or best.x[i] >= problem.hi[i] - 1e-6 * span[i]:
            side = "lower" if best.x[i] <= problem.lo[i] + 1e-6 * span[i] else "upper"
            notes.append(f"parameter {n} is at its {side} bound {problem.law.bounds[n][side == 'upper']:g}")
    if np.allclose(best.x, u_start, rtol=1e-8, atol=1e-10):
        notes.append("the best fit did not move from its starting point (optimizer stopped immediately)")
    return notes


def _bootstrap(problem: _Problem, starts: list[np.ndarray], n: int, seed: int, n_jobs: int | None,
               progress: bool | None, restarts: int = 0) -> np.ndarray:
    """Refit on `n` resamples (with replacement) of the points; rows of natural parameters."""
    n_par = len(problem.law.param_names)
    if n <= 0:
        return np.empty((0, n_par))
    rng = np.random.default_rng(seed)
    sets = list(rng.integers(0, len(problem.y), size=(n, len(problem.y))))
    n_jobs = n_jobs or min(2, os.cpu_count() or 1)
    args = (problem.law.spec, problem.X, problem.y, problem.objective, problem.delta, problem.reduction, problem.tol,
            problem.scale)
    bar = tqdm(total=n, desc=f"bootstrap {problem.law.name}", disable=(None if progress is None else not progress),
               leave=False)
    size = 25 if n_jobs <= 1 or n < 50 else max(1, math.ceil(n / (n_jobs * 8)))
    batches = [sets[i:i + size] for i in range(0, n, size)]
    chunks = []
    if n_jobs <= 1 or n < 50:
        for batch in batches:
            chunks.append(_refit_chunk(*args, batch, starts, restarts))
            bar.update(len(batch))
    else:
        with ProcessPoolExecutor(max_workers=n_jobs) as pool:
            for f in [pool.submit(_refit_chunk, *args, batch, starts, restarts) for batch in batches]:
                chunks.append(f.result())
                bar.update(len(chunks[-1]))
    bar.close()
    U = np.concatenate(chunks, axis=0)
    with np.errstate(over="ignore"):
        return np.where(problem.is_log, np.exp(U), U)
