"""Training: LR schedule, bit-exact resume, step skipping on NaN, DDP-gloo gradient equivalence, run records."""
from __future__ import annotations

import faulthandler
import json
import math
import os
import socket
import time
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as tmp_mp

from rayder_core.store import ResultsStore, record_run_dir
from rayder_core.fileio import read_jsonl as _read_jsonl
from rayder_core.training.checkpoints import latest_checkpoint
from rayder_core.training.schedule import lr_at
from rayder_core.training.trainer import TrainingDiverged, run_training
from rayder_core.train_config import load_train_config
from rayder_core.yamlconf import ConfigError


def tiny_config(data, out_dir: Path, **over) -> dict:
    """A 6-step tiny-xs run at 32x32 on the session's synthetic corpus (`synth_data` from conftest.py)."""
    cfg = {
        "model": {"preset": "tiny-xs"},
        "data": {"manifest": str(data.manifest), "fraction": 1.0, "frames": 4, "resolution": 32},
        "optim": {"warmup_steps": 2, "lr": 3e-4},
        "eval": {"every": 1000, "benchmarks": []},
        "steps": 6, "batch_size": 2, "checkpoint_every": 3, "log_every": 1, "precision": "fp32",
        "sweep": "test", "out_dir": str(out_dir),
    }
    for key, value in over.items():
        node = cfg
        *path, last = key.split(".")
        for p in path:
            node = node[p]
        node[last] = value
    return cfg


def test_lr_schedule_closed_form():
    cfg = load_train_config({"optim": {"lr": 1e-3, "warmup_steps": 10, "decay_start": 100,
                                       "decay_halve_every": 50}})
    assert lr_at(0, cfg) == pytest.approx(1e-4)
    assert lr_at(9, cfg) == pytest.approx(1e-3)
    assert lr_at(50, cfg) == pytest.approx(1e-3)
    assert lr_at(100, cfg) == pytest.approx(1e-3)
    assert lr_at(150, cfg) == pytest.approx(5e-4)
    assert lr_at(200, cfg) == pytest.approx(2.5e-4)


def test_config_errors_name_the_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim:\n  lrr: 0.1\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: optim.lrr: unknown key"):
        load_train_config(bad)
    bad.write_text("steps: [1\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_train_config(bad)
    with pytest.raises(ConfigError, match="data.resolution"):
        load_train_config({"data": {"resolution": 30}})
    with pytest.raises(ConfigError, match="model"):
        load_train_config({"model": {"preset": "tiny-xs", "widht": 3}})


def test_run_id_is_stable_and_config_sensitive(tmp_path):
    a = load_train_config({"steps": 10, "out_dir": "x"})
    b = load_train_config({"steps": 10, "out_dir": "y", "log_every": 5})
    c = load_train_config({"steps": 11})
    assert a.run_id == b.run_id != c.run_id


def _losses(run_dir: Path) -> list[float]:
    return [r["loss"] for r in _read_jsonl(run_dir / "metrics.jsonl")]


def test_resume_is_bit_exact(synth_data, tmp_path):
    """A run stopped at step 3 and resumed logs exactly the same losses as an uninterrupted run (CPU, fp32)."""
    full = load_train_config(tiny_config(synth_data, tmp_path / "a"))
    out = run_training(full, db=None, progress=False)
    assert out.status == "finished" and out.step == 6
    ref = _losses(out.run_dir)

    cut = load_train_config(tiny_config(synth_data, tmp_path / "b"))
    first = run_training(cut, db=str(tmp_path / "r.duckdb"), progress=False, should_stop=lambda s: s == 4)
    assert first.status == "preempted" and first.step == 4
    second = run_training(cut, db=str(tmp_path / "r.duckdb"), progress=False)
    assert second.status == "finished"
    resumed = _losses(second.run_dir)
    assert len(resumed) == 6
    assert resumed == ref  # bit for bit: every random draw comes from checkpointed generators
    state = json.loads((second.run_dir / "state.json").read_text())
    assert state["restarts"] == 1 and state["status"] == "finished"
    # store rows: no duplicates after the restart
    counts = ResultsStore(tmp_path / "r.duckdb").table_counts()
    assert counts["train_log"] == 6 and counts["checkpoints"] == 3  # steps 3, 4 (on stop), 6


def test_nan_loss_is_skipped_and_counted(synth_data, tmp_path, monkeypatch):
    from rayder_core.training import trainer as train_mod

    cfg = load_train_config(tiny_config(synth_data, tmp_path, steps=4, **{"optim.max_consecutive_skips": 3,
                                                                         "optim.skip_grad_factor": 1e9}))
    original = train_mod.Trainer.train_step
    calls = {"n": 0}

    def poisoned(self, x):
        calls["n"] += 1
        if calls["n"] == 2:
            x = x.clone()
            x[0, 0, 0, 0, 0] = float("nan")
            before = [p.detach().clone() for p in self.model.parameters()]
            out = original(self, x)
            after = list(self.model.parameters())
            assert all(torch.equal(b, a) for b, a in zip(before, after)), "a skipped step changed the weights"
            return out
        return original(self, x)

    monkeypatch.setattr(train_mod.Trainer, "train_step", poisoned)
    out = run_training(cfg, db=None, progress=False)
    rows = _read_jsonl(out.run_dir / "metrics.jsonl")
    assert [r["skipped"] for r in rows] == [0, 1, 0, 0]
    assert math.isnan(rows[1]["loss"]) and rows[-1]["skipped_total"] == 1


def test_consecutive_skips_stop_the_run_and_keep_the_checkpoint(synth_data, tmp_path, monkeypatch):
    from rayder_core.training import trainer as train_mod

    cfg = load_train_config(tiny_config(synth_data, tmp_path, steps=12, checkpoint_every=2,
                                        **{"optim.max_consecutive_skips": 3}))
    original = train_mod.Trainer.train_step

    def poisoned(self, x):
        if self.step >= 2:
            x = torch.full_like(x, float("nan"))
        return original(self, x)

    monkeypatch.setattr(train_mod.Trainer, "train_step", poisoned)
    with pytest.raises(TrainingDiverged, match="3 consecutive steps skipped"):
        run_training(cfg, db=None, progress=False)
    ckpt = latest_checkpoint(cfg.run_dir)
    assert ckpt is not None and ckpt.name == "step_0004.pt".replace("0004", "0000004")
    state = torch.load(ckpt, weights_only=True)
    assert all(torch.isfinite(v).all() for v in state["model"].values())
    assert json.loads((cfg.run_dir / "state.json").read_text())["status"] == "failed"


def test_record_run_dir_is_idempotent(synth_data, tmp_path):
    cfg = load_train_config(tiny_config(synth_data, tmp_path, steps=3))
    out = run_training(cfg, db=None, progress=False)
    store = ResultsStore(tmp_path / "r.duckdb")
    record_run_dir(out.run_dir, store)
    first = store.table_counts()
    record_run_dir(out.run_dir, store)
    assert store.table_counts() == first and first["runs"] == 1 and first["train_log"] == 3
    ck = store.checkpoints()
    from rayder_core.models.rayder.flops import train_flops_per_step
    from rayder_core.models.rayder.config import ModelConfig

    per_step = train_flops_per_step(ModelConfig.from_preset("tiny-xs"), 32, 4, 2)
    assert ck["flops"].iloc[-1] == pytest.approx(3 * per_step)
    assert ck["compute_gflop"].iloc[-1] == pytest.approx(3 * per_step / 1e9)


# ------------------------------------------------------------------------------------------------ DDP (gloo)
def _ddp_worker(rank: int, world: int, port: int, out_dir: str) -> None:
    # The CI job of d11c8d7 hung in this test until its 90 min ran out (not reproduced on the development machine). So
    # no tensor is a spawn argument (it is read from a file), gloo binds the loopback interface (not the address the
    # host name resolves to), and both the process group and the test's wait for the ranks are bounded.
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), GLOO_SOCKET_IFNAME="lo")
    # A rank still alive shortly before the test gives up prints where every thread is and exits, so a hang says
    # where it is (that is how the teardown order below was found).
    faulthandler.dump_traceback_later(int(1.5 * DDP_TIMEOUT_S), exit=True)
    torch.set_num_threads(1)
    import torch.distributed as dist

    from rayder_core.models.rayder.model import RayDer
    from rayder_core.models.rayder.config import ModelConfig
    from rayder_core.training.trainer import _TrainingLoss

    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=timedelta(seconds=DDP_TIMEOUT_S))
    torch.manual_seed(0)
    model = RayDer(ModelConfig.from_preset("tiny-xs", autoregression="ordered", state_dropout=0.0))
    ddp = torch.nn.parallel.DistributedDataParallel(_TrainingLoss(model), find_unused_parameters=True)
    x = torch.load(Path(out_dir) / "x.pt", weights_only=True)
    local = x.chunk(world)[rank]
    out = ddp(local, generator=torch.Generator().manual_seed(1))
    out["loss"].backward()
    if rank == 0:
        torch.save({n: p.grad for n, p in model.named_parameters() if p.grad is not None},
                   Path(out_dir) / "ddp.pt")
    # The hang's stack (CI of 4696426): rank 1 blocked after this function, while its DDP module was being freed
    # after destroy_process_group. Free the module (its reducer) first, while the process group still exists.
    del out, ddp
    dist.barrier()
    dist.destroy_process_group()


DDP_TIMEOUT_S = 120
"""Seconds the two gloo ranks may wait for each other (process-group timeout) and, doubled, for the whole test."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_gloo_matches_single_process(tmp_path):
    """Two gloo ranks on half batches give the same gradients as one process on the whole batch."""
    from rayder_core.models.rayder.model import RayDer
    from rayder_core.models.rayder.config import ModelConfig

    x = torch.rand(4, 4, 3, 32, 32) * 2 - 1
    torch.save(x, tmp_path / "x.pt")  # a file, not a spawn argument: no tensor crosses processes by fd passing
    ranks = tmp_mp.spawn(_ddp_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=False)
    deadline = time.monotonic() + 2 * DDP_TIMEOUT_S
    while not ranks.join(timeout=5):
        if time.monotonic() > deadline:
            for proc in ranks.processes:
                proc.kill()
            pytest.fail(f"the two gloo ranks did not finish within {2 * DDP_TIMEOUT_S} s (killed; a rank alive at "
                        f"{int(1.5 * DDP_TIMEOUT_S)} s printed its stacks to stderr)")
    ddp_grads = torch.load(tmp_path / "ddp.pt", weights_only=True)
    torch.manual_seed(0)
    model = RayDer(ModelConfig.from_preset("tiny-xs", autoregression="ordered", state_dropout=0.0))
    model.training_loss(x, generator=torch.Generator().manual_seed(1))["loss"].backward()
    ref = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert set(ref) == set(ddp_grads)
    worst = max(((ddp_grads[n] - g).abs().max() / (g.abs().max() + 1e-12)).item() for n, g in ref.items())
    assert worst < 1e-4, f"largest relative gradient difference {worst:.2e}"


@pytest.mark.slow
def test_tiny_preset_learns_beyond_mean_colour(synth_data, tmp_path):
    """Acceptance: the demo's smallest rung (tiny-w16 at 16^2, batch 8, its base LR 4e-3) trains 300 CPU steps on the
    session's synthetic shards; the loss falls clearly and PSNR on the synthetic benchmark beats the mean-colour
    baseline (both printed). Deterministic on CPU (seeded)."""
    cfg = load_train_config({
        "model": {"preset": "tiny-w16", "patch": 2, "local_layers": False},
        "data": {"manifest": str(synth_data.manifest), "frames": 4, "resolution": 16},
        "optim": {"lr": 4e-3, "warmup_steps": 20},
        "eval": {"every": 300, "from_step": 300, "lpips": False, "benchmarks": [
            {"name": "re10k-synth", "path": str(synth_data.re10k), "kind": "re10k"}]},
        "steps": 300, "batch_size": 8, "checkpoint_every": 300, "log_every": 1, "precision": "fp32",
        "sweep": "learn", "out_dir": str(tmp_path / "runs")})
    out = run_training(cfg, db=None, progress=False)
    losses = [r["loss"] for r in _read_jsonl(out.run_dir / "metrics.jsonl")]
    ev = _read_jsonl(out.run_dir / "evals.jsonl")[-1]["values"]
    first, last = sum(losses[:20]) / 20, sum(losses[-50:]) / 50
    print(f"\nloss: mean of the first 20 steps {first:.4f} -> of the last 50 steps {last:.4f}; "
          f"PSNR {ev['psnr']:.2f} dB vs mean-colour baseline {ev['baseline_psnr']:.2f} dB")
    # measured (2026-12-03, AMX CPU, 40-clip corpus): loss 0.0819 -> 0.0259 (x0.32) and PSNR 21.37 dB vs a 17.52 dB
    # baseline; the thresholds leave room for other CPUs' rounding
    assert last < 0.5 * first
    assert ev["psnr"] > ev["baseline_psnr"] + 2.0


@pytest.mark.parametrize("factor,expected_skips", [(None, 0), (1e-9, 4)])
def test_grad_spike_rule_off_by_default_and_skips_when_on(synth_data, tmp_path, factor, expected_skips):
    """Default (rule off): no step is skipped. With a factor so small that every post-warmup gradient counts as a
    spike, the 4 steps after the 2 warmup steps are skipped and counted (and the run finishes: 4 < 20)."""
    over = {} if factor is None else {"optim.skip_grad_factor": factor}
    cfg = load_train_config(tiny_config(synth_data, tmp_path, **over))
    outcome = run_training(cfg, db=None, progress=False)
    assert outcome.status == "finished"
    rows = [json.loads(line) for line in (cfg.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["skipped_total"] == expected_skips
