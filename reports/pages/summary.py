"""Page 1: study summary (sweeps, runs by state, the preset x fraction grid, totals, what is missing)."""
from __future__ import annotations

import textwrap
import time
from typing import Iterable

import pandas as pd
from matplotlib.figure import Figure

from reports.common import Study, count_label, fraction_label, new_page, sci, table_on

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


def summary_page(study: Study) -> Figure:
    runs = study.runs
    totals = run_totals(study)
    sweeps = ", ".join(sorted(runs["sweep"].astype(str).unique()))
    fig = new_page("Study summary",
                   f"store {study.db_path} · sweep(s): {sweeps} · {len(runs)} runs · "
                   f"report made {time.strftime('%Y-%m-%d %H:%M')}")

    # Left column: runs by state and totals.
    ax_state = fig.add_axes((0.03, 0.58, 0.22, 0.3))
    by_state = runs["status"].value_counts()
    table_on(ax_state, [[s, str(int(by_state.get(s, 0)))] for s in
                        ("finished", "running", "pending", "preempted", "failed") if by_state.get(s, 0)],
             ["state", "runs"], font_size=9)
    ax_state.set_title("Runs by state", loc="left", fontsize=11)

    total_flops = float(totals["flops"].sum())
    wall_s = totals["wall_time_s"].astype(float)
    lines = [f"Total training compute: {sci(total_flops)} FLOP = {sci(total_flops / 1e9)} GFLOP",
             f"    ({total_flops / (1e15 * 86400):.3g} PFLOP/s-days)",
             f"Wall time: {wall_s.sum() / 3600:.1f} h summed over runs, longest run {wall_s.max() / 3600:.1f} h",
             f"Checkpoints: {len(study.checkpoints)} · evaluations: {int(study.evals['value'].notna().sum())} "
             f"metric values on {len(study.benches)} benchmark(s)"]
    fig.text(0.03, 0.52, "\n".join(lines), fontsize=9, va="top", linespacing=1.5)

    # Right: the preset x fraction grid.
    ax_grid = fig.add_axes((0.30, 0.45, 0.67, 0.43))
    presets, fractions = study.presets, study.fractions
    params = runs.groupby("preset")["params"].max()
    d_of = runs.groupby("fraction")["D"].max()
    cells = []
    for preset in presets:
        row = [f"{preset} ({count_label(params[preset])} params)"]
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
    table_on(ax_grid, cells, columns, font_size=8.5, row_scale=2.3,
             col_widths=[0.2] + [0.78 / max(len(fractions), 1)] * len(fractions))
    ax_grid.set_title("Runs: model size × data fraction (state, last checkpoint, compute C)", loc="left",
                      fontsize=11)

    # Bottom: what is missing.
    missing_lines = missing_summary(study)
    fig.text(0.03, 0.33, "What is missing", fontsize=11, fontweight="bold", va="top")
    wrapped = [w for line in missing_lines
               for w in textwrap.wrap(line, width=135, subsequent_indent="    ", break_on_hyphens=False)]
    shown = wrapped[:16]
    if len(wrapped) > len(shown):
        shown.append(f"… and {len(wrapped) - len(shown)} more lines (query the store's evals table)")
    fig.text(0.03, 0.29, "\n".join(shown) if shown else "Nothing: every run finished and every metric was "
             "computed.", fontsize=8.5, va="top", linespacing=1.45, family="DejaVu Sans Mono")
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
    yield "01_summary", summary_page(study)


def page_count(n_nvs_benches: int, n_probe_benches: int, n_runs: int, holdout: bool) -> int:
    return 1
