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
PEAK_BUDGET_S = 1.0  # seconds per dtype for `precision: auto`'s measurement (emulated bf16 stops at its first size)


def sync_device(device: torch.device) -> None:
    """Wait for queued work on `device` (CUDA); a no-op on CPU. Timings must call it before reading the clock."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(dtype: torch.dtype, device: torch.device | str = "cpu", sizes: tuple[int, ...] = PEAK_SIZES,
                repeats: int = 3, time_budget_s: float | None = None) -> float:
    """Best achieved FLOP/s (2 n^3 FLOPs per n x n x n matmul) over `sizes` and `repeats` in `dtype` on `device`.

    With `time_budget_s`, sizes (ascending) whose predicted time (the last size's matmul time x (n / n_last)^3 x
    (repeats + 1)) would overrun the budget are skipped: an emulated dtype (bf16 on a CPU without AVX512-BF16 or
    AMX runs at ~1 GFLOP/s) is then measured on its smallest size in ~0.1 s instead of ~10 s."""
    return matmul_peak_detail(dtype, device, sizes, repeats, time_budget_s)[0]


def matmul_peak_detail(dtype: torch.dtype, device: torch.device | str = "cpu", sizes: tuple[int, ...] = PEAK_SIZES,
                       repeats: int = 3, time_budget_s: float | None = None) -> tuple[float, list[int]]:
    """:func:`matmul_peak` and the sizes it measured."""
    device = torch.device(device)
    if device.type == "cuda":
        sizes = tuple(sizes) + (4096, 8192)
    best, measured = 0.0, []
    start = time.perf_counter()
    last: tuple[int, float] | None = None  # (n, seconds per matmul)
    for n in sorted(sizes):
        if time_budget_s is not None and last is not None:
            predicted = last[1] * (n / last[0]) ** 3 * (repeats + 1)
            if time.perf_counter() - start + predicted > time_budget_s:
                break
        a = torch.randn(n, n, device=device).to(dtype)
        b = torch.randn(n, n, device=device).to(dtype)
        a @ b  # warm-up (kernel selection, packing buffers)
        sync_device(device)
        fastest = float("inf")
        for _ in range(repeats):
            t = time.perf_counter()
            a @ b
            sync_device(device)
            fastest = min(fastest, time.perf_counter() - t)
        best = max(best, 2 * n**3 / fastest)
        measured.append(n)
        last = (n, fastest)
    return best, measured


@functools.lru_cache(maxsize=8)
def _measured_peaks(device_type: str, threads: int) -> dict[str, float]:
    device = torch.device(device_type)
    sizes = (256, 512, 1024) if device.type == "cpu" else PEAK_SIZES
    return {"fp32": matmul_peak(torch.float32, device, sizes, time_budget_s=PEAK_BUDGET_S),
            "bf16": matmul_peak(torch.bfloat16, device, sizes, time_budget_s=PEAK_BUDGET_S)}


def measured_peaks(device: torch.device | str) -> dict[str, float]:
    """{"fp32": FLOP/s, "bf16": FLOP/s} measured once per process, device type and thread count (<= ~2 s)."""
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
