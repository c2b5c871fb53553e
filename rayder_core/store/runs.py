"""Run directories into the results store: `record_run_dir` (one run; used by training for its incremental syncs
and by `rayder-eval --db`) and `collect_runs` (many, idempotent and incremental: `rayder-sweep collect`, index
mode)."""

from __future__ import annotations

import json
from pathlib import Path
import os

import yaml
from tqdm import tqdm

from rayder_core.fileio import read_json, read_jsonl
from rayder_core.store.store import ResultsStore


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


# ------------------------------------------------------------------------------------------------ index mode
# Shared filesystems (NFS, Lustre): with `store_mode: index` in the train config (or a grid's `base:`), runs never
# open the store; they only append to their own run directory (state.json, metrics.jsonl, checkpoints.jsonl,
# evals.jsonl, all crash-safe, see `rayder_core.fileio`). The store is then an index of the run directories, built by
# one process with `collect_runs` (CLI: `rayder-sweep collect GRID_OR_DIR`, also run by `rayder-sweep launch` when
# its runs end). Ingestion is idempotent (upserts keyed by run id and step) and incremental: the signature of a run's
# record files (size, mtime, inode, and the directory's absolute path) is kept in table `meta` under
# `collected:<run_id>`, written in the same transaction as the rows, and an unchanged run is not read again.

COLLECTED_PREFIX = "collected:"
RUN_RECORD_FILES = ("state.json", "config.yaml", "metrics.jsonl", "checkpoints.jsonl", "evals.jsonl")


def run_dir_signature(run_dir: str | os.PathLike) -> str:
    """A string that changes whenever one of the run directory's record files changes (appended, rewritten,
    replaced) or the directory is collected from another place: JSON of the absolute path and, per file,
    (size in bytes, mtime in ns, inode), or null for an absent file."""
    run_dir = Path(run_dir).absolute()
    files: dict[str, list[int] | None] = {}
    for name in RUN_RECORD_FILES:
        try:
            st = os.stat(run_dir / name)
            files[name] = [st.st_size, st.st_mtime_ns, st.st_ino]
        except FileNotFoundError:
            files[name] = None
    return json.dumps({"dir": str(run_dir), "files": files}, sort_keys=True)


class CollectReport:
    """What `collect_runs` did: run ids ingested, run ids unchanged since the last collect (not re-read),
    directories not yet started (no state.json) and directories that could not be read, with the reason."""

    def __init__(self) -> None:
        self.ingested: list[str] = []
        self.unchanged: list[str] = []
        self.not_started: list[Path] = []
        self.errors: list[tuple[Path, str]] = []

    @property
    def run_ids(self) -> list[str]:
        return self.ingested + self.unchanged

    def __repr__(self) -> str:
        return (f"CollectReport(ingested={len(self.ingested)}, unchanged={len(self.unchanged)}, "
                f"not_started={len(self.not_started)}, errors={len(self.errors)})")


def collect_runs(run_dirs: list[str | os.PathLike], store: ResultsStore, *, force: bool = False,
                 progress: bool = False) -> CollectReport:
    """Ingest run directories into `store` (idempotent, incremental; see the comment above).

    Each run is one transaction: its rows and its signature are committed together, so a collect killed midway
    leaves every run either fully ingested or untouched. `force` re-reads every run. A directory that cannot be
    read (bad state.json/config.yaml) is reported in `errors` and the others are still ingested."""
    report = CollectReport()
    known = {} if force else store.meta_values(COLLECTED_PREFIX)
    for run_dir in tqdm([Path(d) for d in run_dirs], desc="collect", unit="run", disable=not progress):
        if not (run_dir / "state.json").exists():
            report.not_started.append(run_dir)
            continue
        signature = run_dir_signature(run_dir)  # taken before reading: a later change re-ingests next time
        state = read_json(run_dir / "state.json") or {}
        run_id = state.get("run_id")
        if run_id is not None and known.get(COLLECTED_PREFIX + str(run_id)) == signature:
            report.unchanged.append(str(run_id))
            continue
        try:
            with store.batch():
                run_id = record_run_dir(run_dir, store)
                store.set_meta(COLLECTED_PREFIX + run_id, signature)
        except (OSError, ValueError, KeyError, TypeError, yaml.YAMLError) as exc:  # json errors are ValueErrors
            report.errors.append((run_dir, f"{type(exc).__name__}: {exc}"))
            continue
        report.ingested.append(run_id)
    return report
