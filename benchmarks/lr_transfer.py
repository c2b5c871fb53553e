"""LR transfer across widths, standard vs muP: short RayDer runs of the width ladder (tiny-w*) at several peak LRs and
seeds on a synthetic corpus; prints the final training loss table, the best LR per width, and the loss at the base
width's best LR (does wider win?).

    python benchmarks/lr_transfer.py --manifest data/synth/manifest.json --widths 16,32,64,128 \
        --lrs 1e-3,2e-3,4e-3,8e-3,1.6e-2 --seeds 0,1 --steps 200

Targets (benchmarks/RESULTS.md): under muP the best LR moves by <= 2x over the 8x width range and the loss at the base
width's best LR falls monotonically with width; under standard the best LR moves by more. The corpus is made by
`rayder-data synth` (the demo's). Runs go to --out-dir and are reused when the benchmark is run again.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rayder_core.train_config import load_train_config  # noqa: E402
from sweeps.lr_search import FINAL_WINDOW, SweepPoint, best_lr, final_loss, mean_losses, run_points  # noqa: E402


def _point(args: argparse.Namespace, param: str, width: int, lr: float, seed: int) -> SweepPoint:
    model = {"preset": f"tiny-w{width}", "patch": 2, "local_layers": False, "parametrization": param}
    if param == "mup":
        model["mup_base_width"] = args.base_width
    mapping = {
        "model": model,
        "data": {"manifest": args.manifest, "fraction": args.fraction, "frames": 4, "resolution": args.resolution,
                 "cache_mb": 256},
        "optim": {"lr": lr, "warmup_steps": args.warmup, "betas": [0.9, args.beta2]},
        "eval": {"every": 0, "benchmarks": []},
        "steps": args.steps, "batch_size": args.batch, "precision": args.precision, "device": "cpu", "seed": seed,
        "checkpoint_every": args.steps, "keep_checkpoints": 1, "log_every": 5, "sweep": "lrtransfer",
        "out_dir": args.out_dir,
    }
    return SweepPoint(str(width), param, lr, seed, mapping)


def points(args: argparse.Namespace) -> list[SweepPoint]:
    """Seed-major (an interrupted benchmark has whole tables for its first seeds); within a seed the base width first
    (its best LR is the one a study tunes), then the wider rungs, slowest first. muP at the base width is the standard
    parametrisation (tests/test_mup.py), so those runs are not repeated: `report` reuses the standard rows."""
    out = []
    base = args.widths[0]
    for seed in args.seeds:
        out += [_point(args, "standard", base, lr, seed) for lr in args.lrs]
        for param in args.parametrizations:
            for width in reversed(args.widths[1:]):
                out += [_point(args, param, width, lr, seed) for lr in args.lrs]
    return out


def with_base_rows(rows: list[dict], args: argparse.Namespace) -> list[dict]:
    """Copy the base width's standard rows as its muP rows (identical runs)."""
    base = str(args.widths[0])
    extra = [{**r, "parametrization": "mup"} for r in rows if r["label"] == base and r["parametrization"] == "standard"
             and "mup" in args.parametrizations]
    return rows + extra


def finished_rows(pts: list[SweepPoint]) -> list[dict]:
    """Rows of the points whose runs have finished (no training): the table of an interrupted benchmark."""
    rows = []
    for point in pts:
        cfg = load_train_config(point.config)
        state = cfg.run_dir / "state.json"
        if state.exists() and json.loads(state.read_text()).get("status") == "finished":
            rows.append({"label": point.label, "parametrization": point.parametrization, "lr": point.lr,
                         "seed": point.seed, "loss": final_loss(cfg.run_dir, cfg.steps), "seconds": 0.0})
    return rows


def report(rows: list[dict], args: argparse.Namespace) -> str:
    lines = [f"final training loss (mean over the last {FINAL_WINDOW:.0%} of {args.steps} steps; mean of seeds "
             f"{args.seeds}); batch {args.batch}, warmup {args.warmup}, beta2 {args.beta2}, data fraction "
             f"{args.fraction:g}, precision {args.precision}", ""]
    header = "| parametrization | width | " + " | ".join(f"lr {lr:g}" for lr in args.lrs) + " | best lr |"
    lines += [header, "|" + "---|" * (len(args.lrs) + 3)]
    summary = {}
    for param in args.parametrizations:
        for width in args.widths:
            means = mean_losses(rows, str(width), param)
            if set(means) != set(args.lrs):
                lines.append(f"| {param} | {width} | " + " | ".join(f"{means[v]:.5f}" if v in means else "not run"
                                                                  for v in args.lrs) + " | - |")
                continue
            lr, _ = best_lr(rows, str(width), param)
            summary[(param, width)] = lr
            cells = " | ".join(f"**{means[v]:.5f}**" if v == lr else f"{means[v]:.5f}" for v in args.lrs)
            lines.append(f"| {param} | {width} | {cells} | {lr:g} |")
    lines.append("")
    base = args.widths[0]
    for param in args.parametrizations:
        widths = [w for w in args.widths if (param, w) in summary]
        if base not in widths or len(widths) < 2:
            continue
        best = [summary[(param, w)] for w in widths]
        shift = max(best) / min(best)
        lr0 = summary[(param, base)]
        at_base = [mean_losses(rows, str(w), param)[lr0] for w in widths]
        falls = all(b < a for a, b in zip(at_base, at_base[1:]))
        lines.append(f"{param}: best LR moves {shift:.2g}x over widths {', '.join(map(str, widths))}; loss at "
                     f"width {base}'s best LR {lr0:g}: " + ", ".join(f"{v:.5f}" for v in at_base)
                     + f" ({'falls monotonically' if falls else 'does NOT fall monotonically'} with width)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--manifest", default="data/synth/manifest.json")
    p.add_argument("--fraction", type=float, default=1.0)
    p.add_argument("--widths", default="16,32,64,128")
    p.add_argument("--lrs", default="1e-3,2e-3,4e-3,8e-3,1.6e-2")
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--parametrizations", default="standard,mup")
    p.add_argument("--base-width", type=int, default=16)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--beta2", type=float, default=0.95)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--resolution", type=int, default=32, help="training frame side in pixels (the corpus is resized)")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"))
    p.add_argument("--parallel", type=int, default=2)
    p.add_argument("--out-dir", default="runs/lr_transfer")
    p.add_argument("--json", default=None, help="also write the rows as JSON here")
    p.add_argument("--from-runs", action="store_true", help="no training: the table of the finished runs in --out-dir")
    args = p.parse_args(argv)
    args.widths = [int(v) for v in args.widths.split(",")]
    args.lrs = [float(v) for v in args.lrs.split(",")]
    args.seeds = [int(v) for v in args.seeds.split(",")]
    args.parametrizations = args.parametrizations.split(",")
    if not Path(args.manifest).is_file():
        print(f"lr_transfer: {args.manifest} not found (make it with `rayder-data synth`)", file=sys.stderr)
        return 2
    pts = points(args)
    rows = with_base_rows(finished_rows(pts) if args.from_runs else run_points(pts, args.parallel), args)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    print(report(rows, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
