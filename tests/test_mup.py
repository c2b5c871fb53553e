"""muP (rayder_core.mup): the per-parameter rule table against Tensor Programs V's rules, the init and LR that follow
from it, equality with the standard parametrisation at the base width, the coordinate check, and training runs
(muP resumes bit-exactly; the standard path is a plain single-group AdamW)."""
from __future__ import annotations

import json

import pytest
import torch

from rayder_core import mup
from rayder_core.coord_check import coord_check, width_spread
from rayder_core.fileio import read_jsonl
from rayder_core.models import build_for_training, build_model, model_config, param_count, train_flops_per_step
from rayder_core.models.rayder.config import LADDER_WIDTHS, scale_width
from rayder_core.training.checkpoints import latest_checkpoint
from rayder_core.training.trainer import run_training
from rayder_core.train_config import load_train_config
from rayder_core.yamlconf import ConfigError

from test_train import tiny_config

ARCH = {"patch": 2, "local_layers": False}


def _mup(width: int, base: int = 16) -> dict:
    return {"preset": f"tiny-w{width}", **ARCH, "parametrization": "mup", "mup_base_width": base}


# Expected roles written out from TP5 Table 8 for named parameters of RayDer at width 64 over base 16: a hidden
# matrix has both dims scaled, a readout maps the width to a fixed size, an input layer maps a fixed size (pixels,
# roles) to the width, vectors/gains and the per-head cosine scale have one scaled dim, scalars none.
EXPECTED_ROLES = {
    "backbone.0.global_attn.qkv.weight": "hidden",
    "backbone.1.ff.down.weight": "hidden",
    "backbone.0.global_norm.linear.weight": "hidden",   # adaLN modulation: d_cond (2 x width) -> width
    "mid_split.proj.weight": "hidden",
    "state_head.proj.weight": "hidden",                 # d_state scales with width
    "output.proj.weight": "output",                     # width -> 3 x patch^2 pixels
    "pose_head.proj.weight": "output",
    "focal_head.proj.weight": "output",
    "merges.0.proj.weight": "vector",                   # 9 channels x patch^2 -> width: an input layer
    "role_embedding.weight": "vector",
    "camera_token": "vector",
    "backbone.0.global_attn.scale": "vector",           # one learned cosine scale per head
    "output.norm.weight": "vector",
    "state_head.proj.bias": "vector",
    "pose_head.proj.bias": "fixed",
    "mid_split.fac": "fixed",
}


def test_rule_table_follows_tensor_programs_v():
    cfg = model_config(_mup(64))
    torch.manual_seed(0)
    model = build_model(cfg)
    base = build_model(scale_width(cfg, 16))
    rules = mup.classify(model, base)
    for name, role in EXPECTED_ROLES.items():
        rule = rules[name]
        assert rule.role == role, name
        m = 64 / 16
        lr, init = {"hidden": (1 / m, m ** -0.5), "output": (1 / m, 1 / m), "vector": (1, 1), "fixed": (1, 1)}[role]
        assert rule.lr_mult == pytest.approx(lr) and rule.init_mult == pytest.approx(init), name
    # every linear weight with both dims scaled is hidden, every parameter has a role
    assert {r.role for r in rules.values()} == set(mup.ROLES)
    for name, r in rules.items():
        if r.role == "hidden":
            assert sum(a != b for a, b in zip(r.shape, r.base_shape)) == 2, name


def test_mup_init_scales_hidden_by_fan_in_and_readouts_by_width():
    model, rules = build_for_training(_mup(128), seed=3)
    base, _ = build_for_training({"preset": "tiny-w16", **ARCH}, seed=3)
    base_params, params = dict(base.named_parameters()), dict(model.named_parameters())
    checked = 0
    for name, rule in rules.items():
        b_std, std = float(base_params[name].detach().float().std()), float(params[name].detach().float().std())
        if rule.role in ("hidden", "output") and b_std > 0:
            assert std == pytest.approx(b_std * rule.init_mult, rel=1e-5), name
            checked += 1
        if rule.role in ("hidden", "output") and b_std == 0:
            assert std == 0, name  # zero-initialised weights stay zero
    assert checked >= 10
    assert rules["pose_head.proj.weight"].init_mult == pytest.approx(1 / 8)


def test_mup_at_the_base_width_is_the_standard_parametrisation():
    standard, none = build_for_training({"preset": "tiny-w32", **ARCH}, seed=5)
    at_base, rules = build_for_training(_mup(32, base=32), seed=5)
    assert none is None and all(r.lr_mult == 1 and r.init_mult == 1 for r in rules.values())
    for (n, a), (_, b) in zip(standard.named_parameters(), at_base.named_parameters()):
        assert torch.equal(a, b), n
    torch.manual_seed(5)
    plain = build_model(model_config({"preset": "tiny-w32", **ARCH}))
    assert all(torch.equal(a, b) for a, b in zip(plain.parameters(), standard.parameters()))


def test_param_groups_carry_their_multiplier():
    model, rules = build_for_training(_mup(64), seed=0)
    groups = mup.param_groups(model, rules, weight_decay=0.01)
    assert sorted(g["lr_mult"] for g in groups) == pytest.approx([0.25, 1.0])
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    by_mult = {g["lr_mult"]: set(g["roles"]) for g in groups}
    assert by_mult[0.25] == {"hidden", "output"} and by_mult[1.0] == {"vector", "fixed"}


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="parametrization"):
        load_train_config({"model": {"preset": "tiny-w32", "parametrization": "mu-p"}})
    with pytest.raises(ConfigError, match="mup_base_width"):
        load_train_config({"model": {"preset": "tiny-w32", "parametrization": "mup"}})
    with pytest.raises(ConfigError, match="mup_base_width"):
        load_train_config({"model": {"preset": "tiny-w32", "mup_base_width": 16}})
    with pytest.raises(ConfigError, match="multiple of 16"):  # 24 / 32 of width 32: no whole heads
        load_train_config({"model": {"preset": "tiny-w32", "parametrization": "mup", "mup_base_width": 24}})


def test_width_ladder_scales_every_width_and_the_flops():
    cfgs = [model_config({"preset": f"tiny-w{w}", **ARCH}) for w in LADDER_WIDTHS]
    for cfg, w in zip(cfgs, LADDER_WIDTHS):
        assert (cfg.width, cfg.heads, cfg.head_dim, cfg.local_widths, cfg.d_state, cfg.d_cond) == \
            (w, w // 16, 16, (w, w), w // 2, 2 * w)
        assert scale_width(cfgs[0], w).to_dict() == {**cfg.to_dict(), "preset": "tiny-w16"}
    params = [param_count(c) for c in cfgs]
    flops = [train_flops_per_step(c, 32, 4, 1) for c in cfgs]
    # parameters ~ width^2 (matrices; ~4x per doubling) and FLOPs > width^1.3 (> 2.5x per doubling: attention over
    # tokens is linear in width)
    rungs = list(zip(LADDER_WIDTHS, params, flops))
    for (wa, a, fa), (wb, b, fb) in zip(rungs, rungs[1:]):
        r = wb / wa
        assert 0.87 * r**2 < b / a < 1.03 * r**2, (wa, wb, b / a)
        assert fb / fa > r**1.3, (wa, wb, fb / fa)


@pytest.mark.slow
def test_coordinate_check_flat_under_mup_growing_under_standard():
    """Over widths 32..256 (8x), 5 AdamW steps at LR 1e-2: each block's output RMS varies < 2x under muP; under the
    standard parametrisation the backbone's grows with width; muP without the readout multipliers fails the check."""
    model, widths = {"preset": "tiny-w16", **ARCH}, [32, 64, 128, 256]
    kw = dict(base_width=16, lr=1e-2, steps=5, resolution=16)
    good = width_spread(coord_check(model, widths, "mup", **kw), 5)
    assert max(good.values()) < 2.0, good
    std_rows = coord_check(model, widths, "standard", **kw)
    std = width_spread(std_rows, 5)
    assert std["backbone.1"] > 4.0, std
    backbone = [sum(r["rms"] for r in std_rows if r["block"] == "backbone.1" and r["width"] == w and r["step"] >= 1)
                for w in widths]
    assert backbone == sorted(backbone)  # grows monotonically with width
    broken = width_spread(coord_check(model, widths, "mup", break_readout=True, **kw), 5)
    assert max(broken.values()) > 2.0, broken


def _mup_config(data, out_dir):
    cfg = tiny_config(data, out_dir, **{"optim.lr": 3e-3})
    cfg["model"] = _mup(32)
    return cfg


def test_mup_run_resumes_bit_exact_and_keeps_its_groups(synth_data, tmp_path):
    full = load_train_config(_mup_config(synth_data, tmp_path / "a"))
    out = run_training(full, db=None, progress=False)
    ref = [r["loss"] for r in read_jsonl(out.run_dir / "metrics.jsonl")]
    cut = load_train_config(_mup_config(synth_data, tmp_path / "b"))
    assert run_training(cut, db=None, progress=False, should_stop=lambda s: s == 4).step == 4
    groups = torch.load(latest_checkpoint(cut.run_dir), weights_only=True)["optimizer"]["param_groups"]
    assert sorted(g["lr_mult"] for g in groups) == pytest.approx([0.5, 1.0])
    second = run_training(cut, db=None, progress=False)
    assert [r["loss"] for r in read_jsonl(second.run_dir / "metrics.jsonl")] == ref
    state = json.loads((second.run_dir / "state.json").read_text())
    assert state["runtime"]["parametrization"] == "mup" and state["runtime"]["mup_base_width"] == 16
    assert state["runtime"]["mup_roles"]["hidden"]["lr_mult"] == [0.5]


def test_standard_run_is_plain_adamw(synth_data, tmp_path):
    """The standard path is one AdamW group over model.parameters(), no multipliers: the logged LR is the schedule's,
    and writing `parametrization: standard` (the default) does not change the run id."""
    cfg = load_train_config(tiny_config(synth_data, tmp_path))
    out = run_training(cfg, db=None, progress=False)
    groups = torch.load(latest_checkpoint(out.run_dir), weights_only=True)["optimizer"]["param_groups"]
    assert len(groups) == 1 and "lr_mult" not in groups[0]
    lrs = [r["lr"] for r in read_jsonl(out.run_dir / "metrics.jsonl")]
    assert lrs[:2] == pytest.approx([3e-4 / 2, 3e-4])
    explicit = load_train_config({**tiny_config(synth_data, tmp_path),
                                  "model": {"preset": "tiny-xs", "parametrization": "standard"}})
    assert explicit.run_id == cfg.run_id
    assert load_train_config({**tiny_config(synth_data, tmp_path), "model": _mup(32)}).run_id != cfg.run_id


@pytest.mark.slow
def test_coordinate_check_erayzer():
    """The same muP code on the other family: E-RayZer's ladder (every width scaled, head dim 16). Its focal head
    outputs one number per view from a near-zero start, whose RMS over 8 values is noise at 5 steps: left out."""
    model, widths = {"family": "erayzer", "preset": "tiny-w16"}, [32, 64, 128, 256]
    kw = dict(base_width=16, lr=1e-2, steps=5, resolution=16)
    good = width_spread(coord_check(model, widths, "mup", **kw), 5)
    assert {"camera_net.layers.0", "scene_net.layers.0", "scene_net.decoder"} <= set(good)
    good.pop("camera_net.focal_head")
    assert max(good.values()) < 2.0, good
    std = width_spread(coord_check(model, widths, "standard", **kw), 5)
    assert std["scene_net.layers.0"] > 4.0 and std["camera_net.pose_head"] > 4.0, std
