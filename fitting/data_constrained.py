"""Data-constrained scaling (Muennighoff et al. 2023, "Scaling data-constrained language models").

RayDer's D is the number of *unique* videos; runs see them for many epochs. The registry law `data_constrained`
(fitting/laws.py) replaces the data term of the additive law by the effective data

    D' = U_D + U_D R* (1 - exp(-R / R*)),  U_D = min(D_seen, U),  R = D_seen / U_D - 1,

with inputs x = [C (or N), D_seen (samples seen), U (unique data)]. Only the data term decays: the paper's
analogous parameter term (R_N*, excess parameters relative to the compute-optimal size for U) needs a model-size
input and the compute-optimal allocation of the base law, and is not implemented.

`fit_data_constrained` does the paper's two-stage fit — the base law (`additive` on [x0, D_seen]) on single-epoch
points (D_seen <= U), then R* alone with the base parameters fixed on all points — and the joint fit of all six
parameters, and returns both.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Sequence

import pandas as pd

from .fit import FitResult, FitWarning, fit_law


@dataclass
class DataConstrainedFit:
    base: FitResult  # additive law on the single-epoch points
    two_stage: FitResult  # data_constrained with the base parameters fixed: only R_star fitted
    joint: FitResult | None  # all parameters fitted together on every point
    n_single_epoch: int
    n_points: int

    def summary(self) -> str:
        lines = [f"data-constrained fit (Muennighoff et al. 2023): {self.n_points} points, "
                 f"{self.n_single_epoch} single-epoch",
                 "stage 1, base law on single-epoch points:", self.base.summary(),
                 "stage 2, R* with the base fixed:", self.two_stage.summary()]
        if self.joint is not None:
            lines += ["joint fit:", self.joint.summary()]
        return "\n".join(lines)


def fit_data_constrained(df: pd.DataFrame, x: Sequence[str] = ("C", "D", "U"), y: str = "y", *, joint: bool = True,
                         bootstrap: int = 200, seed: int = 0, **fit_kw) -> DataConstrainedFit:
    """Two-stage and (optionally) joint fit of the data-constrained law; x = [compute or N, data seen, unique data].

    Stage 1 needs more single-epoch points (data seen <= unique data) than the 5 base parameters. `fit_kw` go to
    every `fit_law` call (objective, delta, n_starts, ...).
    """
    x = list(x)
    if len(x) != 3:
        raise ValueError(f"data-constrained fit: give three input columns (compute or N, data seen, unique data), "
                         f"got x={x}")
    missing = [c for c in [*x, y] if c not in df.columns]
    if missing:
        raise ValueError(f"data-constrained fit: data lacks columns {missing} (have {list(df.columns)})")
    single = df[df[x[1]] <= df[x[2]] * (1 + 1e-9)]
    if len(single) <= 5:
        raise ValueError(f"data-constrained fit: {len(single)} single-epoch points ({x[1]} <= {x[2]}); stage 1 "
                         "needs more than 5 (the base additive law's parameters)")
    kw = {"holdout": False, **fit_kw}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FitWarning)
        base = fit_law(single, law="additive", x=x[:2], y=y, bootstrap=bootstrap, seed=seed, **kw)
        fixed = {k: base.params[k] for k in ("L_inf", "A", "alpha", "B", "beta")}
        two = fit_law(df, law="data_constrained", x=x, y=y, fix=fixed, bootstrap=bootstrap, seed=seed, **kw)
        both = fit_law(df, law="data_constrained", x=x, y=y, bootstrap=bootstrap, seed=seed, **kw) if joint else None
    return DataConstrainedFit(base=base, two_stage=two, joint=both, n_single_epoch=len(single), n_points=len(df))
