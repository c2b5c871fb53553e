"""Training-step benchmark of the tiny RayDer presets: eager and compiled, fp32 and bf16 autocast.

For each preset, precision and mode: samples/s of a full training step (forward, backward, AdamW), the achieved
FLOP/s (analytic FLOPs of the work executed: dense attention pairs, 3 x forward, see models/rayder/flops.py), and that
figure over the best matmul peak of the machine measured in the same run (max over fp32 and bf16: on AMX CPUs the
bf16 peak is ~7x fp32's). On a shared machine both are noisy, so the step time is the best of the timed steps and
the peak is the best square matmul measured before every row, i.e. both are least-contended figures; only ratios
within one run are meaningful. CPU defaults are the demo's runs (sweeps/demo.yaml): 32^2, 4 views, batch 4,
patch 2, no neighbourhood-attention layers, one thread per run (`--threads`).

    .venv/bin/python benchmarks/train_step.py                          # eager fp32 + bf16, the demo's settings
    .venv/bin/python benchmarks/train_step.py --compile --presets tiny-l    # adds torch.compile'd layers (slow)
    .venv/bin/python benchmarks/train_step.py --compile-loss --presets tiny-w16 --precisions fp32 --resolution 16 \
        --batch 32 --steps 10 --warmup 3    # adds the whole loss compiled (`compile: loss`), the demo's settings

On a GPU one command measures the paper's presets XS..L at 256^2 in bf16, batch 1 (the defaults that `--device cuda`
implies unless given), with TF32 on for fp32 work, and writes the MFU table as markdown for benchmarks/RESULTS.md:

    .venv/bin/python benchmarks/train_step.py --device cuda --markdown benchmarks/mfu-gpu.md [--peak-tflops 989]

MFU there is achieved FLOP/s (analytic FLOPs of the allowed attention pairs: NATTEN/flex skip masked ones) over the
best measured square-matmul FLOP/s of the same precision, or over `--peak-tflops` (the datasheet's dense peak) when
given.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time

import torch
from tqdm import tqdm

from rayder_core.models.rayder.flops import count_flops
from rayder_core.models.rayder.model import RayDer
from rayder_core.models.rayder.config import ModelConfig
from rayder_core.precision import matmul_peak, sync_device
from rayder_core.runtime import compile_layers, compile_training_loss
from rayder_core.yamlconf import ConfigError, parse_override

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16}
PEAK_BUDGET_S = 5.0  # seconds per dtype and row for the matmul peak (an emulated dtype stops at a small size)


def time_steps(cfg: ModelConfig, precision: str, resolution: int, views: int, batch: int, steps: int, warmup: int,
               device: torch.device = torch.device("cpu"), mode: str = "eager"):
    """Best (least contended) seconds per training step; mode `compiled`: regional torch.compile (`compile: true`),
    `loss-compiled`: the whole training loss compiled (`compile: loss`; its compilation is in the warmup steps)."""
    torch.manual_seed(0)
    model = RayDer(cfg).to(device).train()
    loss_fn = compile_training_loss(model) if mode == "loss-compiled" else model.training_loss
    if mode == "compiled":
        compile_layers(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    frames = torch.rand(batch, views, 3, resolution, resolution, device=device) * 2 - 1
    gen = torch.Generator().manual_seed(0)
    times = []
    for i in range(warmup + steps):
        sync_device(device)
        t = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            out = loss_fn(frames, generator=gen)
        out["loss"].backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync_device(device)
        if i >= warmup:
            times.append(time.perf_counter() - t)
    return min(times)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", default=None, help="default: tiny-xs..tiny-l on CPU, XS,S,B,L on CUDA")
    parser.add_argument("--precisions", default=None,
                        help="default: fp32,bf16 on CPU (bf16 left out where its measured matmul peak is below "
                             "fp32's: emulated, no AMX/AVX512-BF16), bf16 on CUDA")
    parser.add_argument("--resolution", type=int, default=None, help="default: 32 on CPU, 256 on CUDA")
    parser.add_argument("--views", type=int, default=None, help="default: 4 on CPU (the demo), 8 on CUDA")
    parser.add_argument("--model", action="append", default=None, metavar="KEY=VALUE",
                        help="model config overrides (default on CPU: the demo's patch=2 local_layers=false)")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile'd layers (minutes each)")
    parser.add_argument("--compile-loss", action="store_true",
                        help="also time the whole training loss compiled, as `compile: loss` (minutes each cold)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default on CPU: 1, as a "
                        "demo run; on CUDA: torch's default)")
    parser.add_argument("--batch", type=int, default=None, help="default: 4 on CPU, 1 on CUDA")
    parser.add_argument("--markdown", default=None, metavar="PATH", help="also write the table as markdown here")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="MFU denominator in TFLOP/s (datasheet dense peak); default: measured matmul peak")
    parser.add_argument("--no-tf32", dest="tf32", action="store_false", help="CUDA: keep fp32 matmuls in fp32")
    parser.add_argument("--steps", type=int, default=5, help="timed steps (best reported)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (GPU: the MFU of XS..L at 256^2, bf16)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        why = "torch built without CUDA" if torch.version.cuda is None else "no CUDA device visible"
        print(f"train_step: --device cuda but CUDA is not available ({why}; torch {torch.__version__}); "
              "nothing measured", file=sys.stderr)
        raise SystemExit(2)
    default_precisions = args.precisions is None
    gpu_defaults = _apply_device_defaults(args, device)
    if args.threads:
        torch.set_num_threads(args.threads)
    presets = [p for p in args.presets.split(",") if p]
    precisions = [p for p in args.precisions.split(",") if p]
    bad = [p for p in precisions if p not in PRECISIONS]
    if bad:
        parser.error(f"unknown precision(s) {bad}; use fp32 and/or bf16")

    overrides = {}
    for item in args.model:
        try:
            key, value = parse_override(item)
        except ConfigError as exc:
            parser.error(str(exc).replace("--set", "--model"))
        overrides[".".join(key)] = value
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.resolution}^2, "
          f"{args.views} views, batch {args.batch}, model overrides {overrides or 'none'}")
    peaks = {p: 0.0 for p in PRECISIONS}
    if default_precisions and device.type == "cpu":  # emulated bf16 (~1 GFLOP/s) would take minutes per row
        for p, dtype in PRECISIONS.items():
            peaks[p] = matmul_peak(dtype, device=device, time_budget_s=PEAK_BUDGET_S)
        if "bf16" in precisions and peaks["bf16"] < peaks["fp32"]:
            precisions.remove("bf16")
            print(f"bf16 left out: its matmul peak here is {peaks['bf16'] / 1e9:.1f} vs fp32 {peaks['fp32'] / 1e9:.1f} "
                  "GFLOP/s (no native bf16; precision auto trains in fp32); --precisions fp32,bf16 times it anyway")
    backend = overrides.pop("attention_backend", "sdpa" if device.type == "cpu" else "auto")
    if backend == "auto":
        backend = "natten" if importlib.util.find_spec("natten") is not None else "sdpa"
    print(f"attention backend: {backend}" + (" (natten is not installed here: masked SDPA, every query-key pair "
                                             "computed and counted)" if device.type == "cuda" and backend == "sdpa"
                                             else ""))
    timed = []
    modes = ["eager"] + (["compiled"] if args.compile else []) + (["loss-compiled"] if args.compile_loss else [])
    jobs = [(n, p, m) for n in presets for m in modes for p in precisions]
    for name, precision, mode in tqdm(jobs, desc="benchmark", leave=False):
        for p, dtype in PRECISIONS.items():  # both peaks before every row: the best of the run is the denominator
            peaks[p] = max(peaks[p], matmul_peak(dtype, device=device, time_budget_s=PEAK_BUDGET_S))
        cfg = ModelConfig.from_preset(name, attention_backend=backend, **overrides)
        report = count_flops(cfg, args.resolution, args.views)
        # masked SDPA computes every query-key pair; NATTEN only the allowed ones
        step_flops = args.batch * (report.train_per_sample_dense if backend == "sdpa" else report.train_per_sample)
        sec = time_steps(cfg, precision, args.resolution, args.views, args.batch, args.steps, args.warmup, device,
                         mode=mode)
        timed.append((name, precision, mode, sec, step_flops))
    best = max(peaks.values())
    for p, v in peaks.items():
        print(f"matmul peak {p}: {v / 1e9:.1f} GFLOP/s (best square matmul in this run)")
    denominators = {p: (args.peak_tflops * 1e12 if args.peak_tflops else v) for p, v in peaks.items()}
    rows = [(n if len(modes) == 1 else f"{n} ({m})", p, sec, args.batch / sec, fl, fl / sec, fl / sec / denominators[p])
            for n, p, m, sec, fl in timed]
    if args.markdown:
        write_markdown(args.markdown, rows, args=args, device=device, peaks=peaks, settings=gpu_defaults)
        print(f"markdown table written to {args.markdown}")

    print(f"{'preset':>8} {'mode':>13} {'prec':>5} {'s/step':>7} {'samples/s':>9} {'GFLOP/step':>10} {'GFLOP/s':>8} "
          f"{'of prec peak':>12} {'of best peak':>12}")
    for name, precision, mode, sec, fl in timed:
        fps = fl / sec
        print(f"{name:>8} {mode:>13} {precision:>5} {sec:7.3f} {args.batch / sec:9.2f} {fl / 1e9:10.2f} "
              f"{fps / 1e9:8.1f} {fps / peaks[precision]:12.1%} {fps / best:12.1%}")
    print("GFLOP/step: analytic training FLOPs of the executed work (dense attention pairs, 3 x forward); 'of prec "
          "peak' = achieved / best square-matmul FLOP/s of the same precision, 'of best peak' = achieved / the best "
          f"matmul peak of this machine in this run ({best / 1e9:.1f} GFLOP/s).")


def _apply_device_defaults(args: argparse.Namespace, device: torch.device) -> dict:
    """Fill the options left unset: the CPU table (tiny presets, 32^2, fp32+bf16, batch 4) or, on CUDA, the paper's
    presets XS..L at 256^2 in bf16 with batch 1; on CUDA also set TF32 (rayder_core.runtime). Returns the settings."""
    cuda = device.type == "cuda"
    if args.presets is None:
        args.presets = "XS,S,B,L" if cuda else "tiny-xs,tiny-2x128,tiny-2x256,tiny-s,tiny-b,tiny-l"
    if args.precisions is None:
        args.precisions = "bf16" if cuda else "fp32,bf16"
    if args.resolution is None:
        args.resolution = 256 if cuda else 32
    if args.batch is None:
        args.batch = 1 if cuda else 4
    if args.views is None:
        args.views = 8 if cuda else 4
    if args.model is None:
        args.model = [] if cuda else ["patch=2", "local_layers=false"]
    if args.threads is None and not cuda:
        args.threads = 1
    from rayder_core.runtime import apply_gpu_settings, natten_status

    return {**apply_gpu_settings(args.tf32, device), **(natten_status() if cuda else {})}


def write_markdown(path: str, rows: list[tuple], *, args: argparse.Namespace, device: torch.device,
                   peaks: dict[str, float], settings: dict) -> None:
    """Write the benchmark table as markdown (to paste into benchmarks/RESULTS.md). `rows` are (preset, precision,
    s/step, samples/s, FLOP/step, FLOP/s, fraction of the MFU denominator)."""
    from pathlib import Path

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    backend = "natten + flex attention" if device.type == "cuda" else "sdpa (dense masked scores)"
    scale, unit = (1e12, "TFLOP") if device.type == "cuda" else (1e9, "GFLOP")
    denom = (f"{args.peak_tflops:g} TFLOP/s (given)" if args.peak_tflops else
             ", ".join(f"{p} {v / scale:.1f} {unit}/s" for p, v in peaks.items()) + " (best measured square matmul)")
    lines = [
        f"Training step (forward, backward, AdamW) on {name}, torch {torch.__version__}, attention {backend}, "
        f"{args.resolution}^2, {args.views} views, batch {args.batch}, best of {args.steps} timed steps after "
        f"{args.warmup} warm-up; settings {settings}. MFU denominator: {denom}.",
        "",
        f"| preset | precision | s/step | samples/s | {unit}/step | achieved {unit}/s | MFU |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for preset, precision, sec, sps, fl, fps, frac in rows:
        lines.append(f"| {preset} | {precision} | {sec:.4f} | {sps:.2f} | {fl / scale:.3f} | {fps / scale:.2f} | "
                     f"{frac:.1%} |")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
