"""RayDer network: sizes, config validation, cached inference, equivariance, gradients and a CPU training step."""

import pytest
import torch

from rayder_core.geometry import Camera, camera_from_params
from rayder_core.models.base import count_parameters
from rayder_core.models.rayder.model import RayDer
from rayder_core.models.rayder.config import PRESETS, ModelConfig

PAPER_PARAMS = {"XS": 59e6, "S": 145e6, "B": 422e6, "L": 743e6}  # Table 2


def randomized(cfg: ModelConfig, seed: int = 0) -> RayDer:
    """A model whose zero-initialised layers get small random weights, so every path carries signal."""
    torch.manual_seed(seed)
    model = RayDer(cfg)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim >= 1 and not p.any():
                p.normal_(0, 0.05)
    return model


def small_cfg(**kw) -> ModelConfig:
    return ModelConfig.from_preset("tiny-xs", **kw)


def frames(b=2, v=4, res=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, v, 3, res, res, generator=g) * 2 - 1


def random_cameras(b, v, seed=0):
    g = torch.Generator().manual_seed(seed)
    ext = torch.randn(b, v, 6, generator=g, dtype=torch.float64) * 0.5
    intr = torch.randn(b, v, 1, generator=g, dtype=torch.float64) * 0.1
    return camera_from_params(ext, intr)


@pytest.mark.parametrize("name", ["XS", "S", "B", "L"])
def test_paper_parameter_counts(name):
    with torch.device("meta"):
        model = RayDer(ModelConfig.from_preset(name))
    n = count_parameters(model)
    print(f"RayDer-{name}: {n / 1e6:.1f}M parameters (paper {PAPER_PARAMS[name] / 1e6:.0f}M)")
    assert abs(n / PAPER_PARAMS[name] - 1) < 0.03
    cfg = model.cfg
    assert (cfg.depth, cfg.width, cfg.heads) == {
        "XS": (12, 384, 6), "S": (18, 512, 8), "B": (24, 768, 12), "L": (24, 1024, 16)
    }[name]


def test_config_validation_names_key_and_source():
    with pytest.raises(ValueError, match=r"runs/a\.yaml.*unknown model config key.*'widht'"):
        ModelConfig.from_dict({"preset": "XS", "widht": 3}, source="runs/a.yaml")
    with pytest.raises(ValueError, match=r"sweep\.yaml.*'autoregression'"):
        ModelConfig.from_dict({"preset": "XS", "autoregression": "sideways"}, source="sweep.yaml")
    with pytest.raises(ValueError, match="'heads'"):
        ModelConfig.from_dict({"width": 128, "depth": 2, "heads": 3}, source="x")
    with pytest.raises(ValueError, match="'state_dropout'"):
        ModelConfig.from_preset("tiny-s", state_dropout=1.5)
    with pytest.raises(ValueError, match="unknown model preset"):
        ModelConfig.from_preset("XXL")
    cfg = ModelConfig.from_dict({"preset": "tiny-b", "local_widths": [64, 128], "state_dropout": 0}, source="y")
    assert cfg.width == PRESETS["tiny-b"]["width"] and cfg.local_widths == (64, 128)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg


def test_image_size_must_divide_16():
    model = RayDer(small_cfg())
    with pytest.raises(ValueError, match="divisible by 16"):
        model.predict_cameras(torch.zeros(1, 2, 3, 40, 32))
    with pytest.raises(ValueError, match=r"\(B, V, 3, H, W\)"):
        model.predict_cameras(torch.zeros(1, 2, 32, 32, 3))


def test_initial_state_of_a_fresh_model():
    model = RayDer(small_cfg())
    x = frames()
    est = model.predict_cameras(x)
    torch.testing.assert_close(est.camera.f, torch.full((2, 4), 1.0 + 1e-6, dtype=torch.float64))
    assert est.state.shape == (2, 4, model.cfg.d_state) and est.camera_tokens.shape == (2, 4, model.cfg.width)
    out = model.predict_views(x[:, :2], est.camera[:, :2], est.camera[:, 2:])
    assert torch.equal(out, torch.zeros_like(out))  # zero-init output layer: grey images
    assert model.backend == "sdpa"


@pytest.mark.parametrize("res", [32, (48, 32)])
def test_cached_inference_equals_uncached(res):
    h, w = (res, res) if isinstance(res, int) else res
    model = randomized(small_cfg()).eval()
    g = torch.Generator().manual_seed(3)
    inputs = torch.rand(2, 3, 3, h, w, generator=g) * 2 - 1
    cams_in, cams_t = random_cameras(2, 3, seed=1), random_cameras(2, 5, seed=2)
    state = torch.randn(2, 5, model.cfg.d_state, generator=g)
    with torch.no_grad():
        ref = model.render(inputs, cams_in, cams_t, state)
    assert ref.abs().mean() > 1e-3
    for chunk in (None, 2, 1):
        out = model.predict_views(inputs, cams_in, cams_t, state, target_chunk=chunk)
        torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    # Targets are independent of each other: rendering one alone gives the same image.
    one = model.predict_views(inputs, cams_in, cams_t[:, 3:4], state[:, 3:4])
    torch.testing.assert_close(one, ref[:, 3:4], atol=1e-5, rtol=1e-5)


def test_camera_estimation_is_permutation_equivariant():
    model = randomized(small_cfg()).eval()
    x = frames(b=2, v=5)
    perm = torch.tensor([3, 0, 4, 2, 1])
    a, b = model.predict_cameras(x), model.predict_cameras(x[:, perm])
    for got, want in ((b.camera.R, a.camera.R[:, perm]), (b.camera.t, a.camera.t[:, perm]),
                      (b.camera.f, a.camera.f[:, perm]), (b.state, a.state[:, perm])):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(a.camera.t[:, 0], a.camera.t[:, 1])  # views really differ


def test_gradients_reach_pose_and_focal_heads_through_pluecker_rays():
    model = randomized(small_cfg()).train()
    out = model.training_loss(frames(), generator=torch.Generator().manual_seed(0))
    out["loss"].backward()
    # The heads reach the loss only through the cameras, i.e. through the Plücker ray maps.
    for head in (model.pose_head, model.focal_head):
        assert head.proj.weight.grad is not None and head.proj.weight.grad.abs().sum() > 0
    assert model.camera_token.grad.abs().sum() > 0


@pytest.mark.parametrize("mode", ["random", "ordered", "none"])
def test_training_step_on_cpu(mode):
    model = RayDer(small_cfg(autoregression=mode))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = frames(b=2, v=4)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    out = model.training_loss(x, generator=torch.Generator().manual_seed(0))
    assert set(out) >= {"loss", "mse", "psnr", "focal_mean", "pred"}
    assert out["loss"].ndim == 0 and out["loss"].requires_grad and not out["pred"].requires_grad
    n_t = 2 if mode == "none" else 3
    assert out["pred"].shape == (2, n_t, 3, 32, 32)
    torch.testing.assert_close(out["psnr"], -10 * torch.log10(out["mse"] / 4))
    # Fresh model predicts 0 everywhere: mse = mean of the target pixels squared.
    targets = x[:, 2:] if mode == "none" else None
    if targets is not None:
        torch.testing.assert_close(out["mse"], (targets**2).mean())
    out["loss"].backward()
    opt.step()
    changed = [n for n, p in model.named_parameters() if not torch.equal(p, before[n])]
    assert "output.proj.weight" in changed
    out2 = model.training_loss(x, generator=torch.Generator().manual_seed(0))
    assert out2["loss"] < out["loss"]


def test_training_randomness_comes_from_generator():
    model = randomized(small_cfg())
    x = frames(b=2, v=5)
    torch.manual_seed(123)
    a = model.training_loss(x, generator=torch.Generator().manual_seed(7))
    torch.manual_seed(456)
    b = model.training_loss(x, generator=torch.Generator().manual_seed(7))
    c = model.training_loss(x, generator=torch.Generator().manual_seed(8))
    torch.testing.assert_close(a["loss"], b["loss"], rtol=0, atol=0)
    assert not torch.equal(a["pred"], c["pred"])


def test_ablation_switches_build_and_run():
    for kw in ({"dynamic_state": False}, {"local_layers": False}, {"state_dropout": 0.0}):
        model = RayDer(small_cfg(**kw))
        out = model.training_loss(frames(b=1, v=3), generator=torch.Generator().manual_seed(0))
        assert torch.isfinite(out["loss"])
    assert not hasattr(RayDer(small_cfg(dynamic_state=False)), "state_head")
    n_local = sum(p.numel() for n, p in RayDer(small_cfg()).named_parameters() if n.startswith(("down", "up")))
    assert n_local > 0
    assert not any(n.startswith(("down", "up")) for n, _ in RayDer(small_cfg(local_layers=False)).named_parameters())


def test_bf16_autocast_training_step():
    model = RayDer(small_cfg())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model.training_loss(frames(b=1, v=3), generator=torch.Generator().manual_seed(0))
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and out["loss"].dtype == torch.float32
