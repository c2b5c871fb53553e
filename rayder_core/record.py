"""Recording a run directory into the results store: used by training (`rayder_core.train`, incremental syncs),
evaluation (`rayder-eval --db`) and `ResultsStore`-side collection (`rayder_core.results.collect_runs`).

Its own module so that train.py, evaluate.py and results.py do not import each other for it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from rayder_core.fileio import read_jsonl

if TYPE_CHECKING:
    from rayder_core.results import ResultsStore


def record_run_dir(run_dir: str | Path, store: ResultsStore, *, status: str | None = None,
                   since_step: int = -1) -> str:
    """Write a run directory's records into the results store (idempotent: re-recording replaces rows).

    `since_step` limits the training-log rows to steps after it (for incremental syncs). Returns the run id.
    """
    run_dir = Path(run_dir)
    state_path = run_dir / "state.json"
    if not state_path.exists():
        raise FileNotFoundError(f"{state_path}: not a run directory (no state.json)")
    try:
        state = json.loads(state_path.read_text())
        run_id = state["run_id"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{state_path}: not a readable run state ({type(exc).__name__}: {exc})") from None
    try:
        config = yaml.safe_load((run_dir / "config.yaml").read_text())
    except yaml.YAMLError as exc:
        raise ValueError(f"{run_dir / 'config.yaml'}: invalid YAML: {exc}") from None
    with store.batch():
        _record(store, run_dir, run_id, state, config, status, since_step)
    return run_id


def _record(store: ResultsStore, run_dir: Path, run_id: str, state: dict, config: dict, status: str | None,
            since_step: int) -> None:
    store.upsert_run(run_id, sweep=state["sweep"], preset=state["preset"], params=int(state["params"]),
                     fraction=float(state["fraction"]), D=int(state["D"]),
                     config={**config, "runtime": state["runtime"]} if "runtime" in state else config,
                     status=status or state["status"], host=state.get("host", ""),
                     run_dir=str(Path(run_dir).absolute()))  # where it was collected from (a copy: the copy)
    logs = [r for r in read_jsonl(run_dir / "metrics.jsonl") if int(r["step"]) > since_step]
    store.add_train_log(run_id, logs)
    for ck in read_jsonl(run_dir / "checkpoints.jsonl"):
        store.add_checkpoint(run_id, step=ck["step"], samples=ck["samples"], flops=ck["flops"],
                             wall_time_s=ck["wall_time_s"], lr=ck.get("lr"), lr_phase=ck.get("lr_phase"))
    if (run_dir / "branch.json").exists():  # a cooldown branch (fork_cooldown)
        store.add_branch(run_id, **json.loads((run_dir / "branch.json").read_text()))
    for ev in read_jsonl(run_dir / "evals.jsonl"):
        store.add_evals(run_id, ev["step"], bench=ev["bench"], values=ev.get("values", {}), n=ev.get("n", 0),
                        missing=ev.get("missing", {}), skipped=ev.get("skipped", 0))
