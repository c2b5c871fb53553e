"""Run state without SLURM accounting: heartbeats in each run directory, plus what the launcher recorded.

Each run directory holds `state.json`, rewritten atomically by the training loop at every log step (status, step,
compute, latest loss/PSNR, heartbeat time, elapsed training time, ...), and `launch.json`, written by
`rayder-sweep launch` (executor, job id, submission time). Without `sacct`, submitit cannot tell that a hard-killed
job died, so `status` trusts these files: a run whose state is "running" but whose heartbeat is older than
`stale_after_s` is shown as STALE (likely killed: SIGKILL, OOM, node failure); `squeue` (when present) only refines
"queued" / "requeued" for runs the queue still holds.
"""
from __future__ import annotations

import json
import math
import os
import pickle
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from rayder_core.fileio import atomic_write_text, read_json
from rayder_core.store import ResultsStore, StoreError

STALE_AFTER_S = 300.0
STATE_FILE = "state.json"
LAUNCH_FILE = "launch.json"
TERMINAL = ("finished", "failed")


def write_json_atomic(path: str | os.PathLike, data: dict[str, Any]) -> None:
    """Write a JSON object atomically (see `rayder_core.fileio.atomic_write_text`)."""
    atomic_write_text(path, json.dumps(data, indent=1, sort_keys=True))


def read_state(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    return read_json(Path(run_dir) / STATE_FILE)


def read_launch(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    return read_json(Path(run_dir) / LAUNCH_FILE)


def slurm_queue() -> dict[str, str] | None:
    """Job id -> state (PENDING, RUNNING, ...) of every job SLURM still holds, array tasks as `<array>_<task>`.

    None when `squeue` is not available or fails (then nothing is inferred from the queue).
    """
    if shutil.which("squeue") is None:
        return None
    try:
        out = subprocess.run(["squeue", "-h", "-r", "-o", "%i %T"], capture_output=True, text=True, timeout=30,
                             check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    jobs = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2:
            jobs[parts[0]] = parts[1]
    return jobs


def local_job_alive(launch: dict[str, Any]) -> bool:
    """Whether the submitit local controller process recorded in `launch` is still running (same pid and host)."""
    if launch.get("executor") != "local" or launch.get("host") != os.uname().nodename:
        return False
    try:
        pid = int(launch["job_id"])
        os.kill(pid, 0)
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (KeyError, ValueError, OSError):
        return False
    return b"submitit" in cmdline


def job_active(launch: dict[str, Any] | None, queue: dict[str, str] | None) -> str | None:
    """The queue state ("PENDING", "RUNNING", ... or "LOCAL") of the run's recorded job if it is still alive."""
    if not launch:
        return None
    if launch.get("executor") == "slurm":
        return queue.get(str(launch.get("job_id"))) if queue is not None else None
    return "LOCAL" if local_job_alive(launch) else None


def exception_line(text: str) -> str:
    """The exception line of a Python traceback in `text` (e.g. submitit's error: the traceback, then the paths of
    the job's logs), e.g. 'FileNotFoundError: shard not found: ...'; the last non-empty line without a traceback."""
    lines = [ln.rstrip() for ln in text.strip().splitlines()]
    starts = [i for i, ln in enumerate(lines) if ln.strip() == "Traceback (most recent call last):"]
    if starts:
        for ln in lines[starts[-1] + 1:]:
            if ln.strip() and not ln[0].isspace():
                return ln.strip()[:500]
    rest = [ln.strip() for ln in lines if ln.strip()]
    return rest[-1][:500] if rest else text[:500]


def startup_error(launch: dict[str, Any] | None) -> str | None:
    """The exception line of a run's job that ended with an error before the trainer wrote `state.json` (read from
    the job's submitit result file in `launch['submitit_folder']`), or None."""
    folder = (launch or {}).get("submitit_folder")
    if not folder:
        return None
    for path in sorted(Path(folder).glob("*_result.pkl")):
        try:
            with open(path, "rb") as fh:
                outcome = pickle.load(fh)  # written by submitit for this run's own job
        except Exception:  # noqa: BLE001 - unreadable or half-written: no verdict
            continue
        if isinstance(outcome, tuple) and len(outcome) == 2 and outcome[0] == "error":
            return exception_line(str(outcome[1]))
    return None


def job_gone(launch: dict[str, Any] | None, queue_state: str | None, queue_known: bool) -> bool:
    """Whether the run's recorded job has ended: a launch record, the queue (or the local controller) could be
    asked, and the job is not in it."""
    return launch is not None and queue_known and queue_state is None


@dataclass
class RunStatus:
    """One row of `rayder-sweep status`. compute_gflop: cumulative training compute in GFLOP."""

    run_id: str
    preset: str
    fraction: float | None
    state: str                    # not-submitted | queued | starting | submitted | lost | running | STALE | preempted |
    #                               requeued | cancelled (by the user; launch resumes it) | finished | failed
    step: int
    steps: int | None
    compute_gflop: float | None
    loss: float | None
    psnr: float | None
    elapsed_s: float | None
    heartbeat_age_s: float | None
    job_id: str | None
    evaluated_checkpoints: int | None = None   # from the store, when present
    eval_psnr: float | None = None             # latest evaluated checkpoint's PSNR on the run's first re10k bench
    error: str | None = None

    @property
    def done(self) -> bool:
        return self.state in TERMINAL


def classify(state: dict[str, Any] | None, launch: dict[str, Any] | None, queue_state: str | None,
             queue_known: bool, now: float, stale_after_s: float = STALE_AFTER_S, *,
             error: str | None = None) -> str:
    """The displayed state of a run (see RunStatus.state) from its state file, its launch record and the queue
    state of its job (`queue_known`: whether the queue could be asked at all). The one definition of a dead run,
    for `rayder-sweep status` and `launch --retry-failed-only` alike: STALE = 'running' in its state file but its
    job has ended (killed: SIGKILL, OOM, node failure) or no heartbeat for `stale_after_s`. `error`: the exception
    line of a job that ended before the trainer wrote its state (`startup_error`): the run then `failed`."""
    if state is None:
        if queue_state is not None:
            return "queued" if queue_state == "PENDING" else "starting"
        if launch is None:
            return "not-submitted"
        if not (queue_known or launch.get("executor") == "local"):
            return "submitted"
        # submitted, no heartbeat yet and gone from the queue: the job died before training started
        return "failed" if error else "lost"
    status = state.get("status", "running")
    if status == "running":
        age = now - float(state.get("heartbeat", 0.0))
        return "STALE" if age > stale_after_s or job_gone(launch, queue_state, queue_known) else "running"
    if queue_state is not None and (status == "preempted" or (status == "failed" and queue_state == "PENDING")):
        return "requeued"  # SLURM will start the job again; it resumes from its last checkpoint
    if status == "preempted" and queue_state is None and (launch or {}).get("cancelled_at"):
        return "cancelled"  # `rayder-sweep cancel` stopped it (the job was killed before relabelling itself)
    return status


def run_status(run_dir: str | os.PathLike, *, preset: str | None = None, fraction: float | None = None,
               steps: int | None = None, queue: dict[str, str] | None = None, now: float | None = None,
               stale_after_s: float = STALE_AFTER_S) -> RunStatus:
    """The status of one run directory (it may not exist yet: the run is then not submitted)."""
    run_dir = Path(run_dir)
    now = time.time() if now is None else now
    state = read_state(run_dir)
    launch = read_launch(run_dir)
    queue_state = job_active(launch, queue)
    queue_known = queue is not None or (launch or {}).get("executor") == "local"
    error = startup_error(launch) if state is None and job_gone(launch, queue_state, queue_known) else None
    s = state or {}
    latest = s.get("latest") or {}
    hb = s.get("heartbeat")
    return RunStatus(
        run_id=s.get("run_id", run_dir.name), preset=s.get("preset", preset or "?"),
        fraction=s.get("fraction", fraction), state=classify(state, launch, queue_state, queue_known, now, stale_after_s,
                                                       error=error),
        step=int(s.get("step", 0)), steps=s.get("steps", steps), compute_gflop=s.get("compute_gflop"),
        loss=latest.get("loss"), psnr=latest.get("psnr"), elapsed_s=s.get("elapsed_s"),
        heartbeat_age_s=(now - float(hb)) if hb is not None else None,
        job_id=str(launch["job_id"]) if launch and launch.get("job_id") is not None else None,
        error=s.get("error") or error,
    )


def add_store_metrics(rows: list[RunStatus], db: str | os.PathLike, bench_for: dict[str, str | None]) -> None:
    """Fill `evaluated_checkpoints` and `eval_psnr` from the results store, if it exists and can be read."""
    if not Path(db).exists() or not rows:
        return
    try:
        store = ResultsStore(db, lock_timeout_s=10)
        counts = store.query("SELECT run_id, count(DISTINCT step) AS n FROM evals WHERE value IS NOT NULL "
                             "GROUP BY run_id")
        psnr = store.query("SELECT run_id, bench, step, value FROM evals WHERE metric = 'psnr' AND value IS NOT NULL")
    except (StoreError, Exception):  # a busy or foreign store must not break `status`
        return
    n_by_run = dict(zip(counts["run_id"], counts["n"]))
    for row in rows:
        row.evaluated_checkpoints = int(n_by_run.get(row.run_id, 0))
        bench = bench_for.get(row.run_id)
        sel = psnr[(psnr["run_id"] == row.run_id) & ((psnr["bench"] == bench) if bench else True)]
        if len(sel):
            row.eval_psnr = float(sel.sort_values("step")["value"].iloc[-1])


def _fmt_duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "-"
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{seconds // 60:.0f}m{seconds % 60:02.0f}s"
    if seconds < 86400:
        return f"{seconds // 3600:.0f}h{(seconds % 3600) // 60:02.0f}m"
    return f"{seconds / 86400:.1f}d"


def _fmt(x: Any, spec: str) -> str:
    return "-" if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, spec)


def format_table(rows: Iterable[RunStatus], stale_after_s: float = STALE_AFTER_S) -> str:
    """A plain-text table: run, preset, fraction, state, step/steps, compute (GFLOP), loss, PSNR, evaluated
    checkpoints (and latest eval PSNR) from the store, elapsed training time, heartbeat age, job id."""
    rows = list(rows)
    header = ["run", "preset", "fraction", "state", "step/steps", "GFLOP", "loss", "PSNR", "evals", "eval PSNR",
              "elapsed", "heartbeat", "job"]
    table = [header]
    for r in rows:
        table.append([
            r.run_id, r.preset, _fmt(r.fraction, "g"), r.state, f"{r.step}/{r.steps if r.steps else '?'}",
            _fmt(r.compute_gflop, ".4g"), _fmt(r.loss, ".4f"), _fmt(r.psnr, ".2f"),
            _fmt(r.evaluated_checkpoints, "d"), _fmt(r.eval_psnr, ".2f"), _fmt_duration(r.elapsed_s),
            _fmt_duration(r.heartbeat_age_s) + (" ago" if r.heartbeat_age_s is not None else ""), r.job_id or "-",
        ])
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in table]
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.state] = counts.get(r.state, 0) + 1
    lines.append(", ".join(f"{n} {s}" for s, n in sorted(counts.items())) + f" ({len(rows)} runs)")
    stale = [r.run_id for r in rows if r.state == "STALE"]
    if stale:
        lines.append(f"STALE: 'running' but its job has ended or no heartbeat for > {_fmt_duration(stale_after_s)} "
                     f"(likely killed: SIGKILL, OOM, node failure); `rayder-sweep launch` again resumes them from their last "
                     f"checkpoint: {', '.join(stale)}")
    for r in rows:
        if r.state == "failed" and r.error:
            lines.append(f"failed {r.run_id}: {r.error.splitlines()[0][:200]}")
    return "\n".join(lines)
