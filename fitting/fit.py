"""Fit a scaling law to (frontier) points: multi-start L-BFGS-B with analytic gradients, bootstrap, hold-outs.

Objectives (both minimised with scipy's L-BFGS-B at a relative tolerance, see `fitting.problem`):

- `huber` (default): Huber loss (delta, default 1e-3) on log residuals log(L_hat) - log(L), SUMMED over points.
  Summing matters: the mean is n times smaller, so L-BFGS-B's absolute tolerance stops it early (Besiroglu et al.
  2024); `reduction="mean"` is available to show exactly that. A delta larger than every log residual (1e6) makes
  it least squares on log residuals (half their sum of squares).
- `lsq`: least squares in metric space, normalised as SSE / SST (= 1 - R^2), which is scale free.

Positive constants (L_inf, A, B, E, offsets) are optimised as log(value); exponents directly, within bounds.
Starting points: the law's grid over its exponents/offsets; at each grid point the linear constants are solved by
weighted least squares (variable projection), every grid point is scored with the real objective and the best
`n_starts` are refined; beyond the grid's size, `n_starts` adds random starts drawn inside the bounds (seeded). The
best optimum is kept and `n_starts_at_best` says how many refinements reached it (within STARTS_AT_BEST_RTOL).
With every parameter fixed nothing is fitted: `score_law` evaluates the law (objective, R^2, residuals).
"""
from __future__ import annotations

import hashlib
import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import optimize
from threadpoolctl import threadpool_limits

from .bootstrap import (CI_METHODS, POINT_UNIT, bootstrap_ci, ci_edge_notes, degenerate_note, describe_unit,
                        prediction_band, refit_resamples)
from .laws import DEFAULT_LAW, Law, constrain, expand_params, get_law
from .frontier import target_label
from .problem import DEFAULT_TOL, FitProblem, best_of, one_blas_thread

OBJECTIVES = ("huber", "lsq")
EXPONENT_NAMES = {"alpha", "beta", "gamma", "alpha2", "beta2", "delta", "kappa"}
STARTS_AT_BEST_RTOL = 1e-6  # a start "reached the best" when its optimum is within this relative tolerance
FEW_STARTS_FRACTION = 0.25  # warn when fewer than this fraction of (at least 4) starts reached the best
LOW_R2 = 0.5  # warn below this R^2 (metric space)
NEAR_ZERO_L_INF = 1e-3  # a free L_inf below this fraction of the smallest target has drifted towards 0


class FitWarning(UserWarning):
    """A fit finished but something about it is suspicious (not converged, parameter at a bound, ...)."""


@dataclass(frozen=True)
class FitOptions:
    """Everything `fit_law` needs besides the points; the meaning of every field is in `fit_law`'s docstring.

    Units: `fix` values are natural units (those of the x and y columns); `delta` is in log-residual units."""

    law: str = DEFAULT_LAW
    x: tuple[str, ...] = ("C", "D")
    y: str = "y"
    objective: str = "huber"
    delta: float = 1e-3
    reduction: str = "sum"
    bootstrap: int = 1000
    bootstrap_groups: str | None = None
    seed: int = 0
    n_starts: int | None = 8
    holdout: bool = True
    holdout_frac: float = 0.2
    ci: float = 0.95
    ci_method: str = "percentile"
    boot_restarts: int = 0
    tol: float | None = DEFAULT_TOL
    n_jobs: int | None = None
    progress: bool | None = None
    metric: str | None = None
    bench: str | None = None
    sweep: str | None = None
    fix: Mapping[str, float] = field(default_factory=dict)
    tie: Mapping[str, str] = field(default_factory=dict)


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
    n_degenerate_resamples: int = 0  # bootstrap resamples with <= 3 distinct points (fitting.bootstrap)
    bootstrap_groups: str | None = None  # column whose groups were resampled whole (None: points were)
    n_bootstrap_groups: int = 0  # how many groups the fitted points fell into (0: points were resampled)
    # The fitted points (raw input columns and target) and, for warm-started refits (cross-validation in
    # fitting.compare), the fit-space problem and its distinct optima. Not part of the record.
    inputs: list[np.ndarray] | None = field(default=None, repr=False, compare=False)
    targets: np.ndarray | None = field(default=None, repr=False, compare=False)
    _problem: "FitProblem | None" = field(default=None, repr=False, compare=False)
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
        (fitting.extrapolation), since the full-data optimum has seen the held-out points.
        """
        if self._problem is None:
            raise ValueError("refit_predict needs a FitResult made by fit_law in this process")
        train, test = np.asarray(train, dtype=bool), np.asarray(test, dtype=bool)
        n_free = len(self._problem.law.param_names)
        if train.sum() <= n_free:
            return np.full(int(test.sum()), np.nan)
        sub = self._problem.subset(np.flatnonzero(train))
        sub.tol = tol if tol is not None else sub.tol
        with one_blas_thread():  # see fit_law: tiny BLAS calls, one thread
            best = best_of(sub, self._optima)
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
        return prediction_band(self.law, self.bootstrap_params, self._inputs(C, D, U), q)

    @property
    def scored(self) -> bool:
        """True when nothing was fitted: every parameter was given (`score_law`)."""
        return self.n_starts == 0

    def residuals(self) -> pd.DataFrame:
        """One row per fitted point: the input columns, the target, predicted, residual (predicted - target, target
        units), rel_err (predicted / target - 1) and log_residual (log predicted - log target)."""
        if self.inputs is None or self.targets is None:
            raise ValueError("residuals needs a FitResult made by fit_law or score_law in this process")
        pred = self.law.predict(self.params, self.inputs)
        out = pd.DataFrame({c: self.inputs[i] for i, c in enumerate(self.x)})
        out[self.y], out["predicted"] = self.targets, pred
        out["residual"] = pred - self.targets
        out["rel_err"] = pred / self.targets - 1.0
        out["log_residual"] = np.log(pred) - np.log(self.targets)
        return out

    def formula(self, digits: int = 2) -> str:
        """The fitted law printed like the paper's Eq. 4, e.g. 'MSE(C,D) ~ 0.0033 + (200 C^-0.40 + ...)^2.82'."""
        values = {n: (f"{v:.2f}" if n in EXPONENT_NAMES else _sig(v, digits)) for n, v in self.params.items()}
        template = self.law.template
        if self.params.get("L_inf") == 0 and template.startswith("{L_inf} + "):  # a pure power law: no "0.0 +"
            template = template[len("{L_inf} + "):]
        body = template.format(x0=self.x[0], x1=self.x[-1], **values)
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
        starts = ("scored: every parameter given, nothing fitted" if self.scored else
                  f"{self.n_starts_at_best}/{self.n_starts} starts reached the best")
        lines = [self.formula(), f"  law {self.law.name} (Eq. {self.law.equation}), {self.objective_name}, "
                 f"objective {self.objective:.6g}, R^2 {self.r2:.4f} (log {self.r2_log:.4f}), RMSE {self.rmse:.3g}, "
                 f"{self.n_points} points, {starts}, {self.elapsed_s:.2f} s"]
        if self.n_bootstrap:
            unit = (f" of {describe_unit(self.bootstrap_groups)} ({self.n_bootstrap_groups})"
                    if self.bootstrap_groups else "")
            lines.append(f"  {self.n_bootstrap} bootstrap resamples{unit}, {self.n_degenerate_resamples} with <= 3 "
                         f"distinct points")
        if (self.fixed or self.tied) and not self.scored:
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
               "tied": dict(self.tied), "n_free": self.n_free,
               "bootstrap_unit": (self.bootstrap_groups or POINT_UNIT) if self.n_bootstrap else None}
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


def _bootstrap_groups(data: pd.DataFrame, column: str | None) -> list | None:
    """The group label of each fitted point for a cluster bootstrap (None: resample points)."""
    if column is None:
        return None
    if column not in data.columns:
        raise ValueError(f"fit_law: bootstrap_groups={column!r} is not a column of the points (have "
                         f"{list(data.columns)})")
    labels = data[column]
    if labels.isna().any():
        raise ValueError(f"fit_law: {int(labels.isna().sum())} fitted point(s) have no {column!r} "
                         f"(bootstrap_groups needs a label on every point)")
    return labels.astype(str).tolist()


def _holdout_errors(problem: FitProblem, starts: list[np.ndarray], x: list[str], refs: list[float],
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
        best = best_of(problem.subset(np.flatnonzero(train)), starts)
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
            bootstrap_groups: str | None = None, seed: int = 0, n_starts: int | None = 8, holdout: bool = True,
            holdout_frac: float = 0.2,
            ci: float = 0.95, ci_method: str = "percentile", boot_restarts: int = 0, tol: float | None = DEFAULT_TOL,
            n_jobs: int | None = None, progress: bool | None = None,
            metric: str | None = None, bench: str | None = None, sweep: str | None = None,
            fix: dict[str, float] | None = None, tie: dict[str, str] | None = None) -> FitResult:
    """Fit `law` to the rows of `df` (columns `x` as inputs, `y` as the positive, lower-is-better target).

    A table from `frontier()` is reduced to its per-D frontier points (column on_frontier_d). `n_starts` starts are
    refined: the best grid points, and when `n_starts` exceeds the law's grid, every grid point plus random starts
    drawn inside the bounds (seeded by `seed`; None: every grid point, i.e. brute force). `bootstrap` resamples of
    the points (seeded, in `n_jobs` processes, default min(2, CPUs); with `bootstrap_groups`, a column of `df`,
    resamples of whole groups of points: a cluster bootstrap, for points that share their noise, such as the run
    lengths forked from one trunk) give CIs at level `ci` and prediction bands;
    each resample is refitted by L-BFGS-B warm-started at the full-data optimum plus `boot_restarts` runs from the
    resample's best grid points (weakly identified laws can have a better optimum in another basin); the best is
    kept. `ci_method` "percentile" takes the bootstrap quantiles, "basic" reflects them about the estimate
    (2 theta_hat - q; positive constants in log space). `tol` is L-BFGS-B's relative tolerance (None: scipy's
    defaults, absolute for objectives < 1). `holdout` adds leave-one-D-out and largest-C (top `holdout_frac` of
    x[0]) extrapolation errors. Suspicious outcomes (no convergence, a parameter at a bound, few starts reaching the
    best, R^2 < 0.5, a free L_inf drifted towards 0, CIs reaching the edge of a range, degenerate resamples) are
    reported as FitWarning and kept in `.warnings`; impossible inputs raise ValueError.

    `fix` ({"L_inf": 0.0}, natural units) fixes parameters and `tie` ({"beta": "alpha"}) sets a parameter equal to
    another one; only the free parameters are fitted, bootstrapped and counted (`FitResult.n_free`). Constraints on
    constants or offsets switch off the input normalisation (fixed values then mean what they say in raw units).
    With every parameter fixed nothing is fitted: the law is scored (`score_law`).
    """
    options = FitOptions(law=law, x=tuple(x), y=y, objective=objective, delta=delta, reduction=reduction,
                         bootstrap=bootstrap, bootstrap_groups=bootstrap_groups, seed=seed, n_starts=n_starts,
                         holdout=holdout, holdout_frac=holdout_frac,
                         ci=ci, ci_method=ci_method, boot_restarts=boot_restarts, tol=tol, n_jobs=n_jobs,
                         progress=progress, metric=metric, bench=bench, sweep=sweep, fix=dict(fix or {}),
                         tie=dict(tie or {}))
    return fit_with_options(df, options)


def refit_points(fit: FitResult, keep: np.ndarray | None = None, free: str | None = None,
                 bootstrap: int = 0) -> FitResult:
    """`fit`'s law refitted on its own points (those where `keep` is True; all by default) with its fixes and ties,
    `free` (a fixed parameter) set free; 20 starts, no hold-out; the refit's own FitWarnings are not reported."""
    keep = np.ones(len(fit.targets), dtype=bool) if keep is None else keep
    points = pd.DataFrame({"C": fit.inputs[0][keep], "D": fit.inputs[1][keep], "y": fit.targets[keep]})
    with warnings.catch_warnings():  # what a caller reports is the refit's estimate; its warnings are not news
        warnings.simplefilter("ignore", FitWarning)
        return fit_law(points, law=fit.law.name, bootstrap=bootstrap, seed=0, n_starts=20, holdout=False,
                       progress=False, fix={k: v for k, v in fit.fixed.items() if k != free} or None,
                       tie=dict(fit.tied) or None)


def fit_with_options(df: pd.DataFrame, options: FitOptions) -> FitResult:
    """`fit_law` with its settings in one `FitOptions` (what `fitting.study.fit_study` calls)."""
    base_law = get_law(options.law)
    if set(options.fix) >= set(base_law.param_names) and not options.tie:
        return score_law(df, options.law, options.x, options.y, options.fix, objective=options.objective,
                         delta=options.delta, reduction=options.reduction, metric=options.metric,
                         bench=options.bench, sweep=options.sweep)
    # L-BFGS-B calls BLAS on tiny vectors; multi-threaded OpenBLAS makes each call ~50x slower on a busy machine.
    with threadpool_limits(limits=1, user_api="blas"):
        return _fit(df, options)


def _check_options(o: FitOptions, law_obj: Law) -> None:
    if len(o.x) != law_obj.n_inputs:
        raise ValueError(f"law {o.law!r} takes {law_obj.n_inputs} input column(s), got x={list(o.x)}")
    if o.objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {o.objective!r}")
    if o.ci_method not in CI_METHODS:
        raise ValueError(f"ci_method must be one of {CI_METHODS}, got {o.ci_method!r}")
    if o.reduction not in ("sum", "mean"):
        raise ValueError(f"reduction must be 'sum' or 'mean', got {o.reduction!r}")
    if o.n_starts is not None and o.n_starts < 1:
        raise ValueError(f"n_starts must be at least 1 (or None for every grid point), got {o.n_starts}")


def _objective_name(o: FitOptions) -> str:
    return (f"huber(delta={o.delta:g}, {o.reduction} of log residuals)" if o.objective == "huber"
            else "least squares in metric space (SSE/SST)")


def _choose_starts(problem: FitProblem, n_starts: int | None, seed: int) -> np.ndarray:
    """Fit-space starts: the best `n_starts` grid points, or every grid point plus random starts inside the bounds
    (seeded) up to `n_starts` when the grid is smaller. Sets `problem.scale` to the best grid score."""
    grid_u, grid_f = problem.grid_starts()
    if np.isfinite(grid_f[0]) and grid_f[0] > 0:
        problem.scale = float(grid_f[0])
    chosen = grid_u[np.isfinite(grid_f)]
    if n_starts is None or n_starts <= len(chosen):
        return chosen[:n_starts]
    rng = np.random.default_rng(seed)
    extra: list[np.ndarray] = []
    for _ in range(10):  # redraw the few random starts whose predictions are invalid
        need = n_starts - len(chosen) - sum(len(e) for e in extra)
        if need <= 0:
            break
        u, f = problem.random_starts(need, rng)
        extra.append(u[np.isfinite(f)])
    return np.concatenate([chosen, *extra], axis=0)


def _refine(problem: FitProblem, starts: np.ndarray, law: str) -> tuple[list, object, np.ndarray, int]:
    """L-BFGS-B from every start: (finite optima [(start, result)], best result, its start, starts at the best)."""
    if len(starts) == 0:
        raise RuntimeError(f"fit_law: no grid start of law {law!r} gives finite predictions on these data")
    results = [(u0, problem.minimize(u0)) for u0 in starts]
    finite = [(u0, r) for u0, r in results if np.isfinite(r.fun) and r.fun < 1e30]
    if not finite:
        raise RuntimeError(f"fit_law: every start of law {law!r} failed")
    u_start, best = min(finite, key=lambda t: t[1].fun)
    tol = max(STARTS_AT_BEST_RTOL * abs(best.fun), 1e-10)
    n_at_best = sum(r.fun <= best.fun + tol for _, r in finite)
    return finite, best, u_start, int(n_at_best)


def _distinct_optima(finite: list, keep: int = 2) -> list[np.ndarray]:
    """Up to `keep` distinct optima (fit space, best first): they seed the bootstrap and hold-out refits."""
    optima: list[np.ndarray] = []
    for _, r in sorted(finite, key=lambda t: t[1].fun):
        if all(np.max(np.abs(r.x - o)) > 1e-3 for o in optima):
            optima.append(r.x)
        if len(optima) == keep:
            break
    return optima


def _fit(df: pd.DataFrame, o: FitOptions) -> FitResult:
    t0 = time.perf_counter()
    fix, tie = dict(o.fix), dict(o.tie)
    base_law = get_law(o.law)
    law_obj = constrain(base_law, fix, tie)  # validates the constraints (clear errors naming the parameter)
    _check_options(o, law_obj)
    x = list(o.x)
    metric = o.metric or df.attrs.get("metric")
    data, X, yv = _prepare(df, x, o.y, len(law_obj.param_names))
    groups = _bootstrap_groups(data, o.bootstrap_groups)
    # Fit on inputs divided by their geometric mean: log A and alpha then no longer move together.
    refs = [float(np.exp(np.mean(np.log(xi)))) for xi in X]
    for j, k in base_law.ref_of.items():
        refs[j] = refs[k]
    if any(n in base_law.powers or n in base_law.offsets for n in (*fix, *tie, *tie.values())):
        refs = [1.0] * len(refs)  # a fixed/tied constant or offset is only meaningful in the raw units
    problem = FitProblem(law_obj, [xi / r for xi, r in zip(X, refs)], yv, o.objective, o.delta, o.reduction, o.tol)
    starts = _choose_starts(problem, o.n_starts, o.seed)
    finite, best, u_start, n_at_best = _refine(problem, starts, o.law)
    notes = _diagnose(problem, best, u_start, len(finite), len(starts))
    optima = _distinct_optima(finite)
    full = base_law.denormalise(expand_params(law_obj, problem.params(best.x)), refs)
    P = {n: float(full[n]) for n in base_law.param_names}
    yhat = base_law.predict(P, X)
    boot_norm, n_degenerate = refit_resamples(problem, optima[:1], o.bootstrap, o.seed, o.n_jobs, o.progress,
                                              o.boot_restarts, groups)
    boot_dict = base_law.denormalise(expand_params(law_obj, {n: boot_norm[:, i] for i, n in
                                                             enumerate(law_obj.param_names)}), refs)
    boot = np.stack([np.broadcast_to(boot_dict[n], (len(boot_norm),)) for n in base_law.param_names], axis=1)
    ok = np.all(np.isfinite(boot), axis=1)
    if o.bootstrap and ok.sum() < o.bootstrap:
        notes.append(f"{o.bootstrap - int(ok.sum())} of {o.bootstrap} bootstrap refits failed and were dropped")
    ci_low, ci_high = bootstrap_ci(base_law, P, boot[ok], o.ci, o.ci_method)
    for n in fix:
        ci_low[n] = ci_high[n] = P[n]
    hold = _holdout_errors(problem, optima, x, refs, o.holdout_frac) if o.holdout else {}
    r2 = _r2(yv, yhat)
    notes += _starts_note(n_at_best, len(finite), len(starts))
    notes += _low_r2_note(r2)
    notes += _near_zero_l_inf_note(law_obj, P, ci_low, ci_high, yv, o.ci, o.bootstrap, notes)
    if o.bootstrap and ok.any():
        notes += ci_edge_notes(base_law, list(law_obj.param_names), ci_low, ci_high, o.ci)
    notes += degenerate_note(n_degenerate, o.bootstrap, len(yv))
    for w in notes:
        warnings.warn(f"fit of {o.law!r}: {w}", FitWarning, stacklevel=4)
    return FitResult(
        law=base_law, x=x, y=o.y, params=P, ci_low=ci_low, ci_high=ci_high, r2=r2,
        r2_log=_r2(np.log(yv), np.log(yhat)), rmse=float(np.sqrt(np.mean((yhat - yv) ** 2))), objective=float(best.fun),
        objective_name=_objective_name(o), n_points=len(yv), n_starts=len(starts), n_starts_at_best=n_at_best,
        n_bootstrap=int(o.bootstrap), bootstrap_params=boot, holdout=hold, data_hash=_data_hash(X, yv),
        warnings=notes, metric=metric, bench=o.bench, sweep=o.sweep, elapsed_s=time.perf_counter() - t0,
        fixed=dict(fix), tied=dict(tie), inputs=X, targets=yv, _problem=problem, _optima=optima,
        n_degenerate_resamples=n_degenerate, bootstrap_groups=o.bootstrap_groups,
        n_bootstrap_groups=0 if groups is None else len(set(groups)))


def score_law(df: pd.DataFrame, law: str, x: Sequence[str], y: str, params: Mapping[str, float], *,
              objective: str = "huber", delta: float = 1e-3, reduction: str = "sum", metric: str | None = None,
              bench: str | None = None, sweep: str | None = None) -> FitResult:
    """Evaluate a given law (every parameter given, natural units, e.g. a published fit) on the rows of `df`:
    nothing is fitted. The FitResult has the objective (as `fit_law` defines it), R^2 (metric and log space), RMSE
    and `residuals()`; every parameter counts as fixed, no starts, no bootstrap."""
    t0 = time.perf_counter()
    base_law = get_law(law)
    x = list(x)
    missing = [n for n in base_law.param_names if n not in params]
    if missing:
        raise ValueError(f"score_law: law {law!r} needs every parameter; missing {missing} (give them with --fix)")
    extra = sorted(set(params) - set(base_law.param_names))
    if extra:
        raise ValueError(f"score_law: law {law!r} has no parameter(s) {extra}; its parameters are "
                         f"{list(base_law.param_names)}")
    options = FitOptions(law=law, x=tuple(x), y=y, objective=objective, delta=delta, reduction=reduction)
    _check_options(options, base_law)
    _, X, yv = _prepare(df, x, y, 0)
    P = {n: float(params[n]) for n in base_law.param_names}
    with np.errstate(all="ignore"):
        yhat = base_law.predict(P, X)
    if not np.all(np.isfinite(yhat) & (yhat > 0)):
        raise ValueError(f"score_law: law {law!r} with {P} predicts non-finite or non-positive values at "
                         f"{int((~(np.isfinite(yhat) & (yhat > 0))).sum())} point(s)")
    problem = FitProblem(base_law, X, yv, objective, delta, reduction)
    r2 = _r2(yv, yhat)
    empty = np.empty((0, len(base_law.param_names)))
    return FitResult(
        law=base_law, x=x, y=y, params=P, ci_low=dict(P), ci_high=dict(P), r2=r2, r2_log=_r2(np.log(yv), np.log(yhat)),
        rmse=float(np.sqrt(np.mean((yhat - yv) ** 2))), objective=float(problem.loss(yhat)),
        objective_name=_objective_name(options), n_points=len(yv), n_starts=0, n_starts_at_best=0, n_bootstrap=0,
        bootstrap_params=empty, holdout={}, data_hash=_data_hash(X, yv), warnings=_low_r2_note(r2), metric=metric,
        bench=bench, sweep=sweep, elapsed_s=time.perf_counter() - t0, fixed=dict(P), inputs=X, targets=yv)


def _starts_note(n_at_best: int, n_finite: int, n_starts: int) -> list[str]:
    """A warning when fewer than FEW_STARTS_FRACTION of (at least 4) starts reached the best objective."""
    if n_starts < 4 or n_at_best >= FEW_STARTS_FRACTION * n_starts:
        return []
    return [f"only {n_at_best} of {n_starts} starts reached the best objective (within {STARTS_AT_BEST_RTOL:g} "
            f"relative; {n_finite} ended finite): the objective has several optima; rerun with more starts "
            f"(--starts N adds random starts inside the parameter ranges) and check that the law does not change"]


def _low_r2_note(r2: float) -> list[str]:
    if not r2 < LOW_R2:
        return []
    return [f"R^2 = {r2:.3f} < {LOW_R2}: the law explains little of the target's variation; are the points one "
            f"series (a filter such as --where, or a frontier such as --frontier, may be missing)?"]


def _near_zero_l_inf_note(law_obj: Law, P: dict[str, float], ci_low: dict[str, float], ci_high: dict[str, float],
                          y: np.ndarray, ci: float, n_boot: int, notes: list[str]) -> list[str]:
    """A warning when a free L_inf drifted towards 0 (below NEAR_ZERO_L_INF of the smallest target) without
    sitting exactly at its lower bound (that case is already reported)."""
    if "L_inf" not in law_obj.param_names or any(w.startswith("parameter L_inf is at") for w in notes):
        return []
    value, floor = P["L_inf"], NEAR_ZERO_L_INF * float(np.min(y))
    if value >= floor:
        return []
    text = (f"L_inf = {value:.3g} drifted towards 0 (below {NEAR_ZERO_L_INF:g} of the smallest target, "
            f"{np.min(y):.3g}): the data do not identify an irreducible term")
    if n_boot:
        lo, hi = ci_low["L_inf"], ci_high["L_inf"]
        width = "a ~zero-width" if hi - lo < floor else "a"
        text += f"; {width} {100 * ci:g}% bootstrap CI [{lo:.3g}, {hi:.3g}] does not measure it"
    return [text + "; consider fixing it (--fix L_inf=0) and comparing the laws (--compare)"]


def _diagnose(problem: FitProblem, best, u_start: np.ndarray, n_finite: int, n_total: int) -> list[str]:
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
