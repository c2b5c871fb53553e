"""Which evaluated checkpoints a frontier may use (issue 12 items 6-7).

Mid-run checkpoints of a constant-LR (WSD stable phase) run are not equivalent to finished shorter runs: a run
that cools down at that point reaches a lower loss (Hägele et al. 2024, "Scaling laws and compute-optimal training
beyond fixed training durations"). The store records the LR phase of every checkpoint (`checkpoints.lr_phase`:
warmup | stable | decay, the phase of the checkpoint's last optimizer step), so a frontier can use

- `all`: every checkpoint (the paper's choice, B.2.1);
- `cooldown`: only cooled-down points: the last checkpoint of a finished run whose last step was in the decay
  phase (WSD runs that decayed, cooldown branches from `rayder-train --cooldown-from`);
- `final`: only the last checkpoint of every finished run.

Warmup checkpoints (LR still ramping up) are dropped by default in every mode. Checkpoints recorded before the
store had LR phases (NULL) cannot be classified: `all` and `final` keep them, `cooldown` drops them, and the
report says how many there were.
"""
from __future__ import annotations

import pandas as pd

CHECKPOINT_MODES = ("all", "cooldown", "final")


def select_checkpoints(points: pd.DataFrame, mode: str = "all", *, drop_warmup: bool = True,
                       min_step: int = 0) -> tuple[pd.DataFrame, list[tuple[str, int]]]:
    """Filter `ResultsStore.eval_points(...)` rows; returns (kept rows, [(filter description, rows removed), ...]).

    Filters apply in order: min_step (step < min_step), warmup (lr_phase == 'warmup', when `drop_warmup`), then
    the checkpoint `mode`. A last entry ('checkpoints without a recorded LR phase (kept)', n) reports unclassified
    rows that remain.
    """
    if mode not in CHECKPOINT_MODES:
        raise ValueError(f"checkpoints mode must be one of {CHECKPOINT_MODES}, got {mode!r}")
    need = {"step"} | ({"lr_phase"} if drop_warmup or mode == "cooldown" else set()) | (
        {"is_last", "status"} if mode != "all" else set())
    missing = sorted(need - set(points.columns))
    if missing:
        raise ValueError(f"select_checkpoints: points lack columns {missing} (use ResultsStore.eval_points of a "
                         f"schema-3 toolkit; have {list(points.columns)})")
    df = points
    report: list[tuple[str, int]] = []
    if min_step:
        keep = df["step"] >= min_step
        report.append((f"--min-step {min_step}", int((~keep).sum())))
        df = df[keep]
    if drop_warmup:
        warm = df["lr_phase"] == "warmup"
        report.append(("warmup checkpoints", int(warm.sum())))
        df = df[~warm]
    if mode != "all":
        final = df["is_last"].astype(bool) & (df["status"] == "finished")
        keep = final & (df["lr_phase"] == "decay") if mode == "cooldown" else final
        report.append((f"--checkpoints {mode}", int((~keep).sum())))
        df = df[keep]
    if "lr_phase" in df.columns and df["lr_phase"].isna().any():
        report.append(("checkpoints without a recorded LR phase (kept)", int(df["lr_phase"].isna().sum())))
    return df.copy(), report


def format_report(report: list[tuple[str, int]], n_before: int, n_after: int) -> str:
    """One line for rayder-fit: 'checkpoints: 120 -> 84 (warmup checkpoints: -12, --checkpoints final: -24)'."""
    parts = [f"{what}: {n}" if "kept" in what else f"{what}: -{n}" for what, n in report]
    return f"checkpoints: {n_before} -> {n_after}" + (f" ({', '.join(parts)})" if parts else "")
