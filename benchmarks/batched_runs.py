"""Several runs in one process: K runs of one width trained by one batched step (torch.func.vmap over stacked
weights) against K separate steps, one thread.

The demo's small widths are overhead-bound on CPU (docs/benchmarks.md, "The CPU floor"): a step of tiny-w32 at batch
32 reaches ~17% of one thread's matmul peak. The runs of one width at the six data fractions have the same shapes, so
one process could step them together: every Linear of K models becomes one batched matmul. This measures what that
gains before anyone builds it into the trainer: the same K models (muP, the demo's settings: 16^2, 4 views, patch 2,
no NA layers, fp32), forward + backward + AdamW, either one model after the other or all K under
`torch.func.vmap(functional_call)` (random view orders drawn per model: `randomness="different"`). The model,
frame size, views and batch are those of the demo grid's runs (`sweeps/demo.yaml`). The step time is
the best of the timed steps; achieved FLOP/s uses the analytic training FLOPs (`rayder_core.models`) over the fp32
matmul peak measured in the same run.

    .venv/bin/python benchmarks/batched_runs.py --presets tiny-w32,tiny-w64 --runs 1,2,6
"""
from __future__ import annotations

import argparse
import copy
import time

import torch
from torch.func import functional_call, stack_module_state, vmap

from rayder_core.models import build_for_training, train_flops_per_step
from rayder_core.precision import matmul_peak
from rayder_core.training.trainer import _TrainingLoss  # the loss as `forward`, as DDP uses it
from sweeps import demo


def _best_time(step, warmup: int, steps: int) -> float:
    for _ in range(warmup):
        step()
    best = float("inf")
    for _ in range(steps):
        t = time.perf_counter()
        step()
        best = min(best, time.perf_counter() - t)
    return best


def time_separate(models: list[torch.nn.Module], x: torch.Tensor, warmup: int, steps: int) -> float:
    """Seconds for one training step of each of the K models, one after the other."""
    opts = [torch.optim.AdamW(m.parameters(), lr=1e-3) for m in models]

    def step() -> None:
        for m, opt, xi in zip(models, opts, x):
            m.training_loss(xi)["loss"].backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

    return _best_time(step, warmup, steps)


def time_batched(models: list[torch.nn.Module], x: torch.Tensor, warmup: int, steps: int) -> float:
    """Seconds for one vmapped training step of the K stacked models (their summed losses; each model's gradient is
    its own, since the models share no weight)."""
    params, buffers = stack_module_state([_TrainingLoss(m) for m in models])
    base = _TrainingLoss(copy.deepcopy(models[0]))
    opt = torch.optim.AdamW(list(params.values()), lr=1e-3)
    loss = vmap(lambda p, b, xi: functional_call(base, (p, b), (xi,))["loss"], randomness="different")

    def step() -> None:
        loss(params, buffers, x).sum().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return _best_time(step, warmup, steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", default="tiny-w32,tiny-w64")
    parser.add_argument("--runs", default="1,2,6", help="K values: runs stepped together")
    parser.add_argument("--batch", type=int, default=None, help="clips per run and step (default: the demo's)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    run = demo.demo_spec().runs()[0]  # the demo's model settings, frame size, views and batch
    model = {k: v for k, v in dict(run.model).items() if k != "preset"}
    resolution, views, batch = run.data.resolution, run.data.frames, args.batch or run.batch_size
    peak = matmul_peak(torch.float32, time_budget_s=5.0)
    print(f"fp32 matmul peak, {args.threads} thread(s): {peak / 1e9:.1f} GFLOP/s\n")
    print("| preset | K runs | separate s/step | batched s/step | speed-up | separate % of peak | batched % of peak |")
    print("|---|---|---|---|---|---|---|")
    for preset in args.presets.split(","):
        flops = train_flops_per_step({"preset": preset, **model}, resolution, views, batch)
        for k in (int(v) for v in args.runs.split(",")):
            models = [build_for_training({"preset": preset, **model}, seed)[0] for seed in range(k)]
            x = torch.rand(k, batch, views, 3, resolution, resolution) * 2 - 1
            sep = time_separate(models, x, args.warmup, args.steps)
            models = [build_for_training({"preset": preset, **model}, seed)[0] for seed in range(k)]
            bat = time_batched(models, x, args.warmup, args.steps)
            work = k * flops
            print(f"| {preset} | {k} | {sep:.3f} | {bat:.3f} | {sep / bat:.2f}x | {100 * work / sep / peak:.0f}% | "
                  f"{100 * work / bat / peak:.0f}% |", flush=True)


if __name__ == "__main__":
    main()
