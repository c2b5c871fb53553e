"""E-RayZer network: the official module layout and parameter count, the pairwise pose head (identity canonical view,
equivariance), the additive focal head, the bracketed reference split, the losses in the official units, focal
detaching, config errors, the width ladder, and analytic FLOPs against FlopCounterMode."""

from __future__ import annotations

import logging
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from rayder_core.models.erayzer import ERayZer, ERayZerConfig, flops
from rayder_core.models.erayzer.pose_network import rotation_from_6d, rotation_from_quat
from rayder_core.models.erayzer.config import PRESETS, scale_width

PAPER_PARAMS = 246e6  # RayDer Table 5, "E-RayZer* 246M"


def official_param_count(d: int, d_head: int, blocks: int, patch: int, sh: int, registers: int) -> int:
    """The parameters of the official modules (QitaoZhao/E-RayZer erayzer.py, utils_transformer.py) added up by hand:
    `blocks` QK_Norm_TransformerBlocks per transformer (two transformers), each LayerNorm(d, no bias) x 2, to_qkv 3d^2,
    fc d^2, MLP 8 d^2 (no biases), RMSNorm(d_head) x 2; image tokenizer 3 p^2 d; pe_embedder and pe_embedder_plucker
    2 (d^2 + d) each; camera token d and registers; input_pose_tokenizer 6 p^2 d; mlp_fuse LayerNorm(2d, no bias),
    Linear(2d, d) + b, Linear(d, d) + b; decoder LayerNorm(d, no bias), Linear(d, p^2 G, no bias); rel_head
    Linear(2d, d) + b, Linear(d, 9) + b; canonical_k_head Linear(d, d) + b, Linear(d, 1, no bias)."""
    block = 2 * d + 3 * d * d + d * d + 8 * d * d + 2 * d_head
    g = 3 + 3 * (sh + 1) ** 2 + 3 + 4 + 1
    return (2 * blocks * block + 3 * patch**2 * d + 2 * 2 * (d * d + d) + d + registers * d + 6 * patch**2 * d
            + (2 * d + 2 * d * d + d + d * d + d) + (d + d * patch**2 * g)
            + (2 * d * d + d + 9 * d + 9) + (d * d + d + d))


def test_base_preset_matches_the_official_modules_and_the_paper():
    cfg = ERayZerConfig.from_preset("base")
    assert (cfg.patch, cfg.width, cfg.heads, cfg.head_dim, cfg.camera_layers, cfg.scene_layers) == \
        (16, 768, 12, 64, 8, 8)
    assert cfg.gaussian_channels == 59  # 3 + 48 (SH degree 3) + 3 + 4 + 1
    n = flops.param_count(cfg)
    official = official_param_count(768, 64, 16, 16, 3, 4)
    print(f"E-RayZer base: {n} parameters ({n / 1e6:.2f}M, {100 * (n / PAPER_PARAMS - 1):+.2f}% vs 246M; "
          f"official modules {official})")
    assert n == official
    assert abs(n / PAPER_PARAMS - 1) < 0.005
    sizes = [flops.param_count(ERayZerConfig.from_preset(p)) for p in ("XS", "S", "B", "L")]
    assert sizes == sorted(sizes) and sizes[2] == n


def test_blocks_are_bias_free_with_rms_qk_norm_and_frame_attention_first():
    m = ERayZer(ERayZerConfig.from_preset("tiny-s"))
    layer = m.camera_net.layers[0]
    for block in (layer.frame_block, layer.global_block):
        assert all(lin.bias is None for lin in block.modules() if isinstance(lin, nn.Linear))
        assert all(ln.bias is None for ln in block.modules() if isinstance(ln, nn.LayerNorm))
        assert tuple(block.q_norm.weight.shape) == (m.cfg.head_dim,)
    # RMSNorm: x / sqrt(mean x^2 + 1e-5) * weight
    x = torch.randn(3, 5, m.cfg.head_dim)
    q = layer.frame_block.q_norm
    with torch.no_grad():
        q.weight.uniform_(0.5, 1.5)
    assert torch.allclose(q(x), x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * q.weight, atol=1e-6)
    # frame attention runs first: the frame block sees sequences of one view (B V, L, C)
    calls = []
    hooks = [b.register_forward_hook(lambda mod, inp, out, name=name: calls.append((name, inp[0].shape[0])))
             for name, b in (("frame", layer.frame_block), ("global", layer.global_block))]
    m.predict_cameras(torch.rand(2, 3, 3, 16, 16) * 2 - 1)
    for h in hooks:
        h.remove()
    assert calls == [("frame", 6), ("global", 2)]
    # the scene transformer reuses the camera transformer's image embedding (no tokenizer of its own)
    assert not any("image" in name for name, _ in m.scene_net.named_parameters())


def test_position_embedding_is_the_official_sincos_table():
    """The 2D table against the official formula restated (get_2d_sincos_pos_embed: grid meshgrid(w, h), emb of
    grid[0] then of grid[1], each 1D = [sin(p w), cos(p w)] with w = 1 / 10000^(i / (D/2)) over D = dim / 2)."""
    from rayder_core.models.erayzer.layers import sincos_table_2d

    dim, g = 16, 5

    def emb1d(d, pos):
        omega = 1.0 / 10000 ** (torch.arange(d // 2, dtype=torch.float64) / (d // 2))
        a = pos.double()[:, None] * omega
        return torch.cat([torch.sin(a), torch.cos(a)], -1)

    gw, gh = torch.meshgrid(torch.arange(g), torch.arange(g), indexing="ij")  # w goes first
    ref = torch.cat([emb1d(dim // 2, gw.reshape(-1)), emb1d(dim // 2, gh.reshape(-1))], -1)
    assert torch.allclose(sincos_table_2d(dim, g, g).double(), ref, atol=1e-6)


def _model(preset="tiny-xs", seed=0, **over) -> ERayZer:
    torch.manual_seed(seed)
    return ERayZer(ERayZerConfig.from_preset(preset, **over)).eval()


@pytest.mark.parametrize("rotation", ["6d", "quat"])
def test_canonical_view_is_identity_and_poses_are_rotations(rotation):
    m = _model(rotation=rotation)
    x = torch.rand(2, 5, 3, 32, 32) * 2 - 1
    est = m.predict_cameras(x)
    assert est.canonical == 2
    assert torch.equal(est.camera.R[:, 2], torch.eye(3).expand(2, 3, 3))
    assert torch.equal(est.camera.t[:, 2], torch.zeros(2, 3))
    R = est.camera.R
    assert torch.allclose(R @ R.transpose(-1, -2), torch.eye(3).expand_as(R), atol=1e-5)
    assert torch.allclose(torch.linalg.det(R), torch.ones(2, 5), atol=1e-5)
    assert not torch.allclose(R[:, 0], torch.eye(3), atol=1e-4)  # non-canonical views get their own poses
    assert est.camera_tokens.shape == (2, 5, m.cfg.width)
    assert m.camera_net.pose_head[-1].out_features == (9 if rotation == "6d" else 7)
    # one focal per sample, shared by all views: focal = head(token_c) + 1.25 (additive), fx / W = fy / H
    assert torch.allclose(est.camera.f, est.camera.f[:, :1].expand(2, 5))
    head = m.camera_net.focal_head
    tok = est.camera_tokens[:, 2]
    focal = F.linear(F.silu(F.linear(tok, head[0].weight, head[0].bias)), head[2].weight)[:, 0] + 1.25
    assert head[2].bias is None
    assert torch.allclose(est.camera.f[:, 0], focal * 32 / (31 / 2), rtol=1e-5)
    with pytest.raises(ValueError, match="square"):
        m.predict_cameras(torch.zeros(1, 3, 3, 32, 48))


def test_pose_head_is_equivariant_to_permuting_non_canonical_views():
    m = _model("tiny-s")
    x = torch.rand(1, 5, 3, 32, 32) * 2 - 1
    perm = torch.tensor([3, 0, 2, 4, 1])  # the canonical (middle) view stays in the middle
    a = m.predict_cameras(x)
    b = m.predict_cameras(x[:, perm])
    assert torch.allclose(b.camera.R, a.camera.R[:, perm], atol=1e-5)
    assert torch.allclose(b.camera.t, a.camera.t[:, perm], atol=1e-5)
    assert torch.allclose(b.camera.f, a.camera.f, atol=1e-5)
    # changing which view is canonical changes the frame: not a mere permutation
    c = m.predict_cameras(x[:, torch.tensor([2, 0, 1, 3, 4])])
    assert c.camera.t[:, 0].abs().max() > 1e-5  # canonical t is exactly 0; the old canonical view now moves


def test_rotation_parametrisations_closed_form():
    assert torch.allclose(rotation_from_6d(torch.tensor([2.0, 0, 0, 0.5, 3.0, 0])), torch.eye(3))
    R = rotation_from_quat(torch.tensor([0.0, 0.0, 0.0, 1.0]))  # 180 deg about z
    assert torch.allclose(R, torch.diag(torch.tensor([-1.0, -1.0, 1.0])), atol=1e-7)


def test_focal_is_detached_for_the_first_steps():
    m = _model(focal_detach_steps=2).train()
    x = torch.rand(1, 4, 3, 32, 32) * 2 - 1
    grads = []
    for _ in range(3):
        m.zero_grad()
        m.training_loss(x, torch.Generator().manual_seed(0))["loss"].backward()
        g = m.camera_net.focal_head[0].bias.grad
        grads.append(0.0 if g is None else float(g.abs().sum()))
    assert grads[0] == 0.0 and grads[1] == 0.0 and grads[2] > 0.0
    assert int(m.train_steps) == 3


def test_config_errors_name_key_and_source():
    with pytest.raises(ValueError, match=r"run\.yaml: model.*'sh_degree'"):
        ERayZerConfig.from_dict({"preset": "tiny-xs", "sh_degree": 4}, source="run.yaml: model")
    with pytest.raises(ValueError, match=r"unknown E-RayZer model config key\(s\) \['widht'\]"):
        ERayZerConfig.from_dict({"widht": 64}, source="x")
    with pytest.raises(ValueError, match="'head_dim'.*must divide width"):
        ERayZerConfig.from_preset("tiny-xs", head_dim=24)
    with pytest.raises(ValueError, match="'heads' = 4 and 'head_dim' = 32 disagree"):
        ERayZerConfig.from_dict({"preset": "tiny-xs", "heads": 4, "head_dim": 32})
    with pytest.raises(ValueError, match="'heads' = 3: must divide width 64"):
        ERayZerConfig.from_dict({"preset": "tiny-xs", "heads": 3})
    with pytest.raises(ValueError, match="unknown E-RayZer preset"):
        ERayZerConfig.from_preset("huge")
    with pytest.raises(ValueError, match="ref_split"):
        ERayZerConfig.from_preset("tiny-xs", ref_split="middle")
    cfg = ERayZerConfig.from_dict({"family": "erayzer", "preset": "tiny-s", "far": 6})
    assert cfg.width == 96 and cfg.far == 6.0 and isinstance(cfg.far, float)
    m = _model()
    with pytest.raises(ValueError, match="divisible by the patch size 4"):
        m.predict_cameras(torch.zeros(1, 3, 3, 30, 32))
    with pytest.raises(ValueError, match="at least 3 views"):
        m.training_loss(torch.zeros(1, 2, 3, 16, 16))


def test_stored_configs_with_heads_keep_their_meaning():
    """A config stored before `head_dim` existed (to_dict had 'heads') reads back with head_dim = width / heads."""
    old = {"preset": "tiny-b", "width": 128, "heads": 4, "camera_layers": 2, "scene_layers": 2}
    cfg = ERayZerConfig.from_dict(old)
    assert (cfg.head_dim, cfg.heads) == (32, 4)
    assert ERayZerConfig.from_dict(cfg.to_dict()) == cfg and "heads" not in cfg.to_dict()
    assert ERayZerConfig.from_preset("tiny-xs").head_dim == 32 and ERayZerConfig.from_preset("base").head_dim == 64


def test_width_ladder_scales_every_width_by_one_factor():
    """tiny-w16 ... tiny-w256: every parameter dimension is either fixed (the task's input/output sizes) or scales with
    the width; depth, head dim and everything else as tiny-xs."""
    names = [f"tiny-w{w}" for w in (16, 32, 64, 128, 256)]
    xs = ERayZerConfig.from_preset("tiny-xs")
    for name in names:
        cfg = ERayZerConfig.from_preset(name)
        assert cfg.head_dim == 16 and cfg.camera_layers == cfg.scene_layers == xs.camera_layers
        assert (cfg.patch, cfg.mlp_ratio, cfg.registers, cfg.sh_degree) == (xs.patch, xs.mlp_ratio, xs.registers,
                                                                             xs.sh_degree)
    small = dict(ERayZer(ERayZerConfig.from_preset("tiny-w16")).named_parameters())
    for name, factor in (("tiny-w32", 2), ("tiny-w64", 4), ("tiny-w256", 16)):
        big = dict(ERayZer(ERayZerConfig.from_preset(name)).named_parameters())
        assert big.keys() == small.keys()
        for key, p in small.items():
            for a, b in zip(p.shape, big[key].shape):
                assert b in (a, factor * a), (name, key, p.shape, big[key].shape)
            if "q_norm" in key or "k_norm" in key:
                assert big[key].shape == p.shape  # head dim fixed
        assert scale_width(ERayZerConfig.from_preset("tiny-w16"), 16 * factor) == \
            ERayZerConfig.from_preset(name, preset="tiny-w16")
    with pytest.raises(ValueError, match="multiple of head_dim 16"):
        scale_width(ERayZerConfig.from_preset("tiny-w16"), 24)
    assert all(n in PRESETS for n in names)


def test_bracketed_split_keeps_first_and_last_as_references():
    """Official `random_split`: views 0 and K-1 always references, the n_ref - 2 others uniform over 1..K-2."""
    m = _model()
    gen = torch.Generator().manual_seed(0)
    counts = torch.zeros(10)
    for _ in range(400):
        ref, tgt = m.split_views(10, 3, gen, torch.device("cpu"))
        assert ref.shape == (3, 5) and tgt.shape == (3, 5)
        assert (ref[:, 0] == 0).all() and (ref[:, -1] == 9).all()
        assert ((tgt > 0) & (tgt < 9)).all()  # every target lies between references
        for r, t in zip(ref, tgt):
            assert sorted(r.tolist() + t.tolist()) == list(range(10))
        counts += torch.bincount(ref.flatten(), minlength=10)
    inner = counts[1:9] / counts[1:9].sum()
    assert (inner - 1 / 8).abs().max() < 0.03  # 3 of 8 inner views, uniformly
    assert m.cfg.n_ref_for(4) == 2 and m.cfg.n_ref_for(3) == 2 and m.cfg.n_ref_for(10) == 5
    r, t = _model(ref_split="random").split_views(4, 200, gen, torch.device("cpu"))
    assert (r[:, 0] != 0).any()  # the random split also draws references away from the ends


def test_loss_is_the_official_mse_in_unit_pixels_plus_missing_perceptual(caplog, monkeypatch):
    """loss = mean((clamp(render01, 0, 1) - target01)^2) (official units, 1/4 of the [-1, 1] MSE); the perceptual term
    without VGG19 weights is recorded missing (status, warning, NaN), not dropped silently."""
    monkeypatch.delenv("ERAYZER_VGG19_WEIGHTS", raising=False)
    m = _model().train()
    x = torch.rand(2, 4, 3, 16, 16) * 2 - 1
    with caplog.at_level(logging.WARNING):
        out = m.training_loss(x, torch.Generator().manual_seed(0))
    r01 = ((out["render"].detach() + 1) / 2).clamp(0, 1)
    t01 = (out["target"] + 1) / 2
    expect = ((r01 - t01) ** 2).mean()
    assert float(out["loss"].detach()) == pytest.approx(float(expect), rel=1e-6)
    assert float(out["mse"]) == pytest.approx(4 * float(expect), rel=1e-6)
    assert float(out["psnr"]) == pytest.approx(-10 * math.log10(float(expect)), rel=1e-6)
    assert math.isnan(float(out["perceptual"])) and m.perceptual_status.startswith("missing: VGG19 weights")
    assert "perceptual term (weight 0.2) missing" in caplog.text
    off = _model(perceptual_weight=0).train()
    assert off.perceptual_status.startswith("off") and float(off.training_loss(x)["perceptual"]) == 0.0


def _official_perceptual(state: dict, p01: torch.Tensor, t01: torch.Tensor) -> torch.Tensor:
    """The official PerceptualLoss.forward restated with F.conv2d on the raw state dict (VGG19, average pooling)."""
    mean = torch.tensor([123.6800, 116.7790, 103.9390]).reshape(1, 3, 1, 1)

    def feats(x):
        out, taps = x, []
        for i in range(1, 15):
            out = F.relu(F.conv2d(out, state[f"conv{i}.weight"], state[f"conv{i}.bias"], padding=1))
            if i in (2, 4, 6, 10, 14):
                taps.append(out)
            if i in (2, 4, 8, 12):
                out = F.avg_pool2d(out, 2, 2)
        return taps

    r, f = t01 * 255.0 - mean, p01 * 255.0 - mean
    fr, ff = feats(r), feats(f)
    e = [torch.mean(torch.abs(r - f))] + [torch.mean(torch.abs(a - b)) for a, b in zip(fr, ff)]
    return (e[0] + e[1] / 2.6 + e[2] / 4.8 + e[3] / 3.7 + e[4] / 5.6 + e[5] * 10.0 / 1.5) / 255.0


def test_perceptual_term_is_the_official_vgg19_distance(tmp_path, monkeypatch):
    from rayder_core.models.erayzer import perceptual

    torch.manual_seed(1)
    net = perceptual.VGG19Features()
    path = tmp_path / "vgg19.pt"
    perceptual.save_state_dict(net, path)
    monkeypatch.setenv("ERAYZER_VGG19_WEIGHTS", str(path))
    m = _model().train()
    x = torch.rand(1, 4, 3, 16, 16) * 2 - 1
    out = m.training_loss(x, torch.Generator().manual_seed(0))
    r01 = ((out["render"].detach() + 1) / 2).clamp(0, 1).reshape(-1, 3, 16, 16)
    t01 = ((out["target"] + 1) / 2).reshape(-1, 3, 16, 16)
    state = torch.load(path, weights_only=True)
    term = _official_perceptual(state, r01, t01)
    assert float(out["perceptual"]) == pytest.approx(float(term), rel=1e-5)
    assert float(out["loss"].detach()) == pytest.approx(float(((r01 - t01) ** 2).mean() + 0.2 * term), rel=1e-5)
    assert m.perceptual_status == f"on: VGG19 weights {path}"
    assert flops.param_count(m.cfg) == sum(p.numel() for p in m.parameters())  # VGG19 is not a model parameter
    out["loss"].backward()  # the term is differentiable through the render


CASES = [("tiny-xs", (32, 32), 4, {}), ("tiny-s", (32, 32), 5, {"n_ref": 3}),
         ("tiny-b", (16, 16), 3, {"order": "global-frame", "rotation": "quat"})]


@pytest.mark.parametrize("name,hw,views,over", CASES)
def test_network_flops_match_flop_counter(name, hw, views, over):
    cfg = ERayZerConfig.from_preset(name, **over)
    m = _model(name, **over)
    x = torch.rand(1, views, 3, *hw) * 2 - 1
    ours = flops.forward_flops(cfg, hw, views)
    n_ref = flops.n_ref_for(cfg, views)
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        est = m.estimate_cameras(x)
    camera = counter.get_total_flops()
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        m.scene_net(est.image_tokens[:, :n_ref], est.camera[:, :n_ref], *hw)  # image tokens reused, as training
    scene = counter.get_total_flops()
    print(f"{name} {hw} V={views}: camera {camera} vs {ours['camera']:.0f}, scene {scene} vs {ours['scene']:.0f}")
    assert camera == pytest.approx(ours["camera"], rel=1e-6)
    assert scene == pytest.approx(ours["scene"], rel=1e-6)
    report = flops.count_flops(cfg, hw[0], views)
    pairs = (views - n_ref) * hw[0] * hw[1] * n_ref * hw[0] * hw[1]  # target pixels x Gaussians
    gauss = (views - n_ref) * n_ref * hw[0] * hw[1]
    assert report.raster_forward == pairs * flops.RASTER_PAIR_FLOPS + gauss * flops.PROJECT_FLOPS
    assert report.train_per_sample == pytest.approx(3 * (ours["camera"] + ours["scene"] + report.raster_forward))


def test_training_backward_is_about_two_forwards():
    """FlopCounterMode over forward + backward of the network parts is ~3 x forward (as the analytic train count)."""
    cfg = ERayZerConfig.from_preset("tiny-xs")
    m = _model().train()
    x = torch.rand(1, 4, 3, 32, 32) * 2 - 1
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        est = m.estimate_cameras(x)
        g = m.scene_net(est.image_tokens[:, :2], est.camera[:, :2], 32, 32)
        (g["means"].sum() + g["sh"].sum() + g["opacities"].sum()).backward()
    measured = counter.get_total_flops()
    f = flops.forward_flops(cfg, 32, 4)
    ratio = measured / (f["camera"] + f["scene"])
    print(f"forward+backward / forward = {ratio:.3f}")
    assert 2.7 < ratio <= 3.0  # first-layer input gradients are not computed


def test_rendering_stays_fp32_under_bf16_autocast():
    m = _model()
    x = torch.rand(1, 4, 3, 16, 16) * 2 - 1
    est = m.predict_cameras(x)
    with torch.no_grad():
        g = m.reconstruct(x[:, :2], est.camera[:, :2])
        ref = m.render(g, est.camera[:, 2:], 16, 16)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = m.render(g, est.camera[:, 2:], 16, 16)
    assert out.dtype == torch.float32 and torch.equal(out, ref)
