"""Runs that share a trunk: a run whose first steps are those of a longer run starts from that run's checkpoint.

Runs of one grid point trained for several lengths (`grid.steps`, Chinchilla approach 1) differ only in their length
and the WSD decay that scales with it: until the shorter run's decay starts, both take the same steps (same init,
data order, LR). So the shorter run can start from the longer run's checkpoint at its `decay_start` and train only
its decay: `lengths 1000 / 2000` cost 2000 + 200 steps instead of 3000 (Hägele et al. 2024 fork cooldowns the same
way). The run is the same run as one trained from step 0 (tests/test_trunk.py checks the weights): its config names
the checkpoint in `start_from`, which is not part of its identity, and the longer run saves and keeps that checkpoint
(`checkpoint_steps`). `trunk.json` in the run directory records where it started from.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rayder_core.fileio import atomic_write_text
from rayder_core.run_identity import trunk_of
from rayder_core.train_config import TrainConfig, load_train_config
from rayder_core.training.checkpoints import copy_checkpoint

LENGTH_KEYS = (("steps",), ("optim", "decay_start"), ("optim", "decay_halve_every"), ("eval",))
"""Identity keys in which runs of one trunk may differ: the length, the decay that scales with it, and the eval
schedule (evaluations read the model; they draw from their own generators, not the training RNG)."""


def trunk_identity(cfg: TrainConfig) -> dict[str, Any]:
    """`cfg.identity()` without LENGTH_KEYS: runs with equal trunk identities differ only in their length."""
    ident = cfg.identity()
    for path in LENGTH_KEYS:
        node = ident
        for part in path[:-1]:
            node = node[part]
        node.pop(path[-1], None)
    return ident


def fork_step(short: TrainConfig, long: TrainConfig) -> int | None:
    """The step from which `short` can start from `long`'s checkpoint: the last step before either run leaves its
    constant LR (`short`'s decay start, at most `long`'s), if the two runs share a trunk; else None. Equal trunk
    identities mean the same peak LR and warmup, so `lr_at` agrees on every step before both decay starts."""
    if trunk_identity(short) != trunk_identity(long) or short.steps >= long.steps:
        return None
    starts = [c.optim.decay_start for c in (short, long) if c.optim.decay_start is not None]
    step = min(starts) if starts else short.steps - 1
    return step if 0 < step < short.steps else None


def trunk_run_id(cfg: TrainConfig) -> str | None:
    """The run id of the run whose checkpoint `cfg.start_from` names (None without `start_from`)."""
    return trunk_of(cfg.start_from)[0]


def start_step(cfg: TrainConfig) -> int:
    """The step run `cfg` starts training from when its `start_from` checkpoint exists (0 without one)."""
    return trunk_of(cfg.start_from)[1]


def start_from_trunk(cfg: TrainConfig) -> str:
    """Give run `cfg` (which has no checkpoint yet) a copy of its `start_from` checkpoint, after checking that the
    checkpoint's run shares this run's trunk up to that step. Returns a line saying what was done; a checkpoint not
    there (yet) is not an error: the run trains from step 0 and is the same run, at full cost."""
    src = Path(cfg.start_from)
    if not src.is_file():
        return f"{cfg.run_id}: {src} is not there (yet): training from step 0"
    parent_config = src.parent.parent / "config.yaml"
    if start_step(cfg) == 0 or not parent_config.is_file():
        raise ValueError(f"start_from: {src} is not a run's checkpoint (<run_dir>/checkpoints/step_XXXXXXX.pt beside "
                         "the run's config.yaml)")
    step, parent = start_step(cfg), load_train_config(parent_config)
    ok = fork_step(cfg, parent)
    if ok is None or step > ok:
        raise ValueError(f"start_from: {src}: run {parent.run_id} does not share run {cfg.run_id}'s first {step} "
                         f"steps (they must differ only in {', '.join('.'.join(p) for p in LENGTH_KEYS)}, with the "
                         f"same LR up to the step; the latest step they share: {ok})")
    copy_checkpoint(src, cfg.run_dir, cfg.run_id)
    atomic_write_text(cfg.run_dir / "trunk.json", json.dumps({"trunk_run": parent.run_id, "step": step}))
    return f"{cfg.run_id}: starts at step {step} from the trunk {parent.run_id}"
