"""Does a study show a real scaling law? The checks `python -m sweeps.demo` prints after its fits (issue 10).

Each check reads the results store (and the fitted laws) and returns a `Check`: what was measured, the target and
whether it is met. None of them is tuned to pass: the targets are the issue's, the numbers are the study's.

- learning: every run's mean training loss over the last 10% of its logged steps <= 0.7 x the first 10%;
- beats baseline: the best checkpoint's PSNR >= the mean-colour baseline + 3 dB on the NVS benchmark;
- larger wins at large compute: at the largest D, the largest preset (which reaches the largest compute) ends
  better than every smaller preset (the ordering of all presets is printed);
- smallest D overfits: on the smallest D, each preset ends with a lower training loss but a worse eval PSNR than
  the same preset on the largest D (memorising the few videos instead of generalising);
- frontier points: >= 15 per-D frontier points on the benchmark;
- law quality: R^2 (metric space) of the MSE law >= 0.95 with no parameter at a bound and a bootstrap 95% CI of
  beta that excludes 0; the 1-SSIM law R^2 >= 0.90;
- no skipped steps; held-out run: |relative error| of the predicted MSE at its final checkpoint <= 5%.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass
class Check:
    name: str
    measured: str
    target: str
    ok: bool | None  # None: could not be computed (reason in `measured`)


def _runs(store, sweep: str) -> pd.DataFrame:
    return store.runs(sweep)


def check_learning(store, sweep: str) -> Check:
    ratios = {}
    for run_id in _runs(store, sweep)["run_id"]:
        log = store.train_log(run_id).sort_values("step")
        if len(log) < 10:
            continue
        k = max(1, len(log) // 10)
        ratios[run_id] = float(log["loss"].iloc[-k:].mean() / log["loss"].iloc[:k].mean())
    if not ratios:
        return Check("loss falls in every run", "no training logs", "last 10% <= 0.7 x first 10%", None)
    worst = max(ratios.values())
    return Check("loss falls in every run", f"last/first 10% of logged loss: {min(ratios.values()):.2f}..{worst:.2f}"
                 f" over {len(ratios)} runs", "<= 0.70 in every run", worst <= 0.7)


def _final_psnr(store, sweep: str, bench: str) -> pd.DataFrame:
    pts = store.eval_points(bench, "psnr", sweep=sweep)
    if pts.empty:
        return pts
    return pts[pts["is_last"].astype(bool)]


def check_baseline(store, sweep: str, bench: str) -> Check:
    ev = store.query("SELECT e.run_id, e.step, e.metric, e.value FROM evals e JOIN runs r USING (run_id) "
                     "WHERE r.sweep = ? AND e.bench = ? AND e.metric IN ('psnr', 'baseline_psnr')", [sweep, bench])
    if ev.empty:
        return Check("best checkpoint beats the mean colour", "no PSNR evaluations", ">= +3 dB", None)
    wide = ev.pivot_table(index=["run_id", "step"], columns="metric", values="value").dropna()
    if wide.empty or "baseline_psnr" not in wide:
        return Check("best checkpoint beats the mean colour", "no baseline recorded", ">= +3 dB", None)
    best = wide.loc[wide["psnr"].idxmax()]
    gain = float(best["psnr"] - best["baseline_psnr"])
    return Check("best checkpoint beats the mean colour", f"{best['psnr']:.2f} dB vs baseline "
                 f"{best['baseline_psnr']:.2f} dB ({gain:+.2f} dB)", ">= +3 dB", gain >= 3.0)


def check_larger_wins(store, sweep: str, bench: str) -> Check:
    """At the largest D, the largest preset's best checkpoint (it reaches the largest compute) beats the best of
    every smaller preset. With several seeds (several runs of one preset at that D) each run's best PSNR is averaged
    over the seeds, so one lucky or unlucky seed does not decide; the per-preset mean (and range) is reported."""
    pts = store.eval_points(bench, "psnr", sweep=sweep)
    if pts.empty:
        return Check("larger presets win at large compute", "no evaluations", "largest preset best at the largest D",
                     None)
    top = pts[pts["D"] == pts["D"].max()]
    per_run = top.groupby(["preset", "params", "run_id"])["value"].max().reset_index()
    best = (per_run.groupby(["preset", "params"])["value"].agg(["mean", "min", "max", "count"]).reset_index()
            .sort_values("params"))
    ok = len(best) > 1 and bool(best["mean"].iloc[-1] > best["mean"].iloc[:-1].max())
    seeds = int(best["count"].max())
    if seeds > 1:
        desc = ", ".join(f"{p} {m:.2f} [{lo:.2f}, {hi:.2f}]" for p, m, lo, hi in
                         zip(best["preset"], best["mean"], best["min"], best["max"]))
        what = f"mean best PSNR over up to {seeds} seeds [range] at D={int(top['D'].iloc[0])}: {desc} dB"
    else:
        desc = ", ".join(f"{p} {v:.2f}" for p, v in zip(best["preset"], best["mean"]))
        what = f"best PSNR at D={int(top['D'].iloc[0])}: {desc} dB"
    return Check("larger presets win at large compute", what,
                 "the largest preset (the largest compute) beats every smaller one", ok)


def check_overfit(store, sweep: str, bench: str) -> Check:
    final = _final_psnr(store, sweep, bench)
    if final.empty or final["D"].nunique() < 2:
        return Check("smallest D overfits", "needs >= 2 data sizes", "lower train loss, worse eval", None)
    d_min, d_max = final["D"].min(), final["D"].max()
    parts, oks = [], []
    for preset, g in final.groupby("preset"):
        lo, hi = g[g["D"] == d_min], g[g["D"] == d_max]
        if lo.empty or hi.empty:
            continue
        loss = {}
        for tag, row in (("min", lo.iloc[0]), ("max", hi.iloc[0])):
            log = store.train_log(row["run_id"]).sort_values("step")
            loss[tag] = float(log["loss"].iloc[-max(1, len(log) // 10):].mean()) if len(log) else float("nan")
        gap = float(lo["value"].iloc[0] - hi["value"].iloc[0])
        oks.append(loss["min"] < loss["max"] and gap < 0)
        parts.append(f"{preset}: train loss {loss['min']:.4f} vs {loss['max']:.4f}, eval {gap:+.2f} dB")
    if not oks:
        return Check("smallest D overfits", "no preset ran on both the smallest and the largest D",
                     "lower train loss, worse eval", None)
    return Check(f"smallest D ({int(d_min)}) overfits vs D={int(d_max)}", "; ".join(parts),
                 "lower train loss and worse eval PSNR, every preset", all(oks))


def check_frontier(points: int) -> Check:
    return Check("frontier points", f"{points} per-D frontier points", ">= 15", points >= 15)


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


def check_skips(store, sweep: str) -> Check:
    total = 0
    for run_id in _runs(store, sweep)["run_id"]:
        log = store.train_log(run_id)
        if len(log):
            total += int(log["skipped"].fillna(0).sum())
    return Check("skipped steps", f"{total}", "0", total == 0)


def check_holdout(summary: pd.DataFrame | None) -> Check:
    if summary is None or summary.empty:
        return Check("held-out run", "not run", "|error| <= 5% of MSE", None)
    worst = float(summary["rel_err"].abs().max())
    return Check("held-out run predicted", ", ".join(f"{e:+.1%}" for e in summary["rel_err"]) +
                 f" (inside 95% interval: {int(summary['inside'].sum())}/{len(summary)})",
                 "|error| <= 5% of MSE at the final checkpoint", worst <= 0.05)


def format_checks(checks: list[Check]) -> str:
    mark = {True: "met", False: "NOT met", None: "n/a"}
    width = max(len(c.name) for c in checks)
    return "\n".join(f"  [{mark[c.ok]:>7}] {c.name:<{width}}  {c.measured}   (target: {c.target})" for c in checks)
