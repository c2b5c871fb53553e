"""The submitit callable that trains one run of a sweep, on SLURM or on the local executor.

`TrainJob()(config, db)` rebuilds the run's TrainConfig from its plain mapping (so a requeued job does not depend on
pickled classes), sets up torch.distributed from the SLURM environment when the job has several tasks, and calls
`rayder_core.training.trainer.run_training`, which resumes from the run directory's last checkpoint.

Checkpointing: submitit calls `checkpoint()` when the job gets USR2 (preemption, or the time limit approaching) and
requeues the same call; because the run directory holds the checkpoint, re-running the same arguments resumes.
`run_training` saves before submitit's handler runs (it chains to it at the next step boundary; the handler's exit is
deferred until run_training has returned, so the run's state reads "preempted", not "failed"). A plain
`scontrol requeue` (SIGTERM, then SIGKILL after KillWait) is handled by `run_training` alone: it saves on SIGTERM and
SLURM restarts the job, which resumes the same way.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from typing import Any

import submitit
import torch

from sweeps.preflight import parse_slurm_time
from sweeps.state import read_launch, read_state, write_json_atomic
from rayder_core.distributed import leave_distributed
from rayder_core.store import ResultsStore
from rayder_core.training.trainer import run_training
from rayder_core.train_config import load_train_config


def setup_distributed() -> dict[str, str]:
    """Export torch.distributed's env:// variables (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR,
    MASTER_PORT) from the submitit/SLURM job environment when the job has several tasks, as torchrun would.

    All of a node's GPUs stay visible (run_training picks cuda:LOCAL_RANK). Returns the exported variables ({} for
    a single-task job, which then trains without a process group).
    """
    env = submitit.JobEnvironment()
    if env.num_tasks <= 1:
        return {}
    submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
    return {k: os.environ[k] for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR",
                                       "MASTER_PORT")}


def slurm_job_fields(job_id: str | None = None) -> dict[str, str]:
    """This job's record as slurmctld sees it (`scontrol show job -o`) as {field: value}; {} if unknown."""
    job_id = job_id or os.environ.get("SLURM_JOB_ID")
    if not job_id or shutil.which("scontrol") is None:
        return {}
    try:
        out = subprocess.run(["scontrol", "show", "job", "-o", str(job_id)], capture_output=True, text=True,
                             timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    return dict(f.split("=", 1) for f in out.split() if "=" in f)


def cancelled_by_user(fields: dict[str, str], restart_count: int) -> bool:
    """Whether slurmctld's record of a job that got SIGTERM means a cancellation (scancel) rather than a requeue.

    Measured on the suite's one-node SLURM: after `scancel` and after `scontrol requeue` both jobs read
    JobState=COMPLETING, Reason=None while their processes still run; the requeued one already has Restarts
    incremented past the job's SLURM_RESTART_COUNT and EndTime=Unknown, the cancelled one keeps Restarts and has an
    EndTime. A job at its time limit also ends without a restart: RunTime >= TimeLimit is not a cancellation.
    """
    state = fields.get("JobState", "")
    if state == "CANCELLED":
        return True
    if state != "COMPLETING" or fields.get("EndTime", "Unknown") == "Unknown":
        return False
    try:
        if int(fields.get("Restarts", "0")) != restart_count:
            return False
        limit = parse_slurm_time(fields.get("TimeLimit", "UNLIMITED"))
        run = parse_slurm_time(fields.get("RunTime", "0"))
    except ValueError:
        return False
    return limit is None or run is None or run < limit - 1.0


def was_cancelled(run_dir: str | os.PathLike) -> bool:
    """Whether the user cancelled this run (rather than SLURM preempting or requeueing it): `rayder-sweep cancel`
    marks the run's launch.json before signalling; a plain `scancel` is read from slurmctld (`cancelled_by_user`)."""
    if (read_launch(run_dir) or {}).get("cancelled_at"):
        return True
    fields = slurm_job_fields()
    return bool(fields) and cancelled_by_user(fields, int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0))


def mark_cancelled(cfg: Any, db: str | None) -> None:
    """Relabel a run that stopped on the user's cancel as `cancelled` (resumable) in state.json and the store."""
    state = read_state(cfg.run_dir)
    if state is not None and state.get("status") == "preempted":
        write_json_atomic(cfg.run_dir / "state.json", {**state, "status": "cancelled"})
    if db and getattr(cfg, "store_mode", "direct") == "direct":
        try:
            ResultsStore(db, lock_timeout_s=3).set_run_status(cfg.run_id, "cancelled")
        except Exception as exc:  # the state file is the source of truth; `collect` syncs the store later
            print(f"rayder-sweep: could not mark {cfg.run_id} cancelled in {db}: {exc}", file=sys.stderr)


class TrainJob(submitit.helpers.Checkpointable):
    """Train (or resume) one run. `threads` > 0 sets torch's CPU threads (the local executor shares the cores)."""

    def __init__(self, threads: int = 0) -> None:
        self.threads = threads

    def __call__(self, config: dict[str, Any], db: str | None) -> dict[str, Any]:
        """Returns {"run_id", "status" ("finished"|"preempted"|"cancelled"), "step", "run_dir"}; raises if training
        fails. A run stopped by the user's cancel (scancel, `rayder-sweep cancel`) is labelled "cancelled"."""
        if self.threads > 0:
            torch.set_num_threads(self.threads)
        env = submitit.JobEnvironment()
        setup_distributed()
        cfg = load_train_config(config)
        requeued = self._defer_submitit_exit()
        outcome = run_training(cfg, db=db, progress=env.global_rank == 0)
        leave_distributed()
        if outcome.status == "preempted" and not requeued and env.global_rank == 0 and was_cancelled(cfg.run_dir):
            mark_cancelled(cfg, db)
            outcome = type(outcome)("cancelled", outcome.step, outcome.run_dir)
        if requeued:
            # submitit requeued the job; leave without a result file, as submitit's own handler would have
            sys.exit(-1)
        return {"run_id": cfg.run_id, "status": outcome.status, "step": outcome.step,
                "run_dir": str(outcome.run_dir)}

    @staticmethod
    def _defer_submitit_exit() -> list[bool]:
        """Wrap submitit's USR2 handler (checkpoint, requeue, then sys.exit) so that its exit is deferred until
        run_training has returned: run_training chains to this handler after saving, and an exit raised inside it
        would otherwise unwind through the training code as if the run had failed. Returns a flag list that is
        non-empty once the job was requeued."""
        requeued: list[bool] = []
        previous = signal.getsignal(signal.SIGUSR2)
        if not callable(previous):
            return requeued

        def requeue_then_return(signum: int, frame: Any) -> None:
            try:
                previous(signum, frame)
            except SystemExit:
                requeued.append(True)

        signal.signal(signal.SIGUSR2, requeue_then_return)
        return requeued
