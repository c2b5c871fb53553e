"""Checkpoint semantics (issue 12 items 6-7): LR phase per checkpoint, cooldown branches, checkpoint selection."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from test_train import tiny_config  # noqa: E402

from fitting.checkpoints import format_report, select_checkpoints  # noqa: E402
from rayder_core.fileio import read_jsonl  # noqa: E402
from rayder_core.store import ResultsStore  # noqa: E402
from rayder_core.training.cli import main as train_main  # noqa: E402
from rayder_core.training.cooldown import cooldown_config  # noqa: E402
from rayder_core.training.schedule import lr_at, lr_phase  # noqa: E402
from rayder_core.training.trainer import run_training  # noqa: E402
from rayder_core.train_config import load_train_config  # noqa: E402


def test_lr_phase_follows_the_schedule():
    cfg = load_train_config({"optim": {"lr": 1e-3, "warmup_steps": 10, "decay_start": 100, "decay_halve_every": 50}})
    assert [lr_phase(s, cfg) for s in (0, 9, 10, 99, 100, 500)] == ["warmup"] * 2 + ["stable"] * 2 + ["decay"] * 2
    branch = cooldown_config(load_train_config({"optim": {"warmup_steps": 10}, "steps": 1000}), 400, 100)
    assert branch.steps == 500 and branch.optim.decay_start == 400 and branch.optim.decay_halve_every == 10
    assert lr_at(399, branch) == branch.optim.lr and lr_at(499, branch) == pytest.approx(branch.optim.lr * 2 ** -9.9)
    with pytest.raises(ValueError, match="warmup phase"):
        cooldown_config(load_train_config({"optim": {"warmup_steps": 10}, "steps": 1000}), 5, 100)
    with pytest.raises(ValueError, match="decay phase"):
        cooldown_config(load_train_config({"optim": {"decay_start": 300, "decay_halve_every": 10}, "steps": 1000}),
                        400, 100)


def test_cooldown_branch_is_the_run_its_config_describes(synth_data, tmp_path):
    """Parent: 8 steps (warmup 2); branch from step 4 with 4 cooldown steps via the CLI. The branch must equal, bit
    for bit, a from-scratch run of the branch config (same data order, same LR until step 4, then the decay)."""
    parent = tiny_config(synth_data, tmp_path / "runs", steps=8, checkpoint_every=2)
    cfg_path = tmp_path / "parent.yaml"
    cfg_path.write_text(yaml.safe_dump(parent))
    db = tmp_path / "results.duckdb"
    assert train_main([str(cfg_path), "--db", str(db), "--threads", "1"]) == 0
    pcfg = load_train_config(parent)
    ck = read_jsonl(pcfg.run_dir / "checkpoints.jsonl")
    assert [c["lr_phase"] for c in ck] == ["warmup", "stable", "stable", "stable"]  # steps 2, 4, 6, 8
    assert [c["lr"] for c in ck] == [lr_at(c["step"] - 1, pcfg) for c in ck]
    assert train_main([str(cfg_path), "--db", str(db), "--threads", "1", "--cooldown-from", "4",
                       "--cooldown-steps", "4"]) == 0
    bcfg = cooldown_config(pcfg, 4, 4)
    assert bcfg.run_id != pcfg.run_id and bcfg.run_dir.is_dir()
    branch = json.loads((bcfg.run_dir / "branch.json").read_text())
    assert branch["parent_run"] == pcfg.run_id and branch["parent_step"] == 4 and branch["cooldown_steps"] == 4
    bck = read_jsonl(bcfg.run_dir / "checkpoints.jsonl")
    assert [(c["step"], c["lr_phase"]) for c in bck] == [(6, "decay"), (8, "decay")]
    # independent reference: the branch config trained from scratch in another directory
    ref_cfg = load_train_config({**bcfg.to_dict(), "out_dir": str(tmp_path / "ref")})
    run_training(ref_cfg, db=None, progress=False)
    ref = {r["step"]: r["loss"] for r in read_jsonl(ref_cfg.run_dir / "metrics.jsonl")}
    got = {r["step"]: r["loss"] for r in read_jsonl(bcfg.run_dir / "metrics.jsonl")}
    assert sorted(got) == [5, 6, 7, 8] and all(got[s] == ref[s] for s in got)
    # recorded in the store as a branch, with LR phases per checkpoint
    store = ResultsStore(db)
    br = store.branches()
    assert br.to_dict(orient="records")[0] | {"schedule": None} == {
        "run_id": bcfg.run_id, "parent_run": pcfg.run_id, "parent_step": 4, "cooldown_steps": 4, "schedule": None}
    cks = store.checkpoints(bcfg.run_id)
    assert list(cks.lr_phase) == ["decay", "decay"] and cks.lr.iloc[-1] == pytest.approx(lr_at(7, bcfg))
    # CLI errors: not a stable checkpoint, and a missing checkpoint
    assert train_main([str(cfg_path), "--db", "", "--cooldown-from", "1", "--cooldown-steps", "4"]) == 2
    assert train_main([str(cfg_path), "--db", "", "--cooldown-from", "5", "--cooldown-steps", "4"]) == 2
    assert train_main([str(cfg_path), "--db", "", "--cooldown-from", "4"]) == 2


def _points():
    rows = []
    for run, status, decays in (("a", "finished", False), ("b", "finished", True), ("c", "running", False)):
        for step in (1, 2, 3, 4):
            phase = "warmup" if step == 1 else ("decay" if decays and step == 4 else "stable")
            rows.append({"run_id": run, "step": step, "lr_phase": phase, "status": status, "is_last": step == 4})
    rows.append({"run_id": "old", "step": 4, "lr_phase": None, "status": "finished", "is_last": True})
    return pd.DataFrame(rows)


def test_select_checkpoints_counts_what_each_filter_removed():
    pts = _points()
    kept, rep = select_checkpoints(pts, "all")
    assert len(kept) == 10 and rep[0] == ("warmup checkpoints", 3) and rep[-1][1] == 1
    kept, rep = select_checkpoints(pts, "final", min_step=2)
    assert sorted(kept.run_id) == ["a", "b", "old"]
    assert rep[:3] == [("--min-step 2", 3), ("warmup checkpoints", 0), ("--checkpoints final", 7)]
    kept, rep = select_checkpoints(pts, "cooldown")
    assert list(kept.run_id) == ["b"] and rep[1] == ("--checkpoints cooldown", 9)
    kept, rep = select_checkpoints(pts, "all", drop_warmup=False)
    assert len(kept) == 13
    assert format_report([("warmup checkpoints", 3)], 13, 10) == "checkpoints: 13 -> 10 (warmup checkpoints: -3)"
    with pytest.raises(ValueError, match="lack columns"):
        select_checkpoints(pts.drop(columns=["is_last"]), "final")
    assert np.all(select_checkpoints(pts, "all", drop_warmup=False)[0].index == pts.index)
