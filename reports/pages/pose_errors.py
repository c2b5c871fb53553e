"""Page 5: camera geometry vs compute (paper Figure 13), one page per probe or transfer benchmark."""
from __future__ import annotations

from typing import Iterable

from matplotlib.figure import Figure

from reports.common import (METRIC_LABEL, Study, _run_curves, _run_styles, _size_fraction_legends, camera_metrics,
                            camera_protocol, message_page, new_page, plain_log_ticks)

def camera_page(study: Study, bench: str) -> Figure:
    """Probe rotation/translation errors vs training compute, coloured by data fraction and by model size."""
    fig = new_page(f"Learned camera geometry vs compute · {bench} · {camera_protocol(bench)}",
                   f"Errors of the {camera_protocol(bench)} (lower is better) at every evaluated checkpoint. Left: "
                   "colour = data fraction (blues). Right: colour = model size (greens). Log-log axes.")
    metrics = camera_metrics(bench)
    presets, fractions = study.presets, study.fractions
    frac_colour, size_colour, size_marker, frac_marker = _run_styles(presets, fractions)
    axes = fig.subplots(len(metrics), 2, squeeze=False,
                        gridspec_kw={"left": 0.07, "right": 0.83, "top": 0.88, "bottom": 0.08,
                                     "hspace": 0.32, "wspace": 0.2})
    for row, metric in enumerate(metrics):
        pts = study.eval_points(bench, metric)
        for col in range(2):
            ax = axes[row, col]
            ax.set_xscale("log")
            if pts.empty:
                ax.text(0.5, 0.5, f"no {metric} values", ha="center", va="center", transform=ax.transAxes,
                        color="0.4")
            else:
                ax.set_yscale("log")
                plain_log_ticks(ax.yaxis)
                if col == 0:
                    _run_curves(ax, pts, lambda r: frac_colour[r["fraction"]], lambda r: size_marker[r["preset"]])
                else:
                    _run_curves(ax, pts, lambda r: size_colour[r["preset"]], lambda r: frac_marker[r["fraction"]])
            ax.set_title(f"{METRIC_LABEL[metric]} · by {'data fraction' if col == 0 else 'model size'}")
            ax.set_xlabel("training compute C (GFLOP)")
            ax.set_ylabel(METRIC_LABEL[metric])
    _size_fraction_legends(fig, study, frac_colour, size_colour, size_marker, frac_marker)
    return fig


def figures(study: Study, fits: dict) -> Iterable[tuple[str, Figure]]:
    if not study.probe_benches:
        yield "05_camera", message_page("Learned camera geometry vs compute", "No camera-probe benchmark "
                                        "(rot_err_deg / trans_err) has been evaluated yet.")
    for bench in study.probe_benches:
        yield f"05_camera_{bench}", camera_page(study, bench)


def page_count(n_nvs_benches: int, n_probe_benches: int, n_runs: int, holdout: bool) -> int:
    return max(1, n_probe_benches)
