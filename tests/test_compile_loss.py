"""`compile: loss` (the whole training loss under torch.compile, forward and backward): it trains the same run as eager
(losses and weights within float tolerance), is not part of the run id, and is skipped (eager, recorded why) when the
process has fewer than `compile_min_steps` steps left to train, as a run forked from a trunk near its end has."""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from rayder_core.fileio import read_jsonl
from rayder_core.train_config import load_train_config
from rayder_core.training.checkpoints import latest_checkpoint
from rayder_core.training.trainer import run_training
from rayder_core.yamlconf import ConfigError


def _mapping(data, out_dir, **extra) -> dict:
    """The demo's model (tiny-w16 under muP, patch 2, no local layers) at 16^2, batch 4, 6 steps, no evaluation."""
    return {
        "model": {"preset": "tiny-w16", "patch": 2, "local_layers": False, "parametrization": "mup",
                  "mup_base_width": 16},
        "data": {"manifest": str(data.manifest), "fraction": 1.0, "frames": 4, "resolution": 16},
        "optim": {"warmup_steps": 2, "lr": 4e-3},
        "eval": {"benchmarks": []},
        "steps": 6, "batch_size": 4, "checkpoint_every": 1000, "log_every": 1, "precision": "fp32",
        "sweep": "compile", "out_dir": str(out_dir), **extra,
    }


def _runtime(cfg) -> dict:
    return json.loads((cfg.run_dir / "state.json").read_text())["runtime"]


def test_compile_modes_are_validated_and_not_part_of_the_run_id(tmp_path):
    paths = SimpleNamespace(manifest=tmp_path / "m.json")  # never read: nothing is trained
    eager = load_train_config(_mapping(paths, tmp_path))
    assert eager.compile_mode == "off"
    for value, mode in ((True, "layers"), ("layers", "layers"), ("loss", "loss"), (False, "off")):
        cfg = load_train_config(_mapping(paths, tmp_path, compile=value, compile_min_steps=1000))
        assert cfg.compile_mode == mode
        assert cfg.run_id == eager.run_id  # how the loss is executed, not what is trained
    with pytest.raises(ConfigError, match="compile"):
        load_train_config(_mapping(paths, tmp_path, compile="fast"))
    with pytest.raises(ConfigError, match="compile_min_steps"):
        load_train_config(_mapping(paths, tmp_path, compile="loss", compile_min_steps=-1))


def test_a_process_with_fewer_steps_left_than_compile_min_steps_stays_eager(synth_data, tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("torch.compile called for a run below compile_min_steps")

    monkeypatch.setattr(torch, "compile", refuse)
    cfg = load_train_config(_mapping(synth_data, tmp_path, compile="loss", compile_min_steps=1000))
    assert run_training(cfg, db=None, progress=False).status == "finished"
    assert _runtime(cfg)["compile"] == "eager: 6 steps left < compile_min_steps 1000"


@pytest.mark.slow
def test_compiled_loss_trains_the_same_run_as_eager(synth_data, tmp_path):
    """Cold inductor compilation of this graph takes ~2.5 min on a 2-core CPU (the reason the test is slow)."""
    eager = load_train_config(_mapping(synth_data, tmp_path / "eager"))
    compiled = load_train_config(_mapping(synth_data, tmp_path / "compiled", compile="loss", compile_min_steps=6))
    for cfg in (eager, compiled):
        assert run_training(cfg, db=None, progress=False).status == "finished"
    assert _runtime(compiled)["compile"] == "loss" and _runtime(eager)["compile"] == "off"
    ref = [r["loss"] for r in read_jsonl(eager.run_dir / "metrics.jsonl")]
    got = [r["loss"] for r in read_jsonl(compiled.run_dir / "metrics.jsonl")]
    assert len(ref) == len(got) == 6
    assert got == pytest.approx(ref, rel=1e-4)  # fused kernels reorder float sums: equal to ~1e-6, not bitwise
    w_ref = torch.load(latest_checkpoint(eager.run_dir), map_location="cpu", weights_only=True)["model"]
    w_got = torch.load(latest_checkpoint(compiled.run_dir), map_location="cpu", weights_only=True)["model"]
    assert w_ref.keys() == w_got.keys()  # the checkpoint holds the module's own weights, not a compiled wrapper's
    for key, value in w_ref.items():
        torch.testing.assert_close(w_got[key], value, rtol=1e-3, atol=1e-5, msg=key)
