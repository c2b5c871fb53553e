"""Page 2: scaling across data and model size (paper Figure 10), one page per NVS benchmark."""
from __future__ import annotations

from typing import Iterable

from matplotlib.figure import Figure

from reports.common import (FITTED_NVS_METRICS, METRIC_LABEL, NO_NVS, Study, _run_curves, _run_styles,
                            _size_fraction_legends, left_out_line, message_page, new_page, split_by_data)

def scaling_page(study: Study, bench: str) -> Figure:
    """Metric vs training compute for every run, coloured by data fraction (top) and by model size (bottom)."""
    metrics, missing = split_by_data(study, bench, FITTED_NVS_METRICS)
    metrics = metrics or list(FITTED_NVS_METRICS[:1])  # a page is drawn per NVS benchmark: at least one column
    fig = new_page(f"Scaling across data and model size · {bench}",
                   "Each line is one run (its checkpoints). Top: colour = data fraction (blues), marker = model "
                   "size. Bottom: colour = model size (greens), marker = data fraction. Log compute axis."
                   + left_out_line(bench, missing))
    presets, fractions = study.presets, study.fractions
    frac_colour, size_colour, size_marker, frac_marker = _run_styles(presets, fractions)
    axes = fig.subplots(2, len(metrics), squeeze=False,
                        gridspec_kw={"left": 0.06, "right": 0.83, "top": 0.855, "bottom": 0.08,
                                     "hspace": 0.3, "wspace": 0.25})
    for col, metric in enumerate(metrics):
        pts = study.eval_points(bench, metric)
        for row in range(2):
            ax = axes[row, col]
            ax.set_xscale("log")
            if pts.empty:
                ax.text(0.5, 0.5, f"no {metric} values\n(see summary page)", ha="center", va="center",
                        transform=ax.transAxes, color="0.4")
            elif row == 0:
                _run_curves(ax, pts, lambda r: frac_colour[r["fraction"]], lambda r: size_marker[r["preset"]])
            else:
                _run_curves(ax, pts, lambda r: size_colour[r["preset"]], lambda r: frac_marker[r["fraction"]])
            ax.set_title(f"{METRIC_LABEL[metric]} · by {'data fraction' if row == 0 else 'model size'}")
            ax.set_xlabel("training compute C (GFLOP)")
        axes[0, col].set_ylabel(METRIC_LABEL[metric]) if col == 0 else None
        axes[1, col].set_ylabel(METRIC_LABEL[metric]) if col == 0 else None
    _size_fraction_legends(fig, study, frac_colour, size_colour, size_marker, frac_marker,
                           titles=("data fraction / size", "model size / data"))
    return fig


def figures(study: Study, fits: dict) -> Iterable[tuple[str, Figure]]:
    if not study.nvs_benches:
        yield "02_scaling", message_page("Scaling across data and model size", NO_NVS)
    for bench in study.nvs_benches:
        yield f"02_scaling_{bench}", scaling_page(study, bench)


def page_count(n_nvs_benches: int, n_probe_benches: int, n_runs: int, holdout: bool) -> int:
    return max(1, n_nvs_benches)
