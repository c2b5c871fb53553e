"""Baselines without a model (`rayder_core.evaluation.baselines`): closed forms on frames linear in time, a numpy
brute force on a real JPEG benchmark, and the same numbers recorded by `evaluate_nvs` next to a model's."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rayder_core.data import evalsets as B
from rayder_core.eval_config import BenchmarkSpec
from rayder_core.evaluation import cli as eval_cli
from rayder_core.evaluation.baselines import (baseline_psnrs, baseline_views, benchmark_baselines, blend_weights,
                                              common_baselines)
from rayder_core.evaluation.nvs import evaluate_nvs
from rayder_core.models.rayder.config import ModelConfig
from rayder_core.models.rayder.model import RayDer
from test_data_evalsets import scene


def test_blend_weights_closed_forms():
    assert blend_weights((0, 10), 3) == pytest.approx({0: 0.7, 1: 0.3})
    assert blend_weights((2, 8), 8) == {1: 1.0}          # a context frame: itself
    assert blend_weights((2, 8), 12) == {1: 1.0}         # outside the pair: the nearest view
    assert blend_weights((2, 8), 0) == {0: 1.0}
    # three context views: the bracketing pair only
    assert blend_weights((0, 6, 10), 8) == pytest.approx({1: 0.5, 2: 0.5})


def test_frames_linear_in_time_are_blended_exactly_and_copied_with_the_closed_form_error():
    # frame k = a + k * d (pixels in [-1, 1]); contexts at frames 0 and 10, targets at 2, 5, 9
    a, d = -0.5, 0.05
    frame = lambda k: torch.full((3, 4, 4), a + k * d)
    context = torch.stack([frame(0), frame(10)])
    target = torch.stack([frame(2), frame(5), frame(9)])
    views = baseline_views(context, (0, 10), (2, 5, 9))
    assert torch.allclose(views["blend_psnr"], target, atol=1e-6)
    out = baseline_psnrs(context, target, (0, 10), (2, 5, 9))
    assert all(v > 100 for v in out["blend_psnr"])  # exact up to float rounding
    # nearest context: frames 0, 0 (tie at 5 -> the earlier view), 10; error k*d (or (10-k)*d) on [-1, 1],
    # i.e. half of it on [0, 1]: PSNR = -10 log10((err / 2)^2)
    for k, near, got in zip((2, 5, 9), (0, 0, 10), out["copy_psnr"]):
        assert got == pytest.approx(-10 * math.log10((abs(k - near) * d / 2) ** 2), rel=1e-5)
    # mean colour: the mean of frames 0 and 10, a + 5 d
    for k, got in zip((2, 5, 9), out["baseline_psnr"]):
        err = abs(k - 5) * d / 2
        if err == 0:
            assert got > 100
        else:
            assert got == pytest.approx(-10 * math.log10(err ** 2), rel=1e-5)


def test_without_frame_indices_only_the_mean_colour_is_defined():
    context = torch.zeros(2, 3, 4, 4)
    assert set(baseline_views(context, (), ())) == {"baseline_psnr"}
    # a scene without indices leaves only the mean colour common to all scenes
    with_index = baseline_psnrs(context, torch.zeros(1, 3, 4, 4), (0, 1), (1,))
    without = baseline_psnrs(context, torch.zeros(1, 3, 4, 4), (), ())
    assert common_baselines([with_index, with_index]) == ["baseline_psnr", "copy_psnr", "blend_psnr"]
    assert common_baselines([with_index, without]) == ["baseline_psnr"]
    with pytest.raises(ValueError, match="2 context views but 3 frame indices"):
        baseline_views(context, (0, 1, 2), (1,))


INDEX = {"context": [0, 4], "target": [1, 2, 3]}


def _bench(root, keys, seed=0):
    rng = np.random.default_rng(seed)
    B.write_re10k_chunks([scene(k, rng) for k in keys], root, "test")
    B.write_evaluation_index({k: INDEX for k in keys}, root / "evaluation_index.json")
    return root


def _numpy_reference(root, resolution):
    """Brute force: numpy arithmetic on the loaded scenes, per image PSNR on [0, 1], mean per scene, then over
    scenes."""
    bench = B.Re10kBenchmark(root, resolution=resolution, cameras=False)
    per_scene = {"baseline_psnr": [], "copy_psnr": [], "blend_psnr": []}
    for _, s in bench.scenes(0, len(bench)):
        c = np.clip((s.context.numpy().astype(np.float64) + 1) / 2, 0, 1)
        t = np.clip((s.target.numpy().astype(np.float64) + 1) / 2, 0, 1)
        (i0, i1), targets = s.context_index, s.target_index
        psnrs = {m: [] for m in per_scene}
        for v, k in enumerate(targets):
            w = (k - i0) / (i1 - i0)
            preds = {"baseline_psnr": np.broadcast_to(c.mean(axis=(0, 2, 3))[:, None, None], t[v].shape),
                     "copy_psnr": c[0] if k - i0 <= i1 - k else c[1],
                     "blend_psnr": (1 - w) * c[0] + w * c[1]}
            for m, p in preds.items():
                psnrs[m].append(-10 * np.log10(np.mean((np.clip(p, 0, 1) - t[v]) ** 2)))
        for m in per_scene:
            per_scene[m].append(np.mean(psnrs[m]))
    return {m: float(np.mean(v)) for m, v in per_scene.items()}


def test_benchmark_baselines_match_a_numpy_brute_force_and_evaluate_nvs_records_them(tmp_path):
    root = _bench(tmp_path / "bench", ["a", "b", "c"])
    got = benchmark_baselines(root, resolution=32)
    ref = _numpy_reference(root, 32)
    assert got["scenes"] == 3
    for m, v in ref.items():
        assert got[m] == pytest.approx(v, rel=1e-5), m
    # on real (JPEG, random-texture) scenes the three differ
    assert len({round(got[m], 3) for m in ref}) == 3
    torch.manual_seed(0)
    model = RayDer(ModelConfig.from_preset("tiny-xs")).eval()
    out = evaluate_nvs(model, BenchmarkSpec("b", str(root)), resolution=32, device=torch.device("cpu"),
                       use_lpips=False, rank=0, world=1)
    for m, v in ref.items():
        assert out["values"][m] == pytest.approx(v, rel=1e-5), m
        assert all(m in row for row in out["scenes"])


def test_rayder_eval_baselines_prints_the_numpy_reference_and_refuses_bad_input(tmp_path, capsys):
    root = _bench(tmp_path / "bench", ["a", "b", "c"])
    ref = _numpy_reference(root, 32)
    assert eval_cli.main(["--baselines", str(root), "--resolution", "32"]) == 0
    out = capsys.readouterr().out
    assert "(3 scenes" in out
    for label, metric in (("mean colour", "baseline_psnr"), ("nearest context view", "copy_psnr"),
                          ("frame blend", "blend_psnr")):
        assert f"{label:<22} {ref[metric]:6.2f} dB" in out, out
    assert eval_cli.main(["--baselines", str(tmp_path / "nowhere"), "--resolution", "32"]) == 2
    assert "nowhere does not exist" in capsys.readouterr().err
    for argv in (["--baselines", str(root)], ["--baselines", str(root), "--resolution", "32", str(tmp_path)], []):
        with pytest.raises(SystemExit) as usage:  # no resolution; a run directory as well; neither
            eval_cli.main(argv)
        assert usage.value.code == 2


class _ShrinkingRenderer(torch.nn.Module):
    """A model whose render of any camera j is 0.9 x the j-th input view (cycled): its re-rendered context views
    have a known error, so `recon_psnr` can be checked against numpy."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def predict_cameras(self, frames):
        return self.inner.predict_cameras(frames)

    def predict_views(self, inputs, cams_in, cams_target):
        idx = torch.arange(cams_target.shape[1]) % inputs.shape[1]
        return 0.9 * inputs[:, idx]


def test_recon_psnr_is_the_fidelity_of_the_re_rendered_context_views(tmp_path):
    root = _bench(tmp_path / "bench", ["a", "b"], seed=3)
    torch.manual_seed(0)
    model = _ShrinkingRenderer(RayDer(ModelConfig.from_preset("tiny-xs")).eval())
    kw = dict(resolution=32, device=torch.device("cpu"), use_lpips=False, rank=0, world=1)
    out = evaluate_nvs(model, BenchmarkSpec("b", str(root)), **kw)
    bench = B.Re10kBenchmark(root, resolution=32, cameras=False)
    per_scene = []
    for _, s in bench.scenes(0, len(bench)):
        c = s.context.numpy().astype(np.float64)
        c01, r01 = np.clip((c + 1) / 2, 0, 1), np.clip((0.9 * c + 1) / 2, 0, 1)
        per_scene.append(np.mean([-10 * np.log10(np.mean((r01[v] - c01[v]) ** 2)) for v in range(len(c))]))
    assert out["values"]["recon_psnr"] == pytest.approx(np.mean(per_scene), rel=1e-5)
    assert [row["recon_psnr"] for row in out["scenes"]] == pytest.approx(per_scene, rel=1e-5)
    # a real model's value is finite (and recorded next to the novel views)
    real = evaluate_nvs(RayDer(ModelConfig.from_preset("tiny-xs")).eval(), BenchmarkSpec("b", str(root)), **kw)
    assert math.isfinite(real["values"]["recon_psnr"]) and math.isfinite(real["values"]["psnr"])
