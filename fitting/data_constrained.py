"""Data-constrained scaling (Muennighoff et al. 2023, "Scaling data-constrained language models").

RayDer's D is the number of *unique* videos; runs see them for many epochs. The registry law `data_constrained`
(fitting/laws.py) replaces the data term of the additive law by the effective data

    D' = U_D + U_D R* (1 - exp(-R / R*)),  U_D = min(D_seen, U),  R = D_seen / U_D - 1,

with inputs x = [C (or N), D_seen (samples seen), U (unique data)]. `data_constrained_rn` (option
`param_repetition=True`, `rayder-fit --param-repetition`) adds the paper's parameter term: the model-size input x0
must then be N (parameters) and N is replaced by N' = U_N + U_N R_N* (1 - exp(-R_N / R_N*)), U_N = min(N, N_opt(U_D))
the compute-optimal size for the unique data under the base law, R_N = N / U_N - 1.

`fit_data_constrained` does the paper's two-stage fit — the base law (`additive` on [x0, D_seen]) on single-epoch
points (D_seen <= U), then R* (and R_N*) with the base parameters fixed on all points — and the joint fit of all
parameters, and returns both. Point estimates are `fit_law`'s (multi-start L-BFGS-B). Bootstrap CIs: each resample of
*all* points redoes both stages (base on the resample's single-epoch points, then R* with that base fixed), so the
two-stage CIs carry the uncertainty of stage 1; the joint fit is refitted on the same resamples. The refits are
batched over resamples (one projected Levenberg-Marquardt / IRLS solve of the same objective for all resamples at
once, warm-started at the full-data optimum): 1000 resamples x 3 refits take ~1-2 s instead of ~30 CPU-s of
per-resample L-BFGS-B (benchmarks/fit_speed.py).
"""
from __future__ import annotations

import dataclasses
import time
import warnings
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from .bootstrap import bootstrap_ci, resample_counts
from .fit import FitResult, FitWarning, fit_law
from .laws import Law, get_law

BASE_PARAMS = ("L_inf", "A", "alpha", "B", "beta")


@dataclass
class DataConstrainedFit:
    base: FitResult  # additive law on the single-epoch points
    two_stage: FitResult  # data_constrained with the base parameters fixed: only R_star (and R_N_star) fitted
    joint: FitResult | None  # all parameters fitted together on every point
    n_single_epoch: int
    n_points: int
    n_bootstrap: int = 0
    bootstrap_s: float = 0.0  # seconds of the batched two-stage + joint bootstrap

    def summary(self) -> str:
        lines = [f"data-constrained fit (Muennighoff et al. 2023): {self.n_points} points, "
                 f"{self.n_single_epoch} single-epoch; {self.n_bootstrap} bootstrap resamples of all points, each "
                 "redoing both stages (two-stage CIs include stage 1's uncertainty)",
                 "stage 1, base law on single-epoch points:", self.base.summary(),
                 "stage 2, R* with the base fixed (CIs: both stages refitted per resample):", self.two_stage.summary()]
        if self.joint is not None:
            lines += ["joint fit:", self.joint.summary()]
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------- batched refits
class _Batch:
    """One law on fixed points (normalised inputs), evaluated for many parameter rows at once; parameters in fit
    space u (log for positive constants), rows = bootstrap resamples given as point weights (multiplicities)."""

    def __init__(self, law: Law, X: list[np.ndarray], y: np.ndarray, objective: str, delta: float) -> None:
        self.law, self.X, self.y, self.objective, self.delta = law, X, y, objective, delta
        self.logy = np.log(y)
        self.sst = float(np.sum((y - y.mean()) ** 2)) or 1.0
        names = law.param_names
        self.is_log = np.array([n in law.log_params for n in names])
        lo = np.array([law.bounds[n][0] for n in names], dtype=float)
        hi = np.array([law.bounds[n][1] for n in names], dtype=float)
        self.lo = np.where(self.is_log, np.log(np.where(self.is_log, lo, 1.0)), lo)
        self.hi = np.where(self.is_log, np.log(np.where(self.is_log, hi, 1.0)), hi)

    def params(self, U: np.ndarray) -> dict[str, np.ndarray]:
        V = np.where(self.is_log, np.exp(np.clip(U, -700, 700)), U)
        return {n: V[:, i:i + 1] for i, n in enumerate(self.law.param_names)}

    def to_u(self, P: dict[str, float]) -> np.ndarray:
        v = np.array([float(P[n]) for n in self.law.param_names])
        return np.where(self.is_log, np.log(np.maximum(np.where(self.is_log, v, 1.0), 1e-300)), v)

    def residuals(self, U: np.ndarray, W: np.ndarray, jac: bool):
        """Objective per row (inf where invalid) and, with jac, gradient (B, p) and Gauss-Newton/IRLS matrix."""
        P = self.params(U)
        with np.errstate(all="ignore"):
            yhat, J = self.law.evaluate(P, self.X, jac)
            yhat = np.broadcast_to(yhat, W.shape)
            if self.objective == "lsq":
                r = (yhat - self.y) / np.sqrt(self.sst)
                f = np.sum(W * r * r, axis=1)
            else:
                r = np.log(yhat) - self.logy
                a = np.abs(r)
                f = np.sum(W * np.where(a <= self.delta, 0.5 * r * r, self.delta * a - 0.5 * self.delta ** 2), axis=1)
            bad = ~np.isfinite(f) | np.any(~(yhat > 0) & (W > 0), axis=1)
            f = np.where(bad, np.inf, f)
            if not jac:
                return f, None, None
            Ju = np.stack([np.broadcast_to(J[n] * (P[n] if log else 1.0), W.shape)
                           for n, log in zip(self.law.param_names, self.is_log)], axis=-1)  # dyhat/du (B, n, p)
            if self.objective == "lsq":
                Jr = Ju / np.sqrt(self.sst)
                g = 2.0 * np.einsum("bn,bnp->bp", W * r, Jr)
                H = 2.0 * np.matmul(np.swapaxes(Jr * W[..., None], 1, 2), Jr)
            else:
                Jr = Ju / yhat[..., None]
                g = np.einsum("bn,bnp->bp", W * np.clip(r, -self.delta, self.delta), Jr)
                w = W * np.where(a <= self.delta, 1.0, self.delta / np.maximum(a, 1e-300))  # IRLS weights
                H = np.matmul(np.swapaxes(Jr * w[..., None], 1, 2), Jr)
        return f, np.nan_to_num(g), np.nan_to_num(H)

    def solve(self, U0: np.ndarray, W: np.ndarray, free: np.ndarray, max_iter: int = 400,
              rtol: float = 1e-12) -> np.ndarray:
        """Minimise every row's weighted objective over the `free` parameters (projected Levenberg-Marquardt on the
        IRLS Gauss-Newton model, monotone in the true objective); rows that fail are NaN."""
        U = np.array(U0, dtype=float)
        B, p = U.shape
        fi = np.flatnonzero(free)
        lam = np.full(B, 1e-3)
        f = self.residuals(U, W, False)[0]
        active = np.isfinite(f)
        calm = np.zeros(B, dtype=int)  # consecutive accepted steps with a negligible decrease
        self.n_iter = 0  # iterations until every row converged (diagnostic)
        for _ in range(max_iter):
            idx = np.flatnonzero(active)
            if not len(idx):
                break
            self.n_iter += 1
            _, g, H = self.residuals(U[idx], W[idx], True)
            g, H = g[:, fi], H[:, fi][:, :, fi]
            diag = np.einsum("bii->bi", H)
            A = H + (lam[idx, None] * (diag + 1e-9 * diag.max(axis=1, keepdims=True) + 1e-300))[..., None] \
                * np.eye(len(fi))
            try:
                step = -np.linalg.solve(A, g[..., None])[..., 0]
            except np.linalg.LinAlgError:
                step = -g / np.maximum(np.einsum("bii->bi", A), 1e-300)
            trial = U[idx].copy()
            trial[:, fi] = np.clip(trial[:, fi] + step, self.lo[fi], self.hi[fi])
            f_new = self.residuals(trial, W[idx], False)[0]
            ok = np.isfinite(f_new) & (f_new < f[idx])
            gain = np.where(ok, (f[idx] - f_new) / np.maximum(np.abs(f[idx]), 1e-300), 0.0)
            acc = idx[ok]
            U[acc], f[acc] = trial[ok], f_new[ok]
            lam[idx] = np.where(ok, np.maximum(lam[idx] / 3.0, 1e-12), lam[idx] * 5.0)
            calm[idx] = np.where(ok & (gain < rtol), calm[idx] + 1, np.where(ok, 0, calm[idx]))
            done = (calm[idx] >= 3) | (lam[idx] > 1e10) | np.all(np.abs(step) < 1e-13, axis=1)
            active[idx[done]] = False
        U[~np.isfinite(f)] = np.nan
        return U


def _normalise(law: Law, P: dict[str, float], refs: list[float]) -> dict[str, float]:
    """Natural-unit parameters -> parameters for inputs divided by refs (inverse of Law.denormalise)."""
    out = dict(P)
    for const, factors in law.powers.items():
        for j, exp_name in factors:
            out[const] = out[const] / refs[j] ** P[exp_name]
    return out


def _with_bootstrap(fit: FitResult, boot: np.ndarray, ci: float, notes: list[str]) -> FitResult:
    """`fit` with CIs and bootstrap_params from rows of natural parameters `boot` (NaN rows: failed refits)."""
    ok = np.all(np.isfinite(boot), axis=1)
    lo, hi = bootstrap_ci(fit.law, fit.params, boot[ok], ci, "percentile")
    for n in fit.fixed:
        lo[n] = hi[n] = fit.params[n]
    return dataclasses.replace(fit, ci_low=lo, ci_high=hi, bootstrap_params=boot, n_bootstrap=len(boot),
                               warnings=list(fit.warnings) + notes)


def two_stage_bootstrap(df: pd.DataFrame, x: Sequence[str], y: str, base: FitResult, two: FitResult,
                        joint: FitResult | None, *, n_boot: int, seed: int = 0, objective: str = "huber",
                        delta: float = 1e-3, ci: float = 0.95) -> tuple[FitResult, FitResult, FitResult | None]:
    """Resample all points `n_boot` times; per resample refit stage 1 (base law on its single-epoch points), stage 2
    (R* and R_N* with that base fixed) and the joint law, all batched; return the three fits with these CIs."""
    x = list(x)
    X = [df[c].to_numpy(dtype=float) for c in x]
    yv = df[y].to_numpy(dtype=float)
    law = get_law(two.law.name)  # data_constrained or data_constrained_rn
    refs = [float(np.exp(np.mean(np.log(X[0])))), float(np.exp(np.mean(np.log(X[1]))))]
    refs.append(refs[1])  # unique data shares the units of data seen
    Xn = [xi / r for xi, r in zip(X, refs)]
    single = (X[1] <= X[2] * (1 + 1e-9)).astype(float)
    W = resample_counts(len(yv), n_boot, seed)  # the index sets of fit_law's bootstrap
    names = law.param_names
    rows1 = np.flatnonzero(single)  # stage 1 sees only the single-epoch points (D' = D there)
    stage1 = _Batch(get_law("data_constrained"), [xi[rows1] for xi in Xn], yv[rows1], objective, delta)
    batch = _Batch(law, Xn, yv, objective, delta)
    extra = [n for n in names if n not in BASE_PARAMS]  # R_star (, R_N_star)
    # stage 1: base parameters on the resample's single-epoch points (R_star is irrelevant there)
    p1 = _normalise(law, {**two.params}, refs)
    u1 = np.tile(stage1.to_u({**p1, "R_star": p1["R_star"]}), (n_boot, 1))
    W1 = W[:, rows1]
    few = W1.sum(axis=1) <= len(BASE_PARAMS)
    U1 = stage1.solve(u1, W1, np.array([n in BASE_PARAMS for n in stage1.law.param_names]))
    U1[few] = np.nan
    # stage 2: R* (and R_N*) with each resample's base fixed, started at the full-data stage-2 optimum
    u2 = np.tile(batch.to_u(p1), (n_boot, 1))
    for i, n in enumerate(names):
        if n in BASE_PARAMS:
            u2[:, i] = U1[:, stage1.law.param_names.index(n)]
    U2 = np.full_like(u2, np.nan)
    fine = np.all(np.isfinite(u2), axis=1)
    U2[fine] = batch.solve(u2[fine], W[fine], np.array([n in extra for n in names]))
    out_base = np.column_stack([U1[:, stage1.law.param_names.index(n)] for n in BASE_PARAMS])

    def natural(b: _Batch, U: np.ndarray, names_out: Sequence[str]) -> np.ndarray:
        P = b.params(np.nan_to_num(U))
        full = b.law.denormalise({n: P[n][:, 0] for n in b.law.param_names}, refs)
        out = np.column_stack([full[n] for n in names_out])
        out[~np.all(np.isfinite(U), axis=1)] = np.nan
        return out

    boot_base = natural(_Batch(get_law("additive"), Xn[:2], yv, objective, delta), out_base, BASE_PARAMS)
    boot_two = natural(batch, U2, names)

    def note(boot: np.ndarray) -> list[str]:
        bad = int((~np.all(np.isfinite(boot), axis=1)).sum())
        return [f"{bad} of {n_boot} bootstrap refits failed and were dropped"] if bad else []

    res_base = _with_bootstrap(base, boot_base, ci, note(boot_base))
    res_two = _with_bootstrap(two, boot_two, ci, note(boot_two))
    res_joint = None
    if joint is not None:
        uj = np.tile(batch.to_u(_normalise(law, joint.params, refs)), (n_boot, 1))
        boot_joint = natural(batch, batch.solve(uj, W, np.ones(len(names), dtype=bool)), names)
        res_joint = _with_bootstrap(joint, boot_joint, ci, note(boot_joint))
    return res_base, res_two, res_joint


def fit_data_constrained(df: pd.DataFrame, x: Sequence[str] = ("C", "D", "U"), y: str = "y", *, joint: bool = True,
                         bootstrap: int = 200, seed: int = 0, param_repetition: bool = False, ci: float = 0.95,
                         **fit_kw) -> DataConstrainedFit:
    """Two-stage and (optionally) joint fit of the data-constrained law; x = [compute or N, data seen, unique data].

    Stage 1 needs more single-epoch points (data seen <= unique data) than the 5 base parameters. `fit_kw` go to
    every `fit_law` call (objective, delta, n_starts, ...; n_jobs and progress are accepted and unused: the
    bootstrap is batched in this process). `param_repetition` adds the R_N* term (law `data_constrained_rn`; x0 must
    be N). `bootstrap` resamples redo both stages (see the module docstring).
    """
    x = list(x)
    if len(x) != 3:
        raise ValueError(f"data-constrained fit: give three input columns (compute or N, data seen, unique data), "
                         f"got x={x}")
    missing = [c for c in [*x, y] if c not in df.columns]
    if missing:
        raise ValueError(f"data-constrained fit: data lacks columns {missing} (have {list(df.columns)})")
    single = df[df[x[1]] <= df[x[2]] * (1 + 1e-9)]
    if len(single) <= 5:
        raise ValueError(f"data-constrained fit: {len(single)} single-epoch points ({x[1]} <= {x[2]}); stage 1 "
                         "needs more than 5 (the base additive law's parameters)")
    fit_kw.pop("n_jobs", None)
    fit_kw.pop("progress", None)
    law = "data_constrained_rn" if param_repetition else "data_constrained"
    kw = {"holdout": False, **fit_kw, "bootstrap": 0}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FitWarning)
        base = fit_law(single, law="additive", x=x[:2], y=y, seed=seed, **kw)
        fixed = {k: base.params[k] for k in BASE_PARAMS}
        two = fit_law(df, law=law, x=x, y=y, fix=fixed, seed=seed, **kw)
        both = fit_law(df, law=law, x=x, y=y, seed=seed, **kw) if joint else None
    t0 = time.perf_counter()
    if bootstrap > 0:
        base, two, both = two_stage_bootstrap(df.reset_index(drop=True), x, y, base, two, both, n_boot=bootstrap,
                                              seed=seed, objective=fit_kw.get("objective", "huber"),
                                              delta=fit_kw.get("delta", 1e-3), ci=ci)
    return DataConstrainedFit(base=base, two_stage=two, joint=both, n_single_epoch=len(single), n_points=len(df),
                              n_bootstrap=int(bootstrap), bootstrap_s=time.perf_counter() - t0)
