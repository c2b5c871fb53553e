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
57% of training (the paper: 86k of 152k steps; use end (0.75, 1) with feature overlap), finds the largest gap whose
overlap is at least the target (linear interpolation of the profile, rounded, capped at (len - 1) / (span_views - 1)),
and places a window of (span_views - 1) x gap frames: first and last frames fixed at the window ends, the other views
drawn uniformly inside it, sorted. `CurriculumSampler(mode=...)` switches between 'none' (uniform random window), the
RayZer-style 'frame_interval' (the gap itself anneals from 1 to the maximum) and 'overlap'.
"""

from __future__ import annotations

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
    import pathlib

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


def gap_for_overlap(profile: np.ndarray, target: float, max_gap: int) -> int:
    """Largest frame gap g <= max_gap with O(g) >= target (profile linearly interpolated, then rounded); >= 1."""
    prof = np.asarray(profile, dtype=np.float64)[: max_gap + 1]
    if len(prof) < 2:
        return 1
    below = np.nonzero(prof < target)[0]
    if len(below) == 0:
        return max(1, len(prof) - 1)
    k = int(below[0])  # first gap under the target; k >= 1 because O(0) = 1 >= target
    lo, hi = prof[k - 1], prof[k]
    frac = (lo - target) / (lo - hi) if lo > hi else 0.0
    return int(min(max(round(k - 1 + frac), 1), max_gap))


@dataclass
class CurriculumSampler:
    """Frame sampler for one clip per call. mode: 'none' | 'frame_interval' | 'overlap'.

    start/end/anneal_fraction: the target-overlap range schedule (`overlap_range`); span_views: views spanning the
    window ((span_views - 1) x gap frames; the paper uses the reference views)."""

    mode: str = "overlap"
    start: tuple[float, float] = (1.0, 1.0)
    end: tuple[float, float] = (0.5, 1.0)
    anneal_fraction: float = 0.57
    span_views: int | None = None

    def __post_init__(self) -> None:
        if self.mode not in CURRICULUM_MODES:
            raise ValueError(f"curriculum mode must be one of {CURRICULUM_MODES}, got {self.mode!r}")

    def sample(self, n_frames: int, n_views: int, progress: float, rng: np.random.Generator,
               profile: np.ndarray | None = None) -> tuple[np.ndarray, int]:
        """(sorted frame indices (n_views,), gap) for a clip of n_frames frames at training progress in [0, 1]."""
        if n_frames < n_views:
            raise ValueError(f"clip has {n_frames} frames, fewer than the {n_views} views to sample")
        span = self.span_views or max(2, n_views // 2)
        max_gap = max(1, (n_frames - 1) // (span - 1))
        if self.mode == "overlap":
            if profile is None:
                raise ValueError("curriculum mode 'overlap' needs the clip's overlap profile")
            lo, hi = overlap_range(progress, self.start, self.end, self.anneal_fraction)
            gap = gap_for_overlap(profile, rng.uniform(lo, hi), max_gap)
        elif self.mode == "frame_interval":
            s = min(max(progress / self.anneal_fraction, 0.0), 1.0) if self.anneal_fraction > 0 else 1.0
            gap = int(rng.integers(1, 1 + max(1, round(1 + s * (max_gap - 1)))))
        else:
            gap = int(rng.integers(1, max_gap + 1))
        window = min((span - 1) * gap, n_frames - 1)
        first = int(rng.integers(0, n_frames - window))
        inner = first + 1 + rng.choice(max(window - 1, 0), size=min(n_views - 2, max(window - 1, 0)), replace=False) \
            if window > 1 else np.array([], dtype=int)
        idx = np.concatenate([[first], inner, [first + window]]).astype(int)
        if len(idx) < n_views:  # window too short to hold distinct frames: repeat the ends
            idx = np.concatenate([idx, rng.choice(idx, n_views - len(idx))])
        return np.sort(idx[:n_views]), gap
