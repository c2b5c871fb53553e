"""The demo's fit-and-check stage (issues 10, 23): each quantity is fitted once, stored once, printed once; the primary
law on the in-distribution set, a second MSE law on the held-out texture families.

The store is the demo-shaped synthetic store of tests/test_first_hour.py (MSE from a known law plus noise)."""
from __future__ import annotations

import dataclasses
import shlex
from pathlib import Path

from rayder_core.store import ResultsStore
from reports.common import load_study
from sweeps import demo
from sweeps import study_checks as sc
from tests.test_first_hour import _demo_like_store


def test_fit_study_fits_each_quantity_once(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(demo, "FIT_BOOTSTRAP", 8)
    monkeypatch.setattr(demo, "PRIMARY_BOOTSTRAP", 12)
    db = tmp_path / "results.duckdb"
    _demo_like_store(db, bench="indist-synth", extra_bench="re10k-synth")
    # the synthetic store's run ids are not the grid's: read all of it (test_demo_fits_only_its_grids_runs tests the
    # demo's restriction to its grid's runs)
    monkeypatch.setattr(demo, "grid_store", lambda spec: ResultsStore(spec.db_path))
    # the synthetic store's checkpoints are at steps 30..120; its law has a floor, fitted free on every checkpoint
    spec = demo.demo_spec(demo.DEMO_GRID, [f"db={db}", "fit.min_step=0", "fit.checkpoints=all", "fit.fix={}"])
    assert demo.nvs_benches(spec) == ["indist-synth", "indist-wide", "re10k-synth"]
    assert demo.gap_benches(spec) == ["indist-wide"]  # the same scenes, context views 12-24 frames apart
    fits, n_frontier = demo.fit_study(spec)
    out = capsys.readouterr().out

    assert set(fits) == {"psnr", "ssim", "lpips", "psnr@indist-wide", "psnr@re10k-synth"}
    assert fits["psnr@indist-wide"] is None  # not evaluated in this store
    assert fits["lpips"] is None  # recorded missing (no VGG weights): no law, no made-up number
    assert fits["psnr@re10k-synth"] is None  # the second benchmark holds only mse here: no PSNR law
    stored = ResultsStore(db).fits()
    assert sorted(stored["metric"]) == ["psnr", "ssim"]  # one MSE law (from PSNR), never a second one from mse
    assert set(stored["bench"]) == {"indist-synth"}
    assert all(out.count(fits[m].summary()) == 1 for m in ("psnr", "ssim"))  # each law printed once
    # the MSE law of a demo-shaped study: the frontier is counted, and the fit explains the known surface
    assert n_frontier > 0
    assert fits["psnr"].r2 > 0.9
    # the checks judge the primary law's CIs: they get PRIMARY_BOOTSTRAP resamples, the other laws FIT_BOOTSTRAP
    assert (fits["psnr"].n_bootstrap, fits["ssim"].n_bootstrap) == (12, 8)

    checks, holdout = demo.validate_and_check(spec, fits, n_frontier)
    names = [c.name for c in checks]
    assert holdout is None and not any("held-out" in n for n in names)  # `make demo` has no held-out run
    law = next(c for c in checks if c.name.startswith("MSE"))
    fit = fits["psnr"]
    # issue 23's rule written out: R^2 >= 0.97; each exponent's CI above 0, below its bound 5 and narrower than twice
    # the estimate; no parameter at a bound and L_inf not drifted to 0
    expected = fit.r2 >= 0.97 and not any("bound" in w or "drifted" in w for w in fit.warnings) and all(
        0.005 < fit.ci_low[e] and fit.ci_high[e] < 4.995 and fit.ci_high[e] - fit.ci_low[e] < 2 * fit.params[e]
        for e in ("alpha", "beta"))
    assert law.ok == expected
    # the D exponent's support: the runs on each D's frontier of the table the primary law was fitted on
    d_term = next(c for c in checks if c.name.startswith("D term"))
    runs = sc.frontier_runs_by_d(demo.frontier_table(ResultsStore(db), spec, "indist-synth", "psnr"))
    assert d_term.measured.startswith("frontier runs per D: " + ", ".join(f"{int(d)}: {n}" for d, n in runs.items()))
    assert sc.format_runs_by_d(runs) in d_term.measured
    assert d_term.ok is bool((runs >= 2).all())
    # a primary law with a parameter at a bound: the AIC comparison against gamma = 1 is printed and stored as
    # `rayder-fit --compare kaplan,additive` stores it (one row per law, on the law's own points)
    bounded = dataclasses.replace(fit, ci_high={**fit.ci_high, "beta": fit.law.bounds["beta"][1]})
    demo.validate_and_check(spec, {**fits, "psnr": bounded}, n_frontier)
    table = ResultsStore(db).law_comparisons("psnr")
    assert sorted(t.split("[")[0] for t in table["law"]) == ["additive", "kaplan"]
    assert set(table["sweep"]) == {"demo"} and set(table["n_points"]) == {len(fit.targets)}
    assert "the card law vs gamma = 1" in capsys.readouterr().out


def test_a_bad_override_is_one_clear_line_and_nothing_starts(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)  # nothing may be written: no data, no store
    assert demo.main(["--set", "base.compile=none"]) == 2
    err = capsys.readouterr().err
    assert "base.compile" in err and "'none'" in err and "demo.yaml" in err and "Traceback" not in err
    assert not any(tmp_path.iterdir())


def test_demo_without_validate_drops_holdout_runs() -> None:
    full = demo.demo_spec(validate=True)
    plain = demo.demo_spec()
    assert full.holdout and not plain.holdout
    ids = {c.run_id for c in plain.runs()}
    assert ids < {c.run_id for c in full.runs()}  # the grid's runs are the same in both: `make validate` reuses them
    assert all(c.sweep == plain.name for c in plain.runs())


def test_local_runs_start_largest_first() -> None:
    """The local executor starts runs by training FLOPs, largest first (LPT): the demo's tiny-w64 runs start
    before tiny-w32's, and the order is non-increasing in the FLOPs counted independently per run (the steps it
    trains: a run that starts from its trunk's checkpoint trains only the steps after it)."""
    from rayder_core.models import model_config, train_flops_per_step
    from rayder_core.training.trunk import start_step
    from sweeps.launcher import _longest_first

    cfgs = demo.demo_spec().runs()
    ordered = _longest_first(cfgs)
    assert sorted(c.run_id for c in ordered) == sorted(c.run_id for c in cfgs)
    flops = [(c.steps - start_step(c)) * train_flops_per_step(model_config(c.model, source="test"),
                                                              c.data.resolution, c.data.frames, c.batch_size)
             for c in ordered]
    assert flops == sorted(flops, reverse=True)
    assert ordered[0].model["preset"] == "tiny-w64" and ordered[-1].model["preset"] == "tiny-w32"


def test_demo_renders_data_at_twice_the_training_side(monkeypatch) -> None:
    """The corpus and both benchmark roots are rendered at SUPERSAMPLE x the training resolution (the ray caster
    shoots one ray per pixel; the loaders downsample with antialiasing)."""
    calls: list[list[str]] = []
    monkeypatch.setattr(demo, "_run_tool", lambda module, args: calls.append(args) or 0)
    monkeypatch.setattr(Path, "is_file", lambda self: True)
    monkeypatch.setattr(demo, "manifest_lacks", lambda manifest, fractions: ([], 0))  # a manifest with every fraction
    spec = demo.demo_spec()
    demo.prepare_data(spec, clips=16, bench_scenes=2, workers=1, seconds=5.0)
    train_side = spec.runs()[0].data.resolution
    sides = [int(a[a.index("--resolution") + 1]) for a in calls]
    assert [a[0] for a in calls] == ["synth", "bench", "bench"]
    assert sides == [demo.SUPERSAMPLE * train_side] * 3 and demo.SUPERSAMPLE == 2


def test_demo_laws_ignore_checkpoints_before_the_min_step(tmp_path: Path, monkeypatch) -> None:
    """The grid's `fit.min_step` drops the take-off checkpoints from the demo's frontier (`rayder-fit --min-step`)."""
    monkeypatch.setattr(demo, "FIT_BOOTSTRAP", 0)
    db = tmp_path / "results.duckdb"
    _demo_like_store(db, bench="indist-synth")
    store = ResultsStore(db)
    counts = {}
    for min_step in (0, 90):
        spec = demo.demo_spec(demo.DEMO_GRID, [f"db={db}", f"fit.min_step={min_step}", "fit.checkpoints=all"])
        _, counts[min_step] = demo.fit_one(store, spec, "indist-synth", "psnr")
    raw = store.eval_points("indist-synth", "psnr", sweep="demo")
    late = raw[raw["step"] >= 90]
    assert 0 < counts[90] <= late.groupby("D").size().sum() < len(raw)
    assert counts[90] < counts[0]


def test_grid_fit_settings_reach_the_fit_and_the_report(tmp_path: Path, monkeypatch) -> None:
    """`fit: {checkpoints: final, fix: {L_inf: 0}}` in the grid: the demo fits only each run's last checkpoint with
    L_inf held at 0, and the report given the same options (`spec.fit.rayder_fit_args()`) shows that stored law."""
    import pytest

    from reports.fits import fit_metric
    from rayder_core.yamlconf import ConfigError

    monkeypatch.setattr(demo, "FIT_BOOTSTRAP", 8)
    monkeypatch.setattr(demo, "PRIMARY_BOOTSTRAP", 8)
    db = tmp_path / "results.duckdb"
    _demo_like_store(db, bench="indist-synth")
    spec = demo.demo_spec(demo.DEMO_GRID, [f"db={db}", "fit.checkpoints=final", "fit.min_step=0",
                                           "fit.fix={L_inf: 0}"])
    assert spec.fit.rayder_fit_args() == " --checkpoints final --fix L_inf=0 --bootstrap-by trunk"
    fit, n = demo.fit_one(ResultsStore(db), spec, "indist-synth", "psnr")
    runs = ResultsStore(db).eval_points("indist-synth", "psnr", sweep="demo")["run_id"].nunique()
    assert fit.params["L_inf"] == 0 and fit.fixed == {"L_inf": 0.0} and 0 < n <= runs  # one point per run at most
    assert fit.bootstrap_groups == "trunk" and fit.n_bootstrap_groups > 0  # the grid's trunks are resampled whole
    shown = fit_metric(load_study(db), "indist-synth", "psnr", bootstrap=4, checkpoints="final", fix={"L_inf": 0},
                       bootstrap_by="trunk")
    assert shown.source.startswith("stored fit") and shown.formula == fit.formula()
    assert shown.band_fit.bootstrap_groups == "trunk"  # the report's band resamples the same units
    # the store records what the stored CIs resampled; a report that resamples another unit does not show them
    assert list(ResultsStore(db).fits("psnr")["bootstrap_unit"]) == ["trunk"]
    other = fit_metric(load_study(db), "indist-synth", "psnr", bootstrap=4, checkpoints="final", fix={"L_inf": 0},
                       bootstrap_by="point")
    assert other.source.startswith("fitted now") and other.band_fit.bootstrap_groups is None
    assert any("resampled whole trunk groups" in n and "resamples points" in n for n in other.notes), other.notes
    with pytest.raises(ConfigError, match=r"fit.fix.Linf: not a parameter"):
        demo.demo_spec(demo.DEMO_GRID, ["fit.fix={Linf: 0}"])
    from reports import cli as report_cli
    with pytest.raises(SystemExit) as bad:  # rayder-report --fix with a name the law lacks: a usage error, no report
        report_cli.main(["--db", str(db), "--out", str(tmp_path / "r.pdf"), "--fix", "Linf=0"])
    assert bad.value.code == 2 and not (tmp_path / "r.pdf").exists()


def test_a_grid_with_a_new_fraction_rebuilds_the_manifest_keeping_the_old_fractions(synth_data, tmp_path: Path,
                                                                                  monkeypatch, capsys) -> None:
    """An existing corpus whose manifest lacks one of the grid's fractions (a design with one D more) gets its
    manifest rebuilt with the same shard order: every fraction it had keeps its shards (so its runs stay valid). A
    manifest that has every fraction is left as it is. Real `rayder-data manifest`; corpus and benchmarks skipped."""
    import json
    import shutil

    root = tmp_path / "synth"
    shutil.copytree(synth_data.root / "shards", root / "shards")
    shutil.copy(synth_data.manifest, root / "manifest.json")  # fractions 0.01 / 0.1 / 1.0, shard paths relative
    before = json.loads((root / "manifest.json").read_text())
    real = demo._run_tool
    monkeypatch.setattr(demo, "_run_tool", lambda module, args: real(module, args) if args[0] == "manifest" else 0)
    spec = demo.demo_spec(overrides=[f"base.data.manifest={root / 'manifest.json'}", "grid.fractions=[0.1, 0.5, 1.0]"])
    demo.prepare_data(spec, clips=40, bench_scenes=2, workers=1, seconds=5.0)
    assert "has no data fraction 0.5: rebuilt" in capsys.readouterr().out
    after = json.loads((root / "manifest.json").read_text())
    shards = lambda m: {e["fraction"]: e["shards"] for e in m["fractions"]}  # noqa: E731
    assert sorted(shards(after)) == [0.1, 0.5, 1.0]
    assert shards(after)[0.1] == shards(before)[0.1] and shards(after)[1.0] == shards(before)[1.0]
    assert after["shards"] == before["shards"] and after["seed"] == before["seed"]
    text = (root / "manifest.json").read_text()
    demo.prepare_data(spec, clips=40, bench_scenes=2, workers=1, seconds=5.0)  # nothing lacking: left as it is
    assert (root / "manifest.json").read_text() == text and "rebuilt" not in capsys.readouterr().out


def test_demo_fits_only_its_grids_runs(tmp_path: Path) -> None:
    """A store that also holds a run of sweep 'demo' from an earlier design (a grid edited in place): the demo's
    store view (`grid_store`, used by its fits, checks and the seed check) leaves it out and counts it."""
    spec = demo.demo_spec(overrides=[f"db={tmp_path / 'results.duckdb'}"])
    grid_run = spec.runs()[0]
    store = ResultsStore(spec.db_path)
    for run_id in (grid_run.run_id, "demo-tiny-w16-f1-0123456789"):
        store.upsert_run(run_id, sweep="demo", preset="tiny-w32", params=1, fraction=1.0, D=2048, config={},
                         status="finished")
    assert demo.other_design_runs(spec) == 1
    assert list(demo.grid_store(spec).runs("demo")["run_id"]) == [grid_run.run_id]
    assert len(store.runs("demo")) == 2
    # its report reads the same runs: the query it passes to rayder-report --where keeps the grid's run only
    kept = load_study(spec.db_path, where=demo.grid_runs_query(spec)).runs
    assert list(kept["run_id"]) == [grid_run.run_id]


def test_next_commands_fit_the_grids_sweep_with_its_fit_settings(tmp_path: Path, monkeypatch) -> None:
    """The printed rayder-fit commands parse, name the grid's sweep (without it the held-out runs' points would join
    the law) and carry the grid's `fit:` settings; other stores, PDFs and overrides appear where the demo used them."""
    from fitting.cli import _parser

    monkeypatch.chdir(tmp_path)
    spec = demo.demo_spec()
    lines = demo.next_commands(spec, str(demo.DEMO_GRID), [], "reports/out/study.pdf")
    fits = [shlex.split(ln.split("#")[0]) for ln in lines if ln.startswith("rayder-fit")]
    assert len(fits) == 2
    for argv in fits:
        args = _parser().parse_args(argv[1:])
        assert args.sweep == spec.name and args.checkpoints == "final" and args.min_step == 300
        assert sorted(args.fix) == ["L_inf=0", "gamma=1"] and args.db == "results.duckdb"
    other = demo.demo_spec(overrides=["db=results-seed1.duckdb"])
    lines = demo.next_commands(other, str(demo.DEMO_GRID), ["db=results-seed1.duckdb"], "x.pdf")
    assert all(f"--db {other.db_path}" in ln for ln in lines[:3]) and "--out x.pdf" in lines[2]
    assert "--set db=results-seed1.duckdb" in lines[3]


def test_best_checkpoint_line_names_the_best_novel_view_psnr_with_its_reconstruction_and_the_baselines():
    import pandas as pd

    rows = []
    for run_id, step, psnr, recon in (("a", 100, 25.0, 27.0), ("a", 200, 28.5, 30.25), ("b", 200, 27.0, 31.0)):
        rows += [(run_id, step, "indist", "psnr", psnr), (run_id, step, "indist", "recon_psnr", recon),
                 (run_id, step, "indist", "blend_psnr", 32.0), (run_id, step, "indist", "copy_psnr", 30.8),
                 (run_id, step, "other", "mse", 0.01)]
    evals = pd.DataFrame(rows, columns=["run_id", "step", "bench", "metric", "value"])
    line = demo.best_checkpoint_line(evals, "indist")
    assert line == ("best:    on indist: novel views 28.50 dB (a at step 200); its context views re-rendered "
                    "30.25 dB; no model: frame blend 32.00 dB, nearest context view 30.80 dB")
    assert demo.best_checkpoint_line(evals, "other") is None  # no PSNR there
    assert demo.best_checkpoint_line(evals[evals["metric"] == "psnr"], "indist").endswith("(a at step 200)")
