"""End to end on a real one-node SLURM cluster (tests/slurm/slurm-up.sh, no accounting): job arrays, two-task
torch.distributed setup, and a sweep trained through `rayder-sweep launch` whose runs are preempted (USR2) and
requeued (`scontrol requeue`: SIGTERM, then SIGKILL) mid-training and resume from their last checkpoint with
complete, non-duplicated records. A second launch submits nothing and adds no rows."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slurm


def _wait(predicate, timeout_s: float, what: str, poll_s: float = 0.5):
    """Poll `predicate` until it returns a truthy value (never a blocking submitit `result()`)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll_s)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def _two_task_allreduce() -> dict:
    """Runs in each of the job's two tasks: env from the SLURM job -> gloo process group -> all_reduce."""
    import torch
    import torch.distributed as dist

    from sweeps.job import setup_distributed

    env = setup_distributed()
    dist.init_process_group("gloo")
    x = torch.tensor([float(dist.get_rank() + 1)])
    dist.all_reduce(x)
    dist.destroy_process_group()
    return {**env, "sum": float(x.item())}


def test_two_task_job_gets_a_working_torch_distributed_env(slurm_cluster, tmp_path):
    import cloudpickle
    import submitit

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    executor = submitit.SlurmExecutor(folder=tmp_path / "%j")
    executor.update_parameters(ntasks_per_node=2, cpus_per_task=1, time=15, nodes=1)
    job = executor.submit(_two_task_allreduce)
    _wait(lambda: all(p.result_pickle.exists() for p in [job.paths] + [
        submitit.core.utils.JobPaths(job.paths.folder, job.job_id, task_id=t) for t in (1,)]), 120,
        "the two tasks' results")
    results = job.results()
    assert sorted(int(r["RANK"]) for r in results) == [0, 1]
    assert all(r["WORLD_SIZE"] == "2" and r["LOCAL_WORLD_SIZE"] == "2" and r["sum"] == 3.0 for r in results)
    assert len({(r["MASTER_ADDR"], r["MASTER_PORT"]) for r in results}) == 1


def _running_with_checkpoint(run_dir: Path, below_step: int) -> dict | None:
    from sweeps.state import read_state

    st = read_state(run_dir) or {}
    ok = st.get("status") == "running" and st.get("last_checkpoint") and st["step"] < below_step
    return st if ok else None


@pytest.mark.slow
def test_slurm_sweep_survives_preemption_and_requeue(slurm_cluster, synth_data, tiny_sweep):
    """Two runs in one job array: one preempted (USR2, submitit requeues it), one requeued by the admin
    (`scontrol requeue`: SIGTERM, then SIGKILL after KillWait); both resume from their checkpoint."""
    from rayder_core.store import ResultsStore
    from sweeps import launcher
    from test_sweep_local import _check_complete_records

    spec = tiny_sweep(synth_data, steps=40, eval={"every": 20, "from_step": 20},
                      slurm={"cpus_per_task": 1, "time_min": 30, "signal_delay_s": 60})
    preempted, requeued = spec.runs()
    res = launcher.launch(spec, executor="slurm", progress=False)
    job_a, job_b = res.job_ids[preempted.run_id], res.job_ids[requeued.run_id]
    assert job_a.split("_")[0] == job_b.split("_")[0], "one array for runs with the same resources"

    _wait(lambda: _running_with_checkpoint(preempted.run_dir, 30), 120, "run A to checkpoint", 0.05)
    subprocess.run(["scancel", "--signal=USR2", job_a], check=True)
    _wait(lambda: _running_with_checkpoint(requeued.run_dir, 30), 120, "run B to checkpoint", 0.05)
    subprocess.run(["scontrol", "requeue", job_b], check=True)

    logs = {cfg.run_id: Path(cfg.out_dir) / ".submitit" / res.job_ids[cfg.run_id] /
            f"{res.job_ids[cfg.run_id]}_0_log.err" for cfg in spec.runs()}
    rows = launcher.wait_for_runs(spec.runs(), timeout_s=240, poll_s=1, progress=False)
    assert [r.state for r in rows] == ["finished", "finished"], launcher.format_table(rows)
    for cfg in spec.runs():
        _check_complete_records(spec, cfg, restarted=True)
    assert "Caught signal SIGUSR2" in logs[preempted.run_id].read_text()      # submitit saw a preemption ...
    assert "DUE TO JOB REQUEUE" in logs[requeued.run_id].read_text()         # ... and SLURM a plain requeue
    store = ResultsStore(spec.db_path)
    counts = store.table_counts()
    again = launcher.launch(spec, executor="slurm", progress=False)
    assert again.submitted == [] and store.table_counts() == counts


@pytest.mark.slow
def test_slurm_shorter_run_waits_for_its_trunk(slurm_cluster, synth_data, tiny_sweep):
    """grid.steps [8, 12] on SLURM: the 8-step run is submitted with --dependency=afterany:<the 12-step run's job>
    and starts from that run's checkpoint at its decay start (step 5)."""
    from sweeps import launcher
    from sweeps.spec import spec_from_mapping

    one = tiny_sweep(synth_data, fractions=(1.0,), optim={"warmup_steps": 2, "decay_start": 8, "decay_halve_every": 1})
    spec = spec_from_mapping({"name": one.name, "out_dir": one.out_dir, "db": one.db, "base": one.base,
                              "grid": {"presets": ["tiny-xs"], "fractions": [1.0], "steps": [8, 12]},
                              "slurm": {"cpus_per_task": 1, "time_min": 30}}, source="test-grid")
    short, trunk = sorted(spec.runs(), key=lambda c: c.steps)
    res = launcher.launch(spec, executor="slurm", progress=False)
    script = Path(short.out_dir) / ".submitit" / res.job_ids[short.run_id] / f"{res.job_ids[short.run_id]}_submission.sh"
    assert f"#SBATCH --dependency=afterany:{res.job_ids[trunk.run_id]}" in script.read_text()
    rows = launcher.wait_for_runs(spec.runs(), timeout_s=240, poll_s=1, progress=False)
    assert [r.state for r in rows] == ["finished", "finished"], launcher.format_table(rows)
    assert json.loads((short.run_dir / "trunk.json").read_text()) == {"trunk_run": trunk.run_id, "step": 5}


@pytest.mark.slow
def test_slurm_shorter_run_trains_from_step_0_when_its_trunk_is_cancelled(slurm_cluster, synth_data, tiny_sweep):
    """The trunk's job is cancelled before it ever runs (the partition is held down meanwhile, so the order is
    certain): the 8-step run, submitted with afterany on it, still runs, finds no fork checkpoint and trains its 8
    steps from step 0 (the same run at full cost): no trunk.json, every logged step from the first, a log line
    saying so."""
    from rayder_core.store import ResultsStore
    from sweeps import launcher
    from sweeps.spec import spec_from_mapping

    one = tiny_sweep(synth_data, fractions=(1.0,), optim={"warmup_steps": 2, "decay_start": 8, "decay_halve_every": 1})
    spec = spec_from_mapping({"name": one.name, "out_dir": one.out_dir, "db": one.db, "base": one.base,
                              "grid": {"presets": ["tiny-xs"], "fractions": [1.0], "steps": [8, 12]},
                              "slurm": {"cpus_per_task": 1, "time_min": 30}}, source="test-grid")
    short, trunk = sorted(spec.runs(), key=lambda c: c.steps)
    partition = ["scontrol", "update", "PartitionName=debug"]
    subprocess.run([*partition, "State=DOWN"], check=True)
    try:
        res = launcher.launch(spec, executor="slurm", progress=False)
        subprocess.run(["scancel", res.job_ids[trunk.run_id]], check=True)
    finally:
        subprocess.run([*partition, "State=UP"], check=True)
    rows = launcher.wait_for_runs([short], timeout_s=240, poll_s=1, progress=False)
    assert [r.state for r in rows] == ["finished"], launcher.format_table(rows)
    assert not (short.run_dir / "trunk.json").exists() and not trunk.run_dir.joinpath("checkpoints").exists()
    steps = list(ResultsStore(spec.db_path).train_log(short.run_id)["step"])
    assert steps[0] <= short.log_every and steps[-1] == 8, steps
    job = res.job_ids[short.run_id]
    err = (Path(short.out_dir) / ".submitit" / job / f"{job}_0_log.err").read_text()
    assert "is not there (yet): training from step 0" in err
