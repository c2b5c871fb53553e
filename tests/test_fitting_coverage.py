"""Recovery and bootstrap coverage of the paper's Eqs. 5 and 6 (LPIPS, 1-SSIM) over 50 seeds (slow: ~2 min).

Data: tests/test_fitting_synth.eval_points (4 sizes x 3 fractions x checkpoints every 10k steps from 50k to 150k,
C = per-sample TFLOP x steps in GFLOP, 1% multiplicative noise), reduced to the per-D frontier and fitted with the
default kaplan law and summed log-Huber. Bootstrap: 50 resamples of the frontier points per seed, each refitted by
one L-BFGS-B run warm-started at the full-data optimum (boot_restarts=0: for these two laws the warm refit reached
the 20-start optimum on 40/40 resamples, |d exponent| < 2e-6), percentile 95% CIs.

Measured with 100 bootstraps (docs/fitting.md): coverage per parameter 0.92-1.00 (Eq. 6) and
0.88-0.96 (Eq. 5); basic intervals were worse (0.82-0.93). With 50 bootstraps per seed (to stay near 2 minutes)
the Monte-Carlo error of the CI ends and of a 50-seed coverage estimate (binomial sd ~3%) cost a few percent,
hence 0.86 per quantity, and L_inf is asserted in its measured form (see below). Eq. 4 (MSE) is not here: its alpha, beta, gamma are not identifiable at 1% noise
(see the docs) and its fits take ~10x longer; tests/test_fitting_fit.py checks its R^2 and alpha*gamma.
"""
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_fitting_synth import PAPER_LAWS, eval_points  # noqa: E402

from fitting import fit_law, frontier  # noqa: E402

SEEDS = 50
N_BOOT = 50
QUANTITIES = ("L_inf", "A", "alpha", "B", "beta", "gamma", "alpha*gamma")


def _one_seed(args: tuple[str, int]) -> dict:
    import warnings
    warnings.simplefilter("ignore")
    metric, seed = args
    pts = frontier(eval_points(metric, seed), metric, min_step=50_000)
    r = fit_law(pts, bootstrap=N_BOOT, seed=seed, boot_restarts=0, n_starts=5, holdout=False, n_jobs=1,
                progress=False)
    names = list(r.law.param_names)
    B = r.bootstrap_params[np.all(np.isfinite(r.bootstrap_params), axis=1)]
    draws = {n: B[:, i] for i, n in enumerate(names)}
    draws["alpha*gamma"] = draws["alpha"] * draws["gamma"]
    est = dict(r.params, **{"alpha*gamma": r.params["alpha"] * r.params["gamma"]})
    return {"r2": r.r2, "est": est, "ci": {k: np.percentile(v, [2.5, 97.5]) for k, v in draws.items()},
            "ci_fit": (r.ci_low, r.ci_high)}


@pytest.mark.slow
@pytest.mark.parametrize("metric", ["ssim", "lpips"])
def test_recovery_and_bootstrap_coverage(metric):
    truth = dict(PAPER_LAWS[metric])
    truth["alpha*gamma"] = truth["alpha"] * truth["gamma"]
    with ProcessPoolExecutor(max_workers=2) as pool:
        runs = list(pool.map(_one_seed, [(metric, s) for s in range(SEEDS)]))
    # fit_law's own percentile CIs are the ones recomputed here
    for k in ("alpha", "gamma"):
        assert runs[0]["ci_fit"][0][k] == pytest.approx(runs[0]["ci"][k][0], rel=1e-9)
    assert min(r["r2"] for r in runs) > 0.99  # measured min 0.9993 (Eq. 6), 0.9994 (Eq. 5)
    # alpha*gamma (the exponent of the C-limited regime) is identifiable: within 10% in every seed.
    assert all(abs(r["est"]["alpha*gamma"] / truth["alpha*gamma"] - 1) < 0.1 for r in runs)
    if metric == "ssim":  # Eq. 6: each exponent within 10% in >= 85% of seeds (measured 94%, 92%, 98%)
        for k in ("alpha", "beta", "gamma"):
            assert np.mean([abs(r["est"][k] / truth[k] - 1) < 0.1 for r in runs]) >= 0.85, k
    # Eq. 5: alpha, beta, gamma individually were within 10% in only 66-71% of seeds (1% noise; the data barely
    # separate them), so only alpha*gamma is asserted.
    cover = {k: np.mean([r["ci"][k][0] <= truth[k] <= r["ci"][k][1] for r in runs]) for k in QUANTITIES}
    print(metric, {k: round(v, 2) for k, v in cover.items()})
    # Measured here (50 bootstraps, 5 starts): Eq. 6 0.86-0.94, Eq. 5 0.82-0.92 per quantity.
    assert min(v for k, v in cover.items() if k != "L_inf") >= 0.86, cover
    # L_inf undercovers for a reason no bootstrap of frontier points can see: the running minimum keeps the
    # checkpoints with negative noise, so the frontier lies below the law, most where the law is flat (near
    # L_inf). Measured 0.86 (Eq. 6), 0.82 (Eq. 5); on Eq. 4, whose reducible part is ~1% of the MSE at large C,
    # the bias (-1.9%) exceeds the CI width and coverage is 0.
    assert cover["L_inf"] >= 0.80, cover
