"""Runs that share a trunk (rayder_core/training/trunk.py): a shorter run started from a longer run's checkpoint is
the same run as one trained from step 0 (same weights, same losses), the trunk keeps the fork checkpoint, and a
checkpoint of a run that does not share the trunk is refused with the reason."""
from __future__ import annotations

import copy
import json

import pytest
import torch

from rayder_core.fileio import read_jsonl
from rayder_core.train_config import load_train_config
from rayder_core.training.checkpoints import checkpoint_path, latest_checkpoint
from rayder_core.training.trainer import run_training
from rayder_core.training.trunk import fork_step, start_from_trunk
from sweeps.spec import with_length


def _mapping(data, out_dir) -> dict:
    """A 12-step tiny-xs WSD run (decay from step 8, halving every 2) evaluated at 3 log-spaced steps, so that runs of
    other lengths (with_length) are evaluated at other steps before their fork."""
    return {
        "model": {"preset": "tiny-xs"},
        "data": {"manifest": str(data.manifest), "fraction": 1.0, "frames": 4, "resolution": 32},
        "optim": {"warmup_steps": 2, "lr": 3e-4, "decay_start": 8, "decay_halve_every": 2},
        "eval": {"log_points": 3, "from_step": 2, "lpips": False,
                 "benchmarks": [{"name": "re10k-synth", "path": str(data.re10k), "kind": "re10k", "max_scenes": 2}]},
        "steps": 12, "batch_size": 2, "checkpoint_every": 1000, "keep_checkpoints": 1, "log_every": 1,
        "precision": "fp32", "sweep": "trunk", "out_dir": str(out_dir),
    }


def _weights(run_dir):
    return torch.load(latest_checkpoint(run_dir), map_location="cpu", weights_only=True)["model"]


def test_run_started_from_the_trunk_is_the_run_trained_from_step_0(synth_data, tmp_path):
    base = _mapping(synth_data, tmp_path / "runs")
    long = load_train_config(with_length(base, 12))
    short_scratch = load_train_config(with_length(base, 8))
    step = fork_step(short_scratch, long)
    assert step == short_scratch.optim.decay_start == 5  # round(8 * 8 / 12)
    assert short_scratch.eval.steps_for(8) != [s for s in long.eval.steps_for(12) if s <= 8]  # evals differ

    long = load_train_config({**with_length(base, 12), "checkpoint_steps": [step]})
    assert long.run_id == load_train_config(with_length(base, 12)).run_id  # where it saves is not what it trains
    run_training(long, db=None, progress=False)
    assert checkpoint_path(long.run_dir, step).is_file()  # kept although keep_checkpoints = 1

    forked = load_train_config({**with_length(base, 8),
                                "start_from": str(checkpoint_path(long.run_dir, step))})
    assert forked.run_id == short_scratch.run_id
    run_training(forked, db=None, progress=False)
    assert json.loads((forked.run_dir / "trunk.json").read_text()) == {"trunk_run": long.run_id, "step": step}
    forked_losses = [r["loss"] for r in read_jsonl(forked.run_dir / "metrics.jsonl")]
    forked_weights = _weights(forked.run_dir)

    scratch = load_train_config({**with_length(base, 8), "out_dir": str(tmp_path / "scratch")})
    run_training(scratch, db=None, progress=False)
    scratch_losses = [r["loss"] for r in read_jsonl(scratch.run_dir / "metrics.jsonl")]
    assert [r["step"] for r in read_jsonl(forked.run_dir / "metrics.jsonl")] == list(range(step + 1, 9))
    assert forked_losses == scratch_losses[step:]
    scratch_weights = _weights(scratch.run_dir)
    assert all(torch.equal(forked_weights[k], scratch_weights[k]) for k in scratch_weights)


def test_start_from_is_refused_for_a_run_with_another_trunk(synth_data, tmp_path):
    base = _mapping(synth_data, tmp_path / "runs")
    other = copy.deepcopy(base)
    other["optim"]["lr"] = 6e-4  # another LR: not the same first steps
    long = load_train_config({**with_length(other, 12), "checkpoint_steps": [5]})
    run_training(long, db=None, progress=False)
    short = load_train_config({**with_length(base, 8), "start_from": str(checkpoint_path(long.run_dir, 5))})
    assert fork_step(short, long) is None
    short.run_dir.mkdir(parents=True)
    with pytest.raises(ValueError, match=r"does not share .* first 5 steps"):
        start_from_trunk(short)
    assert latest_checkpoint(short.run_dir) is None  # nothing copied


def test_missing_trunk_checkpoint_trains_from_step_0(synth_data, tmp_path):
    base = _mapping(synth_data, tmp_path / "runs")
    short = load_train_config({**with_length(base, 8), "start_from": str(tmp_path / "nowhere" / "step_0000005.pt")})
    assert "not there" in start_from_trunk(short)
    out = run_training(short, db=None, progress=False)
    assert out.status == "finished" and read_jsonl(short.run_dir / "metrics.jsonl")[0]["step"] == 1
    assert not (short.run_dir / "trunk.json").exists()


def test_checkpoint_steps_must_lie_inside_the_run():
    with pytest.raises(ValueError, match="checkpoint_steps"):
        load_train_config({"steps": 10, "checkpoint_steps": [10]})
