"""Runs that differ only in their seed are replicates of one grid cell: average them before the frontier.

A grid with `grid.seeds: [0, 1]` trains every (size, D, length) twice. The frontier takes, at each compute, the
lowest loss of any checkpoint (`frontier.running_frontier`); with two seeds at the same C it would pick the luckier
one, biasing every frontier point low by the seed spread and fitting the law to minima, not to expected losses.
`average_replicates` replaces the checkpoints of one cell and step by one point whose target is the mean of theirs
(in the fitted space: MSE, 1-SSIM, LPIPS; PSNRs are averaged as MSEs), with `n_replicates` and `seeds` saying what
was averaged. `ResultsStore.eval_points` provides the `replicate` key (`rayder_core.run_identity.replicate_key`).

A mean is a fair summary of seeds that scatter around one outcome, not of seeds that reached different ones (in the
demo, a narrow model on few clips either learns the scene geometry or memorises its clips: docs/fitting.md).
`disagreeing_replicates` finds such cells; `fit_study` names them in its notes.
"""
from __future__ import annotations

import pandas as pd

from .frontier import inverse_transform, target_label, transform_metric

REPLICATE_MODES = ("mean", "median", "all")
"""mean: one point per cell and step, the replicates' mean; median: their median (with 3 or more seeds, one seed
that reached another outcome does not move it; with 2 it is the mean); all: every run is its own point (the frontier
then takes the best seed at each compute)."""


def _has_replicates(points: pd.DataFrame) -> bool:
    """Whether some cell (`replicate`) has more than one run at one step."""
    return "replicate" in points.columns and not points.empty and points.duplicated(["replicate", "step"]).any()


def _by_cell_and_step(points: pd.DataFrame, metric: str):
    """(points with the fitted target `_y`, sorted by cell, step, seed, run; their groupby on (replicate, step))."""
    df = points.assign(_y=transform_metric(points["value"], metric))
    df = df.sort_values(["replicate", "step"] + (["seed"] if "seed" in df.columns else []) + ["run_id"])
    return df, df.groupby(["replicate", "step"], sort=False)


def average_replicates(points: pd.DataFrame, metric: str, how: str = "mean") -> tuple[pd.DataFrame, int]:
    """(points with replicates averaged, number of cells that had more than one replicate).

    Rows are grouped by (`replicate`, `step`); a group of one row is kept as it is. A group's row is its first
    run's (lowest seed) with `value` = inverse_transform(the `how` = mean or median of the transformed values),
    `compute_gflop` and `samples` their means (equal for replicates), `n_replicates` and `seeds` (e.g. "0,1").
    Points without a `replicate` column, or without two runs of one cell, are returned unchanged."""
    if how not in ("mean", "median"):
        raise ValueError(f"average_replicates: how must be mean or median, got {how!r}")
    if not _has_replicates(points):  # nothing to average: the points as they came
        return points, 0
    df, groups = _by_cell_and_step(points, metric)
    first = groups.head(1).set_index(["replicate", "step"])
    first["n_replicates"] = groups["run_id"].nunique()
    first["value"] = inverse_transform(groups["_y"].agg(how).reindex(first.index).to_numpy(), metric)
    for col in ("compute_gflop", "samples"):
        if col in df.columns:
            first[col] = groups[col].mean().reindex(first.index)
    if "seed" in df.columns:
        first["seeds"] = groups["seed"].agg(lambda s: ",".join(str(v) for v in s.dropna())).reindex(first.index)
    out = first.reset_index().drop(columns="_y")
    cells = out.loc[out["n_replicates"] > 1, "replicate"].nunique()
    return out[[c for c in [*points.columns, "n_replicates", "seeds"] if c in out.columns]], int(cells)


DISAGREE_RATIO = 1.25
"""Replicates whose largest target exceeds their smallest by more than this factor disagree: the measured seed
spread of one outcome is 4-8% (log-sd, docs/benchmarks.md), so 25% is a different outcome, not noise."""


def disagreeing_replicates(points: pd.DataFrame, metric: str, ratio: float = DISAGREE_RATIO) -> pd.DataFrame:
    """Cells whose replicates disagree: one row per cell (`replicate`), at the step where the ratio of its largest to
    its smallest target (fitted space, e.g. MSE) is largest, when that ratio exceeds `ratio`. Columns: replicate,
    step, preset and D when present, seeds (in the order of `targets`), targets (tuple), ratio. Empty when nothing
    disagrees or there is nothing to compare."""
    cols = ["replicate", "step", "preset", "D", "seeds", "targets", "ratio"]
    if not _has_replicates(points):
        return pd.DataFrame(columns=cols)
    df, groups = _by_cell_and_step(points, metric)
    out = groups.agg(n=("_y", "size"), lo=("_y", "min"), hi=("_y", "max"), targets=("_y", tuple),
                     seeds=("seed" if "seed" in df.columns else "run_id", tuple),
                     **{c: (c, "first") for c in ("preset", "D") if c in df.columns}).reset_index()
    out = out[(out["n"] > 1) & (out["lo"] > 0)].assign(ratio=lambda t: t["hi"] / t["lo"])
    out = out[out["ratio"] > ratio].sort_values("ratio", ascending=False).drop_duplicates("replicate")
    return out.reindex(columns=cols).reset_index(drop=True)


def disagreement_note(points: pd.DataFrame, metric: str, ratio: float = DISAGREE_RATIO, shown: int = 3) -> str | None:
    """A warning naming the cells whose seeds disagree by more than `ratio` (`disagreeing_replicates`), or None."""
    bad = disagreeing_replicates(points, metric, ratio)
    if bad.empty:
        return None
    name = target_label(metric)
    cells = []
    for r in bad.head(shown).itertuples():
        where = " ".join(str(v) for v in (r.preset, f"D={r.D}" if pd.notna(r.D) else None) if pd.notna(v))
        values = " vs ".join(f"{y:.3g} (seed {s})" for s, y in zip(r.seeds, r.targets))
        cells.append(f"{where or r.replicate} step {r.step}: {name} {values}")
    more = f"; {len(bad) - shown} more" if len(bad) > shown else ""
    return (f"the seeds of {len(bad)} cell(s) disagree by more than {ratio:g}x (a mean of different outcomes, not "
            f"of noise; more seeds there, or read those runs): " + "; ".join(cells) + more)


__all__ = ["DISAGREE_RATIO", "REPLICATE_MODES", "average_replicates", "disagreeing_replicates", "disagreement_note"]
