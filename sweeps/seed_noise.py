"""The study's seed noise and what it does to the law (issue 23, target 4: the law must survive a change of seed).

`seed_noise_by_d` measures, from two grids that differ only in their seed, how much one run's final MSE moves with
the seed at each data size D. `simulate_seeds` asks what that noise does to the law (a parametric bootstrap of the
whole study): every run's final MSE is redrawn around its measured value with that noise (multiplicative, sd
sigma(D) in ln MSE; one draw per trunk, since the run lengths forked from one trunk share their noise: 70-100% of
the seed difference's variance, design v14), the per-D frontiers are taken again, and the law is refitted with the
same constraints (no bootstrap), as many times as asked. It reports each exponent's mean and spread across simulated
seeds and how often a simulated seed's estimate lands inside the measured law's 95% CI (the seed check's rule for a
second seed when only the seed changes). Only the simulated estimates are used, not their CIs: a simulated study
carries the measured runs' noise plus the drawn one, so its CIs would be too wide. What it leaves out: noise shared
by a width's runs at different D (they share one initialisation).
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from fitting import FitOptions
from fitting.fit import FitResult, FitWarning, fit_with_options
from fitting.frontier import running_frontier, transform_metric
from sweeps import study_checks as sc


def _final_log_mse(points: pd.DataFrame) -> pd.Series:
    """ln MSE of each run's final checkpoint, indexed by (preset, D, length); seeds of one cell averaged."""
    last = points.assign(length=sc.run_lengths(points))
    last = last[last["is_last"].astype(bool)]
    log_mse = np.log(transform_metric(last["value"], "psnr"))  # ln MSE (on [-1, 1]; the offset cancels) from PSNR
    return pd.Series(log_mse, index=last.index).groupby([last["preset"], last["D"], last["length"]]).mean()


def seed_noise_by_d(points0: pd.DataFrame, points1: pd.DataFrame) -> pd.DataFrame:
    """Per data size D, the seed noise of one run's final MSE, from the runs both grids ran (same preset, D and
    length; `points*` are `eval_points` rows of PSNR in dB): sd_log = sqrt(mean of (ln MSE_1 - ln MSE_0)^2 / 2), the
    standard deviation of ln MSE (~ relative error) of one run, since a difference of two has twice its variance.
    Columns D, runs (matched), sd_log."""
    both = pd.concat([_final_log_mse(points0), _final_log_mse(points1)], axis=1, join="inner", keys=["s0", "s1"])
    diff2 = (both["s1"] - both["s0"]) ** 2 / 2
    out = diff2.groupby(level="D").agg(["count", "mean"]).reset_index()
    return pd.DataFrame({"D": out["D"], "runs": out["count"].astype(int), "sd_log": np.sqrt(out["mean"])})


def format_seed_noise(noise: pd.DataFrame) -> str:
    """'seed noise of one run's final MSE (sd of ln MSE, N runs matched ...): D=64 21%, D=128 11%, ...'."""
    if noise.empty:
        return "seed noise: no run of one grid has a match (preset, D, length) in the other"
    return (f"seed noise of one run's final MSE (sd of ln MSE, {int(noise['runs'].sum())} runs matched by preset, D "
            "and length): " + ", ".join(f"D={d:g} {100 * s:.0f}%" for d, s in zip(noise["D"], noise["sd_log"])))


def redraw(values: np.ndarray, sigma: np.ndarray, groups: Sequence, rng: np.random.Generator) -> np.ndarray:
    """`values` * exp(sigma * z) with one standard normal z per distinct value of `groups` (points of one group, e.g.
    the run lengths forked from one trunk, move together); sigma per point, in ln units."""
    keys = pd.Series(list(groups)).astype(str)
    names = sorted(keys.unique())
    z = dict(zip(names, rng.standard_normal(len(names))))
    return np.asarray(values, dtype=float) * np.exp(np.asarray(sigma, dtype=float) * keys.map(z).to_numpy())


def share_inside(est: np.ndarray, lo: Sequence[float], hi: Sequence[float]) -> float:
    """Share of rows of `est` (simulated seeds x exponents) whose every exponent lies in [lo, hi] (one CI per
    column); NaN for no rows."""
    est = np.asarray(est, dtype=float)
    if not len(est):
        return float("nan")
    est = est.reshape(len(est), -1)
    return float(np.all((np.asarray(lo) <= est) & (est <= np.asarray(hi)), axis=1).mean())


@dataclass
class SeedSimulation:
    """What `simulate_seeds` found. `table`: one row per simulated seed (each exponent's estimate, its frontier
    points and fit warnings); `estimate`, `ci_low`, `ci_high`: the measured law's exponents and 95% CIs; `inside`:
    per exponent, and "all" for every exponent at once, the share of simulated seeds inside those CIs."""

    table: pd.DataFrame
    estimate: dict[str, float]
    ci_low: dict[str, float]
    ci_high: dict[str, float]
    inside: dict[str, float]

    def summary(self) -> str:
        parts = [f"{n} mean {self.table[n].mean():.3g}, sd {self.table[n].std(ddof=1):.3g} (measured "
                 f"{self.estimate[n]:.3g}), inside its CI [{self.ci_low[n]:.3g}, {self.ci_high[n]:.3g}] in "
                 f"{self.inside[n]:.0%}"
                 for n in self.estimate]
        warned = int((self.table["fit_warnings"] > 0).sum())
        return (f"{len(self.table)} simulated seeds of this study with the measured seed noise: " + "; ".join(parts)
                + f"; every exponent inside in {self.inside['all']:.0%}"
                + (f" ({warned} of the simulated fits warned, e.g. of convergence)" if warned else ""))


def _one_seed(args: tuple) -> dict[str, float]:
    frame, options, exponents = args
    on_frontier = np.zeros(len(frame), dtype=bool)
    for _, idx in frame.groupby("D").indices.items():
        on_frontier[idx] = running_frontier(frame["C"].to_numpy()[idx], frame["y"].to_numpy()[idx])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", FitWarning)
        fit = fit_with_options(frame[on_frontier].reset_index(drop=True), options)
    return {"points": int(on_frontier.sum()), "fit_warnings": len(caught), **{n: fit.params[n] for n in exponents}}


def simulate_seeds(fit: FitResult, runs: pd.DataFrame, sigma_by_d: Mapping[float, float], n_sims: int,
                   seed: int = 0, exponents: Sequence[str] = ("alpha", "beta"), n_starts: int = 20,
                   n_jobs: int | None = None, progress: bool | None = None) -> SeedSimulation:
    """Refit `fit`'s law (its fixed and tied parameters kept, no bootstrap) on `n_sims` simulated seeds of the study
    whose runs are `runs` (one row per run's final checkpoint: C and D in the fit's units, y the fitted target, group
    its trunk): each redraws every y with noise sd `sigma_by_d[D]` in ln y per group (`redraw`), takes the per-D
    frontiers (running minimum of y along C) and fits them; sims run in `n_jobs` processes (default min(2, CPUs)).
    The exponents must be free parameters of `fit`, whose CIs the simulated estimates are compared with."""
    if n_sims < 2:
        raise ValueError(f"simulate_seeds: n_sims must be >= 2 (a spread needs two simulated seeds), got {n_sims}")
    missing = [n for n in exponents if n not in fit.params or n in fit.fixed]
    if missing:
        raise ValueError(f"simulate_seeds: {missing} are not free parameters of the fit")
    absent = sorted(set(runs["D"]) - set(sigma_by_d))
    if absent:
        raise ValueError(f"simulate_seeds: no seed noise measured at D = {absent}")
    sigma = runs["D"].map(sigma_by_d).to_numpy(float)
    rng = np.random.default_rng(seed)
    options = FitOptions(law=fit.law.spec[0], bootstrap=0, n_starts=n_starts, holdout=False, n_jobs=1,
                         progress=False, fix=dict(fit.fixed), tie=dict(fit.tied))
    jobs = []
    for i in range(n_sims):
        frame = pd.DataFrame({"C": runs["C"].to_numpy(float), "D": runs["D"].to_numpy(float),
                              "y": redraw(runs["y"].to_numpy(float), sigma, runs["group"], rng)})
        jobs.append((frame, dataclasses.replace(options, seed=seed + i), tuple(exponents)))
    n_jobs = n_jobs or min(2, os.cpu_count() or 1)
    with ProcessPoolExecutor(max_workers=n_jobs) if n_jobs > 1 else contextlib.nullcontext() as pool:
        results = pool.map(_one_seed, jobs, chunksize=max(1, n_sims // (8 * n_jobs))) if pool else map(_one_seed, jobs)
        rows = list(tqdm(results, total=n_sims, desc="simulated seeds", leave=False,
                         disable=(None if progress is None else not progress)))
    table = pd.DataFrame(rows)
    names = list(exponents)
    lo, hi = [fit.ci_low[n] for n in names], [fit.ci_high[n] for n in names]
    inside = {n: share_inside(table[[n]].to_numpy(), [fit.ci_low[n]], [fit.ci_high[n]]) for n in names}
    inside["all"] = share_inside(table[names].to_numpy(), lo, hi)
    return SeedSimulation(table, {n: float(fit.params[n]) for n in names}, dict(zip(names, lo)), dict(zip(names, hi)),
                          inside)
