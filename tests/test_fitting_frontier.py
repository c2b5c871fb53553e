"""Metric transforms and compute-optimal frontiers."""
import numpy as np
import pandas as pd
import pytest
from skimage.metrics import peak_signal_noise_ratio

from fitting import frontier, inverse_transform, transform_metric


def test_psnr_to_mse_on_minus_one_one():
    rng = np.random.default_rng(0)
    a = rng.uniform(-1, 1, (32, 32, 3))
    b = np.clip(a + 0.05 * rng.standard_normal(a.shape), -1, 1)
    psnr = peak_signal_noise_ratio(a, b, data_range=2.0)
    assert transform_metric([psnr], "psnr")[0] == pytest.approx(np.mean((a - b) ** 2), rel=1e-10)
    assert inverse_transform(transform_metric([psnr], "psnr"), "psnr")[0] == pytest.approx(psnr)
    assert transform_metric([0.9], "ssim")[0] == pytest.approx(0.1)
    assert transform_metric([0.2], "lpips")[0] == 0.2


def _brute_force(C, y):
    return np.array([all(y[i] < y[j] for j in range(len(y)) if C[j] < C[i] or (C[j] == C[i] and (y[j] < y[i] or (y[j] == y[i] and j < i))))
                     for i in range(len(y))])


def test_frontier_matches_brute_force_and_keeps_provenance():
    rng = np.random.default_rng(1)
    rows = []
    for preset, flops in (("XS", 1.0), ("S", 2.0), ("B", 5.0)):
        for D in (10, 100):
            for step in range(10, 110, 10):
                rows.append(dict(run_id=f"{preset}-{D}", D=D, step=step, compute_gflop=flops * step,
                                 value=25 + 3 * np.log10(flops * step) + np.log10(D) + rng.normal(0, 0.3)))
    df = pd.DataFrame(rows)
    out = frontier(df, "psnr", min_step=30)
    assert out["step"].min() == 30 and len(out) == 3 * 2 * 8
    for D, g in out.groupby("D"):
        np.testing.assert_array_equal(g["on_frontier_d"].to_numpy(), _brute_force(g["C"].to_numpy(), g["y"].to_numpy()))
    np.testing.assert_array_equal(out["on_frontier_joint"].to_numpy(),
                                  _brute_force(out["C"].to_numpy(), out["y"].to_numpy()))
    # running minimum: along each D's frontier y strictly decreases as C grows
    for _, g in out[out.on_frontier_d].groupby("D"):
        assert np.all(np.diff(g.sort_values("C")["y"].to_numpy()) < 0)
    first = out[out.on_frontier_d].iloc[0]
    src = df[(df.run_id == first.run_id) & (df.step == first.step)]
    assert len(src) == 1 and src.value.iloc[0] == first.value
    assert out.attrs["metric"] == "psnr"


def test_frontier_rejects_non_finite_metrics_naming_the_checkpoint():
    df = pd.DataFrame(dict(run_id=["a", "b"], D=[1, 1], step=[1, 2], compute_gflop=[1.0, 2.0], value=[20.0, np.nan]))
    with pytest.raises(ValueError, match="non-finite"):
        frontier(df, "psnr")
    with pytest.raises(ValueError, match="unknown metric"):
        frontier(df, "fid")
