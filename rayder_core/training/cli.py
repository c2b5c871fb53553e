"""`rayder-train CONFIG.yaml [--set key=value ...] [--cooldown-from STEP --cooldown-steps K]`: train (or resume) one
run, or fork and train a cooldown branch of it."""
from __future__ import annotations

import argparse
import sys

import torch

from rayder_core.distributed import leave_distributed
from rayder_core.train_config import load_train_config
from rayder_core.training.cooldown import fork_cooldown
from rayder_core.training.trainer import TrainingDiverged, run_training
from rayder_core.yamlconf import ConfigError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rayder-train", description="Train one RayDer run (resumes if possible).")
    parser.add_argument("config", help="YAML training config")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set optim.lr=3e-4 --set data.fraction=0.1")
    parser.add_argument("--db", default="results.duckdb", help="results store ('' to write only the run dir)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--cooldown-from", type=int, default=None, metavar="STEP",
                        help="fork a cooldown branch of the config's run from its stable checkpoint at STEP into its "
                             "own run directory (new run id; recorded in the store's `branches` table)")
    parser.add_argument("--cooldown-steps", type=int, default=None, metavar="K",
                        help="length of the cooldown branch: the LR halves 10 times over K steps (to ~0.1%% of the "
                             "stable LR)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        cfg = load_train_config(args.config, args.overrides)
    except ConfigError as exc:
        print(f"rayder-train: config error: {exc}", file=sys.stderr)
        return 2
    if (args.cooldown_from is None) != (args.cooldown_steps is None):
        print("rayder-train: give --cooldown-from STEP and --cooldown-steps K together", file=sys.stderr)
        return 2
    if args.cooldown_from is not None:
        try:
            cfg = fork_cooldown(cfg, args.cooldown_from, args.cooldown_steps)
        except (ValueError, FileNotFoundError, ConfigError) as exc:
            print(f"rayder-train: {exc}", file=sys.stderr)
            return 2
        print(f"cooldown branch {cfg.run_id}: steps {args.cooldown_from}..{cfg.steps} in {cfg.run_dir}")
    try:
        outcome = run_training(cfg, db=args.db or None)
        leave_distributed()
    except (TrainingDiverged, FileNotFoundError, RuntimeError, ValueError) as exc:
        print(f"rayder-train: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(f"{outcome.status} at step {outcome.step}: {outcome.run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
