"""Cooldown branches (`rayder-train CONFIG --cooldown-from STEP --cooldown-steps K`): a run forked from a stable
checkpoint of its parent with a WSD decay, in its own run directory (Hägele et al. 2024)."""
from __future__ import annotations

import json

from rayder_core.fileio import atomic_write_text
from rayder_core.train_config import TrainConfig, load_train_config
from rayder_core.training.checkpoints import checkpoint_path, copy_checkpoint, latest_checkpoint
from rayder_core.training.schedule import lr_phase

COOLDOWN_HALVINGS = 10  # a cooldown branch halves its LR this many times over its steps: ~0.1% of the stable LR


def cooldown_config(cfg: TrainConfig, from_step: int, steps: int) -> TrainConfig:
    """Config of a cooldown branch of run `cfg`: the same run with a WSD decay that starts at `from_step` and lasts
    `steps` steps (`optim.decay_start = from_step`, `optim.decay_halve_every = steps / COOLDOWN_HALVINGS`, i.e. the
    LR halves 10 times and ends at ~2^-10 of the stable LR, `steps = from_step + steps`). Its identity, hence its
    run id, differs from the parent's; its first `from_step` steps are the parent's, so forking from the parent's
    checkpoint gives exactly the run this config describes. The decay is the toolkit's halving (exponential)
    schedule, not the linear or 1-sqrt shape of Hägele et al. (2024)."""
    if steps <= 0:
        raise ValueError(f"--cooldown-steps must be > 0, got {steps}")
    if not 0 < from_step < cfg.steps:
        raise ValueError(f"--cooldown-from {from_step}: must be a step inside run {cfg.run_id} (1..{cfg.steps - 1})")
    phase = lr_phase(from_step - 1, cfg)
    if phase != "stable":
        raise ValueError(f"--cooldown-from {from_step}: step {from_step} of run {cfg.run_id} is in the {phase} phase "
                         f"(warmup_steps={cfg.optim.warmup_steps}, decay_start={cfg.optim.decay_start}); a cooldown "
                         "forks from a stable (constant-LR) checkpoint")
    data = cfg.to_dict()
    data["steps"] = from_step + steps
    data["optim"] = {**data["optim"], "decay_start": from_step,
                     "decay_halve_every": max(1, round(steps / COOLDOWN_HALVINGS))}
    return load_train_config(data)


def fork_cooldown(cfg: TrainConfig, from_step: int, steps: int) -> TrainConfig:
    """Prepare the run directory of a cooldown branch (see `cooldown_config`) and return its config.

    Copies the parent's checkpoint at `from_step` into the branch (with the branch's run id, so `run_training`
    resumes from it) and writes `branch.json` (parent_run, parent_step, cooldown_steps, schedule), which
    `record_run_dir` stores in table `branches`. Idempotent: an existing branch is resumed, not re-forked."""
    branch = cooldown_config(cfg, from_step, steps)
    src = checkpoint_path(cfg.run_dir, from_step)
    run_dir = branch.run_dir
    if latest_checkpoint(run_dir) is None:
        if not src.is_file():
            raise FileNotFoundError(f"{src}: run {cfg.run_id} has no checkpoint at step {from_step} (it saves every "
                                    f"{cfg.checkpoint_every} steps; keep_checkpoints={cfg.keep_checkpoints})")
        copy_checkpoint(src, run_dir, branch.run_id)
        halve = branch.optim.decay_halve_every
        atomic_write_text(run_dir / "branch.json", json.dumps({
            "parent_run": cfg.run_id, "parent_step": from_step, "cooldown_steps": steps,
            "schedule": f"lr halves every {halve} steps from step {from_step} (~2^-{steps / halve:.3g} of the "
                        "stable lr at the end)"}))
    return branch
