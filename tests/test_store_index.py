"""The store as an index of run directories (`store_mode: index`): runs only append to their own files and one
`collect` ingests them, idempotently and incrementally, while readers query the store.

References: every record a writer appends is a closed-form function of (writer, step), so the reader and the final
counts are checked against numbers computed here, not against the store itself; the index-mode run is checked against
the same run trained in direct mode (CPU training is deterministic).
"""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import random
import shutil
import time
from pathlib import Path

import pytest
import yaml

N_WRITERS = 32
STEPS = 12
CKPT_EVERY = 3
METRICS = ("psnr", "mse")


def _value(worker: int, step: int, metric: str) -> float:
    """The closed-form metric a writer records: every row can be checked without trusting the store."""
    return worker + step / 100 if metric == "psnr" else 1.0 / (1 + worker + step)


def _fake_run(run_dir: str, worker: int) -> None:
    """One 'training run' writing its run directory the way `Trainer` does (same fileio helpers, same record
    shapes): state.json atomically at each log step, metrics.jsonl appended per step, checkpoints.jsonl and
    evals.jsonl every CKPT_EVERY steps. Never opens the store (and imports no torch: 32 of them start quickly)."""
    from rayder_core.fileio import append_jsonl, atomic_write_text

    rng = random.Random(worker)
    run = Path(run_dir)
    run.mkdir(parents=True, exist_ok=True)
    run_id = f"idx-w{worker:02d}"
    atomic_write_text(run / "config.yaml", yaml.safe_dump({"model": {"preset": "tiny-xs"}, "sweep": "idx",
                                                          "store_mode": "index"}))

    def state(status: str, step: int) -> None:
        atomic_write_text(run / "state.json", json.dumps({
            "run_id": run_id, "sweep": "idx", "preset": "tiny-xs", "fraction": 0.5, "D": 10 + worker,
            "params": 1000 + worker, "status": status, "step": step, "host": "h"}))

    state("running", 0)
    for step in range(1, STEPS + 1):
        time.sleep(rng.uniform(0.0, 0.03))
        append_jsonl(run / "metrics.jsonl", {"step": step, "loss": 1.0 / step, "psnr": 10.0, "lr": 1e-4,
                                             "grad_norm": 1.0, "focal_mean": 1.0, "skipped": 0,
                                             "flops": step * 1e9})
        state("running", step)
        if step % CKPT_EVERY == 0:
            append_jsonl(run / "checkpoints.jsonl", {"step": step, "samples": 4 * step, "flops": step * 1e9,
                                                     "wall_time_s": float(step)})
            append_jsonl(run / "evals.jsonl", {"step": step, "bench": "b", "n": 4, "missing": {},
                                               "values": {m: _value(worker, step, m) for m in METRICS}})
    state("finished", STEPS)


def _collector(out_dir: str, db: str, stop_file: str, report_file: str) -> None:
    """Collect the run directories in a loop until told to stop, then once more."""
    from rayder_core.store import ResultsStore, collect_runs

    store = ResultsStore(db)
    passes = []
    while not Path(stop_file).exists():
        dirs = sorted(p for p in Path(out_dir).iterdir() if p.is_dir())
        rep = collect_runs(dirs, store)
        passes.append([len(rep.ingested), len(rep.unchanged), len(rep.errors)])
    rep = collect_runs(sorted(p for p in Path(out_dir).iterdir() if p.is_dir()), store)
    passes.append([len(rep.ingested), len(rep.unchanged), len(rep.errors)])
    Path(report_file).write_text(json.dumps(passes))


@pytest.mark.slow
def test_32_writers_collector_and_concurrent_reader(tmp_path):
    """32 writer processes append to their run directories while a collector ingests them in a loop and this
    process reads the store: the reader never fails, never sees a row that differs from its closed form, never
    sees a count decrease; the final store has exactly the expected rows; collecting again changes nothing."""
    from rayder_core.store import ResultsStore, collect_runs

    out, db = tmp_path / "runs", tmp_path / "index.duckdb"
    out.mkdir()
    ctx = mp.get_context("spawn")
    writers = [ctx.Process(target=_fake_run, args=(str(out / f"w{w:02d}"), w)) for w in range(N_WRITERS)]
    stop, report = tmp_path / "stop", tmp_path / "report.json"
    collector = ctx.Process(target=_collector, args=(str(out), str(db), str(stop), str(report)))
    collector.start()
    for p in writers:
        p.start()
    store = ResultsStore(db)
    reads, last = 0, {"runs": 0, "checkpoints": 0, "evals": 0, "train_log": 0}
    deadline = time.monotonic() + 600
    try:
        while any(p.is_alive() for p in writers) or reads < 3:
            assert collector.is_alive(), f"the collector died (exit code {collector.exitcode})"
            assert time.monotonic() < deadline, f"no end after 600 s ({reads} reads)"
            if db.exists():
                counts = store.table_counts()
                for table, n in last.items():
                    assert counts[table] >= n, f"{table} shrank from {n} to {counts[table]}"
                last = {t: counts[t] for t in last}
                for metric in METRICS:
                    pts = store.eval_points("b", metric)
                    for row in pts.itertuples():
                        worker = int(row.run_id[-2:])
                        assert row.value == pytest.approx(_value(worker, int(row.step), metric), rel=1e-12)
                        assert row.compute_gflop == pytest.approx(row.step)
                reads += 1
            time.sleep(0.05)
    finally:
        for p in writers:
            p.join(300)
        stop.write_text("stop")
        collector.join(300)
    assert [p.exitcode for p in writers] == [0] * N_WRITERS and collector.exitcode == 0
    passes = json.loads(report.read_text())
    assert reads >= 3 and len(passes) >= 2
    assert all(errors == 0 for _, _, errors in passes)
    n_ckpt = STEPS // CKPT_EVERY
    expected = {"runs": N_WRITERS, "train_log": N_WRITERS * STEPS, "checkpoints": N_WRITERS * n_ckpt,
                "evals": N_WRITERS * n_ckpt * len(METRICS), "fits": 0}
    assert store.table_counts() == expected
    assert set(store.runs()["status"]) == {"finished"}
    # idempotent and incremental: nothing changed -> nothing re-read, same rows; forced -> re-read, same rows
    dirs = sorted(out.iterdir())
    again = collect_runs(dirs, store)
    assert again.ingested == [] and len(again.unchanged) == N_WRITERS
    forced = collect_runs(dirs, store, force=True)
    assert len(forced.ingested) == N_WRITERS and store.table_counts() == expected
    # one run appends a record -> exactly that run is re-ingested
    from rayder_core.fileio import append_jsonl

    append_jsonl(dirs[5] / "metrics.jsonl", {"step": STEPS + 1, "loss": 0.5, "psnr": 10.0, "lr": 1e-4,
                                             "grad_norm": 1.0, "skipped": 0, "flops": 0.0})
    third = collect_runs(dirs, store)
    assert third.ingested == ["idx-w05"] and len(third.unchanged) == N_WRITERS - 1
    assert store.table_counts()["train_log"] == expected["train_log"] + 1


def test_collect_reports_unreadable_and_unstarted_dirs(tmp_path):
    """A run directory with a corrupt state.json is reported (and the good ones still ingested); a directory
    without state.json (queued, not started) is listed as not started."""
    from rayder_core.store import ResultsStore, collect_runs

    good, bad, queued = tmp_path / "good", tmp_path / "bad", tmp_path / "queued"
    _fake_run(str(good), 1)
    _fake_run(str(bad), 2)
    (bad / "config.yaml").write_text("model: [unclosed\n")
    queued.mkdir()
    store = ResultsStore(tmp_path / "s.duckdb")
    rep = collect_runs([good, bad, queued], store)
    assert rep.ingested == ["idx-w01"] and rep.not_started == [queued]
    assert len(rep.errors) == 1 and rep.errors[0][0] == bad
    assert str(bad / "config.yaml") in rep.errors[0][1] and "invalid YAML" in rep.errors[0][1]
    assert store.table_counts()["runs"] == 1


# ------------------------------------------------------------------------------------------------ real runs
def _tiny(data, out_dir: Path, **over) -> dict:
    cfg = {
        "model": {"preset": "tiny-xs"},
        "data": {"manifest": str(data.manifest), "fraction": 1.0, "frames": 4, "resolution": 32},
        "optim": {"warmup_steps": 2, "lr": 3e-4},
        "eval": {"every": 3, "probe_iters": 20, "lpips": False,
                 "benchmarks": [{"name": "re10k-synth", "path": str(data.re10k), "kind": "re10k"},
                                {"name": "probe-synth", "path": str(data.probe), "kind": "probe"}]},
        "steps": 6, "batch_size": 2, "checkpoint_every": 3, "log_every": 1, "precision": "fp32",
        "sweep": "idx", "out_dir": str(out_dir),
    }
    cfg.update(over)
    return cfg


def _comparable(store, table: str):
    df = getattr(store, table)()
    drop = [c for c in ("wall_time_s",) if c in df.columns]
    return df.drop(columns=drop).reset_index(drop=True)


def test_index_mode_run_collected_equals_direct_mode_and_copy_is_collectable(synth_data, tmp_path):
    """A real run in index mode writes no store; `collect` gives the same rows as the same run in direct mode.
    The run directory copied to another place (original deleted) is collected from there and re-evaluated there:
    nothing inside it depends on where it was written."""
    import pandas as pd
    import torch

    from rayder_core.evaluation.cli import main as eval_main
    from rayder_core.fileio import read_jsonl
    from rayder_core.store import ResultsStore, collect_runs
    from rayder_core.training.trainer import run_training
    from rayder_core.train_config import load_train_config

    torch.set_num_threads(1)
    direct_db, index_db = tmp_path / "direct.duckdb", tmp_path / "index.duckdb"
    direct = run_training(load_train_config(_tiny(synth_data, tmp_path / "a")), db=str(direct_db), progress=False)
    idx_cfg = load_train_config(_tiny(synth_data, tmp_path / "b", store_mode="index"))
    indexed = run_training(idx_cfg, db=str(index_db), progress=False)
    assert direct.status == indexed.status == "finished" and direct.run_dir.name == indexed.run_dir.name
    assert not index_db.exists(), "index mode must not open the store"
    state = json.loads((indexed.run_dir / "state.json").read_text())
    assert state["store_mode"] == "index" and state["runtime"]["attention_backend"] == "sdpa"
    assert state["runtime"]["tf32"] is None  # CPU: TF32 does not exist

    store_d, store_i = ResultsStore(direct_db), ResultsStore(index_db)
    rep = collect_runs([indexed.run_dir], store_i)
    assert rep.ingested == [idx_cfg.run_id]
    for table in ("checkpoints", "evals", "train_log"):
        pd.testing.assert_frame_equal(_comparable(store_i, table), _comparable(store_d, table))
    assert len(store_i.evals()) > 0 and store_i.evals()["value"].notna().sum() > 0
    cfg_row = json.loads(store_i.runs()["config"].iloc[0])
    assert cfg_row["runtime"]["attention_backend"] == "sdpa" and cfg_row["store_mode"] == "index"

    # the copy: another parent, another directory name, original removed
    copy = tmp_path / "elsewhere" / "moved-run"
    shutil.copytree(indexed.run_dir, copy)
    shutil.rmtree(tmp_path / "b")
    for name in ("state.json", "metrics.jsonl", "checkpoints.jsonl", "evals.jsonl", "eval_scenes.jsonl"):
        assert str(tmp_path / "b") not in (copy / name).read_text(), f"{name} refers to the original place"
    copy_db = ResultsStore(tmp_path / "copy.duckdb")
    rep = collect_runs([copy], copy_db)
    assert rep.ingested == [idx_cfg.run_id]
    assert copy_db.runs()["run_dir"].iloc[0] == str(copy.absolute())
    for table in ("checkpoints", "evals", "train_log"):
        pd.testing.assert_frame_equal(_comparable(copy_db, table), _comparable(store_d, table))
    # collecting the copy into the store that already holds the original: same rows, run_dir now the copy
    again = collect_runs([copy], store_i)
    assert again.ingested == [idx_cfg.run_id] and store_i.table_counts() == copy_db.table_counts()
    # re-evaluating from the copy reproduces the recorded metrics (checkpoints are found relative to the copy)
    before = {(r["step"], r["bench"]): r["values"] for r in read_jsonl(copy / "evals.jsonl")}
    assert eval_main([str(copy), "--step", "6", "--db", ""]) == 0
    after = {(r["step"], r["bench"]): r["values"] for r in read_jsonl(copy / "evals.jsonl")}
    assert after == before and len(read_jsonl(copy / "eval_scenes.jsonl")) == 2 * 4  # 2 evaluations x 4 scenes
