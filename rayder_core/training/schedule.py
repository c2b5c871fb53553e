"""The learning-rate schedule of a run (paper Appendix: warmup, constant, then WSD halving decay), by optimizer step."""
from __future__ import annotations

from rayder_core.train_config import TrainConfig


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate at optimizer step `step` (0-based): linear warmup, constant, then optional halving decay.

    Warmup: lr * (step + 1) / warmup_steps for the first `warmup_steps` steps. WSD decay: from `decay_start` the LR
    is lr * 2^(-(step - decay_start) / decay_halve_every), i.e. it halves every `decay_halve_every` steps.
    """
    o = cfg.optim
    lr = o.lr
    if o.warmup_steps > 0 and step < o.warmup_steps:
        lr = o.lr * (step + 1) / o.warmup_steps
    if o.decay_start is not None and step >= o.decay_start:
        lr = lr * 2.0 ** (-(step - o.decay_start) / o.decay_halve_every)
    return lr


def lr_phase(step: int, cfg: TrainConfig) -> str:
    """Schedule phase of optimizer step `step` (0-based, as in `lr_at`): 'warmup', 'stable' (constant LR) or 'decay'.

    A checkpoint saved after n steps is labelled with the phase (and LR) of its last step, n - 1: mid-run
    checkpoints of the stable phase are not equivalent to finished, cooled-down runs (Hägele et al. 2024)."""
    o = cfg.optim
    if o.decay_start is not None and step >= o.decay_start:
        return "decay"
    if o.warmup_steps > 0 and step < o.warmup_steps:
        return "warmup"
    return "stable"
