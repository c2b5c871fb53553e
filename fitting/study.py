"""One entry point from points to a law: `fit_study(points, StudyOptions(...))`.

`rayder-fit`, the report's law pages (`reports.fits`), the family page (`reports.family_page`) and the demo
(`sweeps.demo`) all call it, so a new check or warning lands everywhere at once. The steps:

1. `--where` (pandas `DataFrame.query`) keeps only some rows (any points);
2. store points (`ResultsStore.eval_points` rows, `options.metric` set): checkpoint selection (`select_checkpoints`:
   --min-step, warmup, --checkpoints), then the per-D compute-optimal frontier (`frontier`: C in GFLOP, y the
   lower-is-better target); table points (a CSV, `options.metric` None): a warning when a string column separates
   rows with identical inputs (several datasets or tasks mixed), then optionally the running-minimum frontier of y
   along `frontier_x`, per group of `frontier_by`;
3. too few points (no more than the free parameters, or fewer than 2 values of an input of a two-input law) ends
   with a `problem`, not a fit;
4. `fit_with_options` with FitWarnings kept in `StudyFit.warnings` (never printed twice).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field, replace

import pandas as pd

from .checkpoints import format_report, select_checkpoints
from .fit import FitOptions, FitResult, FitWarning, fit_with_options
from .laws import get_law
from .frontier import frontier, running_frontier
from .replicates import REPLICATE_MODES, average_replicates, disagreement_note


@dataclass(frozen=True)
class StudyOptions:
    """How `fit_study` turns points into a law.

    fit: the fit's settings (law, x, y, objective, bootstrap, starts, ...; see `fitting.fit.fit_law`).
    metric: store points: the evaluated metric (psnr, ssim, lpips, mse) whose frontier is fitted; None: the points
        are a table whose `fit.y` column is the target.
    checkpoints: store points: the `select_checkpoints` mode (all | cooldown | final); None: no selection (only
        `min_step` applies, inside `frontier`).
    drop_warmup: store points: drop checkpoints saved during LR warmup.
    min_step: store points: drop checkpoints before this training step.
    replicates: store points: how runs that differ only in their seed become one point per cell and step (mean |
        median | all; `fitting.replicates`); cells whose seeds disagree are named in the notes whatever the mode.
    where: pandas query applied to the points first, e.g. 'dataset == "imagenet1k"'.
    frontier_x: table points: fit only the running-minimum frontier of y along this column (e.g. C in FLOP).
    frontier_by: table points: one frontier per value of this column (e.g. D), as the store's per-D frontiers.
    """

    fit: FitOptions = field(default_factory=FitOptions)
    metric: str | None = None
    checkpoints: str | None = "all"
    drop_warmup: bool = True
    min_step: int = 0
    replicates: str = "mean"
    where: str | None = None
    frontier_x: str | None = None
    frontier_by: str | None = None


@dataclass
class StudyFit:
    """What `fit_study` did: the points (with `on_frontier_d` when a frontier was taken), the fit or why there is
    none, the rows each selection step removed, the study's own warnings (`notes`: mixed series) and `warnings`
    (those notes, then the fit's FitWarnings as emitted: "fit of 'kaplan': ...")."""

    table: pd.DataFrame
    fit: FitResult | None = None
    problem: str | None = None
    selection: list[tuple[str, int]] = field(default_factory=list)
    n_input_rows: int = 0
    notes: list[str] = field(default_factory=list)
    fit_warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.fit is not None

    @property
    def warnings(self) -> list[str]:
        return self.notes + self.fit_warnings

    @property
    def fit_points(self) -> pd.DataFrame:
        """The rows the law is fitted on (the frontier points when a frontier was taken)."""
        if "on_frontier_d" in self.table.columns:
            return self.table[self.table["on_frontier_d"].astype(bool)]
        return self.table


def filter_rows(points: pd.DataFrame, expr: str) -> pd.DataFrame:
    """`points.query(expr)`; ValueError naming the expression and the columns when it fails or keeps no row."""
    try:
        out = points.query(expr)
    except Exception as exc:  # pandas raises many kinds for a bad expression
        raise ValueError(f"--where {expr!r} failed ({type(exc).__name__}: {exc}); the columns are "
                         f"{list(points.columns)} (quote names with spaces in backticks, strings in quotes)") from None
    if not isinstance(out, pd.DataFrame):
        raise ValueError(f"--where {expr!r} is not a row filter; give a condition such as 'dataset == \"x\"'")
    if out.empty:
        raise ValueError(f"--where {expr!r} keeps none of the {len(points)} rows; the columns are "
                         f"{list(points.columns)}")
    return out


def table_frontier(points: pd.DataFrame, x: str, y: str, by: str | None = None) -> pd.DataFrame:
    """`points` sorted by (by, x) with column on_frontier_d: the running-minimum (Pareto) frontier of y along x,
    one frontier per value of `by` (None: one over all rows); a point is on it when its y is strictly below that of
    every point with smaller x (`pareto.running_frontier`)."""
    missing = [c for c in (x, y, by) if c is not None and c not in points.columns]
    if missing:
        raise ValueError(f"--frontier: no column(s) {missing}; the columns are {list(points.columns)}")
    xs = pd.to_numeric(points[x], errors="coerce")
    ys = pd.to_numeric(points[y], errors="coerce")
    if xs.isna().any() or ys.isna().any():
        raise ValueError(f"--frontier {x}: {int(xs.isna().sum())} non-numeric {x} and {int(ys.isna().sum())} "
                         f"non-numeric {y} value(s)")
    out = points.assign(on_frontier_d=False)
    groups = out.groupby(by, sort=False).groups.values() if by else [out.index]
    for idx in groups:
        out.loc[idx, "on_frontier_d"] = running_frontier(xs.loc[idx].to_numpy(float), ys.loc[idx].to_numpy(float))
    return out.sort_values([c for c in (by, x) if c]).reset_index(drop=True)


def mixed_column_notes(points: pd.DataFrame, x: list[str]) -> list[str]:
    """Warnings for string columns that separate rows with identical inputs `x` (e.g. one model evaluated on 41
    datasets: the same (N, D) with 41 values of y). Such points are several series, not one law."""
    if not all(c in points.columns for c in x) or len(points) < 2:
        return []
    notes = []
    for col in points.columns:
        if col in x or not (pd.api.types.is_object_dtype(points[col]) or pd.api.types.is_string_dtype(points[col])
                            or isinstance(points[col].dtype, pd.CategoricalDtype)):
            continue
        values = points[col].dropna().unique()
        if len(values) < 2:
            continue
        per_input = points.groupby(list(x), dropna=False)[col].nunique()
        if (per_input > 1).any():
            shown = ", ".join(repr(str(v)) for v in values[:3]) + (", ..." if len(values) > 3 else "")
            notes.append(f"column {col!r} has {len(values)} values ({shown}) and rows with the same {', '.join(x)} "
                         f"differ in it: the points mix several series; keep one with --where '{col} == ...' "
                         f"(or fit each separately)")
    return notes


def _store_table(points: pd.DataFrame, o: StudyOptions) -> tuple[pd.DataFrame, list[tuple[str, int]], list[str]]:
    if o.replicates not in REPLICATE_MODES:
        raise ValueError(f"replicates must be one of {REPLICATE_MODES}, got {o.replicates!r}")
    selection: list[tuple[str, int]] = []
    notes: list[str] = []
    min_step = o.min_step
    if o.checkpoints is not None:
        points, selection = select_checkpoints(points, o.checkpoints, drop_warmup=o.drop_warmup, min_step=o.min_step)
        if points.empty:
            raise ValueError("no checkpoints left after the checkpoint filters (try --checkpoints all or "
                             "--keep-warmup)")
        min_step = 0
    disagree = disagreement_note(points[points["step"] >= min_step], o.metric)
    if disagree:
        notes.append(disagree)
    if o.replicates != "all":
        before = len(points)
        points, cells = average_replicates(points, o.metric, o.replicates)
        if cells:
            selection.append((f"seeds averaged in {cells} cell(s) (--replicates {o.replicates})",
                              before - len(points)))
    return frontier(points, o.metric, min_step=min_step), selection, notes


def prepare_points(points: pd.DataFrame, options: StudyOptions) -> tuple[pd.DataFrame, list[tuple[str, int]],
                                                                          list[str]]:
    """Steps 1-2 of `fit_study`: (table to fit, [(selection step, rows removed)], warnings). ValueError on bad input
    (a failing --where, a missing column, non-positive values)."""
    selection: list[tuple[str, int]] = []
    notes: list[str] = []
    if options.where:
        kept = filter_rows(points, options.where)
        selection.append((f"--where {options.where}", len(points) - len(kept)))
        points = kept
    if options.metric is not None:
        table, steps, store_notes = _store_table(points, options)
        return table, selection + steps, notes + store_notes
    notes += mixed_column_notes(points, list(options.fit.x))
    if options.frontier_x:
        points = table_frontier(points, options.frontier_x, options.fit.y, options.frontier_by)
    elif options.frontier_by:
        raise ValueError("--frontier-by needs --frontier X (the column the frontier runs along)")
    return points, selection, notes


def too_few_points(table: pd.DataFrame, options: FitOptions) -> str | None:
    """Why `table`'s fit points cannot determine the law (None when they can): no more points than free
    parameters, or fewer than 2 distinct values of an input of a two-input law."""
    law = get_law(options.law)
    n_free = len(law.param_names) - len(set(options.fix) | set(options.tie))
    pts = table[table["on_frontier_d"].astype(bool)] if "on_frontier_d" in table.columns else table
    if n_free and law.n_inputs == 2 and all(c in pts.columns for c in options.x):
        few = [f"{pts[c].nunique()} value(s) of {c}" for c in options.x if pts[c].nunique() < 2]
        if few:
            return (f"too few points to fit {law.name} L({', '.join(options.x)}): {len(pts)} point(s) with only "
                    f"{' and '.join(few)}; a two-input law needs at least 2 values of each input")
    if len(pts) <= n_free:
        return (f"too few points to fit {law.name} L({', '.join(options.x)}): {len(pts)} point(s) for {n_free} free "
                f"parameter(s); it needs more than {n_free}")
    return None


def fit_study(points: pd.DataFrame, options: StudyOptions) -> StudyFit:
    """Points (store `eval_points` rows or a table) -> selection -> frontier -> too-few check -> law (module doc).

    Never raises for bad data: a failing step gives a StudyFit with `problem` set (its first line is a summary).
    FitWarnings are kept in `.fit_warnings` (and `.fit.warnings`), not emitted."""
    result = StudyFit(table=points.iloc[:0], n_input_rows=len(points))
    try:
        result.table, result.selection, result.notes = prepare_points(points, options)
    except ValueError as exc:
        result.problem = str(exc)
        return result
    result.problem = too_few_points(result.table, options.fit)
    if result.problem:
        return result
    fit_options = options.fit
    if options.metric is not None and fit_options.metric is None:
        fit_options = replace(fit_options, metric=options.metric)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", FitWarning)
            result.fit = fit_with_options(result.table, fit_options)
    except (ValueError, RuntimeError) as exc:
        result.problem = f"the fit failed: {exc}"
        return result
    result.fit_warnings = [str(w.message) for w in caught if issubclass(w.category, FitWarning)]
    return result


def format_selection(study: StudyFit) -> str:
    """One line: 'points: 120 -> 84 (warmup checkpoints: -12, --checkpoints final: -24)'."""
    n_after = len(study.table) if study.table is not None else 0
    return format_report(study.selection, study.n_input_rows, n_after)


__all__ = ["StudyFit", "StudyOptions", "filter_rows", "fit_study", "format_selection", "mixed_column_notes",
           "prepare_points", "table_frontier", "too_few_points"]
