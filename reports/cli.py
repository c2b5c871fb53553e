"""`rayder-report`: render the study report of a results store as a multi-page PDF plus one file per figure.

    rayder-report --db results.duckdb --out reports/out/study.pdf
"""
from __future__ import annotations

import argparse
import sys

from fitting.checkpoints import CHECKPOINT_MODES
from fitting.cli_analyses import parse_constraints
from fitting.laws import DEFAULT_LAW, constrain
from fitting.bootstrap import POINT_UNIT
from fitting.replicates import REPLICATE_MODES
from rayder_core.store import DEFAULT_DB, StoreError
from reports.report import ReportError, build_report

DEFAULT_OUT = "reports/out/study.pdf"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rayder-report", description=__doc__.splitlines()[0])
    parser.add_argument("--db", default=DEFAULT_DB, help=f"results store (default {DEFAULT_DB})")
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"report PDF (default {DEFAULT_OUT})")
    parser.add_argument("--figures-dir", default=None,
                        help="where one PDF/PNG per figure goes (default: <out stem>_figures/ next to the PDF)")
    parser.add_argument("--formats", default="pdf,png",
                        help="per-figure formats, comma separated; empty string for none (default pdf,png)")
    parser.add_argument("--bootstrap", type=int, default=200,
                        help="bootstrap resamples of laws fitted now (stored fits are used when present)")
    parser.add_argument("--min-step", type=int, default=0,
                        help="ignore checkpoints before this step in frontiers and fits (paper: 50000)")
    parser.add_argument("--checkpoints", choices=CHECKPOINT_MODES, default=None,
                        help="fit only these checkpoints (as rayder-fit --checkpoints; default: every checkpoint)")
    parser.add_argument("--fix", action="append", default=[], metavar="NAME=VALUE",
                        help="hold a law parameter fixed, e.g. --fix L_inf=0 (as rayder-fit --fix)")
    parser.add_argument("--replicates", choices=REPLICATE_MODES, default="mean",
                        help="runs that differ only in their seed: their mean, median or every run (as rayder-fit)")
    parser.add_argument("--bootstrap-by", default=POINT_UNIT, metavar="UNIT",
                        help="bootstrap unit of laws fitted now: point (default) or trunk (as rayder-fit)")
    parser.add_argument("--where", metavar="EXPR", default=None,
                        help="keep only the runs where this pandas query on the runs table holds, e.g. "
                             "\"preset != 'tiny-w16'\" (as rayder-fit --where; the laws are then fitted now)")
    parser.add_argument("--refit", action="store_true", help="ignore stored fits and fit every law now")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dpi", type=int, default=150, help="resolution of the per-figure PNGs")
    args = parser.parse_args(argv)

    fix, _ = parse_constraints(argparse.Namespace(fix=args.fix, tie=[]), prog="rayder-report")
    try:
        constrain(DEFAULT_LAW, fix)
    except ValueError as exc:
        parser.error(f"--fix: {exc}")
    formats = tuple(f.strip().lstrip(".") for f in args.formats.split(",") if f.strip())
    try:
        result = build_report(args.db, args.out, figures_dir=args.figures_dir, figure_formats=formats,
                              bootstrap=args.bootstrap, seed=args.seed, min_step=args.min_step,
                              checkpoints=args.checkpoints, fix=fix, replicates=args.replicates,
                              bootstrap_by=args.bootstrap_by,
                              use_stored_fits=not args.refit, dpi=args.dpi, where=args.where)
    except (ReportError, StoreError) as exc:
        print(f"rayder-report: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {result.pdf} ({len(result.pages)} pages) in {result.elapsed_s:.1f} s")
    if result.figure_files:
        print(f"wrote {len(result.figure_files)} figure files to {result.figure_files[0].parent}")
    for fit in result.fits.values():
        print(f"  {fit.bench} {fit.target}: {fit.formula if fit.ok else 'no fit: ' + (fit.problem or '')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
