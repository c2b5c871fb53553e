"""E-RayZer's visual-overlap curriculum: per-clip overlap profiles, the annealed target range, and the frame sampler.

A clip's **overlap profile** O(g) maps a frame gap g (frames) to the mean visual overlap of frame pairs g apart
(O(0) = 1; made non-increasing by a running minimum so it can be inverted). Two sources:

* `geometric_overlap_profile(cams, ...)`: co-visibility from poses (the synthetic corpus's JSON has exact per-frame
  cameras; RE10K-style data has them too). The pixels of frame i are back-projected onto planes at a set of camera
  depth hypotheses (scene units; the clip has poses but no depth) and projected into frame j; the overlap of (i, j)
  is the fraction
  that lands in front of camera j and inside its image, averaged over depths and over both directions.
* `feature_overlap_profile(frames, extractor)`: cosine similarity of per-frame features, clamped to [0, 1]. The
  extractor is pluggable (frames (N, 3, H, W) in [-1, 1] -> (N, D)); `dinov2_extractor()` loads DINOv2 ViT-S/14 from
  the local torch hub cache only (no download) and raises when absent; `thumbnail_extractor()` is the documented
  no-download fallback ("thumbnail cosine": 8x8 area-averaged, per-image mean-centred colours).

Training draws a target overlap uniformly from a range that anneals linearly from [1, 1] to [0.5, 1] over the first
57% of training (the paper: 86k of 152k steps; use end (0.75, 1) with feature overlap) and turns it into a frame
interval as the official sampler does (`interval_for_overlap`): a target within `tol` (0.05) above the profile's
first value or below its last takes that end's interval, otherwise the interval is linearly interpolated between the
first bracketing pair of gaps; an interval above n_frames / (span_views - 1), a target outside
[last - tol, first + tol], or a window that does not fit the clip is rejected and a new target drawn (up to
`max_tries`, the official 200). The interval is floored (>= 1); the window spans max(n_views, (span_views - 1) x
interval) frames, so its n_views frames - the two ends and n_views - 2 distinct middle frames drawn inside it,
sorted - are always distinct. Differences to the official sampler: the profile starts at gap 0 (overlap 1), so a
clip whose neighbouring frames overlap less than 1 - tol is sampled at interval 1 early in training instead of being
skipped; and a rejected draw redraws the target for the same clip (the official dataset also moves to another
scene). `CurriculumSampler(mode=...)` switches between 'none' (uniform random interval), the RayZer-style
'frame_interval' (the interval anneals from 1 to the maximum) and 'overlap'; all three use the same window.
"""

from __future__ import annotations

import pathlib
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from rayder_core.geometry import Camera, ray_origins_directions

CURRICULUM_MODES = ("none", "frame_interval", "overlap")
DEFAULT_DEPTHS = (1.0, 2.0, 4.0, 8.0)


# ------------------------------------------------------------------------------------------------ overlap profiles
def pairwise_covisibility(cams: Camera, height: int, width: int, depths: Sequence[float] = DEFAULT_DEPTHS,
                          grid: int = 16) -> torch.Tensor:
    """(N, N) symmetric co-visibility in [0, 1] of N cameras (images height x width): for each ordered pair (i, j), the
    fraction of a grid x grid subset of frame i's pixel rays, cut with the fronto-parallel planes at camera depths
    `depths` (scene units), that project in front of camera j and inside its image; then averaged with (j, i)."""
    cams = cams.to(dtype=torch.float64)
    o, d = ray_origins_directions(cams, height, width)  # (N, H, W, 3)
    ys = torch.linspace(0, height - 1, grid).round().long()
    xs = torch.linspace(0, width - 1, grid).round().long()
    o, d = o[:, ys][:, :, xs].reshape(len(o), -1, 3), d[:, ys][:, :, xs].reshape(len(d), -1, 3)
    forward = cams.R[:, None, :, 2]  # (N, 1, 3) optical axis in world coordinates
    along = d / (d * forward).sum(-1, keepdim=True)  # ray scaled to unit camera depth
    pts = torch.cat([o + z * along for z in depths], 1)  # (N, M, 3) world points on fronto-parallel planes
    # into every camera j: p_c = R_j^T (p - t_j)
    pc = torch.einsum("jba,njmb->njma", cams.R, pts[:, None] - cams.t[None, :, None])  # (N src, N dst, M, 3)
    z = pc[..., 2]
    f_px = cams.f * (min(height - 1, width - 1) / 2)
    safe = torch.where(z > 1e-9, z, torch.ones_like(z))
    u = f_px[None, :, None] * pc[..., 0] / safe + (width - 1) / 2
    v = f_px[None, :, None] * pc[..., 1] / safe + (height - 1) / 2
    inside = (z > 1e-9) & (u >= -0.5) & (u <= width - 0.5) & (v >= -0.5) & (v <= height - 0.5)
    covis = inside.double().mean(-1)
    return 0.5 * (covis + covis.T)


def profile_from_pairwise(pairwise: torch.Tensor | np.ndarray, max_gap: int | None = None) -> np.ndarray:
    """Overlap profile O(g), g = 0..max_gap, = mean of the g-th off-diagonal, made non-increasing (running min)."""
    m = np.asarray(pairwise, dtype=np.float64)
    n = m.shape[0]
    max_gap = n - 1 if max_gap is None else min(max_gap, n - 1)
    prof = np.array([np.diagonal(m, offset=g).mean() for g in range(max_gap + 1)])
    prof[0] = 1.0
    return np.minimum.accumulate(np.clip(prof, 0.0, 1.0))


def geometric_overlap_profile(cams: Camera, height: int, width: int, depths: Sequence[float] = DEFAULT_DEPTHS,
                              grid: int = 16) -> np.ndarray:
    """Overlap profile of a clip with known cameras (N,) (see `pairwise_covisibility`)."""
    return profile_from_pairwise(pairwise_covisibility(cams, height, width, depths, grid))


def thumbnail_extractor(size: int = 8) -> Callable[[torch.Tensor], torch.Tensor]:
    """No-download fallback feature ('thumbnail cosine'): size x size area-averaged colours, mean-centred per image."""

    def extract(frames: torch.Tensor) -> torch.Tensor:
        x = F.adaptive_avg_pool2d(frames.float(), size).flatten(1)
        return x - x.mean(1, keepdim=True)

    return extract


def dinov2_extractor(model: str = "dinov2_vits14") -> Callable[[torch.Tensor], torch.Tensor]:
    """DINOv2 CLS features from the local torch hub cache (`torch.hub.get_dir()`); never downloads.

    Raises FileNotFoundError naming the looked-up directory when the repository or weights are not cached."""
    hub = pathlib.Path(torch.hub.get_dir())
    repo = hub / "facebookresearch_dinov2_main"
    if not repo.is_dir():
        raise FileNotFoundError(f"DINOv2 is not in the torch hub cache ({repo} missing); use thumbnail_extractor()")
    net = torch.hub.load(str(repo), model, source="local", pretrained=True).eval()
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)

    @torch.no_grad()
    def extract(frames: torch.Tensor) -> torch.Tensor:
        x = F.interpolate((frames.float() + 1) / 2, size=224, mode="bilinear", antialias=True)
        return net((x - mean) / std)

    return extract


def feature_overlap_profile(frames: torch.Tensor, extractor: Callable[[torch.Tensor], torch.Tensor] | None = None
                            ) -> np.ndarray:
    """Overlap profile from frames (N, 3, H, W) in [-1, 1]: cosine similarity of features, clamped to [0, 1]."""
    feats = F.normalize((extractor or thumbnail_extractor())(frames).double(), dim=-1)
    return profile_from_pairwise((feats @ feats.T).clamp(0, 1))


# ------------------------------------------------------------------------------------------------ schedule + sampler
def overlap_range(progress: float, start: tuple[float, float] = (1.0, 1.0), end: tuple[float, float] = (0.5, 1.0),
                  anneal_fraction: float = 0.57) -> tuple[float, float]:
    """Target-overlap range at training progress in [0, 1]: linear from `start` to `end` over the first
    `anneal_fraction` of training, then constant."""
    s = min(max(progress / anneal_fraction, 0.0), 1.0) if anneal_fraction > 0 else 1.0
    return tuple(a + s * (b - a) for a, b in zip(start, end))  # type: ignore[return-value]


def interval_for_overlap(profile: np.ndarray, target: float, max_interval: float, tol: float = 0.05
                         ) -> float | None:
    """The official inversion of an overlap profile O(g), g = 0, 1, ... (non-increasing): the (fractional) frame
    interval whose overlap is `target`, or None when the draw must be rejected.

    target in [O(0), O(0) + tol] -> 0; target in [O(last) - tol, O(last)] -> the last gap; otherwise linear
    interpolation inside the first pair (g, g + 1) with O(g) >= target >= O(g + 1); None when no pair brackets the
    target or the interval exceeds `max_interval`."""
    prof = np.asarray(profile, dtype=np.float64)
    if prof.ndim != 1 or len(prof) < 2:
        raise ValueError(f"interval_for_overlap: need a profile of >= 2 gaps, got shape {prof.shape}")
    last = len(prof) - 1
    if prof[0] <= target <= prof[0] + tol:
        return 0.0 if 0 <= max_interval else None
    if prof[last] - tol <= target <= prof[last]:
        return float(last) if last <= max_interval else None
    for g in range(last):
        hi, lo = prof[g], prof[g + 1]
        if hi >= target >= lo:
            est = float(g) if abs(hi - lo) < 1e-6 else (g + 1) + (target - lo) / (hi - lo) * (g - (g + 1))
            return est if est <= max_interval else None
    return None


def window_length(n_views: int, span_views: int, interval: int) -> int:
    """Frames spanned by a clip's window (last index - first index): max(n_views, (span_views - 1) x interval), so
    the n_views frames drawn in it are distinct."""
    return max(n_views, (span_views - 1) * interval)


MAX_TRIES = 200  # the official `max_resample_tries`


class CurriculumError(ValueError):
    """No valid window for a clip (too short for the view count, or every draw rejected)."""


@dataclass
class CurriculumSampler:
    """Frame sampler for one clip per call. mode: 'none' | 'frame_interval' | 'overlap'.

    start/end/anneal_fraction: the target-overlap range schedule (`overlap_range`); span_views: views spanning the
    window (the reference views: (span_views - 1) x interval frames; default half the clip's views, >= 2);
    tol: the overlap tolerance at the profile's ends; max_tries: draws before giving up on a clip."""

    mode: str = "overlap"
    start: tuple[float, float] = (1.0, 1.0)
    end: tuple[float, float] = (0.5, 1.0)
    anneal_fraction: float = 0.57
    span_views: int | None = None
    tol: float = 0.05
    max_tries: int = MAX_TRIES

    def __post_init__(self) -> None:
        if self.mode not in CURRICULUM_MODES:
            raise ValueError(f"curriculum mode must be one of {CURRICULUM_MODES}, got {self.mode!r}")
        if self.span_views is not None and self.span_views < 2:
            raise ValueError(f"curriculum span_views must be >= 2 or None, got {self.span_views}")
        if self.tol < 0 or self.max_tries < 1:
            raise ValueError(f"curriculum tol must be >= 0 and max_tries >= 1, got {self.tol}, {self.max_tries}")

    def span_for(self, n_views: int) -> int:
        return self.span_views or max(2, n_views // 2)

    def _interval(self, n_frames: int, n_views: int, span: int, progress: float, rng: np.random.Generator,
                  profile: np.ndarray | None) -> int | None:
        """One draw of the frame interval (None: rejected)."""
        max_interval = n_frames / (span - 1)  # official: len(frames) / (inputs - 1)
        largest = max(1, int(max_interval))
        if self.mode == "overlap":
            lo, hi = overlap_range(progress, self.start, self.end, self.anneal_fraction)
            est = interval_for_overlap(profile, rng.uniform(lo, hi), max_interval, self.tol)
            if est is None or not np.isfinite(est):
                return None
            return max(1, int(est))
        if self.mode == "frame_interval":
            s = min(max(progress / self.anneal_fraction, 0.0), 1.0) if self.anneal_fraction > 0 else 1.0
            return int(rng.integers(1, 1 + max(1, int(1 + s * (largest - 1)))))
        return int(rng.integers(1, largest + 1))

    def sample(self, n_frames: int, n_views: int, progress: float, rng: np.random.Generator,
               profile: np.ndarray | None = None) -> tuple[np.ndarray, int]:
        """(sorted distinct frame indices (n_views,), interval) for a clip of n_frames frames at training progress in
        [0, 1]. Raises CurriculumError when the clip cannot hold a window (n_frames <= n_views) or `max_tries`
        draws are all rejected."""
        if n_views < 2:
            raise ValueError(f"curriculum: need at least 2 views per clip, got {n_views}")
        if n_frames <= n_views:
            raise CurriculumError(f"clip has {n_frames} frames; a window of {n_views} distinct views spans at least "
                                  f"{n_views} frames, so the clip needs more than {n_views}")
        if self.mode == "overlap" and profile is None:
            raise ValueError("curriculum mode 'overlap' needs the clip's overlap profile")
        span = self.span_for(n_views)
        for _ in range(self.max_tries):
            interval = self._interval(n_frames, n_views, span, progress, rng, profile)
            if interval is None:
                continue
            total = window_length(n_views, span, interval)
            if n_frames <= total:  # official: the window must fit with its end frame inside the clip
                continue
            first = int(rng.integers(0, n_frames - total))
            inner = first + 1 + rng.choice(total - 1, size=n_views - 2, replace=False)
            idx = np.concatenate([[first], np.sort(inner), [first + total]]).astype(int)
            return idx, interval
        raise CurriculumError(f"curriculum: no valid window for a clip of {n_frames} frames and {n_views} views "
                              f"after {self.max_tries} draws (mode {self.mode!r}, progress {progress:.3f})")
