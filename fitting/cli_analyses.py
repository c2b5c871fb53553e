"""The analyses of `rayder-fit` beyond one fit (issue 12): constraints, checkpoint selection, law comparison,
isoFLOP profiles, the data-constrained two-stage fit and extrapolation validation. `fitting.cli` wires them in."""
from __future__ import annotations

import argparse
import json
import sys
import warnings

import numpy as np
import pandas as pd

from .checkpoints import CHECKPOINT_MODES, format_report, select_checkpoints
from .compare import compare_laws, format_comparison
from .data_constrained import fit_data_constrained
from .extrapolation import growing_prefix, holdout_above
from .fit import FitWarning, _data_hash
from .isoflop import isoflop, plot_isoflop


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the options of this module to rayder-fit's parser."""
    con = p.add_argument_group("parameter constraints (any law)")
    con.add_argument("--fix", action="append", default=[], metavar="NAME=VALUE",
                     help="fix a parameter, e.g. --fix L_inf=0 --fix gamma=1 (repeatable; natural units); fixed "
                          "parameters are not fitted, bootstrapped or counted in the degrees of freedom")
    con.add_argument("--tie", action="append", default=[], metavar="NAME=OTHER",
                     help="tie a parameter to another of the same kind, e.g. --tie beta=alpha (one exponent shared "
                          "by both inputs); reported once, marked (tied)")
    ck = p.add_argument_group("checkpoint selection (results store)")
    ck.add_argument("--checkpoints", default="all", choices=CHECKPOINT_MODES,
                    help="frontier points from all checkpoints, only cooled-down ones (last checkpoint of a finished "
                         "run whose last step was in the LR decay phase, e.g. rayder-train --cooldown-from "
                         "branches) or only the final checkpoint of every finished run (default: %(default)s)")
    ck.add_argument("--keep-warmup", action="store_true",
                    help="keep checkpoints saved during LR warmup (dropped by default); the output says how many "
                         "points each filter removed")
    an = p.add_argument_group("analyses (instead of a single fit)")
    an.add_argument("--compare", metavar="LAW,LAW,...",
                    help="fit each law on the same points and rank them by AIC/BIC (Gaussian likelihood on log "
                         "residuals, scale fitted) and leave-one-out / leave-one-D-out error; prints and stores "
                         "the table (table law_comparisons); --fix/--tie apply to the entry equal to --law")
    an.add_argument("--no-cv", action="store_true", help="--compare without the cross-validation columns (faster)")
    an.add_argument("--isoflop", action="store_true",
                    help="isoFLOP profiles (Chinchilla Approach 2) of the checkpoint curves: N*(C) and D*(C) power "
                         "laws with bootstrap CIs (store: N = parameters, C = compute in GFLOP, D* = samples seen "
                         "interpolated at N*; CSV: --x N,C[,D] and --run-col, D* = C / (cost N*) without a D column)")
    an.add_argument("--budgets", metavar="C,C,...",
                    help="isoFLOP budgets (default: 8 log-spaced between the 5th and 95th percentile of C, or the "
                         "distinct C values when every run has one point)")
    an.add_argument("--cost", type=float, default=6.0,
                    help="isoFLOP without a data column: D*(C) = C / (cost N*) (default: %(default)g, C = 6 N D)")
    an.add_argument("--run-col", default="run_id", help="isoFLOP on a CSV: column naming the run of each row "
                                                        "(absent: every row is its own run) (default: %(default)s)")
    an.add_argument("--plot", metavar="PNG", help="isoFLOP: write the report figure (profiles and N*(C)) here")
    an.add_argument("--two-stage", action="store_true",
                    help="law data_constrained: Muennighoff et al.'s two-stage fit (additive base law on "
                         "single-epoch points, then R* with the base fixed) and the joint fit, with --bootstrap CIs "
                         "(each resample redoes both stages); inputs C (or N), data seen, unique data (store: C, "
                         "samples seen, D)")
    an.add_argument("--param-repetition", action="store_true",
                    help="--two-stage: add Muennighoff et al.'s parameter-repetition term R_N* (law "
                         "data_constrained_rn: N' = U_N + U_N R_N* (1 - exp(-R_N / R_N*)), U_N = min(N, N_opt(U)) "
                         "under the base law); the first --x column must then be N (parameters), e.g. --x N,D,U")
    an.add_argument("--validate", choices=("prefix",),
                    help="prefix: fit on growing prefixes of the compute range (smallest budgets first) and report "
                         "the error of predicting every later budget, as a curve (stored in table extrapolations)")
    an.add_argument("--prefix-by", metavar="COL",
                    help="--validate prefix / --holdout-above: the column that orders the points (default: the "
                         "first --x column; e.g. C for a law in N,D)")
    an.add_argument("--holdout-above", type=float, metavar="C_MAX",
                    help="fit on the points with x0 < C_MAX and predict the others with a bootstrap band and a "
                         "Student-t lack-of-fit interval (stored in table extrapolations)")
    an.add_argument("--ci", type=float, default=0.95, help="level of intervals and bands (default: %(default)s)")


def parse_constraints(args: argparse.Namespace, prog: str = "rayder-fit") -> tuple[dict[str, float], dict[str, str]]:
    """--fix NAME=VALUE and --tie NAME=OTHER (repeatable, or comma separated) -> (fix, tie); SystemExit (naming
    `prog`) if bad."""
    fix: dict[str, float] = {}
    tie: dict[str, str] = {}
    for opt, items, out in (("--fix", args.fix, fix), ("--tie", args.tie, tie)):
        for item in (s for it in items for s in it.split(",") if s.strip()):
            name, sep, value = item.partition("=")
            if not sep or not name.strip() or not value.strip():
                raise SystemExit(f"{prog}: {opt} {item!r}: expected NAME=VALUE")
            if opt == "--fix":
                try:
                    out[name.strip()] = float(value)
                except ValueError:
                    raise SystemExit(f"{prog}: --fix {item!r}: {value!r} is not a number") from None
            else:
                out[name.strip()] = value.strip()
    return fix, tie


def select_store_points(args: argparse.Namespace, points: pd.DataFrame) -> pd.DataFrame:
    """Apply --min-step, warmup dropping and --checkpoints; print how many points each filter removed."""
    kept, report = select_checkpoints(points, args.checkpoints, drop_warmup=not args.keep_warmup,
                                      min_step=args.min_step)
    print("rayder-fit: " + format_report(report, len(points), len(kept)), file=sys.stderr)
    if kept.empty:
        raise SystemExit("rayder-fit: no checkpoints left after the filters above (try --checkpoints all or "
                         "--keep-warmup)")
    return kept


def wants_analysis(args: argparse.Namespace) -> bool:
    return bool(args.compare or args.isoflop or args.two_stage or args.validate or args.holdout_above is not None)


def run_isoflop(args: argparse.Namespace, df: pd.DataFrame, *, n_col: str, c_col: str, y_col: str, run_col: str,
                metric: str | None, bench: str | None, store, d_col: str | None = None) -> int:
    budgets = [float(b) for b in args.budgets.split(",")] if args.budgets else None
    if run_col not in df.columns:
        df = df.assign(**{run_col: np.arange(len(df))})
    try:
        res = isoflop(df, budgets, run_col=run_col, n_col=n_col, c_col=c_col, y_col=y_col, cost=args.cost,
                      bootstrap=args.bootstrap, seed=args.seed, ci=args.ci, d_col=d_col)
    except ValueError as exc:
        print(f"rayder-fit: {exc}", file=sys.stderr)
        return 2
    if args.plot:
        plot_isoflop(res, args.plot, y_label=y_col)
    rec = res.to_record()
    if args.json:
        print(json.dumps(rec, indent=2, default=float))
    else:
        print(res.summary())
    if store is not None and not args.no_write:
        X = [df[c].to_numpy(dtype=float) for c in (n_col, c_col)]
        ci = res.ci
        store.write_fit({"sweep": args.sweep, "law": "isoflop", "metric": metric or y_col, "bench": bench,
                         "x_cols": [n_col, c_col], "y_col": y_col,
                         "params": {"a_N": res.a_N, "G": res.G, "a_D": res.a_D, "H": res.H},
                         "ci_low": {k: v[0] for k, v in ci.items()}, "ci_high": {k: v[1] for k, v in ci.items()},
                         "n_points": int(res.profiles["accepted"].sum()), "n_bootstrap": res.n_bootstrap,
                         "data_hash": _data_hash(X, df[y_col].to_numpy(dtype=float)), "holdout": rec["profiles"],
                         "formula": f"N*(C) = {res.G:.4g} C^{res.a_N:.4f}, D*(C) = {res.H:.4g} C^{res.a_D:.4f}"})
    return 0


def run_analysis(args: argparse.Namespace, df: pd.DataFrame, x: list[str], y: str, *, metric: str | None,
                 bench: str | None, store, fix: dict, tie: dict) -> int:
    """--compare, --two-stage, --validate prefix or --holdout-above on the fit points `df`."""
    sub = df[df["on_frontier_d"].astype(bool)] if "on_frontier_d" in df.columns else df
    write = store is not None and not args.no_write
    try:
        data_hash = _data_hash([sub[c].to_numpy(dtype=float) for c in x], sub[y].to_numpy(dtype=float))
    except KeyError as exc:
        print(f"rayder-fit: the points lack column {exc}; columns are {list(df.columns)}", file=sys.stderr)
        return 2
    meta = dict(metric=metric or y, bench=bench, sweep=args.sweep, x_cols=x, y_col=y, data_hash=data_hash)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FitWarning)
        try:
            if args.compare:
                laws = [s.strip() for s in args.compare.split(",") if s.strip()]
                table = compare_laws(df, laws, x, y, loo=not args.no_cv, lodo=not args.no_cv,
                                     fix={args.law: fix} if fix else None, tie={args.law: tie} if tie else None)
                print(table.drop(columns=["params"]).to_json(orient="records", indent=1) if args.json
                      else format_comparison(table))
                if write:
                    store.write_law_comparison(table, **meta)
            if args.two_stage:
                res = fit_data_constrained(df, x, y, bootstrap=args.bootstrap, seed=args.seed,
                                           objective=args.objective, delta=args.delta, n_starts=args.starts,
                                           param_repetition=args.param_repetition, ci=args.ci)
                print(res.summary())
                if write:
                    for r in (res.base, res.two_stage, res.joint):
                        store.write_fit(r.to_record(metric=metric or y, bench=bench, sweep=args.sweep))
            if args.validate == "prefix":
                curve = growing_prefix(df, args.law, x, y, ci=args.ci, fix=fix, tie=tie, objective=args.objective,
                                       delta=args.delta, n_starts=args.starts, by=args.prefix_by)
                print(curve.to_json(orient="records", indent=1) if args.json else
                      f"growing-prefix extrapolation by {curve['by'].iloc[0]} (fit on budgets <= train_max, predict "
                      "each later budget; errors are |predicted/measured - 1|):\n" + curve.drop(columns=["law", "by"]).to_string(
                          index=False, float_format=lambda v: f"{v:.4g}"))
                if write:
                    store.write_extrapolation(curve.to_dict(orient="records"), kind="prefix", law=args.law, **meta)
            if args.holdout_above is not None:
                fit, table = holdout_above(df, args.holdout_above, args.law, x, y, ci=args.ci, by=args.prefix_by,
                                           fix=fix, tie=tie,
                                           bootstrap=args.bootstrap, seed=args.seed, objective=args.objective,
                                           delta=args.delta, n_starts=args.starts, n_jobs=args.jobs)
                err = table["rel_err"].abs()
                print(fit.summary() + f"\nheld out {len(table)} points with {args.prefix_by or x[0]} >= "
                      f"{args.holdout_above:g}: mean "
                      f"|rel err| {100 * err.mean():.3g}%, max {100 * err.max():.3g}%, {int(table['inside'].sum())}"
                      f"/{len(table)} inside the {100 * args.ci:g}% lack-of-fit interval\n"
                      + table.to_string(index=False, float_format=lambda v: f"{v:.5g}"))
                if write:
                    store.write_extrapolation([{"train_max": float(fit.inputs[0].max()),
                                                "target_x0": float(table[x[0]].min()), "n_train": fit.n_points,
                                                "by": args.prefix_by or x[0],
                                                "n_test": len(table), "mean_abs_rel_err": float(err.mean()),
                                                "max_abs_rel_err": float(err.max()),
                                                "coverage": float(table["inside"].mean()),
                                                "detail": table.to_dict(orient="records")}],
                                              kind="holdout", law=fit.law_label, **meta)
        except (ValueError, RuntimeError) as exc:
            print(f"rayder-fit: {exc}", file=sys.stderr)
            return 2
    return 0
