"""Evaluation sharded over torch.distributed ranks (gloo on CPU) gives the same numbers as one process.

References: the single-process evaluation of the same weights on the same scenes (the pre-existing protocol), and
the closed form of the aggregation (mean per scene, then mean over scenes) recomputed from the per-scene rows.
"""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rayder_core.distributed import shard_range
from rayder_core.evaluation.suite import evaluate_model
from rayder_core.eval_config import BenchmarkSpec, EvalConfig

PROBE_ITERS = 30


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _model(state_path: str) -> torch.nn.Module:
    from rayder_core.models.rayder.model import RayDer
    from rayder_core.models.rayder.config import ModelConfig

    model = RayDer(ModelConfig.from_preset("tiny-xs"))
    model.load_state_dict(torch.load(state_path, weights_only=True))
    return model.eval()


def _eval_cfg(re10k: Path, probe: Path) -> EvalConfig:
    return EvalConfig(benchmarks=[BenchmarkSpec("re10k-synth", str(re10k), "re10k"),
                                  BenchmarkSpec("probe-synth", str(probe), "probe")],
                      probe_iters=PROBE_ITERS, lpips=True)


def _rank_main(rank: int, world: int, port: int, state_path: str, re10k: str, probe: str, out: str,
               fail_rank: int = -1) -> None:
    """One gloo rank: the toolkit's own process-group setup (init_distributed), then evaluate_model. On `fail_rank`
    the model's camera encoder raises for probe sequences (24 views) only: an error that one rank alone meets."""
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from rayder_core.distributed import init_distributed, leave_distributed

    r, w, device = init_distributed("cpu", timeout_min=2.0)
    assert (r, w) == (rank, world)
    model = _model(state_path)
    if rank == fail_rank:
        original = model.predict_cameras

        def failing(frames, *args, **kwargs):
            if frames.shape[1] > 5:
                raise ValueError(f"injected failure on rank {rank}")
            return original(frames, *args, **kwargs)

        model.predict_cameras = failing
    records = evaluate_model(model, _eval_cfg(Path(re10k), Path(probe)), resolution=32, device=device, seed=0)
    Path(out, f"rank{rank}.json").write_text(json.dumps(records))
    leave_distributed()


def _run_ranks(world: int, state_path: Path, re10k: Path, probe: Path, out: Path, timeout_s: float = 300,
               fail_rank: int = -1) -> list:
    ctx = mp.get_context("spawn")
    port = _free_port()
    procs = [ctx.Process(target=_rank_main, args=(r, world, port, str(state_path), str(re10k), str(probe),
                                                  str(out), fail_rank)) for r in range(world)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout_s)
    alive = [p for p in procs if p.is_alive()]
    for p in alive:
        p.kill()
    assert not alive, f"ranks still running after {timeout_s} s (a collective hangs?)"
    assert [p.exitcode for p in procs] == [0] * world
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(world)]


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    from rayder_core.models.rayder.model import RayDer
    from rayder_core.models.rayder.config import ModelConfig

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "tiny.pt"
    torch.save(RayDer(ModelConfig.from_preset("tiny-xs")).state_dict(), path)
    return path


def test_shard_range_partitions_exactly():
    for total in range(0, 12):
        for world in range(1, 6):
            parts = [shard_range(total, r, world) for r in range(world)]
            covered = [i for lo, hi in parts for i in range(lo, hi)]
            assert covered == list(range(total))
            sizes = [hi - lo for lo, hi in parts]
            assert max(sizes) - min(sizes) <= 1
    with pytest.raises(ValueError, match="rank 2"):
        shard_range(4, 2, 2)


@pytest.mark.parametrize("world", [2, 3])
def test_sharded_eval_matches_one_process(synth_data, weights, tmp_path, world):
    """2 and 3 gloo ranks (3 ranks on 4 scenes: uneven shards 1/1/2) reproduce the single-process metrics exactly,
    for NVS (per-scene rows gathered) and the probe (tokens sharded, MLP trained on rank 0)."""
    torch.set_num_threads(1)
    reference = evaluate_model(_model(str(weights)), _eval_cfg(synth_data.re10k, synth_data.probe), resolution=32,
                               device=torch.device("cpu"), seed=0, rank=0, world=1)
    per_rank = _run_ranks(world, weights, synth_data.re10k, synth_data.probe, tmp_path)
    nvs_ref, probe_ref = reference
    assert nvs_ref["n"] == 4 and not any("psnr" in k for k in nvs_ref["missing"])
    assert probe_ref["values"] and probe_ref["n"] >= 1
    for records in per_rank:  # every rank returns rank 0's numbers, bit for bit
        assert records == json.loads(json.dumps(reference))
    # closed form of the aggregation from the gathered per-scene rows: mean over scenes of the per-scene means
    scenes = nvs_ref["scenes"]
    assert [s["index"] for s in scenes] == list(range(4)) and len({s["scene"] for s in scenes}) == 4
    for metric, value in nvs_ref["values"].items():
        assert value == pytest.approx(sum(s[metric] for s in scenes) / len(scenes), rel=1e-12)


def test_failing_rank_does_not_hang(synth_data, weights, tmp_path):
    """Rank 1 alone fails while extracting probe tokens: both ranks record the probe as missing with rank 1's error
    (nobody is left waiting in a collective), and the NVS benchmark is still evaluated exactly."""
    from rayder_core.data.evalsets import Re10kBenchmark

    assert list(Re10kBenchmark(synth_data.re10k, resolution=32).scenes(1, 1)) == []  # an empty shard reads nothing
    torch.set_num_threads(1)
    cfg = _eval_cfg(synth_data.re10k, synth_data.probe)
    cfg.benchmarks = cfg.benchmarks[:1]
    reference = evaluate_model(_model(str(weights)), cfg, resolution=32, device=torch.device("cpu"), seed=0,
                               rank=0, world=1)[0]
    per_rank = _run_ranks(2, weights, synth_data.re10k, synth_data.probe, tmp_path, fail_rank=1)
    for records in per_rank:
        nvs, probe_rec = records
        assert nvs == json.loads(json.dumps(reference))
        assert probe_rec["values"] == {} and probe_rec["n"] == 0
        reason = probe_rec["missing"]["R@10"]
        assert "injected failure on rank 1" in reason and "(rank 1," in reason
    assert per_rank[0] == per_rank[1]


# ------------------------------------------------------------------------------------------------ torchrun, CLI
def _tiny_run(data, out_dir: Path, **over) -> dict:
    cfg = {
        "model": {"preset": "tiny-xs"},
        "data": {"manifest": str(data.manifest), "fraction": 1.0, "frames": 4, "resolution": 32},
        "optim": {"warmup_steps": 2, "lr": 3e-4},
        "eval": {"every": 3, "probe_iters": PROBE_ITERS, "lpips": False,
                 "benchmarks": [{"name": "re10k-synth", "path": str(data.re10k), "kind": "re10k"},
                                {"name": "probe-synth", "path": str(data.probe), "kind": "probe"}]},
        "steps": 6, "batch_size": 2, "checkpoint_every": 3, "log_every": 1, "precision": "fp32",
        "sweep": "dist", "out_dir": str(out_dir), "dist_timeout_min": 5,
    }
    for key, value in over.items():
        node = cfg
        *path, last = key.split(".")
        for p in path:
            node = node[p]
        node[last] = value
    return cfg


def _cli(args: list[str], nproc: int = 1, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run a module's CLI in 1 process, or under torchrun with `nproc` CPU processes (gloo), 1 thread each."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    if nproc == 1:
        cmd = [sys.executable, "-m", *args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n" \
                                 f"{proc.stderr[-5000:]}"
    return proc


def _evals(run_dir: Path) -> dict:
    from rayder_core.fileio import read_jsonl

    return {(r["step"], r["bench"]): (r["values"], r["n"]) for r in read_jsonl(run_dir / "evals.jsonl")}


@pytest.mark.slow
def test_inline_eval_under_ddp_matches_single_process_rayder_eval(synth_data, tmp_path):
    """A 2-rank gloo training run (torchrun) evaluates its checkpoints inline, sharded over both ranks; one process
    re-evaluating the same checkpoints with `rayder-eval --all` gets identical numbers."""
    from rayder_core.fileio import read_jsonl

    cfg_path = tmp_path / "run.yaml"
    cfg_path.write_text(json.dumps(_tiny_run(synth_data, tmp_path / "runs")))
    _cli(["rayder_core.training.cli", str(cfg_path), "--db", ""], nproc=2)
    (run_dir,) = list((tmp_path / "runs").iterdir())
    state = json.loads((run_dir / "state.json").read_text())
    assert state["status"] == "finished" and state["runtime"]["world_size"] == 2
    inline = _evals(run_dir)
    assert sorted(inline) == [(3, "probe-synth-per-scene"), (3, "re10k-synth"), (6, "probe-synth-per-scene"), (6, "re10k-synth")]
    scenes = read_jsonl(run_dir / "eval_scenes.jsonl")
    assert sorted((r["step"], r["index"]) for r in scenes) == [(s, i) for s in (3, 6) for i in range(4)]
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    _cli(["rayder_core.evaluation.cli", str(copy), "--all", "--db", ""])
    assert _evals(copy) == inline
    assert read_jsonl(copy / "eval_scenes.jsonl") == scenes


@pytest.mark.slow
def test_eval_job_mode_pending_sharded_under_torchrun(synth_data, tmp_path):
    """`eval.mode: job`: training saves the checkpoints the schedule asks for but evaluates nothing;
    `rayder-eval --pending` evaluates them (under torchrun: sharded, same numbers as one process) and a second
    `--pending` finds nothing to do."""
    from rayder_core.training.trainer import run_training
    from rayder_core.train_config import load_train_config

    torch.set_num_threads(1)
    cfg = load_train_config(_tiny_run(synth_data, tmp_path / "runs", **{"eval.mode": "job"}))
    out = run_training(cfg, db=None, progress=False)
    assert out.status == "finished" and not (out.run_dir / "evals.jsonl").exists()
    assert sorted(p.name for p in (out.run_dir / "checkpoints").glob("step_*.pt")) == \
        ["step_0000003.pt", "step_0000006.pt"]
    copy = tmp_path / "copy"
    shutil.copytree(out.run_dir, copy)
    _cli(["rayder_core.evaluation.cli", str(out.run_dir), "--pending", "--db", ""])
    _cli(["rayder_core.evaluation.cli", str(copy), "--pending", "--db", ""], nproc=2)
    one, two = _evals(out.run_dir), _evals(copy)
    assert sorted(one) == [(3, "probe-synth-per-scene"), (3, "re10k-synth"), (6, "probe-synth-per-scene"), (6, "re10k-synth")]
    assert one == two
    again = _cli(["rayder_core.evaluation.cli", str(copy), "--pending", "--db", ""])
    assert "no pending evaluation" in again.stdout and _evals(copy) == two


def _timeout_rank(rank: int, port: int, out: str) -> None:
    import time as _time

    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    import torch.distributed as dist

    from rayder_core.distributed import init_distributed

    init_distributed("cpu", timeout_min=0.1)  # 6 s
    if rank == 1:
        _time.sleep(40)  # never joins the collective
        return
    t0 = _time.monotonic()
    try:
        dist.all_reduce(torch.ones(1))
        result = {"raised": False}
    except Exception as exc:  # noqa: BLE001 - gloo raises RuntimeError/DistBackendError on timeout
        result = {"raised": True, "error": f"{type(exc).__name__}: {exc}"[:300]}
    result["waited_s"] = _time.monotonic() - t0
    Path(out).write_text(json.dumps(result))


def test_dist_timeout_min_bounds_a_collective_wait(tmp_path):
    """init_distributed applies `dist_timeout_min`: a collective that a peer never joins fails after about that
    long (0.1 min = 6 s here), not after torch's default of 30 minutes."""
    ctx = mp.get_context("spawn")
    out = tmp_path / "r0.json"
    port = _free_port()
    procs = [ctx.Process(target=_timeout_rank, args=(r, port, str(out))) for r in range(2)]
    for p in procs:
        p.start()
    procs[0].join(120)
    for p in procs:
        if p.is_alive():
            p.kill()
        p.join()
    result = json.loads(out.read_text())
    assert result["raised"], result
    assert 5.0 <= result["waited_s"] <= 35.0, result
