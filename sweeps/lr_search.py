"""Learning-rate sweeps of short runs: Porian et al.'s recipe (tune the LR once, at the base width) for a grid, and
the runner of `benchmarks/lr_transfer.py` (which LR is best at each width, standard vs muP).

    python -m sweeps.lr_search sweeps/demo.yaml --lrs 1e-3,2e-3,4e-3,8e-3,1.6e-2 --steps 300 --seeds 0,1

runs the grid's first (smallest) preset on its largest data fraction at each LR with the grid's `base` settings
(model parametrisation included), no evaluations, and prints the final training loss per LR and the best one, with
the `--set base.optim.lr=...` line to use for the grid. `--write FILE` stores the choice as YAML. Finished runs are
reused (run ids are config hashes), so an interrupted search resumes.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import statistics
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import torch
import yaml
from tqdm import tqdm

from rayder_core.fileio import read_jsonl
from rayder_core.train_config import load_train_config
from rayder_core.training.trainer import run_training
from sweeps.spec import load_spec

FINAL_WINDOW = 0.2  # the final loss is the mean logged training loss over the last 20% of steps


@dataclass(frozen=True)
class SweepPoint:
    """One short run: its label (width or preset), parametrisation, LR, seed, and the TrainConfig mapping."""

    label: str
    parametrization: str
    lr: float
    seed: int
    config: dict[str, Any]


def final_loss(run_dir: Path, steps: int) -> float:
    """Mean training loss logged in the last FINAL_WINDOW of `steps` (inf when the run diverged or logged nothing)."""
    rows = [r for r in read_jsonl(run_dir / "metrics.jsonl") if r["step"] > steps * (1 - FINAL_WINDOW)]
    losses = [float(r["loss"]) for r in rows]
    if not losses or not all(math.isfinite(v) for v in losses):
        return math.inf
    return statistics.fmean(losses)


def _train_one(point: SweepPoint) -> tuple[SweepPoint, float, float]:
    torch.set_num_threads(int(os.environ.get("RAYDER_LR_SEARCH_THREADS", "1")))
    cfg = load_train_config(point.config)
    try:
        out = run_training(cfg, db=None, progress=False)
        loss = final_loss(out.run_dir, cfg.steps)
    except Exception as exc:  # a diverged or failed run is a point of the sweep (loss inf), not the sweep's end
        print(f"lr_search: {cfg.run_id} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        loss = math.inf
    state = cfg.run_dir / "state.json"
    elapsed = float(json.loads(state.read_text()).get("elapsed_s", 0.0)) if state.exists() else 0.0
    return point, loss, elapsed


def run_points(points: list[SweepPoint], parallel: int = 2) -> list[dict[str, Any]]:
    """Train every point (`parallel` processes, one thread each) and return rows: label, parametrization, lr, seed,
    loss (final training loss), seconds. Shows a progress bar over runs."""
    rows = []
    with ProcessPoolExecutor(max_workers=parallel, mp_context=get_context("spawn")) as pool, \
            tqdm(total=len(points), desc="lr sweep", unit="run") as bar:
        for point, loss, seconds in pool.map(_train_one, points):
            rows.append({"label": point.label, "parametrization": point.parametrization, "lr": point.lr,
                         "seed": point.seed, "loss": loss, "seconds": seconds})
            bar.update(1)
    return rows


def best_lr(rows: list[dict[str, Any]], label: str, parametrization: str) -> tuple[float, float]:
    """(best LR, its seed-mean final loss) among the rows of one label and parametrisation."""
    means = mean_losses(rows, label, parametrization)
    lr = min(means, key=means.get)
    return lr, means[lr]


def mean_losses(rows: list[dict[str, Any]], label: str, parametrization: str) -> dict[float, float]:
    """LR -> seed-mean final loss for one label and parametrisation."""
    by_lr: dict[float, list[float]] = {}
    for r in rows:
        if r["label"] == label and r["parametrization"] == parametrization:
            by_lr.setdefault(r["lr"], []).append(r["loss"])
    return {lr: statistics.fmean(v) for lr, v in sorted(by_lr.items())}


def search_points(grid: str | Path, lrs: list[float], seeds: list[int], steps: int, out_dir: str,
                  overrides: list[str] | None = None) -> list[SweepPoint]:
    """The LR search of a grid: its first preset on its largest fraction, the grid's base settings, no evaluations."""
    spec = load_spec(grid, overrides)
    template = next(c for c in spec.runs() if c.data.fraction == max(spec.grid.fractions))
    points = []
    for lr in lrs:
        for seed in seeds:
            mapping = copy.deepcopy(template.to_dict())
            mapping.update(steps=steps, seed=seed, sweep=f"{spec.name}-lrsearch", out_dir=out_dir,
                           checkpoint_every=steps, keep_checkpoints=1, store_mode="direct")
            mapping["optim"].update(lr=lr, decay_start=None, decay_halve_every=None)
            mapping["eval"] = {"every": 0, "benchmarks": []}
            points.append(SweepPoint(template.model["preset"], template.model.get("parametrization", "standard"),
                                     lr, seed, mapping))
    return points


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sweeps.lr_search", description=__doc__.split("\n\n")[0])
    parser.add_argument("grid", help="sweep grid YAML (its base settings and first preset are used)")
    parser.add_argument("--lrs", required=True, help="comma-separated peak LRs, e.g. 1e-3,2e-3,4e-3")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds (default 0)")
    parser.add_argument("--steps", type=int, default=300, help="optimizer steps per run (default 300)")
    parser.add_argument("--parallel", type=int, default=2, help="runs at a time, one thread each (default 2)")
    parser.add_argument("--out-dir", default="runs/lr_search", help="run directories (default runs/lr_search)")
    parser.add_argument("--set", action="append", default=[], help="grid override, as rayder-sweep --set")
    parser.add_argument("--write", default=None, help="write the chosen LR as YAML (base.optim.lr) to this file")
    args = parser.parse_args(argv)
    try:
        lrs = [float(v) for v in args.lrs.split(",")]
        seeds = [int(v) for v in args.seeds.split(",")]
        points = search_points(args.grid, lrs, seeds, args.steps, args.out_dir, args.set)
    except ValueError as exc:
        print(f"lr_search: error: {exc}", file=sys.stderr)
        return 2
    rows = run_points(points, args.parallel)
    label, param = points[0].label, points[0].parametrization
    print(f"\n{label} ({param}), final training loss (mean of the last {FINAL_WINDOW:.0%} of {args.steps} steps, "
          f"seeds {seeds}):")
    for lr, loss in mean_losses(rows, label, param).items():
        print(f"  lr {lr:<9.3g} loss {loss:.5f}")
    lr, loss = best_lr(rows, label, param)
    print(f"best: lr {lr:.3g} (loss {loss:.5f}); use it with: --set base.optim.lr={lr:g}")
    if lr in (min(lrs), max(lrs)):
        print("lr_search: the best LR is at the edge of the searched range; extend --lrs past it", file=sys.stderr)
    if args.write:
        Path(args.write).write_text(yaml.safe_dump({"base": {"optim": {"lr": lr}}, "searched": {
            "preset": label, "parametrization": param, "steps": args.steps, "seeds": seeds,
            "losses": {f"{k:g}": v for k, v in mean_losses(rows, label, param).items()}}}, sort_keys=False))
        print(f"wrote {args.write}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
