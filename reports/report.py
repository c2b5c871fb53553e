"""The study report: a results store in, a multi-page PDF (plus one PDF/PNG per figure for papers) out.

Pages, in order (each is one matplotlib figure on an A4-landscape page):

1. summary: sweeps, runs by state, the preset x data-fraction grid (parameters, D videos), total compute and wall
   time, and what is missing (failed runs, metrics missing and why);
2. scaling across data and model size (paper Figure 10), one page per NVS benchmark;
3. compute-optimal frontier and fitted law L(C, D) (Figure 11), one page per NVS benchmark; then what the MSE law's
   D term rests on (held-out MSE against epochs, data sizes that reached their minimum, frontier runs per D, the D
   exponent without the smallest D), one page per NVS benchmark;
4. residuals of every fit, then a page with the fitted parameters and their bootstrap CIs;
5. camera geometry vs compute (Figure 13), one page per probe benchmark;
6. training curves (loss, PSNR, skipped steps) of every run, small multiples, 12 runs per page;
7. compute-optimal allocation for a few budgets, then the isoFLOP profiles (Chinchilla Approach 2) per NVS
   benchmark, with N*(C) and D*(C) and their bootstrap bands (a page saying why when there are too few runs);
8. held-out runs against the law fitted on the grid alone (only when the store has held-out runs).

Units: compute C is training compute in GFLOP (`checkpoints.compute_gflop`), D the number of training videos,
PSNR in dB for images on [-1, 1] (MSE = 4 * 10^(-PSNR/10)), SSIM and LPIPS unitless, rotation errors in degrees.
A section without data still gets its page, saying what is missing, so the page count only depends on the number of
benchmarks and runs (`expected_page_count`).

Layout: one module per page or section (`reports/pages/*.py`), shared helpers in `reports/common.py`, the fits in
`reports/fits.py`. A page module provides `figures(study, fits)`, yielding `(name, Figure)` pages in order, and
`page_count(n_nvs_benches, n_probe_benches, n_runs, holdout)`; `PAGES` below lists the modules in report order, so
adding a page is one line there. This module keeps the public names (build_report, load_study, the page functions...)
that callers import from `reports.report`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from fitting.bootstrap import POINT_UNIT
from reports.common import *  # noqa: F401,F403  (public names callers import from reports.report)
from reports.common import (DEFAULT_BOOTSTRAP, PAGE_STYLE, ReportError, Study, _fit_points,  # noqa: F401
                            load_study, plt, tidy_log_axes)
from reports.fits import MetricFit, _stored_fit_row, fit_all, fit_metric, format_holdout  # noqa: F401
from reports import family_page  # families overlaid (only for a store with two model families)
from reports.pages import (allocation, d_term, fit_tables, frontier, holdout, isoflop, pose_errors, scaling, summary,
                           training)
from reports.pages.allocation import allocation_budgets, allocation_page, allocation_table, flops_per_sample  # noqa: F401
from reports.pages.pose_errors import camera_page  # noqa: F401
from reports.pages.fit_tables import _num, parameters_page, residuals_page  # noqa: F401
from reports.pages.frontier import _compute_grid, _frontier_panel, frontier_page  # noqa: F401
from reports.pages.holdout import holdout_page  # noqa: F401
from reports.pages.isoflop import isoflop_page  # noqa: F401
from reports.pages.scaling import scaling_page  # noqa: F401
from reports.pages.summary import missing_summary, run_totals, summary_page  # noqa: F401
from reports.pages.training import _training_panel, ordered_runs, training_pages  # noqa: F401

from matplotlib.backends.backend_pdf import PdfPages  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

# The report's pages, in order: page modules (see the module docstring). Adding a page is one line here.
PAGES = [
    summary,
    scaling,
    frontier,
    d_term,
    fit_tables,
    pose_errors,
    training,
    allocation,
    isoflop,
    holdout,
    family_page,
]


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
    """Pages of a report: the sum of every page module's count (summary, 2 per NVS benchmark + allocation per NVS
    benchmark (at least one page each), residuals, parameters, camera per probe benchmark (at least one), training
    curves (12 runs a page), the held-out validation page when the store has held-out runs, ...)."""
    return sum(page.page_count(n_nvs_benches, n_probe_benches, n_runs, holdout) for page in PAGES)


def report_figures(study: Study, fits: dict[tuple[str, str], MetricFit]) -> Iterable[tuple[str, Figure]]:
    """(name, figure) of every page, in order; figures are created lazily so only one is open at a time."""
    for page in PAGES:
        yield from page.figures(study, fits)


def build_report(db_path: str | Path, out_pdf: str | Path, *, figures_dir: str | Path | None = None,
                 figure_formats: tuple[str, ...] = ("pdf", "png"), bootstrap: int = DEFAULT_BOOTSTRAP,
                 seed: int = 0, min_step: int = 0, use_stored_fits: bool = True, dpi: int = 150,
                 checkpoints: str | None = None, fix: dict[str, float] | None = None,
                 replicates: str = "mean", where: str | None = None,
                 bootstrap_by: str = POINT_UNIT) -> ReportResult:
    """Render the study report of the store at `db_path` into `out_pdf`, and each page into `figures_dir`
    (default: `<out_pdf stem>_figures/` next to it; None-like empty tuple `figure_formats` writes none).

    Raises ReportError when the store is missing or has no runs. Partial stores render with pages that say what
    is missing. `bootstrap` resamples are used for fits made now; `min_step` drops earlier checkpoints from fits,
    `checkpoints` (all | cooldown | final; None: every one) selects those fitted, `fix` holds law parameters fixed
    and `replicates` (mean | median | all) says how seeds of one cell become a point, `bootstrap_by` what a resample
    draws (as `rayder-fit --checkpoints / --fix / --replicates / --bootstrap-by`). `where` keeps only the runs it
    selects (`load_study`); the laws are then fitted now
    (a stored fit does not say which runs it used).
    """
    t0 = time.perf_counter()
    study = load_study(db_path, where)
    use_stored_fits = use_stored_fits and not where
    out_pdf = Path(out_pdf)
    out_pdf.parent.mkdir(parents=True, exist_ok=True)
    figures_dir = Path(figures_dir) if figures_dir else out_pdf.with_name(out_pdf.stem + "_figures")
    if figure_formats:
        figures_dir.mkdir(parents=True, exist_ok=True)
    fits = fit_all(study, bootstrap=bootstrap, seed=seed, min_step=min_step, use_stored=use_stored_fits,
                   checkpoints=checkpoints, fix=fix, replicates=replicates, bootstrap_by=bootstrap_by)
    pages, files = [], []
    tmp_pdf = out_pdf.with_name(out_pdf.name + ".partial")
    with plt.rc_context(PAGE_STYLE), PdfPages(tmp_pdf, metadata={"Title": f"RayDer study report: {db_path}",
                                                                 "Creator": "rayder-report"}) as pdf:
        n_pages = expected_page_count(len(study.nvs_benches), len(study.probe_benches), len(study.runs),
                                      study.has_holdout_runs)
        for name, fig in tqdm(report_figures(study, fits), total=n_pages, desc="rendering pages", leave=False):
            tidy_log_axes(fig)
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
