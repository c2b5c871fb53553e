"""Training precision chosen from a measured matmul peak, not a guess.

`precision: auto` (the default of a training run) measures the best achieved FLOP/s of square matmuls in fp32 and
in bf16 on the run's device with the run's thread count, and trains with bf16 autocast only where bf16 is clearly
faster (>= `BF16_MIN_SPEEDUP` x fp32): CPUs with AMX or AVX512-BF16 and every recent GPU; CPUs without native bf16
(where bf16 matmuls are emulated and slower than fp32) keep fp32. The choice is made once per run and stored in its
checkpoints, so a resumed run keeps the path it started with.
"""
from __future__ import annotations

import functools
import time

import torch

BF16_MIN_SPEEDUP = 1.25
PEAK_SIZES = (512, 1024, 2048)


def sync_device(device: torch.device) -> None:
    """Wait for queued work on `device` (CUDA); a no-op on CPU. Timings must call it before reading the clock."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(dtype: torch.dtype, device: torch.device | str = "cpu", sizes: tuple[int, ...] = PEAK_SIZES,
                repeats: int = 3) -> float:
    """Best achieved FLOP/s (2 n^3 FLOPs per n x n x n matmul) over `sizes` and `repeats` in `dtype` on `device`."""
    device = torch.device(device)
    if device.type == "cuda":
        sizes = tuple(sizes) + (4096, 8192)
    best = 0.0
    for n in sizes:
        a = torch.randn(n, n, device=device).to(dtype)
        b = torch.randn(n, n, device=device).to(dtype)
        a @ b  # warm-up (kernel selection, packing buffers)
        sync_device(device)
        for _ in range(repeats):
            t = time.perf_counter()
            a @ b
            sync_device(device)
            best = max(best, 2 * n**3 / (time.perf_counter() - t))
    return best


@functools.lru_cache(maxsize=8)
def _measured_peaks(device_type: str, threads: int) -> dict[str, float]:
    device = torch.device(device_type)
    sizes = (256, 512, 1024) if device.type == "cpu" else PEAK_SIZES
    return {"fp32": matmul_peak(torch.float32, device, sizes), "bf16": matmul_peak(torch.bfloat16, device, sizes)}


def measured_peaks(device: torch.device | str) -> dict[str, float]:
    """{"fp32": FLOP/s, "bf16": FLOP/s} measured once per process, device type and thread count (~0.3 s on CPU)."""
    return dict(_measured_peaks(torch.device(device).type, torch.get_num_threads()))


def resolve_precision(requested: str, device: torch.device | str) -> tuple[str, dict[str, float]]:
    """'auto' -> 'bf16' when the measured bf16 matmul peak is >= BF16_MIN_SPEEDUP x the fp32 peak, else 'fp32';
    'bf16' and 'fp32' are returned as given. Returns (precision, measured peaks in FLOP/s; empty unless measured)."""
    if requested in ("bf16", "fp32"):
        return requested, {}
    if requested != "auto":
        raise ValueError(f"precision must be 'auto', 'bf16' or 'fp32', got {requested!r}")
    peaks = measured_peaks(device)
    return ("bf16" if peaks["bf16"] >= BF16_MIN_SPEEDUP * peaks["fp32"] else "fp32"), peaks
