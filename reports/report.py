"""The study report: a results store in, a multi-page PDF (plus one PDF/PNG per figure for papers) out.

Pages, in order (each is one matplotlib figure on an A4-landscape page):

1. summary: sweeps, runs by state, the preset x data-fraction grid (parameters, D videos), total compute and wall
   time, and what is missing (failed runs, metrics missing and why);
2. scaling across data and model size (paper Figure 10), one page per NVS benchmark;
3. compute-optimal frontier and fitted law L(C, D) (Figure 11), one page per NVS benchmark;
4. residuals of every fit, then a page with the fitted parameters and their bootstrap CIs;
5. camera geometry vs compute (Figure 13), one page per probe benchmark;
6. training curves (loss, PSNR, skipped steps) of every run, small multiples, 12 runs per page;
7. compute-optimal allocation for a few budgets.

Units: compute C is training compute in GFLOP (`checkpoints.compute_gflop`), D the number of training videos,
PSNR in dB for images on [-1, 1] (MSE = 4 * 10^(-PSNR/10)), SSIM and LPIPS unitless, rotation errors in degrees.
A section without data still gets its page, saying what is missing, so the page count only depends on the number of
benchmarks and runs (`expected_page_count`).
"""
from __future__ import annotations

import json
import math
import textwrap
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import matplotlib

matplotlib.use("Agg")  # headless; must precede pyplot

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.backends.backend_pdf import PdfPages  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from tqdm.auto import tqdm  # noqa: E402

from fitting import (DEFAULT_LAW, FitResult, FitWarning, fit_law, frontier, get_law,  # noqa: E402
                     inverse_transform, target_label)
from rayder_core.results import ResultsStore  # noqa: E402

# ------------------------------------------------------------------------------------------------------------------
# Constants: what the report plots and how
# ------------------------------------------------------------------------------------------------------------------
PAGE_SIZE = (11.69, 8.27)  # A4 landscape, inches
NVS_METRICS = ("psnr", "lpips", "ssim")  # evaluated names; fitted as MSE, LPIPS, 1-SSIM (lower is better)
PROBE_METRICS = ("rot_err_deg", "trans_err")
TRANSFER_METRICS = ("rot_err_deg", "trans_err_deg")  # XFactor pose transfer (bench '<probe set>-transfer')
METRIC_LABEL = {"psnr": "PSNR (dB) ↑", "lpips": "LPIPS ↓", "ssim": "SSIM ↑",
                "rot_err_deg": "rotation error (deg) ↓", "trans_err": "translation error ↓",
                "trans_err_deg": "translation direction error (deg) ↓"}


def camera_metrics(bench: str) -> tuple[str, str]:
    """The two continuous errors page 5 plots for a probe or transfer benchmark."""
    return TRANSFER_METRICS if bench.endswith("-transfer") else PROBE_METRICS


def camera_protocol(bench: str) -> str:
    """Human label of the protocol a camera benchmark name carries (see rayder_core.evaluate.PROBE_BENCH_SUFFIX)."""
    if bench.endswith("-transfer"):
        return "pose transfer (XFactor TPS)"
    if bench.endswith("-per-scene"):
        return "per-scene probe (Appendix B.2.3)"
    return "cross-scene probe"
FRACTION_CMAP, SIZE_CMAP = "Blues", "Greens"
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
RUNS_PER_TRAINING_PAGE = 12
DEFAULT_BOOTSTRAP = 200
PAGE_STYLE = {"font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9, "legend.fontsize": 8,
              "xtick.labelsize": 8, "ytick.labelsize": 8, "pdf.fonttype": 42, "ps.fonttype": 42,
              "axes.grid": True, "grid.alpha": 0.3, "grid.linewidth": 0.5}


HOLDOUT_SUFFIX = "-holdout"  # sweep name of a grid's held-out runs (sweeps.spec.SweepSpec.holdout_sweep)


def _fit_points(points: pd.DataFrame) -> pd.DataFrame:
    """The checkpoints the grid's frontiers and fits use, as `rayder-fit` selects them by default: held-out runs
    (validated on their own page) and warmup checkpoints (`fitting.select_checkpoints`) are left out."""
    if points.empty or "sweep" not in points:
        return points
    points = points[~points["sweep"].astype(str).str.endswith(HOLDOUT_SUFFIX)].reset_index(drop=True)
    if "lr_phase" in points and len(points):
        from fitting import select_checkpoints

        points = select_checkpoints(points, "all", drop_warmup=True)[0].reset_index(drop=True)
    return points


class ReportError(RuntimeError):
    """The report cannot be made from this store (missing file, no runs...); the message says what to do."""


# ------------------------------------------------------------------------------------------------------------------
# Loading the study
# ------------------------------------------------------------------------------------------------------------------
@dataclass
class Study:
    """Everything the report reads from a results store, as DataFrames (see rayder_core.results for columns)."""

    db_path: Path
    runs: pd.DataFrame
    checkpoints: pd.DataFrame
    evals: pd.DataFrame
    train_log: pd.DataFrame
    fits: pd.DataFrame
    points: dict[tuple[str, str], pd.DataFrame] = field(default_factory=dict)  # (bench, metric) -> eval_points
    holdouts: pd.DataFrame = field(default_factory=pd.DataFrame)  # stored held-out-run validations (kind holdout_run)

    @property
    def has_holdout_runs(self) -> bool:
        """Whether the store holds runs beyond a grid (sweep `<name>-holdout`): they are kept out of the frontiers
        and fits and shown on their own page against the law's prediction."""
        return bool(len(self.runs)) and bool(self.runs["sweep"].astype(str).str.endswith(HOLDOUT_SUFFIX).any())

    @property
    def benches(self) -> list[str]:
        return sorted(self.evals["bench"].unique()) if len(self.evals) else []

    def _benches_with(self, metrics: Iterable[str]) -> list[str]:
        if not len(self.evals):
            return []
        has = self.evals[self.evals["metric"].isin(list(metrics))]
        return sorted(has["bench"].unique())

    @property
    def nvs_benches(self) -> list[str]:
        """Benchmarks with novel-view metrics (PSNR/LPIPS/SSIM)."""
        return self._benches_with(NVS_METRICS)

    @property
    def probe_benches(self) -> list[str]:
        """Benchmarks with camera-probe or pose-transfer metrics (rotation/translation errors)."""
        return self._benches_with(PROBE_METRICS + TRANSFER_METRICS)

    def eval_points(self, bench: str, metric: str) -> pd.DataFrame:
        """`ResultsStore.eval_points` rows (compute_gflop, value, ...) of one benchmark and metric; may be empty."""
        return self.points.get((bench, metric), _EMPTY_POINTS)

    @property
    def presets(self) -> list[str]:
        """Presets ordered by parameter count."""
        if not len(self.runs):
            return []
        return list(self.runs.groupby("preset")["params"].max().sort_values().index)

    @property
    def fractions(self) -> list[float]:
        return sorted(self.runs["fraction"].unique()) if len(self.runs) else []


_EMPTY_POINTS = pd.DataFrame(columns=["run_id", "sweep", "preset", "params", "fraction", "D", "step", "samples",
                                      "compute_gflop", "value", "n"])


def load_study(db_path: str | Path) -> Study:
    """Read a results store. Raises ReportError if the file does not exist or holds no runs (never creates one)."""
    db_path = Path(db_path)
    if not db_path.is_file():
        raise ReportError(f"{db_path}: no results store here; pass --db with the store your sweep wrote "
                          "(default results.duckdb), e.g. after `rayder-sweep collect`")
    store = ResultsStore(db_path)
    runs = store.runs()
    if runs.empty:
        raise ReportError(f"{db_path}: the results store holds no runs yet; launch or collect a sweep "
                          "(`rayder-sweep`) before making a report")
    study = Study(db_path=db_path, runs=runs, checkpoints=store.checkpoints(), evals=store.evals(),
                  train_log=store.train_log(), fits=store.fits(), holdouts=store.extrapolations("holdout_run"))
    for bench in study.nvs_benches:
        for metric in NVS_METRICS:  # frontiers and fits of the grid: held-out runs are validated, not fitted
            study.points[(bench, metric)] = _fit_points(store.eval_points(bench, metric))
    for bench in study.probe_benches:
        for metric in camera_metrics(bench):
            study.points[(bench, metric)] = store.eval_points(bench, metric)
    return study


# ------------------------------------------------------------------------------------------------------------------
# Small helpers: labels, colours, number formats
# ------------------------------------------------------------------------------------------------------------------
def fraction_label(fraction: float) -> str:
    return f"{fraction * 100:g}%"


def count_label(n: float) -> str:
    """59000000 -> '59M', 2700000 -> '2.7M', 27000 -> '27k'."""
    for scale, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= scale:
            return f"{n / scale:.3g}{suffix}"
    return f"{n:.3g}"


def sci(x: float, digits: int = 2) -> str:
    """Compact scientific notation for plain text: 2.3e+11 -> '2.3e11'."""
    if x is None or not np.isfinite(x):
        return "n/a"
    mantissa, exponent = f"{x:.{digits - 1}e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def shades(cmap: str, n: int) -> list:
    """n distinguishable shades of one colour family, light to dark (never white)."""
    cm = plt.get_cmap(cmap)
    return [cm(0.4 + 0.55 * (i / max(n - 1, 1))) for i in range(n)]


def new_page(title: str, subtitle: str = "") -> Figure:
    fig = plt.figure(figsize=PAGE_SIZE)
    fig.suptitle(title, fontsize=15, fontweight="bold", x=0.03, ha="left", y=0.975)
    if subtitle:
        fig.text(0.03, 0.94, "\n".join(textwrap.wrap(subtitle, 165)), fontsize=9, color="0.3", ha="left",
                 va="top")
    return fig


def message_page(title: str, message: str) -> Figure:
    """A page whose section has no data: says what is missing and how to get it."""
    fig = new_page(title)
    fig.text(0.5, 0.55, "\n".join(textwrap.wrap(message, 100)), ha="center", va="center", fontsize=12,
             color="0.25", bbox={"boxstyle": "round,pad=1", "fc": "0.96", "ec": "0.8"})
    return fig


def table_on(ax: plt.Axes, cells: list[list[str]], columns: list[str], *, font_size: float = 8,
             col_widths: list[float] | None = None, row_scale: float = 1.25) -> None:
    """Draw a plain table filling `ax` (header row shaded)."""
    ax.axis("off")
    if not cells:
        ax.text(0.0, 0.9, "(none)", fontsize=font_size, transform=ax.transAxes, va="top")
        return
    table = ax.table(cellText=cells, colLabels=columns, loc="upper left", cellLoc="left", colLoc="left",
                     colWidths=col_widths)
    table.auto_set_font_size(False)
    table.set_fontsize(font_size)
    for (row, _), cell in table.get_celld().items():
        cell.set_edgecolor("0.8")
        cell.set_linewidth(0.5)
        if row == 0:
            cell.set_facecolor("0.92")
            cell.set_text_props(fontweight="bold")
    table.scale(1.0, row_scale)
    for (row, _), cell in table.get_celld().items():
        if row == 0:
            cell.set_height(cell.get_height() / row_scale * 1.4)


def plain_log_ticks(axis: matplotlib.axis.Axis) -> None:
    """Label a log axis with plain numbers (0.2, 0.3, 3, 6) instead of 2x10^-1, also at minor ticks."""
    fmt = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:.2g}")
    axis.set_major_formatter(fmt)
    axis.set_minor_formatter(matplotlib.ticker.FuncFormatter(
        lambda v, _: f"{v:.2g}" if f"{v:.2g}"[0] in "2346" else ""))


def run_label(run: pd.Series) -> str:
    return f"{run['preset']} · {fraction_label(run['fraction'])}"


# ------------------------------------------------------------------------------------------------------------------
# Page 1: summary
# ------------------------------------------------------------------------------------------------------------------
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
    import textwrap

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


# ------------------------------------------------------------------------------------------------------------------
# Page 2: scaling across data and model size (paper Figure 10)
# ------------------------------------------------------------------------------------------------------------------
def _run_styles(presets: list, fractions: list) -> tuple[dict, dict, dict, dict]:
    """Colours (data fraction: blues, model size: greens) and markers shared by the per-run pages."""
    frac_colour = dict(zip(fractions, shades(FRACTION_CMAP, len(fractions))))
    size_colour = dict(zip(presets, shades(SIZE_CMAP, len(presets))))
    size_marker = {p: MARKERS[i % len(MARKERS)] for i, p in enumerate(presets)}
    frac_marker = {f: MARKERS[i % len(MARKERS)] for i, f in enumerate(fractions)}
    return frac_colour, size_colour, size_marker, frac_marker


def _run_curves(ax: plt.Axes, pts: pd.DataFrame, color_of: Callable[[pd.Series], Any],
                marker_of: Callable[[pd.Series], str]) -> None:
    for _, grp in pts.sort_values(["params", "fraction", "step"]).groupby("run_id", sort=False):
        first = grp.iloc[0]
        ax.plot(grp["compute_gflop"], grp["value"], color=color_of(first), marker=marker_of(first), ms=3.5,
                lw=1.4, alpha=0.95)


def scaling_page(study: Study, bench: str) -> Figure:
    """Metric vs training compute for every run, coloured by data fraction (top) and by model size (bottom)."""
    fig = new_page(f"Scaling across data and model size · {bench}",
                   "Each line is one run (its checkpoints). Top: colour = data fraction (blues), marker = model "
                   "size. Bottom: colour = model size (greens), marker = data fraction. Log compute axis.")
    presets, fractions = study.presets, study.fractions
    frac_colour, size_colour, size_marker, frac_marker = _run_styles(presets, fractions)
    axes = fig.subplots(2, len(NVS_METRICS), squeeze=False,
                        gridspec_kw={"left": 0.06, "right": 0.83, "top": 0.88, "bottom": 0.08,
                                     "hspace": 0.3, "wspace": 0.25})
    for col, metric in enumerate(NVS_METRICS):
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


# ------------------------------------------------------------------------------------------------------------------
# Page 5: camera geometry vs compute (paper Figure 13)
# ------------------------------------------------------------------------------------------------------------------
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


def _size_fraction_legends(fig: Figure, study: Study, frac_colour: dict, size_colour: dict, size_marker: dict,
                           frac_marker: dict, titles: tuple[str, str] = ("by data fraction", "by model size")
                           ) -> None:
    params = study.runs.groupby("preset")["params"].max()
    d_of = study.runs.groupby("fraction")["D"].max()
    frac_handles = [Line2D([], [], color=frac_colour[f], lw=2,
                           label=f"{fraction_label(f)} (D={count_label(d_of[f])})") for f in frac_colour]
    frac_handles += [Line2D([], [], color="0.4", marker=size_marker[p], ls="", label=p) for p in size_marker]
    size_handles = [Line2D([], [], color=size_colour[p], lw=2, label=f"{p} ({count_label(params[p])})")
                    for p in size_colour]
    size_handles += [Line2D([], [], color="0.4", marker=frac_marker[f], ls="", label=fraction_label(f))
                     for f in frac_marker]
    fig.legend(handles=frac_handles, loc="upper left", bbox_to_anchor=(0.845, 0.88), title=titles[0],
               frameon=False)
    fig.legend(handles=size_handles, loc="upper left", bbox_to_anchor=(0.845, 0.45), title=titles[1],
               frameon=False)


# ------------------------------------------------------------------------------------------------------------------
# Page 6: training curves, small multiples
# ------------------------------------------------------------------------------------------------------------------
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


# ------------------------------------------------------------------------------------------------------------------
# Fits: stored when present, else fitted now
# ------------------------------------------------------------------------------------------------------------------
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


def _stored_fit_row(study: Study, bench: str, metric: str, law: str) -> pd.Series | None:
    fits = study.fits
    if fits.empty:
        return None
    sel = fits[(fits["bench"] == bench) & (fits["law"] == law)
               & fits["metric"].isin([metric, target_label(metric)])]
    return None if sel.empty else sel.sort_values("created").iloc[-1]


def fit_metric(study: Study, bench: str, metric: str, *, bootstrap: int = DEFAULT_BOOTSTRAP, seed: int = 0,
               min_step: int = 0, use_stored: bool = True) -> MetricFit:
    """Frontier and law of one benchmark/metric: the newest stored fit if any (its bootstrap band is refitted
    now), else a fit made now with `bootstrap` resamples. Too few points gives a MetricFit with `problem` set."""
    pts = study.eval_points(bench, metric)
    empty = MetricFit(bench, metric, frontier=pd.DataFrame(columns=["C", "D", "y", "on_frontier_d"]))
    if pts.empty:
        empty.problem = f"no {metric} values on {bench}"
        return empty
    try:
        front = frontier(pts, metric, min_step=min_step)
    except ValueError as exc:
        empty.problem = str(exc).splitlines()[0]
        return empty
    result = MetricFit(bench, metric, frontier=front)
    n_front = int(front["on_frontier_d"].sum())
    n_params = len(get_law(DEFAULT_LAW).param_names)
    if n_front <= n_params or front["D"].nunique() < 2:
        result.problem = (f"too few points to fit L(C,D): {n_front} frontier point(s) over "
                          f"{front['D'].nunique()} data size(s); the law has {n_params} parameters, so it needs "
                          f"more than {n_params} points and at least 2 values of D")
        return result
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", FitWarning)
            fresh = fit_law(front, law=DEFAULT_LAW, x=["C", "D"], y="y", bootstrap=bootstrap, seed=seed,
                            metric=metric, bench=bench, progress=False)
    except (ValueError, RuntimeError) as exc:
        result.problem = f"the fit failed: {exc}"
        return result
    result.notes += [str(w.message) for w in caught]
    result.band_fit = fresh
    stored = _stored_fit_row(study, bench, metric, DEFAULT_LAW) if use_stored else None
    if stored is not None:
        result.params, result.ci_low, result.ci_high = (json.loads(stored[k]) for k in ("params", "ci_low",
                                                                                      "ci_high"))
        result.holdout = json.loads(stored["holdout"]) if stored["holdout"] else {}
        result.r2, result.r2_log = float(stored["r2"]), float(stored["r2_log"])
        result.n_points, result.formula = int(stored["n_points"]), str(stored["formula"])
        result.source = f"stored fit of {stored['created']:%Y-%m-%d %H:%M}; band: {bootstrap} resamples now"
        if stored["data_hash"] != fresh.data_hash:
            result.notes.append(f"the stored fit used other data ({result.n_points} points) than the store "
                                f"holds now ({fresh.n_points} frontier points): re-run rayder-fit")
    else:
        result.params, result.ci_low, result.ci_high = fresh.params, fresh.ci_low, fresh.ci_high
        result.holdout, result.r2, result.r2_log = fresh.holdout, fresh.r2, fresh.r2_log
        result.n_points, result.formula = fresh.n_points, fresh.formula()
        result.source = f"fitted now (no stored fit), {bootstrap} bootstrap resamples"
    return result


def fit_all(study: Study, *, bootstrap: int = DEFAULT_BOOTSTRAP, seed: int = 0, min_step: int = 0,
            use_stored: bool = True) -> dict[tuple[str, str], MetricFit]:
    """MetricFit for every NVS benchmark x metric (with a progress bar)."""
    keys = [(b, m) for b in study.nvs_benches for m in NVS_METRICS]
    return {k: fit_metric(study, *k, bootstrap=bootstrap, seed=seed, min_step=min_step, use_stored=use_stored)
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


# ------------------------------------------------------------------------------------------------------------------
# Page 3: compute-optimal frontier and fitted law (paper Figure 11)
# ------------------------------------------------------------------------------------------------------------------
def _compute_grid(front: pd.DataFrame, extend: float = 10.0) -> tuple[np.ndarray, float]:
    c_min, c_max = float(front["C"].min()), float(front["C"].max())
    return np.logspace(math.log10(c_min), math.log10(c_max * extend), 200), c_max


def frontier_page(study: Study, bench: str, fits: dict[tuple[str, str], MetricFit]) -> Figure:
    """Frontier points per D, fitted L(C, D) curves with their 95% bootstrap band, the equation and hold-out errors."""
    fig = new_page(f"Compute-optimal frontier and fitted law · {bench}",
                   "Grey: every evaluated checkpoint. Filled: compute-optimal frontier per data size D (lowest error "
                   "so far at that D). Lines: fitted L(C,D) = L_inf + (A C^-alpha + B D^-beta)^gamma, dashed beyond "
                   "the data; shaded: 95% bootstrap band.")
    axes = fig.subplots(2, 2, gridspec_kw={"left": 0.07, "right": 0.97, "top": 0.87, "bottom": 0.07,
                                           "hspace": 0.35, "wspace": 0.18}).flat
    d_values = sorted(study.runs["D"].unique())
    d_colour = dict(zip(d_values, shades(FRACTION_CMAP, len(d_values))))
    for ax, metric in zip(axes, NVS_METRICS):
        _frontier_panel(ax, fits[(bench, metric)], d_colour)
    info = axes[3]
    info.axis("off")
    handles = [Line2D([], [], color=d_colour[d], marker="o", lw=2, label=f"D = {count_label(d)} videos")
               for d in d_values]
    handles.append(Line2D([], [], color="0.6", marker=".", ls="", label="all checkpoints"))
    info.legend(handles=handles, loc="upper left", frameon=False, title="data size")
    lines = ["Held-out extrapolation error (mean |relative error| of refits without the held-out points):"]
    for metric in NVS_METRICS:
        fit = fits[(bench, metric)]
        lines.append(f"  {fit.target}: " + (format_holdout(fit.holdout) if fit.ok else "no fit"))
    lines.append("")
    for metric in NVS_METRICS:
        fit = fits[(bench, metric)]
        lines.append(f"{fit.target}: {fit.source if fit.ok else fit.problem}")
        lines += [f"    note: {n}" for n in fit.notes[:2]]
    wrapped = []
    for line in lines:
        wrapped += textwrap.wrap(line, 85, subsequent_indent="      ") or [""]
    info.text(0.0, 0.55, "\n".join(wrapped), fontsize=7.5, va="top", transform=info.transAxes, linespacing=1.4)
    return fig


def _frontier_panel(ax: plt.Axes, fit: MetricFit, d_colour: dict) -> None:
    metric = fit.metric
    ax.set_xscale("log")
    ax.set_xlabel("training compute C (GFLOP)")
    ax.set_ylabel(METRIC_LABEL[metric])
    ax.set_title(f"{METRIC_LABEL[metric]} (fitted as {fit.target})")
    front = fit.frontier
    if front.empty:
        ax.text(0.5, 0.5, fit.problem or "no data", ha="center", va="center", transform=ax.transAxes, color="0.4",
                wrap=True)
        return
    ax.scatter(front["C"], front["value"], s=8, color="0.75", zorder=1)
    lo_v, hi_v = float(front["value"].min()), float(front["value"].max())
    pad = 0.08 * (hi_v - lo_v or abs(hi_v) or 1.0)
    for d, grp in front[front["on_frontier_d"]].groupby("D"):
        colour = d_colour.get(d, "0.3")
        ax.plot(grp["C"], grp["value"], "o", color=colour, ms=5, mec="k", mew=0.4, zorder=3)
        if not fit.ok:
            continue
        grid, c_max = _compute_grid(front)
        y_hat = inverse_transform(fit.predict(grid, d), metric)
        inside = grid <= c_max
        ax.plot(grid[inside], y_hat[inside], "-", color=colour, lw=1.6, zorder=2)
        ax.plot(grid[~inside], y_hat[~inside], "--", color=colour, lw=1.2, zorder=2)
        band = fit.band(grid, d)
        if band is not None:
            lo, hi = (inverse_transform(b, metric) for b in band)
            ax.fill_between(grid, np.minimum(lo, hi), np.maximum(lo, hi), color=colour, alpha=0.18, lw=0,
                            zorder=0)
    # Room for the equation: below the saturating curves of increasing metrics, above those of LPIPS.
    increasing = metric in ("psnr", "ssim")
    ax.set_ylim(lo_v - pad * (4 if increasing else 1), hi_v + pad * (1 if increasing else 4))
    if fit.ok:
        text = f"{fit.formula}\nR^2 (log) = {fit.r2_log:.3f} · {fit.n_points} frontier points"
        ax.text(0.98, 0.03 if increasing else 0.97, text, transform=ax.transAxes, fontsize=7.5,
                va="bottom" if increasing else "top", ha="right", zorder=5,
                bbox={"boxstyle": "round,pad=0.3", "fc": "white", "ec": "0.7", "alpha": 0.9})
    else:
        ax.text(0.5, 0.5, "\n".join(textwrap.wrap(fit.problem, 50)), ha="center", va="center",
                transform=ax.transAxes, fontsize=8, color="tab:red",
                bbox={"boxstyle": "round", "fc": "white", "ec": "tab:red"})


# ------------------------------------------------------------------------------------------------------------------
# Page 4: residuals and the table of fitted parameters
# ------------------------------------------------------------------------------------------------------------------
def residuals_page(study: Study, fits: dict[tuple[str, str], MetricFit]) -> Figure:
    """Relative residual (observed / predicted - 1, in %) of every frontier point, per benchmark and metric."""
    benches = study.nvs_benches
    if not benches:
        return message_page("Residuals of the fitted laws", "No NVS benchmark (PSNR/LPIPS/SSIM) has been "
                            "evaluated yet, so there is nothing to fit. Run `rayder-eval` on the checkpoints.")
    fig = new_page("Residuals of the fitted laws",
                   "Observed / predicted - 1 (in %) of each frontier point, in the fitted target (MSE, LPIPS, "
                   "1-SSIM); colour = data size D. A good fit scatters evenly around 0.")
    axes = fig.subplots(len(benches), len(NVS_METRICS), squeeze=False,
                        gridspec_kw={"left": 0.07, "right": 0.97, "top": 0.87, "bottom": 0.08,
                                     "hspace": 0.45, "wspace": 0.22})
    d_values = sorted(study.runs["D"].unique())
    d_colour = dict(zip(d_values, shades(FRACTION_CMAP, len(d_values))))
    for row, bench in enumerate(benches):
        for col, metric in enumerate(NVS_METRICS):
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
            if row == 0 and col == len(NVS_METRICS) - 1:
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


# ------------------------------------------------------------------------------------------------------------------
# Page 7: compute-optimal allocation
# ------------------------------------------------------------------------------------------------------------------
def allocation_budgets(study: Study) -> np.ndarray:
    """Four compute budgets (GFLOP): powers of ten from one decade below the largest run to 100x beyond it."""
    c_max = float(study.checkpoints["compute_gflop"].max())
    k = math.floor(math.log10(c_max))
    return 10.0 ** np.arange(k - 1, k + 3)


def flops_per_sample(study: Study) -> pd.Series:
    """Training FLOPs per sample of each preset (median over its checkpoints of flops / samples)."""
    ck = study.checkpoints[study.checkpoints["samples"] > 0].merge(study.runs[["run_id", "preset"]], on="run_id")
    return (ck["flops"] / ck["samples"]).groupby(ck["preset"]).median()


def allocation_table(study: Study, fit: MetricFit, budgets: np.ndarray) -> tuple[list[str], list[list[str]]]:
    """Rows per budget: predicted metric at every data size D, the best D, the model size and how much data.

    The law L(C, D) has no model-size term, so the size comes from the data: the preset of the frontier point (at
    the best D) with the largest compute <= the budget, i.e. the size that is compute-optimal there. Beyond the
    largest trained compute it is the last frontier size (marked *: extrapolated). Samples = budget / (training
    FLOPs per sample of that preset); epochs = samples / D.
    """
    d_values = sorted(study.runs["D"].unique())
    fps = flops_per_sample(study)
    columns = ["budget C (GFLOP)"] + [f"{METRIC_LABEL[fit.metric].split(' ')[0]} @ D={count_label(d)}"
                                      for d in d_values] + ["best D", "model size", "samples (epochs)"]
    rows = []
    front = fit.frontier_points
    for budget in budgets:
        preds = inverse_transform(fit.predict(np.full(len(d_values), budget), np.asarray(d_values, float)),
                                  fit.metric)
        best = int(np.nanargmax(preds) if fit.metric in ("psnr", "ssim") else np.nanargmin(preds))
        d_best = d_values[best]
        at_d = front[front["D"] == d_best].sort_values("C")
        below = at_d[at_d["C"] <= budget]
        leader = (below.iloc[-1] if len(below) else at_d.iloc[0]) if len(at_d) else None
        extrapolated = bool(len(at_d)) and budget > float(at_d["C"].max())
        fmt = "{:.2f}" if fit.metric == "psnr" else "{:.3f}"
        row = [sci(budget, 1) + ("*" if extrapolated else "")]
        row += [fmt.format(p) + (" ←" if i == best else "") for i, p in enumerate(preds)]
        row.append(count_label(d_best))
        if leader is None:
            row += ["n/a", "n/a"]
        else:
            preset = leader["preset"]
            samples = budget * 1e9 / float(fps[preset]) if preset in fps else float("nan")
            row += [f"{preset}{'*' if extrapolated else ''}",
                    f"{count_label(samples)} ({samples / d_best:.3g} ep)" if np.isfinite(samples) else "n/a"]
        rows.append(row)
    return columns, rows


def allocation_page(study: Study, bench: str, fits: dict[tuple[str, str], MetricFit]) -> Figure:
    usable = [fits[(bench, m)] for m in NVS_METRICS if fits[(bench, m)].ok]
    if not usable or study.checkpoints.empty:
        return message_page(f"Compute-optimal allocation · {bench}",
                            "No fitted law, so no allocation can be predicted (see the fitted-parameters page for "
                            "why). Evaluate more checkpoints of at least two data fractions.")
    budgets = allocation_budgets(study)
    fig = new_page(f"Compute-optimal allocation · {bench}",
                   "Predicted metric for a training budget C at each data size D, from the fitted L(C,D) (arrow: "
                   "best D). Model size: the preset on the compute-optimal frontier at that budget and D. "
                   "* = beyond the largest trained compute (extrapolated).")
    height = 0.8 / len(usable)
    for i, fit in enumerate(usable):
        columns, rows = allocation_table(study, fit, budgets)
        top = 0.88 - i * height
        ax = fig.add_axes((0.03, top - height + 0.04, 0.94, height - 0.05))
        n_d = len(columns) - 4
        table_on(ax, rows, columns, font_size=8.5,
                 col_widths=[0.13] + [0.5 / max(n_d, 1)] * n_d + [0.09, 0.1, 0.18])
        ax.set_title(f"{METRIC_LABEL[fit.metric]} · law: {fit.formula}", loc="left", fontsize=9)
    fig.text(0.03, 0.03, "Method: grid search over the store's data sizes D with the fitted law; the law has no "
             "model-size term, so the model size is read off the measured frontier (the fitting package's "
             "optimal_allocation applies to N-D laws, not to L(C,D)). Training FLOPs per sample per preset are "
             "measured from the store (flops / samples).", fontsize=7.5, color="0.3", wrap=True)
    return fig


# ------------------------------------------------------------------------------------------------------------------
# The whole report
# ------------------------------------------------------------------------------------------------------------------
@dataclass
class ReportResult:
    """What `build_report` wrote."""

    pdf: Path
    pages: list[str]  # page names in order (also the stems of the per-figure files)
    figure_files: list[Path]
    fits: dict[tuple[str, str], MetricFit]
    elapsed_s: float


def expected_page_count(n_nvs_benches: int, n_probe_benches: int, n_runs: int, holdout: bool = False) -> int:
    """Pages of a report: summary, 2 per NVS benchmark + allocation per NVS benchmark (at least one page each),
    residuals, parameters, camera per probe benchmark (at least one), training curves (12 runs a page), and the
    held-out validation page when the store has held-out runs."""
    per_nvs = max(1, n_nvs_benches)
    return (1 + 3 * per_nvs + 2 + max(1, n_probe_benches)
            + max(1, math.ceil(n_runs / RUNS_PER_TRAINING_PAGE)) + int(holdout))


def report_figures(study: Study, fits: dict[tuple[str, str], MetricFit]) -> Iterable[tuple[str, Figure]]:
    """(name, figure) of every page, in order; figures are created lazily so only one is open at a time."""
    yield "01_summary", summary_page(study)
    nvs = study.nvs_benches
    no_nvs = ("No NVS benchmark (PSNR/LPIPS/SSIM) has been evaluated yet. Evaluate checkpoints with `rayder-eval` "
              "(or `rayder-sweep collect`) and re-run the report.")
    if not nvs:
        yield "02_scaling", message_page("Scaling across data and model size", no_nvs)
        yield "03_frontier", message_page("Compute-optimal frontier and fitted law", no_nvs)
    for bench in nvs:
        yield f"02_scaling_{bench}", scaling_page(study, bench)
    for bench in nvs:
        yield f"03_frontier_{bench}", frontier_page(study, bench, fits)
    yield "04_residuals", residuals_page(study, fits)
    yield "04_parameters", parameters_page(study, fits)
    probes = study.probe_benches
    if not probes:
        yield "05_camera", message_page("Learned camera geometry vs compute", "No camera-probe benchmark "
                                        "(rot_err_deg / trans_err) has been evaluated yet.")
    for bench in probes:
        yield f"05_camera_{bench}", camera_page(study, bench)
    for i, fig in enumerate(training_pages(study)):
        yield f"06_training_{i + 1}", fig
    if not nvs:
        yield "07_allocation", message_page("Compute-optimal allocation", no_nvs)
    for bench in nvs:
        yield f"07_allocation_{bench}", allocation_page(study, bench, fits)
    if study.has_holdout_runs:
        yield "08_holdout", holdout_page(study)


# ------------------------------------------------------------------------------------------------------------------
# Page 8: held-out runs against the law fitted on the grid alone
# ------------------------------------------------------------------------------------------------------------------
def holdout_page(study: Study) -> Figure:
    """Measured target (e.g. MSE) of every evaluated checkpoint of each held-out run vs its compute, with the
    law's prediction, its bootstrap band and the Student-t lack-of-fit interval (stored by the demo /
    `fitting.holdout_run`)."""
    title = "Held-out run vs the law fitted on the grid alone"
    if study.holdouts.empty:
        return message_page(title, "The store has held-out runs but no validation of them yet: run "
                            "`python -m sweeps.demo` (it fits the grid, then predicts the held-out runs).")
    latest = study.holdouts[study.holdouts["created"] == study.holdouts["created"].max()]
    fig = new_page(title, f"law {latest['law'].iloc[0]} on {latest['bench'].iloc[0]} ({latest['metric'].iloc[0]} "
                   f"fitted as {latest['y_col'].iloc[0]}); fitted on C <= {sci(float(latest['train_max'].iloc[0]))}"
                   " GFLOP; 95% intervals")
    ax = fig.add_axes([0.08, 0.12, 0.6, 0.72])
    lines = []
    for i, (_, rec) in enumerate(latest.iterrows()):
        d = json.loads(rec["detail"])
        order = np.argsort(d["C"])
        C = np.asarray(d["C"], dtype=float)[order]
        get = lambda k: np.asarray(d[k], dtype=float)[order]  # noqa: E731
        colour = f"C{i}"
        ax.fill_between(C, get("lo"), get("hi"), color=colour, alpha=0.12, label="lack-of-fit interval (t)")
        if np.isfinite(get("band_lo")).any():
            ax.fill_between(C, get("band_lo"), get("band_hi"), color=colour, alpha=0.3, label="bootstrap band")
        ax.plot(C, get("predicted"), "-", color=colour, label="law prediction")
        ax.plot(C, get("measured"), "o", color=colour, label="measured checkpoints")
        ax.axvline(float(rec["train_max"]), color="grey", ls=":", lw=1)
        rel = get("predicted")[-1] / get("measured")[-1] - 1
        lines.append(f"{d['run_id'][-1] if isinstance(d.get('run_id'), list) else rec['sweep']}:\n"
                     f"  final step: measured {get('measured')[-1]:.4g},\n  predicted {get('predicted')[-1]:.4g} "
                     f"({rel:+.1%})\n  inside the interval: {'yes' if rec['coverage'] >= 1 else 'no'}\n"
                     f"  max |error| {float(rec['max_abs_rel_err']):.1%}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("training compute C (GFLOP)")
    ax.set_ylabel(str(latest["y_col"].iloc[0]))
    handles, labels = ax.get_legend_handles_labels()
    uniq = dict(zip(labels, handles))
    ax.legend(uniq.values(), uniq.keys(), loc="upper right")
    ax.text(1.04, 0.98, "\n\n".join(lines) + "\n\n(dotted: largest C of the grid's frontier)",
            transform=ax.transAxes, va="top", fontsize=8, family="monospace")
    return fig


def build_report(db_path: str | Path, out_pdf: str | Path, *, figures_dir: str | Path | None = None,
                 figure_formats: tuple[str, ...] = ("pdf", "png"), bootstrap: int = DEFAULT_BOOTSTRAP,
                 seed: int = 0, min_step: int = 0, use_stored_fits: bool = True, dpi: int = 150) -> ReportResult:
    """Render the study report of the store at `db_path` into `out_pdf`, and each page into `figures_dir`
    (default: `<out_pdf stem>_figures/` next to it; None-like empty tuple `figure_formats` writes none).

    Raises ReportError when the store is missing or has no runs. Partial stores render with pages that say what
    is missing. `bootstrap` resamples are used for fits made now; `min_step` drops earlier checkpoints from fits.
    """
    t0 = time.perf_counter()
    study = load_study(db_path)
    out_pdf = Path(out_pdf)
    out_pdf.parent.mkdir(parents=True, exist_ok=True)
    figures_dir = Path(figures_dir) if figures_dir else out_pdf.with_name(out_pdf.stem + "_figures")
    if figure_formats:
        figures_dir.mkdir(parents=True, exist_ok=True)
    fits = fit_all(study, bootstrap=bootstrap, seed=seed, min_step=min_step, use_stored=use_stored_fits)
    pages, files = [], []
    tmp_pdf = out_pdf.with_name(out_pdf.name + ".partial")
    with plt.rc_context(PAGE_STYLE), PdfPages(tmp_pdf, metadata={"Title": f"RayDer study report: {db_path}",
                                                                 "Creator": "rayder-report"}) as pdf:
        n_pages = expected_page_count(len(study.nvs_benches), len(study.probe_benches), len(study.runs),
                                      study.has_holdout_runs)
        for name, fig in tqdm(report_figures(study, fits), total=n_pages, desc="rendering pages", leave=False):
            number = fig.text(0.97, 0.015, f"{len(pages) + 1}", ha="right", fontsize=8, color="0.5")
            pdf.savefig(fig)
            number.remove()  # page numbers belong to the report, not to the per-figure files
            for ext in figure_formats:
                path = figures_dir / f"{name}.{ext}"
                fig.savefig(path, dpi=dpi)
                files.append(path)
            plt.close(fig)
            pages.append(name)
    tmp_pdf.replace(out_pdf)  # a crash mid-way never leaves a truncated report under the final name
    return ReportResult(pdf=out_pdf, pages=pages, figure_files=files, fits=fits, elapsed_s=time.perf_counter() - t0)
