"""`make demo` (= `python -m sweeps.demo`): the whole study, small, on this machine.

1. generate the synthetic corpus (nested data fractions) and benchmarks where `sweeps/demo.yaml` expects them
   (cached: a second call is a no-op);
2. launch the grid of `sweeps/demo.yaml` with the local executor (or SLURM) and a progress bar;
3. fit each quantity once (the MSE law from PSNR, 1-SSIM, LPIPS where computed), store the laws as `rayder-fit`
   does, and `rayder-report` the store to a PDF;
4. print where the store and the PDF are, a summary (runs, compute, evaluated checkpoints, laws, time) and the
   study checks (does the study show a real law?).

`make validate` (= `python -m sweeps.demo --validate`) also trains the grid's `holdout:` runs and predicts them with
the law fitted on the grid alone. Re-running is idempotent: finished runs are skipped and no rows are duplicated.
"""
from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from fitting import FitOptions, StudyOptions, transform_metric
from fitting.bootstrap import bootstrap_groups_column
from fitting import fit_study as fit_points
from fitting.compare import format_comparison
from fitting.holdout_runs import format_holdout, holdout_points, store_holdout_validation, validate_holdout
from fitting.study import format_selection, prepare_points
from rayder_core.data.evalsets import parse_gap_index_name
from rayder_core.data.manifest import Manifest
from rayder_core.store import ResultsStore, RunSubset
from rayder_core.yamlconf import ConfigError
from sweeps import study_checks as sc
from sweeps.launcher import launch
from sweeps.spec import SweepSpec, load_spec

DEMO_GRID = Path(__file__).with_name("demo.yaml")
FIT_METRICS = ("psnr", "ssim", "lpips")  # each quantity once: PSNR is fitted as MSE (no second MSE law)
FIT_BOOTSTRAP = 100  # bootstrap resamples of the secondary laws (1-SSIM, LPIPS, other benchmarks)
PRIMARY_BOOTSTRAP = 1000  # of the primary MSE law and its free-floor refit, whose CIs the checks judge (rayder-fit's
                          # default): the 2.5% / 97.5% quantiles of 100 resamples move with the resampling seed
SUPERSAMPLE = 2
"""The corpus and benchmarks are rendered at this multiple of the training side and downsampled (antialiased) by the
loaders: the ray caster shoots one ray per pixel, so a clip rendered at 16^2 would alias."""
INDIST_SUFFIX = "-indist"  # benchmark roots named so are made of the training families (in-distribution)


def nvs_benches(spec: SweepSpec) -> list[str]:
    """The grid's NVS benchmarks in config order: the first is the primary law's (the in-distribution held-out set
    in the demo), the others get a law of their own (the held-out texture families: distribution shift)."""
    return [b.name for b in spec.runs()[0].eval.benchmarks if b.kind == "re10k"]


def bench_gaps(bench) -> tuple[int, int] | None:
    """(min, max) frames between the context views of a benchmark read through an extra gap index
    (`evaluation_index_gapsMIN-MAX.json`: the same scenes as its default index, the views further apart); None
    for any other benchmark."""
    return parse_gap_index_name(Path(bench.index).name) if bench.kind == "re10k" and bench.index else None


def gap_benches(spec: SweepSpec) -> list[str]:
    """The grid's NVS benchmarks read through an extra gap index (`bench_gaps`)."""
    return [b.name for b in spec.runs()[0].eval.benchmarks if bench_gaps(b)]


def _run_tool(module: str, args: list[str]) -> int:
    """Run a console-script module of this package with the current interpreter; returns its exit status."""
    cmd = [sys.executable, "-c", f"import sys; from {module} import main; sys.exit(main())", *args]
    print(f"$ {module.split('.')[0]}: {' '.join(args)}", flush=True)
    return subprocess.run(cmd).returncode


def prepare_data(spec: SweepSpec, *, clips: int, bench_scenes: int, workers: int, seconds: float,
                 shard_size: int = 10) -> None:
    """Generate the corpus, manifest and benchmarks the grid's runs read (paths and resolution from the grid)."""
    cfg = spec.runs()[0]
    manifest = Path(cfg.data.manifest)
    root = manifest.parent
    fractions = ",".join(f"{f:g}" for f in sorted(spec.grid.fractions))
    res = str(SUPERSAMPLE * cfg.data.resolution)
    if _run_tool("rayder_core.data.cli", ["synth", "--out", str(root), "--clips", str(clips), "--resolution", res,
                                          "--seconds", f"{seconds:g}", "--workers", str(workers),
                                          "--shard-size", str(shard_size),
                                          "--fractions", fractions]):
        raise SystemExit("demo: generating the synthetic corpus failed (see above)")
    have_manifest = manifest.is_file()
    lacking, seed = manifest_lacks(manifest, spec.grid.fractions) if have_manifest else ([], 0)
    if lacking:  # e.g. a grid with a fraction more: the same shard order, so the other fractions keep their shards
        print(f"demo: {manifest} has no data fraction {', '.join(f'{f:g}' for f in lacking)}: rebuilt with the "
              f"grid's fractions (seed {seed}: every fraction it had keeps its shards)", flush=True)
    if not have_manifest or lacking:
        if _run_tool("rayder_core.data.cli", ["manifest", "--shards", str(root / "shards"), "--fractions",
                                              fractions, "--seed", str(seed), "--out", str(manifest)]):
            raise SystemExit("demo: building the manifest failed (see above)")
    bench_roots = {Path(b.path).parent for b in cfg.eval.benchmarks}
    for bench_root in sorted(bench_roots):
        # a root named *-indist holds the in-distribution held-out set: new scenes of the training families (no
        # probe set); the others use the texture families never seen in training
        families = ["--families", "train", "--probe-sequences", "0"] if bench_root.name.endswith(INDIST_SUFFIX) \
            else []
        # a benchmark whose index is named evaluation_index_gapsMIN-MAX.json reads the same scenes with the context
        # views MIN..MAX frames apart: that index is written with the scenes
        gaps = sorted({bench_gaps(b) for b in cfg.eval.benchmarks if Path(b.path).parent == bench_root} - {None})
        extra = ["--extra-gaps", ",".join(f"{lo}-{hi}" for lo, hi in gaps)] if gaps else []
        if _run_tool("rayder_core.data.cli", ["bench", "--out", str(bench_root), "--scenes", str(bench_scenes),
                                              "--resolution", res, *families, *extra]):
            raise SystemExit("demo: generating the benchmarks failed (see above)")


def manifest_lacks(manifest: Path, fractions) -> tuple[list[float], int]:
    """The grid's data fractions that the manifest file does not define, and the manifest's shard-order seed."""
    loaded = Manifest.load(manifest)
    return [f for f in sorted(fractions) if not loaded.has(f)], loaded.seed


def demo_spec(grid: str | Path = DEMO_GRID, overrides: list[str] | None = None, *,
              validate: bool = False) -> SweepSpec:
    """The demo's grid; its `holdout:` runs are kept only with `validate` (`make validate`)."""
    spec = load_spec(grid, overrides)
    if not validate:
        spec.holdout = []
    return spec


def grid_store(spec: SweepSpec) -> RunSubset:
    """The grid's store restricted to the grid's runs (and its held-out runs, when `spec` has them): a store may also
    hold runs of the same sweep from an earlier design (a grid edited in place); the demo's fits and checks leave
    those out, and so does its report (`rayder-fit` and `rayder-report` read every run: `--where` selects)."""
    return RunSubset(ResultsStore(spec.db_path), grid_run_ids(spec))


def grid_run_ids(spec: SweepSpec) -> set[str]:
    """The run ids of the grid (and of its held-out runs, when `spec` has them)."""
    return {c.run_id for c in spec.runs()}


def other_design_runs(spec: SweepSpec) -> int:
    """How many runs of the grid's sweep in its store are not runs of the grid (an earlier design's)."""
    runs = ResultsStore(spec.db_path).runs(spec.name)
    return int((~runs["run_id"].isin(grid_run_ids(spec))).sum())


def study_options(spec: SweepSpec, bench: str, metric: str, bootstrap: int) -> StudyOptions:
    """How the demo fits `metric` on `bench`: the grid's `fit:` settings, 20 starts, `bootstrap` resamples."""
    return StudyOptions(fit=FitOptions(bootstrap=bootstrap, seed=0, n_starts=20, progress=True, metric=metric,
                                       bench=bench, sweep=spec.name, fix=dict(spec.fit.fix),
                                       bootstrap_groups=bootstrap_groups_column(spec.fit.bootstrap_by)),
                        metric=metric, checkpoints=spec.fit.checkpoints, drop_warmup=True,
                        min_step=spec.fit.min_step, replicates=spec.fit.replicates)


def fit_one(store, spec: SweepSpec, bench: str, metric: str, bootstrap: int | None = None):
    """Fit `metric` on `bench` over the grid's sweep with the grid's `fit:` settings (as `rayder-fit --metric METRIC
    --bench BENCH --sweep NAME --bootstrap N` plus `spec.fit.rayder_fit_args()` would; N = `bootstrap`, default
    FIT_BOOTSTRAP), store and print the law. Returns (FitResult or None, frontier points)."""
    raw = store.eval_points(bench, metric, sweep=spec.name)
    if raw.empty:
        return None, 0
    # FitWarnings are kept in the result's warnings (the checks read them)
    study = fit_points(raw, study_options(spec, bench, metric, FIT_BOOTSTRAP if bootstrap is None else bootstrap))
    print(f"demo: {metric} on {bench}: " + format_selection(study), flush=True)
    for note in study.notes:  # e.g. seeds of a cell that reached different outcomes
        print(f"  WARNING: {note}", flush=True)
    n_frontier = int(study.table["on_frontier_d"].sum()) if "on_frontier_d" in study.table else 0
    if study.problem:
        print(f"demo: fitting {metric} on {bench} failed: {study.problem}", file=sys.stderr)
        return study.fit, n_frontier
    store.write_fit(study.fit.to_record())
    print(study.fit.summary(), flush=True)
    return study.fit, n_frontier


def frontier_table(store, spec: SweepSpec, bench: str, metric: str) -> pd.DataFrame:
    """The per-D frontier table that `fit_one` fits (the grid's `fit:` selection; columns C, D, y, on_frontier_d,
    trunk, preset, ...); empty without evaluations."""
    raw = store.eval_points(bench, metric, sweep=spec.name)
    return raw if raw.empty else prepare_points(raw, study_options(spec, bench, metric, 0))[0]


def checkpoint_table(store, spec: SweepSpec, bench: str, metric: str) -> pd.DataFrame:
    """Every evaluated checkpoint of the grid's runs on `bench` (warmup included, no selection) with its
    lower-is-better target `y` (MSE on [-1, 1] from PSNR, 1-SSIM, LPIPS): where each run's held-out loss bottomed
    out (`fitting.d_term`)."""
    raw = store.eval_points(bench, metric, sweep=spec.name)
    return raw.assign(y=transform_metric(raw["value"], metric)) if len(raw) else raw


def fit_study(spec: SweepSpec) -> tuple[dict, int]:
    """Fit each quantity once on the grid's sweep (its held-out runs excluded): on the primary benchmark the MSE law
    from PSNR, 1-SSIM, and LPIPS where it was computed; on every other NVS benchmark the MSE law (key
    'psnr@<bench>'). Each law is stored as `rayder-fit` stores it and printed once. Returns ({key: FitResult or
    None}, MSE frontier points of the primary benchmark)."""
    store = grid_store(spec)
    other = other_design_runs(spec)
    if other:
        print(f"demo: {spec.db_path} holds {other} run(s) of sweep {spec.name!r} that are not in this grid (an earlier "
              f"design's): the demo's fits, checks and report leave them out; rayder-fit reads them unless "
              f"--where selects", flush=True)
    benches = nvs_benches(spec)
    fits: dict = {}
    n_frontier = 0
    if not benches:
        return fits, n_frontier
    for metric in FIT_METRICS:
        primary = metric == "psnr"
        fits[metric], n = fit_one(store, spec, benches[0], metric, PRIMARY_BOOTSTRAP if primary else FIT_BOOTSTRAP)
        if primary:
            n_frontier = n
    for bench in benches[1:]:
        fits[f"psnr@{bench}"], _ = fit_one(store, spec, bench, "psnr")
    return fits, n_frontier


def grid_runs_query(spec: SweepSpec) -> str:
    """A `rayder-report --where` query that keeps the grid's runs (and its held-out runs, when `spec` has them)."""
    return f"run_id in {sorted(grid_run_ids(spec))!r}"


def render_report(spec: SweepSpec, pdf: Path) -> Path | None:
    """`rayder-report` the store to `pdf` (only the grid's runs when the store also holds an earlier design's);
    returns the path, or None when the report failed."""
    pdf.parent.mkdir(parents=True, exist_ok=True)
    where = ["--where", grid_runs_query(spec)] if other_design_runs(spec) else []
    if _run_tool("reports.cli", ["--db", str(spec.db_path), "--out", str(pdf), "--bootstrap", str(FIT_BOOTSTRAP),
                                 *shlex.split(spec.fit.rayder_fit_args()), *where]) != 0 or not pdf.is_file():
        print("demo: rayder-report failed (see above)", file=sys.stderr)
        return None
    return pdf


def validate_and_check(spec: SweepSpec, fits: dict, n_frontier: int) -> tuple[list, pd.DataFrame | None]:
    """Predict the held-out runs (if any were trained) with the MSE law fitted on the grid alone (stored as an
    `extrapolations` record of kind 'holdout_run'), and run the study checks (`sweeps.study_checks`)."""
    store = grid_store(spec)
    bench = next((b.name for b in spec.runs()[0].eval.benchmarks if b.kind == "re10k"), None)
    if bench is None:
        return [], None
    summary_df = None
    # the primary law refitted with each parameter the grid holds (`fit.fix`) set free; None where it is not held
    free_floor = sc.free_refit(fits.get("psnr"), "L_inf", PRIMARY_BOOTSTRAP)
    free_gamma = sc.free_refit(fits.get("psnr"), "gamma", PRIMARY_BOOTSTRAP)
    if spec.holdout and fits.get("psnr") is not None:
        held = holdout_points(store, bench, "psnr", spec.holdout_sweep)
        if not held.empty:
            table, summary_df = validate_holdout(fits["psnr"], held)
            runs = store.runs(spec.holdout_sweep)
            done = set(runs.loc[runs["status"] == "finished", "run_id"])
            summary_df["finished"] = summary_df["run_id"].isin(done)  # a stopped run's last checkpoint is no test
            print("\n" + format_holdout(summary_df, "MSE (pixels in [-1, 1], as the law)"))
            line = sc.free_floor_holdout(free_floor, held)  # the floor a free refit finds, tested beyond the grid
            if line:
                print(line)
            store_holdout_validation(store, fits["psnr"], table, summary_df, bench=bench, metric="psnr",
                                     sweep=spec.holdout_sweep)
    comparison = sc.gamma_one_comparison(fits.get("psnr"))
    if comparison is not None:
        law = fits["psnr"]
        store.write_law_comparison(comparison, metric="psnr", bench=bench, sweep=spec.name, x_cols=list(law.x),
                                   y_col=law.y, data_hash=law.data_hash)  # as `rayder-fit --compare` stores it
        print("\ndemo: the MSE law has a parameter at a bound (" + ", ".join(sc.params_at_bound(law))
              + "); the card law vs gamma = 1 on the same points (rayder-fit --compare kaplan,additive):\n"
              + format_comparison(comparison))
    checks = [sc.check_learning(store, spec.name), sc.check_baseline(store, spec.name, bench),
              sc.check_beats_blend(store, spec.name, bench, fits.get("psnr")),
              sc.check_size_matters(store, spec.name, bench), sc.check_overfit_mse(store, spec.name, bench),
              sc.check_frontier(n_frontier, minimum=20),
              sc.check_identified_law(fits.get("psnr"), "MSE (from PSNR)", 0.97, comparison=comparison,
                                      free_floor=free_floor, free_gamma=free_gamma),
              sc.check_d_term_runs(frontier_table(store, spec, bench, "psnr"), fits.get("psnr"),
                                   points=checkpoint_table(store, spec, bench, "psnr")),
              sc.check_law(fits.get("ssim"), "1-SSIM", 0.93, False),
              sc.check_extrapolation_slope(fits.get("psnr"), store, spec.name, bench),
              sc.check_skips(store, spec.name)]
    if spec.holdout:
        checks.append(sc.check_holdout_10(summary_df))
    for wide in gap_benches(spec):  # the blend is harder to beat with the context views further apart
        checks.append(sc.check_beats_blend(store, spec.name, wide, fits.get(f"psnr@{wide}")))
    return checks, summary_df


def summary(spec: SweepSpec, pdf: Path | None, seconds: float) -> str:
    store = ResultsStore(spec.db_path)
    ids = [c.run_id for c in spec.runs()]
    runs = store.runs()  # the grid's sweep and its held-out runs' sweep
    runs = runs[runs["run_id"].isin(ids)]
    ck = store.checkpoints()
    ck = ck[ck["run_id"].isin(ids)]
    ev = grid_evals(spec)
    n_eval = ev.groupby("run_id")["step"].nunique() if len(ev) else None
    compute = ck.groupby("run_id")["compute_gflop"].max().sum() if len(ck) else 0.0
    lines = [
        f"store:   {spec.db_path}",
        f"report:  {pdf if pdf else '(not rendered)'}",
        f"runs:    {int((runs['status'] == 'finished').sum())}/{len(ids)} finished "
        f"({', '.join(f'{n} {s}' for s, n in runs['status'].value_counts().items())})",
        f"compute: {compute:.4g} GFLOP in total; evaluated checkpoints per run: "
        f"{'-' if n_eval is None else f'{int(n_eval.min())}..{int(n_eval.max())}'}",
    ]
    fits = store.fits()
    if len(fits):
        fits = fits[fits["sweep"].fillna(spec.name) == spec.name]
        for _, f in fits.drop_duplicates(["metric", "bench"], keep="last").iterrows():  # the latest fit of each law
            lines.append(f"law:     {f['metric']} on {f['bench']}: {f['formula']}  (R^2 = {f['r2']:.3f}, "
                         f"{f['n_points']} frontier points)")
    lines += [line for bench in nvs_benches(spec) if (line := best_checkpoint_line(ev, bench))]
    lines.append(f"time:    {seconds / 60:.1f} min (data, {len(ids)} runs, fits, report)")
    return "\n".join(lines)


def grid_evals(spec: SweepSpec) -> pd.DataFrame:
    """The recorded (non-missing) evaluations of the grid's runs (and its held-out runs, when `spec` has them)."""
    ev = ResultsStore(spec.db_path).evals()
    return ev[ev["run_id"].isin(grid_run_ids(spec)) & ev["value"].notna()]


def best_checkpoint_line(evals: pd.DataFrame, bench: str) -> str | None:
    """'best:    on BENCH: novel views P dB (run at step S); its context views re-rendered R dB; no model: frame
    blend B dB, nearest context view N dB' from `evals` rows (run_id, step, bench, metric, value): the checkpoint
    with the highest novel-view PSNR, what it scores when it re-renders its own inputs (`recon_psnr`: reconstruction,
    nothing to synthesise) and the predictions that need no model at the same scenes; None without PSNRs."""
    rows = evals[evals["bench"] == bench].pivot_table(index=["run_id", "step"], columns="metric", values="value")
    if "psnr" not in rows.columns or rows["psnr"].isna().all():
        return None
    run_id, step = rows["psnr"].idxmax()
    best = rows.loc[(run_id, step)]
    line = f"best:    on {bench}: novel views {best['psnr']:.2f} dB ({run_id} at step {step})"
    if not pd.isna(best.get("recon_psnr")):
        line += f"; its context views re-rendered {best['recon_psnr']:.2f} dB"
    extra = [f"{label} {best[m]:.2f} dB" for m, label in (("blend_psnr", "frame blend"),
                                                           ("copy_psnr", "nearest context view"))
             if not pd.isna(best.get(m))]
    return line + (f"; no model: {', '.join(extra)}" if extra else "")


def next_commands(spec: SweepSpec, grid: str, overrides: list[str], pdf: str) -> list[str]:
    """The commands to try after the demo, exactly as they apply to it (issue 15: the card's commands work verbatim):
    `--db`, `--out` and `--set` where the demo ran with other values; the `rayder-fit` lines fit the grid's sweep
    (`--sweep`: without it the held-out runs' points would join the law) with the grid's `fit:` settings."""
    grid = os.path.relpath(grid) if not os.path.relpath(grid).startswith("..") else grid
    db = ("" if Path(spec.db_path).resolve() == Path("results.duckdb").resolve()
          else f" --db {shlex.quote(str(spec.db_path))}")
    out = "" if Path(pdf).resolve() == Path("reports/out/study.pdf").resolve() else f" --out {shlex.quote(pdf)}"
    sets = "".join(f" --set {shlex.quote(o)}" for o in overrides)
    fit = spec.fit.rayder_fit_args()
    sweep = f" --sweep {shlex.quote(spec.name)}"
    return [
        f"rayder-fit --metric mse --bench indist{sweep}{fit}{db}     # the demo's primary law (in-distribution set)",
        f"rayder-fit --metric mse --bench re10k{sweep}{fit}{db}      # the distribution-shift law (held-out families)",
        f"rayder-report{fit}{db}{out}                           # the study PDF again",
        f"rayder-sweep status {shlex.quote(grid)}{sets}       # state of every run"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sweeps.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--grid", default=str(DEMO_GRID), help="grid file (default: sweeps/demo.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a grid key, e.g. --set base.steps=400")
    parser.add_argument("--executor", default="local", choices=("local", "slurm", "auto"),
                        help="where the runs train (default: local; slurm waits for the jobs)")
    parser.add_argument("--clips", type=int, default=2048, help="synthetic training clips (default 2048)")
    parser.add_argument("--shard-size", type=int, default=8,
                        help="clips per shard (default 8: the demo's fractions of 2048 clips give D = 64 / 128 / 256 / "
                             "512 / 1024 / 2048)")
    parser.add_argument("--seconds", type=float, default=5.0, help="clip length in seconds (default 5)")
    parser.add_argument("--bench-scenes", type=int, default=32, help="benchmark scenes (default 32)")
    parser.add_argument("--workers", type=int, default=2, help="data-generation processes (default 2)")
    parser.add_argument("--pdf", default="reports/out/study.pdf", help="report path")
    parser.add_argument("--validate", action="store_true",
                        help="also train the grid's held-out runs (`holdout:`) and check the law fitted on the grid "
                             "alone against them (`make validate`); finished grid runs are reused")
    args = parser.parse_args(argv)

    t0 = time.monotonic()
    try:
        spec = demo_spec(args.grid, args.overrides, validate=args.validate)
    except (ConfigError, OSError) as exc:  # a malformed grid or --set: the message names the file and the key
        print(f"demo: {exc}", file=sys.stderr)
        return 2
    print(f"demo: preparing synthetic data for {args.grid}", flush=True)
    prepare_data(spec, clips=args.clips, bench_scenes=args.bench_scenes, workers=args.workers, seconds=args.seconds,
                 shard_size=args.shard_size)
    t_data = time.monotonic() - t0
    print(f"demo: data ready in {t_data:.0f} s; launching {len(spec.runs())} runs", flush=True)
    result = launch(spec, executor=args.executor, wait=True)
    t_train = time.monotonic() - t0 - t_data
    floor = result.preflight.cpu if result.preflight is not None else None
    print(f"demo: training done in {t_train / 60:.1f} min"
          + (f": {floor.achieved(t_train)}" if floor is not None and t_train > 0 else ""), flush=True)
    fits, n_frontier = fit_study(spec)
    pdf = render_report(spec, Path(args.pdf))
    checks, _ = validate_and_check(spec, fits, n_frontier)
    if checks:
        checks.append(sc.check_study_time(time.monotonic() - t0, len(result.submitted), len(spec.runs()), floor))
    print("\n" + summary(spec, pdf, time.monotonic() - t0))
    if checks:
        print("checks:  does the study show a law that holds? (issue 23's targets)\n" + sc.format_checks(checks))
    print("\nnext:    " + "\n         ".join(next_commands(spec, args.grid, args.overrides, args.pdf)))
    return 1 if result.errors else 0


if __name__ == "__main__":
    sys.exit(main())
