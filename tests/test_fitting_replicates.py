"""Runs that differ only in their seed are averaged before the frontier (`--replicates mean`), not min-picked.

Checked against closed forms on a real DuckDB store: two seeds at L(C, D) * (1 +- e) average to the law itself,
while keeping every run (`--replicates all`) fits the luckier seed, L * (1 - e)."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd
import pytest

from fitting import FitOptions, StudyOptions, fit_study
from fitting.cli import main as fit_main
from fitting.replicates import DISAGREE_RATIO, average_replicates, disagreeing_replicates
from rayder_core.run_identity import identity_of, replicate_key
from rayder_core.store import ResultsStore
from rayder_core.yamlconf import to_mapping
from reports.cli import main as report_main
from reports.common import load_study
from reports.fits import fit_metric
from sweeps.demo import demo_spec


def _old_run_id_digest(cfg) -> str:
    """The run-id digest as TrainConfig.identity computed it before `run_identity` existed (the rules inline)."""
    d = to_mapping(cfg)
    for k in ("out_dir", "log_every", "keep_checkpoints", "device", "tf32", "dist_timeout_min", "store_mode",
              "compile", "compile_min_steps", "checkpoint_steps", "start_from"):
        d.pop(k)
    d["eval"] = {k: v for k, v in d["eval"].items() if k in ("every", "from_step") or (k == "log_points" and v)}
    if d["model"].get("parametrization") == "standard":
        d["model"] = {k: v for k, v in d["model"].items() if k != "parametrization"}
    d["data"].pop("decoded_dir")
    if d["data"]["curriculum"]["mode"] == "none":
        d["data"].pop("curriculum")
    return hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()[:10]


def test_run_ids_unchanged_and_replicate_key_ignores_only_the_seed():
    runs = demo_spec(overrides=["grid.seeds=[0,1]"]).runs()  # the grid without its held-out run
    assert len(runs) == 108  # design v14: 54 cells x 2 seeds
    for cfg in runs:
        assert cfg.run_id.endswith(_old_run_id_digest(cfg))
        assert identity_of(to_mapping(cfg)) == cfg.identity()
    keys = {}
    for cfg in runs:
        keys.setdefault(replicate_key(to_mapping(cfg)), set()).add((cfg.seed, cfg.run_id))
    assert len(keys) == 54 and all(len(v) == 2 and {s for s, _ in v} == {0, 1} for v in keys.values())
    # where a run is written, its runtime record and the fork it starts from do not matter; the seed's JSON neither
    cfg = runs[0]
    moved = {**to_mapping(cfg), "out_dir": "/elsewhere", "start_from": "x.pt", "runtime": {"precision": "bf16"}}
    assert replicate_key(moved) == replicate_key(json.dumps(to_mapping(cfg)))


def _law(C, D):
    return 2.0 * C ** -0.4 + 5.0 * D ** -0.6  # kaplan with gamma = 1, L_inf = 0


def _store_with_two_seeds(path, e: float) -> ResultsStore:
    """3 sizes x 3 D x 4 checkpoints, each trained with seeds 0 and 1 whose MSE is L(C, D) * (1 + e) and * (1 - e)
    (PSNR on [-1, 1] images: MSE = 4 * 10^(-PSNR / 10))."""
    store = ResultsStore(path)
    for preset, gflop_per_step in (("tiny-w16", 1.0), ("tiny-w32", 3.4), ("tiny-w64", 11.0)):
        for D in (64, 256, 1024):
            for seed, sign in ((0, 1.0), (1, -1.0)):
                config = {"seed": seed, "sweep": "grid", "model": {"preset": preset}, "data": {"fraction": D / 1024},
                          "steps": 400}
                run_id = f"grid-{preset}-{D}-s{seed}"
                store.upsert_run(run_id, sweep="grid", preset=preset, params=1000, fraction=D / 1024, D=D,
                                 config=config, status="finished")
                for step in (100, 200, 300, 400):
                    C = gflop_per_step * step
                    store.add_checkpoint(run_id, step=step, samples=8 * step, flops=C * 1e9, wall_time_s=step,
                                         lr=1e-3, lr_phase="stable")
                    mse = _law(C, D) * (1 + sign * e)
                    store.add_evals(run_id, step, bench="indist", values={"psnr": -10 * np.log10(mse / 4)}, n=32)
    return store


E = 0.1


@pytest.fixture(scope="module")
def two_seed_db(tmp_path_factory):
    path = tmp_path_factory.mktemp("replicates") / "results.duckdb"
    _store_with_two_seeds(path, E)
    return path


def test_two_seeds_average_to_the_law_while_all_runs_fit_the_luckier_seed(two_seed_db):
    e = E
    store = ResultsStore(two_seed_db)
    points = store.eval_points("indist", "psnr", sweep="grid")
    assert set(points["seed"]) == {0, 1} and points["replicate"].nunique() == 9

    averaged, cells = average_replicates(points, "psnr")
    assert cells == 9 and len(averaged) == len(points) // 2 and set(averaged["n_replicates"]) == {2}
    mse = 4 * 10 ** (-averaged["value"] / 10)
    np.testing.assert_allclose(mse, _law(averaged["compute_gflop"], averaged["D"]), rtol=1e-9)  # (1+e + 1-e) / 2
    assert set(averaged["seeds"]) == {"0,1"}

    fit = FitOptions(bootstrap=0, n_starts=8, fix={"L_inf": 0.0})
    results = {}
    for mode in ("mean", "all"):
        study = fit_study(points, StudyOptions(fit=fit, metric="psnr", checkpoints="all", replicates=mode))
        assert study.ok, study.problem
        pts = study.fit_points
        results[mode] = study.fit.predict(pts["C"].to_numpy(), pts["D"].to_numpy()) / _law(pts["C"].to_numpy(), pts["D"].to_numpy())
    np.testing.assert_allclose(results["mean"], 1.0, rtol=2e-3)
    np.testing.assert_allclose(results["all"], 1.0 - e, rtol=2e-3)  # the frontier took seed 1 at every C


def test_a_cell_with_one_finished_seed_keeps_that_seed(two_seed_db):
    store = ResultsStore(two_seed_db)
    points = store.eval_points("indist", "psnr", sweep="grid")
    points = points[~((points["run_id"] == "grid-tiny-w16-64-s1") & (points["step"] == 400))]
    averaged, _ = average_replicates(points, "psnr")
    row = averaged[(averaged["preset"] == "tiny-w16") & (averaged["D"] == 64) & (averaged["step"] == 400)].iloc[0]
    assert row["n_replicates"] == 1 and row["seeds"] == "0"
    assert 4 * 10 ** (-row["value"] / 10) == pytest.approx(_law(400.0, 64) * (1 + E), rel=1e-9)


def test_runs_whose_config_names_no_seed_are_never_averaged(tmp_path):
    store = ResultsStore(tmp_path / "results.duckdb")
    for run_id, config in (("a", {}), ("b", {}), ("c", {"seed": "0"})):
        store.upsert_run(run_id, sweep="s", preset="p", params=1, fraction=1.0, D=8, config=config, status="finished")
        store.add_checkpoint(run_id, step=10, samples=10, flops=1e9, wall_time_s=1, lr=1e-3, lr_phase="stable")
        store.add_evals(run_id, 10, bench="b", values={"psnr": 20.0}, n=1)
    points = store.eval_points("b", "psnr")
    assert list(points["replicate"]) == ["run:a", "run:b", "run:c"]
    assert average_replicates(points, "psnr")[1] == 0


def test_rayder_fit_replicates_flag(two_seed_db, capsys):
    db = two_seed_db
    base = ["--db", str(db), "--metric", "psnr", "--bench", "indist", "--fix", "L_inf=0", "--bootstrap", "0",
            "--no-write", "--json"]
    assert fit_main(base) == 0
    out = capsys.readouterr()
    assert "seeds averaged in 9 cell(s) (--replicates mean): -36" in out.err
    assert fit_main([*base, "--replicates", "all"]) == 0
    assert "seeds averaged" not in capsys.readouterr().err
    with pytest.raises(SystemExit):
        fit_main([*base, "--replicates", "min"])


def test_seeds_that_reach_different_outcomes_are_named(two_seed_db):
    """Seeds at L * (1 +- 0.1) scatter around one outcome (ratio 1.1 / 0.9 = 1.22 < 1.25): no note. Doubling one run's
    MSE at every checkpoint (a seed that memorised instead of generalising) makes its cell disagree by
    2 * 0.9 / 1.1 = 1.64x, named in the fit's notes; the other 8 cells stay quiet."""
    points = ResultsStore(two_seed_db).eval_points("indist", "psnr", sweep="grid")
    options = StudyOptions(fit=FitOptions(bootstrap=0, n_starts=4, fix={"L_inf": 0.0}), metric="psnr",
                           checkpoints="all")
    assert disagreeing_replicates(points, "psnr").empty and (1 + E) / (1 - E) < DISAGREE_RATIO
    assert not fit_study(points, options).notes
    bad = points.copy()
    worse = bad["run_id"] == "grid-tiny-w16-64-s1"
    bad.loc[worse, "value"] -= 10 * np.log10(2.0)  # MSE x 2
    found = disagreeing_replicates(bad, "psnr")
    assert len(found) == 1 and found.loc[0, "preset"] == "tiny-w16" and found.loc[0, "D"] == 64
    assert found.loc[0, "ratio"] == pytest.approx(2 * (1 - E) / (1 + E), rel=1e-6)
    assert found.loc[0, "seeds"] == (0, 1)
    mse = np.array(found.loc[0, "targets"])
    C = float(found.loc[0, "step"])  # tiny-w16: 1 GFLOP per step
    np.testing.assert_allclose(mse, [_law(C, 64) * (1 + E), 2 * _law(C, 64) * (1 - E)], rtol=1e-6)
    notes = fit_study(bad, options).notes
    assert len(notes) == 1 and "1 cell(s) disagree by more than 1.25x" in notes[0] and "tiny-w16 D=64" in notes[0]


def test_median_of_three_seeds_ignores_the_one_that_reached_another_outcome(two_seed_db):
    """Seeds 0 / 1 at L * (1 +- 0.1) and a third at 3 L * 1.1: the median is seed 0's L * 1.1 at every point, the
    mean (1.1 + 0.9 + 3.3) / 3 L; with two seeds the median is the mean."""
    points = ResultsStore(two_seed_db).eval_points("indist", "psnr", sweep="grid")
    third = points[points["seed"] == 0].copy()
    third["run_id"] = third["run_id"].str.replace("-s0", "-s2")
    third["seed"] = 2
    third["value"] -= 10 * np.log10(3.0)  # MSE x 3
    three = pd.concat([points, third], ignore_index=True)
    law = lambda df: _law(df["compute_gflop"].to_numpy(), df["D"].to_numpy())  # noqa: E731
    mse = lambda df: 4 * 10 ** (-df["value"].to_numpy() / 10)  # noqa: E731
    median, cells = average_replicates(three, "psnr", "median")
    assert cells == 9 and set(median["seeds"]) == {"0,1,2"}
    np.testing.assert_allclose(mse(median), law(median) * (1 + E), rtol=1e-6)
    mean, _ = average_replicates(three, "psnr", "mean")
    np.testing.assert_allclose(mse(mean), law(mean) * (1 + E + 1 - E + 3 * (1 + E)) / 3, rtol=1e-6)
    two, _ = average_replicates(points, "psnr", "median")
    np.testing.assert_allclose(mse(two), law(two), rtol=1e-9)
    for pts in (points, points.head(1)):  # refused also where there is nothing to average
        with pytest.raises(ValueError, match="mean or median"):
            average_replicates(pts, "psnr", "max")


def test_report_fits_take_the_replicates_mode(two_seed_db, tmp_path):
    """`rayder-report --replicates` reaches the report's fits: one frontier row per cell and step (mean, median) or
    per run (all)."""
    study = load_study(two_seed_db)
    rows = {mode: len(fit_metric(study, "indist", "psnr", bootstrap=0, use_stored=False, replicates=mode).frontier)
            for mode in ("mean", "median", "all")}
    assert rows == {"mean": 36, "median": 36, "all": 72}
    with pytest.raises(SystemExit):
        report_main(["--db", str(two_seed_db), "--out", str(tmp_path / "r.pdf"), "--replicates", "max"])
