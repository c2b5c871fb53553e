"""Shared by every report page: constants, the `Study` read from a results store, labels, page and table helpers,
and the per-run colour/marker styles.

Units: compute C is training compute in GFLOP (`checkpoints.compute_gflop`), D the number of training videos,
PSNR in dB for images on [-1, 1] (MSE = 4 * 10^(-PSNR/10)), SSIM and LPIPS unitless, rotation errors in degrees.
"""
from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import matplotlib

matplotlib.use("Agg")  # headless; must precede pyplot

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from fitting import select_checkpoints
from fitting.holdout_runs import HOLDOUT_SUFFIX
from fitting.study import filter_rows
from rayder_core.store import ResultsStore  # noqa: E402

# ------------------------------------------------------------------------------------------------------------------
# Constants: what the report plots and how
# ------------------------------------------------------------------------------------------------------------------
PAGE_SIZE = (11.69, 8.27)  # A4 landscape, inches
FITTED_NVS_METRICS = ("psnr", "lpips", "ssim")  # evaluated names; fitted as MSE, LPIPS, 1-SSIM (lower is better)
PROBE_METRICS = ("rot_err_deg", "trans_err")
TRANSFER_METRICS = ("rot_err_deg", "trans_err_deg")  # XFactor pose transfer (bench '<probe set>-transfer')
METRIC_LABEL = {"psnr": "PSNR (dB) ↑", "lpips": "LPIPS ↓", "ssim": "SSIM ↑",
                "rot_err_deg": "rotation error (deg) ↓", "trans_err": "translation error ↓",
                "trans_err_deg": "translation direction error (deg) ↓"}


def camera_metrics(bench: str) -> tuple[str, str]:
    """The two continuous errors page 5 plots for a probe or transfer benchmark."""
    return TRANSFER_METRICS if bench.endswith("-transfer") else PROBE_METRICS


def camera_protocol(bench: str) -> str:
    """Human label of the protocol a camera benchmark name carries (see rayder_core.evaluation.probe_protocols.PROBE_BENCH_SUFFIX)."""
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




def _fit_points(points: pd.DataFrame) -> pd.DataFrame:
    """The checkpoints the grid's frontiers and fits use, as `rayder-fit` selects them by default: held-out runs
    (validated on their own page) and warmup checkpoints (`fitting.select_checkpoints`) are left out."""
    if points.empty or "sweep" not in points:
        return points
    points = points[~points["sweep"].astype(str).str.endswith(HOLDOUT_SUFFIX)].reset_index(drop=True)
    if "lr_phase" in points and len(points):
        points = select_checkpoints(points, "all", drop_warmup=True)[0].reset_index(drop=True)
    return points


class ReportError(RuntimeError):
    """The report cannot be made from this store (missing file, no runs...); the message says what to do."""


# ------------------------------------------------------------------------------------------------------------------
# Loading the study
# ------------------------------------------------------------------------------------------------------------------
@dataclass
class Study:
    """Everything the report reads from a results store, as DataFrames (see rayder_core.store for columns)."""

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
        return self._benches_with(FITTED_NVS_METRICS)

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


def load_study(db_path: str | Path, where: str | None = None) -> Study:
    """Read a results store. Raises ReportError if the file does not exist or holds no runs (never creates one).

    `where` (a pandas query on the runs table, as `rayder-report --where`, e.g. "preset != 'tiny-w16'") keeps only
    the runs it selects, with their checkpoints, evaluations and training logs; ReportError when it fails or keeps
    none."""
    db_path = Path(db_path)
    if not db_path.is_file():
        raise ReportError(f"{db_path}: no results store here; pass --db with the store your sweep wrote "
                          "(default results.duckdb), e.g. after `rayder-sweep collect`")
    store = ResultsStore(db_path)
    runs = store.runs()
    if runs.empty:
        raise ReportError(f"{db_path}: the results store holds no runs yet; launch or collect a sweep "
                          "(`rayder-sweep`) before making a report")
    if where:
        try:
            runs = filter_rows(runs, where).reset_index(drop=True)
        except ValueError as exc:
            raise ReportError(f"{db_path}: {exc}") from None
    keep = set(runs["run_id"])

    def of_runs(rows: pd.DataFrame) -> pd.DataFrame:
        if not where or "run_id" not in rows:
            return rows
        return rows[rows["run_id"].isin(keep)].reset_index(drop=True)

    study = Study(db_path=db_path, runs=runs, checkpoints=of_runs(store.checkpoints()), evals=of_runs(store.evals()),
                  train_log=of_runs(store.train_log()), fits=store.fits(),
                  holdouts=store.extrapolations("holdout_run"))
    for bench in study.nvs_benches:
        for metric in FITTED_NVS_METRICS:  # frontiers and fits of the grid: held-out runs are validated, not fitted
            study.points[(bench, metric)] = _fit_points(of_runs(store.eval_points(bench, metric)))
    for bench in study.probe_benches:
        for metric in camera_metrics(bench):
            study.points[(bench, metric)] = of_runs(store.eval_points(bench, metric))
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


def tidy_log_axes(fig: Figure) -> None:
    """Readable ticks on every log axis of `fig` that still has matplotlib's default formatter: labels at decades
    (10^k) when the axis spans two decades or more, else at 1-2-5 (or 1-1.5-2-3-5-7) x 10^k as plain numbers; minor
    ticks are never labelled (they overlapped: '2x10^2 3x10^2 4x10^2 ...')."""
    for ax in fig.axes:
        for axis, scale in ((ax.xaxis, ax.get_xscale()), (ax.yaxis, ax.get_yscale())):
            if scale != "log" or not isinstance(axis.get_major_formatter(), matplotlib.ticker.LogFormatter):
                continue
            lo, hi = sorted(axis.get_view_interval())
            if not (lo > 0 and np.isfinite(hi)):
                continue
            decades = np.log10(hi) - np.log10(lo)
            if decades >= 2:
                axis.set_major_locator(matplotlib.ticker.LogLocator(base=10))
            else:
                subs = (1.0, 2.0, 5.0) if decades >= 0.7 else (1.0, 1.5, 2.0, 3.0, 5.0, 7.0)
                axis.set_major_locator(matplotlib.ticker.LogLocator(base=10, subs=subs))
                axis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:.3g}"))
            axis.set_minor_formatter(matplotlib.ticker.NullFormatter())


def split_by_data(study: "Study", bench: str, metrics: Iterable[str]) -> tuple[list[str], list[str]]:
    """(metrics with evaluated values on `bench`, metrics without): pages draw the first and name the second."""
    metrics = list(metrics)
    have = [m for m in metrics if not study.eval_points(bench, m).empty]
    return have, [m for m in metrics if m not in have]


def left_out_line(bench: str, missing: list[str]) -> str:
    """One line for the panels a page leaves out because their metric has no values."""
    if not missing:
        return ""
    names = ", ".join(METRIC_LABEL[m].split(" ")[0] for m in missing)
    return (f" {names}: no {'/'.join(missing)} values on {bench} (reason on the summary page); "
            f"{'its panels are' if len(missing) == 1 else 'their panels are'} left out.")


def run_label(run: pd.Series) -> str:
    return f"{run['preset']} · {fraction_label(run['fraction'])}"


NO_NVS = ("No NVS benchmark (PSNR/LPIPS/SSIM) has been evaluated yet. Evaluate checkpoints with `rayder-eval` "
          "(or `rayder-sweep collect`) and re-run the report.")


# ------------------------------------------------------------------------------------------------------------------
# Per-run styles shared by the scaling (2) and camera (5) pages
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
