"""Bootstrap of scaling-law fits, in one place: resamples, refits, CIs, prediction bands and their diagnostics.

Every bootstrap of the package draws its resamples here (`resample_indices`: `seed` -> the same index sets for
`fit_law`, the batched two-stage refits of `fitting.data_constrained` and anything else that resamples points), so
two analyses with one seed see the same resamples. Resamples are of whole points, with replacement, or of whole
groups of points (a cluster bootstrap: `groups`, e.g. the runs forked from one trunk, which share its initialisation
and data order and so its luck; resampling them as points treats correlated points as independent and gives CIs
too narrow for what a new seed does: docs/fitting.md, "Bootstrap units").

Diagnostics (issue 25): a resample with few distinct points (`DEGENERATE_DISTINCT`, <= 3) cannot determine a
law's shape; on 6 points about a third of the resamples are like that, and the CI then mostly measures them.
`degenerate_note` counts them; `ci_edge_notes` names CIs that reach the edge of a parameter's allowed range.
"""
from __future__ import annotations

import math
import os
from concurrent.futures import ProcessPoolExecutor

from typing import Sequence

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from .laws import Law, law_from_spec
from .problem import FitProblem, best_of

CI_METHODS = ("percentile", "basic")
POINT_UNIT = "point"
"""`--bootstrap-by point`: resample points; any other value names the column whose groups are resampled whole (store
points have `trunk`: the runs that share one trunk's first steps, `rayder_core.store.with_replicates`)."""
TRUNK_UNIT = "trunk"
STORE_BOOTSTRAP_UNITS = (POINT_UNIT, TRUNK_UNIT)  # the units of store points (a sweep's `fit.bootstrap_by`)


def bootstrap_groups_column(unit: str) -> str | None:
    """The column of a `--bootstrap-by` unit (None for POINT_UNIT: points are resampled)."""
    return None if unit == POINT_UNIT else unit


def describe_unit(unit: str) -> str:
    """'points' for POINT_UNIT, else 'whole <unit> groups' (what a bootstrap of that unit resamples)."""
    return "points" if unit == POINT_UNIT else f"whole {unit} groups"

DEGENERATE_DISTINCT = 3  # a resample with at most this many distinct points is counted as degenerate
CI_EDGE_FRACTION = 0.01  # a CI end within 1% of a parameter's range (log range for constants) reaches its edge


def resample_indices(n_points: int, n_resamples: int, seed: int) -> np.ndarray:
    """Index sets (n_resamples, n_points) of resamples with replacement, seeded (numpy default_rng)."""
    return np.random.default_rng(seed).integers(0, n_points, size=(n_resamples, n_points))


def resample_groups(groups: Sequence, n_resamples: int, seed: int) -> list[np.ndarray]:
    """Index sets of a cluster bootstrap: each resample draws as many groups as there are, with replacement (seeded
    as `resample_indices` draws points), and takes every point of each drawn group, in point order within a group.
    `groups` holds one label per point; groups are numbered in order of first appearance, so with one point per
    group the index sets are exactly `resample_indices(n_points, n_resamples, seed)`. Resamples differ in length
    when groups differ in size."""
    labels = pd.Series(list(groups), dtype=object)
    if labels.isna().any():
        raise ValueError(f"resample_groups: {int(labels.isna().sum())} point(s) have no group label")
    codes, _ = pd.factorize(labels, sort=False)
    members = [np.flatnonzero(codes == g) for g in range(codes.max() + 1)]
    draws = resample_indices(len(members), n_resamples, seed)
    return [np.concatenate([members[g] for g in row]) for row in draws]


def resample_counts(n_points: int, n_resamples: int, seed: int) -> np.ndarray:
    """The resamples of `resample_indices` as multiplicities (n_resamples, n_points): how often each point is drawn."""
    sets = resample_indices(n_points, n_resamples, seed)
    W = np.zeros((n_resamples, n_points))
    np.add.at(W, (np.repeat(np.arange(n_resamples), n_points), sets.ravel()), 1.0)
    return W


def count_degenerate(index_sets: np.ndarray | list[np.ndarray], max_distinct: int = DEGENERATE_DISTINCT) -> int:
    """Number of resamples (rows of point indices, or index arrays of any lengths) with at most `max_distinct`
    distinct points."""
    return int(sum(len(np.unique(row)) <= max_distinct for row in index_sets))


def degenerate_note(n_degenerate: int, n_resamples: int, n_points: int) -> list[str]:
    """A warning when some resamples had <= DEGENERATE_DISTINCT distinct points (empty list otherwise)."""
    if not n_degenerate:
        return []
    return [f"{n_degenerate} of {n_resamples} bootstrap resamples have <= {DEGENERATE_DISTINCT} distinct points (of "
            f"{n_points}); the CIs rest partly on resamples that cannot determine the law's shape"]


def bootstrap_ci(law: Law, est: dict[str, float], boot: np.ndarray, ci: float,
                 method: str) -> tuple[dict[str, float], dict[str, float]]:
    """Two-sided bootstrap CIs at level `ci` from refitted parameters `boot` (rows, natural units).

    `method` "percentile" takes the quantiles; "basic" reflects them about the estimate (2 theta_hat - q; positive
    constants in log space, theta_hat^2 / q). No rows: NaN intervals."""
    if method not in CI_METHODS:
        raise ValueError(f"ci_method must be one of {CI_METHODS}, got {method!r}")
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


def ci_edge_notes(law: Law, free: list[str], ci_low: dict[str, float], ci_high: dict[str, float],
                  ci: float) -> list[str]:
    """Warnings for free parameters whose CI reaches the edge of the law's allowed range (an end within
    CI_EDGE_FRACTION of the range, in log space for positive constants and for positive ranges such as gamma's; e.g.
    beta's CI [0.87, 4.99] of range [0, 5]): the data do not bound the parameter on that side. Worded without "bound" (sweeps.study_checks counts warnings
    containing that word as parameters at a bound)."""
    notes = []
    for n in free:
        lo_b, hi_b = law.bounds[n]
        lo, hi = ci_low.get(n, float("nan")), ci_high.get(n, float("nan"))
        if not (np.isfinite(lo) and np.isfinite(hi)):
            continue
        # log space for positive constants and for ranges with a positive lower bound (gamma's 0.05..20: linearly,
        # 1% of that range would call a CI starting at 0.24 "at the edge 0.05")
        f = (lambda v: math.log(max(v, 1e-300))) if n in law.log_params or lo_b > 0 else (lambda v: v)
        tol = CI_EDGE_FRACTION * (f(hi_b) - f(lo_b))
        ends = [f"{'lower' if side == 0 else 'upper'} end {edge:g}" for side, (edge, v) in
                enumerate(((lo_b, lo), (hi_b, hi))) if abs(f(v) - f(edge)) <= tol]
        if ends:
            notes.append(f"the {100 * ci:g}% bootstrap CI of {n} [{lo:.4g}, {hi:.4g}] reaches the "
                         f"{' and '.join(ends)} of its allowed range: the data do not pin {n} down")
    return notes


def prediction_band(law: Law, boot_params: np.ndarray, X: list[np.ndarray],
                    q: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Percentile band (q in %) of the predictions of bootstrap parameter rows `boot_params` (natural units; rows
    with NaN are skipped) at inputs X."""
    ok = np.all(np.isfinite(boot_params), axis=1)
    if not ok.any():
        raise ValueError("predict_band needs a fit with bootstrap > 0")
    Pb = {n: boot_params[ok, i].reshape((-1,) + (1,) * X[0].ndim) for i, n in enumerate(law.param_names)}
    preds = law.evaluate(Pb, X, False)[0]
    return np.percentile(preds, q[0], axis=0), np.percentile(preds, q[1], axis=0)


def _refit_chunk(law_spec: tuple, X: list[np.ndarray], y: np.ndarray, objective: str, delta: float, reduction: str,
                 tol: float | None, scale: float, index_sets: list[np.ndarray], starts: list[np.ndarray],
                 restarts: int) -> np.ndarray:
    """Refit on each index set (bootstrap resamples) from the given starts (warm: the full-data optimum) and the
    `restarts` best grid points of the resample; rows of fit-space parameters."""
    # one BLAS thread while fitting (see fit_law); a context manager, so it never leaks into the caller's process
    with threadpool_limits(limits=1, user_api="blas"):
        problem = FitProblem(law_from_spec(law_spec), X, y, objective, delta, reduction, tol, scale)
        out = np.full((len(index_sets), len(problem.law.param_names)), np.nan)
        for i, idx in enumerate(index_sets):
            sub = problem.subset(idx)
            best = best_of(sub, list(starts) + (list(sub.grid_starts()[0][:restarts]) if restarts else []))
            if best is not None:
                out[i] = best.x
    return out


def refit_resamples(problem: FitProblem, starts: list[np.ndarray], n: int, seed: int, n_jobs: int | None,
                    progress: bool | None, restarts: int = 0,
                    groups: Sequence | None = None) -> tuple[np.ndarray, int]:
    """Refit `problem` on `n` resamples of its points (`resample_indices(seed)`; with `groups`, one label per point,
    resamples of whole groups: `resample_groups`), in `n_jobs` processes (default min(2, CPUs)); returns (rows of
    natural parameters (NaN: failed refit), number of degenerate resamples)."""
    n_par = len(problem.law.param_names)
    if n <= 0:
        return np.empty((0, n_par)), 0
    if groups is not None and len(groups) != len(problem.y):
        raise ValueError(f"refit_resamples: {len(groups)} group labels for {len(problem.y)} points")
    sets = (list(resample_indices(len(problem.y), n, seed)) if groups is None
            else resample_groups(groups, n, seed))
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
        return np.where(problem.is_log, np.exp(U), U), count_degenerate(sets)
