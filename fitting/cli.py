"""`rayder-fit`: fit a scaling law to the results store's frontier, or to any CSV.

    rayder-fit --metric psnr --bench re10k --min-step 50000            # paper Eq. 4 (kaplan law on MSE)
    rayder-fit --csv chinchilla.csv --x N,D --y loss --law additive \\
        --eval 'N = `Model Size`' --eval 'D = `Training FLOP` / (6 * N)' --drop-top 5
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings

import pandas as pd

from .cli_analyses import (add_arguments, parse_constraints, run_analysis, run_isoflop, select_store_points,
                           wants_analysis)
from .fit import FitWarning, fit_law
from .laws import DEFAULT_LAW, LAWS
from .pareto import TRANSFORMS, frontier, transform_metric


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
    src.add_argument("--no-write", action="store_true", help="do not write the fit to the store's `fits` table")
    ext = p.add_argument_group("external data")
    ext.add_argument("--csv", help="CSV file with one point per row (fitted as given, no frontier)")
    ext.add_argument("--x", default=None, help="input column(s), comma separated (default: C,D; law data_constrained: "
                                               "C,D,U = compute, data seen, unique data; from the store C,S,U with S "
                                               "= samples seen and U = D, the run's unique videos)")
    ext.add_argument("--y", default=None, help="target column, positive and lower is better (default: y)")
    ext.add_argument("--eval", action="append", default=[], metavar="EXPR",
                     help="pandas DataFrame.eval assignment applied to the CSV, e.g. 'D = C / (6 * N)' (repeatable)")
    ext.add_argument("--drop-top", type=int, default=0, metavar="K", help="drop the K rows with the highest y")
    fit = p.add_argument_group("fit")
    fit.add_argument("--law", default=DEFAULT_LAW, choices=sorted(LAWS), metavar="LAW",
                     help="scaling law from the registry: " + ", ".join(sorted(LAWS)) + " (default: %(default)s)")
    fit.add_argument("--objective", default="huber", choices=("huber", "lsq"),
                     help="huber: Huber loss on log residuals, summed; lsq: least squares in metric space "
                          "(default: %(default)s)")
    fit.add_argument("--delta", type=float, default=1e-3, help="Huber delta on log residuals (default: %(default)g)")
    fit.add_argument("--reduction", default="sum", choices=("sum", "mean"), help="Huber over points (default: sum)")
    fit.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (default: %(default)s)")
    fit.add_argument("--seed", type=int, default=0, help="seed of the bootstrap resamples (default: %(default)s)")
    fit.add_argument("--starts", type=int, default=20, help="grid starts refined by L-BFGS-B (default: 20)")
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
            df = df.eval(expr)
        except Exception as exc:  # pandas raises many kinds for a bad expression
            raise SystemExit(f"rayder-fit: --eval {expr!r} failed on {args.csv}: {exc}")
    missing = [c for c in [*x, y] if c not in df.columns]
    if missing:
        raise SystemExit(f"rayder-fit: {args.csv} has no column(s) {missing}; columns are {list(df.columns)}")
    if args.drop_top:
        df = df.sort_values(y).iloc[: len(df) - args.drop_top]
    return df


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    x = (args.x or "C,D").split(",")
    y = args.y or "y"
    if LAWS[args.law].n_inputs == 1 and args.x is None:
        x = ["C"]
    if (LAWS[args.law].n_inputs == 3 or args.two_stage) and args.x is None:
        x = ["C", "D", "U"] if args.csv else ["C", "S", "U"]
    fix, tie = parse_constraints(args)
    store = None
    if args.csv:
        df, metric, bench = _load_csv(args, x, y), None, args.bench
        if args.isoflop:
            return run_isoflop(args, df, n_col=x[0], c_col=x[1] if len(x) > 1 else "C", y_col=y,
                               run_col=args.run_col, metric=None, bench=bench, store=None,
                               d_col=x[2] if len(x) > 2 else None)
    else:
        if not (args.metric and args.bench):
            print("rayder-fit: give --metric and --bench (results store) or --csv (external data)", file=sys.stderr)
            return 2
        from pathlib import Path

        from rayder_core.results import ResultsStore

        if not Path(args.db).is_file():  # never create an empty store from a mistyped path
            print(f"rayder-fit: results store {args.db} does not exist (run a sweep first, or pass --db)",
                  file=sys.stderr)
            return 2
        store = ResultsStore(args.db)
        from rayder_core.results import BenchLookupError

        try:  # --bench may be a family name (re10k -> re10k-synth); say which concrete benchmark is used
            resolved = store.resolve_bench(args.bench, args.metric)
        except BenchLookupError as exc:
            print(f"rayder-fit: {exc}", file=sys.stderr)
            return 2
        if resolved != args.bench:
            print(f"rayder-fit: --bench {args.bench} -> using benchmark {resolved!r} of {args.db}", file=sys.stderr)
            args.bench = resolved
        points = store.eval_points(bench=args.bench, metric=args.metric, sweep=args.sweep, family=args.family)
        if points.empty:
            missing = store.missing_evals(args.bench, args.metric)
            print(f"rayder-fit: {args.db} has no {args.metric} evaluations on bench {args.bench!r}"
                  + (f" ({len(missing)} missing, e.g. {missing['missing_reason'].iloc[0]})" if len(missing) else ""),
                  file=sys.stderr)
            return 2
        points = select_store_points(args, points)  # --min-step, warmup, --checkpoints; prints what each removed
        points = points.assign(S=points["samples"], U=points["D"])  # data seen / unique data (data_constrained)
        if args.isoflop:
            iso = points.assign(N=points["params"], C=points["compute_gflop"],
                                y=transform_metric(points["value"], args.metric))
            return run_isoflop(args, iso, n_col="N", c_col="C", y_col="y", run_col="run_id", metric=args.metric,
                               bench=args.bench, store=store, d_col="S")
        df, metric, bench = frontier(points, args.metric), args.metric, args.bench
    if wants_analysis(args):
        return run_analysis(args, df, x, y, metric=metric, bench=bench, store=store, fix=fix, tie=tie)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FitWarning)  # kept in result.warnings and printed below
            res = fit_law(df, law=args.law, x=x, y=y, objective=args.objective, delta=args.delta,
                          reduction=args.reduction, bootstrap=args.bootstrap, seed=args.seed, n_starts=args.starts,
                          n_jobs=args.jobs, metric=metric, bench=bench, sweep=args.sweep, fix=fix, tie=tie)
    except (ValueError, RuntimeError) as exc:
        print(f"rayder-fit: {exc}", file=sys.stderr)
        return 2
    record = res.to_record()
    if store is not None and not args.no_write:
        store.write_fit(record)
    if args.json:
        print(json.dumps({**record, "warnings": res.warnings, "elapsed_s": res.elapsed_s}, indent=2, default=float))
    else:
        print(res.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
