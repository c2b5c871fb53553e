"""What a law's D term rests on: the runs that hold each data size's frontier, and the data sizes whose held-out loss
reached its minimum inside the runs (data-limited) rather than still falling at the last checkpoint (compute-limited).

At a small D the held-out loss falls, bottoms out after some number of epochs and rises as the model memorises its
clips; only such data sizes say how the loss floor depends on D. A data size whose runs are still improving at their
last checkpoint carries the compute term, not the D term. Epochs are training samples seen / D (`samples` = steps x
batch clips). Losses are the fitted lower-is-better target (MSE on [-1, 1] from PSNR, 1-SSIM, LPIPS).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .fit import FitResult, refit_points

# a run "turned up" when its last checkpoint's loss is above its minimum by more than this (relative): a plateau's
# checkpoint-to-checkpoint wiggle is not overfitting
TURNED_UP_TOL = 0.02
MIN_CHECKPOINTS = 3  # a run with fewer evaluated checkpoints cannot show where its loss bottomed out


def frontier_runs_by_d(table: pd.DataFrame, unit: str = "trunk") -> pd.Series:
    """How many independent runs hold each data size's frontier: the distinct values of `unit` (default the trunk:
    run lengths forked from one trunk are one run; `run_id` where the table has no such column) among the per-D
    frontier points (`on_frontier_d`) of `table` (a `fitting.frontier` table), each counted as many times as the
    seeds averaged into it (`n_replicates`, `fitting.replicates`), indexed by D (videos), ascending."""
    front = table[table["on_frontier_d"].astype(bool)]
    column = unit if unit in front.columns else "run_id"
    seeds = front["n_replicates"] if "n_replicates" in front.columns else pd.Series(1, index=front.index)
    per_unit = seeds.fillna(1).groupby([front["D"], front[column]]).max()
    return per_unit.groupby(level=0).sum().sort_index().astype(int)


def format_runs_by_d(runs: pd.Series) -> str:
    """'64: 1, 128: 3, ...' (D: independent runs on its frontier, `frontier_runs_by_d`)."""
    return ", ".join(f"{int(d)}: {n}" for d, n in runs.items())


def held_out_minima(points: pd.DataFrame, tol: float = TURNED_UP_TOL) -> pd.DataFrame:
    """Where each run's held-out loss bottomed out. `points`: one row per evaluated checkpoint with run_id, D
    (videos), step, samples (clips seen) and y (lower-is-better target); runs with fewer than `MIN_CHECKPOINTS`
    checkpoints (e.g. a run forked from a trunk near its end) are left out. One row per run: run_id, D, checkpoints,
    last_step, step_min, epochs_min (samples / D at the minimum), epochs_last, y_min, y_last, turned_up (y_last >
    y_min x (1 + tol): the run passed its data's best and got worse)."""
    rows = []
    for run_id, g in points.sort_values("step").groupby("run_id", sort=True):
        if len(g) < MIN_CHECKPOINTS:
            continue
        i = int(np.argmin(g["y"].to_numpy()))
        d = float(g["D"].iloc[0])
        y_min, y_last = float(g["y"].iloc[i]), float(g["y"].iloc[-1])
        rows.append({"run_id": run_id, "D": d, "checkpoints": len(g), "last_step": int(g["step"].iloc[-1]),
                     "step_min": int(g["step"].iloc[i]), "epochs_min": float(g["samples"].iloc[i]) / d,
                     "epochs_last": float(g["samples"].iloc[-1]) / d, "y_min": y_min, "y_last": y_last,
                     "turned_up": y_last > y_min * (1 + tol)})
    return pd.DataFrame(rows, columns=["run_id", "D", "checkpoints", "last_step", "step_min", "epochs_min",
                                       "epochs_last", "y_min", "y_last", "turned_up"])


def data_limited_by_d(minima: pd.DataFrame) -> pd.DataFrame:
    """Per D (ascending): runs (with enough checkpoints), turned_up (how many passed their held-out minimum),
    epochs_min (median epochs at the minimum of those that turned up; NaN when none did), epochs_last (median
    epochs at the runs' last checkpoints) and data_limited (most runs turned up)."""
    if minima.empty:
        return pd.DataFrame(columns=["D", "runs", "turned_up", "epochs_min", "epochs_last", "data_limited"])
    out = []
    for d, g in minima.groupby("D", sort=True):
        up = g[g["turned_up"]]
        out.append({"D": d, "runs": len(g), "turned_up": len(up),
                    "epochs_min": float(up["epochs_min"].median()) if len(up) else float("nan"),
                    "epochs_last": float(g["epochs_last"].median()), "data_limited": 2 * len(up) > len(g)})
    return pd.DataFrame(out)


def epochs_to_minimum(minima: pd.DataFrame) -> float:
    """The median number of epochs after which the runs that turned up reached their held-out minimum (NaN when no
    run turned up): the measured trend that says how long a run at a larger D must be to show its D term."""
    up = minima[minima["turned_up"]] if len(minima) else minima
    return float(up["epochs_min"].median()) if len(up) else float("nan")


def largest_d_projection(points: pd.DataFrame, minima: pd.DataFrame) -> tuple[float, float, float, int] | None:
    """(epochs, D_max, steps, longest run's steps): at `epochs_to_minimum(minima)` epochs, the training steps (at the
    batch the longest run trained with: its samples / steps) before which the largest D of `points` cannot reach its
    held-out minimum; None when no run turned up. Read off the smaller D, not measured at D_max: a lower bound where
    the epochs to the minimum grow with D, as they did in the demo's runs (docs/benchmarks.md, "Runs to 300 epochs")."""
    epochs = epochs_to_minimum(minima)
    if not np.isfinite(epochs) or points.empty:
        return None
    last = points.loc[points["step"].idxmax()]
    d_max = float(points["D"].max())
    steps = epochs * d_max / (float(last["samples"]) / float(last["step"]))
    return epochs, d_max, steps, int(last["step"])


def beta_without_smallest_d(fit: FitResult) -> tuple[float, float] | None:
    """(smallest D, beta of `fit`'s law refitted on its own points without that D: `refit_points`): how much the D
    exponent leans on one data size; None when beta is fixed or absent, the fit has no inputs, or it has < 3 D."""
    if "beta" not in fit.params or "beta" in fit.fixed or fit.inputs is None:
        return None
    d_values = np.unique(fit.inputs[1])
    if d_values.size < 3:
        return None
    return float(d_values[0]), float(refit_points(fit, keep=fit.inputs[1] > d_values[0]).params["beta"])


def format_projection(projection: tuple[float, float, float, int]) -> str:
    """'at 275 epochs (the median minimum) D = 2048 needs >= ~1.76e+04 steps to reach its minimum (4.4x the longest
    run)'."""
    epochs, d_max, steps, longest = projection
    return (f"at {epochs:.0f} epochs (the median minimum) D = {d_max:g} needs >= ~{steps:.3g} steps to reach its "
            f"minimum ({steps / longest:.2g}x the longest run)")


def format_data_limited(by_d: pd.DataFrame) -> str:
    """'minimum inside the runs at D = 64, 128, 256 (median 182, 302, 275 epochs); still falling at the last
    checkpoint at D = 512, 1024, 2048 (250, 125, 62 epochs)' from `data_limited_by_d`."""
    lim, free = by_d[by_d["data_limited"]], by_d[~by_d["data_limited"]]
    parts = []
    if len(lim):
        parts.append("held-out minimum inside the runs at D = " + ", ".join(f"{int(d)}" for d in lim["D"])
                     + " (median " + ", ".join(f"{e:.0f}" for e in lim["epochs_min"]) + " epochs)")
    if len(free):
        parts.append("still falling at the last checkpoint at D = " + ", ".join(f"{int(d)}" for d in free["D"])
                     + " (" + ", ".join(f"{e:.0f}" for e in free["epochs_last"]) + " epochs)")
    return "; ".join(parts)
