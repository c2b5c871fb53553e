"""Synthetic RayDer-like scaling data from the paper's fitted laws (Eqs. 4-6); a helper for the fitting tests (no tests)."""
from __future__ import annotations

import numpy as np
import pandas as pd

# Paper Table B.3: training TFLOP per step at batch size 1 (= per sample) of the scaling presets.
TFLOP_PER_SAMPLE = {"XS": 5.93, "S": 11.56, "B": 27.79, "L": 48.37}
FRACTIONS = {0.01: 27_000, 0.10: 270_000, 1.00: 2_700_000}  # share of SpatialVid -> number of videos D
# Eqs. 4-6 (B.10-B.12): L_inf + (A C^-alpha + B D^-beta)^gamma with C in GFLOP, D in videos.
PAPER_LAWS = {
    "mse": dict(L_inf=0.0033, A=200.0, alpha=0.40, B=2.6, beta=0.60, gamma=2.82),
    "lpips": dict(L_inf=0.11, A=7000.0, alpha=0.43, B=14.0, beta=0.58, gamma=1.82),
    "ssim": dict(L_inf=0.076, A=700.0, alpha=0.35, B=10.0, beta=0.47, gamma=3.34),
}


def kaplan(p: dict, C, D):
    return p["L_inf"] + (p["A"] * np.asarray(C, float) ** -p["alpha"] + p["B"] * np.asarray(D, float) ** -p["beta"]) ** p["gamma"]


def eval_points(metric: str, seed: int, noise: float = 0.01, steps=range(50_000, 160_000, 10_000)) -> pd.DataFrame:
    """Rows like ResultsStore.eval_points: 4 sizes x 3 fractions x checkpoints; value = the law x (1 + noise).

    C counts training compute per sample (TFLOP/step at batch 1 x steps, in GFLOP): with the rounded Eq. 4
    constants, C at batch 256 would make the reducible MSE 0.2% of the total, below any realistic noise.
    """
    rng = np.random.default_rng(seed)
    rows = []
    for preset, tflop in TFLOP_PER_SAMPLE.items():
        for frac, D in FRACTIONS.items():
            for step in steps:
                C = tflop * 1e3 * step
                rows.append(dict(run_id=f"{preset}-{frac:g}", preset=preset, fraction=frac, D=D, step=step,
                                 samples=256 * step, compute_gflop=C))
    df = pd.DataFrame(rows)
    y = kaplan(PAPER_LAWS[metric], df["compute_gflop"], df["D"]) * (1.0 + noise * rng.standard_normal(len(df)))
    df["value"] = y  # mse / lpips are already lower-is-better
    if metric == "ssim":
        df["value"] = 1.0 - y
    df["n"] = 100
    return df
