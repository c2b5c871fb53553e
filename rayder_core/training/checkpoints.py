"""Where a run's checkpoints live: `<run_dir>/checkpoints/step_XXXXXXX.pt` (model, optimizer, RNG and data-loader
state, step, samples, cumulative FLOPs)."""
from __future__ import annotations

from pathlib import Path

CHECKPOINT_DIR = "checkpoints"


def checkpoint_path(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR / f"step_{step:07d}.pt"


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint file of a run (temp files of an interrupted save are ignored)."""
    ckpts = sorted((Path(run_dir) / CHECKPOINT_DIR).glob("step_*.pt"))
    return ckpts[-1] if ckpts else None
