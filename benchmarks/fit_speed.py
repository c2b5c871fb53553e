"""Speed of scaling-law fits (not a test): timings and ratios measured in one run.

    .venv/bin/python benchmarks/fit_speed.py [--bootstrap 1000] [--jobs 2] [--brute-force]

1. one `kaplan` fit (20 refined grid starts) on ~40 frontier points of Eq. 4-like synthetic data (target < 2 s);
2. the Chinchilla `additive` fit on 240 points (target < 30 s), and with --brute-force every grid start refined;
3. N bootstrap refits of the kaplan fit in `--jobs` processes (target: 1000 in < 60 s on 2 cores).
4. (issue 12, `--analyses`, or alone with `--analyses-only`) each analysis on ~50 synthetic points, target < 10 s
   on 2 cores: constrained fit with bootstrap, law comparison with LOO/LODO, isoFLOP with bootstrap, the
   data-constrained two-stage + joint fit, growing-prefix validation, hold-out prediction with bootstrap.
Timings are relative to a 256x256 float64 matmul measured in the same run (machine load varies).
"""
from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from test_fitting_synth import eval_points  # noqa: E402

from fitting import fit_law, frontier  # noqa: E402


def _matmul_s() -> float:
    a = np.random.default_rng(0).standard_normal((256, 256))
    t = time.perf_counter()
    for _ in range(50):
        a @ a
    return (time.perf_counter() - t) / 50


def _timed(label: str, ref: float, fn):
    t = time.perf_counter()
    out = fn()
    dt = time.perf_counter() - t
    print(f"{label:<58} {dt:8.2f} s  ({dt / ref:10.0f} x matmul256)")
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--brute-force", action="store_true")
    ap.add_argument("--analyses", action="store_true", help="also time the issue-12 analyses (section 4)")
    ap.add_argument("--analyses-only", action="store_true", help="only section 4")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    ref = _matmul_s()
    print(f"reference 256x256 matmul: {ref * 1e3:.3f} ms")
    if args.analyses or args.analyses_only:
        analyses(ref, args.bootstrap, args.jobs)
        if args.analyses_only:
            return

    pts = frontier(eval_points("mse", 0, steps=range(50_000, 160_000, 20_000)), "mse", min_step=50_000)
    r = _timed(f"kaplan fit, {int(pts.on_frontier_d.sum())} frontier points, 8 starts", ref,
               lambda: fit_law(pts, bootstrap=0, holdout=False))
    print("   ", r.formula(), f"({r.n_starts_at_best}/{r.n_starts} starts at best)")

    csv = ROOT.parent / "shared" / "data" / "chinchilla" / "svg_extracted_data.csv"
    if csv.exists():
        df = pd.read_csv(csv).rename(columns={"Model Size": "N", "Training FLOP": "C"})
        df["D"] = df["C"] / (6 * df["N"])
        df = df.sort_values("loss").iloc[:-5]
        c = _timed("Chinchilla additive fit, 240 points, 8 starts", ref,
                   lambda: fit_law(df, law="additive", x=["N", "D"], y="loss", bootstrap=0, holdout=False))
        print(f"    objective {c.objective:.6g}, alpha {c.params['alpha']:.4f}, beta {c.params['beta']:.4f}, "
              f"E {c.params['L_inf']:.4f} ({c.n_starts_at_best}/{c.n_starts} starts at best)")
        if args.brute_force:
            b = _timed("Chinchilla additive fit, every grid start refined", ref,
                       lambda: fit_law(df, law="additive", x=["N", "D"], y="loss", bootstrap=0, holdout=False,
                                       n_starts=None))
            print(f"    objective {b.objective:.6g} ({b.n_starts_at_best}/{b.n_starts} starts at best)")

    _timed(f"kaplan fit + {args.bootstrap} bootstraps on {args.jobs} processes", ref,
           lambda: fit_law(pts, bootstrap=args.bootstrap, holdout=False, n_jobs=args.jobs, progress=False))


def analyses(ref: float, bootstrap: int, jobs: int) -> None:
    """Section 4: the issue-12 analyses on ~50 points each (synthetic data of the tests), one table."""
    from test_fitting_data_constrained import _data as dc_data
    from test_fitting_isoflop import _design

    from fitting import compare_laws, fit_data_constrained, growing_prefix, holdout_above, isoflop

    rng = np.random.default_rng(0)
    C, D = [a.ravel() for a in np.meshgrid(np.geomspace(1e2, 1e6, 10), [1e2, 3e2, 1e3, 3e3, 1e4])]
    surf = pd.DataFrame({"C": C, "D": D, "y": (0.01 + (2 * C ** -0.4 + D ** -0.5) ** 2.0)
                         * np.exp(rng.normal(0, 0.01, len(C)))})  # 50 points, kaplan law
    dc = dc_data()
    dc = dc[dc.U == 1e9].reset_index(drop=True)  # 54 points (6 sizes x 9 epoch counts)
    iso = _design(lambda k: 1.0, noise=0.003)  # 63 points (7 budgets x 9 sizes)
    rows = [
        (f"fit additive, tie beta=alpha, {bootstrap} bootstraps ({jobs} proc.)", len(surf),
         lambda: fit_law(surf, law="additive", tie={"beta": "alpha"}, bootstrap=bootstrap, n_jobs=jobs,
                         progress=False)),
        ("compare 4 laws (AIC/BIC + LOO + LODO)", len(surf),
         lambda: compare_laws(surf, ["additive", "kaplan", "modulated", "single"], progress=False)),
        ("compare 4 laws, --no-cv", len(surf),
         lambda: compare_laws(surf, ["additive", "kaplan", "modulated", "single"], loo=False, lodo=False,
                              progress=False)),
        (f"isoFLOP, {bootstrap} bootstraps", len(iso), lambda: isoflop(iso, bootstrap=bootstrap)),
        (f"data-constrained two-stage + joint, {bootstrap} bootstraps", len(dc),
         lambda: fit_data_constrained(dc, x=["N", "D", "U"], bootstrap=bootstrap, n_jobs=jobs, progress=False)),
        (f"data-constrained with R_N* (--param-repetition), {bootstrap} bootstraps", len(dc),
         lambda: fit_data_constrained(dc, x=["N", "D", "U"], bootstrap=bootstrap, param_repetition=True)),
        ("growing prefix, kaplan (fresh fit per prefix)", len(surf),
         lambda: growing_prefix(surf, law="kaplan", progress=False)),
        (f"hold-out above C=2e5, kaplan, {bootstrap} bootstraps", len(surf),
         lambda: holdout_above(surf, 2e5, law="kaplan", bootstrap=bootstrap, n_jobs=jobs, progress=False)),
    ]
    import os
    import resource

    def cpu() -> float:  # user + system seconds of this process and its finished children (bootstrap workers)
        a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime

    print(f"\nload average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (wall time grows with it; CPU seconds "
          "do not)")
    print(f"{'issue-12 analysis':<58} {'points':>6} {'wall s':>7} {'CPU s':>7}  (target < 10 s wall on 2 free cores)")
    for label, n, fn in rows:
        t, c = time.perf_counter(), cpu()
        fn()
        dt, dc_ = time.perf_counter() - t, cpu() - c
        print(f"{label:<58} {n:>6} {dt:7.2f} {dc_:7.2f}  ({dt / ref:7.0f} x matmul256)")


if __name__ == "__main__":
    main()
