"""`rayder-sweep launch | status | cancel | collect`: run a grid of training runs on SLURM or on this machine.

    rayder-sweep launch sweeps/grid.yaml [--executor auto|slurm|local] [--set base.steps=1000] [--dry-run] [--wait]
                 [--skip-preflight] [--retry-failed-only] [--max-array-size N]
    rayder-sweep status sweeps/grid.yaml [--stale-after 300] [--watch [S]]   # or a directory of run directories
    rayder-sweep cancel sweeps/grid.yaml                          # running runs save a checkpoint, then stop
    rayder-sweep collect sweeps/grid.yaml [--db results.duckdb]   # run directories -> results store (idempotent)

`--executor auto` uses SLURM when `sbatch` is on PATH, else the local executor (runs as subprocesses of `launch`,
`local.parallel` at a time, with a progress bar). A run's identity is the hash of its resolved config (`run_id`), so
launching the same grid again skips finished runs, leaves queued/running ones alone, resumes the others from their
last checkpoint, and never duplicates rows in the store (every store write is an upsert). Before submitting, the
runs pass a preflight (`sweeps.preflight`: data, benchmarks, directories, store, SLURM partition/GPUs/time limits,
estimated compute); a failing check prints one line per problem naming the grid key and submits nothing.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import submitit
from tqdm import tqdm

from rayder_core.store import ResultsStore, collect_runs
from rayder_core.train_config import TrainConfig
from rayder_core.training.trunk import start_step, trunk_run_id
from rayder_core.yamlconf import ConfigError
from sweeps.job import TrainJob
from sweeps.preflight import (ASSUMED_MFU, GPU_PEAK_TFLOPS, PreflightError, PreflightReport, preflight,
                              run_train_flops, slurm_max_array_size)
from sweeps.spec import SweepSpec, load_spec
from sweeps.state import (LAUNCH_FILE, STALE_AFTER_S, STATE_FILE, RunStatus, add_store_metrics, classify,
                          exception_line, format_table, job_active, job_gone, local_job_alive, read_launch, read_state,
                          run_status, slurm_queue, startup_error, write_json_atomic)

EXECUTORS = ("auto", "slurm", "local")
SUBMITIT_DIR = ".submitit"


class LaunchError(RuntimeError):
    """The sweep cannot be launched as asked (no sbatch for --executor slurm, ...)."""


def resolve_executor(name: str) -> str:
    """'auto' -> 'slurm' when `sbatch` is on PATH, else 'local'. Checks that 'slurm' is usable."""
    if name not in EXECUTORS:
        raise LaunchError(f"--executor must be one of {EXECUTORS}, got {name!r}")
    has_sbatch = shutil.which("sbatch") is not None
    if name == "auto":
        return "slurm" if has_sbatch else "local"
    if name == "slurm" and not has_sbatch:
        raise LaunchError("--executor slurm: `sbatch` is not on PATH (use --executor local to run here)")
    return name


# ------------------------------------------------------------------------------------------------ planning
@dataclass
class PlannedRun:
    cfg: TrainConfig
    action: str          # "submit" | "skip"
    reason: str          # e.g. "new", "resume from step 300 (preempted)", "finished", "running as job 12_3"


def plan_launch(cfgs: list[TrainConfig], *, queue: dict[str, str] | None, retry_failed: bool = True,
                stale_after_s: float = STALE_AFTER_S, now: float | None = None,
                only_failed: bool = False) -> list[PlannedRun]:
    """Decide for each run whether to submit it. Finished runs and runs whose job is alive are skipped.

    `only_failed` (`launch --retry-failed-only`): submit only runs whose last attempt failed: state failed, STALE
    (killed; `classify`, the same definition `rayder-sweep status` shows), or a recorded job that ended before its
    first heartbeat (lost, or failed at start-up)."""
    now = time.time() if now is None else now
    plans = []
    for cfg in cfgs:
        state, launch = read_state(cfg.run_dir), read_launch(cfg.run_dir)
        alive = job_active(launch, queue)
        queue_known = queue is not None or (launch or {}).get("executor") == "local"
        status = (state or {}).get("status")
        step = int((state or {}).get("step", 0))
        error = startup_error(launch) if state is None and job_gone(launch, alive, queue_known) else None
        shown = classify(state, launch, alive, queue_known, now, stale_after_s, error=error)  # as `status` shows it
        if status == "finished":
            plans.append(PlannedRun(cfg, "skip", "finished"))
        elif alive is not None:
            plans.append(PlannedRun(cfg, "skip", f"{alive.lower()} as job {launch['job_id']}"))
        elif shown == "running":
            # started outside this launcher (rayder-train) or the queue cannot be asked: trust the heartbeat
            plans.append(PlannedRun(cfg, "skip", "running (fresh heartbeat)"))
        elif status == "failed" and not retry_failed:
            plans.append(PlannedRun(cfg, "skip", f"failed at step {step} (--no-retry-failed)"))
        elif state is None:
            if only_failed and shown not in ("lost", "failed"):
                plans.append(PlannedRun(cfg, "skip", "not failed (--retry-failed-only)"))
            elif shown == "failed" and not retry_failed:
                plans.append(PlannedRun(cfg, "skip", f"failed at start-up: {error} (--no-retry-failed)"))
            else:
                plans.append(PlannedRun(cfg, "submit", {"lost": "lost job, start again",
                                                         "failed": f"failed at start-up ({error}), start again"}
                                        .get(shown, f"new, from step {start_step(cfg)} of {trunk_run_id(cfg)}"
                                             if cfg.start_from else "new")))
        else:
            why = "stale heartbeat" if shown == "STALE" else status
            if only_failed and why not in ("failed", "stale heartbeat"):
                plans.append(PlannedRun(cfg, "skip", f"{why} at step {step}, not failed (--retry-failed-only)"))
            else:
                plans.append(PlannedRun(cfg, "submit", f"resume from step {step} ({why})"))
    return plans


# ------------------------------------------------------------------------------------------------ launching
@dataclass
class LaunchResult:
    executor: str
    planned: list[PlannedRun]
    job_ids: dict[str, str] = field(default_factory=dict)     # run_id -> job id (SLURM) or controller pid (local)
    outcomes: dict[str, str] = field(default_factory=dict)    # run_id -> finished | preempted | failed | ...
    errors: dict[str, str] = field(default_factory=dict)      # run_id -> error message of a failed job
    preflight: PreflightReport | None = None                   # None: nothing to submit, or --skip-preflight

    @property
    def submitted(self) -> list[str]:
        return [p.cfg.run_id for p in self.planned if p.action == "submit"]


def _record_launch(cfg: TrainConfig, executor: str, job_id: str, spec: SweepSpec) -> None:
    write_json_atomic(cfg.run_dir / LAUNCH_FILE, {
        "executor": executor, "job_id": str(job_id), "submitted": time.time(), "host": socket.gethostname(),
        "sweep": spec.name, "grid": spec.source,
        "submitit_folder": str(Path(cfg.out_dir) / SUBMITIT_DIR / str(job_id)),
    })




class SubmissionError(LaunchError):
    """sbatch (through submitit) rejected one or more job arrays. `not_submitted` lists the run ids that were not
    submitted; they have no launch record, so `launch` again (after fixing the grid) submits exactly them."""

    def __init__(self, message: str, not_submitted: list[str]) -> None:
        super().__init__(message)
        self.not_submitted = list(not_submitted)


def split_arrays(items: list[Any], max_array_size: int | None) -> list[list[Any]]:
    """Chunks of at most `max_array_size` items: array task ids run 0..n-1 and must stay below the cluster's
    MaxArraySize (`scontrol show config`), so a larger group is submitted as several arrays."""
    if not max_array_size or max_array_size <= 0 or len(items) <= max_array_size:
        return [list(items)] if items else []
    return [list(items[i:i + max_array_size]) for i in range(0, len(items), max_array_size)]


def _sbatch_message(exc: BaseException) -> str:
    """What SLURM said, from a submitit submission error (its stderr), on one line."""
    text = str(exc).strip() or type(exc).__name__
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    said = [ln for ln in lines if "error" in ln.lower()] or lines
    return " | ".join(dict.fromkeys(said))[:600]


def _submit_slurm(spec: SweepSpec, plans: list[PlannedRun], result: LaunchResult, *,
                  max_array_size: int | None = None) -> None:
    """Submit the runs as job arrays, one array per distinct resource set (e.g. nodes per preset), split at the
    cluster's MaxArraySize. A run that starts from a trunk submitted in the same launch (grid.steps with
    share_trunks) is submitted after it with `--dependency=afterany:<trunk job>`. An array that sbatch rejects is
    reported with SLURM's message; the other arrays are still submitted, and SubmissionError names the runs that
    were not (they keep no launch record)."""
    if max_array_size is None:
        max_array_size = slurm_max_array_size()
    failures: list[tuple[list[TrainConfig], str]] = []
    submitting = {p.cfg.run_id for p in plans}
    # a run that starts from a trunk submitted now waits for it (afterany: if the trunk fails, it trains from step 0)
    waits = [p for p in plans if trunk_run_id(p.cfg) in submitting]
    _submit_arrays(spec, [p for p in plans if p not in waits], result, failures, max_array_size)
    orphans = [p.cfg for p in waits if trunk_run_id(p.cfg) not in result.job_ids]
    if orphans:
        failures.append((orphans, "(not sent: the run it starts from, its trunk, was not submitted)"))
    _submit_arrays(spec, [p for p in waits if trunk_run_id(p.cfg) in result.job_ids], result, failures,
                   max_array_size, after={p.cfg.run_id: result.job_ids.get(trunk_run_id(p.cfg)) for p in waits})
    if failures:
        not_submitted = [c.run_id for chunk, _ in failures for c in chunk]
        lines = [f"SLURM rejected {len(failures)} job array(s); {len(not_submitted)} run(s) were NOT submitted "
                 f"({len(result.job_ids)} were):"]
        for chunk, said in failures:
            presets = sorted({c.model["preset"] for c in chunk})
            lines.append(f"  preset(s) {', '.join(presets)}: sbatch said: {said}")
            lines += [f"    not submitted: {c.run_id}" for c in chunk]
        lines.append(f"fix the grid's slurm settings and run `rayder-sweep launch {spec.cli_args()}` again: it "
                     "submits exactly the runs that were not submitted")
        raise SubmissionError("\n".join(lines), not_submitted)


def _submit_arrays(spec: SweepSpec, plans: list[PlannedRun], result: LaunchResult,
                   failures: list[tuple[list[TrainConfig], str]], max_array_size: int | None, *,
                   after: dict[str, str | None] | None = None) -> None:
    """Submit `plans` as job arrays, one per distinct resource set (and, with `after`, per job each run waits for:
    `--dependency=afterany:<job>`), split at `max_array_size`; rejected arrays are appended to `failures`."""
    groups: dict[str, list[TrainConfig]] = {}
    resources: dict[str, Any] = {}
    for p in plans:
        res = spec.slurm_for(p.cfg.model["preset"])
        params = res.executor_parameters()
        if after and after.get(p.cfg.run_id):
            params["additional_parameters"] = {**params.get("additional_parameters", {}),
                                               "dependency": f"afterany:{after[p.cfg.run_id]}"}
        key = json.dumps(params, sort_keys=True)
        groups.setdefault(key, []).append(p.cfg)
        resources[key] = (res, params)
    for key, cfgs in groups.items():
        res, params = resources[key]
        if res.time_min <= 10:
            print(f"rayder-sweep: warning: slurm.time_min = {res.time_min} <= 10: submitit treats every USR2 of "
                  "such a job as a timeout (counted against max_requeues), not a preemption", file=sys.stderr)
        folder = Path(cfgs[0].out_dir) / SUBMITIT_DIR / "%j"
        executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=res.max_requeues)
        executor.update_parameters(job_name=f"rayder-{spec.name}", **params)
        job_fn = TrainJob(threads=res.cpus_per_task)
        chunks = split_arrays(cfgs, max_array_size)
        for index, chunk in enumerate(chunks):
            echo = io.StringIO()
            try:  # submitit echoes sbatch's stderr itself; it goes into our error message instead
                with contextlib.redirect_stderr(echo), executor.batch():
                    jobs = [executor.submit(job_fn, cfg.to_dict(), str(spec.db_path)) for cfg in chunk]
            except (submitit.core.utils.FailedJobError, submitit.core.utils.FailedSubmissionError,
                    subprocess.SubprocessError, OSError) as exc:
                failures.append((chunk, _sbatch_message(exc)))
                continue
            sys.stderr.write(echo.getvalue())  # warnings of a successful submission are shown as they were
            for cfg, job in zip(chunk, jobs):
                result.job_ids[cfg.run_id] = str(job.job_id)
                _record_launch(cfg, "slurm", job.job_id, spec)
            array_id = str(jobs[0].job_id).split("_")[0]
            print(f"submitted {len(jobs)} run(s) as SLURM array {array_id} "
                  f"({res.nodes} node(s) x {res.tasks_per_node} task(s), {res.gpus_per_node} GPU(s)/node, "
                  f"{res.time_min} min): {', '.join(c.model['preset'] + '/f' + format(c.data.fraction, 'g') for c in chunk)}"
                  + (f" [array {index + 1}/{len(chunks)}: MaxArraySize {max_array_size}]"
                     if len(chunks) > 1 else "")
                  + (f", after job {params['additional_parameters']['dependency'].split(':', 1)[1]} (its trunk)"
                     if "dependency" in params.get("additional_parameters", {}) else ""))


def _longest_first(cfgs: list[TrainConfig]) -> list[TrainConfig]:
    """Runs ordered by training FLOPs, largest first (longest-processing-time-first: with `parallel` slots the
    sweep ends sooner than in grid order, where the largest runs came last and ran alone). Ties keep grid order."""
    cache: dict = {}
    try:
        cost = {c.run_id: run_train_flops(c, cache) for c in cfgs}
    except Exception:  # noqa: BLE001 - ordering is an optimisation; a config preflight rejects is reported there
        return list(cfgs)
    return sorted(cfgs, key=lambda c: -cost[c.run_id])


def compile_group(cfg: TrainConfig, from_step: int) -> str | None:
    """The compiled graph that run `cfg`'s process builds when it trains from `from_step` (`compile: loss | layers`
    with at least `compile_min_steps` left), as a key: runs with equal keys share inductor's on-disk kernels, so only
    the first needs to compile them cold. None for a process that trains eagerly."""
    if not cfg.compiles_from(from_step):
        return None
    return json.dumps([cfg.compile_mode, cfg.model, cfg.batch_size, cfg.data.resolution, cfg.data.frames,
                       cfg.precision, cfg.device], sort_keys=True)


def choose_next(ready: list[TrainConfig], groups: dict[str, str | None], compiling: set[str]) -> TrainConfig | None:
    """The run to start in a free slot: the first of `ready` (in their order) that does not compile a graph an active
    run is still compiling cold (`compiling`: those runs' `compile_group`s), so that it can reuse the kernels once
    they are on disk; the first of `ready` when every one does (it would wait as long as it compiles)."""
    return next((c for c in ready if groups.get(c.run_id) not in compiling), ready[0] if ready else None)


def _run_local(spec: SweepSpec, plans: list[PlannedRun], result: LaunchResult, *, progress: bool,
               poll_s: float) -> None:
    """Run the runs as submitit local jobs, `spec.local.parallel` at a time, with a step progress bar."""
    cfgs = [p.cfg for p in plans]
    if not cfgs:
        return
    folder = Path(cfgs[0].out_dir) / SUBMITIT_DIR / "%j"
    executor = submitit.LocalExecutor(folder=folder)
    executor.update_parameters(timeout_min=spec.local.timeout_min)
    job_fn = TrainJob(threads=spec.local.threads_each())
    pending = deque(_longest_first(cfgs))
    active: dict[str, tuple[Any, TrainConfig]] = {}
    trunk_of = {c.run_id: trunk_run_id(c) for c in cfgs if c.start_from}

    def from_step(cfg: TrainConfig) -> int:
        return max(start_step(cfg), int((read_state(cfg.run_dir) or {}).get("step", 0)))

    groups = {c.run_id: compile_group(c, from_step(c)) for c in cfgs}
    started_at: dict[str, int] = {}  # run id -> the step its process started from
    warm: set[str] = set()  # compile groups whose kernels an active or finished run has built in this launch

    def compiling() -> set[str]:
        """Compile groups that an active run is still compiling cold (its process has not finished a step yet)."""
        busy = set()
        for run_id, (_, cfg) in active.items():
            group = groups.get(run_id)
            if group is None or group in warm:
                continue
            if int((read_state(cfg.run_dir) or {}).get("step", 0)) > started_at[run_id]:
                warm.add(group)
            else:
                busy.add(group)
        return busy

    def next_ready() -> TrainConfig | None:
        """A pending run whose trunk (if any) is neither pending nor running (a shorter run waits for the checkpoint
        it starts from, while other runs take the free slots), preferring one that does not compile the graph
        another run is compiling now (`choose_next`)."""
        waiting = set(active) | {c.run_id for c in pending}
        ready = [c for c in pending if trunk_of.get(c.run_id) not in waiting]
        return choose_next(ready, groups, compiling())

    total = sum(c.steps - start_step(c) for c in cfgs)
    bar = tqdm(total=total, desc=f"sweep {spec.name}", unit="step", disable=not progress, dynamic_ncols=True,
               mininterval=2.0)
    finished = 0

    def stop_on_sigterm(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    try:  # SIGTERM (kill, a batch system) stops the runs like Ctrl-C: they save a checkpoint first
        previous = signal.signal(signal.SIGTERM, stop_on_sigterm)
    except ValueError:  # not the main thread
        previous = None
    try:
        while pending or active:
            while pending and len(active) < spec.local.parallel and (cfg := next_ready()) is not None:
                pending.remove(cfg)
                started_at[cfg.run_id] = from_step(cfg)
                groups[cfg.run_id] = compile_group(cfg, started_at[cfg.run_id])
                job = executor.submit(job_fn, cfg.to_dict(), str(spec.db_path))
                active[cfg.run_id] = (job, cfg)
                result.job_ids[cfg.run_id] = str(job.job_id)
                _record_launch(cfg, "local", job.job_id, spec)
            for run_id, (job, cfg) in list(active.items()):
                if not job.done():
                    continue
                del active[run_id]
                finished += 1
                if not job.paths.result_pickle.exists():  # killed (SIGKILL, OOM): no result will come
                    result.outcomes[run_id] = "died"
                    result.errors[run_id] = (f"the job's process ended without a result (killed?); launch again "
                                             f"to resume from the last checkpoint")
                else:
                    try:
                        result.outcomes[run_id] = job.result()["status"]
                    except Exception as exc:  # the run failed; the others go on
                        result.outcomes[run_id] = "failed"
                        result.errors[run_id] = exception_line(str(exc))
                if result.outcomes[run_id] in ("preempted", "cancelled") and pending:
                    # stopped by a signal (`rayder-sweep cancel`, SIGTERM): start no more runs
                    tqdm.write(f"run {run_id} was stopped (checkpoint saved); not starting the {len(pending)} "
                               "remaining run(s): launch again to continue")
                    pending.clear()
                if run_id in result.errors:
                    tqdm.write(f"run {run_id} {result.outcomes[run_id]}: {result.errors[run_id]} "
                               f"(log: {job.paths.stderr})")
            done_steps = sum(max(0, int((read_state(c.run_dir) or {}).get("step", 0)) - start_step(c))
                             for c in cfgs)
            bar.set_postfix_str(f"{finished}/{len(cfgs)} runs done, {len(active)} running", refresh=False)
            bar.update(max(0, min(done_steps, total) - bar.n))
            if pending or active:
                time.sleep(poll_s)
    except KeyboardInterrupt:
        for job, _ in active.values():  # controllers forward SIGTERM: each run saves a checkpoint and stops
            _terminate_local(str(job.job_id))
        tqdm.write(f"interrupted: {len(active)} running run(s) save a checkpoint and stop; launch again to resume")
        raise
    finally:
        bar.close()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _terminate_local(job_id: str) -> bool:
    """SIGTERM a submitit local controller (it forwards the signal to the training process, which saves)."""
    if not local_job_alive({"executor": "local", "job_id": job_id, "host": os.uname().nodename}):
        return False
    os.kill(int(job_id), signal.SIGTERM)
    return True


def wait_for_runs(cfgs: list[TrainConfig], *, timeout_s: float | None = None, stale_after_s: float = STALE_AFTER_S,
                  poll_s: float = 5.0, progress: bool = True) -> list[RunStatus]:
    """Poll the runs' state files (never submitit's `result()`, which blocks forever on a hard-killed job without
    SLURM accounting) until every run is finished, failed, STALE or lost, or `timeout_s` passes."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    total = sum(c.steps - start_step(c) for c in cfgs)
    bar = tqdm(total=total, desc="waiting", unit="step", disable=not progress, dynamic_ncols=True, mininterval=2.0)
    try:
        while True:
            rows = sweep_status(cfgs, stale_after_s=stale_after_s)
            bar.set_postfix_str(", ".join(f"{sum(r.state == s for r in rows)} {s}"
                                          for s in sorted({r.state for r in rows})), refresh=False)
            bar.update(max(0, min(sum(r.step for r in rows), total) - bar.n))
            if all(r.state in ("finished", "failed", "cancelled", "STALE", "lost") for r in rows):
                return rows
            if deadline is not None and time.monotonic() > deadline:
                return rows
            time.sleep(poll_s)
    finally:
        bar.close()


def launch(spec: SweepSpec, *, executor: str = "auto", dry_run: bool = False, wait: bool | None = None,
           timeout_s: float | None = None, retry_failed: bool = True, stale_after_s: float = STALE_AFTER_S,
           progress: bool = True, poll_s: float = 1.0, skip_preflight: bool = False,
           retry_failed_only: bool = False, max_array_size: int | None = None,
           gpu_tflops: float | None = None, mfu: float | None = None) -> LaunchResult:
    """Launch (or re-launch) every run of `spec`; see the module docstring.

    Before anything is submitted (and for `dry_run`), the runs to submit pass `sweeps.preflight.preflight`: data,
    benchmarks, writable directories, the store and the executor's resources; any problem raises PreflightError
    (one line per problem, naming the grid key) and nothing is submitted, unless `skip_preflight`.
    `retry_failed_only`: submit only runs whose last attempt failed (failed, STALE heartbeat, or lost job).
    `max_array_size`: split SLURM arrays at this size (None: the cluster's MaxArraySize).
    The local executor always waits for its runs; SLURM returns after submission unless `wait` is True.
    Afterwards finished runs missing from the store are collected into it (idempotent).
    """
    kind = resolve_executor(executor)
    cfgs = spec.runs()
    queue = slurm_queue() if kind == "slurm" else None
    plans = plan_launch(cfgs, queue=queue, retry_failed=retry_failed, stale_after_s=stale_after_s,
                        only_failed=retry_failed_only)
    result = LaunchResult(kind, plans)
    to_submit = [p for p in plans if p.action == "submit"]
    skipped = len(plans) - len(to_submit)
    print(f"sweep {spec.name}: {len(plans)} runs, {len(to_submit)} to submit ({kind}), {skipped} skipped "
          f"[{spec.out_dir} -> {spec.db_path}]")
    for p in plans:
        print(f"  {'submit' if p.action == 'submit' else 'skip  '}  {p.cfg.run_id:<44} {p.reason}")
    if to_submit and not skip_preflight:
        gpu_tflops = GPU_PEAK_TFLOPS if gpu_tflops is None else gpu_tflops
        mfu = ASSUMED_MFU if mfu is None else mfu
        report = preflight(spec, [p.cfg for p in to_submit], kind, gpu_tflops=gpu_tflops, mfu=mfu)
        result.preflight = report
        print(report.summary(gpu_tflops=gpu_tflops, mfu=mfu, problems=False))
        if not report.ok:
            raise PreflightError(report.problems, spec.source)
    elif to_submit:
        print("preflight: skipped (--skip-preflight)")
    if dry_run or not to_submit:
        if not dry_run:
            _collect_missing(spec, cfgs)
        return result
    for p in to_submit:
        p.cfg.run_dir.mkdir(parents=True, exist_ok=True)
    if kind == "slurm":
        follow = f"follow with: rayder-sweep status {spec.cli_args()}"
        try:
            _submit_slurm(spec, to_submit, result, max_array_size=max_array_size)
        except SubmissionError:
            if result.job_ids:
                print(follow)
            raise
        if wait:
            rows = wait_for_runs([p.cfg for p in to_submit], timeout_s=timeout_s, stale_after_s=stale_after_s,
                                 progress=progress)
            result.outcomes.update({r.run_id: r.state for r in rows})
        else:
            print(follow)
    else:
        _run_local(spec, to_submit, result, progress=progress, poll_s=poll_s)
    _collect_missing(spec, cfgs)
    return result


# ------------------------------------------------------------------------------------------------ status/cancel
def sweep_status(cfgs: list[TrainConfig], *, stale_after_s: float = STALE_AFTER_S,
                 db: str | os.PathLike | None = None) -> list[RunStatus]:
    """Status rows of a grid's runs (state files + queue; evaluated checkpoints from the store if `db` exists)."""
    queue = slurm_queue()
    now = time.time()
    rows = [run_status(c.run_dir, preset=c.model["preset"], fraction=c.data.fraction, steps=c.steps, queue=queue,
                       now=now, stale_after_s=stale_after_s) for c in cfgs]
    if db is not None:
        bench = {c.run_id: next((b.name for b in c.eval.benchmarks if b.kind == "re10k"), None) for c in cfgs}
        add_store_metrics(rows, db, bench)
    return rows


def watch_status(rows_now: Any, *, stale_after_s: float = STALE_AFTER_S, interval_s: float = 10.0,
                 count: int | None = None, stream: Any = None) -> int:
    """`status --watch`: redraw the status table in place every `interval_s` seconds (ANSI cursor-home + clear on
    a terminal; separated snapshots otherwise) until every run has ended (finished/failed), `count` refreshes
    were drawn, or Ctrl-C. Returns 0."""
    stream = sys.stdout if stream is None else stream
    tty = hasattr(stream, "isatty") and stream.isatty()
    n = 0
    try:
        while True:
            rows = rows_now()
            stamp = time.strftime("%H:%M:%S")
            text = f"{format_table(rows, stale_after_s)}\n[{stamp}] refreshing every {interval_s:g} s (Ctrl-C stops)"
            if tty:
                stream.write("\x1b[H\x1b[J" + text + "\n")
            else:
                stream.write(("\n" if n else "") + text + "\n")
            stream.flush()
            n += 1
            if (rows and all(r.state in ("finished", "failed", "cancelled") for r in rows)) or (count is not None and n >= count):
                return 0
            time.sleep(interval_s)
    except KeyboardInterrupt:
        return 0


def run_dirs_under(directory: str | os.PathLike) -> list[Path]:
    """Run directories (holding state.json or launch.json) directly under `directory`."""
    directory = Path(directory)
    return sorted(p for p in directory.iterdir()
                  if p.is_dir() and ((p / STATE_FILE).exists() or (p / LAUNCH_FILE).exists()))


def dir_status(directory: str | os.PathLike, *, stale_after_s: float = STALE_AFTER_S,
               db: str | os.PathLike | None = None) -> list[RunStatus]:
    queue = slurm_queue()
    now = time.time()
    rows = [run_status(d, queue=queue, now=now, stale_after_s=stale_after_s) for d in run_dirs_under(directory)]
    if db is not None:
        add_store_metrics(rows, db, {})
    return rows


def cancel(spec: SweepSpec) -> list[str]:
    """Stop the grid's queued and running jobs. Running training saves a checkpoint on SIGTERM, then stops;
    `launch` again resumes. Returns the cancelled job ids."""
    queue = slurm_queue()
    slurm_ids, cancelled = [], []
    for cfg in spec.runs():
        launch_info = read_launch(cfg.run_dir)
        if job_active(launch_info, queue) is None:
            continue
        job_id = str(launch_info["job_id"])
        # mark first: the run then labels itself "cancelled" (resumable), not "preempted", when it stops
        write_json_atomic(cfg.run_dir / LAUNCH_FILE, {**launch_info, "cancelled_at": time.time()})
        if launch_info["executor"] == "slurm":
            slurm_ids.append(job_id)
        elif _terminate_local(job_id):
            cancelled.append(job_id)
    if slurm_ids:
        subprocess.run(["scancel", *sorted(set(slurm_ids))], check=True)
        cancelled += sorted(set(slurm_ids))
    return cancelled


def collect(run_dirs: list[Path], db: str | os.PathLike, *, progress: bool = False) -> list[str]:
    """Write each run directory's records into the store at `db` (idempotent upserts; a run whose record files
    did not change since the last collect is not read again, see `rayder_core.store.collect_runs`). Directories
    that cannot be read are reported on stderr and left out. Returns the run ids now in the store."""
    report = collect_runs(run_dirs, ResultsStore(db), progress=progress)
    for run_dir, reason in report.errors:
        print(f"collect: {run_dir}: not collected: {reason}", file=sys.stderr)
    return report.run_ids


def _collect_missing(spec: SweepSpec, cfgs: list[TrainConfig]) -> None:
    """Collect runs whose state file says finished but whose store row does not (e.g. written elsewhere)."""
    finished = [c for c in cfgs if (read_state(c.run_dir) or {}).get("status") == "finished"]
    if not finished and not any(c.store_mode == "index" for c in cfgs):
        return
    store = ResultsStore(spec.db_path)
    runs = store.query("SELECT run_id, status FROM runs") if spec.db_path.exists() else None
    in_store = {} if runs is None else dict(zip(runs["run_id"], runs["status"]))
    missing = [c.run_dir for c in finished if in_store.get(c.run_id) != "finished"]
    # store_mode index: runs never write the store, so every started run is collected (unchanged ones are skipped)
    missing += [c.run_dir for c in cfgs if c.store_mode == "index" and c.run_dir not in missing]
    if missing:
        ids = collect(missing, spec.db_path)
        print(f"collected {len(ids)} run(s) into {spec.db_path}")


# ------------------------------------------------------------------------------------------------ CLI
def _load(target: str, overrides: list[str]) -> SweepSpec | None:
    """A grid file -> SweepSpec; a directory -> None (status/collect then work on its run directories)."""
    if Path(target).is_dir():
        if overrides:
            raise ConfigError(f"{target}: --set applies to a grid file, not a directory")
        return None
    return load_spec(target, overrides)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rayder-sweep", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser, target_help: str) -> None:
        p.add_argument("target", help=target_help)
        p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a grid key, e.g. --set base.steps=1000 --set grid.presets=[XS,S]")

    p_launch = sub.add_parser("launch", help="submit the grid's unfinished runs")
    common(p_launch, "grid YAML (e.g. sweeps/grid.yaml)")
    p_launch.add_argument("--executor", choices=EXECUTORS, default="auto",
                          help="auto: SLURM when sbatch is on PATH, else local")
    p_launch.add_argument("--dry-run", action="store_true", help="print the plan, submit nothing")
    p_launch.add_argument("--wait", action="store_true", help="SLURM: wait until every run ends (local always waits)")
    p_launch.add_argument("--timeout", type=float, default=None, help="seconds to --wait at most")
    p_launch.add_argument("--no-retry-failed", dest="retry_failed", action="store_false",
                          help="do not resubmit runs whose last attempt failed")
    p_launch.add_argument("--stale-after", type=float, default=STALE_AFTER_S, metavar="S",
                          help="a 'running' heartbeat older than S seconds means the job died (default 300)")
    p_launch.add_argument("--no-progress", dest="progress", action="store_false")
    p_launch.add_argument("--retry-failed-only", action="store_true",
                          help="submit only runs whose last attempt failed (failed, STALE, lost); leave the rest")
    p_launch.add_argument("--skip-preflight", action="store_true",
                          help="submit without checking data, benchmarks, directories, store and SLURM resources")
    p_launch.add_argument("--max-array-size", type=int, default=None, metavar="N",
                          help="split SLURM job arrays at N runs (default: the cluster's MaxArraySize)")
    p_launch.add_argument("--gpu-tflops", type=float, default=None, metavar="T",
                          help="peak TFLOP/s per GPU for the preflight's GPU-hour estimate (default 989, H100/H200 bf16)")
    p_launch.add_argument("--mfu", type=float, default=None,
                          help="assumed model-FLOP utilisation for the GPU-hour estimate (default 0.4)")

    p_status = sub.add_parser("status", help="table of the runs' state, step, compute, metrics, heartbeat")
    common(p_status, "grid YAML or a directory of run directories")
    p_status.add_argument("--stale-after", type=float, default=STALE_AFTER_S, metavar="S",
                          help="flag 'running' runs without a heartbeat for S seconds as STALE (default 300)")
    p_status.add_argument("--db", default=None, help="results store (default: the grid's db)")
    p_status.add_argument("--json", action="store_true", help="print JSON lines instead of a table")
    p_status.add_argument("--watch", type=float, nargs="?", const=10.0, default=None, metavar="S",
                          help="refresh the table in place every S seconds (default 10) until every run has ended "
                               "or Ctrl-C")
    p_status.add_argument("--watch-count", type=int, default=None, help=argparse.SUPPRESS)  # tests: stop after N

    p_cancel = sub.add_parser("cancel", help="stop the grid's queued/running jobs (running ones save first)")
    common(p_cancel, "grid YAML")

    p_collect = sub.add_parser("collect", help="write run directories into the results store (idempotent)")
    common(p_collect, "grid YAML or a directory of run directories")
    p_collect.add_argument("--db", default=None, help="results store (default: the grid's db, or results.duckdb)")

    args = parser.parse_args(argv)
    try:
        spec = _load(args.target, args.overrides)
        if args.command == "launch":
            if spec is None:
                raise ConfigError(f"{args.target}: launch needs a grid YAML file, got a directory")
            res = launch(spec, executor=args.executor, dry_run=args.dry_run, wait=args.wait or None,
                         timeout_s=args.timeout, retry_failed=args.retry_failed, stale_after_s=args.stale_after,
                         progress=args.progress, skip_preflight=args.skip_preflight,
                         retry_failed_only=args.retry_failed_only, max_array_size=args.max_array_size,
                         gpu_tflops=args.gpu_tflops, mfu=args.mfu)
            if res.outcomes:
                print(format_table(sweep_status(spec.runs(), stale_after_s=args.stale_after, db=spec.db_path),
                                   args.stale_after))
            return 1 if res.errors else 0
        if args.command == "status":
            def rows_now() -> list[RunStatus]:
                if spec is None:
                    return dir_status(args.target, stale_after_s=args.stale_after, db=args.db or "results.duckdb")
                return sweep_status(spec.runs(), stale_after_s=args.stale_after, db=args.db or spec.db_path)

            if args.watch is not None:
                return watch_status(rows_now, stale_after_s=args.stale_after, interval_s=args.watch,
                                    count=args.watch_count)
            rows = rows_now()
            if args.json:
                for r in rows:
                    print(json.dumps(r.__dict__))
            else:
                print(format_table(rows, args.stale_after))
            return 0
        if args.command == "cancel":
            if spec is None:
                raise ConfigError(f"{args.target}: cancel needs a grid YAML file")
            ids = cancel(spec)
            print(f"cancelled {len(ids)} job(s): {' '.join(ids)}" if ids else "no queued or running jobs")
            return 0
        if args.command == "collect":
            if spec is None:
                dirs, db = run_dirs_under(args.target), args.db or "results.duckdb"
            else:
                dirs, db = [c.run_dir for c in spec.runs()], args.db or spec.db_path
            ids = collect(dirs, db, progress=True)
            print(f"collected {len(ids)} run(s) into {db}")
            return 0
    except (ConfigError, LaunchError, PreflightError, FileNotFoundError) as exc:
        print(f"rayder-sweep {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
