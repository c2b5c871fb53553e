"""CPU training-step benchmark of the tiny RayDer presets (fp32 and bf16 autocast).

For each preset and precision: samples/s of a full training step (forward, backward, AdamW), the achieved FLOP/s
(analytic FLOPs of the work executed: dense attention pairs, 3 x forward, see rayder_core/flops.py), and that
figure over the matmul peak of the same precision measured in the same run. On a shared machine both are noisy, so
the step time is the best of the timed steps and the peak is the best square matmul measured before every preset,
i.e. both are least-contended figures; only the ratio within one run is meaningful.

    .venv/bin/python benchmarks/train_step.py --resolution 32 --views 8 --batch 4 --steps 5
"""

from __future__ import annotations

import argparse
import time

import torch
from tqdm import tqdm

from rayder_core.flops import count_flops
from rayder_core.model import RayDer
from rayder_core.model_config import ModelConfig

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16}


def matmul_peak(dtype: torch.dtype, sizes=(512, 1024, 2048), repeats: int = 3) -> float:
    """Best achieved FLOP/s of n x n x n matmuls (2 n^3 FLOPs each) in `dtype`."""
    best = 0.0
    for n in sizes:
        a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
        a @ b  # warm-up
        for _ in range(repeats):
            t = time.perf_counter()
            a @ b
            best = max(best, 2 * n**3 / (time.perf_counter() - t))
    return best


def time_steps(cfg: ModelConfig, precision: str, resolution: int, views: int, batch: int, steps: int, warmup: int):
    """Best (least contended) seconds per training step."""
    torch.manual_seed(0)
    model = RayDer(cfg).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    frames = torch.rand(batch, views, 3, resolution, resolution) * 2 - 1
    gen = torch.Generator().manual_seed(0)
    times = []
    for i in range(warmup + steps):
        t = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            out = model.training_loss(frames, generator=gen)
        out["loss"].backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i >= warmup:
            times.append(time.perf_counter() - t)
    return min(times)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", default="tiny-xs,tiny-s,tiny-b,tiny-l")
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--views", type=int, default=8)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=5, help="timed steps (best reported)")
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args(argv)
    presets = [p for p in args.presets.split(",") if p]
    precisions = [p for p in args.precisions.split(",") if p]
    bad = [p for p in precisions if p not in PRECISIONS]
    if bad:
        parser.error(f"unknown precision(s) {bad}; use fp32 and/or bf16")

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.resolution}^2, "
          f"{args.views} views, batch {args.batch}")
    peaks = {p: 0.0 for p in precisions}
    timed = []
    jobs = [(n, p) for n in presets for p in precisions]
    for name, precision in tqdm(jobs, desc="benchmark", leave=False):
        peaks[precision] = max(peaks[precision], matmul_peak(PRECISIONS[precision]))
        cfg = ModelConfig.from_preset(name, attention_backend="sdpa")
        step_flops = args.batch * count_flops(cfg, args.resolution, args.views).train_per_sample_dense
        sec = time_steps(cfg, precision, args.resolution, args.views, args.batch, args.steps, args.warmup)
        timed.append((name, precision, sec, step_flops))
    for p, v in peaks.items():
        print(f"matmul peak {p}: {v / 1e9:.1f} GFLOP/s (best 512^3..2048^3 matmul in this run)")
    rows = [(n, p, sec, args.batch / sec, fl, fl / sec, fl / sec / peaks[p]) for n, p, sec, fl in timed]

    print(f"{'preset':>8} {'prec':>5} {'s/step':>7} {'samples/s':>9} {'GFLOP/step':>10} {'GFLOP/s':>8} {'of peak':>7}")
    for name, precision, sec, sps, fl, fps, frac in rows:
        print(f"{name:>8} {precision:>5} {sec:7.3f} {sps:9.2f} {fl / 1e9:10.2f} {fps / 1e9:8.1f} {frac:7.1%}")
    print("GFLOP/step: analytic training FLOPs of the executed work (dense attention pairs, 3 x forward); "
          "'of peak' = achieved / best square-matmul FLOP/s of the same precision in this run.")


if __name__ == "__main__":
    main()
