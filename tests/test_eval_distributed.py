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

from rayder_core.evaluate import evaluate_model, shard_range
from rayder_core.train_config import BenchmarkSpec, EvalConfig

PROBE_ITERS = 30


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _model(state_path: str) -> torch.nn.Module:
    from rayder_core.model import RayDer
    from rayder_core.model_config import ModelConfig

    model = RayDer(ModelConfig.from_preset("tiny-xs"))
    model.load_state_dict(torch.load(state_path, weights_only=True))
    return model.eval()


def _eval_cfg(re10k: Path, probe: Path) -> EvalConfig:
    return EvalConfig(benchmarks=[BenchmarkSpec("re10k-synth", str(re10k), "re10k"),
                                  BenchmarkSpec("probe-synth", str(probe), "probe")],
                      probe_iters=PROBE_ITERS, lpips=True)


def _rank_main(rank: int, world: int, port: int, state_path: str, re10k: str, probe: str, out: str) -> None:
    """One gloo rank: the toolkit's own process-group setup (init_distributed), then evaluate_model."""
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    import torch.distributed as dist

    from rayder_core.train import init_distributed

    r, w, device = init_distributed("cpu", timeout_min=2.0)
    assert (r, w) == (rank, world)
    records = evaluate_model(_model(state_path), _eval_cfg(Path(re10k), Path(probe)), resolution=32,
                             device=device, seed=0)
    Path(out, f"rank{rank}.json").write_text(json.dumps(records))
    dist.destroy_process_group()


def _run_ranks(world: int, state_path: Path, re10k: Path, probe: Path, out: Path, timeout_s: float = 300) -> list:
    ctx = mp.get_context("spawn")
    port = _free_port()
    procs = [ctx.Process(target=_rank_main, args=(r, world, port, str(state_path), str(re10k), str(probe),
                                                  str(out))) for r in range(world)]
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
    from rayder_core.model import RayDer
    from rayder_core.model_config import ModelConfig

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
    """Rank 1's shard of the probe set is missing a file: both ranks record the probe as missing with rank 1's
    error (nobody is left waiting in a collective), and the NVS benchmark is still evaluated exactly."""
    from rayder_core.data.benchmarks import ProbeSet, Re10kBenchmark

    assert list(Re10kBenchmark(synth_data.re10k, resolution=32).scenes(1, 1)) == []  # an empty shard reads nothing
    probe = tmp_path / "probe-broken"
    shutil.copytree(synth_data.probe, probe)
    keys = ProbeSet(probe).keys
    lo, hi = shard_range(len(keys), 1, 2)
    assert lo < hi and lo >= 1
    (probe / f"{keys[hi - 1]}.npz").unlink()  # owned by rank 1 only

    torch.set_num_threads(1)
    cfg = _eval_cfg(synth_data.re10k, probe)
    cfg.benchmarks = cfg.benchmarks[:1]
    reference = evaluate_model(_model(str(weights)), cfg, resolution=32, device=torch.device("cpu"), seed=0,
                               rank=0, world=1)[0]
    per_rank = _run_ranks(2, weights, synth_data.re10k, probe, tmp_path)
    for records in per_rank:
        nvs, probe_rec = records
        assert nvs == json.loads(json.dumps(reference))
        assert probe_rec["values"] == {} and probe_rec["n"] == 0
        reason = probe_rec["missing"]["R@10"]
        assert "FileNotFoundError" in reason and "rank 1" in reason and keys[hi - 1] in reason
    assert per_rank[0] == per_rank[1]
