"""Configs A-C of Table B.2: `model.architecture: three_network` (E_cam, E_scene, D_render)."""

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from rayder_core.models import build_model, param_count
from rayder_core.models.rayder import flops
from rayder_core.models.rayder.config import ModelConfig
from rayder_core.models.rayder.three_network import ThreeNetworkRayDer, forward_flops

TINY = dict(architecture="three_network", local_layers=False, autoregression="per_target")
# Table B.2, Configs A-C: width 512 (preset S), depth 6 per network, 6 inputs + 2 targets, patch 16^2, no local layers.
CONFIGS_ABC = {
    "A": dict(dynamic_state=False),
    "B": dict(dynamic_state=True, d_state=256, state_dropout=0.0),
    "C": dict(dynamic_state=True, d_state=256, state_dropout=0.5),
}


def tiny(**kw) -> ModelConfig:
    return ModelConfig.from_preset("tiny-xs", **{**TINY, **kw})


def frames(b=1, v=4, hw=(32, 32), seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, v, 3, *hw, generator=g) * 2 - 1


def test_build_and_interface():
    cfg = tiny()
    model = build_model(cfg)
    assert isinstance(model, ThreeNetworkRayDer)
    x = frames(2, 4)
    est = model.predict_cameras(x)
    assert tuple(est.camera.shape) == (2, 4) and est.camera_tokens.shape == (2, 4, cfg.width)
    assert est.state.shape == (2, 4, cfg.d_state)
    model.eval()
    with torch.no_grad():
        rendered = model.render(x[:, :2], est.camera[:, :2], est.camera[:, 2:], est.state[:, 2:])
    views = model.predict_views(x[:, :2], est.camera[:, :2], est.camera[:, 2:], est.state[:, 2:])
    chunked = model.predict_views(x[:, :2], est.camera[:, :2], est.camera[:, 2:], est.state[:, 2:], target_chunk=1)
    assert views.shape == (2, 2, 3, 32, 32)
    torch.testing.assert_close(views, rendered)
    torch.testing.assert_close(chunked, views, rtol=1e-5, atol=1e-5)  # targets are independent sequences
    assert len(model.compile_regions()) == 3 * cfg.depth
    with pytest.raises(ValueError, match="n_targets"):
        model.training_loss(frames(1, 2), generator=torch.Generator().manual_seed(0))


def test_config_validation():
    with pytest.raises(ValueError, match="architecture"):
        ModelConfig.from_preset("tiny-xs", architecture="two_network")
    with pytest.raises(ValueError, match="local_layers"):
        ModelConfig.from_preset("tiny-xs", architecture="three_network", autoregression="per_target")
    with pytest.raises(ValueError, match="autoregression"):
        ModelConfig.from_preset("tiny-xs", architecture="three_network", local_layers=False)
    assert ModelConfig.from_preset("tiny-xs").architecture == "single"


def test_state_reaches_renderer_only_with_dynamic_state():
    """Config A has no state path; B/C feed the target state to D_render's target register."""
    torch.manual_seed(0)
    model = ThreeNetworkRayDer(tiny()).eval()
    for p in model.parameters():  # leave the zero-initialised output projections: perturb everything
        p.data.add_(0.05 * torch.randn_like(p))
    x = frames(1, 4)
    est = model.predict_cameras(x)
    a = model.predict_views(x[:, :2], est.camera[:, :2], est.camera[:, 2:], est.state[:, 2:])
    b = model.predict_views(x[:, :2], est.camera[:, :2], est.camera[:, 2:], None)
    assert (a - b).abs().max() > 1e-4
    no_state = ThreeNetworkRayDer(tiny(dynamic_state=False))
    assert not hasattr(no_state, "state_proj") and not hasattr(no_state, "state_head")


def measured(model, x, fn) -> int:
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        fn(model, x)
    return counter.get_total_flops()


@pytest.mark.parametrize("overrides,hw,views", [({}, (32, 32), 4), ({"dynamic_state": False, "n_targets": 1},
                                                                      (32, 48), 3)])
def test_flops_match_flop_counter(overrides, hw, views):
    cfg = tiny(**overrides)
    torch.manual_seed(0)
    model = ThreeNetworkRayDer(cfg)
    x = frames(1, views, hw)
    ours = forward_flops(cfg, hw, views)
    cam = measured(model, x, lambda m, f: m.estimate_cameras(f))
    fwd = measured(model, x, lambda m, f: m.training_loss(f, generator=torch.Generator().manual_seed(0)))
    print(f"camera {cam} vs {ours['camera']:.0f}; training forward {fwd} vs {ours['camera'] + ours['render']:.0f}")
    assert cam == pytest.approx(ours["camera"], rel=0.005)
    assert fwd == pytest.approx(ours["camera"] + ours["render"], rel=0.005)
    # the family's FLOP report dispatches on the architecture
    report = flops.count_flops(cfg, hw[0] if hw[0] == hw[1] else hw, views)
    assert report.forward_per_sample == pytest.approx(ours["camera"] + ours["render"], rel=1e-12)
    assert report.train_per_sample == pytest.approx(3 * report.forward_per_sample, rel=1e-12)


@pytest.mark.parametrize("name", sorted(CONFIGS_ABC))
def test_param_count_table_b2(name):
    """Table B.2: 134M trainable parameters for Configs A-C (width 512, depth [6, 6, 6])."""
    cfg = ModelConfig.from_preset("S", depth=6, n_targets=2, **TINY, **CONFIGS_ABC[name])
    n = param_count(cfg)
    with torch.device("meta"):
        direct = sum(p.numel() for p in ThreeNetworkRayDer(cfg).parameters())
    print(f"Config {name}: {n / 1e6:.2f}M parameters (paper 134M, ratio {n / 134e6:.3f})")
    assert n == direct
    assert abs(n / 134e6 - 1) < 0.03


def test_tiny_three_network_learns():
    """A few optimizer steps on one fixed batch of smooth tiny clips (32^2, 4 views): the loss falls."""
    torch.manual_seed(0)
    model = ThreeNetworkRayDer(tiny(state_dropout=0.0)).train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(1)
    coarse = torch.rand(8, 3, 4, 4, generator=g) * 1.6 - 0.8
    x = torch.nn.functional.interpolate(coarse, size=(32, 32), mode="bilinear").reshape(2, 4, 3, 32, 32)
    losses = []
    for step in range(20):
        out = model.training_loss(x, generator=torch.Generator().manual_seed(step % 3))
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(float(out["loss"].detach()))
    print("losses", [round(v, 4) for v in losses])
    assert all(torch.isfinite(torch.tensor(losses)))
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.85 * first, (first, last)


def test_trainer_and_evaluation_run_three_network(synth_data, tmp_path):
    """rayder-train with `model.architecture: three_network`: built and costed through the registry, trained,
    evaluated (NVS + camera probe on E_cam's camera tokens), reloaded from its checkpoint."""
    from rayder_core.evaluation.checkpoint import load_model_from_checkpoint
    from rayder_core.fileio import read_jsonl
    from rayder_core.models import train_flops_per_step
    from rayder_core.training.checkpoints import latest_checkpoint
    from rayder_core.training.trainer import run_training
    from rayder_core.train_config import load_train_config

    model_map = {"preset": "tiny-xs", **TINY}
    cfg = load_train_config({
        "model": model_map,
        "data": {"manifest": str(synth_data.manifest), "frames": 4, "resolution": 16},
        "optim": {"warmup_steps": 1, "lr": 1e-3},
        "eval": {"every": 2, "from_step": 2, "lpips": False, "probe_iters": 5, "benchmarks": [
            {"name": "re10k-synth", "path": str(synth_data.re10k), "kind": "re10k"},
            {"name": "probe-synth", "path": str(synth_data.probe), "kind": "probe"}]},
        "steps": 2, "batch_size": 2, "checkpoint_every": 2, "log_every": 1, "precision": "fp32",
        "sweep": "three", "out_dir": str(tmp_path / "runs")})
    out = run_training(cfg, db=None, progress=False)
    assert out.status == "finished" and out.step == 2
    rows = read_jsonl(out.run_dir / "metrics.jsonl")
    assert rows[-1]["flops"] == pytest.approx(2 * train_flops_per_step(model_map, 16, 4, 2))
    evals = {r["bench"]: r for r in read_jsonl(out.run_dir / "evals.jsonl")}
    print({k: v["values"] for k, v in evals.items()})
    assert "psnr" in evals["re10k-synth"]["values"] and evals["probe-synth-per-scene"]["values"]
    model = load_model_from_checkpoint(out.run_dir, latest_checkpoint(out.run_dir), torch.device("cpu"))
    assert isinstance(model, ThreeNetworkRayDer)
