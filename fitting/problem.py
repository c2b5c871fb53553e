"""The fit-space problem of one law on one data set: objective, analytic gradient, bounds and starting points.

Positive constants (L_inf, A, B, E, offsets) live in log space (u = log value), exponents as they are, all within
the law's box bounds. `FitProblem.grid_starts` scores the law's grid of nonlinear parameters after solving the
linear constants of every grid point by weighted least squares (variable projection); `random_starts` does the same
for nonlinear parameters drawn at random inside the bounds (seeded), so a fit can use more starts than the grid has.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import optimize
from threadpoolctl import ThreadpoolController

from .laws import Law

# Relative tolerance of every L-BFGS-B run (see FitProblem.minimize). scipy's defaults are absolute for objectives
# below 1: on a summed log-Huber of ~3e-4 they stop refits after ~20 iterations, long before the optimum of weakly
# identified laws (Eq. 4: alpha 0.24 instead of 0.084 at a 1.4% worse objective) and keep bootstrap refits at their
# warm start, which makes bootstrap CIs far too narrow.
DEFAULT_TOL = 1e-12


_CONTROLLER: ThreadpoolController | None = None


def one_blas_thread():
    """threadpool_limits(1, "blas") without re-scanning the loaded libraries at every call (~7 ms each): for the
    many short warm-started refits of cross-validation."""
    global _CONTROLLER
    if _CONTROLLER is None:
        _CONTROLLER = ThreadpoolController()
    return _CONTROLLER.limit(limits=1, user_api="blas")


# ---------------------------------------------------------------------------------------------------- objective
class FitProblem:
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

    def subset(self, idx: np.ndarray) -> "FitProblem":
        return FitProblem(self.law, [x[idx] for x in self.X], self.y[idx], self.objective, self.delta, self.reduction,
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
        grid = {k: np.asarray(v, dtype=float) for k, v in self.law.grid(self.X).items()}
        starts, scores = self._project(grid)
        order = np.argsort(scores, kind="stable")
        return starts[order], scores[order]

    def random_starts(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """`n` starts whose nonlinear parameters (the grid's keys) are drawn inside the law's bounds, their linear
        constants solved as for the grid; returns (starts (n, P), scores) in draw order.

        Exponents are drawn uniformly within their bounds; parameters whose bounds span more than two decades
        (positive constants, offsets, gamma) log-uniformly within the grid's range widened 100x each way and clipped
        to the bounds (the bounds of a constant, 1e-30..1e30, are far wider than any useful start). Fixed
        parameters keep their value and tied ones copy the parameter they are tied to.
        """
        grid = {k: np.asarray(v, dtype=float) for k, v in self.law.grid(self.X).items()}
        fixed, tied = dict(self.law.fixed), dict(self.law.tied)
        draws = {}
        for k, values in grid.items():
            if k in fixed or k in tied or k not in self.law.bounds:
                continue
            lo, hi = self.law.bounds[k]
            if lo > 0 and hi / lo > 100:
                a, b = max(lo, values.min() / 100), min(hi, values.max() * 100)
                draws[k] = np.exp(rng.uniform(np.log(a), np.log(b), n))
            else:
                draws[k] = rng.uniform(lo, hi, n)
        for k, values in grid.items():
            if k in tied and tied[k] in draws:
                draws[k] = draws[tied[k]].copy()
            elif k not in draws:
                draws[k] = np.full(n, values[0])
        return self._project(draws)

    def _project(self, nonlinear: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Fit-space starts (G, P) and objective scores of G nonlinear parameter sets, each completed by solving
        the law's linear constants by weighted least squares (variable projection)."""
        law, X, y = self.law, self.X, self.y
        G = {k: v[:, None] for k, v in nonlinear.items()}
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
        return self.to_u({n: P[n][:, 0] for n in law.param_names}), scores



def best_of(problem: FitProblem, starts: Sequence[np.ndarray]) -> optimize.OptimizeResult | None:
    """The lowest finite L-BFGS-B optimum of `problem` over `starts` (fit-space vectors); None when all fail."""
    best = None
    for u0 in starts:
        res = problem.minimize(u0)
        if np.isfinite(res.fun) and (best is None or res.fun < best.fun):
            best = res
    return best
