"""Thread layout on a small CPU: one training process with N threads vs N processes with one thread each.

Each process times `--steps` training steps (after `--warmup`) of one preset at the demo's settings (32^2, 4 views,
batch 4, patch 2, no NA layers, precision as given) and reports samples/s; the layouts run one after the other, so
compare them within one run of this script. The demo (`sweeps/demo.yaml`, `local.parallel`) uses the faster one.

    .venv/bin/python benchmarks/thread_layout.py --preset tiny-2x256 --cores 2
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

WORKER = r"""
import json, sys, time, torch
torch.set_num_threads(int(sys.argv[1]))
from rayder_core.models.rayder.model import RayDer
from rayder_core.models.rayder.config import ModelConfig
preset, steps, warmup, bf16 = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5] == "bf16"
torch.manual_seed(0)
model = RayDer(ModelConfig.from_preset(preset, attention_backend="sdpa", patch=2, local_layers=False)).train()
opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
x = torch.rand(4, 4, 3, 32, 32) * 2 - 1
g = torch.Generator().manual_seed(0)
for i in range(warmup + steps):
    if i == warmup:
        t0 = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        out = model.training_loss(x, generator=g)
    out["loss"].backward(); opt.step(); opt.zero_grad(set_to_none=True)
print(json.dumps({"samples_per_s": 4 * steps / (time.perf_counter() - t0)}))
"""


def run_layout(processes: int, threads: int, args: argparse.Namespace) -> float:
    """Total samples/s of `processes` concurrent training processes with `threads` threads each."""
    cmd = [sys.executable, "-c", WORKER, str(threads), args.preset, str(args.steps), str(args.warmup), args.precision]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) for _ in range(processes)]
    total = 0.0
    for p in procs:
        out, _ = p.communicate()
        if p.returncode != 0:
            raise SystemExit(f"thread_layout: a worker failed (exit {p.returncode})")
        total += json.loads(out.strip().splitlines()[-1])["samples_per_s"]
    return total


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="tiny-2x256")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--precision", default="bf16", choices=("fp32", "bf16"))
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args(argv)
    t = time.perf_counter()
    one = run_layout(1, args.cores, args)
    many = run_layout(args.cores, 1, args)
    print(f"{args.preset} {args.precision}, 32^2, 4 views, batch 4 ({time.perf_counter() - t:.0f} s):")
    print(f"  1 process x {args.cores} threads: {one:7.1f} samples/s")
    print(f"  {args.cores} processes x 1 thread:  {many:7.1f} samples/s in total ({many / one:.2f}x)")


if __name__ == "__main__":
    main()
