"""`make seed-check` (= `python -m sweeps.seed_check`): is the demo's law robust to the seed?

Runs the demo grid again with seed 1 into its own store and run directory (`results-seed1.duckdb`,
`runs/demo-seed1`; the seed-0 demo is run first when its store has no finished grid), fits the primary MSE law on
both, and prints the comparison: the effective exponents alpha*gamma and beta*gamma of seed 1 (what the data
identify when one term dominates) against seed 0's bootstrap 95% CIs, whether those CIs are narrower than the
estimates, the difference of the two seeds' exponents over the standard error of both CIs (the calibrated
comparison: the rule above holds at most 83% of the time even with exact CIs), the answer of each seed to "does size
matter at the largest D?", each seed's frontier runs per D (how many independent runs the D exponent rests on), each
seed's best checkpoint per benchmark against the predictions that need no model, and the seed noise of one run's
final MSE at each data size D (runs matched by preset, D and length: where the law's exponents can move with the
seed);
`--simulate N` then refits the first grid's law on N simulated seeds with that noise (`sweeps.seed_noise`). With
`--validate` (as `make seed-check` calls it) each seed's demo also trains its held-out runs and predicts them (`make
validate`). A grid with several seeds per cell (`--set "grid.seeds=[0,1]"`: its laws are fitted on the seeds' mean,
`rayder-fit --replicates mean`) is compared with a grid of as many new seeds ([2, 3]). Exit status 0 when every
comparison holds, 1 otherwise.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from fitting.study import prepare_points
from sweeps import demo
from sweeps import study_checks as sc
from sweeps.seed_noise import format_seed_noise, seed_noise_by_d, simulate_seeds

SEED1_SETS = ["grid.seeds=[1]", "db=results-seed1.duckdb", "out_dir=runs/demo-seed1"]


def other_seeds(seeds: list[int]) -> list[int]:
    """The seeds of the comparison grid: as many as the grid has, after its largest ([0] -> [1]; a grid that
    averages two seeds per cell, [0, 1] -> [2, 3])."""
    return [max(seeds) + 1 + i for i in range(len(seeds))]


def other_seed_sets(seeds: list[int]) -> list[str]:
    """Overrides of the comparison demo: its seeds (`other_seeds`), its own store and run directory."""
    seeds1 = other_seeds(seeds)
    return [f"grid.seeds=[{','.join(map(str, seeds1))}]", *SEED1_SETS[1:]]


def seeds_label(seeds: list[int]) -> str:
    return f"seed{'s' if len(seeds) > 1 else ''} {','.join(map(str, seeds))}"


def compare_effective(fit0, fit1, labels: tuple[str, str] = ("seed 0", "seed 1")) -> tuple[list[str], bool]:
    """Lines comparing the second grid's effective exponents with the first's CIs, and whether all hold: each
    estimate of the second inside the first's 95% CI, and the first's CI narrower than its estimate."""
    e0, e1 = sc.effective_exponents(fit0), sc.effective_exponents(fit1)
    lines, ok = [], True
    for name, (est, lo, hi) in e0.items():
        other = e1.get(name, (float("nan"),) * 3)[0]
        inside = lo <= other <= hi
        narrow = (hi - lo) < est
        ok = ok and inside and narrow
        lines.append(f"  {name:<12} {labels[0]} {est:.3g} [{lo:.3g}, {hi:.3g}] (CI width {hi - lo:.3g} "
                     f"{'<' if narrow else '>='} estimate) | {labels[1]} {other:.3g} "
                     f"{'inside' if inside else 'OUTSIDE'} {labels[0]}'s CI")
    return lines, ok and bool(e0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sweeps.seed_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--grid", default=str(demo.DEMO_GRID))
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="grid override for both seeds (as `python -m sweeps.demo --set`; seed 1 keeps its own "
                             "seeds, db and out_dir)")
    parser.add_argument("--clips", type=int, default=None, help="synthetic training clips (passed to the demo)")
    parser.add_argument("--validate", action="store_true",
                        help="also train each seed's held-out runs and check its law against them (`make validate`)")
    parser.add_argument("--skip-runs", action="store_true", help="compare the existing stores only")
    parser.add_argument("--simulate", type=int, default=0, metavar="N",
                        help="also refit the first grid's law on N simulated seeds of its runs with the measured seed "
                             "noise (sweeps.seed_noise): the exponents' mean and spread, and how often a second seed "
                             "lands inside the first grid's CIs when only the seed changes")
    args = parser.parse_args(argv)
    if args.simulate < 0 or args.simulate == 1:
        parser.error(f"--simulate takes 0 (off) or at least 2 simulated seeds, not {args.simulate}")
    spec0 = demo.demo_spec(args.grid, args.overrides)
    sets1 = other_seed_sets(spec0.grid.seeds)
    spec1 = demo.demo_spec(args.grid, [*args.overrides, *sets1])
    labels = (seeds_label(spec0.grid.seeds), seeds_label(spec1.grid.seeds))
    extra = [*sum((["--set", s] for s in args.overrides), []), *(["--clips", str(args.clips)] if args.clips else []),
             *(["--validate"] if args.validate else [])]
    if not args.skip_runs:
        status = demo.grid_store(spec0).runs(spec0.name) if Path(spec0.db_path).exists() else None
        if args.validate or status is None or int((status["status"] == "finished").sum()) < len(spec0.runs()):
            print(f"seed-check: the {labels[0]} demo first", flush=True)
            if demo.main(["--grid", args.grid, *extra]):
                print(f"seed-check: the {labels[0]} demo had failed runs (see above)", file=sys.stderr)
                return 1
        print(f"seed-check: the demo with {labels[1]}", flush=True)
        if demo.main(["--grid", args.grid, *extra, *sum((["--set", s] for s in sets1), []),
                      "--pdf", "reports/out/study-seed1.pdf"]):
            print(f"seed-check: the {labels[1]} demo had failed runs (see above)", file=sys.stderr)
            return 1
    bench = demo.nvs_benches(spec0)[0]
    fits = []
    for spec in (spec0, spec1):
        # as many resamples as the demo's primary law: the comparison judges these CIs
        fit, _ = demo.fit_one(demo.grid_store(spec), spec, bench, "psnr", demo.PRIMARY_BOOTSTRAP)
        fits.append(fit)
    if any(f is None for f in fits):
        print("seed-check: a store has no fit (see above)", file=sys.stderr)
        return 1
    lines, ok = compare_effective(*fits, labels=labels)
    size = [sc.check_size_matters(demo.grid_store(s), s.name, bench) for s in (spec0, spec1)]
    same = size[0].ok == size[1].ok
    print(f"\nseed check on {bench} (MSE law):\n" + "\n".join(lines))
    for name, (diff, se, z) in sc.seed_difference(*fits).items():  # the calibrated comparison, beside the rule
        print(f"  {name:<12} {labels[1]} - {labels[0]}: {diff:+.3g} (standard error from both CIs {se:.3g}, "
              f"|z| = {z:.2f}: {'within' if z <= sc.Z95 else 'BEYOND'} {sc.Z95:.2f}; the rule above holds at most "
              f"{sc.SECOND_SEED_CEILING:.0%} of the time even with exact CIs)")
    for label, c in zip(labels, size):
        print(f"  size matters, {label}: {'yes' if c.ok else 'no'} ({c.measured})")
    print(f"  same answer on size: {'yes' if same else 'NO'}")
    for label, spec in zip(labels, (spec0, spec1)):  # where the D exponent can move with the seed (study_checks)
        store = demo.grid_store(spec)
        runs = sc.frontier_runs_by_d(demo.frontier_table(store, spec, bench, "psnr"))
        print(f"  frontier runs per D, {label}: {sc.format_runs_by_d(runs)}; "
              + sc.data_limited_line(demo.checkpoint_table(store, spec, bench, "psnr")))
    for label, spec in zip(labels, (spec0, spec1)):  # the best checkpoint against the predictions that need no model
        evals = demo.grid_evals(spec)
        for line in filter(None, (demo.best_checkpoint_line(evals, nvs) for nvs in demo.nvs_benches(spec))):
            print(f"  {label}, " + line.removeprefix("best:").strip())
    both = pd.concat([sc.final_mse_by_preset(demo.grid_store(s), s.name, bench) for s in (spec0, spec1)])
    means = both.groupby(["preset", "params"])["mean"].mean().reset_index().sort_values("params")
    falls = bool((means["mean"].diff().dropna() < 0).all())
    print(f"  final MSE at the largest D, mean of {labels[0]} and {labels[1]}: " + ", ".join(
        f"{p} {m:.5f}" for p, m in zip(means["preset"], means["mean"]))
        + f" ({'falls' if falls else 'does NOT fall'} monotonically with width)")
    raws = [demo.grid_store(s).eval_points(bench, "psnr", sweep=s.name) for s in (spec0, spec1)]
    noise = seed_noise_by_d(*raws)
    print(f"  {format_seed_noise(noise)}")
    if args.simulate and fits[0].fixed.get("gamma") != 1.0:
        print("  simulated seeds: only for laws with gamma held at 1 (the rule then judges alpha and beta)")
    elif args.simulate:
        table, _, _ = prepare_points(raws[0], demo.study_options(spec0, bench, "psnr", 0))  # each run's final point
        groups = table["preset"] + "@" + table["D"].astype(str)  # the lengths forked from one trunk
        runs = pd.DataFrame({"C": table["C"], "D": table["D"], "y": table["y"], "group": groups})
        sim = simulate_seeds(fits[0], runs, dict(zip(noise["D"], noise["sd_log"])), args.simulate, progress=True)
        print(f"  {sim.summary()}")
    print(f"seed check: {'met' if ok and same else 'NOT met'}")
    return 0 if ok and same else 1


if __name__ == "__main__":
    sys.exit(main())
