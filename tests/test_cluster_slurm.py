"""Issue 14 items 1 and 3 on the suite's real one-node SLURM cluster: a two-task (gloo) training job of a grid with
`store_mode: index` evaluates its checkpoints sharded over both tasks, writes nothing to the store, and
`rayder-sweep collect` ingests it; one process re-evaluating the same checkpoints gets identical numbers."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


def test_two_task_index_mode_run_sharded_eval_then_collect(slurm_cluster, synth_data, tiny_sweep, tmp_path):
    from rayder_core.fileio import read_jsonl
    from rayder_core.store import ResultsStore
    from sweeps import launcher

    spec = tiny_sweep(synth_data, fractions=(1.0,), store_mode="index", dist_timeout_min=5,
                      slurm={"tasks_per_node": 2, "cpus_per_task": 1, "time_min": 30})
    (cfg,) = spec.runs()
    res = launcher.launch(spec, executor="slurm", progress=False)
    assert res.submitted == [cfg.run_id]
    rows = launcher.wait_for_runs(spec.runs(), timeout_s=480, poll_s=1, progress=False)
    assert [r.state for r in rows] == ["finished"], launcher.format_table(rows)
    state = json.loads((cfg.run_dir / "state.json").read_text())
    assert state["runtime"]["world_size"] == 2 and state["store_mode"] == "index"

    store = ResultsStore(spec.db_path)
    assert not spec.db_path.exists() or store.table_counts()["runs"] == 0, "index mode wrote the store"
    ids = launcher.collect([cfg.run_dir], spec.db_path)
    assert ids == [cfg.run_id]
    counts = store.table_counts()
    assert counts["runs"] == 1 and counts["checkpoints"] == 3  # steps 4, 8, 12
    assert sorted(set(store.evals()["step"])) == [4, 8, 12]
    assert launcher.collect([cfg.run_dir], spec.db_path) == [cfg.run_id] and store.table_counts() == counts

    # the sharded (2-task) inline evaluation equals one process re-evaluating the same checkpoints
    inline = {(r["step"], r["bench"]): r["values"] for r in read_jsonl(cfg.run_dir / "evals.jsonl")}
    assert len(inline) == 6
    scenes = read_jsonl(cfg.run_dir / "eval_scenes.jsonl")
    assert sorted({r["index"] for r in scenes}) == [0, 1, 2, 3]
    copy = tmp_path / "copy"
    shutil.copytree(cfg.run_dir, copy)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "rayder_core.evaluation.cli", str(copy), "--all", "--db", ""],
                          capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    again = {(r["step"], r["bench"]): r["values"] for r in read_jsonl(copy / "evals.jsonl")}
    assert again == inline
