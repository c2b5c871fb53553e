"""Compute-optimal frontiers and scaling-law fits (paper section B.2.1).

    from fitting import frontier, fit_law, LAWS
    pts = frontier(store.eval_points(bench="re10k", metric="psnr"), "psnr", min_step=50_000)
    res = fit_law(pts, law="kaplan", x=["C", "D"], y="y", bootstrap=1000, seed=0)
    print(res.formula())          # MSE(C,D) ~ 0.0033 + (200 C^-0.40 + 2.6 D^-0.60)^2.82, R^2 = 0.997

Beyond one fit (issue 12): `fit_law(..., fix={"L_inf": 0}, tie={"beta": "alpha"})`, `compare_laws` (AIC/BIC/CV),
`isoflop` (Chinchilla Approach 2), `fit_data_constrained` (Muennighoff et al. 2023), `growing_prefix` /
`holdout_above` / `predict_holdout` (extrapolation validation), `select_checkpoints` (all | cooldown | final).

One entry point from points to a law (issue 25), used by rayder-fit, the report and the demo:
`fit_study(points, StudyOptions(fit=FitOptions(...), metric="psnr"))` (selection, frontier, too-few check, fit,
warnings); `score_law` evaluates a law whose parameters are all given (nothing fitted).
"""
from .checkpoints import select_checkpoints
from .compare import compare_laws
from .data_constrained import fit_data_constrained
from .fit import FitOptions, FitResult, FitWarning, fit_law, fit_with_options, score_law
from .isoflop import isoflop
from .laws import DEFAULT_LAW, LAWS, Law, constrain, get_law
from .frontier import frontier, inverse_transform, running_frontier, target_label, transform_metric
from .study import StudyFit, StudyOptions, fit_study
from .extrapolation import growing_prefix, holdout_above, predict_holdout, prediction_interval

__all__ = ["DEFAULT_LAW", "LAWS", "FitOptions", "FitResult", "FitWarning", "Law", "StudyFit", "StudyOptions",
           "compare_laws", "constrain", "fit_data_constrained", "fit_law", "fit_study", "fit_with_options", "frontier", "get_law", "growing_prefix", "holdout_above", "inverse_transform", "isoflop",
           "predict_holdout", "prediction_interval", "running_frontier", "score_law", "select_checkpoints",
           "target_label", "transform_metric"]
