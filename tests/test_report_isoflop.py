"""Report isoFLOP page (Chinchilla Approach 2) on a synthetic store whose runs follow the Chinchilla surface
L = E + A/N^alpha + B/S^beta with compute C = 6 N S (S = samples seen), written through ResultsStore."""
from __future__ import annotations

import matplotlib
import numpy as np
import pytest

from rayder_core.store import ResultsStore
from reports import report as R
from reports.pages import isoflop as P

matplotlib.use("Agg")

E, A, B, AL, BE = 1.69, 406.4, 410.7, 0.34, 0.28
A_TRUE = BE / (AL + BE)  # N*(C) ~ C^(beta / (alpha + beta)) for C = 6 N S


def make_store(path, sizes, seeds=(None,)):
    """One run per size (and seed: seed s's MSE is the surface's times 1 + (-1)^s 10%, so two seeds average back to
    it); `seeds=(None,)` writes configs without a seed."""
    store = ResultsStore(path)
    for n in sizes:
        for seed in seeds:
            run = f"iso-{n:.3g}" + ("" if seed is None else f"-s{seed}")
            config = {"preset": f"p{n:.2g}"} | ({} if seed is None else {"seed": seed})
            store.upsert_run(run, sweep="iso", preset=f"p{n:.2g}", params=int(n), fraction=1.0, D=10**12,
                             config=config, status="finished")
            # 8 checkpoints spanning C = 1e17 .. 1e22 FLOP, so every budget 1e18 .. 1e21 is bracketed by every run
            for i, c in enumerate(np.geomspace(1e17, 1e22, 8)):
                samples = c / (6 * n)
                loss = E + A / n ** AL + B / samples ** BE
                mse = 0.01 * loss * (1 if seed is None else 1 + 0.1 * (-1) ** seed)  # any multiple: same minima
                store.add_checkpoint(run, step=i + 1, samples=int(samples), flops=c, wall_time_s=1.0)
                store.add_evals(run, i + 1, bench="re10k-synth", values={"psnr": 10 * np.log10(4 / mse)}, n=10)
    return store


@pytest.mark.slow  # ~100 single-transaction store writes
def test_isoflop_page_from_a_synthetic_store(tmp_path):
    make_store(tmp_path / "r.duckdb", np.geomspace(3e7, 3e9, 9))
    study = R.load_study(tmp_path / "r.duckdb")
    metric, res = P.run_isoflop(study, "re10k-synth", bootstrap=300)
    assert metric == "psnr" and not isinstance(res, str), res
    assert res.profiles["accepted"].sum() >= 4
    # the exponent of N* is the closed form's within the interpolation/parabola error; D* = samples seen at N*
    assert res.a_N == pytest.approx(A_TRUE, abs=0.03)
    assert res.a_D == pytest.approx(1 - A_TRUE, abs=0.03)
    lo, hi = res.band(np.array([1e10]), "N")
    assert lo[0] < res.N_opt(1e10) < hi[0]
    fig = P.isoflop_page(study, "re10k-synth")
    text = " ".join(t.get_text() for t in fig.texts) + " ".join(ax.get_title() for ax in fig.axes)
    assert "isoFLOP profiles" in text and "compute-optimal N" in text and "compute-optimal D" in text
    assert "accepted" in text
    assert sum(bool(ax.collections) for ax in fig.axes) >= 3  # profiles + N* + D* panels drew points/bands
    matplotlib.pyplot.close(fig)
    names = [name for name, fig in P.figures(study, {})]
    assert names == ["07_isoflop_re10k-synth"]


def test_isoflop_points_average_the_seeds_of_a_size(tmp_path):
    sizes = [1e8, 1e9]
    make_store(tmp_path / "r.duckdb", sizes, seeds=(0, 1))
    metric, df = P.isoflop_points(R.load_study(tmp_path / "r.duckdb"), "re10k-synth")
    assert metric == "psnr" and len(df) == 2 * 8  # one point per size and checkpoint, not per run
    n, s = df["N"].to_numpy(), df["S"].to_numpy()
    expected = 0.01 * (E + A / n ** AL + B / s ** BE)  # the mean of 0.9x and 1.1x the surface, in MSE
    np.testing.assert_allclose(df["y"].to_numpy(), expected, rtol=1e-5)  # PSNR is stored as float: ~1e-6


def test_isoflop_page_says_when_there_are_too_few_runs(tmp_path):
    make_store(tmp_path / "r.duckdb", [1e8, 1e9])
    study = R.load_study(tmp_path / "r.duckdb")
    fig = P.isoflop_page(study, "re10k-synth")
    text = " ".join(t.get_text() for t in fig.texts)
    assert "not enough runs" in text and "at least 4 model sizes" in text and "has 2" in text
    matplotlib.pyplot.close(fig)
    assert R.expected_page_count(1, 0, 2) == len(list(R.report_figures(study, R.fit_all(study, bootstrap=0))))
