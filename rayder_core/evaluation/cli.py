"""`rayder-eval RUN_DIR [--step S | --all | --pending] [--db results.duckdb]`: evaluate a run's checkpoints after the
fact (under torchrun/srun with several processes: sharded, the same numbers as one process). `--pending` is the job
of `eval.mode: job`. `rayder-eval --baselines BENCH --resolution R [--index F]`: the predictions that need no model
(mean colour, nearest context view, frame blend) scored on a benchmark as a model is scored."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from rayder_core.distributed import init_distributed, leave_distributed
from rayder_core.evaluation.baselines import BASELINE_METRICS, benchmark_baselines
from rayder_core.evaluation.checkpoint import load_model_from_checkpoint
from rayder_core.evaluation.records import write_eval_records
from rayder_core.evaluation.suite import evaluate_model
from rayder_core.fileio import read_jsonl
from rayder_core.store import ResultsStore, record_run_dir
from rayder_core.train_config import load_train_config
from rayder_core.yamlconf import ConfigError


def due_steps(cfg: Any, steps: list[int]) -> list[int]:
    """The checkpoint steps among `steps` that the run's eval schedule evaluates (`EvalConfig.steps_for`: every
    `eval.every` steps from `eval.from_step`, or log-spaced, and the final step)."""
    due = set(cfg.eval.steps_for(cfg.steps))
    return [s for s in steps if s in due]


BASELINE_LABELS = dict(zip(BASELINE_METRICS, ("mean colour", "nearest context view", "frame blend")))


def print_baselines(path: Path, resolution: int, index: Path | None, max_scenes: int | None) -> int:
    """Print the PSNR (dB) of each no-model baseline on the benchmark at `path` (`benchmark_baselines`)."""
    if not path.exists():
        print(f"rayder-eval --baselines: {path} does not exist", file=sys.stderr)
        return 2
    try:
        got = benchmark_baselines(path, resolution, index=index, max_scenes=max_scenes, progress=True)
    except (FileNotFoundError, ValueError) as exc:
        print(f"rayder-eval --baselines: {exc}", file=sys.stderr)
        return 2
    print(f"baselines of {path} at {resolution}^2 ({int(got['scenes'])} scenes, index "
          f"{index or path / 'evaluation_index.json'}):")
    for metric, label in BASELINE_LABELS.items():
        shown = f"{got[metric]:6.2f} dB" if metric in got else "     -   "
        print(f"  {label:<22} {shown}   ({metric}{'' if metric in got else ': the index gives no frame indices'})")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="rayder-eval", description="Evaluate a run's checkpoints zero-shot. Under torchrun/srun with several "
        "processes the scenes are sharded over the ranks (same numbers as one process).")
    parser.add_argument("run_dir", type=Path, nargs="?", help="run directory (not with --baselines)")
    parser.add_argument("--step", type=int, default=None, help="checkpoint step (default: the latest)")
    parser.add_argument("--all", action="store_true", help="evaluate every checkpoint")
    parser.add_argument("--pending", action="store_true",
                        help="evaluate every checkpoint the eval schedule asks for that has no evals.jsonl line "
                             "yet (the job of `eval.mode: job`; idempotent)")
    parser.add_argument("--db", default="results.duckdb",
                        help="results store ('' to skip; ignored with store_mode: index, collect instead)")
    parser.add_argument("--probe-iters", type=int, default=None)
    parser.add_argument("--baselines", type=Path, default=None, metavar="BENCH",
                        help="score the predictions that need no model (mean colour, nearest context view, frame "
                             "blend) on this RE10K-format benchmark directory instead of a run; needs --resolution")
    parser.add_argument("--resolution", type=int, default=None,
                        help="with --baselines: square side in pixels the views are scored at (the models' eval one)")
    parser.add_argument("--index", type=Path, default=None,
                        help="with --baselines: evaluation index (default: BENCH/evaluation_index.json)")
    parser.add_argument("--max-scenes", type=int, default=None, help="with --baselines: only the first N scenes")
    args = parser.parse_args(argv)
    if args.baselines is not None:
        if args.run_dir is not None or args.resolution is None:
            parser.error("--baselines BENCH takes --resolution R and no run directory")
        return print_baselines(args.baselines, args.resolution, args.index, args.max_scenes)
    if args.run_dir is None:
        parser.error("a run directory is required (or --baselines BENCH --resolution R)")
    try:
        cfg = load_train_config(args.run_dir / "config.yaml")
    except ConfigError as exc:
        print(f"rayder-eval: {args.run_dir} is not a usable run directory: {exc}", file=sys.stderr)
        return 2
    if args.probe_iters is not None:
        cfg.eval.probe_iters = args.probe_iters
    ckpts = sorted((args.run_dir / "checkpoints").glob("step_*.pt"))
    step_of = {c: int(c.stem.split("_")[1]) for c in ckpts}
    if args.step is not None:
        ckpts = [c for c in ckpts if step_of[c] == args.step]
    elif args.pending:
        done = {int(r["step"]) for r in read_jsonl(args.run_dir / "evals.jsonl")}
        due = set(due_steps(cfg, list(step_of.values())))
        ckpts = [c for c in ckpts if step_of[c] in due and step_of[c] not in done]
        if not ckpts:
            print(f"rayder-eval: {args.run_dir}: no pending evaluation")
            return 0
    elif not args.all:
        ckpts = ckpts[-1:]
    if not ckpts:
        print(f"rayder-eval: no matching checkpoint in {args.run_dir / 'checkpoints'}", file=sys.stderr)
        return 1
    # "auto": CUDA when present (as before), whatever device the run trained on
    rank, world, device = init_distributed("auto", timeout_min=cfg.dist_timeout_min)
    for ckpt in ckpts:
        step = step_of[ckpt]
        model = load_model_from_checkpoint(args.run_dir, ckpt, device)
        records = evaluate_model(model, cfg.eval, resolution=cfg.data.resolution, device=device, seed=cfg.seed,
                                 progress=True, rank=rank, world=world)
        if rank != 0:
            continue
        write_eval_records(args.run_dir, step, records, replace=True)
        for rec in records:
            vals = ", ".join(f"{k}={v:.4g}" for k, v in rec["values"].items())
            print(f"step {step} {rec['bench']} (n={rec['n']}): {vals}"
                  + "".join(f"\n  {k}: missing ({why})" for k, why in rec["missing"].items()))
    if (rank == 0 and args.db and cfg.store_mode == "direct" and (args.run_dir / "state.json").exists()):
        record_run_dir(args.run_dir, ResultsStore(args.db))
    leave_distributed()
    return 0


if __name__ == "__main__":
    sys.exit(main())
