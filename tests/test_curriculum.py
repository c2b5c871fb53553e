"""E-RayZer's visual-overlap curriculum against independent constructions: the official interval lookup written out
here, distinct frames for every progress and view count, the floor, rejection outside the range, and the achieved
overlap of sampled clips computed analytically from their poses."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rayder_core.geometry import Camera
from rayder_core.data import curriculum as C


def official_interval(stats: dict[str, dict[str, float]], target: float, max_allowed: float, tol: float = 0.05):
    """The official `_sampling_interval_for_target` (QitaoZhao/E-RayZer training/dl3dv_dataset.py) restated: stats
    maps str(interval) -> {"avg_per_view": overlap}."""
    values = [(i, stats[str(i)]["avg_per_view"]) for i in sorted(int(k) for k in stats)]
    if values[0][1] <= target <= values[0][1] + tol:
        return values[0][0] if values[0][0] <= max_allowed else None
    if values[-1][1] - tol <= target <= values[-1][1]:
        return values[-1][0] if values[-1][0] <= max_allowed else None
    for (i1, c1), (i2, c2) in zip(values[:-1], values[1:]):
        if c1 >= target >= c2:
            est = float(i1) if abs(c1 - c2) < 1e-6 else i2 + (target - c2) / (c1 - c2) * (i1 - i2)
            return est if est <= max_allowed else None
    return None


def test_interval_lookup_matches_the_official_formula():
    rng = np.random.default_rng(0)
    for _ in range(300):
        n = int(rng.integers(2, 40))
        prof = np.minimum.accumulate(np.concatenate([[1.0], np.sort(rng.uniform(0.1, 1.0, n - 1))[::-1]]))
        stats = {str(g): {"avg_per_view": float(v)} for g, v in enumerate(prof)}
        target = float(rng.uniform(0.0, 1.1))
        max_allowed = float(rng.uniform(1, n))
        ours = C.interval_for_overlap(prof, target, max_allowed)
        ref = official_interval(stats, target, max_allowed)
        assert (ours is None) == (ref is None)
        if ref is not None:
            assert ours == pytest.approx(ref, abs=1e-12)


def test_interval_is_floored_and_out_of_range_targets_are_rejected():
    prof = np.array([1.0, 0.9, 0.8, 0.7, 0.6])
    # target 0.73 lies 70% of the way from gap 2 (0.8) to gap 3 (0.7): 2.7 -> floored to 2 (rounding would give 3)
    assert C.interval_for_overlap(prof, 0.73, 10) == pytest.approx(2.7)
    sampler = C.CurriculumSampler("overlap", start=(0.73, 0.73), end=(0.73, 0.73), span_views=2)
    _, gap = sampler.sample(40, 3, 0.5, np.random.default_rng(0), prof)
    assert gap == 2
    assert C.interval_for_overlap(prof, 0.50, 10) is None       # below the last value - tol
    assert C.interval_for_overlap(prof, 0.56, 10) == 4.0        # within tol of the last value
    assert C.interval_for_overlap(prof, 0.73, 2.5) is None      # above the allowed interval
    # a profile that never reaches the target range is rejected draw after draw, then a clear error
    never = C.CurriculumSampler("overlap", start=(0.1, 0.2), end=(0.1, 0.2), span_views=2, max_tries=5)
    with pytest.raises(C.CurriculumError, match="after 5 draws"):
        never.sample(40, 4, 0.0, np.random.default_rng(0), prof)


@pytest.mark.parametrize("mode", C.CURRICULUM_MODES)
def test_frames_are_distinct_for_every_progress_and_view_count(mode):
    rng = np.random.default_rng(1)
    prof = np.exp(-np.arange(60) / 15.0)
    for views in range(2, 11):
        sampler = C.CurriculumSampler(mode)
        for progress in np.linspace(0.0, 1.0, 11):
            for n_frames in (views + 1, views + 4, 60):
                idx, gap = sampler.sample(n_frames, views, float(progress), rng, prof[:n_frames])
                assert len(idx) == views and len(set(idx.tolist())) == views, (mode, views, progress, idx)
                assert np.all(np.diff(idx) > 0) and idx[0] >= 0 and idx[-1] < n_frames
                span = max(2, views // 2)
                assert idx[-1] - idx[0] == max(views, (span - 1) * gap)  # the official window
    with pytest.raises(C.CurriculumError, match="more than 4"):
        C.CurriculumSampler("none").sample(4, 4, 0.0, rng)


def _sideways_clip(n: int, step: float) -> Camera:
    """n cameras looking along +z, moving along +x by `step` scene units per frame, focal 1 (normalised)."""
    t = torch.zeros(n, 3, dtype=torch.float64)
    t[:, 0] = step * torch.arange(n, dtype=torch.float64)
    return Camera(R=torch.eye(3, dtype=torch.float64).expand(n, 3, 3).clone(), t=t,
                  f=torch.ones(n, dtype=torch.float64))


def _analytic_overlap(gap: int, step: float, depths=C.DEFAULT_DEPTHS) -> float:
    """Co-visibility of two such frames `gap` apart, in closed form: at camera depth z the image covers
    [-z, z] in x (normalised focal 1 = half-width / z), so a shift of gap x step leaves 1 - shift / (2 z) of it."""
    return float(np.mean([max(0.0, 1.0 - gap * step / (2.0 * z)) for z in depths]))


def test_achieved_overlap_of_sampled_clips_from_their_poses():
    """Sample clips of a clip with known poses and score each sampled clip's interval by the closed-form overlap
    (not the matrix the profile came from): early clips are near overlap 1, late ones spread down to ~0.5, and
    every clip's overlap is at least the lower end of the target range (minus the tolerance and the 16-point grid's
    resolution)."""
    step, n = 0.05, 120
    cams = _sideways_clip(n, step)
    prof = C.geometric_overlap_profile(cams, 32, 32, grid=16)
    sampler = C.CurriculumSampler("overlap", span_views=2)
    rng = np.random.default_rng(3)
    for progress in (0.0, 0.3, 0.6, 1.0):
        lo, hi = C.overlap_range(progress)
        achieved = []
        for _ in range(60):
            idx, gap = sampler.sample(n, 4, progress, rng, prof)
            assert len(set(idx.tolist())) == 4
            achieved.append(_analytic_overlap(gap, step))
        print(f"progress {progress}: target [{lo:.2f}, {hi:.2f}], achieved {min(achieved):.3f} .. "
              f"{max(achieved):.3f} (mean {np.mean(achieved):.3f})")
        assert min(achieved) >= lo - 0.05 - 0.07
        if progress == 0.0:
            assert min(achieved) >= _analytic_overlap(1, step) - 1e-12  # interval 1, the closest frames
        if progress == 1.0:
            assert min(achieved) < 0.65 and np.mean(achieved) < 0.85


def test_profile_agrees_with_the_closed_form():
    step = 0.05
    prof = C.geometric_overlap_profile(_sideways_clip(80, step), 32, 32, grid=16)
    closed = np.array([_analytic_overlap(g, step) for g in range(len(prof))])
    assert np.abs(prof - closed).max() < 0.07  # the 16 x 16 ray grid's resolution
    assert math.isclose(prof[0], 1.0)


def test_overlap_range_schedule():
    assert C.overlap_range(0.0) == (1.0, 1.0)
    assert C.overlap_range(0.285) == pytest.approx((0.75, 1.0))
    assert C.overlap_range(0.9) == pytest.approx((0.5, 1.0))
    with pytest.raises(ValueError, match="curriculum mode"):
        C.CurriculumSampler("easy")
    with pytest.raises(ValueError, match="profile"):
        C.CurriculumSampler("overlap").sample(30, 6, 0.0, np.random.default_rng(0))
