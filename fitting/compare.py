"""Law comparison: fit several laws on the same points and rank them by AIC/BIC and cross-validated error.

Likelihood (stated, as the issue asks): log residuals r_i = log y_i - log y_hat_i are i.i.d. Gaussian with a fitted
scale sigma. Every law is therefore fitted by least squares on log residuals (Huber with a delta so large that no
residual reaches it, `COMPARE_DELTA`), which is the maximum-likelihood fit, and sigma^2 = RSS / n (its MLE), so

    log L = -n/2 (log(2 pi sigma^2) + 1),  k = free parameters + 1 (sigma),
    AIC = 2k - 2 log L,  AICc = AIC + 2k(k+1)/(n-k-1),  BIC = k log n - 2 log L.

Cross-validation (warm-started L-BFGS-B refits, `FitResult.refit_predict`): leave-one-out (LOO) and leave-one-D-out
(LODO: all points of one value of the second input, when it takes 3-12 values) mean |relative error| of the held-out
predictions, in %. Laws with fewer inputs use the first columns of `x` (e.g. `single` uses C only); the
data-constrained law needs a third column (unique data U).
"""
from __future__ import annotations

import math
import warnings
from typing import Sequence

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from .fit import FitResult, FitWarning, fit_law
from .laws import get_law

COMPARE_DELTA = 1e6  # Huber delta on log residuals: effectively plain least squares in log space


def log_likelihood(res: FitResult) -> tuple[float, int, float, float, float]:
    """(rss_log, k, sigma2, loglik, aic) of a fit: Gaussian log residuals with their variance estimated, k = free
    parameters + 1 (sigma), the AIC every comparison of this module ranks laws by."""
    law = res.law
    r = np.log(res.targets) - np.log(res.predict(*res.inputs[:2], **({"U": res.inputs[2]}
                                                                      if law.n_inputs == 3 else {})))
    n, rss, k = len(r), float(np.sum(r * r)), res.n_free + 1
    sigma2 = max(rss / n, 1e-300)
    loglik = -0.5 * n * (math.log(2 * math.pi * sigma2) + 1.0)
    return rss, k, sigma2, loglik, 2 * k - 2 * loglik


def compare_laws(df: pd.DataFrame, laws: Sequence[str], x: Sequence[str] = ("C", "D"), y: str = "y", *,
                 loo: bool = True, lodo: bool = True, n_starts: int | None = 8, progress: bool | None = None,
                 fix: dict[str, dict] | None = None, tie: dict[str, dict] | None = None) -> pd.DataFrame:
    """Fit every law in `laws` on the same points (rows of `df`; a frontier table is reduced to its per-D frontier
    points) and return one row per law, best AIC first.

    Columns: law, n_inputs, n (points), k (free parameters + sigma), rss_log, sigma_log, loglik, aic, aicc, bic,
    d_aic / d_bic (difference to the best), akaike_weight, loo_err / lodo_err (cross-validated mean |relative
    error| in %, NaN when not computed), r2, formula, params (dict). `fix`/`tie` map a law name to its constraints.
    """
    x = list(x)
    if not laws:
        raise ValueError("compare_laws: give at least one law")
    for name in laws:
        law = get_law(name)
        if law.n_inputs > len(x):
            raise ValueError(f"compare_laws: law {name!r} needs {law.n_inputs} input columns, x={x} has {len(x)}")
    if "on_frontier_d" in df.columns:
        df = df[df["on_frontier_d"].astype(bool)]
    df = df.reset_index(drop=True)
    rows = []
    for name in tqdm(list(laws), desc="compare laws", disable=None if progress is None else not progress,
                     leave=False):
        law = get_law(name)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FitWarning)
            res = fit_law(df, law=name, x=x[:law.n_inputs], y=y, delta=COMPARE_DELTA, bootstrap=0, holdout=False,
                          n_starts=n_starts, fix=(fix or {}).get(name), tie=(tie or {}).get(name))
        n = res.n_points
        rss, k, sigma2, loglik, aic = log_likelihood(res)
        row = {"law": res.law_label, "n_inputs": law.n_inputs, "n": n, "k": k, "rss_log": rss,
               "sigma_log": math.sqrt(sigma2), "loglik": loglik, "aic": aic,
               "aicc": aic + (2 * k * (k + 1) / (n - k - 1) if n - k - 1 > 0 else math.inf),
               "bic": k * math.log(n) - 2 * loglik, "loo_err": np.nan, "lodo_err": np.nan, "r2": res.r2,
               "formula": res.formula(), "params": dict(res.params)}
        if loo:
            errs = []
            for i in range(n):
                test = np.zeros(n, dtype=bool)
                test[i] = True
                errs.append(abs(res.refit_predict(~test, test)[0] / res.targets[i] - 1.0))
            row["loo_err"] = 100.0 * float(np.nanmean(errs))
        if lodo and len(x) >= 2:
            dvals = df[x[1]].to_numpy(dtype=float)
            uniq = np.unique(dvals)
            if 3 <= len(uniq) <= 12:
                errs = []
                for d in uniq:
                    test = dvals == d
                    pred = res.refit_predict(~test, test)
                    errs.extend(np.abs(pred / res.targets[test] - 1.0))
                row["lodo_err"] = 100.0 * float(np.nanmean(errs))
        rows.append(row)
    out = pd.DataFrame(rows).sort_values("aic", kind="stable").reset_index(drop=True)
    out["d_aic"] = out["aic"] - out["aic"].min()
    out["d_bic"] = out["bic"] - out["bic"].min()
    w = np.exp(-0.5 * out["d_aic"])
    out["akaike_weight"] = w / w.sum()
    return out


def format_comparison(table: pd.DataFrame) -> str:
    """The comparison table as printed by `rayder-fit --compare` (one line per law, best AIC first)."""
    cols = ["law", "n", "k", "sigma_log", "aic", "d_aic", "bic", "d_bic", "akaike_weight", "loo_err", "lodo_err",
            "r2"]
    fmt = {"sigma_log": "{:.4f}".format, "aic": "{:.2f}".format, "d_aic": "{:.2f}".format, "bic": "{:.2f}".format,
           "d_bic": "{:.2f}".format, "akaike_weight": "{:.3f}".format, "loo_err": "{:.3f}".format,
           "lodo_err": "{:.3f}".format, "r2": "{:.4f}".format}
    text = table[cols].to_string(index=False, formatters=fmt)
    return (text + "\n(Gaussian likelihood on log residuals with fitted sigma; k counts sigma; loo_err/lodo_err: "
            "cross-validated mean |relative error| in %)")
