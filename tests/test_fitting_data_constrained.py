"""Data-constrained law (Muennighoff et al. 2023): recovery of R* from data generated with the published form."""
import numpy as np
import pandas as pd
import pytest

from fitting import fit_law
from fitting.data_constrained import fit_data_constrained

# Published fit of the paper (their Eq. 5/6, Appendix): E, A, B, alpha, beta, R_D*
E, A, B, ALPHA, BETA, R_STAR = 1.87, 521.0, 1488.0, 0.353, 0.353, 15.4


def published(N, D, U):
    """The paper's effective-data form written out independently: D' = U_D + U_D R*(1 - exp(-R_D / R*))."""
    UD = np.minimum(D, U)
    RD = D / UD - 1
    Dp = UD + UD * R_STAR * (1 - np.exp(-RD / R_STAR))
    return E + A / N ** ALPHA + B / Dp ** BETA


def _data(noise=0.003, seed=0):
    rows = [(N, U * ep, U) for N in np.geomspace(1e7, 3e9, 6) for U in (1e8, 1e9, 1e10)
            for ep in (0.25, 0.5, 1, 2, 4, 8, 16, 32, 64)]
    N, D, U = map(np.array, zip(*rows))
    y = published(N, D, U) * np.exp(np.random.default_rng(seed).normal(0, noise, len(N)))
    return pd.DataFrame({"N": N, "D": D, "U": U, "y": y})


def test_law_matches_published_form_and_predicts_with_three_inputs():
    df = _data(noise=0.0)
    r = fit_law(df, law="data_constrained", x=["N", "D", "U"], bootstrap=0, holdout=False)
    np.testing.assert_allclose(r.predict(df.N, df.D, df.U), df.y, rtol=2e-4)
    assert r.params["R_star"] == pytest.approx(R_STAR, rel=0.01)
    with pytest.raises(ValueError, match="needs 3 inputs"):
        r.predict(df.N, df.D)


def test_two_stage_and_joint_fits_recover_r_star():
    res = fit_data_constrained(_data(), x=["N", "D", "U"], bootstrap=100)
    assert res.n_single_epoch == 54 and res.n_points == 162
    assert res.two_stage.n_free == 1 and set(res.two_stage.fixed) == {"L_inf", "A", "alpha", "B", "beta"}
    for fit in (res.two_stage, res.joint):
        assert fit.params["R_star"] == pytest.approx(R_STAR, rel=0.05)
        assert fit.ci_low["R_star"] < R_STAR < fit.ci_high["R_star"]
    assert res.base.params["alpha"] == pytest.approx(ALPHA, abs=0.02)
    # repeated data is worth less: with R* -> infinity (no decay) the fit is clearly worse
    no_decay = fit_law(_data(), law="data_constrained", x=["N", "D", "U"], fix={"R_star": 1e5}, bootstrap=0,
                       holdout=False)
    assert no_decay.objective > 5 * res.joint.objective


def test_needs_single_epoch_points():
    df = _data()
    with pytest.raises(ValueError, match="single-epoch points"):
        fit_data_constrained(df[df.D > df.U], x=["N", "D", "U"], bootstrap=0)


# Parameter repetition (Muennighoff et al. 2023, Eq. 5 with both terms; their fitted R_N* = 5.31, R_D* = 15.39)
R_N_STAR = 5.31


def published_rn(N, D, U):
    """Both decays written out independently: U_N = min(N, N_opt(U_D)), N_opt(D) from alpha A N^-alpha = beta B
    D^-beta (Chinchilla's allocation), N' = U_N + U_N R_N* (1 - exp(-R_N / R_N*)), R_N = N / U_N - 1."""
    UD = np.minimum(D, U)
    Dp = UD + UD * R_STAR * (1 - np.exp(-(D / UD - 1) / R_STAR))
    n_opt = (ALPHA * A / (BETA * B)) ** (1 / ALPHA) * UD ** (BETA / ALPHA)
    UN = np.minimum(N, n_opt)
    Np = UN + UN * R_N_STAR * (1 - np.exp(-(N / UN - 1) / R_N_STAR))
    return E + A / Np ** ALPHA + B / Dp ** BETA


def _data_rn(noise=0.002, seed=0):
    rows = [(N, U * ep, U) for N in np.geomspace(1e7, 3e9, 6) for U in (1e8, 1e9, 1e10)
            for ep in (0.25, 0.5, 1, 2, 4, 8, 16, 32, 64)]
    N, D, U = map(np.array, zip(*rows))
    y = published_rn(N, D, U) * np.exp(np.random.default_rng(seed).normal(0, noise, len(N)))
    return pd.DataFrame({"N": N, "D": D, "U": U, "y": y})


def test_param_repetition_law_matches_published_form_and_recovers_r_n_star():
    df = _data_rn(noise=0.0)
    r = fit_law(df, law="data_constrained_rn", x=["N", "D", "U"], bootstrap=0, holdout=False)
    np.testing.assert_allclose(r.predict(df.N, df.D, df.U), df.y, rtol=1e-3)
    assert r.params["R_N_star"] == pytest.approx(R_N_STAR, rel=0.02)
    assert r.params["R_star"] == pytest.approx(R_STAR, rel=0.02)
    res = fit_data_constrained(_data_rn(), x=["N", "D", "U"], bootstrap=100, param_repetition=True)
    assert res.two_stage.n_free == 2 and res.joint.law.name == "data_constrained_rn"
    for fit in (res.joint,):
        assert fit.params["R_N_star"] == pytest.approx(R_N_STAR, rel=0.15)
        assert fit.params["R_star"] == pytest.approx(R_STAR, rel=0.15)
        assert fit.ci_low["R_N_star"] < R_N_STAR < fit.ci_high["R_N_star"]
        assert fit.ci_low["R_star"] < R_STAR < fit.ci_high["R_star"]


def test_param_repetition_gradient_matches_finite_differences():
    from fitting.laws import LAWS

    law = LAWS["data_constrained_rn"]
    X = [np.geomspace(0.1, 30, 12), np.geomspace(0.2, 50, 12), np.full(12, 0.5)]
    P = {"L_inf": 1.8, "A": 0.9, "alpha": 0.35, "B": 1.2, "beta": 0.3, "R_star": 15.0, "R_N_star": 5.0}
    _, g = law.evaluate({k: np.float64(v) for k, v in P.items()}, X, True)
    for k, v in P.items():
        h = 1e-6 * abs(v)
        fd = (law.predict({**P, k: v + h}, X) - law.predict({**P, k: v - h}, X)) / (2 * h)
        assert np.max(np.abs(fd - g[k])) <= 1e-6 * np.max(np.abs(fd)), k


def test_two_stage_bootstrap_redoes_both_stages_and_batched_refits_equal_lbfgs():
    """Every resample refits stage 1 too (the base parameters vary across resamples, so the two-stage R* CI carries
    stage 1's uncertainty); the batched joint refits equal fit_law's own per-resample L-BFGS-B refits."""
    df = _data()
    df = df[df.U == 1e9].reset_index(drop=True)
    res = fit_data_constrained(df, x=["N", "D", "U"], bootstrap=40, seed=3)
    assert res.base.ci_low["alpha"] < res.base.params["alpha"] < res.base.ci_high["alpha"]
    assert np.nanstd(res.base.bootstrap_params[:, 2]) > 0  # alpha refitted per resample
    assert res.two_stage.ci_low["R_star"] < res.two_stage.params["R_star"] < res.two_stage.ci_high["R_star"]
    ref = fit_law(df, law="data_constrained", x=["N", "D", "U"], bootstrap=40, seed=3, holdout=False, n_jobs=1,
                  progress=False)
    np.testing.assert_allclose(res.joint.bootstrap_params, ref.bootstrap_params, rtol=5e-3)
    for n in ref.params:
        assert res.joint.ci_low[n] == pytest.approx(ref.ci_low[n], rel=5e-3)
        assert res.joint.ci_high[n] == pytest.approx(ref.ci_high[n], rel=5e-3)
