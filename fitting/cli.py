"""`rayder-fit`: fit a scaling law to the results store's frontier, or to any CSV.

    rayder-fit --metric psnr --bench re10k --min-step 50000            # paper Eq. 4 (kaplan law on MSE)
    rayder-fit --csv chinchilla.csv --x N,D --y loss --law additive \\
        --eval 'N = `Model Size`' --eval 'D = `Training FLOP` / (6 * N)' --drop-top 5
    rayder-fit --csv runs.csv --x C --y loss --law single --where 'dataset == "web"' --frontier C
    rayder-fit --csv runs.csv --x N,D --y loss --law additive --fix E=1.69,A=406.4,alpha=0.34,B=410.7,beta=0.28

Every path goes through `fitting.study.fit_study` (selection, frontier, too-few check, fit, warnings).
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import pandas as pd

from rayder_core.store import BenchLookupError, ResultsStore

from .bootstrap import POINT_UNIT, bootstrap_groups_column
from .checkpoints import format_report
from .replicates import REPLICATE_MODES
from .cli_analyses import (add_arguments, parse_constraints, run_analysis, run_isoflop, select_store_points,
                           wants_analysis)
from .fit import FitOptions
from .laws import DEFAULT_LAW, LAWS
from .frontier import TRANSFORMS, transform_metric
from .study import StudyFit, StudyOptions, filter_rows, fit_study, format_selection, prepare_points


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rayder-fit", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_argument_group("data from the results store")
    src.add_argument("--metric", choices=sorted(TRANSFORMS), help="metric to fit (psnr is fitted as MSE on [-1,1])")
    src.add_argument("--bench", help="benchmark name as stored by rayder-eval (e.g. re10k)")
    src.add_argument("--db", default="results.duckdb", help="results store (default: %(default)s)")
    src.add_argument("--sweep", default=None, help="only runs of this sweep")
    src.add_argument("--family", default=None, help="only runs of this model family (store column runs.family: "
                                                    "rayder, erayzer)")
    src.add_argument("--min-step", type=int, default=0, help="ignore checkpoints before this step (paper: 50000)")
    src.add_argument("--replicates", choices=REPLICATE_MODES, default="mean",
                     help="runs that differ only in their seed: mean = one point per cell and checkpoint step, their "
                          "mean loss (default); median = their median (3+ seeds: robust to one seed that reached "
                          "another outcome); all = every run a point (the frontier then takes the best seed)")
    src.add_argument("--no-write", action="store_true", help="do not write the fit to the store's `fits` table")
    ext = p.add_argument_group("external data")
    ext.add_argument("--csv", help="CSV file with one point per row (fitted as given unless --frontier)")
    ext.add_argument("--x", default=None, help="input column(s), comma separated (default: C,D; law data_constrained: "
                                               "C,D,U = compute, data seen, unique data; from the store C,S,U with S "
                                               "= samples seen and U = D, the run's unique videos)")
    ext.add_argument("--y", default=None, help="target column, positive and lower is better (default: y)")
    ext.add_argument("--eval", action="append", default=[], metavar="EXPR",
                     help="pandas DataFrame.eval assignment applied to the CSV, e.g. 'D = C / (6 * N)' (repeatable)")
    ext.add_argument("--drop-top", type=int, default=0, metavar="K", help="drop the K rows with the highest y")
    ext.add_argument("--where", metavar="EXPR",
                     help="keep only the rows where this pandas query holds, e.g. 'dataset == \"imagenet1k\"' or "
                          "'N > 1e8' (after --eval; also on store points)")
    ext.add_argument("--frontier", metavar="X",
                     help="CSV: fit only the compute-optimal (Pareto) frontier along column X: the rows whose y is "
                          "below that of every row with smaller X (running minimum), as the store path does per D")
    ext.add_argument("--frontier-by", metavar="COL",
                     help="CSV with --frontier: one frontier per value of COL (e.g. D or model family)")
    fit = p.add_argument_group("fit")
    fit.add_argument("--law", default=DEFAULT_LAW, choices=sorted(LAWS), metavar="LAW",
                     help="scaling law from the registry: " + ", ".join(sorted(LAWS)) + " (default: %(default)s)")
    fit.add_argument("--objective", default="huber", choices=("huber", "lsq"),
                     help="huber: Huber loss on log residuals, summed: Chinchilla's Approach 3 (Hoffmann et al. 2022, "
                          "delta 1e-3), its replication (Besiroglu et al. 2024) and the data-constrained law "
                          "(Muennighoff et al. 2023); lsq: plain least squares on the metric itself (SSE/SST), what "
                          "a scipy curve_fit of the loss does (default: %(default)s)")
    fit.add_argument("--delta", type=float, default=1e-3,
                     help="Huber delta on log residuals (default: %(default)g, Chinchilla's); --delta 1e6 is least "
                          "squares on log residuals: for a pure power law (--law single --fix L_inf=0) the straight "
                          "line of a log-log fit, the usual way a power law is read off a frontier plot")
    fit.add_argument("--reduction", default="sum", choices=("sum", "mean"), help="Huber over points (default: sum)")
    fit.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (default: %(default)s)")
    fit.add_argument("--bootstrap-by", default=POINT_UNIT, metavar="UNIT",
                     help="what a resample draws: 'point' (default) or a column whose groups are drawn whole (a "
                          "cluster bootstrap); store points have 'trunk': the run lengths forked from one trunk, "
                          "which share its initialisation and data order")
    fit.add_argument("--seed", type=int, default=0, help="seed of the bootstrap resamples and of random starts "
                                                          "(default: %(default)s)")
    fit.add_argument("--starts", type=int, default=20,
                     help="starts refined by L-BFGS-B: the law's best grid points, and beyond the grid's size "
                          "random starts drawn inside the parameter ranges (seeded by --seed), so N means N "
                          "(default: 20); the output says how many reached the best objective")
    fit.add_argument("--score", action="store_true",
                     help="evaluate a given law instead of fitting it: every parameter given with --fix (e.g. a "
                          "published fit); prints the objective, R^2 and the residuals of every point")
    fit.add_argument("--jobs", type=int, default=None, help="processes for the bootstrap (default: min(2, CPUs))")
    add_arguments(p)
    p.add_argument("--json", action="store_true", help="print the fit record as JSON instead of text")
    return p


def _load_csv(args: argparse.Namespace, x: list[str], y: str) -> pd.DataFrame:
    try:
        df = pd.read_csv(args.csv)
    except (OSError, pd.errors.ParserError) as exc:
        raise SystemExit(f"rayder-fit: cannot read {args.csv}: {exc}")
    for expr in args.eval:
        try:
            out = df.eval(expr)
        except Exception as exc:  # pandas raises many kinds for a bad expression
            raise SystemExit(f"rayder-fit: --eval {expr!r} failed on {args.csv}: {exc}")
        if not isinstance(out, pd.DataFrame):  # a condition such as 'dataset == "x"' gives a Series, not a column
            raise SystemExit(f"rayder-fit: --eval {expr!r} is not an assignment (NAME = EXPR adds a column); to keep "
                             f"only some rows use --where {expr!r}")
        df = out
    if args.where:
        try:
            df = filter_rows(df, args.where)
        except ValueError as exc:
            raise SystemExit(f"rayder-fit: {exc}") from None
    missing = [c for c in [*x, y] if c not in df.columns]
    if missing:
        raise SystemExit(f"rayder-fit: {args.csv} has no column(s) {missing}; columns are {list(df.columns)}")
    if args.drop_top:
        df = df.sort_values(y).iloc[: len(df) - args.drop_top]
    return df


def _fit_options(args: argparse.Namespace, x: list[str], y: str, fix: dict, tie: dict) -> FitOptions:
    """The fit settings of the command line (metric/bench filled in by the store path)."""
    return FitOptions(law=args.law, x=tuple(x), y=y, objective=args.objective, delta=args.delta,
                      reduction=args.reduction, bootstrap=args.bootstrap,
                      bootstrap_groups=bootstrap_groups_column(args.bootstrap_by), seed=args.seed, n_starts=args.starts,
                      n_jobs=args.jobs, sweep=args.sweep, fix=fix, tie=tie)


def _check_score(args: argparse.Namespace, fix: dict, tie: dict) -> None:
    """--score needs every parameter of the law given with --fix."""
    free = [n for n in LAWS[args.law].param_names if n not in fix]
    if args.score and (free or tie):
        raise SystemExit(f"rayder-fit: --score evaluates a given law: give every parameter of {args.law!r} with "
                         f"--fix; missing {free}" + (" (and no --tie)" if tie else ""))


def _print_result(args: argparse.Namespace, study: StudyFit) -> None:
    res = study.fit
    if args.json:
        extra = {"warnings": study.notes + res.warnings, "elapsed_s": res.elapsed_s,
                 "n_degenerate_resamples": res.n_degenerate_resamples, "scored": res.scored}
        if res.scored:
            extra["residuals"] = res.residuals().to_dict(orient="records")
        print(json.dumps({**res.to_record(), **extra}, indent=2, default=float))
        return
    text = res.summary() + "".join(f"\n  WARNING: {w}" for w in study.notes)  # the fit's warnings are in summary
    if res.scored:
        text += "\n  residuals (predicted - measured):\n" + res.residuals().to_string(
            index=False, float_format=lambda v: f"{v:.5g}")
    print(text)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    x = (args.x or "C,D").split(",")
    y = args.y or "y"
    if LAWS[args.law].n_inputs == 1 and args.x is None:
        x = ["C"]
    if (LAWS[args.law].n_inputs == 3 or args.two_stage) and args.x is None:
        x = ["C", "D", "U"] if args.csv else ["C", "S", "U"]
    fix, tie = parse_constraints(args)
    _check_score(args, fix, tie)
    if args.bootstrap_by != POINT_UNIT and (args.isoflop or args.two_stage):
        print("rayder-fit: --bootstrap-by applies to law fits; --isoflop and --two-stage resample points (or runs) "
              "by their own rules", file=sys.stderr)
        return 2
    if args.frontier_by and not args.frontier:
        print("rayder-fit: --frontier-by needs --frontier X (the column the frontier runs along)", file=sys.stderr)
        return 2
    fit_options = _fit_options(args, x, y, fix, tie)
    store = None
    if args.csv:
        points = _load_csv(args, x, y)
        fit_options = replace(fit_options, bench=args.bench)
        if args.isoflop:
            return run_isoflop(args, points, n_col=x[0], c_col=x[1] if len(x) > 1 else "C", y_col=y,
                               run_col=args.run_col, metric=None, bench=args.bench, store=None,
                               d_col=x[2] if len(x) > 2 else None)
        options = StudyOptions(fit=fit_options, frontier_x=args.frontier, frontier_by=args.frontier_by)
    else:
        if not (args.metric and args.bench):
            print("rayder-fit: give --metric and --bench (results store) or --csv (external data)", file=sys.stderr)
            return 2
        if args.frontier:
            print("rayder-fit: --frontier is for --csv; store points are always fitted on their per-D frontier",
                  file=sys.stderr)
            return 2
        store, points = _store_points(args)
        if points is None:
            return 2
        if args.isoflop:
            sel = select_store_points(args, points)  # --min-step, warmup, --checkpoints; prints what each removed
            iso = sel.assign(N=sel["params"], C=sel["compute_gflop"], y=transform_metric(sel["value"], args.metric))
            return run_isoflop(args, iso, n_col="N", c_col="C", y_col="y", run_col="run_id", metric=args.metric,
                               bench=args.bench, store=store, d_col="S")
        fit_options = replace(fit_options, metric=args.metric, bench=args.bench)
        options = StudyOptions(fit=fit_options, metric=args.metric, checkpoints=args.checkpoints,
                               drop_warmup=not args.keep_warmup, min_step=args.min_step, where=args.where,
                               replicates=args.replicates)
    if wants_analysis(args):
        return _run_analysis(args, points, options, store, fix, tie)
    study = fit_study(points, options)
    if store is not None and study.n_input_rows:
        print("rayder-fit: " + format_selection(study), file=sys.stderr)
    if study.problem:
        print(f"rayder-fit: {study.problem}", file=sys.stderr)
        return 2
    if store is not None and not args.no_write:
        store.write_fit(study.fit.to_record())
    _print_result(args, study)
    return 0


def _store_points(args: argparse.Namespace):
    """(store, eval_points with S = samples seen and U = D) of --metric on --bench, or (None, None) after printing
    why not (no store, unknown benchmark, no evaluations)."""
    if not Path(args.db).is_file():  # never create an empty store from a mistyped path
        print(f"rayder-fit: results store {args.db} does not exist (run a sweep first, or pass --db)",
              file=sys.stderr)
        return None, None
    store = ResultsStore(args.db)
    try:  # --bench may be a family name (re10k -> re10k-synth); say which concrete benchmark is used
        resolved = store.resolve_bench(args.bench, args.metric)
    except BenchLookupError as exc:
        print(f"rayder-fit: {exc}", file=sys.stderr)
        return None, None
    if resolved != args.bench:
        print(f"rayder-fit: --bench {args.bench} -> using benchmark {resolved!r} of {args.db}", file=sys.stderr)
        args.bench = resolved
    points = store.eval_points(bench=args.bench, metric=args.metric, sweep=args.sweep, family=args.family)
    if points.empty:
        missing = store.missing_evals(args.bench, args.metric)
        print(f"rayder-fit: {args.db} has no {args.metric} evaluations on bench {args.bench!r}"
              + (f" ({len(missing)} missing, e.g. {missing['missing_reason'].iloc[0]})" if len(missing) else ""),
              file=sys.stderr)
        return None, None
    return store, points.assign(S=points["samples"], U=points["D"])  # data seen / unique data (data_constrained)


def _run_analysis(args: argparse.Namespace, points: pd.DataFrame, options: StudyOptions, store, fix: dict,
                  tie: dict) -> int:
    """--compare / --two-stage / --validate / --holdout-above on the points `fit_study` would fit."""
    try:
        table, selection, notes = prepare_points(points, options)
    except ValueError as exc:
        print(f"rayder-fit: {exc}", file=sys.stderr)
        return 2
    if store is not None:
        print("rayder-fit: " + format_report(selection, len(points), len(table)), file=sys.stderr)
    for note in notes:
        print(f"rayder-fit: WARNING: {note}", file=sys.stderr)
    fo = options.fit
    return run_analysis(args, table, list(fo.x), fo.y, metric=options.metric, bench=fo.bench, store=store,
                        fix=fix, tie=tie)


if __name__ == "__main__":
    sys.exit(main())
