"""Image metrics of the standard feed-forward NVS protocol (pixelSplat = LVSM = RayZer), per image, and their
aggregation over scenes.

Images are float tensors (N,C,H,W) (C = 3 for RGB). Ranges are stated per function:
- `psnr`: PSNR in dB after mapping both images to [0,1] and clamping them to [0,1]; MSE per image over (C,H,W).
- `mse_pm1`: MSE with both images in [-1,1], the quantity the paper's scaling laws fit (prediction clamped).
- `ssim`: skimage's `structural_similarity(win_size=11, gaussian_weights=True, sigma=1.5,
  use_sample_covariance=False, data_range=1.0, channel_axis=0)`, batched in torch; inputs in [0,1].
- `LpipsMetric`: LPIPS with the VGG network (v0.1 linear weights), inputs in [0,1].
Every function returns a float32 tensor (N,) on the input's device. `aggregate_scenes` averages per scene first and
then over scenes, and reports the scene count.
"""
from __future__ import annotations

import math
import os
from collections import defaultdict
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass

import torch

from rayder_core.geometry import Camera, rotation_angle_deg
from rayder_core.lpips_vgg import LPIPS_WEIGHTS_ENV, load_lpips_vgg, lpips_weights_candidates, vgg16_checkpoint_path

SSIM_WIN_SIZE = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03
LPIPS_CHUNK = 10
"""Images per LPIPS forward pass (the reference protocol evaluates in chunks of 10)."""
VALUE_RANGES = ("[-1,1]", "[0,1]")


def _check_pair(pred: torch.Tensor, target: torch.Tensor, where: str) -> None:
    if not (isinstance(pred, torch.Tensor) and isinstance(target, torch.Tensor)):
        raise TypeError(f"{where}: expected two torch tensors, got {type(pred).__name__}, {type(target).__name__}")
    if pred.ndim != 4 or pred.shape != target.shape:
        raise ValueError(f"{where}: expected two image batches of the same shape (N,C,H,W), "
                         f"got {tuple(pred.shape)} and {tuple(target.shape)}")


def _to_unit_range(images: torch.Tensor, value_range: str) -> torch.Tensor:
    if value_range == "[-1,1]":
        images = (images.float() + 1.0) / 2.0
    elif value_range == "[0,1]":
        images = images.float()
    else:
        raise ValueError(f"value_range must be one of {VALUE_RANGES}, got {value_range!r}")
    return images.clamp(0.0, 1.0)


def psnr(pred: torch.Tensor, target: torch.Tensor, *, value_range: str = "[-1,1]") -> torch.Tensor:
    """PSNR in dB per image, (N,). Both images are given in `value_range` ("[-1,1]" or "[0,1]"), mapped to [0,1]
    and clamped to [0,1]; MSE is taken per image over (C,H,W); PSNR = -10 log10(MSE). Identical images give +inf."""
    _check_pair(pred, target, "psnr")
    p, t = _to_unit_range(pred, value_range), _to_unit_range(target, value_range)
    mse = (p - t).square().flatten(1).mean(dim=1)
    return -10.0 * torch.log10(mse)


def mse_pm1(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """MSE per image over (C,H,W), (N,), with both images in [-1,1] (the training loss's scale; the paper fits this).

    The prediction is clamped to [-1,1] first (the model's output is unbounded; clamping matches what PSNR sees).
    The target must already lie in [-1,1]; a target outside it raises `ValueError`. When both are in range,
    `psnr(pred, target) == -10 log10(mse_pm1(pred, target) / 4)`."""
    _check_pair(pred, target, "mse_pm1")
    t = target.float()
    if t.numel() and (t.min() < -1.0 - 1e-6 or t.max() > 1.0 + 1e-6):
        raise ValueError(f"mse_pm1: target values span [{t.min().item():.4g}, {t.max().item():.4g}], "
                         "expected images in [-1,1]")
    p = pred.float().clamp(-1.0, 1.0)
    return (p - t).square().flatten(1).mean(dim=1)


def _gaussian_band(n: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(n, n - 10) matrix G with `x @ G` = "valid" correlation of rows of x with the 11-tap Gaussian
    (sigma 1.5, scipy's normalised kernel). A band matmul is several times faster than conv2d on CPU."""
    radius = (SSIM_WIN_SIZE - 1) // 2
    offsets = torch.arange(-radius, radius + 1, device=device, dtype=dtype)
    taps = torch.exp(-0.5 * (offsets / SSIM_SIGMA) ** 2)
    taps = taps / taps.sum()
    m = n - SSIM_WIN_SIZE + 1
    columns = torch.arange(m, device=device)
    band = torch.zeros(n, m, device=device, dtype=dtype)
    band[columns[:, None] + torch.arange(SSIM_WIN_SIZE, device=device), columns[:, None]] = taps
    return band


def ssim(pred01: torch.Tensor, target01: torch.Tensor) -> torch.Tensor:
    """SSIM per image, (N,), for images in [0,1] (both clamped to [0,1]; data range 1).

    Matches `skimage.metrics.structural_similarity(win_size=11, gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, channel_axis=0, data_range=1.0)` per CHW image: local statistics come from a
    separable 11-tap Gaussian (sigma 1.5, population covariance), and the SSIM map is averaged over the pixels at
    least 5 from every border (skimage crops (win_size-1)//2 per side), which is exactly the "valid" convolution
    here, then over channels. Computed in float64. Images must be at least 11x11."""
    _check_pair(pred01, target01, "ssim")
    n, c, h, w = pred01.shape
    if h < SSIM_WIN_SIZE or w < SSIM_WIN_SIZE:
        raise ValueError(f"ssim: images are {h}x{w}, smaller than the {SSIM_WIN_SIZE}x{SSIM_WIN_SIZE} window")
    x = pred01.double().clamp(0.0, 1.0).reshape(n * c, h, w)
    y = target01.double().clamp(0.0, 1.0).reshape(n * c, h, w)
    band_h = _gaussian_band(h, x.device, x.dtype)
    band_w = _gaussian_band(w, x.device, x.dtype)
    stacked = torch.cat([x, y, x * x, y * y, x * y])
    mx, my, mxx, myy, mxy = (band_h.T @ stacked @ band_w).chunk(5)
    vx, vy, vxy = mxx - mx * mx, myy - my * my, mxy - mx * my
    c1, c2 = SSIM_K1**2, SSIM_K2**2
    ssim_map = ((2 * mx * my + c1) * (2 * vxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return ssim_map.reshape(n, -1).mean(dim=1).float()


@dataclass(frozen=True)
class MissingMetric:
    """A metric that could not be set up; `reason` says what was missing and where it was looked for.
    Record it as missing (value NULL plus the reason); calling it raises `RuntimeError`."""

    name: str
    reason: str
    available = False

    def __call__(self, *args: object, **kwargs: object) -> torch.Tensor:
        raise RuntimeError(f"metric {self.name} is unavailable: {self.reason}")


class LpipsMetric:
    """LPIPS (VGG, v0.1) per image. `metric(pred01, target01)` takes (N,3,H,W) images in [0,1] (clamped to [0,1],
    lpips's `normalize=True` semantics) and returns (N,) float32 on the input's device; lower is more similar.

    Build it with `LpipsMetric.create(device)`, which returns a `MissingMetric` when no weights can be found."""

    available = True

    def __init__(self, distance: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], backend: str,
                 device: torch.device | str) -> None:
        self._distance = distance
        self.backend = backend  # "lpips" (the `lpips` package) or "torch" (`rayder_core.lpips_vgg`)
        self.device = torch.device(device)

    @classmethod
    def create(cls, device: torch.device | str = "cpu") -> LpipsMetric | MissingMetric:
        """Try, in order: (1) the `lpips` package (`lpips.LPIPS(net="vgg")`, needs an importable torchvision and
        the VGG16 ImageNet weights); (2) the plain-torch network of `rayder_core.lpips_vgg`, loading
        torchvision's `vgg16-397923af.pth` from `torch.hub.get_dir()/checkpoints/` and lpips's `vgg.pth` from
        `$RAYDER_LPIPS_WEIGHTS` or the installed lpips package directory (found without importing it).
        If neither works, return `MissingMetric("lpips", reason)`; never a substitute network."""
        device = torch.device(device)
        try:
            import lpips  # optional dependency; imports torchvision, which may raise RuntimeError, not ImportError

            network = lpips.LPIPS(net="vgg", verbose=False).eval().requires_grad_(False).to(device)

            def package_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
                return network(a, b, normalize=True).flatten()

            return cls(package_distance, "lpips", device)
        except Exception as exc:  # noqa: BLE001  any failure here means "try the next way"
            package_error = f"{type(exc).__name__}: {exc}"

        vgg_path = vgg16_checkpoint_path()
        lin_candidates = lpips_weights_candidates()
        lin_path = next((p for p in lin_candidates if p.is_file()), None)
        problems = []
        if not vgg_path.is_file():
            problems.append(f"VGG16 ImageNet weights not found in {vgg_path} (torch.hub.get_dir()/checkpoints)")
        if lin_path is None:
            looked = ", ".join(str(p) for p in lin_candidates) or "no lpips package installed"
            problems.append(f"lpips linear weights v0.1/vgg.pth not found (${LPIPS_WEIGHTS_ENV} "
                            f"{'set' if os.environ.get(LPIPS_WEIGHTS_ENV) else 'unset'}; "
                            f"looked in: {looked})")
        if not problems:
            try:
                model = load_lpips_vgg(vgg_path, lin_path).to(device)
                return cls(model, "torch", device)
            except Exception as exc:  # noqa: BLE001
                problems.append(f"loading {vgg_path} + {lin_path} failed: {type(exc).__name__}: {exc}")
        reason = "; ".join(problems) + f"; and the lpips package is not usable: {package_error}"
        return MissingMetric("lpips", reason)

    def distance(self, pred01: torch.Tensor, target01: torch.Tensor) -> torch.Tensor:
        """Differentiable LPIPS (N,) of images in [0,1] (clamped), on the network's device: the perceptual loss
        term of training. Gradients flow to the inputs; the network's weights stay frozen."""
        _check_pair(pred01, target01, "lpips")
        a = pred01.to(self.device, torch.float32).clamp(0.0, 1.0)
        b = target01.to(self.device, torch.float32).clamp(0.0, 1.0)
        return self._distance(a, b).float().to(pred01.device)

    @torch.no_grad()
    def __call__(self, pred01: torch.Tensor, target01: torch.Tensor, *, chunk_size: int = LPIPS_CHUNK
                 ) -> torch.Tensor:
        _check_pair(pred01, target01, "lpips")
        out = []
        for start in range(0, pred01.shape[0], chunk_size):
            a = pred01[start:start + chunk_size].to(self.device, torch.float32).clamp(0.0, 1.0)
            b = target01[start:start + chunk_size].to(self.device, torch.float32).clamp(0.0, 1.0)
            out.append(self._distance(a, b).float())
        if not out:
            return pred01.new_zeros(0, dtype=torch.float32)
        return torch.cat(out).to(pred01.device)


def aggregate_scenes(per_image: Mapping[str, Sequence[float]], scene_ids: Sequence[Hashable]
                     ) -> dict[str, tuple[float, int]]:
    """Mean per scene, then mean over scenes: `{metric: (mean_over_scenes, n_scenes)}`.

    `per_image[metric][i]` belongs to scene `scene_ids[i]`; every metric needs one value per scene id. Non-finite
    values (e.g. PSNR +inf for identical images) are kept and propagate to the mean."""
    out = {}
    for metric, values in per_image.items():
        if len(values) != len(scene_ids):
            raise ValueError(f"aggregate_scenes: metric {metric!r} has {len(values)} values "
                             f"for {len(scene_ids)} scene ids")
        by_scene: dict[Hashable, list[float]] = defaultdict(list)
        for scene, value in zip(scene_ids, values):
            by_scene[scene].append(float(value))
        scene_means = [sum(v) / len(v) for v in by_scene.values()]
        out[metric] = (sum(scene_means) / len(scene_means) if scene_means else math.nan, len(scene_means))
    return out


# ------------------------------------------------------------------------------------------ relative pose accuracy
RPA_THRESHOLDS = (5.0, 15.0, 30.0)


def pairwise_pose_errors(pred: Camera, gt: Camera, *, fold_translation_sign: bool = False
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotation and translation-direction errors in degrees, each (..., P) over the P = V(V-1)/2 view pairs i < j.

    Cameras are camera-to-world with leading dims (..., V) (`rayder_core.geometry.Camera`). The relative pose of a pair
    is c2w_i^-1 c2w_j (camera j in camera i's frame), which does not depend on the world frame, and its translation
    direction does not depend on the scene scale. Rotation error: geodesic angle between predicted and true relative
    rotations. Translation error: angle between predicted and true relative translations (a zero vector counts as
    90 degrees); with `fold_translation_sign` the angle a becomes min(a, 180 - a) (VGGT's sign-ambiguous variant)."""
    if tuple(pred.shape) != tuple(gt.shape) or len(pred.shape) < 1 or pred.shape[-1] < 2:
        raise ValueError(f"pairwise_pose_errors: need matching cameras with >= 2 views, got {tuple(pred.shape)} and "
                         f"{tuple(gt.shape)}")
    v = pred.shape[-1]
    i, j = torch.triu_indices(v, v, offset=1, device=pred.R.device)

    def relative(cam: Camera) -> tuple[torch.Tensor, torch.Tensor]:
        R, t = cam.R.double(), cam.t.double()
        Ri_T = R[..., i, :, :].transpose(-1, -2)
        return Ri_T @ R[..., j, :, :], (Ri_T @ (t[..., j, :] - t[..., i, :])[..., None])[..., 0]

    Rp, tp = relative(pred)
    Rg, tg = relative(gt.to(device=pred.R.device))
    rot = rotation_angle_deg(Rp, Rg)
    cos = (torch.nn.functional.normalize(tp, dim=-1) * torch.nn.functional.normalize(tg, dim=-1)).sum(-1)
    trans = torch.rad2deg(torch.arccos(cos.clamp(-1.0, 1.0)))
    if fold_translation_sign:
        trans = torch.minimum(trans, 180.0 - trans)
    return rot, trans


RPA_DEFINITIONS = ("published", "strict")


def rpa_key(threshold: float, definition: str = "published") -> str:
    """Metric name of RPA@threshold under `definition`: 'rpa@5' (published) or 'rpa_strict@5' (strict)."""
    return f"rpa@{threshold:g}" if definition == "published" else f"rpa_{definition}@{threshold:g}"


def relative_pose_accuracy(pred: Camera, gt: Camera, thresholds: Sequence[float] = RPA_THRESHOLDS, *,
                           definition: str = "published") -> dict[str, float]:
    """RPA@k: percentage (0-100) of view pairs whose error max(rotation error, translation-direction error) is within
    k degrees, pairwise over all views (and all leading dims). Works for any family's predicted cameras.

    definition 'published' (default; E-RayZer's `translation_angle_deg` / VGGT's metric, the paper's tables): the
    translation angle a is sign-folded to min(a, 180 - a) and a pair counts when its error is <= k; keys 'rpa@5',
    'rpa@15', 'rpa@30'. 'strict': no sign folding and error < k; keys 'rpa_strict@5', ... (the toolkit's metric
    before issue 24; stored rows named 'rpa@k' of a checkpoint that has no 'rpa_strict@k' rows are of this kind).
    'rpa_pairs' is the number of pairs."""
    if definition not in RPA_DEFINITIONS:
        raise ValueError(f"relative_pose_accuracy: definition must be one of {RPA_DEFINITIONS}, got {definition!r}")
    published = definition == "published"
    rot, trans = pairwise_pose_errors(pred, gt, fold_translation_sign=published)
    err = torch.maximum(rot, trans).flatten()
    out = {rpa_key(k, definition): float(((err <= k) if published else (err < k)).double().mean() * 100.0)
           for k in thresholds}
    out["rpa_pairs"] = float(err.numel())
    return out
