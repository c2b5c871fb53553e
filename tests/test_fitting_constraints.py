"""Fixed and tied parameters (issue 12 item 1) against closed forms and an independent optimizer."""
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import minimize

from fitting import fit_law
from fitting.laws import LAWS, constrain

RNG = np.random.default_rng(12)


def test_pure_power_law_equals_loglog_polyfit():
    C = np.geomspace(1e3, 1e9, 30)
    y = 3.0 * C ** -0.3 * np.exp(RNG.normal(0, 0.05, len(C)))
    # delta so large that the Huber loss is plain least squares on log residuals: a log-log linear regression
    r = fit_law(pd.DataFrame({"C": C, "y": y}), law="single", x=["C"], fix={"L_inf": 0.0}, delta=1e6,
                bootstrap=50, holdout=False)
    slope, intercept = np.polyfit(np.log(C), np.log(y), 1)
    assert r.params["alpha"] == pytest.approx(-slope, abs=1e-7)
    assert np.log(r.params["A"]) == pytest.approx(intercept, abs=1e-6)
    assert r.params["L_inf"] == 0.0 and r.n_free == 2
    assert r.ci_low["L_inf"] == r.ci_high["L_inf"] == 0.0  # a fixed parameter has no spread
    assert np.all(r.bootstrap_params[:, 0] == 0.0)
    assert "(fixed)" in r.summary() and r.to_record()["law"] == "single[L_inf=0]"


def test_fixed_exponent_is_linear_least_squares():
    """With alpha fixed, L_inf + A C^-alpha is linear in (L_inf, A): the lsq objective has a closed-form optimum."""
    C = np.geomspace(10, 1e6, 25)
    y = 0.2 + 5.0 * C ** -0.4 + RNG.normal(0, 0.002, len(C))
    r = fit_law(pd.DataFrame({"C": C, "y": y}), law="single", x=["C"], fix={"alpha": 0.4}, objective="lsq",
                bootstrap=0, holdout=False)
    coef, *_ = np.linalg.lstsq(np.column_stack([np.ones_like(C), C ** -0.4]), y, rcond=None)
    assert r.params["L_inf"] == pytest.approx(coef[0], rel=1e-6)
    assert r.params["A"] == pytest.approx(coef[1], rel=1e-6)
    assert r.params["alpha"] == 0.4


def _grid_points(alpha, beta, noise, seed=0, B=1000.0):
    N, D = np.meshgrid(np.geomspace(1e7, 1e10, 8), np.geomspace(1e9, 1e12, 7))
    N, D = N.ravel(), D.ravel()
    y = 1.7 + 400 * N ** -alpha + B * D ** -beta
    return pd.DataFrame({"N": N, "D": D, "y": y * np.exp(np.random.default_rng(seed).normal(0, noise, len(N)))})


def test_tied_additive_recovers_shared_exponent_and_matches_independent_optimum():
    df = _grid_points(0.33, 0.33, 0.002)
    r = fit_law(df, law="additive", x=["N", "D"], tie={"beta": "alpha"}, bootstrap=100, holdout=False)
    assert r.params["alpha"] == r.params["beta"] == pytest.approx(0.33, abs=0.01)
    assert r.params["L_inf"] == pytest.approx(1.7, abs=0.03)
    assert r.n_free == 4 and r.tied == {"beta": "alpha"}
    i, j = r.law.param_names.index("alpha"), r.law.param_names.index("beta")
    np.testing.assert_array_equal(r.bootstrap_params[:, i], r.bootstrap_params[:, j])  # tied in every resample
    assert r.ci_low["alpha"] < 0.33 < r.ci_high["alpha"]
    s = r.summary()
    assert "beta = alpha  (tied)" in s and "(shared with beta)" in s and s.count("beta =") == 1
    # Independent reference: Nelder-Mead on the same summed Huber(1e-3) objective written out here, 4 parameters.
    N, D, y = df.N.to_numpy(), df.D.to_numpy(), df.y.to_numpy()

    def obj(v):
        e, la, a, lb = v
        pred = e + np.exp(la) * N ** -a + np.exp(lb) * D ** -a
        if np.any(pred <= 0):
            return 1e9
        res = np.abs(np.log(pred) - np.log(y))
        return np.sum(np.where(res <= 1e-3, 0.5 * res ** 2, 1e-3 * res - 0.5e-6))

    ref = minimize(obj, [1.7, np.log(400), 0.33, np.log(1000)], method="Nelder-Mead",
                   options={"xatol": 1e-10, "fatol": 1e-14, "maxiter": 40000, "maxfev": 80000})
    assert r.objective <= ref.fun * (1 + 1e-6)
    assert r.params["alpha"] == pytest.approx(ref.x[2], abs=2e-3)


def test_tie_is_a_real_constraint_on_data_with_different_exponents():
    df = _grid_points(0.25, 0.45, 0.002, B=3e4)
    free = fit_law(df, law="additive", x=["N", "D"], bootstrap=0, holdout=False)
    tied = fit_law(df, law="additive", x=["N", "D"], tie={"beta": "alpha"}, bootstrap=0, holdout=False)
    assert free.params["alpha"] == pytest.approx(0.25, abs=0.02) and free.params["beta"] == pytest.approx(0.45, abs=0.03)
    assert tied.objective > 10 * free.objective  # the shared exponent cannot fit both terms


def test_constrained_jacobian_and_every_law_accepts_constraints():
    X = [np.geomspace(0.3, 5.0, 7), np.geomspace(0.5, 3.0, 7), np.geomspace(0.2, 4.0, 7)]
    for name, law in LAWS.items():
        exps = [n for n in law.param_names if n not in law.log_params]
        fix = {"L_inf": 0.1}
        tie = {exps[1]: exps[0]} if len(exps) >= 2 else {}
        c = constrain(law, fix, tie)
        P = {n: np.float64(0.5 if n not in c.log_params else 1.3) for n in c.param_names}
        xs = X[: law.n_inputs]
        _, J = c.evaluate(P, xs, True)
        for n in c.param_names:
            h = 1e-6
            up = c.evaluate({**P, n: P[n] + h}, xs, False)[0]
            dn = c.evaluate({**P, n: P[n] - h}, xs, False)[0]
            np.testing.assert_allclose(J[n], (up - dn) / (2 * h), rtol=1e-5, atol=1e-8, err_msg=f"{name} {n}")


def test_constraint_errors_name_the_problem():
    df = _grid_points(0.3, 0.3, 0.0)
    with pytest.raises(ValueError, match="no parameter"):
        fit_law(df, law="additive", x=["N", "D"], fix={"gamma": 1.0}, bootstrap=0)
    with pytest.raises(ValueError, match="cannot be tied"):
        fit_law(df, law="additive", x=["N", "D"], tie={"beta": "A"}, bootstrap=0)
    with pytest.raises(ValueError, match="must be a free parameter"):
        fit_law(df, law="additive", x=["N", "D"], fix={"alpha": 0.3}, tie={"beta": "alpha"}, bootstrap=0)
    with pytest.raises(ValueError, match="outside the bounds"):
        fit_law(df, law="kaplan", x=["N", "D"], fix={"gamma": 100.0}, bootstrap=0)


def test_fixed_gamma_one_kaplan_is_additive():
    """kaplan with gamma = 1 is the additive law: both constrained fits reach the same optimum."""
    df = _grid_points(0.3, 0.4, 0.003, seed=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        k = fit_law(df, law="kaplan", x=["N", "D"], fix={"gamma": 1.0}, bootstrap=0, holdout=False, n_starts=None)
    a = fit_law(df, law="additive", x=["N", "D"], bootstrap=0, holdout=False)
    assert k.objective == pytest.approx(a.objective, rel=1e-4)
    for n in ("L_inf", "alpha", "beta"):
        assert k.params[n] == pytest.approx(a.params[n], rel=1e-3)
