"""Page 4: residuals of every fit, then the table of fitted parameters with bootstrap CIs."""
from __future__ import annotations

import textwrap
from typing import Iterable

import numpy as np
from matplotlib.figure import Figure

from fitting import DEFAULT_LAW, get_law
from reports.common import (FITTED_NVS_METRICS, FRACTION_CMAP, Study, count_label, message_page, new_page, sci, shades,
                            table_on)
from reports.fits import MetricFit

def residuals_page(study: Study, fits: dict[tuple[str, str], MetricFit]) -> Figure:
    """Relative residual (observed / predicted - 1, in %) of every frontier point, per benchmark and metric."""
    benches = study.nvs_benches
    if not benches:
        return message_page("Residuals of the fitted laws", "No NVS benchmark (PSNR/LPIPS/SSIM) has been "
                            "evaluated yet, so there is nothing to fit. Run `rayder-eval` on the checkpoints.")
    fig = new_page("Residuals of the fitted laws",
                   "Observed / predicted - 1 (in %) of each frontier point, in the fitted target (MSE, LPIPS, "
                   "1-SSIM); colour = data size D. A good fit scatters evenly around 0.")
    axes = fig.subplots(len(benches), len(FITTED_NVS_METRICS), squeeze=False,
                        gridspec_kw={"left": 0.07, "right": 0.97, "top": 0.87, "bottom": 0.08,
                                     "hspace": 0.45, "wspace": 0.22})
    d_values = sorted(study.runs["D"].unique())
    d_colour = dict(zip(d_values, shades(FRACTION_CMAP, len(d_values))))
    for row, bench in enumerate(benches):
        for col, metric in enumerate(FITTED_NVS_METRICS):
            ax, fit = axes[row, col], fits[(bench, metric)]
            ax.set_xscale("log")
            ax.set_title(f"{bench} · {fit.target}")
            ax.set_xlabel("training compute C (GFLOP)")
            ax.set_ylabel("residual (%)")
            if not fit.ok:
                ax.text(0.5, 0.5, "\n".join(textwrap.wrap(fit.problem or "", 45)), ha="center", va="center",
                        transform=ax.transAxes, fontsize=8, color="0.4")
                continue
            pts = fit.frontier_points
            resid = 100.0 * (pts["y"].to_numpy() / fit.predict(pts["C"].to_numpy(), pts["D"].to_numpy()) - 1.0)
            ax.axhline(0.0, color="0.3", lw=0.8)
            for d in d_values:
                sel = (pts["D"] == d).to_numpy()
                if sel.any():
                    ax.plot(pts["C"].to_numpy()[sel], resid[sel], "o", color=d_colour[d], mec="k", mew=0.4, ms=5,
                            label=f"D={count_label(d)}")
            lim = max(1.0, float(np.nanmax(np.abs(resid))) * 1.25)
            ax.set_ylim(-lim, lim)
            ax.text(0.02, 0.96, f"RMS {np.sqrt(np.mean(resid ** 2)):.1f}% · R^2 {fit.r2:.3f}",
                    transform=ax.transAxes, fontsize=8, va="top")
            if row == 0 and col == len(FITTED_NVS_METRICS) - 1:
                ax.legend(loc="lower right", fontsize=7)
    return fig


def parameters_page(study: Study, fits: dict[tuple[str, str], MetricFit]) -> Figure:
    """Every fitted parameter with its 95% bootstrap CI, R^2, points and source, per benchmark x metric."""
    ok = [f for f in fits.values() if f.ok]
    if not ok:
        reasons = sorted({f"{f.bench}/{f.metric}: {f.problem}" for f in fits.values()})
        return message_page("Fitted parameters", "No law could be fitted. " + " ".join(reasons[:6]) if reasons
                            else "No law could be fitted: no NVS benchmark has been evaluated yet.")
    fig = new_page("Fitted parameters with 95% bootstrap confidence intervals",
                   f"Law: L(C,D) = L_inf + (A C^-alpha + B D^-beta)^gamma (paper Eq. B.9), C in GFLOP, D in videos."
                   f" Each cell: value [2.5%, 97.5%].")
    names = list(get_law(DEFAULT_LAW).param_names)
    cells = []
    for fit in fits.values():
        row = [fit.bench, fit.target]
        if fit.ok:
            row += [f"{_num(fit.params[n])}\n[{_num(fit.ci_low.get(n))}, {_num(fit.ci_high.get(n))}]"
                    for n in names]
            row += [f"{fit.r2:.3f}", f"{fit.r2_log:.3f}", str(fit.n_points)]
        else:
            row += ["—"] * len(names) + ["—", "—", "0"]
        cells.append(row)
    ax = fig.add_axes((0.03, 0.45, 0.94, 0.43))
    table_on(ax, cells, ["benchmark", "target"] + names + ["R^2", "R^2 log", "points"], font_size=8.5,
             col_widths=[0.1, 0.07] + [0.11] * len(names) + [0.05, 0.065, 0.05], row_scale=2.4)
    lines = []
    for fit in fits.values():
        lines.append(f"{fit.bench} / {fit.target}: " + (f"{fit.formula}   [{fit.source}]" if fit.ok
                                                          else fit.problem))
    fig.text(0.03, 0.4, "Fitted laws:\n" + "\n".join(lines), fontsize=8.5, va="top", linespacing=1.7)
    return fig


def _num(v: float | None) -> str:
    if v is None or not np.isfinite(v):
        return "n/a"
    text = f"{v:.3g}"
    return sci(v, 3) if "e" in text else text


def figures(study: Study, fits: dict) -> Iterable[tuple[str, Figure]]:
    yield "04_residuals", residuals_page(study, fits)
    yield "04_parameters", parameters_page(study, fits)


def page_count(n_nvs_benches: int, n_probe_benches: int, n_runs: int, holdout: bool) -> int:
    return 2
