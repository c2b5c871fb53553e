"""E-RayZer's visual-overlap curriculum: co-visibility closed form, profiles of synthetic clips with known poses, the
annealed target range, and the sampler hitting the target overlap."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rayder_core.data.synth import make_clip
from rayder_core.geometry import Camera, so3_exp
from rayder_core.models.erayzer import curriculum as C


def _cams(meta) -> Camera:
    c = meta["cameras"]
    return Camera(R=torch.tensor(c["R"], dtype=torch.float64), t=torch.tensor(c["t"], dtype=torch.float64),
                  f=torch.tensor(c["f"], dtype=torch.float64))


def test_covisibility_closed_form():
    """90-degree cameras (f = 1) at depth 2 see x in [-2, 2]; a sideways shift of 1 keeps 25 of 33 pixel columns."""
    eye = torch.eye(3, dtype=torch.float64)
    cams = Camera(R=torch.stack([eye, eye, so3_exp(torch.tensor([0.0, np.pi, 0.0], dtype=torch.float64))]),
                  t=torch.tensor([[0.0, 0, 0], [1.0, 0, 0], [0.0, 0, 0]], dtype=torch.float64),
                  f=torch.ones(3, dtype=torch.float64))
    m = C.pairwise_covisibility(cams, 33, 33, depths=(2.0,), grid=33)
    assert m[0, 0] == 1.0
    assert float(m[0, 1]) == pytest.approx(25 / 33, abs=1e-12)  # pixel bounds at +-(2 + 0.0625) in x
    assert float(m[0, 2]) == 0.0  # looking backwards
    prof = C.profile_from_pairwise(m)
    assert prof[0] == 1.0 and np.all(np.diff(prof) <= 0)


def test_schedule_anneals_linearly_over_57_percent():
    assert C.overlap_range(0.0) == (1.0, 1.0)
    assert C.overlap_range(0.285) == pytest.approx((0.75, 1.0))
    assert C.overlap_range(0.57) == pytest.approx((0.5, 1.0))
    assert C.overlap_range(0.9) == pytest.approx((0.5, 1.0))
    assert C.overlap_range(0.285, end=(0.75, 1.0)) == pytest.approx((0.875, 1.0))


@pytest.mark.parametrize("index,trajectory", [(0, "orbit"), (1, "walk"), (2, "pan"), (3, "orbit")])
def test_sampler_hits_the_target_overlap(index, trajectory):
    frames, meta = make_clip(index, resolution=16, seconds=20.0, trajectory=trajectory)
    cams = _cams(meta)
    n = len(frames)
    pairwise = C.pairwise_covisibility(cams, 32, 32)  # overlap from the exact poses (32^2 image geometry)
    prof = C.profile_from_pairwise(pairwise)
    sampler = C.CurriculumSampler("overlap", span_views=3)
    rng = np.random.default_rng(index)
    gaps_seen = []
    for target in (0.9, 0.75, 0.6):
        sampler.start = sampler.end = (target, target)
        if prof[-1] >= target:
            continue  # this clip never drops below the target: nothing to test at this level
        errors = []
        for _ in range(20):
            idx, gap = sampler.sample(n, 6, progress=0.5, rng=rng, profile=prof)
            assert len(idx) == 6 and np.all(np.diff(idx) >= 0) and idx[0] >= 0 and idx[-1] < n
            assert idx[-1] - idx[0] == min(2 * gap, n - 1)  # window = (span_views - 1) x gap, ends fixed
            # the overlap actually achieved: mean co-visibility of the frame pairs `gap` apart, from the poses
            achieved = float(np.diagonal(pairwise.numpy(), offset=gap).mean())
            errors.append(achieved - target)
        step = max(abs(prof[gap] - prof[max(gap - 1, 0)]), abs(prof[min(gap + 1, len(prof) - 1)] - prof[gap]))
        print(f"clip {index} ({meta['trajectory']}): target {target:.2f} -> gap {gap} frames, achieved overlap "
              f"{target + np.mean(errors):.3f} (profile step there {step:.3f})")
        assert abs(np.mean(errors)) <= max(0.05, step)
        gaps_seen.append(gap)
    assert gaps_seen == sorted(gaps_seen)  # lower target overlap -> larger gaps


def test_annealed_sampling_moves_from_easy_to_hard():
    frames, meta = make_clip(0, resolution=16, seconds=20.0, trajectory="orbit")
    prof = C.geometric_overlap_profile(_cams(meta), 32, 32)
    sampler = C.CurriculumSampler("overlap")
    rng = np.random.default_rng(0)
    early = [sampler.sample(len(frames), 10, 0.0, rng, prof)[1] for _ in range(30)]
    late = [sampler.sample(len(frames), 10, 1.0, rng, prof)[1] for _ in range(30)]
    assert max(early) <= 2 and np.mean(late) > np.mean(early) + 1
    # frame_interval mode: the gap range grows with progress; none: any gap from the start
    fi = C.CurriculumSampler("frame_interval")
    assert max(fi.sample(len(frames), 10, 0.0, rng)[1] for _ in range(20)) == 1
    none = [C.CurriculumSampler("none").sample(len(frames), 10, 0.0, rng)[1] for _ in range(40)]
    assert max(none) > 3
    with pytest.raises(ValueError, match="curriculum mode"):
        C.CurriculumSampler("easy")
    with pytest.raises(ValueError, match="overlap profile"):
        C.CurriculumSampler("overlap").sample(30, 6, 0.0, rng)


def test_feature_overlap_fallback_decreases_with_gap(tmp_path, monkeypatch):
    frames, _ = make_clip(1, resolution=16, seconds=10.0, trajectory="orbit")
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 127.5 - 1
    prof = C.feature_overlap_profile(x)  # thumbnail cosine (no download)
    assert prof[0] == 1.0 and np.all(np.diff(prof) <= 0) and prof[-1] < prof[1]
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))  # an empty hub cache: no DINOv2
    with pytest.raises(FileNotFoundError, match="hub cache"):
        C.dinov2_extractor()
