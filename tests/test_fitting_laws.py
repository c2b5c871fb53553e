"""Analytic Jacobians and unit conversion of every registered law, against numerical references."""
import numpy as np
import pytest
from scipy.optimize import approx_fprime

from fitting import LAWS

RNG = np.random.default_rng(0)
X = [np.geomspace(0.3, 5.0, 9), np.repeat([0.5, 1.0, 3.0], 3), np.tile([0.1, 0.7, 4.0], 3)]  # 3rd: unique data U


def _params(law, rng):
    p = {}
    for n in law.param_names:
        p[n] = rng.uniform(0.2, 0.8) if n not in law.log_params else rng.uniform(0.5, 2.0)
    return p


@pytest.mark.parametrize("name", sorted(LAWS))
def test_jacobian_matches_finite_differences(name):
    law = LAWS[name]
    P = _params(law, RNG)
    names = law.param_names
    xs = X[: law.n_inputs]
    _, J = law.evaluate({n: np.float64(P[n]) for n in names}, xs, True)
    for i in range(len(xs[0])):
        f = lambda v: law.evaluate(dict(zip(names, v)), [x[i:i + 1] for x in xs], False)[0][0]  # noqa: E731
        num = approx_fprime(np.array([P[n] for n in names]), f, 1e-7)
        ana = np.array([J[n][i] for n in names])
        np.testing.assert_allclose(ana, num, rtol=2e-4, atol=1e-6)


@pytest.mark.parametrize("name", sorted(LAWS))
def test_denormalise_gives_the_same_predictions(name):
    law = LAWS[name]
    P = _params(law, RNG)
    refs = [1e9, 3e5, 2e4][: law.n_inputs]
    for j, k in law.ref_of.items():  # inputs measured in the units of another one share its reference
        refs[j] = refs[k]
    raw = [x * r for x, r in zip(X, refs)]
    Pn = law.denormalise(P, refs)
    np.testing.assert_allclose(law.predict(Pn, raw), law.predict(P, X[: law.n_inputs]), rtol=1e-10)
