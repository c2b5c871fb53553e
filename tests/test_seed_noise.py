"""Simulated seeds of a study (sweeps.seed_noise): the noise draws, the seed check's rule over pairs, and the whole
simulation on runs made from a known law (noiseless: every simulated seed recovers it; noisy: the frontier is taken
again, and the reported coverage, spread and pass rates are those of its table)."""
from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from fitting import fit_law
from sweeps import seed_check
from sweeps.seed_noise import redraw, share_inside, simulate_seeds

FIX = {"L_inf": 0.0, "gamma": 1.0}


def test_share_inside_counts_rows_with_every_exponent_in_its_ci_brute_force():
    rng = np.random.default_rng(0)
    est = rng.normal([0.19, 2.0], [0.01, 0.3], (50, 2))
    lo, hi = [0.18, 1.8], [0.20, 2.4]
    both = sum(lo[0] <= a <= hi[0] and lo[1] <= b <= hi[1] for a, b in est) / 50
    assert share_inside(est, lo, hi) == pytest.approx(both, abs=1e-12)
    assert share_inside(est[:, 1:], lo[1:], hi[1:]) == pytest.approx(np.mean((est[:, 1] >= 1.8) & (est[:, 1] <= 2.4)))
    assert np.isnan(share_inside(est[:0], lo, hi))


def test_redraw_moves_a_group_together_with_the_given_sd():
    rng = np.random.default_rng(1)
    groups = np.repeat([f"g{i}" for i in range(4000)], 3)  # three run lengths per trunk
    sigma = np.where(np.arange(groups.size) < 6000, 0.2, 0.02)
    truth = np.full(groups.size, 0.01)
    y = redraw(truth, sigma, groups, rng)
    z = np.log(y / truth).reshape(4000, 3)
    assert np.allclose(z, z[:, :1])  # one draw per trunk
    assert z[:2000, 0].std() == pytest.approx(0.2, rel=0.06)  # sd error of 2000 draws: 1.6%
    assert z[2000:, 0].std() == pytest.approx(0.02, rel=0.06)


def _known_law_points():
    C, D = np.meshgrid(np.geomspace(1e2, 1e4, 6), np.array([64.0, 256.0, 1024.0, 4096.0]))
    C, D = C.ravel(), D.ravel()
    y = 0.03 * C ** -0.2 + 80.0 * D ** -2.0
    groups = [f"w{i % 3}@{d:g}" for i, d in enumerate(D)]
    return pd.DataFrame({"C": C, "D": D, "y": y, "group": groups})


def test_simulated_seeds_of_a_noiseless_law_recover_it_and_noisy_ones_report_their_table():
    pts = _known_law_points()
    fit = fit_law(pts[["C", "D", "y"]], bootstrap=30, seed=0, n_starts=20, holdout=False, progress=False, fix=FIX)
    assert fit.params["alpha"] == pytest.approx(0.2, rel=1e-3) and fit.params["beta"] == pytest.approx(2.0, rel=1e-3)
    quiet = simulate_seeds(fit, pts, {d: 1e-9 for d in pts["D"].unique()}, n_sims=3, n_jobs=1)
    assert np.allclose(quiet.table["alpha"], 0.2, rtol=1e-3) and np.allclose(quiet.table["beta"], 2.0, rtol=1e-3)
    assert (quiet.table["points"] == len(pts)).all()  # a law falling in C: every run on its D's frontier

    sigma = {64.0: 0.2, 256.0: 0.1, 1024.0: 0.03, 4096.0: 0.03}
    sim = simulate_seeds(fit, pts, sigma, n_sims=16, seed=3, n_jobs=2)
    t = sim.table
    assert len(t) == 16 and (t["points"] < len(pts)).any()  # the frontiers are taken again: noisy runs drop off
    assert sim.estimate == {"alpha": fit.params["alpha"], "beta": fit.params["beta"]}
    assert sim.ci_low == {n: fit.ci_low[n] for n in ("alpha", "beta")}
    assert t["alpha"].std() > 0 and t["beta"].std() > t["alpha"].std()  # the D exponent rests on the noisy small D
    for n in ("alpha", "beta"):
        assert sim.inside[n] == pytest.approx(((t[n] >= fit.ci_low[n]) & (t[n] <= fit.ci_high[n])).mean())
    assert sim.inside["all"] <= min(sim.inside["alpha"], sim.inside["beta"])
    assert "16 simulated seeds" in sim.summary() and "every exponent inside in" in sim.summary()


def test_simulated_seeds_need_free_exponents_and_the_noise_at_every_d():
    pts = _known_law_points()
    fit = fit_law(pts[["C", "D", "y"]], bootstrap=0, n_starts=20, holdout=False, progress=False,
                  fix={**FIX, "beta": 2.0})
    with pytest.raises(ValueError, match="beta"):
        simulate_seeds(fit, pts, {d: 0.1 for d in pts["D"].unique()}, n_sims=2, exponents=("alpha", "beta"))
    with pytest.raises(ValueError, match="4096"):
        simulate_seeds(fit, pts, {64.0: 0.1, 256.0: 0.1, 1024.0: 0.1}, n_sims=2, exponents=("alpha",))
    with pytest.raises(ValueError, match="n_sims must be >= 2"):
        simulate_seeds(fit, pts, {d: 0.1 for d in pts["D"].unique()}, n_sims=1, exponents=("alpha",))


@pytest.mark.parametrize("n", ["1", "-3"])
def test_seed_check_refuses_a_simulation_without_a_spread(n, capsys):
    with pytest.raises(SystemExit) as exit_info:
        seed_check.main(["--skip-runs", "--simulate", n])
    assert exit_info.value.code == 2 and f"not {n}" in capsys.readouterr().err
