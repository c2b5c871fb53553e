"""Does a study show a law that holds? The checks `python -m sweeps.demo` prints after its fits (issues 10 and 23).

Each check reads the results store (and the fitted laws) and returns a `Check`: what was measured, the target and
whether it is met. None of them is tuned to pass: the targets are the issues', the numbers are the study's. MSE is in
[0, 1] pixel units (from PSNR); "final" is a run's last evaluated checkpoint; seeds are averaged, never maximised.

- learning: every run's mean training loss over the last 10% of its logged steps <= 0.7 x the first 10% (from step
  1: a run started from its trunk's checkpoint counts the trunk's steps before it);
- beats baseline: the best checkpoint's PSNR >= the mean-colour baseline + 3 dB on the NVS benchmark;
- beats the frame blend: the best checkpoint's PSNR > that of the two context views blended linearly in frame index
  (`rayder_core.evaluation.baselines`; no model, no geometry);
- size matters: at the largest D the final MSE falls monotonically with width and the compute-optimal frontier moves
  to larger presets at the top 20% of compute (else: is the smallest preset compute-optimal everywhere?);
- smallest D overfits: each preset ends with a lower training loss but a worse held-out MSE than at the largest D;
- with several run lengths per grid point (`grid.steps`), presets and data sizes are compared at one length;
- frontier points; identified law (R^2, exponent CIs exclude 0, clear of bounds, narrower than twice the estimate,
  L_inf not drifted to 0); the D term's support (>= 2 independent runs on every D's frontier, and the D exponent
  refitted without the smallest D); the 1-SSIM law's R^2; the law's slope at 4x the largest C vs the frontier's top
  slope;
- no skipped steps; held-out run: |relative error| of the predicted MSE <= 10% and inside the 95% band;
- study time (data, training, fits, report) <= 12 min when every run trained in this invocation, beside the
  training's CPU floor (its FLOPs at 100% of the CPU's measured matmul peak: `sweeps.preflight.CpuFloor`).
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.optimize import brentq
from scipy.stats import norm

from fitting.compare import compare_laws, log_likelihood
from fitting.d_term import (beta_without_smallest_d, data_limited_by_d, format_data_limited, format_projection,
                            format_runs_by_d, frontier_runs_by_d, held_out_minima, largest_d_projection)
from fitting.fit import refit_points
from fitting.frontier import running_frontier, transform_metric
from fitting.holdout_runs import validate_holdout
from fitting.replicates import average_replicates
from rayder_core.run_identity import trunk_of
from sweeps.preflight import CpuFloor, duration


@dataclass
class Check:
    name: str
    measured: str
    target: str
    ok: bool | None  # None: could not be computed (reason in `measured`)


def _runs(store, sweep: str) -> pd.DataFrame:
    return store.runs(sweep)


def whole_train_log(store, run_id: str, config: dict | str | None, _depth: int = 0) -> pd.DataFrame:
    """A run's logged training steps from its step 1: a run that started from its trunk's checkpoint
    (`start_from`, rayder_core.training.trunk) logged only the steps after it, so the trunk's steps up to that
    checkpoint come first (the two runs are the same run until then); a trunk that itself started from another run's
    checkpoint is read the same way (at most 8 links)."""
    log = store.train_log(run_id).sort_values("step")
    cfg = json.loads(config) if isinstance(config, str) else (config or {})
    trunk, step = trunk_of(cfg.get("start_from"))
    if trunk is None or step == 0:
        return log
    if _depth < 8:
        row = store.query("SELECT config FROM runs WHERE run_id = ?", [trunk])
        before = whole_train_log(store, trunk, row["config"].iloc[0] if len(row) else None, _depth + 1)
    else:
        before = store.train_log(trunk)
    return pd.concat([before[before["step"] <= step], log[log["step"] > step]]).sort_values("step")


def check_learning(store, sweep: str) -> Check:
    ratios = {}
    for _, run in _runs(store, sweep).iterrows():
        log = whole_train_log(store, run["run_id"], run.get("config"))
        if len(log) < 10:
            continue
        k = max(1, len(log) // 10)
        ratios[run["run_id"]] = float(log["loss"].iloc[-k:].mean() / log["loss"].iloc[:k].mean())
    if not ratios:
        return Check("loss falls in every run", "no training logs", "last 10% <= 0.7 x first 10%", None)
    worst = max(ratios.values())
    return Check("loss falls in every run", f"last/first 10% of logged loss: {min(ratios.values()):.2f}..{worst:.2f}"
                 f" over {len(ratios)} runs (from step 1: a run started from its trunk includes the trunk's steps)",
                 "<= 0.70 in every run", worst <= 0.7)


def _best_and_baselines(store, sweep: str, bench: str) -> tuple[pd.DataFrame, pd.Series | None]:
    """Every evaluated checkpoint's PSNR and recorded baseline PSNRs on `bench` (rows run_id, step; a column per
    metric), and the row of the best PSNR (None without PSNR evaluations)."""
    ev = store.query("SELECT e.run_id, e.step, e.metric, e.value FROM evals e JOIN runs r USING (run_id) "
                     "WHERE r.sweep = ? AND e.bench = ? AND e.metric IN ('psnr', 'baseline_psnr', 'copy_psnr', "
                     "'blend_psnr')", [sweep, bench])
    wide = ev.pivot_table(index=["run_id", "step"], columns="metric", values="value") if len(ev) else ev
    if wide.empty or "psnr" not in wide or wide["psnr"].isna().all():
        return wide, None
    return wide, wide.loc[wide["psnr"].idxmax()]


def check_baseline(store, sweep: str, bench: str) -> Check:
    wide, best = _best_and_baselines(store, sweep, bench)
    if best is None:
        return Check("best checkpoint beats the mean colour", "no PSNR evaluations", ">= +3 dB", None)
    if pd.isna(best.get("baseline_psnr")):
        return Check("best checkpoint beats the mean colour", "no baseline recorded", ">= +3 dB", None)
    gain = float(best["psnr"] - best["baseline_psnr"])
    return Check("best checkpoint beats the mean colour", f"{best['psnr']:.2f} dB vs baseline "
                 f"{best['baseline_psnr']:.2f} dB ({gain:+.2f} dB)", ">= +3 dB", gain >= 3.0)


REACH_FACTOR_MAX = 1e6  # how far beyond the largest compute `law_reaches` searches


def law_reaches(fit, mse: float, d: float, c_from: float, factor_max: float = REACH_FACTOR_MAX) -> float | None:
    """The compute C (the fit's units, GFLOP for store fits) at which `fit`'s MSE at data size `d` falls to `mse`,
    searched from `c_from` to `factor_max` x `c_from` (log-space root, `scipy.optimize.brentq`): `c_from` when the law
    is already below, None when it stays above (e.g. its D term or floor alone exceeds `mse`)."""
    def gap(log_c: float) -> float:
        return float(np.log(fit.predict(np.array([np.exp(log_c)]), np.array([d]))[0]) - np.log(mse))

    lo, hi = float(np.log(c_from)), float(np.log(c_from * factor_max))
    if gap(lo) <= 0:
        return float(c_from)
    if gap(hi) > 0:
        return None
    return float(np.exp(brentq(gap, lo, hi, xtol=1e-10)))


def check_beats_blend(store, sweep: str, bench: str, fit=None) -> Check:
    """Does the best checkpoint beat the frame blend (the two context views mixed linearly in frame index,
    `rayder_core.evaluation.baselines`)? A law of models that do not is a law of learning to blend frames. The
    measured text also gives the nearest-context copy, how many evaluated checkpoints beat the blend and, with the
    MSE law `fit` (fitted on this benchmark's PSNR, MSE on [-1, 1]), the compute at which the law reaches the blend
    at the largest D (`law_reaches`)."""
    name, target = "best checkpoint beats the frame blend", "PSNR > blend's"
    wide, best = _best_and_baselines(store, sweep, bench)
    if best is None:
        return Check(name, "no PSNR evaluations", target, None)
    if pd.isna(best.get("blend_psnr")):
        return Check(name, "no frame-blend baseline recorded (evaluated before it was; `rayder-eval "
                     "--baselines BENCH --resolution R` scores it on the benchmark)", target, None)
    gain = float(best["psnr"] - best["blend_psnr"])
    scored = wide.dropna(subset=["psnr", "blend_psnr"])
    beat = int((scored["psnr"] > scored["blend_psnr"]).sum())
    copy = f", nearest context view {best['copy_psnr']:.2f} dB" if not pd.isna(best.get("copy_psnr")) else ""
    measured = (f"{best['psnr']:.2f} dB ({best.name[0]} at step {int(best.name[1])}) vs frame blend "
                f"{best['blend_psnr']:.2f} dB ({gain:+.2f} dB){copy}; {beat} of {len(scored)} evaluated checkpoints "
                "beat the blend")
    if fit is not None and gain <= 0:
        pts = store.eval_points(bench, "psnr", sweep=sweep)
        d, c_max = float(pts["D"].max()), float(pts["compute_gflop"].max())
        reach = law_reaches(fit, float(transform_metric(best["blend_psnr"], "psnr")), d, c_max)  # MSE on [-1, 1]
        measured += (f"; the law does not reach it at D={d:g} below {REACH_FACTOR_MAX:g}x the largest C"
                     if reach is None else
                     f"; the law reaches it at D={d:g} at {reach:.3g} GFLOP, {reach / c_max:.3g}x the largest C")
    return Check(name, measured, target, gain > 0)


def check_frontier(points: int, minimum: int = 15) -> Check:
    return Check("frontier points", f"{points} per-D frontier points", f">= {minimum}", points >= minimum)


def check_d_term_runs(table: pd.DataFrame | None, fit, minimum: int = 2, points: pd.DataFrame | None = None) -> Check:
    """The law's D exponent must not rest on one run's luck: every data size's frontier holds >= `minimum`
    independent runs (trunks; `frontier_runs_by_d`). At small D the held-out loss plateaus early at a level set by the
    initialisation (docs/benchmarks.md, "What the D exponent rests on"), the frontier keeps only the cheapest run,
    and a bootstrap over runs cannot show that run's seed noise. Reported beside it: beta refitted without the smallest
    D (same law, fixes and points otherwise), how much the exponent leans on that one data size; and, from `points`
    (every evaluated checkpoint: run_id, D, step, samples, y), the data sizes whose held-out loss bottomed out inside
    the runs (`fitting.d_term`) and the least steps the largest D needs to reach its own minimum at the epochs
    measured there (the trend that sizes a grid whose D term is fitted where data is plentiful)."""
    name = f"D term rests on >= {minimum} runs per D"
    target = f">= {minimum} independent runs (trunks) on every D's frontier"
    if fit is None or table is None or table.empty or "on_frontier_d" not in table.columns:
        return Check(name, "no law or no frontier", target, None)
    runs = frontier_runs_by_d(table)
    measured = "frontier runs per D: " + format_runs_by_d(runs)
    without = beta_without_smallest_d(fit)
    if without is not None:
        measured += f"; beta {fit.params['beta']:.3g}, without D={int(without[0])}: {without[1]:.3g}"
    thin = [int(d) for d, n in runs.items() if n < minimum]
    if thin:
        measured += f"; one run sets the frontier at D = {', '.join(map(str, thin))}"
    if points is not None and len(points):
        measured += "; " + data_limited_line(points)
    return Check(name, measured, target, not thin)


def data_limited_line(points: pd.DataFrame) -> str:
    """Which data sizes reached their held-out minimum inside the runs (`fitting.d_term.data_limited_by_d`) and, at
    the median epochs of those minima, the least steps (batch as trained) the largest D needs to reach its own."""
    minima = held_out_minima(points)
    if minima.empty:
        return "no run has enough evaluated checkpoints to show where its held-out loss bottomed out"
    line = format_data_limited(data_limited_by_d(minima))
    projection = largest_d_projection(points, minima)
    return line + ("; " + format_projection(projection) if projection else "")


def check_law(fit, label: str, r2_target: float, need_beta: bool) -> Check:
    if fit is None:
        return Check(f"{label} law", "not fitted", f"R^2 >= {r2_target}", None)
    at_bound = [w for w in fit.warnings if "bound" in w]
    lo, hi = fit.ci_low.get("beta", float("nan")), fit.ci_high.get("beta", float("nan"))
    measured = (f"R^2 {fit.r2:.3f}, beta {fit.params.get('beta', float('nan')):.3g} "
                f"[{lo:.3g}, {hi:.3g}]" + (f", {len(at_bound)} parameter(s) at a bound" if at_bound else ""))
    ok = fit.r2 >= r2_target and not at_bound
    target = f"R^2 >= {r2_target}, no parameter at a bound"
    if need_beta:
        ok = ok and np.isfinite(lo) and lo > 0
        target += ", beta's 95% CI excludes 0"
    return Check(f"{label} law", measured, target, bool(ok))


def check_study_time(seconds: float, trained: int, total: int, floor: CpuFloor | None = None,
                     target_min: float = 12.0) -> Check:
    """The study (data, training, fits, report) in <= `target_min` minutes, judged only when this invocation trained
    all `total` runs (`trained` of them: a resumed study's time is not the study's). `floor`: the preflight's
    `CpuFloor`; its minutes say whether any code could meet the target with this grid on this CPU."""
    measured = f"{seconds / 60:.1f} min"
    if floor is not None:
        measured += f" (training's floor on this CPU, at 100% of its matmul peak: {duration(floor.seconds)})"
    target = f"<= {target_min:g} min"
    if trained < total:
        return Check("study time", f"{measured}; {trained} of {total} runs trained now: not the study's time", target,
                     None)
    return Check("study time", measured, target, seconds <= target_min * 60)


def check_skips(store, sweep: str) -> Check:
    total = 0
    for run_id in _runs(store, sweep)["run_id"]:
        log = store.train_log(run_id)
        if len(log):
            total += int(log["skipped"].fillna(0).sum())
    return Check("skipped steps", f"{total}", "0", total == 0)


def format_checks(checks: list[Check]) -> str:
    mark = {True: "met", False: "NOT met", None: "n/a"}
    width = max(len(c.name) for c in checks)
    return "\n".join(f"  [{mark[c.ok]:>7}] {c.name:<{width}}  {c.measured}   (target: {c.target})" for c in checks)


# ----------------------------------------------------------------------------------------------------------------
# The law that holds (issue 23): size axis, identification, extrapolation, held-out prediction


def _mse(psnr: pd.Series | np.ndarray) -> np.ndarray:
    """MSE in [0, 1] pixel units from PSNR in dB (PSNR = -10 log10 MSE)."""
    return 10 ** (-np.asarray(psnr, dtype=float) / 10)


def run_lengths(points: pd.DataFrame) -> pd.Series:
    """Each run's length (its last evaluated step), indexed like `points` (eval_points rows)."""
    return points.groupby("run_id")["step"].transform("max")


def common_length(points: pd.DataFrame, by: str = "preset") -> int | None:
    """The longest run length that every `by` group of `points` ran (a grid with several lengths per point compares
    presets at one length); None when the groups share none."""
    lengths = points.assign(length=run_lengths(points)).groupby(by)["length"].apply(set)
    shared = set.intersection(*lengths) if len(lengths) else set()
    return int(max(shared)) if shared else None


def final_mse_by_preset(store, sweep: str, bench: str, D: float | None = None) -> pd.DataFrame:
    """Per preset at data size D (default: the largest): seed-mean, min and max of each run's final-checkpoint MSE,
    with params and the number of runs, sorted by params. With several run lengths, the runs of the longest length
    every preset ran (column `steps`)."""
    pts = store.eval_points(bench, "psnr", sweep=sweep)
    if pts.empty:
        return pd.DataFrame(columns=["preset", "params", "mean", "min", "max", "runs", "steps"])
    D = pts["D"].max() if D is None else D
    at_d = pts[pts["D"] == D]
    length = common_length(at_d)
    at_d = at_d[run_lengths(at_d) == length] if length is not None else at_d
    last = at_d[at_d["is_last"].astype(bool)].copy()
    last["mse"] = _mse(last["value"])
    return (last.groupby(["preset", "params"])["mse"].agg(["mean", "min", "max", "count"]).reset_index()
            .rename(columns={"count": "runs"}).assign(steps=length).sort_values("params").reset_index(drop=True))


def frontier_presets(points: pd.DataFrame, share: float = 0.2) -> tuple[float, float]:
    """Mean parameter count of the compute-optimal frontier's points (running minimum of MSE along C over every
    checkpoint of `points`: columns compute_gflop, value (PSNR), params) in the bottom and the top `share` of the
    frontier's log-compute range; runs that differ only in their seed are averaged first, as the fits do)."""
    points, _ = average_replicates(points, "psnr")
    front = points[running_frontier(points["compute_gflop"], _mse(points["value"]))]
    logc = np.log(front["compute_gflop"].to_numpy())
    lo, hi = logc.min(), logc.max()
    span = max(hi - lo, 1e-12)
    bottom = front[logc <= lo + share * span]["params"].mean()
    top = front[logc >= hi - share * span]["params"].mean()
    return float(bottom), float(top)


def check_size_matters(store, sweep: str, bench: str) -> Check:
    """Where size matters (issue 23, target 3): at the largest D the final held-out MSE (seed means) falls
    monotonically with width, and the compute-optimal frontier's preset at the top 20% of compute is larger than
    at the bottom 20%. When not, says whether the smallest preset is compute-optimal at every budget measured."""
    name = "size matters at the largest D"
    table = final_mse_by_preset(store, sweep, bench)
    if len(table) < 2:
        return Check(name, "needs >= 2 presets at the largest D", "MSE falls with width", None)
    pts = store.eval_points(bench, "psnr", sweep=sweep)
    top_d = pts[pts["D"] == pts["D"].max()]
    bottom, top = frontier_presets(top_d)
    means = table["mean"].to_numpy()
    falls = bool(np.all(np.diff(means) < 0))
    seeds = int(table["runs"].max())
    per = ", ".join(f"{p} {m:.5f}" + (f" [{lo:.5f}, {hi:.5f}]" if seeds > 1 else "")
                    for p, m, lo, hi in zip(table["preset"], table["mean"], table["min"], table["max"]))
    length = table["steps"].iloc[0]
    what = (f"final MSE (pixels in [0, 1]) at D={int(top_d['D'].iloc[0])}"
            f"{'' if pd.isna(length) else f', {int(length)} steps'} "
            f"({'mean [range] of ' + str(seeds) + ' seeds' if seeds > 1 else '1 seed'})"
            f": {per}; frontier params bottom/top 20% of C: {bottom:.3g}/{top:.3g}")
    ok = falls and top > bottom
    if not ok and table["mean"].idxmin() == 0 and top <= bottom:
        what += "; the smallest preset is compute-optimal at every budget measured"
    return Check(name, what, "MSE falls monotonically with width and the frontier moves to larger presets", ok)


def check_overfit_mse(store, sweep: str, bench: str) -> Check:
    """The smallest D overfits: for each preset (seed means), a lower final training loss but a worse final held-out
    MSE than at the largest D."""
    pts = store.eval_points(bench, "psnr", sweep=sweep)
    if pts.empty or pts["D"].nunique() < 2:
        return Check("smallest D overfits", "needs >= 2 data sizes", "lower train loss, worse held-out MSE", None)
    d_min, d_max = pts["D"].min(), pts["D"].max()
    pts = pts.assign(length=run_lengths(pts))
    parts, oks = [], []
    for preset, g in pts[pts["is_last"].astype(bool)].groupby("preset"):
        ends = g[g["D"].isin([d_min, d_max])]
        length = common_length(ends, by="D")  # several run lengths: compare the two D at one length
        if length is not None:
            g = ends[ends["length"] == length]
        lo, hi = g[g["D"] == d_min], g[g["D"] == d_max]
        if lo.empty or hi.empty:
            continue
        train = {}
        for tag, rows in (("min", lo), ("max", hi)):
            values = []
            for run_id in rows["run_id"]:
                log = store.train_log(run_id).sort_values("step")
                values.append(float(log["loss"].iloc[-max(1, len(log) // 10):].mean()) if len(log) else np.nan)
            train[tag] = float(np.mean(values))
        held = {"min": float(_mse(lo["value"]).mean()), "max": float(_mse(hi["value"]).mean())}
        oks.append(train["min"] < train["max"] and held["min"] > held["max"])
        parts.append(f"{preset}: train {train['min']:.4f} vs {train['max']:.4f}, held-out MSE {held['min']:.5f} vs "
                     f"{held['max']:.5f}")
    if parts:
        parts[-1] += " (held-out MSE: pixels in [0, 1])"
    if not oks:
        return Check("smallest D overfits", "no preset ran on both the smallest and the largest D",
                     "lower train loss, worse held-out MSE", None)
    return Check(f"smallest D ({int(d_min)}) overfits vs D={int(d_max)}", "; ".join(parts),
                 "lower train loss and worse held-out MSE, every preset", all(oks))


def _at_bound(fit, name: str) -> bool:
    """Is the estimate or an end of the 95% CI of `name` within 0.1% of its bounds' range from a bound? Positive
    constants fitted in log space (A, B, L_inf: bounds 1e-30..1e30) are measured in decades: 2e-21 is 9 decades from
    1e-30, not at it; a value <= 0 is at the lower bound."""
    lo, hi = fit.law.bounds.get(name, (-np.inf, np.inf))
    values = (fit.ci_low[name], fit.ci_high[name], fit.params[name])
    if name in fit.law.log_params and lo > 0:
        width = 1e-3 * (np.log10(hi) - np.log10(lo))
        return any(v <= 0 or min(abs(np.log10(v) - np.log10(lo)), abs(np.log10(v) - np.log10(hi))) <= width
                   for v in values)
    return any(np.isfinite(b) and abs(v - b) <= 1e-3 * max(1.0, abs(b)) for v in values for b in (lo, hi))


def params_at_bound(fit) -> list[str]:
    """Names of the fit's free parameters whose estimate or bootstrap 95% CI touches one of the law's bounds (a
    parameter held fixed, e.g. the grid's `fit.fix`, is not one)."""
    fixed = getattr(fit, "fixed", None) or {}
    return [n for n in fit.params if n in fit.law.bounds and n not in fixed and _at_bound(fit, n)]


def gamma_one_comparison(fit) -> pd.DataFrame | None:
    """When a parameter of the card law (`kaplan`) sits at a bound: AIC/BIC of the card law vs gamma = 1 (the
    `additive` law) refitted on the same points (`rayder-fit --compare kaplan,additive`); None otherwise."""
    if fit is None or fit.law.name != "kaplan" or fit.inputs is None or not params_at_bound(fit):
        return None
    points = pd.DataFrame({"C": fit.inputs[0], "D": fit.inputs[1], "y": fit.targets})
    return compare_laws(points, ["kaplan", "additive"], ("C", "D"), "y", loo=False, lodo=False, progress=False)


def _comparison_text(table: pd.DataFrame) -> str:
    rows = {r["law"].split("[")[0]: r for _, r in table.iterrows()}
    card, one = rows.get("kaplan"), rows.get("additive")
    if card is None or one is None:
        return ""
    better = "the card law" if card["aic"] < one["aic"] else "gamma = 1"
    return (f"AIC vs gamma = 1: card law {card['aic']:.1f}, gamma = 1 {one['aic']:.1f} (d_aic "
            f"{abs(card['aic'] - one['aic']):.1f} in favour of {better})")


def free_refit(fit, name: str, bootstrap: int = 100):
    """When `fit` holds parameter `name` fixed (grid `fit.fix`): the same law refitted on the same points with
    `name` free (the other fixes kept), so that the check can show whether the data pin it down (None when `name`
    was free)."""
    if fit is None or name not in fit.fixed or fit.inputs is None:
        return None
    return refit_points(fit, free=name, bootstrap=bootstrap)


def free_floor_holdout(free, held: pd.DataFrame | None) -> str | None:
    """One line: how the free-floor refit (`free_refit(fit, "L_inf")`) predicts the held-out runs' final checkpoints
    (`fitting.holdout_runs.holdout_points` rows), so that a floor the grid identifies in-sample is also seen against
    runs beyond it; None without a refit or held-out points. Reported beside the checks, never one of them."""
    if free is None or held is None or held.empty:
        return None
    _, summary = validate_holdout(free, held)
    errs = ", ".join(f"{r.rel_err * 100:+.1f}% ({'inside' if r.inside else 'outside'} its 95% band)"
                     for r in summary.itertuples())
    return f"the held-out run(s) predicted by the law with L_inf free ({free.params['L_inf']:.3g}): {errs}"


def _floor_text(fit, free) -> tuple[str, bool]:
    """(what the free-floor fit says, whether holding L_inf fixed is consistent with it: the free L_inf's CI reaches
    down to where the data cannot tell it from 0, below 1% of the smallest fitted target)."""
    v, lo, hi = free.params["L_inf"], free.ci_low.get("L_inf", np.nan), free.ci_high.get("L_inf", np.nan)
    ok = bool(np.isfinite(lo) and lo <= 0.01 * float(np.min(fit.targets)))
    return (f"L_inf fixed at {fit.fixed['L_inf']:g}; free: {v:.3g} [{lo:.3g}, {hi:.3g}], AIC {log_likelihood(free)[4] - log_likelihood(fit)[4]:+.1f} "
            f"vs fixed ({'not identified' if ok else 'the data exclude 0'})"), ok


def _gamma_text(fit, free) -> tuple[str, bool]:
    """(what the free-gamma refit says, whether holding gamma is consistent with it: the held value lies inside
    the free gamma's bootstrap 95% CI)."""
    held = fit.fixed["gamma"]
    v, lo, hi = free.params["gamma"], free.ci_low.get("gamma", np.nan), free.ci_high.get("gamma", np.nan)
    ok = bool(np.isfinite(lo) and np.isfinite(hi) and lo <= held <= hi)
    return (f"gamma held at {held:g}; free: {v:.3g} [{lo:.3g}, {hi:.3g}], AIC "
            f"{log_likelihood(free)[4] - log_likelihood(fit)[4]:+.1f} vs held "
            f"({'the data cannot tell it from' if ok else 'the data exclude'} {held:g})"), ok


def check_identified_law(fit, label: str, r2_target: float, exponents: tuple[str, ...] = ("alpha", "beta"),
                         comparison: pd.DataFrame | None = None, free_floor=None, free_gamma=None) -> Check:
    """Issue 23, target 2: R^2 >= target; each exponent's bootstrap 95% CI excludes 0, stays clear of its bounds and is
    narrower than twice the estimate; L_inf has not drifted to 0; no parameter (or CI) at a bound. A parameter at a
    bound is reported with `comparison` (`gamma_one_comparison`) when given. A floor held fixed (grid `fit.fix`) is
    shown with `free_floor` (`free_refit(fit, "L_inf")`) and passes only when the free fit cannot tell L_inf from 0;
    a gamma held fixed, with `free_gamma` (`free_refit(fit, "gamma")`), only when the held value is inside the free
    gamma's 95% CI."""
    name = f"{label} law identified"
    if fit is None:
        return Check(name, "not fitted", f"R^2 >= {r2_target}", None)
    problems = []
    floor = None
    if "L_inf" in fit.fixed:
        floor, ok = _floor_text(fit, free_floor) if free_floor is not None else ("L_inf fixed, no free fit", False)
        if not ok:
            problems.append("L_inf held fixed against the data")
    if "gamma" in fit.fixed:
        text, ok = _gamma_text(fit, free_gamma) if free_gamma is not None else ("gamma fixed, no free fit", False)
        floor = f"{floor}; {text}" if floor else text
        if not ok:
            problems.append("gamma held fixed against the data")
    if fit.r2 < r2_target:
        problems.append(f"R^2 {fit.r2:.3f} < {r2_target}")
    parts = [f"R^2 {fit.r2:.3f}"]
    for e in exponents:
        if e not in fit.params:
            continue
        v, lo, hi = fit.params[e], fit.ci_low.get(e, np.nan), fit.ci_high.get(e, np.nan)
        parts.append(f"{e} {v:.3g} [{lo:.3g}, {hi:.3g}]")
        if not (np.isfinite(lo) and lo > 0):
            problems.append(f"{e}'s CI does not exclude 0")
        if _at_bound(fit, e):
            problems.append(f"{e} or its CI at a bound")
        if np.isfinite(hi - lo) and hi - lo >= 2 * v:
            problems.append(f"{e}'s CI wider than twice the estimate")
    if any("drifted" in w for w in fit.warnings):
        problems.append("L_inf drifted to 0")
    bounded = [w for w in fit.warnings if "bound" in w]
    if bounded:
        problems.append(f"{len(bounded)} parameter(s) at a bound")
    if comparison is not None and any("bound" in p for p in problems):
        problems.append(_comparison_text(comparison))
    parts += [floor] if floor else []
    measured = ", ".join(parts) + (f"; {'; '.join(p for p in problems if p)}" if problems else "")
    return Check(name, measured, f"R^2 >= {r2_target}; exponent CIs exclude 0, clear of bounds, < 2x estimate; "
                 "L_inf not at 0 (held fixed: only where a free L_inf's CI reaches 0)", not problems)


def effective_exponents(fit) -> dict[str, tuple[float, float, float]]:
    """alpha*gamma and beta*gamma (what the data identify when one term dominates) with bootstrap 95% CIs:
    name -> (estimate, low, high)."""
    out = {}
    for e in ("alpha", "beta"):
        if e not in fit.params or "gamma" not in fit.params:
            continue
        draws = _effective_draws(fit, e)
        lo, hi = np.percentile(draws, [2.5, 97.5]) if len(draws) else (np.nan, np.nan)
        out[f"{e}*gamma"] = (float(fit.params[e] * fit.params["gamma"]), float(lo), float(hi))
    return out


def _effective_draws(fit, e: str) -> np.ndarray:
    """The bootstrap draws of e*gamma (finite ones; empty without resamples)."""
    names = list(fit.law.param_names)
    boot = np.asarray(fit.bootstrap_params, dtype=float)
    if boot.ndim != 2 or not len(boot) or e not in names or "gamma" not in names:
        return np.empty(0)
    prod = boot[:, names.index(e)] * boot[:, names.index("gamma")]
    return prod[np.isfinite(prod)]


Z95 = float(norm.ppf(0.975))  # 1.96: the half-width of a normal 95% interval in standard deviations
SECOND_SEED_CEILING = float(2 * norm.cdf(Z95 / np.sqrt(2)) - 1)
"""0.834: how often a second seed's estimate lies inside exact 95% CIs of the first's (two estimates of one exponent
differ by sqrt(2) times one estimate's spread): the ceiling of the seed check's inside-the-CI rule."""


def seed_difference(fit0, fit1) -> dict[str, tuple[float, float, float]]:
    """For each effective exponent of both fits: (second - first, its standard error, |difference| / standard error).
    Each fit's standard error is its bootstrap 95% CI's width / (2 x Z95) (robust to the long tails of resamples
    that lose a data size), combined as sqrt(se0^2 + se1^2). The calibrated two-seed comparison: "the second inside
    the first's 95% CI" holds at most SECOND_SEED_CEILING of the time even with exact CIs, while |z| <= Z95 holds 95%
    of the time when only the seed changed."""
    e0, e1 = effective_exponents(fit0), effective_exponents(fit1)
    out = {}
    for name in e0.keys() & e1.keys():
        se = float(np.hypot(*((e[name][2] - e[name][1]) / (2 * Z95) for e in (e0, e1))))
        diff = e1[name][0] - e0[name][0]
        out[name] = (diff, se, abs(diff) / se if se > 0 else float("nan"))
    return dict(sorted(out.items()))


def frontier_top_slope(points: pd.DataFrame, factor: float = 4.0) -> float | None:
    """d log MSE / d log C of the compute-optimal frontier at the top of the compute range: a least-squares line
    through the running-minimum frontier points (every checkpoint of `points`: compute_gflop, value = PSNR) with
    C >= C_max / `factor`: 0.0 when one frontier point lies there (nothing improved over that range), None for no
    points."""
    mse = _mse(points["value"])
    keep = running_frontier(points["compute_gflop"], mse)
    c, m = points["compute_gflop"].to_numpy(dtype=float)[keep], mse[keep]
    if len(c) == 0:
        return None
    top = c >= c.max() / factor
    if top.sum() < 2 or np.ptp(np.log(c[top])) <= 0:
        return 0.0
    return float(np.polyfit(np.log(c[top]), np.log(m[top]), 1)[0])


def check_extrapolation_slope(fit, store, sweep: str, bench: str, factor: float = 4.0) -> Check:
    """The law's extrapolation to `factor` x the largest C must not be flat while the runs still improve: at the
    largest D, compare d log MSE / d log C of the law at factor x C_max with the measured compute-optimal frontier's
    slope over the top `factor` of C (`frontier_top_slope`); met when the law keeps >= 25% of it (or the frontier
    has stopped improving). The law describes the frontier, not one run's trajectory, whose last checkpoints fall
    faster under a decaying LR; their slope is printed beside it."""
    name = f"law not flat at {factor:g}x the largest C"
    pts = store.eval_points(bench, "psnr", sweep=sweep)
    target = "law slope >= 25% of the frontier's top slope while it still falls"
    if fit is None or pts.empty:
        return Check(name, "no law or no points", target, None)
    top = pts[pts["D"] == pts["D"].max()]
    front_slope = frontier_top_slope(top, factor)
    if front_slope is None:
        return Check(name, "no frontier points", target, None)
    d = float(top["D"].iloc[0])
    c_max = float(pts["compute_gflop"].max())
    cs = np.array([c_max * factor, c_max * factor * 1.01])
    pred = fit.predict(cs, np.full(2, d))
    law_slope = float(np.diff(np.log(np.asarray(pred, dtype=float)))[0] / np.log(1.01))
    improving = front_slope < -0.02
    ok = (not improving) or law_slope <= 0.25 * front_slope
    measured = (f"law slope {law_slope:.3f} at {factor:g}x C_max vs the frontier's {front_slope:.3f} over its top "
                f"{factor:g}x of C (D={int(d)})")
    run = top.loc[top["compute_gflop"].idxmax(), "run_id"]
    last = top[top["run_id"] == run].sort_values("compute_gflop").tail(2)
    if len(last) == 2:
        measured += f"; the largest run's last two checkpoints {_log_slope(last):.3f}"
        stable_slope = _stable_lr_slope(top[top["run_id"] == run])
        if stable_slope is not None and "decay" in set(last.get("lr_phase", pd.Series(dtype=str)).dropna()):
            measured += f" (constant LR: {stable_slope:.3f})"
    return Check(name, measured, target, bool(ok))


def _stable_lr_slope(run_points: pd.DataFrame) -> float | None:
    """d log MSE / d log C between a run's last two checkpoints in the constant-LR ('stable') phase, or None."""
    if "lr_phase" not in run_points.columns:
        return None
    stable = run_points[run_points["lr_phase"] == "stable"].sort_values("compute_gflop").tail(2)
    return _log_slope(stable) if len(stable) == 2 else None


def _log_slope(two: pd.DataFrame) -> float:
    """d log MSE / d log C between two eval rows (compute_gflop ascending; PSNR in `value`)."""
    c, m = two["compute_gflop"].to_numpy(), _mse(two["value"])
    return float(np.diff(np.log(m))[0] / np.diff(np.log(c))[0])


def check_holdout_10(summary: pd.DataFrame | None) -> Check:
    """Issue 23, target 5: the held-out run's final MSE predicted within 10% and inside the bootstrap band; with a
    `finished` column, a run that did not finish fails the check (its last checkpoint is not its final MSE)."""
    if summary is None or summary.empty:
        return Check("held-out run predicted", "not run", "|error| <= 10% and inside the 95% band", None)
    worst = float(summary["rel_err"].abs().max())
    inside = int(summary["inside"].sum())
    stopped = summary[~summary["finished"].astype(bool)] if "finished" in summary else pd.DataFrame()
    note = "".join(f"; {r['run_id']} stopped at step {r['step']} (not finished: no test)"
                   for _, r in stopped.iterrows())
    return Check("held-out run predicted", ", ".join(f"{e:+.1%}" for e in summary["rel_err"]) +
                 f" (inside the 95% band: {inside}/{len(summary)}){note}", "|error| <= 10% and inside the 95% band",
                 worst <= 0.10 and inside == len(summary) and stopped.empty)
