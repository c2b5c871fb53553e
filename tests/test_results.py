"""The DuckDB results store: schema, idempotent writes, 16 concurrent writer processes, crash safety."""
from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time

import duckdb
import pytest

from rayder_core.store import SCHEMA_VERSION, ResultsStore, StoreError


def _run(store: ResultsStore, run_id: str, fraction: float = 0.1) -> None:
    store.upsert_run(run_id, sweep="s", preset="tiny-xs", params=1000, fraction=fraction, D=20,
                     config={"a": 1}, status="running", host="h", run_dir="/tmp/x")


def test_roundtrip_and_idempotent(tmp_path):
    store = ResultsStore(tmp_path / "r.duckdb")
    _run(store, "run-a")
    for _ in range(2):  # writing the same records twice must not duplicate rows
        store.add_checkpoint("run-a", step=100, samples=400, flops=2.5e12, wall_time_s=3.0)
        store.add_evals("run-a", 100, bench="re10k-synth", values={"psnr": 20.0, "mse": 0.04}, n=8,
                        missing={"lpips": "no VGG16 weights"})
        store.add_train_log("run-a", [{"step": 1, "loss": 0.5, "psnr": 12.0, "lr": 1e-4, "grad_norm": 1.0,
                                       "skipped": 0, "focal_mean": 1.0, "flops": 1e10}])
    _run(store, "run-a")
    assert store.table_counts() == {"runs": 1, "checkpoints": 1, "evals": 3, "train_log": 1, "fits": 0}
    pts = store.eval_points("re10k-synth", "psnr")
    assert len(pts) == 1 and pts["compute_gflop"].iloc[0] == pytest.approx(2500.0)
    assert pts["value"].iloc[0] == 20.0 and pts["D"].iloc[0] == 20
    assert store.eval_points("re10k-synth", "lpips").empty
    miss = store.missing_evals(metric="lpips")
    assert list(miss["missing_reason"]) == ["no VGG16 weights"]
    store.set_run_status("run-a", "finished")
    assert store.runs()["status"].tolist() == ["finished"]
    with pytest.raises(ValueError, match="status"):
        store.set_run_status("run-a", "done")


def test_nonfinite_metric_is_recorded_missing(tmp_path):
    store = ResultsStore(tmp_path / "r.duckdb")
    _run(store, "r")
    store.add_checkpoint("r", step=1, samples=1, flops=1.0, wall_time_s=0.0)
    store.add_evals("r", 1, bench="b", values={"psnr": float("nan")}, n=1)
    assert store.eval_points("b", "psnr").empty
    assert "non-finite" in store.missing_evals("b", "psnr")["missing_reason"].iloc[0]


def test_fit_rows_replace(tmp_path):
    store = ResultsStore(tmp_path / "r.duckdb")
    rec = dict(sweep="s", law="kaplan", metric="mse", bench="b", x_cols=["C", "D"], y_col="y",
               params={"alpha": 0.4}, r2=0.99, n_points=10, objective=1e-3, data_hash="abc", formula="L = ...")
    store.write_fit(rec)
    store.write_fit({**rec, "r2": 0.995})
    fits = store.fits()
    assert len(fits) == 1 and fits["r2"].iloc[0] == pytest.approx(0.995)


def _writer(path: str, worker: int, n: int) -> None:
    store = ResultsStore(path)
    rid = f"run-{worker}"
    _run(store, rid)
    for step in range(n):
        store.add_checkpoint(rid, step=step, samples=step * 4, flops=step * 1e9, wall_time_s=step)
        store.add_evals(rid, step, bench="b", values={"psnr": 10.0 + step, "mse": 0.1}, n=4)


def test_sixteen_concurrent_writers(tmp_path):
    path = str(tmp_path / "r.duckdb")
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(path, w, 6)) for w in range(16)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    counts = ResultsStore(path).table_counts()
    assert counts["runs"] == 16 and counts["checkpoints"] == 16 * 6 and counts["evals"] == 16 * 6 * 2


def _endless_writer(path: str) -> None:
    store = ResultsStore(path)
    _run(store, "crash")
    step = 0
    while True:
        store.add_checkpoint("crash", step=step, samples=step, flops=float(step), wall_time_s=0.0)
        step += 1


def test_killed_writer_leaves_store_readable(tmp_path):
    path = str(tmp_path / "r.duckdb")
    ctx = mp.get_context("spawn")
    p = ctx.Process(target=_endless_writer, args=(path,))
    p.start()
    deadline = time.time() + 60
    while time.time() < deadline:
        time.sleep(0.5)
        if os.path.exists(path) and ResultsStore(path).table_counts()["checkpoints"] > 5:
            break
    os.kill(p.pid, signal.SIGKILL)
    p.join()
    store = ResultsStore(path)
    n = store.table_counts()["checkpoints"]
    assert n > 5
    steps = store.checkpoints("crash")["step"].tolist()
    assert steps == list(range(len(steps)))  # committed prefix, no torn rows
    _run(store, "after")  # and it is writable again


def test_newer_schema_fails_clearly(tmp_path):
    path = tmp_path / "r.duckdb"
    ResultsStore(path).initialise()
    con = duckdb.connect(str(path))
    con.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", [str(SCHEMA_VERSION + 1)])
    con.close()
    with pytest.raises(StoreError, match="newer"):
        ResultsStore(path).runs()


def test_foreign_duckdb_file_rejected(tmp_path):
    path = tmp_path / "other.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE t (x INTEGER)")
    con.close()
    with pytest.raises(StoreError, match="not a rayder results store"):
        ResultsStore(path).runs()


def test_batch_is_one_transaction(tmp_path):
    store = ResultsStore(tmp_path / "r.duckdb")
    with store.batch():
        _run(store, "b")
        for step in range(50):
            store.add_checkpoint("b", step=step, samples=step, flops=1.0, wall_time_s=0.0)
    assert store.table_counts()["checkpoints"] == 50
    with pytest.raises(RuntimeError):
        with store.batch():
            store.add_checkpoint("b", step=999, samples=1, flops=1.0, wall_time_s=0.0)
            raise RuntimeError("boom")
    assert store.table_counts()["checkpoints"] == 50  # rolled back as a whole
