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
