"""Config D / E switches (Table B.2): random 6-input / 2-target partitions resampled each step; E renders both
targets in one sequence under parallel-target attention, D renders each target in its own full-attention sequence.
Each is checked against a direct construction (masks written out with loops, renders called by hand)."""
from __future__ import annotations

import itertools

import pytest
import torch

from rayder_core.models.rayder import masks
from rayder_core.models.rayder.model import RayDer
from rayder_core.models.rayder.config import ModelConfig

K, N_T = 8, 2  # Table B.2, Configs D and E: 6 input views, 2 output views


def test_parallel_mask_direct_construction():
    n_in, n_t = 6, 2
    direct = torch.zeros(n_in + n_t, n_in + n_t, dtype=torch.bool)
    for q, k in itertools.product(range(n_in + n_t), repeat=2):
        direct[q, k] = k < n_in or q == k  # inputs see all inputs; a target sees the inputs and itself
    assert torch.equal(masks.parallel_view_mask(n_in, n_t), direct)
    assert torch.equal(masks.full_view_mask(7), torch.ones(7, 7, dtype=torch.bool))
    # E differs from B.1 only in the input block: B.1 inputs are block-causal (Config F onwards)
    diff = masks.parallel_view_mask(n_in, n_t) ^ masks.inference_view_mask(n_in, n_t)
    assert diff.sum() == n_in * (n_in - 1) // 2 and not diff[n_in:].any()
    with pytest.raises(ValueError):
        masks.parallel_view_mask(0, 2)


def _model(mode: str) -> RayDer:
    torch.manual_seed(0)
    model = RayDer(ModelConfig.from_preset("tiny-xs", autoregression=mode, n_targets=N_T)).eval()
    with torch.no_grad():  # the output projections are zero-initialised: perturb so that renders are informative
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def _clip(b: int = 2) -> torch.Tensor:
    return torch.rand(b, K, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1


@pytest.mark.parametrize("mode", ["parallel", "per_target"])
def test_training_loss_equals_direct_construction(mode):
    model, x = _model(mode), _clip()
    out = model.training_loss(x, generator=torch.Generator().manual_seed(5))
    # direct: the same permutation, first 6 inputs, last 2 targets
    order = torch.rand(2, K, generator=torch.Generator().manual_seed(5)).argsort(dim=1)
    frames = x[torch.arange(2)[:, None], order]
    with torch.no_grad():
        est = model.estimate_cameras(frames)
        cams_in, cams_t = est.camera[:, :K - N_T], est.camera[:, K - N_T:]
        state_t = est.state[:, K - N_T:]
        if mode == "parallel":
            mask = torch.tensor([[k < K - N_T or q == k for k in range(K)] for q in range(K)])
            pred = model._render(frames[:, :K - N_T], cams_in, cams_t, state_t, mask)
        else:
            mask = torch.ones(K - N_T + 1, K - N_T + 1, dtype=torch.bool)  # 6 inputs + 1 target, full attention
            pred = torch.cat([model._render(frames[:, :K - N_T], cams_in, cams_t[:, t:t + 1], state_t[:, t:t + 1],
                                            mask) for t in range(N_T)], 1)
    assert out["pred"].shape == (2, N_T, 3, 32, 32) and out["pred"].abs().mean() > 1e-3
    assert torch.equal(out["target"], frames[:, K - N_T:])
    torch.testing.assert_close(out["pred"], pred, rtol=1e-5, atol=1e-5)
    assert out["loss"].item() == pytest.approx(((pred - frames[:, K - N_T:]) ** 2).mean().item(), rel=1e-5)


def test_d_and_e_differ_and_partitions_resample():
    x = _clip(1)
    e, d = _model("parallel"), _model("per_target")
    d.load_state_dict(e.state_dict())
    pe = e.training_loss(x, generator=torch.Generator().manual_seed(3))["pred"]
    pd = d.training_loss(x, generator=torch.Generator().manual_seed(3))["pred"]
    assert not torch.allclose(pe, pd, atol=1e-4)  # D's inputs also attend to the target (decoder-only)
    # partitions are resampled: over 20 steps of one generator, several distinct target pairs
    gen = torch.Generator().manual_seed(0)
    pairs = set()
    for _ in range(20):
        order = torch.rand(1, K, generator=gen).argsort(dim=1)
        pairs.add(tuple(sorted(order[0, K - N_T:].tolist())))
    assert len(pairs) > 5
    seen = set()
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        tgt = e.training_loss(x, generator=gen)["target"]
        seen.add(tuple(tgt.flatten()[:4].tolist()))
    assert len(seen) > 5


def test_n_targets_validation():
    with pytest.raises(ValueError, match="n_targets"):
        ModelConfig.from_preset("tiny-xs", n_targets=0)
    model = RayDer(ModelConfig.from_preset("tiny-xs", autoregression="parallel", n_targets=8))
    with pytest.raises(ValueError, match="needs 1 <= n_targets < views"):
        model.training_loss(_clip(1))


def test_ablations_yaml_is_configs_a_to_h():
    """sweeps/ablations.yaml: one launch, one run per Config A-H with Table B.2's architecture and view counts."""
    from rayder_core.models.rayder.flops import _param_count
    from sweeps.spec import load_spec

    runs = load_spec("sweeps/ablations.yaml").runs()
    by = {cfg.sweep.split("-")[-1]: cfg for cfg in runs}
    assert sorted(by) == list("ABCDEFGH")
    models = {name: ModelConfig.from_dict(dict(cfg.model)) for name, cfg in by.items()}
    params = {name: _param_count(m) / 1e6 for name, m in models.items()}
    for name, cfg in by.items():
        m = models[name]
        depth = 6 if name in "ABC" else 18  # [E_cam, E_scene, D_render] = [6, 6, 6] or one network M of 18
        assert (m.width, m.depth, cfg.data.frames, cfg.data.resolution, cfg.batch_size) == (512, depth, 8, 256, 256)
        assert m.architecture == ("three_network" if name in "ABC" else "single")
        assert m.dynamic_state == (name != "A") and m.d_state == 256
        if name != "A":
            assert m.state_dropout == (0.0 if name == "B" else 0.5)
        if name in "ABCDE":  # 6 inputs / 2 outputs
            assert (cfg.data.frames - m.n_targets, m.n_targets) == (6, 2)
    assert [models[c].autoregression for c in "ABCDEFGH"] == \
        ["per_target"] * 4 + ["parallel", "ordered", "random", "random"]
    assert [models[c].local_layers for c in "ABCDEFGH"] == [False] * 7 + [True]
    probe = next(b for b in by["D"].eval.benchmarks if b.kind == "probe")
    assert sorted(probe.protocols) == ["cross_scene", "per_scene", "transfer"]
    # Table B.2 parameter counts: 134M (A-C), 139M (D-G), 145M (H)
    print({k: round(v, 2) for k, v in sorted(params.items())})
    assert all(abs(params[c] / 134 - 1) < 0.03 for c in "ABC")
    assert all(abs(params[c] / 139 - 1) < 0.01 for c in "DEFG") and abs(params["H"] / 145 - 1) < 0.01
