"""Where a run's checkpoints live: `<run_dir>/checkpoints/step_XXXXXXX.pt` (model, optimizer, RNG and data-loader
state, step, samples, cumulative FLOPs)."""
from __future__ import annotations

import os
from pathlib import Path

import torch

CHECKPOINT_DIR = "checkpoints"


def checkpoint_path(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR / f"step_{step:07d}.pt"


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint file of a run (temp files of an interrupted save are ignored)."""
    ckpts = sorted((Path(run_dir) / CHECKPOINT_DIR).glob("step_*.pt"))
    return ckpts[-1] if ckpts else None


def copy_checkpoint(src: Path, run_dir: Path, run_id: str) -> Path:
    """Copy checkpoint `src` (another run's) into `run_dir` as run `run_id`'s checkpoint at the same step, so that
    `run_training` resumes from it. The copy is written atomically (complete or absent). Returns its path."""
    state = torch.load(src, map_location="cpu", weights_only=True)
    state["run_id"] = run_id
    dst = checkpoint_path(run_dir, int(state["step"]))
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, dst)
    return dst
