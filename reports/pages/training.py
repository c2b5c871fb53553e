"""Page 6: training curves (loss, PSNR, skipped steps) of every run, small multiples."""
from __future__ import annotations

import math
from typing import Iterable

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from reports.common import RUNS_PER_TRAINING_PAGE, Study, count_label, new_page, plain_log_ticks, run_label

def ordered_runs(study: Study) -> pd.DataFrame:
    """Runs sorted by sweep, model size, data fraction (the order of every per-run listing)."""
    return study.runs.sort_values(["sweep", "params", "fraction", "run_id"]).reset_index(drop=True)


def training_pages(study: Study) -> list[Figure]:
    """Loss (log, left axis), training PSNR (right axis) and skipped optimizer steps of every run."""
    runs = ordered_runs(study)
    log = study.train_log
    n_cols = len(study.fractions) if 1 < len(study.fractions) <= 4 else 4
    n_pages = max(1, math.ceil(len(runs) / RUNS_PER_TRAINING_PAGE))
    pages = []
    for page in range(n_pages):
        chunk = runs.iloc[page * RUNS_PER_TRAINING_PAGE:(page + 1) * RUNS_PER_TRAINING_PAGE]
        n_rows = max(1, math.ceil(len(chunk) / n_cols))
        suffix = f" ({page + 1}/{n_pages})" if n_pages > 1 else ""
        fig = new_page("Training curves" + suffix,
                       "Blue: training loss (log scale, left). Orange: training PSNR in dB (right). Red ticks: "
                       "skipped optimizer steps (count in the title). x: optimizer step.")
        axes = fig.subplots(n_rows, n_cols, squeeze=False,
                            gridspec_kw={"left": 0.06, "right": 0.94, "top": 0.87, "bottom": 0.07,
                                         "hspace": 0.55, "wspace": 0.45})
        for ax in axes.flat[len(chunk):]:
            ax.set_visible(False)
        for ax, (_, run) in zip(axes.flat, chunk.iterrows()):
            rows = log[log["run_id"] == run["run_id"]].sort_values("step") if len(log) else log
            _training_panel(ax, run, rows)
        pages.append(fig)
    return pages


def _training_panel(ax: plt.Axes, run: pd.Series, rows: pd.DataFrame) -> None:
    if rows.empty:
        ax.set_title(f"{run_label(run)} · {run['status']}", fontsize=9)
        ax.text(0.5, 0.5, "no training log", ha="center", va="center", transform=ax.transAxes, color="0.4")
        return
    step = rows["step"].to_numpy()
    skipped = rows["skipped"].fillna(0).to_numpy()
    n_skipped = int(skipped.sum())
    ax.set_title(f"{run_label(run)} · {run['status']} · {n_skipped} skipped", fontsize=9)
    smooth = max(1, len(rows) // 25)
    loss = rows["loss"].astype(float)
    ax.plot(step, loss, color="tab:blue", lw=0.6, alpha=0.35)
    ax.plot(step, loss.rolling(smooth, min_periods=1).mean(), color="tab:blue", lw=1.3)
    if (loss.dropna() > 0).all() and loss.notna().any():
        ax.set_yscale("log")
        plain_log_ticks(ax.yaxis)
    ax.tick_params(axis="y", colors="tab:blue", labelsize=7)
    ax.tick_params(axis="x", labelsize=7)
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: count_label(v) if v else "0"))
    twin = ax.twinx()
    twin.grid(False)
    psnr = rows["psnr"].astype(float)
    twin.plot(step, psnr.rolling(smooth, min_periods=1).mean(), color="tab:orange", lw=1.2)
    twin.tick_params(axis="y", colors="tab:orange", labelsize=7)
    if n_skipped:
        ax.plot(step[skipped > 0], np.zeros(int((skipped > 0).sum())), transform=ax.get_xaxis_transform(),
                marker="|", ms=7, ls="", color="tab:red", clip_on=False)


def figures(study: Study, fits: dict) -> Iterable[tuple[str, Figure]]:
    for i, fig in enumerate(training_pages(study)):
        yield f"06_training_{i + 1}", fig


def page_count(n_nvs_benches: int, n_probe_benches: int, n_runs: int, holdout: bool) -> int:
    return max(1, math.ceil(n_runs / RUNS_PER_TRAINING_PAGE))
