"""The bootstrap's unit (`--bootstrap-by`): points, or whole groups of points (a cluster bootstrap).

Checked against independent references: with one point per group the index sets are exactly the point bootstrap's;
on a log-log line whose groups share a random offset, the cluster bootstrap's spread of the slope matches the
cluster-robust (sandwich) standard error of least squares, and the point bootstrap's matches the sandwich that takes
points as independent (both closed forms in numpy); the store's `trunk` key follows `start_from` and ignores the seed."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fitting import FitOptions, StudyOptions, fit_law, fit_study
from fitting.bootstrap import count_degenerate, resample_groups, resample_indices
from fitting.cli import main as fit_main
from rayder_core.run_identity import replicate_key
from rayder_core.store import ResultsStore
from rayder_core.store.store import with_replicates
from rayder_core.yamlconf import ConfigError
from sweeps.spec import load_spec

REPO = Path(__file__).resolve().parents[1]


def test_singleton_groups_are_the_point_bootstrap_and_groups_are_drawn_whole():
    sets = resample_groups([f"g{i}" for i in range(7)], 50, seed=3)
    np.testing.assert_array_equal(np.stack(sets), resample_indices(7, 50, seed=3))
    labels = ["a", "a", "b", "c", "c", "c"]  # groups of 2, 1 and 3 points, numbered in order of appearance
    members = {"a": [0, 1], "b": [2], "c": [3, 4, 5]}
    draws = resample_indices(3, 200, seed=1)
    for idx, row in zip(resample_groups(labels, 200, seed=1), draws):
        expected = np.concatenate([members["abc"[g]] for g in row])
        np.testing.assert_array_equal(idx, expected)  # 3 whole groups per resample, in draw order
    assert count_degenerate([np.array([0, 0, 1]), np.array([0, 1, 2, 3])]) == 1  # ragged index sets
    with pytest.raises(ValueError, match="no group label"):
        resample_groups(["a", None, "b"], 5, seed=0)


def _grouped_line(n_groups: int = 40, per_group: int = 3, seed: int = 0) -> pd.DataFrame:
    """ln y = ln 3 - 0.5 ln C + u_g + e: each group sits at its own C (a spread of 0.1 in ln C around a centre
    drawn over 5 e-folds) and shares a random offset u_g (sd 0.2); e is small (sd 0.01)."""
    rng = np.random.default_rng(seed)
    centre = rng.uniform(0, 5, n_groups)
    lnC = (centre[:, None] + np.linspace(-0.1, 0.1, per_group)[None, :]).ravel()
    group = np.repeat(np.arange(n_groups), per_group)
    lny = np.log(3.0) - 0.5 * lnC + rng.normal(0, 0.2, n_groups)[group] + rng.normal(0, 0.01, lnC.size)
    return pd.DataFrame({"C": np.exp(lnC), "y": np.exp(lny), "g": [f"g{k}" for k in group]})


def _sandwich_slope_se(df: pd.DataFrame, clusters: np.ndarray) -> float:
    """Standard error of the least-squares slope of ln y on ln C from the sandwich (X'X)^-1 M (X'X)^-1 with
    M = sum over clusters of X_g' u_g u_g' X_g (one cluster per point: the heteroskedasticity-robust HC0)."""
    X = np.column_stack([np.ones(len(df)), np.log(df["C"].to_numpy())])
    y = np.log(df["y"].to_numpy())
    bread = np.linalg.inv(X.T @ X)
    u = y - X @ (bread @ X.T @ y)
    meat = sum(np.outer(X[clusters == c].T @ u[clusters == c], X[clusters == c].T @ u[clusters == c])
               for c in np.unique(clusters))
    return float(np.sqrt((bread @ meat @ bread)[1, 1]))


def test_cluster_bootstrap_matches_the_cluster_robust_standard_error():
    df = _grouped_line()
    spread = {}
    for unit in (None, "g"):  # --delta 1e6: least squares on log residuals, so the fit is the log-log line
        fit = fit_law(df, law="single", x=("C",), fix={"L_inf": 0.0}, delta=1e6, bootstrap=1000,
                      bootstrap_groups=unit, n_jobs=1, holdout=False)
        alpha = fit.bootstrap_params[:, fit.law.param_names.index("alpha")]
        spread[unit] = float(np.std(alpha[np.isfinite(alpha)], ddof=1))
        assert fit.params["alpha"] == pytest.approx(0.5, abs=0.1)
    groups = df["g"].to_numpy()
    cluster_se = _sandwich_slope_se(df, groups)
    point_se = _sandwich_slope_se(df, np.arange(len(df)))
    assert spread["g"] == pytest.approx(cluster_se, rel=0.15)
    assert spread[None] == pytest.approx(point_se, rel=0.15)
    assert spread[None] < 0.75 * spread["g"]  # points of one group are not independent: ~1/sqrt(3) as wide


def test_fit_names_its_unit_and_rejects_a_missing_or_unlabelled_column():
    df = _grouped_line(n_groups=12)
    fit = fit_law(df, law="single", x=("C",), fix={"L_inf": 0.0}, bootstrap=20, bootstrap_groups="g", n_jobs=1)
    assert fit.n_bootstrap_groups == 12 and "resamples of whole g groups (12)" in fit.summary()
    with pytest.raises(ValueError, match="bootstrap_groups='trunk' is not a column"):
        fit_law(df, law="single", x=("C",), bootstrap=5, bootstrap_groups="trunk")
    with pytest.raises(ValueError, match="1 fitted point\\(s\\) have no 'g'"):
        fit_law(df.assign(g=df["g"].where(df.index != 4)), law="single", x=("C",), bootstrap=5, bootstrap_groups="g")


def test_rayder_fit_bootstrap_by_a_csv_column(tmp_path, capsys):
    path = tmp_path / "points.csv"
    _grouped_line(n_groups=10).to_csv(path, index=False)
    assert fit_main(["--csv", str(path), "--x", "C", "--y", "y", "--law", "single", "--fix", "L_inf=0",
                     "--bootstrap", "30", "--bootstrap-by", "g", "--jobs", "1"]) == 0
    assert "resamples of whole g groups (10)" in capsys.readouterr().out
    assert fit_main(["--csv", str(path), "--x", "C", "--y", "y", "--bootstrap-by", "g", "--isoflop"]) == 2
    assert "--bootstrap-by applies to law fits" in capsys.readouterr().err


def _config(seed: int, steps: int, start_from: str | None = None) -> dict:
    return {"seed": seed, "sweep": "grid", "model": {"preset": "tiny-w32"}, "data": {"fraction": 0.5},
            "steps": steps, **({"start_from": start_from} if start_from else {})}


def test_trunk_key_follows_start_from_and_ignores_the_seed():
    """A 4000-step trunk and the 1250-step run forked from it share a trunk key; the same two runs with seed 1 have
    the same key (runs that differ only in their seed: replicates); a fork of a trunk that is not among the points
    is keyed by that trunk's run id."""
    rows = []
    for seed in (0, 1):
        trunk = f"grid-trunk-s{seed}"
        rows += [(trunk, _config(seed, 4000)),
                 (f"grid-fork-s{seed}", _config(seed, 1250, f"/runs/grid/{trunk}/checkpoints/step_0001000.pt")),
                 (f"grid-fork2-s{seed}", _config(seed, 600, f"runs/grid/grid-fork-s{seed}/checkpoints/step_0000500.pt"))]
    rows.append(("grid-orphan", _config(0, 1250, "runs/grid/grid-gone/checkpoints/step_0001000.pt")))
    points = pd.DataFrame({"run_id": [r for r, _ in rows], "config": [json.dumps(c) for _, c in rows]})
    out = with_replicates(points).set_index("run_id")
    key = replicate_key(_config(0, 4000))
    assert set(out.loc[[r for r, _ in rows[:-1]], "trunk"]) == {key}
    assert out.loc["grid-orphan", "trunk"] == "run:grid-gone"
    assert out.loc["grid-fork-s0", "replicate"] != key  # the fork is its own replicate cell, of its trunk's group


def test_store_points_carry_the_trunk_and_the_demo_fits_by_it(tmp_path):
    store = ResultsStore(tmp_path / "results.duckdb")
    for D in (64, 256, 1024):
        trunk = f"grid-{D}-4000"
        for run_id, steps, start in ((trunk, 400, None), (f"grid-{D}-200", 200,
                                                           f"runs/{trunk}/checkpoints/step_0000160.pt")):
            store.upsert_run(run_id, sweep="grid", preset="tiny-w32", params=1000, fraction=D / 1024, D=D,
                             config={**_config(0, steps, start), "data": {"fraction": D / 1024}}, status="finished")
            for step in (100, steps):
                C = 3.0 * step
                store.add_checkpoint(run_id, step=step, samples=8 * step, flops=C * 1e9, wall_time_s=step, lr=1e-3,
                                     lr_phase="stable")
                mse = 0.02 * C ** -0.3 + 5 * D ** -0.8
                store.add_evals(run_id, step, bench="indist", values={"psnr": -10 * np.log10(mse / 4)}, n=32)
    points = store.eval_points("indist", "psnr")
    assert points.groupby("D")["trunk"].nunique().eq(1).all() and points["trunk"].nunique() == 3
    study = fit_study(points, StudyOptions(fit=FitOptions(bootstrap=10, n_starts=4, fix={"L_inf": 0.0, "gamma": 1.0},
                                                          bootstrap_groups="trunk", n_jobs=1),
                                           metric="psnr", checkpoints="all"))
    assert study.ok, study.problem
    assert study.fit.n_bootstrap_groups == 3


def test_demo_grid_resamples_trunks_and_a_bad_unit_names_the_key():
    spec = load_spec(REPO / "sweeps" / "demo.yaml")
    assert spec.fit.bootstrap_by == "trunk" and spec.fit.rayder_fit_args().endswith(" --bootstrap-by trunk")
    with pytest.raises(ConfigError, match="bootstrap_by"):
        load_spec(REPO / "sweeps" / "demo.yaml", ["fit.bootstrap_by=run"])
