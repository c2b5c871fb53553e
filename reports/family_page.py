"""Family comparison page: the compute-optimal frontiers of every model family of the store (runs.family, e.g.
RayDer and E-RayZer) overlaid on one benchmark and metric, with each family's law L(C, D) and its exponents' CIs
side by side. Only when the store holds runs of at least two families.

`family_page(store)` returns the figure (None with fewer than two families); `figures(study, fits)` and
`page_count(...)` are the page-module interface of `reports.report.PAGES` (the page count of a two-family store is
one more than `expected_page_count` says, which cannot see families).
"""
from __future__ import annotations

import textwrap
from typing import Iterable

import numpy as np
from matplotlib.figure import Figure

from fitting import DEFAULT_LAW, FitOptions, StudyOptions, fit_study, target_label
from rayder_core.store import ResultsStore
from reports.common import FITTED_NVS_METRICS, HOLDOUT_SUFFIX, Study, new_page, sci

FAMILY_BOOTSTRAP = 100  # resamples per family for the exponents' CIs (each family is fitted on its own frontier)


def _fit_family(points, metric: str, bench: str, bootstrap: int, seed: int):
    """(frontier, FitResult or None, why not) of one family's evaluated checkpoints (held-out runs excluded; warmup
    checkpoints dropped when the store records LR phases), through `fitting.fit_study` as rayder-fit fits."""
    points = points[~points["sweep"].astype(str).str.endswith(HOLDOUT_SUFFIX)]
    if points.empty:
        return None, None, "no evaluated checkpoints"
    options = StudyOptions(fit=FitOptions(law=DEFAULT_LAW, x=("C", "D"), y="y", bootstrap=bootstrap, seed=seed,
                                          metric=metric, bench=bench, progress=False, n_jobs=1),
                           metric=metric, checkpoints="all" if "lr_phase" in points else None)
    fitted = fit_study(points.reset_index(drop=True), options)
    if fitted.table.empty:
        return None, None, (fitted.problem or "no evaluated checkpoints").splitlines()[0]
    return fitted.table, fitted.fit, fitted.problem


def _default_bench(store) -> str | None:
    df = store.query("SELECT DISTINCT bench FROM evals WHERE metric = 'psnr' AND value IS NOT NULL ORDER BY bench")
    return str(df["bench"].iloc[0]) if len(df) else None


def family_page(store, bench: str | None = None, metric: str = "psnr", *, bootstrap: int = FAMILY_BOOTSTRAP,
                seed: int = 0) -> Figure | None:
    """Overlay of the families' compute-optimal frontiers (target vs C, GFLOP) on `bench` (default: the first
    benchmark with PSNR) and `metric`, each family's law along its frontier, and a table of both laws with their
    exponents' 95% bootstrap CIs. None when the store holds fewer than two families."""
    families = store.families()
    if len(families) < 2:
        return None
    bench = bench or _default_bench(store)
    title = "Model families: compute-optimal frontiers and laws side by side"
    fig = new_page(title, f"benchmark {bench}, {metric} fitted as {target_label(metric)} (lower is better); "
                   f"families {', '.join(families)} (store column runs.family); each family's frontier and law "
                   f"L(C,D) fitted on its own runs only; CIs: {bootstrap} bootstrap resamples, 95%")
    ax = fig.add_axes([0.07, 0.12, 0.5, 0.74])
    rows = []
    for i, fam in enumerate(families):
        colour = f"C{i}"
        pts = store.eval_points(bench, metric, family=fam) if bench else None
        if pts is None or pts.empty:
            rows.append((fam, None, f"no {metric} on {bench}"))
            continue
        front, res, why = _fit_family(pts, metric, bench, bootstrap, seed)
        if front is None:
            rows.append((fam, None, why))
            continue
        ax.plot(front["C"], front["y"], ".", color=colour, alpha=0.25, ms=4)
        on = front[front["on_frontier_joint"]].sort_values("C") if "on_frontier_joint" in front else front
        ax.plot(on["C"], on["y"], "o-", color=colour, lw=1.5, ms=5, label=f"{fam}: frontier over all D ({len(on)} points)")
        if res is not None:
            C = np.geomspace(float(front["C"].min()), float(front["C"].max()), 100)
            D = float(front["D"].max())
            ax.plot(C, res.law.predict(res.params, [C, np.full_like(C, D)]), "--", color=colour,
                    label=f"{fam}: law at D = {D:g}")
        rows.append((fam, res, why))
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("training compute C (GFLOP)")
    ax.set_ylabel(target_label(metric))
    ax.legend(loc="upper right", fontsize=8)
    # both laws side by side: one table column per family, the formulas underneath
    names = ["R^2", "fit points (per-D frontiers)"]
    fitted = [r for _f, r, _w in rows if r is not None]
    exps = [n for n in ("alpha", "beta", "gamma") if any(n in r.params for r in fitted)]
    names += [f"{n} [95% CI]" for n in exps] + ["L_inf"]
    cells = []
    for name in names:
        row = []
        for _fam, res, why in rows:
            if res is None:
                row.append("-")
            elif name == "R^2":
                row.append(f"{res.r2:.3f}")
            elif name == "fit points (per-D frontiers)":
                row.append(str(res.n_points))
            elif name == "L_inf":
                row.append(sci(res.params["L_inf"]) if "L_inf" in res.params else "-")
            else:
                n = name.split()[0]
                lo, hi = res.ci_low.get(n, float("nan")), res.ci_high.get(n, float("nan"))
                row.append(f"{res.params[n]:.3g} [{lo:.3g}, {hi:.3g}]" if n in res.params else "-")
        cells.append(row)
    tab_ax = fig.add_axes([0.71, 0.5, 0.27, 0.36])  # row labels extend to the left of it
    tab_ax.axis("off")
    table = tab_ax.table(cellText=cells, rowLabels=names, colLabels=[f for f, _r, _w in rows], loc="upper center",
                         cellLoc="center")
    table.auto_set_font_size(False)
    table.set_fontsize(8)
    table.scale(1.0, 1.4)
    notes = [f"{fam}: {res.formula()}" if res is not None else f"{fam}: no law ({why})" for fam, res, why in rows]
    fig.text(0.61, 0.62, "\n".join(_wrap(notes, 70)), va="top", ha="left", fontsize=7.5, family="monospace")
    return fig


def _wrap(lines: list[str], width: int = 62) -> list[str]:
    out = []
    for line in lines:
        out += textwrap.wrap(line, width, subsequent_indent="    ") or [""]
    return out


def figures(study: Study, fits: dict) -> Iterable[tuple[str, Figure]]:
    if "family" not in study.runs or study.runs["family"].nunique() < 2:
        return
    store = ResultsStore(study.db_path)
    for bench in study.nvs_benches:
        for metric in [m for m in FITTED_NVS_METRICS if len(study.eval_points(bench, m))][:1]:
            fig = family_page(store, bench, metric, bootstrap=FAMILY_BOOTSTRAP)
            if fig is not None:
                yield f"09_families_{bench}", fig


def page_count(n_nvs_benches: int, n_probe_benches: int, n_runs: int, holdout: bool) -> int:
    return 0  # one page per NVS benchmark when the store has two families (not visible from these counts)
