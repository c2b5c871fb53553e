"""Extrapolation validation: Student-t interval vs the OLS closed form, growing prefixes at the noise level."""
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from fitting import fit_law
from fitting.extrapolation import growing_prefix, holdout_above, predict_holdout, prediction_interval

RNG = np.random.default_rng(5)


def test_interval_equals_ols_prediction_interval_for_a_pure_power_law():
    """single with L_inf = 0 fitted by log least squares is OLS in log-log: the textbook interval is exact."""
    C = np.geomspace(1e2, 1e6, 12)
    y = 2.0 * C ** -0.3 * np.exp(RNG.normal(0, 0.03, len(C)))
    r = fit_law(pd.DataFrame({"C": C, "y": y}), law="single", x=["C"], fix={"L_inf": 0.0}, delta=1e6, bootstrap=0,
                holdout=False)
    x0 = np.array([1e1, 1e4, 1e8])
    lo, hi = prediction_interval(r, [x0], ci=0.9)
    lx, ly = np.log(C), np.log(y)
    b, a = np.polyfit(lx, ly, 1)
    n = len(C)
    s = np.sqrt(np.sum((ly - a - b * lx) ** 2) / (n - 2))
    half = stats.t.ppf(0.95, n - 2) * s * np.sqrt(1 + 1 / n + (np.log(x0) - lx.mean()) ** 2 / np.sum((lx - lx.mean()) ** 2))
    np.testing.assert_allclose(np.log(lo), a + b * np.log(x0) - half, rtol=1e-6)
    np.testing.assert_allclose(np.log(hi), a + b * np.log(x0) + half, rtol=1e-6)


def _surface(noise, seed):
    C, D = [a.ravel() for a in np.meshgrid(np.geomspace(1e2, 1e6, 10), [1e2, 3e2, 1e3, 3e3, 1e4])]
    y = (0.01 + 2 * C ** -0.4 + D ** -0.5) * np.exp(np.random.default_rng(seed).normal(0, noise, len(C)))
    return pd.DataFrame({"C": C, "D": D, "y": y})


def test_growing_prefix_errors_at_the_noise_level():
    sigma = 0.01
    curve = growing_prefix(_surface(sigma, 3), law="additive", min_budgets=4)
    one = curve[curve.steps_ahead == 1]
    # noise alone gives mean |rel err| = sigma sqrt(2/pi) = 0.8%; parameter error adds a little
    assert 0.5 * sigma < one.mean_abs_rel_err.mean() < 1.6 * sigma
    assert one.coverage.mean() > 0.8
    # the wrong law (no D term) extrapolates far worse: the check can fail
    wrong = growing_prefix(_surface(sigma, 3), law="single", x=["C"], min_budgets=4)
    assert wrong[wrong.steps_ahead == 1].mean_abs_rel_err.mean() > 10 * sigma
    assert set(curve.columns) >= {"train_max", "budget_x0", "steps_ahead", "n_train", "n_test", "mean_abs_rel_err",
                                  "rmse_log", "coverage"}


def test_predict_holdout_columns_and_coverage():
    df = _surface(0.01, 4)
    fit, table = holdout_above(df, 2e5, law="additive", bootstrap=100)
    assert list(table.columns) == ["C", "D", "measured", "predicted", "rel_err", "band_lo", "band_hi", "lo", "hi",
                                   "inside"]
    assert len(table) == 10 and fit.n_points == 40
    assert (table.band_lo <= table.predicted).all() and (table.predicted <= table.band_hi).all()
    # the lack-of-fit interval is at least the noise interval exp(+-t s), s = RMS log residual with n - p dof
    r_log = np.log(fit.targets) - np.log(fit.predict(*fit.inputs))
    s = np.sqrt(np.sum(r_log ** 2) / (fit.n_points - fit.n_free))
    assert (np.log(table.hi / table.lo) >= 2 * stats.t.ppf(0.975, fit.n_points - fit.n_free) * s - 1e-12).all()
    assert table.inside.mean() >= 0.8
    np.testing.assert_allclose(table.rel_err, table.predicted / table.measured - 1)
    # many noise draws at one extrapolated point: the 95% interval covers ~95% of them
    r = fit_law(df[df.C < 2e5], law="additive", bootstrap=0, holdout=False)
    truth = 0.01 + 2 * 1e6 ** -0.4 + 1e3 ** -0.5
    draws = truth * np.exp(np.random.default_rng(0).normal(0, 0.01, 2000))
    tab = predict_holdout(r, pd.DataFrame({"C": 1e6, "D": 1e3, "y": draws}))
    assert 0.85 < tab.inside.mean() <= 1.0
    with pytest.raises(ValueError, match="lack columns"):
        predict_holdout(r, pd.DataFrame({"C": [1.0]}))
