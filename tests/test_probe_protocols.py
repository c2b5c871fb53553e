"""The probe protocols of one probe set, reported side by side under labelled benchmark names (cross-scene,
per-scene as in Appendix B.2.3, XFactor transfer), and the validation of the protocol list."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from rayder_core.data.evalsets import write_probe_set
from rayder_core.evaluation.suite import evaluate_model
from rayder_core.models.rayder.model import RayDer
from rayder_core.models.rayder.config import ModelConfig
from rayder_core.probe import per_scene_probe
from rayder_core.eval_config import BenchmarkSpec, EvalConfig
from test_probe import synthetic_cameras


def test_protocols_reported_and_labelled(tmp_path):
    cams = synthetic_cameras(3, seed=0)
    rng = np.random.default_rng(0)
    write_probe_set([{"key": f"s{i}", "frames": (rng.random((24, 32, 32, 3)) * 255).astype(np.uint8),
                      "cameras": cams[i]} for i in range(3)], tmp_path / "probe")
    spec = BenchmarkSpec("probe", str(tmp_path / "probe"), "probe", protocols=["cross_scene", "per_scene", "transfer"])
    torch.manual_seed(0)
    model = RayDer(ModelConfig.from_preset("tiny-xs")).eval()
    records = evaluate_model(model, EvalConfig(benchmarks=[spec], probe_iters=20), resolution=32,
                             device=torch.device("cpu"), rank=0, world=1)
    by = {r["bench"]: r for r in records}
    assert sorted(by) == ["probe", "probe-per-scene", "probe-transfer"]
    assert by["probe"]["n"] == 1 and by["probe-per-scene"]["n"] == 3 and by["probe-transfer"]["n"] == 3
    assert {"R@10", "t@0.1", "rot_err_deg", "trans_err"} <= set(by["probe-per-scene"]["values"])
    assert {"R@10", "R@20", "R@30", "T@10", "T@20", "T@30", "rot_err_deg", "trans_err_deg"} == \
        set(by["probe-transfer"]["values"])
    # the per-scene record is the library function on the same tokens (an independent call)
    frames = torch.stack([torch.from_numpy(np.load(tmp_path / "probe" / f"s{i}.npz")["frames"]) for i in range(3)])
    x = frames.permute(0, 1, 4, 2, 3).float() / 127.5 - 1
    tokens = torch.stack([model.predict_cameras(x[i:i + 1]).camera_tokens[0] for i in range(3)])
    want = per_scene_probe(tokens, cams, iters=20, seed=0)
    assert by["probe-per-scene"]["values"]["rot_err_deg"] == pytest.approx(want["rot_err_deg"], rel=1e-4)


def test_protocol_names_validated():
    with pytest.raises(ValueError, match="protocols"):
        BenchmarkSpec("p", "x", "probe", protocols=["per-scene"])
    assert BenchmarkSpec("p", "x", "probe").protocols == ["per_scene"]  # the paper's protocol


def test_unreadable_probe_set_is_missing_under_every_protocol_name(tmp_path):
    spec = BenchmarkSpec("probe", str(tmp_path / "nothing"), "probe", protocols=["per_scene", "transfer"])
    model = RayDer(ModelConfig.from_preset("tiny-xs")).eval()
    records = evaluate_model(model, EvalConfig(benchmarks=[spec], probe_iters=5), resolution=32,
                             device=torch.device("cpu"), rank=0, world=1)
    assert [r["bench"] for r in records] == ["probe-per-scene", "probe-transfer"]
    assert "rot_err_deg" in records[0]["missing"] and "trans_err_deg" in records[1]["missing"]
    assert all("not found" in reason for r in records for reason in r["missing"].values())
