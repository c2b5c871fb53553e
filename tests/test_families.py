"""The model-family registry: both families build from a YAML-style mapping, train one step, evaluate (NVS on the
synthetic benchmark, RPA from predicted cameras) and count FLOPs through the registry; `rayder-flops --family`."""

from __future__ import annotations

import json

import pytest
import torch

from rayder_core.models import (FAMILIES, TRAINING_LOSS_KEYS, build_model, count_flops, family_of, flops_cli,
                                model_config, param_count, presets, train_flops_per_step)
from rayder_core.models.rayder import flops as rayder_flops
from rayder_core.data.synth import make_clip
from rayder_core.geometry import Camera
from rayder_core.metrics import relative_pose_accuracy
from rayder_core.models.rayder.config import ModelConfig
from rayder_core.models.erayzer import ERayZerConfig, flops as erayzer_flops

MAPPINGS = {"rayder": {"preset": "tiny-xs"}, "erayzer": {"family": "erayzer", "preset": "tiny-xs"}}


def test_family_selection_and_defaults():
    assert FAMILIES == ("rayder", "erayzer")
    assert family_of({"preset": "tiny-xs"}) == "rayder"  # old configs: no family key
    assert isinstance(model_config({"family": "rayder", "preset": "tiny-xs"}), ModelConfig)
    assert isinstance(model_config(MAPPINGS["erayzer"]), ERayZerConfig)
    # the RayDer config path accepts the selector too, and rejects another family's
    assert ModelConfig.from_dict({"family": "rayder", "preset": "tiny-s"}).width == 128
    with pytest.raises(ValueError, match="'family' = 'erayzer' is not RayDer's"):
        ModelConfig.from_dict({"family": "erayzer", "preset": "tiny-s"}, source="grid.yaml")
    with pytest.raises(ValueError, match=r"run\.yaml: model: invalid model config key 'family' = 'nerf'"):
        model_config({"family": "nerf"}, source="run.yaml: model")
    with pytest.raises(ValueError, match=r"run\.yaml: model: unknown E-RayZer model config key\(s\) \['depth'\]"):
        model_config({"family": "erayzer", "preset": "tiny-xs", "depth": 3}, source="run.yaml: model")
    assert "base" in presets("erayzer") and "B" in presets("rayder")


@pytest.mark.parametrize("family", FAMILIES)
def test_both_families_train_one_step_and_count_flops(family):
    torch.manual_seed(0)
    cfg = model_config(MAPPINGS[family], source="test")
    model = build_model(cfg)
    assert family_of(model) == family
    x = torch.rand(2, 4, 3, 32, 32) * 2 - 1
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    out = model.training_loss(x, generator=torch.Generator().manual_seed(0))
    assert set(TRAINING_LOSS_KEYS) <= set(out)
    assert out["render"].requires_grad and out["render"].shape == out["target"].shape == out["pred"].shape
    assert float(out["psnr"]) == pytest.approx(-10 * torch.log10(out["mse"] / 4).item())
    opt.zero_grad()
    out["loss"].backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None and p.grad.abs().sum() > 0]
    assert grads and all(torch.isfinite(g).all() for g in grads)  # RayDer's zero-init outputs: few grads at step 0
    before = [p.detach().clone() for p in model.parameters()]
    opt.step()
    assert any(not torch.equal(a, p) for a, p in zip(before, model.parameters()))
    # FLOPs and parameters through the registry equal the family's own counters
    per_step = train_flops_per_step(MAPPINGS[family], 32, 4, 2)
    own = (rayder_flops.train_flops_per_step(cfg, 32, 4, 2) if family == "rayder"
           else erayzer_flops.train_flops_per_step(cfg, 32, 4, 2))
    assert per_step == pytest.approx(own) and per_step > 0
    assert count_flops(cfg, 32, 4).train_per_sample * 2 == pytest.approx(per_step)
    assert param_count(cfg) == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("family", FAMILIES)
def test_both_families_evaluate(family, synth_data):
    """NVS on the synthetic RE10K-format benchmark (evaluate.py calls only predict_cameras / predict_views) and RPA of
    the predicted cameras of a synthetic clip against its exact poses."""
    from rayder_core.evaluation.nvs import evaluate_nvs
    from rayder_core.eval_config import BenchmarkSpec

    torch.manual_seed(0)
    model = build_model(MAPPINGS[family]).eval()
    res = evaluate_nvs(model, BenchmarkSpec("re10k-synth", str(synth_data.re10k)), resolution=32,
                       device=torch.device("cpu"), use_lpips=False)
    print(f"{family} (untrained): {res['values']}")
    assert res["n"] == 4 and all(torch.isfinite(torch.tensor(v)) for v in res["values"].values())
    frames, meta = make_clip(5, resolution=32, seconds=2.0)
    x = torch.from_numpy(frames[::3][:4]).permute(0, 3, 1, 2)[None].float() / 127.5 - 1
    cams = meta["cameras"]
    gt = Camera(R=torch.tensor(cams["R"])[::3][:4], t=torch.tensor(cams["t"])[::3][:4],
                f=torch.tensor(cams["f"])[::3][:4])
    est = model.predict_cameras(x)
    assert est.camera_tokens.shape[:2] == (1, 4)
    rpa = relative_pose_accuracy(est.camera[0], gt)
    assert rpa["rpa_pairs"] == 6 and all(0 <= rpa[k] <= 100 for k in ("rpa@5", "rpa@15", "rpa@30"))
    # the probe evaluation reports RPA of the model's own cameras next to the probe's metrics
    from rayder_core.evaluation.probe_protocols import evaluate_probe

    rec = evaluate_probe(model, BenchmarkSpec("probe-synth", str(synth_data.probe), kind="probe"), resolution=32,
                         device=torch.device("cpu"), iters=5, rank=0, world=1)
    print(f"{family} probe: {rec['values']}")
    assert {"R@10", "rpa@5", "rpa@15", "rpa@30"} <= set(rec["values"])
    assert rec["values"]["rpa@5"] <= rec["values"]["rpa@15"] <= rec["values"]["rpa@30"] <= 100


def test_rayder_flops_cli_lists_erayzer_presets(capsys):
    flops_cli.main(["--family", "erayzer", "--json", "--views", "10"])
    rows = json.loads(capsys.readouterr().out)
    by = {r["preset"]: r for r in rows}
    assert set(by) == set(presets("erayzer"))
    assert by["base"]["params"] == erayzer_flops.param_count(ERayZerConfig.from_preset("base"))
    assert abs(by["base"]["params"] / 246e6 - 1) < 0.03
    assert by["base"]["views"] == 10 and by["base"]["n_ref"] == 5
    assert by["base"]["train_per_sample"] == pytest.approx(3 * by["base"]["forward_per_sample"])
    assert by["base"]["raster_forward"] > 0
    flops_cli.main(["--family", "erayzer", "--presets", "tiny-xs,tiny-s", "--resolution", "32", "--views", "4"])
    text = capsys.readouterr().out
    assert "tiny-xs" in text and "raster fwd" in text
    with pytest.raises(SystemExit):
        flops_cli.main(["--family", "erayzer", "--presets", "huge"])
    capsys.readouterr()
    flops_cli.main(["--family", "erayzer", "--presets", "XS,S,B,L", "--json"])  # the list named, no special case
    assert [r["preset"] for r in json.loads(capsys.readouterr().out)] == ["XS", "S", "B", "L"]


@pytest.mark.slow
def test_trainer_and_evaluation_run_the_erayzer_family(synth_data, tmp_path):
    """rayder-train with `model.family: erayzer`: model and FLOPs through the registry, checkpoint, evaluation (NVS
    + camera probe on its camera tokens), and the checkpoint reloads through evaluate.load_model_from_checkpoint."""
    from rayder_core.evaluation.checkpoint import load_model_from_checkpoint
    from rayder_core.fileio import read_jsonl
    from rayder_core.models.erayzer import ERayZer
    from rayder_core.training.checkpoints import latest_checkpoint
    from rayder_core.training.trainer import run_training
    from rayder_core.train_config import load_train_config

    cfg = load_train_config({
        "model": {"family": "erayzer", "preset": "tiny-xs"},
        "data": {"manifest": str(synth_data.manifest), "frames": 4, "resolution": 16},
        "optim": {"warmup_steps": 1, "lr": 1e-3},
        "eval": {"every": 2, "from_step": 2, "lpips": False, "probe_iters": 5, "benchmarks": [
            {"name": "re10k-synth", "path": str(synth_data.re10k), "kind": "re10k"},
            {"name": "probe-synth", "path": str(synth_data.probe), "kind": "probe"}]},
        "steps": 2, "batch_size": 2, "checkpoint_every": 2, "log_every": 1, "precision": "fp32",
        "sweep": "fam", "out_dir": str(tmp_path / "runs")})
    out = run_training(cfg, db=None, progress=False)
    assert out.status == "finished" and out.step == 2
    rows = read_jsonl(out.run_dir / "metrics.jsonl")
    expect = train_flops_per_step({"family": "erayzer", "preset": "tiny-xs"}, 16, 4, 2)
    assert rows[-1]["flops"] == pytest.approx(2 * expect)
    evals = {r["bench"]: r for r in read_jsonl(out.run_dir / "evals.jsonl")}
    print({k: v["values"] for k, v in evals.items()})
    assert "psnr" in evals["re10k-synth"]["values"] and evals["probe-synth-per-scene"]["values"]
    model = load_model_from_checkpoint(out.run_dir, latest_checkpoint(out.run_dir), torch.device("cpu"))
    assert isinstance(model, ERayZer) and int(model.train_steps) == 2
    with pytest.raises(Exception, match=r"model: unknown E-RayZer model config key\(s\) \['depth'\]"):
        load_train_config({"model": {"family": "erayzer", "preset": "tiny-xs", "depth": 2},
                           "data": {"manifest": "x.json"}})


def test_compare_grid_expands_to_both_families():
    """sweeps/compare.yaml: the same presets/fractions for RayDer and E-RayZer (grid.families), each run validated by
    its family's config and costed by its family's FLOP counter; E-RayZer's runs use the overlap curriculum."""
    from pathlib import Path

    from sweeps.preflight import run_train_flops
    from sweeps.spec import load_spec

    spec = load_spec(Path(__file__).resolve().parents[1] / "sweeps" / "compare.yaml")
    runs = spec.runs()
    fams = [family_of(dict(r.model)) for r in runs]
    assert fams.count("rayder") == fams.count("erayzer") == 9  # 3 presets x 3 fractions each
    for r in runs:
        cfg = model_config(dict(r.model))
        assert run_train_flops(r) == pytest.approx(train_flops_per_step(cfg, 16, 4, r.batch_size) * r.steps)
    # the same sizes in both families: tiny-2x128 / tiny-2x192 are width x layers in each
    by_preset = {}
    for r in runs:
        by_preset.setdefault(r.model["preset"], set()).add(family_of(dict(r.model)))
    assert by_preset == {p: {"rayder", "erayzer"} for p in ("tiny-xs", "tiny-2x128", "tiny-2x192")}
    assert {r.sweep for r in runs} == {"compare"}  # one sweep; runs.family tells the families apart
    assert {(family_of(dict(r.model)), r.data.curriculum.mode) for r in runs} == {("rayder", "none"),
                                                                                   ("erayzer", "overlap")}
