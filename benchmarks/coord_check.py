"""Coordinate check of RayDer's width ladder (as in the `mup` README): the RMS of every block's output over the first
training steps for widths 16..256, standard vs muP, as a table and a figure (one panel per parametrisation and step,
width on the x axis, one line per block: flat lines = width-independent updates).

    python benchmarks/coord_check.py --widths 16,32,64,128,256 --steps 10 --lr 1e-2 --out docs/coord-check.png

The table gives, per block, max/min over widths of the RMS averaged over steps 1..steps
(`rayder_core.coord_check.width_spread`). CPU, fp32, one fixed batch of smooth random frames at 16^2.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from rayder_core.coord_check import coord_check, width_spread  # noqa: E402

MODEL = {"preset": "tiny-w16", "patch": 2, "local_layers": False}


def plot(results: dict[str, list[dict]], widths: list[int], steps: list[int], out: Path) -> None:
    fig, axes = plt.subplots(len(results), len(steps), figsize=(3.2 * len(steps), 3.0 * len(results)), sharex=True,
                             squeeze=False)
    for row, (param, rows) in enumerate(results.items()):
        blocks = list(dict.fromkeys(r["block"] for r in rows))
        for col, step in enumerate(steps):
            ax = axes[row][col]
            for block in blocks:
                ys = [next(r["rms"] for r in rows if r["block"] == block and r["width"] == w and r["step"] == step)
                      for w in widths]
                ax.plot(widths, ys, marker=".", lw=1, label=block)
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_title(f"{param}, step {step}", fontsize=9)
            if col == 0:
                ax.set_ylabel("block output RMS")
            if row == len(results) - 1:
                ax.set_xlabel("width")
    axes[0][-1].legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--widths", default="16,32,64,128,256")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--base-width", type=int, default=16)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="docs/coord-check.png")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    widths = [int(w) for w in args.widths.split(",")]
    results, seconds = {}, {}
    for param in ("standard", "mup"):
        t0 = time.perf_counter()
        results[param] = coord_check(MODEL, widths, param, args.base_width, args.lr, steps=args.steps)
        seconds[param] = time.perf_counter() - t0
    spreads = {param: width_spread(rows, args.steps) for param, rows in results.items()}
    print(f"coordinate check: widths {widths}, {args.steps} AdamW steps at lr {args.lr:g}, base width "
          f"{args.base_width}; max/min over widths of each block's output RMS (mean of steps 1..{args.steps})\n")
    print("| block | standard | muP |\n|---|---|---|")
    for block in spreads["standard"]:
        print(f"| {block} | {spreads['standard'][block]:.2f} | {spreads['mup'][block]:.2f} |")
    print(f"| **max** | {max(spreads['standard'].values()):.2f} | {max(spreads['mup'].values()):.2f} |")
    print(f"\n({seconds['standard']:.1f} s standard, {seconds['mup']:.1f} s muP)")
    shown = sorted({1, max(1, args.steps // 3), max(1, 2 * args.steps // 3), args.steps})
    plot(results, widths, shown, Path(args.out))
    print(f"figure: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
