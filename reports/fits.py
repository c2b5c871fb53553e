"""The law L(C, D) of every NVS benchmark x metric for the report: the newest stored fit of exactly the report's
frontier points when present (same data hash; its bootstrap band refitted now), else fitted now. A stored fit of
other points (one model family via `rayder-fit --family`, another sweep, fewer runs) is never shown as the law."""
from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from fitting import DEFAULT_LAW, FitOptions, FitResult, StudyOptions, fit_study, get_law, target_label
from fitting.bootstrap import POINT_UNIT, bootstrap_groups_column, describe_unit
from reports.common import DEFAULT_BOOTSTRAP, FITTED_NVS_METRICS, Study, count_label

@dataclass
class MetricFit:
    """The compute-optimal law L(C, D) of one benchmark and metric, or why there is none (`problem`)."""

    bench: str
    metric: str  # evaluated name ('psnr', 'lpips', 'ssim'); the law is fitted to its lower-is-better target
    frontier: pd.DataFrame  # fitting.frontier(): C (GFLOP), D (videos), y, on_frontier_d, run_id, step, preset...
    law: str = DEFAULT_LAW
    params: dict[str, float] = field(default_factory=dict)
    ci_low: dict[str, float] = field(default_factory=dict)
    ci_high: dict[str, float] = field(default_factory=dict)
    r2: float = float("nan")
    r2_log: float = float("nan")
    n_points: int = 0
    holdout: dict = field(default_factory=dict)
    formula: str = ""
    source: str = ""
    problem: str | None = None
    band_fit: FitResult | None = None  # a bootstrap fit of the current frontier, for the prediction band
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.problem is None

    @property
    def target(self) -> str:
        return target_label(self.metric)

    @property
    def frontier_points(self) -> pd.DataFrame:
        return self.frontier[self.frontier["on_frontier_d"]] if len(self.frontier) else self.frontier

    def predict(self, C: np.ndarray, D: np.ndarray | float) -> np.ndarray:
        """Predicted target (MSE on [-1,1] / LPIPS / 1-SSIM) at compute C (GFLOP) and D videos."""
        C, D = np.broadcast_arrays(np.asarray(C, float), np.asarray(D, float))
        return get_law(self.law).predict(self.params, [C, D])

    def band(self, C: np.ndarray, D: np.ndarray | float) -> tuple[np.ndarray, np.ndarray] | None:
        """95% bootstrap band of the target, or None without a bootstrap fit."""
        if self.band_fit is None or not self.band_fit.n_bootstrap:
            return None
        try:
            return self.band_fit.predict_band(C, D, q=(2.5, 97.5))
        except ValueError:
            return None


def _stored_fit_row(study: Study, bench: str, metric: str, law: str, data_hash: str,
                    unit: str = POINT_UNIT) -> tuple[pd.Series | None, int, str | None]:
    """(newest stored fit of `law` on exactly these points whose bootstrap resampled `unit` (or did not record what
    it resampled: stores before schema 5), number of stored fits of this bench/metric on other points, the unit of
    a stored fit of these points that resampled another unit, else None). A fit of other points (one model family,
    another sweep, fewer runs) is never shown as this page's law, nor CIs of another unit beside this page's band."""
    fits = study.fits
    if fits.empty:
        return None, 0, None
    sel = fits[(fits["bench"] == bench) & (fits["law"] == law)
               & fits["metric"].isin([metric, target_label(metric)])]
    same = sel[sel["data_hash"] == data_hash]
    n_other = int(len(sel) - len(same))
    other_unit = None
    if "bootstrap_unit" in same.columns:
        recorded = same["bootstrap_unit"]
        differs = recorded.notna() & (recorded != unit)
        other_unit = str(recorded[differs].iloc[-1]) if differs.any() else None
        same = same[~differs]
    return (None if same.empty else same.sort_values("created").iloc[-1]), n_other, other_unit


def fit_metric(study: Study, bench: str, metric: str, *, bootstrap: int = DEFAULT_BOOTSTRAP, seed: int = 0,
               min_step: int = 0, use_stored: bool = True, checkpoints: str | None = None,
               fix: dict[str, float] | None = None, replicates: str = "mean",
               bootstrap_by: str = POINT_UNIT) -> MetricFit:
    """Frontier and law of one benchmark/metric: the newest stored fit if any (its bootstrap band is refitted
    now), else a fit made now with `bootstrap` resamples. Too few points gives a MetricFit with `problem` set.
    `checkpoints` (None: every one), `fix`, `replicates` and `bootstrap_by` are those of `rayder-fit --checkpoints /
    --fix / --replicates / --bootstrap-by`."""
    pts = study.eval_points(bench, metric)
    empty = MetricFit(bench, metric, frontier=pd.DataFrame(columns=["C", "D", "y", "on_frontier_d"]))
    if pts.empty:
        empty.problem = f"no {metric} values on {bench}"
        return empty
    options = StudyOptions(fit=FitOptions(law=DEFAULT_LAW, x=("C", "D"), y="y", bootstrap=bootstrap, seed=seed,
                                          metric=metric, bench=bench, progress=False, fix=dict(fix or {}),
                                          bootstrap_groups=bootstrap_groups_column(bootstrap_by)),
                           metric=metric, checkpoints=checkpoints, min_step=min_step, replicates=replicates)
    fitted = fit_study(pts, options)
    if fitted.table.empty:  # the frontier itself failed (e.g. non-positive values)
        empty.problem = (fitted.problem or "no frontier").splitlines()[0]
        return empty
    result = MetricFit(bench, metric, frontier=fitted.table)
    result.notes += fitted.warnings
    if fitted.problem:
        result.problem = fitted.problem
        return result
    fresh = fitted.fit
    result.band_fit = fresh
    stored, n_other, other_unit = (_stored_fit_row(study, bench, metric, fresh.law_label, fresh.data_hash,
                                                   bootstrap_by) if use_stored else (None, 0, None))
    if n_other:
        result.notes.append(f"{n_other} stored fit(s) of {bench} {metric} used other points than this frontier "
                            f"(e.g. one model family or sweep, or fewer runs) and are not shown here")
    if other_unit is not None and stored is None:
        result.notes.append(f"the stored fit of these points resampled {describe_unit(other_unit)} in its "
                            f"bootstrap, this report resamples {describe_unit(bootstrap_by)} (--bootstrap-by): the "
                            "law and its CIs are fitted now")
    if stored is not None:
        result.params, result.ci_low, result.ci_high = (json.loads(stored[k]) for k in ("params", "ci_low",
                                                                                      "ci_high"))
        result.holdout = json.loads(stored["holdout"]) if stored["holdout"] else {}
        result.r2, result.r2_log = float(stored["r2"]), float(stored["r2_log"])
        result.n_points, result.formula = int(stored["n_points"]), str(stored["formula"])
        result.source = f"stored fit of {stored['created']:%Y-%m-%d %H:%M}; band: {bootstrap} resamples now"
    else:
        result.params, result.ci_low, result.ci_high = fresh.params, fresh.ci_low, fresh.ci_high
        result.holdout, result.r2, result.r2_log = fresh.holdout, fresh.r2, fresh.r2_log
        result.n_points, result.formula = fresh.n_points, fresh.formula()
        result.source = f"fitted now (no stored fit of these points), {bootstrap} bootstrap resamples"
    return result


def fit_all(study: Study, *, bootstrap: int = DEFAULT_BOOTSTRAP, seed: int = 0, min_step: int = 0,
            use_stored: bool = True, checkpoints: str | None = None, fix: dict[str, float] | None = None,
            replicates: str = "mean", bootstrap_by: str = POINT_UNIT) -> dict[tuple[str, str], MetricFit]:
    """MetricFit for every NVS benchmark x metric (with a progress bar)."""
    keys = [(b, m) for b in study.nvs_benches for m in FITTED_NVS_METRICS]
    return {k: fit_metric(study, *k, bootstrap=bootstrap, seed=seed, min_step=min_step, use_stored=use_stored,
                          checkpoints=checkpoints, fix=fix, replicates=replicates, bootstrap_by=bootstrap_by)
            for k in tqdm(keys, desc="fitting laws", disable=not keys, leave=False)}


def format_holdout(holdout: dict) -> str:
    """'leave-one-D-out: D=27k 4.1%, D=270k 2.0% · largest C held out: 1.3%' (mean |relative error| of refits)."""
    parts = []
    for key, value in holdout.items():
        name = key.replace("leave_one_D_out", "leave-one-D-out").replace("largest_C", "largest C held out")
        if isinstance(value, dict):
            parts.append(f"{name}: " + ", ".join(f"D={count_label(float(k))} {v:.1f}%" for k, v in value.items()))
        else:
            parts.append(f"{name}: {float(value):.1f}%")
    return " · ".join(parts) if parts else "n/a"
