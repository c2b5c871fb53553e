"""Process groups, shared by training (`rayder_core.training`) and evaluation (`rayder_core.evaluation`): setup from
the torchrun/SLURM environment, and the helpers evaluation shards its work with (rank/world, contiguous blocks,
gather/broadcast of Python objects, one error raised alike on every rank). Without a process group every helper is
the one-process identity."""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

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
        timeout = None if timeout_min is None else timedelta(minutes=float(timeout_min))
        dist.init_process_group(backend="nccl" if use_cuda else "gloo", rank=rank, world_size=world, timeout=timeout)
    return rank, world, device


def leave_distributed() -> None:
    """Leave the default process group together: a barrier, then destroy it. A gloo rank that exits while another
    still talks to it can abort at teardown (SIGABRT, "terminate called without an active exception"). Call it on
    the normal path only, once every rank has finished its collectives; a no-op without a process group."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def dist_rank_world() -> tuple[int, int]:
    """(rank, world size) of the initialised default process group, or (0, 1) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def shard_range(total: int, rank: int, world: int) -> tuple[int, int]:
    """Contiguous block [start, stop) of `total` items owned by `rank` of `world` (sizes differ by at most 1)."""
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} is not in 0..{world - 1}")
    return total * rank // world, total * (rank + 1) // world


def all_gather(obj: Any, world: int) -> list[Any]:
    """Every rank's `obj` (picklable), in rank order, on every rank; [obj] without a process group."""
    if world == 1:
        return [obj]
    out: list[Any] = [None] * world
    dist.all_gather_object(out, obj)
    return out


def broadcast(obj: Any, world: int) -> Any:
    """Rank 0's `obj` on every rank."""
    if world == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def raise_first_error(parts: list[dict], where: str) -> None:
    """Re-raise (on every rank alike) the first error a rank reported, so all ranks take the same path."""
    for rank, part in enumerate(parts):
        if "error" in part:
            kind = FileNotFoundError if part["error_type"] == "FileNotFoundError" else ValueError
            raise kind(f"{part['error']} (rank {rank}, {where})")
