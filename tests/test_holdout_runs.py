"""Held-out runs: a grid's `holdout:` runs are expanded under their own sweep, kept out of the grid's fits, and
predicted by the law fitted on the grid alone (`fitting.holdout_runs`) -- checked on a store with known values."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from fitting import fit_law, frontier
from fitting.holdout_runs import holdout_points, store_holdout_validation, validate_holdout
from rayder_core.store import ResultsStore
from rayder_core.yamlconf import ConfigError
from sweeps.spec import spec_from_mapping

TRUE = dict(L_inf=0.02, A=3.0, alpha=0.35, B=0.5, beta=0.4, gamma=1.0)  # MSE(C, D), C in GFLOP


def mse_law(C, D):
    return TRUE["L_inf"] + (TRUE["A"] * C ** -TRUE["alpha"] + TRUE["B"] * D ** -TRUE["beta"]) ** TRUE["gamma"]


def psnr_of(mse):
    return -10 * np.log10(mse / 4)


def _write_run(store, run_id, sweep, params, D, steps, flops_per_step, scale=1.0):
    store.upsert_run(run_id, sweep=sweep, preset=f"p{params}", params=params, fraction=D / 1000, D=D, config={},
                     status="finished")
    for step in steps:
        flops = step * flops_per_step
        store.add_checkpoint(run_id, step=step, samples=4 * step, flops=flops, wall_time_s=step, lr=1e-3,
                             lr_phase="stable")
        value = psnr_of(mse_law(flops / 1e9, D) * scale)
        store.add_evals(run_id, step, bench="re10k-synth", values={"psnr": float(value)}, n=32)


@pytest.fixture(scope="module")
def known_db(tmp_path_factory):
    """A grid of 3 sizes x 3 D whose every checkpoint lies exactly on TRUE (as PSNR), plus two held-out runs: one
    on the law far beyond the grid's compute, one whose MSE is 10% above it (written once per module)."""
    store = ResultsStore(tmp_path_factory.mktemp("known") / "known.duckdb")
    steps = np.unique(np.geomspace(10, 1000, 12).round().astype(int))
    for params, fps in ((1e5, 2e9), (1e6, 8e9), (1e7, 32e9)):
        for D in (10, 100, 1000):
            _write_run(store, f"grid-{int(params)}-{D}", "demo", int(params), D, steps, fps)
    _write_run(store, "held-on-law", "demo-holdout", int(1e7), 1000, np.array([500, 2000, 4000]), 32e9)
    _write_run(store, "held-off-law", "demo-holdout", int(1e7), 100, np.array([500, 2000, 4000]), 32e9, scale=1.1)
    return store.path


@pytest.fixture()
def known_store(known_db, tmp_path):
    """Each test's own copy of the module's store (tests write validation rows into it)."""
    copy = tmp_path / "known.duckdb"
    shutil.copyfile(known_db, copy)
    return ResultsStore(copy)


def test_law_fitted_on_the_grid_predicts_held_out_runs(known_store):
    pts = known_store.eval_points("re10k-synth", "psnr", sweep="demo")
    assert set(pts["sweep"]) == {"demo"}  # the held-out runs are not part of the grid's points
    fit = fit_law(frontier(pts, "psnr"), bootstrap=30, seed=0, progress=False)
    assert fit.r2 > 0.999
    held = holdout_points(known_store, "re10k-synth", "psnr", "demo-holdout")
    assert len(held) == 6
    table, summary = validate_holdout(fit, held)
    on = summary.set_index("run_id").loc["held-on-law"]
    off = summary.set_index("run_id").loc["held-off-law"]
    # exact data: the on-law run is predicted to < 1% even at 4x the grid's largest compute
    assert on["beyond_grid_c"] and abs(on["rel_err"]) < 0.01 and on["inside"]
    # 10% more MSE than the law: predicted / measured - 1 = 1/1.1 - 1 = -9.1%
    assert off["rel_err"] == pytest.approx(1 / 1.1 - 1, abs=0.01)
    assert set(table.columns) >= {"run_id", "step", "C", "D", "measured", "predicted", "rel_err", "lo", "hi",
                                  "band_lo", "band_hi", "inside"}
    np.testing.assert_allclose(table.loc[table["run_id"] == "held-on-law", "measured"],
                               mse_law(np.array([500, 2000, 4000]) * 32.0, 1000), rtol=1e-9)


def test_free_floor_refit_is_tested_on_the_held_out_runs(known_store):
    """A grid fitted with L_inf held at 0 on data that have a floor (TRUE's 0.02): the free-floor refit the checks
    make recovers the floor and predicts the on-law held-out run at 4x the grid's compute (< 1%), as its own
    `validate_holdout` does; the line says so, and it is absent without a refit or without held-out runs."""
    from sweeps import study_checks as sc

    pts = known_store.eval_points("re10k-synth", "psnr", sweep="demo")
    fixed = fit_law(frontier(pts, "psnr"), bootstrap=20, seed=0, progress=False, fix={"L_inf": 0})
    free = sc.free_refit(fixed, "L_inf", bootstrap=20)
    assert free.params["L_inf"] == pytest.approx(TRUE["L_inf"], rel=0.02)
    held = holdout_points(known_store, "re10k-synth", "psnr", "demo-holdout")
    line = sc.free_floor_holdout(free, held)
    _, summary = validate_holdout(free, held)
    on = summary.set_index("run_id").loc["held-on-law"]
    # noise-free data: the band is ~0 wide, so whether a 1e-10 error lies inside it is decided by float rounding (it
    # differs between CPU kinds); the line must say what validate_holdout says
    where = "inside" if on["inside"] else "outside"
    assert abs(on["rel_err"]) < 0.01 and f"{on['rel_err'] * 100:+.1f}% ({where} its 95% band)" in line
    assert line.startswith(f"the held-out run(s) predicted by the law with L_inf free ({free.params['L_inf']:.3g})")
    assert sc.free_floor_holdout(None, held) is None and sc.free_floor_holdout(free, held.iloc[:0]) is None


def test_grid_holdout_runs_expand_under_their_own_sweep():
    grid = {"name": "demo", "base": {"steps": 100, "data": {"frames": 4, "resolution": 32}},
            "grid": {"presets": ["tiny-xs", "tiny-s"], "fractions": [0.1, 1.0]},
            "holdout": [{"preset": "tiny-b", "fraction": 1.0, "set": {"steps": 300}}]}
    spec = spec_from_mapping(grid, "grid.yaml")
    runs = spec.runs()
    assert len(runs) == 5
    held = [r for r in runs if r.sweep == "demo-holdout"]
    assert len(held) == 1 and held[0].steps == 300 and held[0].model["preset"] == "tiny-b"
    assert all(r.sweep == "demo" and r.steps == 100 for r in runs if r is not held[0])
    with pytest.raises(ConfigError, match=r"holdout\[0\].preset"):
        spec_from_mapping({**grid, "holdout": [{"preset": "nope"}]}, "grid.yaml")
    with pytest.raises(ConfigError, match=r"holdout\[0\].set.data.fraction"):
        spec_from_mapping({**grid, "holdout": [{"preset": "tiny-b", "set": {"data": {"fraction": 0.5}}}]},
                          "grid.yaml")


def test_report_shows_the_held_out_validation(known_store, tmp_path):
    """The stored validation becomes report page 8; the grid's frontier pages exclude the held-out runs."""
    from reports.report import build_report, expected_page_count, load_study

    fit = fit_law(frontier(known_store.eval_points("re10k-synth", "psnr", sweep="demo"), "psnr"), bootstrap=20,
                  seed=0, progress=False)
    table, summary = validate_holdout(fit, holdout_points(known_store, "re10k-synth", "psnr", "demo-holdout"))
    store_holdout_validation(known_store, fit, table, summary, bench="re10k-synth", metric="psnr",
                             sweep="demo-holdout")
    stored = known_store.extrapolations("holdout_run")
    assert len(stored) == 2 and set(stored["sweep"]) == {"demo-holdout"}
    study = load_study(known_store.path)
    assert study.has_holdout_runs
    assert set(study.eval_points("re10k-synth", "psnr")["sweep"]) == {"demo"}
    result = build_report(known_store.path, tmp_path / "study.pdf", bootstrap=10, figure_formats=())
    assert result.pages[-1] == "08_holdout"
    assert len(result.pages) == expected_page_count(1, 0, 11, holdout=True)
