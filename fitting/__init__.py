"""Compute-optimal frontiers and scaling-law fits (paper section B.2.1).

    from fitting import frontier, fit_law, LAWS
    pts = frontier(store.eval_points(bench="re10k", metric="psnr"), "psnr", min_step=50_000)
    res = fit_law(pts, law="kaplan", x=["C", "D"], y="y", bootstrap=1000, seed=0)
    print(res.formula())          # MSE(C,D) ~ 0.0033 + (200 C^-0.40 + 2.6 D^-0.60)^2.82, R^2 = 0.997
"""
from .fit import FitResult, FitWarning, fit_law
from .laws import DEFAULT_LAW, LAWS, Law, get_law
from .pareto import frontier, inverse_transform, running_frontier, target_label, transform_metric

__all__ = ["DEFAULT_LAW", "LAWS", "FitResult", "FitWarning", "Law", "fit_law", "frontier", "get_law",
           "inverse_transform", "running_frontier", "target_label", "transform_metric"]
