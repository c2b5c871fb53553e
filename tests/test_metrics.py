"""Image metrics against independent references: skimage (SSIM), numpy closed forms (PSNR/MSE), a functional
re-derivation of LPIPS and, where it imports, the `lpips` package itself."""
from __future__ import annotations

import math
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage.metrics import structural_similarity

from rayder_core import lpips_vgg
from rayder_core.metrics import LpipsMetric, MissingMetric, aggregate_scenes, mse_pm1, psnr, ssim

VGG_CONV_INDICES = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
VGG_CONV_CHANNELS = (64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512)
POOL_AFTER = {2, 7, 14, 21}  # features indices of the ReLUs followed by a 2x2 max pool (relu1_2 .. relu4_3 + 1)


def skimage_ssim(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    return np.array([structural_similarity(x.numpy(), y.numpy(), win_size=11, gaussian_weights=True, sigma=1.5,
                                           use_sample_covariance=False, channel_axis=0, data_range=1.0)
                     for x, y in zip(a.float(), b.float())])


def structured_pair(h: int, w: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    ramp = torch.stack([xx, yy, 0.5 * (xx + yy)])
    checker = ((torch.arange(h)[:, None] // 4 + torch.arange(w)[None] // 4) % 2).float().expand(3, h, w)
    disk = (((xx - 0.5) ** 2 + (yy - 0.5) ** 2) < 0.1).float().expand(3, h, w)
    a = torch.stack([ramp, 0.7 * checker + 0.2, disk * ramp])
    b = torch.stack([ramp.roll(2, dims=-1), F.avg_pool2d(checker[None], 3, 1, 1)[0] * 0.7 + 0.2,
                     (disk * ramp + 0.05 * torch.randn(3, h, w, generator=g)).clamp(0, 1)])
    return a, b


@pytest.mark.parametrize("h,w", [(11, 11), (32, 32), (37, 53), (64, 48), (128, 128)])
def test_ssim_equals_skimage_on_random_images(h: int, w: int) -> None:
    g = torch.Generator().manual_seed(h * 1000 + w)
    a = torch.rand(3, 3, h, w, generator=g)
    b = (a + 0.15 * torch.randn(3, 3, h, w, generator=g)).clamp(0, 1)
    b[2] = torch.rand(3, h, w, generator=g)  # unrelated image: SSIM near 0
    ours = ssim(a, b)
    assert ours.shape == (3,) and ours.dtype == torch.float32
    np.testing.assert_allclose(ours.numpy(), skimage_ssim(a, b), atol=1e-5, rtol=0)


@pytest.mark.parametrize("h,w", [(32, 32), (45, 64), (96, 80)])
def test_ssim_equals_skimage_on_structured_images(h: int, w: int) -> None:
    a, b = structured_pair(h, w, seed=h + w)
    np.testing.assert_allclose(ssim(a, b).numpy(), skimage_ssim(a, b), atol=1e-5, rtol=0)
    np.testing.assert_allclose(ssim(a, a).numpy(), 1.0, atol=1e-6)


def test_ssim_rejects_images_smaller_than_the_window() -> None:
    with pytest.raises(ValueError, match="10x32, smaller than the 11x11 window"):
        ssim(torch.rand(1, 3, 10, 32), torch.rand(1, 3, 10, 32))


def test_psnr_closed_form_and_ranges() -> None:
    g = torch.Generator().manual_seed(0)
    target01 = torch.rand(4, 3, 16, 16, generator=g)
    pred01 = (target01 + 0.1 * torch.randn(4, 3, 16, 16, generator=g)).clamp(0, 1)
    mse = ((pred01.double() - target01.double()) ** 2).reshape(4, -1).mean(1).numpy()
    np.testing.assert_allclose(psnr(pred01, target01, value_range="[0,1]").numpy(), -10 * np.log10(mse), rtol=1e-5)
    # The same images given in [-1,1] give the same PSNR.
    np.testing.assert_allclose(psnr(2 * pred01 - 1, 2 * target01 - 1).numpy(), -10 * np.log10(mse), rtol=1e-5)
    # A constant offset of 0.1 in [0,1] is an MSE of 0.01, i.e. 20 dB.
    t = torch.full((1, 3, 8, 8), 0.5)
    assert psnr(t + 0.1, t, value_range="[0,1]").item() == pytest.approx(20.0, abs=1e-4)
    # Both images are clamped to [0,1]: an overshooting prediction counts as the boundary value.
    assert psnr(torch.full((1, 3, 8, 8), 1.7), torch.full((1, 3, 8, 8), 0.9), value_range="[0,1]").item() == \
        pytest.approx(-10 * math.log10(0.01), abs=1e-3)
    assert math.isinf(psnr(t, t, value_range="[0,1]").item())
    with pytest.raises(ValueError, match="value_range"):
        psnr(t, t, value_range="0..255")
    with pytest.raises(ValueError, match="same shape"):
        psnr(t, t[:, :, :4])


def test_mse_pm1_clamps_prediction_and_matches_psnr() -> None:
    g = torch.Generator().manual_seed(1)
    target = torch.rand(3, 3, 8, 8, generator=g) * 2 - 1
    pred = (target + 0.2 * torch.randn(3, 3, 8, 8, generator=g)).clamp(-1, 1)
    expected = ((pred.double() - target.double()) ** 2).reshape(3, -1).mean(1)
    np.testing.assert_allclose(mse_pm1(pred, target).numpy(), expected.numpy(), rtol=1e-5)
    np.testing.assert_allclose(psnr(pred, target).numpy(), (-10 * torch.log10(expected / 4)).numpy(), rtol=1e-5)
    # The prediction is clamped to [-1,1]: 3.0 against 1.0 is no error.
    assert mse_pm1(torch.full((1, 3, 4, 4), 3.0), torch.ones(1, 3, 4, 4)).item() == 0.0
    with pytest.raises(ValueError, match=r"expected images in \[-1,1\]"):
        mse_pm1(target, target * 2)


def test_aggregate_scenes_means_per_scene_first() -> None:
    per_image = {"psnr": [1.0, 2.0, 3.0, 10.0, 20.0], "ssim": [0.5, 0.5, 0.5, 1.0, 0.0]}
    out = aggregate_scenes(per_image, ["a", "a", "a", "b", "c"])
    assert out["psnr"] == (pytest.approx((2.0 + 10.0 + 20.0) / 3), 3)  # the per-image mean would be 7.2
    assert out["ssim"] == (pytest.approx((0.5 + 1.0 + 0.0) / 3), 3)
    with pytest.raises(ValueError, match="'ssim' has 2 values for 3 scene ids"):
        aggregate_scenes({"ssim": [1.0, 2.0]}, ["a", "b", "c"])


# ------------------------------------------------------------------------------------------------------------------
# LPIPS
# ------------------------------------------------------------------------------------------------------------------

@pytest.fixture
def one_thread():
    """VGG on CPU: on a shared, oversubscribed CPU a second intra-op thread only adds waiting."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def lpips_package():
    try:
        import lpips  # noqa: PLC0415
        return lpips, ""
    except Exception as exc:  # noqa: BLE001  torchvision raises RuntimeError at import against a CPU torch
        return None, f"{type(exc).__name__}: {exc}"


@pytest.fixture(scope="module")
def random_weights(tmp_path_factory):
    """A random VGG16 in torchvision's checkpoint format in <tmp>/hub/checkpoints and lpips linear weights:
    lpips's own `vgg.pth` where the package is installed, random non-negative weights otherwise."""
    root = tmp_path_factory.mktemp("torch_home")
    g = torch.Generator().manual_seed(123)
    state, in_ch = {}, 3
    for index, out_ch in zip(VGG_CONV_INDICES, VGG_CONV_CHANNELS):
        state[f"features.{index}.weight"] = torch.randn(out_ch, in_ch, 3, 3, generator=g) * math.sqrt(2 / (9 * in_ch))
        state[f"features.{index}.bias"] = 0.05 * torch.randn(out_ch, generator=g)
        in_ch = out_ch
    state["classifier.0.weight"] = torch.randn(8, 4, generator=g)  # present in torchvision files; must be ignored
    vgg_path = root / "hub" / "checkpoints" / lpips_vgg.VGG16_CHECKPOINT_NAME
    vgg_path.parent.mkdir(parents=True)
    torch.save(state, vgg_path)
    lin_path = root / "lpips_vgg_lin.pth"
    packaged = [p for p in lpips_vgg.lpips_weights_candidates() if p.is_file()]
    if packaged:
        shutil.copyfile(packaged[0], lin_path)
    else:
        torch.save({f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1, generator=g)
                    for i, c in enumerate(lpips_vgg.TAP_CHANNELS)}, lin_path)
    return root, vgg_path, lin_path


def functional_lpips(state: dict, lins: dict, a01: torch.Tensor, b01: torch.Tensor) -> torch.Tensor:
    """LPIPS written out from its definition with functional ops (independent of rayder_core.lpips_vgg)."""
    shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)

    def taps(x01):
        x = x01 * (2 / scale) - (1 + shift) / scale  # == ((2 x - 1) - shift) / scale
        out = []
        for index in VGG_CONV_INDICES:
            x = F.relu(F.conv2d(x, state[f"features.{index}.weight"], state[f"features.{index}.bias"], padding=1))
            if index + 1 in (3, 8, 15, 22, 29):
                out.append(x)
            if index in POOL_AFTER:
                x = F.max_pool2d(x, 2)
        return out

    total = torch.zeros(a01.shape[0], dtype=torch.float64)
    for k, (fa, fb) in enumerate(zip(taps(a01.double()), taps(b01.double()))):
        na = fa / (torch.sqrt((fa ** 2).sum(1, keepdim=True)) + 1e-10)
        nb = fb / (torch.sqrt((fb ** 2).sum(1, keepdim=True)) + 1e-10)
        weight = lins[f"lin{k}.model.1.weight"].double().flatten()
        total += torch.einsum("nchw,c->nhw", (na - nb) ** 2, weight).mean(dim=(1, 2))
    return total


def test_lpips_from_torchvision_checkpoint_equals_functional_definition(random_weights, monkeypatch, one_thread
                                                                        ) -> None:
    root, vgg_path, lin_path = random_weights
    monkeypatch.setenv("TORCH_HOME", str(root))
    monkeypatch.setenv(lpips_vgg.LPIPS_WEIGHTS_ENV, str(lin_path))
    metric = LpipsMetric.create("cpu")
    assert isinstance(metric, LpipsMetric), getattr(metric, "reason", "")
    g = torch.Generator().manual_seed(7)
    a = torch.rand(3, 3, 48, 32, generator=g)
    b = (a + 0.2 * torch.randn(3, 3, 48, 32, generator=g)).clamp(0, 1)
    state = {k: v.double() for k, v in torch.load(vgg_path, map_location="cpu", weights_only=True).items()}
    expected = functional_lpips(state, torch.load(lin_path, map_location="cpu", weights_only=True), a, b)
    got = metric(a, b, chunk_size=2)  # chunking must not change the values
    assert got.shape == (3,) and got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=0, atol=1e-6)  # measured: 4e-9
    assert bool((got > 0).all())
    assert metric(a, a).abs().max().item() < 1e-6


def test_lpips_plain_torch_equals_lpips_package(random_weights, one_thread) -> None:
    lpips, error = lpips_package()
    if lpips is None:
        pytest.skip(f"the lpips package does not import here ({error})")
    _, vgg_path, lin_path = random_weights
    ours = lpips_vgg.load_lpips_vgg(vgg_path, lin_path)
    reference = lpips.LPIPS(net="vgg", pnet_rand=True, verbose=False).eval()  # its own linear weights, random VGG
    features = torch.load(vgg_path, map_location="cpu", weights_only=True)
    for name, param in reference.net.named_parameters():  # e.g. "slice2.5.weight" <- "features.5.weight"
        param.data.copy_(features["features." + name.split(".", 1)[1]])
    g = torch.Generator().manual_seed(8)
    a, b = torch.rand(2, 3, 64, 64, generator=g), torch.rand(2, 3, 64, 64, generator=g)
    with torch.no_grad():
        expected = reference(a, b, normalize=True).flatten()
        np.testing.assert_allclose(ours(a, b).numpy(), expected.numpy(), atol=1e-5)


def test_lpips_is_missing_with_reason_when_no_weights(tmp_path, monkeypatch) -> None:
    lpips, _ = lpips_package()
    if lpips is not None:
        pytest.skip("the lpips package imports here and could download the VGG weights")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.delenv(lpips_vgg.LPIPS_WEIGHTS_ENV, raising=False)
    metric = LpipsMetric.create("cpu")
    assert isinstance(metric, MissingMetric) and not metric.available
    expected_path = tmp_path / "hub" / "checkpoints" / "vgg16-397923af.pth"
    assert f"VGG16 ImageNet weights not found in {expected_path}" in metric.reason
    assert "lpips package is not usable" in metric.reason
    with pytest.raises(RuntimeError, match="unavailable"):
        metric(torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32))


def test_lpips_load_names_file_and_key_of_a_bad_checkpoint(random_weights, tmp_path) -> None:
    _, vgg_path, lin_path = random_weights
    state = torch.load(vgg_path, map_location="cpu", weights_only=True)
    del state["features.24.weight"]
    broken = tmp_path / "vgg16-broken.pth"
    torch.save(state, broken)
    with pytest.raises(ValueError, match=r"vgg16-broken.pth: missing tensor features.24.weight"):
        lpips_vgg.load_lpips_vgg(broken, lin_path)


def test_lpips_distance_is_differentiable_and_equals_the_metric(random_weights, monkeypatch, one_thread) -> None:
    root, _, lin_path = random_weights
    monkeypatch.setenv("TORCH_HOME", str(root))
    monkeypatch.setenv(lpips_vgg.LPIPS_WEIGHTS_ENV, str(lin_path))
    metric = LpipsMetric.create("cpu")
    g = torch.Generator().manual_seed(3)
    a = torch.rand(2, 3, 32, 32, generator=g).requires_grad_(True)
    b = torch.rand(2, 3, 32, 32, generator=g)
    d = metric.distance(a, b)
    np.testing.assert_allclose(d.detach().numpy(), metric(a.detach(), b).numpy(), rtol=0, atol=1e-6)
    d.sum().backward()
    assert a.grad is not None and bool(torch.isfinite(a.grad).all()) and a.grad.abs().sum() > 0


def _perceptual_run(data, out_dir, steps: int = 2):
    from rayder_core.training.trainer import run_training
    from rayder_core.train_config import load_train_config

    cfg = load_train_config({
        "model": {"preset": "tiny-xs"},
        "data": {"manifest": str(data.manifest), "frames": 4, "resolution": 32},
        "eval": {"every": 1000, "benchmarks": []}, "perceptual_weight": 1.0,
        "steps": steps, "batch_size": 2, "checkpoint_every": steps, "log_every": 1, "precision": "fp32",
        "sweep": "perc", "out_dir": str(out_dir)})
    return run_training(cfg, db=None, progress=False)


def test_perceptual_term_enters_the_training_loss(synth_data, random_weights, monkeypatch, tmp_path,
                                                  one_thread) -> None:
    from rayder_core.fileio import read_jsonl

    root, _, lin_path = random_weights
    monkeypatch.setenv("TORCH_HOME", str(root))
    monkeypatch.setenv(lpips_vgg.LPIPS_WEIGHTS_ENV, str(lin_path))
    out = _perceptual_run(synth_data, tmp_path)
    for row in read_jsonl(out.run_dir / "metrics.jsonl"):
        mse = 4 * 10 ** (-row["psnr"] / 10)
        assert row["loss"] > mse + 1e-4  # loss = MSE + 1.0 x LPIPS (> 0 for different images)


def test_perceptual_term_without_weights_is_a_clear_error(synth_data, monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    with pytest.raises(RuntimeError, match="perceptual_weight=1.0 needs LPIPS: .*VGG16"):
        _perceptual_run(synth_data, tmp_path)
