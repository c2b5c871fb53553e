"""Throughput paths keep the numbers: bf16 autocast and compiled layers vs the eager fp32 loss, precision `auto` by
measured peak, the grad-spike skip rule (off by default, works when on) and the log-spaced eval schedule."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from rayder_core import precision as prec
from rayder_core.models.rayder.model import RayDer
from rayder_core.models.rayder.config import ModelConfig
from rayder_core.eval_config import EvalConfig
from rayder_core.train_config import OptimConfig


def _loss(model: RayDer, frames: torch.Tensor, bf16: bool) -> torch.Tensor:
    g = torch.Generator().manual_seed(5)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        return model.training_loss(frames, generator=g)["loss"]


@pytest.fixture(scope="module")
def trained_tiny():
    """tiny-xs after a few fp32 steps (zero-initialised output layers would make every path output 0)."""
    torch.manual_seed(0)
    model = RayDer(ModelConfig.from_preset("tiny-xs", patch=2, attention_backend="sdpa"))
    frames = torch.rand(2, 4, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(5):
        _loss(model, frames, False).backward()
        opt.step()
        opt.zero_grad()
    return model, frames


def test_bf16_loss_matches_fp32_within_2_percent(trained_tiny):
    """bf16 autocast (the `auto` choice on AMX CPUs) vs eager fp32: same loss within 2% relative, and gradients
    pointing the same way (cosine > 0.98)."""
    model, frames = trained_tiny
    ref = _loss(model, frames, False)
    ref_grads = torch.autograd.grad(ref, list(model.parameters()), allow_unused=True)
    low = _loss(model, frames, True)
    low_grads = torch.autograd.grad(low, list(model.parameters()), allow_unused=True)
    assert abs(float(low) - float(ref)) <= 0.02 * float(ref), (float(low), float(ref))
    a = torch.cat([g.flatten() for g in ref_grads if g is not None])
    b = torch.cat([g.float().flatten() for g in low_grads if g is not None])
    assert float(torch.nn.functional.cosine_similarity(a, b, dim=0)) > 0.98


@pytest.mark.slow
def test_compiled_layers_match_eager_fp32(trained_tiny):
    """`compile: true` (regional torch.compile of every layer) gives the eager fp32 loss within 1e-4 relative."""
    from rayder_core.runtime import compile_layers

    model, frames = trained_tiny
    ref = float(_loss(model, frames, False))
    compiled = RayDer(model.cfg)
    compiled.load_state_dict(model.state_dict())
    assert compile_layers(compiled) == len(compiled.compile_regions()) > 0
    got = float(_loss(compiled, frames, False))
    assert abs(got - ref) <= 1e-4 * ref, (got, ref)


@pytest.mark.parametrize("fp32,bf16,expected", [(300e9, 2000e9, "bf16"), (300e9, 150e9, "fp32"),
                                                (300e9, 360e9, "fp32"), (300e9, 380e9, "bf16")])
def test_precision_auto_follows_the_measured_peaks(monkeypatch, fp32, bf16, expected):
    """auto picks bf16 only when its measured matmul peak is >= 1.25 x fp32's (AMX: yes; emulated bf16: no)."""
    monkeypatch.setattr(prec, "measured_peaks", lambda device: {"fp32": fp32, "bf16": bf16})
    chosen, peaks = prec.resolve_precision("auto", "cpu")
    assert chosen == expected and peaks == {"fp32": fp32, "bf16": bf16}
    assert prec.resolve_precision("fp32", "cpu") == ("fp32", {})
    with pytest.raises(ValueError, match="precision"):
        prec.resolve_precision("fp16", "cpu")


def test_matmul_peak_is_a_plausible_measurement():
    """The peak is 2 n^3 / time of real matmuls: positive and below 10 TFLOP/s per CPU thread."""
    peak = prec.matmul_peak(torch.float32, "cpu", sizes=(128,), repeats=2)
    assert 1e8 < peak < 1e13 * torch.get_num_threads()


def test_matmul_peak_time_budget_skips_sizes_predicted_to_overrun():
    """No budget: every size is measured. A budget of 0 s: only the smallest (sizes are taken ascending); an
    emulated bf16 on a CPU without AVX512-BF16/AMX (~1 GFLOP/s) would otherwise spend ~10 s on 1024^3."""
    _, all_sizes = prec.matmul_peak_detail(torch.float32, "cpu", sizes=(96, 32, 64), repeats=1)
    assert all_sizes == [32, 64, 96]
    _, first = prec.matmul_peak_detail(torch.float32, "cpu", sizes=(96, 32, 64), repeats=1, time_budget_s=0.0)
    assert first == [32]
    _, roomy = prec.matmul_peak_detail(torch.float32, "cpu", sizes=(32, 64), repeats=1, time_budget_s=60.0)
    assert roomy == [32, 64]


def test_skip_rule_is_off_by_default_and_validated():
    assert OptimConfig().skip_grad_factor is None
    assert OptimConfig(skip_grad_factor=10.0).skip_grad_factor == 10.0
    with pytest.raises(ValueError, match="skip_grad_factor"):
        OptimConfig(skip_grad_factor=0.0)


def test_log_spaced_eval_schedule_against_geomspace():
    cfg = EvalConfig(log_points=8, from_step=10)
    expected = sorted({int(round(s)) for s in np.geomspace(10, 1000, 8)})
    assert cfg.steps_for(1000) == expected == [10, 19, 37, 72, 139, 268, 518, 1000]
    # ratios between consecutive points are constant up to rounding
    ratios = np.diff(np.log(expected))
    assert np.allclose(ratios, ratios.mean(), atol=0.05)
    # short runs: duplicates collapse, the last step is always there; from_step beyond the run: nothing
    assert EvalConfig(log_points=8, from_step=1).steps_for(4) == [1, 2, 3, 4]
    assert EvalConfig(log_points=8, from_step=50).steps_for(20) == []
    # the fixed-interval schedule keeps its meaning and also ends at the last step
    assert EvalConfig(every=30, from_step=30).steps_for(100) == [30, 60, 90, 100]
