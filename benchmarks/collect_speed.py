"""How long `collect` (store_mode: index) takes: a first ingest of N run directories, a repeat with nothing changed
(signatures only), and a repeat after one run appended a line.

    .venv/bin/python benchmarks/collect_speed.py --runs 200 --steps 200
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import yaml
from tqdm import tqdm

from rayder_core.fileio import append_jsonl, atomic_write_text
from rayder_core.store import ResultsStore, collect_runs


def write_run(run: Path, i: int, steps: int, every: int) -> None:
    """A finished run directory with `steps` log lines, a checkpoint and an evaluation (2 metrics) every `every`."""
    run.mkdir(parents=True)
    atomic_write_text(run / "config.yaml", yaml.safe_dump({"model": {"preset": "tiny-xs"}, "store_mode": "index"}))
    atomic_write_text(run / "state.json", json.dumps({"run_id": f"bench-{i:05d}", "sweep": "bench", "preset": "XS",
                                                      "fraction": 1.0, "D": 100, "params": 1000, "status": "finished"}))
    with open(run / "metrics.jsonl", "w") as fh:
        fh.writelines(json.dumps({"step": s, "loss": 1.0 / s, "psnr": 10.0, "lr": 1e-4, "grad_norm": 1.0,
                                  "skipped": 0, "flops": s * 1e9}) + "\n" for s in range(1, steps + 1))
    for s in range(every, steps + 1, every):
        append_jsonl(run / "checkpoints.jsonl", {"step": s, "samples": s, "flops": s * 1e9, "wall_time_s": s})
        append_jsonl(run / "evals.jsonl", {"step": s, "bench": "b", "values": {"psnr": 20.0, "mse": 0.01}, "n": 4,
                                           "missing": {}})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--steps", type=int, default=200, help="log lines per run")
    parser.add_argument("--every", type=int, default=20, help="steps between checkpoints/evaluations")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        dirs = [root / "runs" / f"r{i:05d}" for i in range(args.runs)]
        for i, d in enumerate(tqdm(dirs, desc="writing runs", leave=False)):
            write_run(d, i, args.steps, args.every)
        store = ResultsStore(root / "index.duckdb")
        timings = []
        for label, touch in (("first collect", False), ("nothing changed", False), ("one run appended", True)):
            if touch:
                append_jsonl(dirs[0] / "metrics.jsonl", {"step": args.steps + 1, "loss": 0.5, "flops": 0.0})
            t = time.perf_counter()
            rep = collect_runs(dirs, store)
            timings.append((label, time.perf_counter() - t, len(rep.ingested), len(rep.unchanged)))
        counts = store.table_counts()
    print(f"{args.runs} runs x {args.steps} log lines, a checkpoint + evaluation every {args.every} steps; "
          f"store rows {counts}")
    print(f"{'pass':<18} {'seconds':>8} {'ingested':>9} {'unchanged':>10}")
    for label, sec, ingested, unchanged in timings:
        print(f"{label:<18} {sec:8.2f} {ingested:9d} {unchanged:10d}")


if __name__ == "__main__":
    main()
