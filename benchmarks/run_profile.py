"""Where a demo run's time goes: cProfile of the first STEPS steps of one run of `sweeps/demo.yaml` through
`run_training` (loader, decoding, training step, evaluation), printed by cumulative time.

    python benchmarks/run_profile.py --preset tiny-w16 --fraction 1.0 --steps 300

Needs the demo's corpus (`make demo` writes data/synth/). The run trains in a temporary directory, stores nothing,
evaluates once at its end and is not a demo run (its LR decays over its own last 20%). Figures: benchmarks/RESULTS.md.
"""
from __future__ import annotations

import argparse
import cProfile
import dataclasses
import pstats
import tempfile

import torch

from rayder_core.training.trainer import run_training
from sweeps import demo


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="tiny-w16")
    parser.add_argument("--fraction", type=float, default=1.0, help="data fraction of the demo grid (default 1.0)")
    parser.add_argument("--steps", type=int, default=300, help="steps to profile (default 300)")
    parser.add_argument("--top", type=int, default=30, help="functions printed (default 30)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # as a demo run
    with tempfile.TemporaryDirectory() as out:
        spec = demo.demo_spec(demo.DEMO_GRID, [f"out_dir={out}", "base.eval.log_points=0", "base.eval.every=100000"])
        runs = [c for c in spec.runs()
                if c.model["preset"] == args.preset and abs(c.data.fraction - args.fraction) < 1e-9]
        if not runs:
            raise SystemExit(f"run_profile: no demo run with preset {args.preset} and fraction {args.fraction:g}")
        cfg = max(runs, key=lambda c: c.steps)  # the trunk: it starts from step 0
        optim = dataclasses.replace(cfg.optim, decay_start=int(0.8 * args.steps),
                                    decay_halve_every=max(1, args.steps // 20))
        cfg = dataclasses.replace(cfg, steps=args.steps, start_from=None, checkpoint_steps=[], optim=optim)
        profile = cProfile.Profile()
        profile.enable()
        run_training(cfg, db=None, progress=True)
        profile.disable()
    pstats.Stats(profile).sort_stats("cumulative").print_stats(args.top)


if __name__ == "__main__":
    main()
