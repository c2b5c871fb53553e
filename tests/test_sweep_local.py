"""The launcher without SLURM: run state and `status` (STALE detection), launch planning, the local executor
training a tiny grid end to end (idempotent relaunch, resume after a hard kill), and `collect`."""
from __future__ import annotations

import json
import os
import signal
import threading
import time

import pytest
import yaml

from sweeps import launcher
from sweeps.state import (STALE_AFTER_S, classify, exception_line, format_table, read_launch, read_state, run_status,
                          startup_error, write_json_atomic)


def _state(run_id: str, status: str, step: int, heartbeat: float, **extra) -> dict:
    """A state.json as the training loop writes it (the contract in rayder_core/training/trainer.py)."""
    return {"run_id": run_id, "sweep": "t", "preset": "tiny-xs", "fraction": 0.1, "status": status, "step": step,
            "steps": 100, "samples": 4 * step, "flops": 1e9 * step, "compute_gflop": 1.0 * step,
            "last_checkpoint": step - step % 10 or None, "heartbeat": heartbeat, "started": heartbeat - 60,
            "elapsed_s": 55.0, "host": "h", "pid": 1, "slurm_job_id": None, "restarts": 0,
            "latest": {"loss": 0.25, "psnr": 12.5, "lr": 1e-4}, "error": None, **extra}


# ------------------------------------------------------------------------------------------------ state / status
def test_classify_states():
    now = 1000.0
    assert classify(None, None, None, True, now) == "not-submitted"
    assert classify(None, {"executor": "slurm"}, "PENDING", True, now) == "queued"
    assert classify(None, {"executor": "slurm"}, "RUNNING", True, now) == "starting"
    assert classify(None, {"executor": "slurm"}, None, True, now) == "lost"
    assert classify(None, {"executor": "slurm"}, None, False, now) == "submitted"  # no squeue: cannot tell
    fresh, old = _state("a", "running", 5, now - 10), _state("a", "running", 5, now - STALE_AFTER_S - 1)
    assert classify(fresh, None, None, False, now) == "running"
    assert classify(old, None, None, False, now) == "STALE"
    assert classify(old, None, None, False, now, stale_after_s=3600) == "running"
    assert classify(_state("a", "preempted", 5, now), {"executor": "slurm"}, "PENDING", True, now) == "requeued"
    assert classify(_state("a", "preempted", 5, now), {"executor": "slurm"}, None, True, now) == "preempted"
    # 'running' with a fresh heartbeat, but its job has ended (kill -9): dead now, not in 300 s
    assert classify(fresh, {"executor": "slurm"}, None, True, now) == "STALE"
    assert classify(fresh, {"executor": "slurm"}, "RUNNING", True, now) == "running"
    # the job ended before the trainer wrote state.json, with an error: failed, not lost
    assert classify(None, {"executor": "slurm"}, None, True, now, error="FileNotFoundError: x") == "failed"


SUBMITIT_ERROR = """Job (task=0) failed during processing with trace:
----------------------
Traceback (most recent call last):
  File "/x/submitit/core/submission.py", line 55, in process_job
    result = delayed.result()
  File "/x/rayder_core/data/loader.py", line 12, in shards
    raise FileNotFoundError(f"shard not found: {path}")
FileNotFoundError: shard not found: /data/shards/shard-000007.tar

----------------------
You can check full logs with 'job.stderr(0)' and 'job.stdout(0)'or at paths:
  - /runs/.submitit/123/123_0_log.err
  - /runs/.submitit/123/123_0_log.out
"""


def test_a_start_up_failure_shows_its_exception_and_is_failed_for_status_and_retry(tiny_sweep):
    """Issue 26 item 9: the exception line (not the log path) of a job that failed before state.json; `status`
    says failed and `launch --retry-failed-only` resubmits it; a killed 'running' run is STALE for both at once."""
    import pickle

    assert exception_line(SUBMITIT_ERROR) == "FileNotFoundError: shard not found: /data/shards/shard-000007.tar"
    assert exception_line("plain message\nlast line") == "last line"
    cfg = tiny_sweep(fractions=(1.0,)).runs()[0]
    folder = cfg.run_dir.parent / ".submitit" / "123"
    folder.mkdir(parents=True)
    write_json_atomic(cfg.run_dir / "launch.json", {"executor": "slurm", "job_id": "123",
                                                      "submitit_folder": str(folder)})
    assert startup_error(read_launch(cfg.run_dir)) is None
    with open(folder / "123_0_result.pkl", "wb") as fh:
        pickle.dump(("error", SUBMITIT_ERROR), fh)
    row = run_status(cfg.run_dir, queue={})
    assert row.state == "failed" and row.error.startswith("FileNotFoundError: shard not found")
    assert "failed " + row.run_id + ": FileNotFoundError" in format_table([row])
    plan = launcher.plan_launch([cfg], queue={}, only_failed=True)[0]
    assert plan.action == "submit" and "FileNotFoundError" in plan.reason
    now = time.time()
    write_json_atomic(cfg.run_dir / "state.json", _state(cfg.run_id, "running", 5, now - 10))
    assert run_status(cfg.run_dir, queue={}, now=now).state == "STALE"
    assert launcher.plan_launch([cfg], queue={}, now=now, only_failed=True)[0].action == "submit"
    assert run_status(cfg.run_dir, queue={"123": "RUNNING"}, now=now).state == "running"
    assert launcher.plan_launch([cfg], queue={"123": "RUNNING"}, now=now, only_failed=True)[0].action == "skip"
    assert classify(_state("a", "finished", 100, 0.0), None, None, True, now) == "finished"


def test_status_table_and_cli(tmp_path, tiny_sweep, capsys):
    spec = tiny_sweep()
    a, b = spec.runs()
    now = time.time()
    write_json_atomic(a.run_dir / "state.json", _state(a.run_id, "running", 40, now - 3600))
    write_json_atomic(b.run_dir / "state.json", _state(b.run_id, "failed", 7, now - 5, error="ValueError: boom"))
    rows = launcher.sweep_status(spec.runs())
    assert [(r.run_id, r.state, r.step, r.compute_gflop) for r in rows] == [(a.run_id, "STALE", 40, 40.0),
                                                                           (b.run_id, "failed", 7, 7.0)]
    assert rows[0].heartbeat_age_s == pytest.approx(3600, abs=5) and rows[0].elapsed_s == 55.0
    table = format_table(rows)
    for text in ("STALE", "40/100", "0.2500", "12.50", "55s", "1h00m ago", "failed", "ValueError: boom"):
        assert text in table, text
    grid = tmp_path / "g.yaml"
    grid.write_text(yaml.safe_dump({"name": "t", "out_dir": str(tmp_path / "runs"), "grid": {
        "presets": ["tiny-xs"], "fractions": [0.1, 1.0]}, "base": {k: v for k, v in {
            "steps": 12, "batch_size": 2, "precision": "fp32", "device": "cpu", "checkpoint_every": 4, "log_every": 2,
            "optim": {"warmup_steps": 2}, "data": {"frames": 4, "resolution": 32, "manifest": "none.json"},
            "eval": {"every": 4, "from_step": 4, "probe_iters": 5, "lpips": False,
                     "benchmarks": [{"name": "re10k-synth", "path": "x", "kind": "re10k"},
                                    {"name": "probe-synth", "path": "y", "kind": "probe"}]}}.items()}}))
    # the same grid file -> the same run ids -> the same rows; a threshold of 2 h un-flags the run
    assert launcher.main(["status", str(grid), "--stale-after", "7200"]) == 0
    out = capsys.readouterr().out
    assert a.run_id in out and "STALE" not in out and "running" in out
    assert launcher.main(["status", str(tmp_path / "runs"), "--json"]) == 0
    states = {json.loads(line)["run_id"]: json.loads(line)["state"] for line in capsys.readouterr().out.splitlines()}
    assert states == {a.run_id: "STALE", b.run_id: "failed"}


def test_plan_launch_decisions(tiny_sweep):
    spec = tiny_sweep(fractions=(0.01, 0.1, 0.5, 1.0))
    finished, fresh, stale, failed = spec.runs()
    now = time.time()
    write_json_atomic(finished.run_dir / "state.json", _state(finished.run_id, "finished", 100, now - 9e5))
    write_json_atomic(fresh.run_dir / "state.json", _state(fresh.run_id, "running", 30, now - 2))
    write_json_atomic(stale.run_dir / "state.json", _state(stale.run_id, "running", 30, now - 900))
    write_json_atomic(failed.run_dir / "state.json", _state(failed.run_id, "failed", 20, now - 900))
    plans = launcher.plan_launch(spec.runs(), queue=None)
    assert [(p.action, p.reason) for p in plans] == [
        ("skip", "finished"), ("skip", "running (fresh heartbeat)"),
        ("submit", "resume from step 30 (stale heartbeat)"), ("submit", "resume from step 20 (failed)")]
    plans = launcher.plan_launch(spec.runs(), queue=None, retry_failed=False)
    assert plans[3].action == "skip"
    # a SLURM job still in the queue is left alone even with a stale heartbeat (it may be pending a requeue)
    write_json_atomic(stale.run_dir / "launch.json", {"executor": "slurm", "job_id": "17_2"})
    plans = launcher.plan_launch(spec.runs(), queue={"17_2": "PENDING"})
    assert (plans[2].action, plans[2].reason) == ("skip", "pending as job 17_2")
    plans = launcher.plan_launch(spec.runs(), queue={})
    assert plans[2].action == "submit"


def test_executor_auto_follows_sbatch_on_path(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert launcher.resolve_executor("auto") == "local"
    with pytest.raises(launcher.LaunchError, match="sbatch"):
        launcher.resolve_executor("slurm")
    fake = tmp_path / "sbatch"
    fake.write_text("#!/bin/sh\nexit 1\n")
    fake.chmod(0o755)
    assert launcher.resolve_executor("auto") == "slurm"


# ------------------------------------------------------------------------------------------------ real training
def _check_complete_records(spec, cfg, restarted: bool) -> None:
    """The run finished and its records are complete and not duplicated, in the run dir and in the store."""
    from rayder_core.store import ResultsStore

    state = read_state(cfg.run_dir)
    assert state["status"] == "finished" and state["step"] == cfg.steps, state
    assert (state["restarts"] >= 1) == restarted, state
    ckpt_steps = list(range(cfg.checkpoint_every, cfg.steps + 1, cfg.checkpoint_every))
    eval_steps = [s for s in range(1, cfg.steps + 1) if s >= cfg.eval.from_step and s % cfg.eval.every == 0]
    log_steps = list(range(cfg.log_every, cfg.steps + 1, cfg.log_every))
    lines = [json.loads(x) for x in (cfg.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == log_steps  # a resumed run drops the log lines after its checkpoint
    store = ResultsStore(spec.db_path)
    ck = store.checkpoints(cfg.run_id)
    steps = ck["step"].tolist()
    # every scheduled checkpoint once; a stopped run also saved where it stopped (at most one per restart)
    assert steps == sorted(set(steps)) and set(ckpt_steps) <= set(steps), steps
    assert len(set(steps) - set(ckpt_steps)) <= state["restarts"], steps
    # compute is linear in steps (same FLOPs per step before and after the restart)
    per_step = ck["compute_gflop"] / ck["step"]
    assert per_step.max() == pytest.approx(per_step.min(), rel=1e-12) and per_step.min() > 0
    ev = store.evals(cfg.run_id)
    assert sorted(set(ev["step"])) == eval_steps and set(ev["bench"]) == {"re10k-synth", "probe-synth-per-scene"}
    assert len(ev) == len(ev.drop_duplicates(["step", "bench", "metric"]))
    assert store.train_log(cfg.run_id)["step"].tolist() == log_steps
    runs = store.runs()
    assert runs.loc[runs["run_id"] == cfg.run_id, "status"].tolist() == ["finished"]


@pytest.mark.slow
def test_local_sweep_trains_and_relaunch_is_idempotent(tmp_path, tiny_sweep, synth_data):
    from rayder_core.store import ResultsStore

    spec = tiny_sweep(synth_data)
    t0 = time.monotonic()
    res = launcher.launch(spec, executor="local", progress=False)
    took = time.monotonic() - t0
    ids = [c.run_id for c in spec.runs()]
    assert res.executor == "local" and res.submitted == ids and res.errors == {}
    assert res.outcomes == {i: "finished" for i in ids}
    for cfg in spec.runs():
        _check_complete_records(spec, cfg, restarted=False)
    store = ResultsStore(spec.db_path)
    counts = store.table_counts()
    assert counts["runs"] == 2 and counts["checkpoints"] == 6
    again = launcher.launch(spec, executor="local", progress=False)
    assert again.submitted == [] and [p.reason for p in again.planned] == ["finished", "finished"]
    assert store.table_counts() == counts
    # collect into a second store from the run directories alone gives the same records
    other = tmp_path / "other.duckdb"
    assert launcher.main(["collect", str(tmp_path / "runs"), "--db", str(other)]) == 0
    assert ResultsStore(other).table_counts() == counts
    launcher.main(["collect", str(tmp_path / "runs"), "--db", str(other)])
    assert ResultsStore(other).table_counts() == counts
    rows = launcher.sweep_status(spec.runs(), db=spec.db_path)
    assert [(r.state, r.step, r.evaluated_checkpoints) for r in rows] == [("finished", 12, 3)] * 2
    print(f"local sweep of 2 runs x 12 steps: {took:.1f} s")


@pytest.mark.slow
def test_hard_killed_run_is_stale_and_resumes_from_its_checkpoint(tiny_sweep, synth_data):
    spec = tiny_sweep(synth_data, fractions=(1.0,), steps=40, eval={"every": 20, "from_step": 20})
    (cfg,) = spec.runs()
    out: dict = {}
    thread = threading.Thread(target=lambda: out.update(r=launcher.launch(spec, executor="local", progress=False,
                                                                          poll_s=0.2)))
    thread.start()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        st = read_state(cfg.run_dir) or {}
        if st.get("last_checkpoint") and st.get("status") == "running" and st["step"] < cfg.steps - 8:
            os.kill(int(st["pid"]), signal.SIGKILL)  # no chance to save: like an OOM kill or a lost node
            break
        time.sleep(0.02)
    else:
        pytest.fail(f"never saw a running run with a checkpoint: {read_state(cfg.run_dir)}")
    thread.join(60)
    assert out["r"].outcomes == {cfg.run_id: "died"}
    killed_at = read_state(cfg.run_dir)
    assert killed_at["status"] == "running"  # the heartbeat just stops
    time.sleep(1.0)
    (row,) = launcher.sweep_status([cfg], stale_after_s=0.5)
    assert row.state == "STALE" and "STALE" in format_table([row], 0.5)
    res = launcher.launch(spec, executor="local", progress=False, stale_after_s=0.5)
    assert [p.reason for p in res.planned] == [f"resume from step {killed_at['step']} (stale heartbeat)"]
    assert res.outcomes == {cfg.run_id: "finished"}
    _check_complete_records(spec, cfg, restarted=True)


@pytest.mark.slow
def test_local_executor_starts_a_shorter_run_from_its_trunk(tiny_sweep, synth_data):
    """grid.steps [8, 12] on 2 slots: the 8-step run waits for the 12-step run (its trunk) instead of taking the free
    slot, then starts from the trunk's checkpoint at its decay start (step 5): it trains 3 steps, not 8."""
    from sweeps.spec import spec_from_mapping

    one = tiny_sweep(synth_data, fractions=(1.0,), optim={"warmup_steps": 2, "decay_start": 8, "decay_halve_every": 1})
    data = {"name": one.name, "out_dir": one.out_dir, "db": one.db, "base": one.base,
            "grid": {"presets": ["tiny-xs"], "fractions": [1.0], "steps": [8, 12]}, "local": {"parallel": 2}}
    spec = spec_from_mapping(data, source="test-grid")
    short, trunk = sorted(spec.runs(), key=lambda c: c.steps)
    assert short.start_from and trunk.checkpoint_steps == [5]
    res = launcher.launch(spec, executor="local", progress=False, poll_s=0.2)
    assert res.outcomes == {short.run_id: "finished", trunk.run_id: "finished"}
    assert json.loads((short.run_dir / "trunk.json").read_text()) == {"trunk_run": trunk.run_id, "step": 5}
    assert [r["step"] for r in map(json.loads, (short.run_dir / "metrics.jsonl").read_text().splitlines())] == [6, 8]


def test_a_free_slot_skips_a_run_that_would_compile_the_graph_another_run_is_compiling():
    """The demo grid: its 4000-step runs compile their loss (one graph per width), the forks train eagerly. While
    the first w64 run compiles cold, the next slot takes a w48 run (not a second cold w64 compile); once w64's
    kernels exist (or with nothing compiling) the order is the grid's longest-first order."""
    from sweeps.demo import demo_spec
    from rayder_core.training.trunk import start_step

    cfgs = launcher._longest_first(demo_spec().runs())
    groups = {c.run_id: launcher.compile_group(c, start_step(c)) for c in cfgs}
    trunks = [c for c in cfgs if c.steps == 4000]
    forks = [c for c in cfgs if c.steps < 4000]
    assert all(groups[c.run_id] is None for c in forks)  # 250 / 400 steps left < compile_min_steps 1000
    by_width = {}
    for c in trunks:
        by_width.setdefault(groups[c.run_id], set()).add(c.model["preset"])
    assert sorted(len(v) for v in by_width.values()) == [1, 1, 1] and len(by_width) == 3  # one graph per width

    first, ready = cfgs[0], cfgs[1:]
    assert first.model["preset"] == "tiny-w64" and ready[0].model["preset"] == "tiny-w64"
    picked = launcher.choose_next(ready, groups, compiling={groups[first.run_id]})
    assert picked.model["preset"] == "tiny-w48" and picked.steps == 4000
    assert launcher.choose_next(ready, groups, compiling=set()) is ready[0]
    # every ready run compiles that graph: the first one starts anyway (waiting would take as long as compiling)
    w64 = [c for c in ready if c.model["preset"] == "tiny-w64" and c.steps == 4000]
    assert launcher.choose_next(w64, groups, compiling={groups[first.run_id]}) is w64[0]
    assert launcher.choose_next([], groups, compiling=set()) is None
    # a process with fewer steps left than compile_min_steps (a resumed run near its end) trains eagerly
    assert launcher.compile_group(first, from_step=first.steps - 999) is None
