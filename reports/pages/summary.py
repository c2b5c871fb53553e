"""Page 1: study summary: what the study found (laws, R^2, CIs, fit checks, compute-optimal allocation), runs by
state, the preset x fraction grid, totals, what is missing."""
from __future__ import annotations

import textwrap
import time
from typing import Iterable

import pandas as pd
from matplotlib.figure import Figure

from fitting.fit import EXPONENT_NAMES
from reports.common import FITTED_NVS_METRICS, Study, count_label, fraction_label, new_page, sci, table_on
from reports.fits import MetricFit
from reports.pages.allocation import allocation_budgets, allocation_table

def run_totals(study: Study) -> pd.DataFrame:
    """Per run: last step, samples, training FLOPs and wall time (from the latest checkpoint; 0 without any)."""
    ck = study.checkpoints
    if ck.empty:
        last = pd.DataFrame(columns=["run_id", "step", "samples", "flops", "wall_time_s"])
    else:
        last = ck.sort_values("step").groupby("run_id").tail(1)[["run_id", "step", "samples", "flops",
                                                                 "wall_time_s"]]
    out = study.runs[["run_id", "sweep", "preset", "params", "fraction", "D", "status"]].merge(
        last, on="run_id", how="left")
    return out.fillna({"step": 0, "samples": 0, "flops": 0.0, "wall_time_s": 0.0})


def findings(study: Study, fits: dict[tuple[str, str], MetricFit]) -> list[str]:
    """What the study found, one benchmark and metric at a time: the law with R^2 and its exponents' 95% bootstrap
    CIs, or why there is none; its fit checks (points vs free parameters, notes); then the compute-optimal
    allocation the first law predicts at a few budgets (as on the allocation pages)."""
    lines: list[str] = []
    first = None
    for bench in study.nvs_benches:
        for metric in FITTED_NVS_METRICS:
            fit = fits.get((bench, metric))
            if fit is None or study.eval_points(bench, metric).empty:
                continue
            if not fit.ok:
                lines.append(f"{bench} · {fit.target}: no law ({fit.problem})")
                continue
            first = first or fit
            lines.append(f"{bench} · {fit.formula} (R^2 log {fit.r2_log:.3f}; {fit.n_points} frontier points)")
            cis = [f"{n} = {fit.params[n]:.2f} [{fit.ci_low[n]:.2f}, {fit.ci_high[n]:.2f}]"
                   for n in fit.params if n in EXPONENT_NAMES and n in fit.ci_low and n in fit.ci_high]
            if cis:
                lines.append("    exponents, 95% bootstrap CI: " + ", ".join(cis))
            checks = [f"{fit.n_points} points for {len(fit.params)} parameters"] + [f"note: {n}" for n in fit.notes[:2]]
            lines.append("    checks: " + "; ".join(checks))
    if first is not None and not study.checkpoints.empty:
        columns, rows = allocation_table(study, first, allocation_budgets(study))
        best = columns.index("best D")
        lines.append(f"Compute-optimal allocation ({first.bench} · {first.target} law; * = beyond the largest run):")
        for row in rows:
            lines.append(f"    C = {row[0]} GFLOP: best D = {row[best]}, model {row[best + 1]}, "
                         f"{row[best + 2]} samples")
    if not lines:
        lines.append("No NVS metric has been evaluated yet: no law (see what is missing below).")
    lines.append("The study checks (issue 23's targets: learning, baseline, size, overfitting, law) are printed by "
                 "`python -m sweeps.demo` (sweeps/study_checks.py).")
    return lines


def summary_page(study: Study, fits: dict[tuple[str, str], MetricFit] | None = None) -> Figure:
    runs = study.runs
    totals = run_totals(study)
    sweeps = ", ".join(sorted(runs["sweep"].astype(str).unique()))
    fig = new_page("Study summary",
                   f"store {study.db_path} · sweep(s): {sweeps} · {len(runs)} runs · "
                   f"report made {time.strftime('%Y-%m-%d %H:%M')}")

    # Top: what the study found (laws, R^2, CIs, checks, compute-optimal allocation).
    fig.text(0.03, 0.9, "What the study found", fontsize=11, fontweight="bold", va="top")
    found = [w for line in findings(study, fits or {})
             for w in textwrap.wrap(line, width=150, subsequent_indent="        ", break_on_hyphens=False)][:15]
    fig.text(0.03, 0.865, "\n".join(found), fontsize=8, va="top", linespacing=1.45)

    # Middle left: runs by state and totals.
    ax_state = fig.add_axes((0.03, 0.33, 0.2, 0.13))
    by_state = runs["status"].value_counts()
    table_on(ax_state, [[s, str(int(by_state.get(s, 0)))] for s in
                        ("finished", "running", "pending", "preempted", "failed") if by_state.get(s, 0)],
             ["state", "runs"], font_size=8.5)
    ax_state.set_title("Runs by state", loc="left", fontsize=10)

    total_flops = float(totals["flops"].sum())
    wall_s = totals["wall_time_s"].astype(float)
    lines = [f"Training compute: {sci(total_flops / 1e9)} GFLOP ({total_flops / (1e15 * 86400):.3g} PFLOP/s-days)",
             f"Wall time: {wall_s.sum() / 3600:.1f} h summed, longest run {wall_s.max() / 3600:.1f} h",
             f"{len(study.checkpoints)} checkpoints, {int(study.evals['value'].notna().sum())} metric values",
             f"on {len(study.benches)} benchmark(s)"]
    fig.text(0.03, 0.3, "\n".join(lines), fontsize=7.5, va="top", linespacing=1.45, wrap=True)

    # Middle right: the preset x fraction grid (the preset and its size on two lines: names are never cut).
    ax_grid = fig.add_axes((0.30, 0.21, 0.67, 0.26))
    presets, fractions = study.presets, study.fractions
    params = runs.groupby("preset")["params"].max()
    d_of = runs.groupby("fraction")["D"].max()
    cells = []
    for preset in presets:
        row = [f"{preset}\n({count_label(params[preset])} params)"]
        for fraction in fractions:
            sel = totals[(totals["preset"] == preset) & (totals["fraction"] == fraction)]
            if sel.empty:
                row.append("—")
                continue
            parts = []
            for _, r in sel.iterrows():
                parts.append(f"{r['status']}, {count_label(r['step'])} steps\nC = {sci(r['flops'] / 1e9)} GFLOP")
            row.append("\n".join(parts))
        cells.append(row)
    columns = ["preset"] + [f"{fraction_label(f)} data (D={count_label(d_of[f])})" for f in fractions]
    first_col = min(0.35, max(0.14, 0.0085 * max([len(str(p)) for p in presets] + [16])))
    table_on(ax_grid, cells, columns, font_size=8, row_scale=2.3,
             col_widths=[first_col] + [(0.98 - first_col) / max(len(fractions), 1)] * len(fractions))
    ax_grid.set_title("Runs: model size × data fraction (state, last checkpoint, compute C)", loc="left",
                      fontsize=10)

    # Bottom: what is missing.
    missing_lines = missing_summary(study)
    fig.text(0.03, 0.17, "What is missing", fontsize=10, fontweight="bold", va="top")
    wrapped = [w for line in missing_lines
               for w in textwrap.wrap(line, width=150, subsequent_indent="    ", break_on_hyphens=False)]
    shown = wrapped[:7]
    if len(wrapped) > len(shown):
        shown.append(f"… and {len(wrapped) - len(shown)} more lines (query the store's evals table)")
    fig.text(0.03, 0.145, "\n".join(shown) if shown else "Nothing: every run finished and every metric was "
             "computed.", fontsize=7.5, va="top", linespacing=1.4, family="DejaVu Sans Mono")
    return fig


def missing_summary(study: Study) -> list[str]:
    """Human-readable lines: runs that did not finish, runs without checkpoints/evals, missing metrics and why."""
    lines = []
    runs = study.runs
    for status in ("failed", "preempted", "running", "pending"):
        ids = runs.loc[runs["status"] == status, "run_id"].tolist()
        if ids:
            lines.append(f"{status:>9}: {', '.join(ids)}")
    with_ck = set(study.checkpoints["run_id"]) if len(study.checkpoints) else set()
    no_ck = [r for r in runs["run_id"] if r not in with_ck]
    if no_ck:
        lines.append(f"no checkpoints recorded: {', '.join(no_ck)}")
    evaluated = set(study.evals["run_id"]) if len(study.evals) else set()
    no_eval = [r for r in runs["run_id"] if r in with_ck and r not in evaluated]
    if no_eval:
        lines.append(f"checkpoints but no evaluations: {', '.join(no_eval)}")
    ev = study.evals
    if len(ev):
        miss = ev[ev["value"].isna()].copy()
        miss["missing_reason"] = miss["missing_reason"].fillna("no reason recorded")
        for (bench, metric, reason), grp in miss.groupby(["bench", "metric", "missing_reason"], sort=True):
            run_ids = sorted(grp["run_id"].unique())
            which = ("all runs" if len(run_ids) == len(runs) else
                     ", ".join(run_ids[:3]) + (", …" if len(run_ids) > 3 else ""))
            lines.append(f"{bench}/{metric} missing at {len(grp)} checkpoint(s) of {len(run_ids)} run(s) "
                         f"({which}): {reason}")
        if "skipped" in ev.columns:  # scenes skipped as unreadable (evaluated on the rest)
            skipped = ev[ev["skipped"].fillna(0) > 0].drop_duplicates(["run_id", "step", "bench"])
            for bench, grp in skipped.groupby("bench", sort=True):
                lines.append(f"{bench}: {int(grp['skipped'].max())} unreadable scene(s) skipped (of "
                             f"{int(grp['skipped'].max() + grp['n'].max())}) at {len(grp)} checkpoint(s)")
    return lines


def figures(study: Study, fits: dict) -> Iterable[tuple[str, Figure]]:
    yield "01_summary", summary_page(study, fits)


def page_count(n_nvs_benches: int, n_probe_benches: int, n_runs: int, holdout: bool) -> int:
    return 1
