"""Process-group setup shared by training (`rayder_core.train`) and evaluation (`rayder_core.evaluate`).

Its own module so that neither of the two imports the other."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def init_distributed(device_pref: str, timeout_min: float | None = None) -> tuple[int, int, torch.device]:
    """Initialise torch.distributed from torchrun/SLURM-exported env (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_*).

    `timeout_min` (config key `dist_timeout_min`, minutes) bounds how long a collective may wait for the other ranks
    before the job fails (NCCL's watchdog / gloo); None keeps torch's default."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and device_pref in ("auto", "cuda")
    if device_pref == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device: cuda was requested but CUDA is not available on this machine")
    device = torch.device(f"cuda:{local_rank}" if use_cuda else "cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        from datetime import timedelta

        timeout = None if timeout_min is None else timedelta(minutes=float(timeout_min))
        dist.init_process_group(backend="nccl" if use_cuda else "gloo", rank=rank, world_size=world, timeout=timeout)
    return rank, world, device
