"""Relative pose accuracy RPA@5/15/30 (rayder_core.metrics) against hand-computed cases."""

from __future__ import annotations

import math

import pytest
import torch

from rayder_core.geometry import Camera, so3_exp
from rayder_core.metrics import pairwise_pose_errors, relative_pose_accuracy


def _rz(deg: float) -> torch.Tensor:
    return so3_exp(torch.tensor([0.0, 0.0, math.radians(deg)], dtype=torch.float64))


def _cams(Rs, ts) -> Camera:
    return Camera(R=torch.stack(Rs), t=torch.tensor(ts, dtype=torch.float64),
                  f=torch.ones(len(Rs), dtype=torch.float64))


def test_hand_computed_three_views():
    # ground truth: three cameras on the x axis, all looking along +z (identity rotation)
    gt = _cams([_rz(0)] * 3, [[0, 0, 0], [1, 0, 0], [2, 0, 0]])
    # prediction: view 1 rotated 10 deg about z; view 2 at (2, 2 tan 20deg, 0) (translation direction off by 20 deg
    # from view 0, and by atan2(2 tan20, 1) from view 1)
    t2 = [2.0, 2.0 * math.tan(math.radians(20)), 0.0]
    pred = _cams([_rz(0), _rz(10), _rz(0)], [[0, 0, 0], [1, 0, 0], t2])
    rot, trans = pairwise_pose_errors(pred, gt)
    # pairs (0,1), (0,2), (1,2)
    assert rot.tolist() == pytest.approx([10.0, 0.0, 10.0], abs=1e-9)
    # (0,1): direction of camera 1 from 0 unchanged -> 0; (0,2): 20 deg; (1,2): in camera 1's frame (rotated 10 deg)
    # the offset (1, 2 tan20, 0) is rotated by -10 deg: angle = atan2(2 tan 20, 1) - 10 deg
    a12 = math.degrees(math.atan2(2 * math.tan(math.radians(20)), 1)) - 10.0
    assert trans.tolist() == pytest.approx([0.0, 20.0, a12], abs=1e-9)
    # errors max(rot, trans) = [10, 20, max(10, a12)] with a12 = 26.05 deg
    assert a12 == pytest.approx(26.0524, abs=1e-3)
    out = relative_pose_accuracy(pred, gt)
    assert out["rpa_pairs"] == 3
    assert out["rpa@5"] == pytest.approx(0.0)
    assert out["rpa@15"] == pytest.approx(100 / 3)  # only pair (0,1) (10 deg)
    assert out["rpa@30"] == pytest.approx(100.0)


def test_invariant_to_world_frame_and_scale_and_batched():
    torch.manual_seed(0)
    v = 5
    R = so3_exp(torch.randn(v, 3, dtype=torch.float64))
    t = torch.randn(v, 3, dtype=torch.float64)
    gt = Camera(R=R, t=t, f=torch.ones(v, dtype=torch.float64))
    G = so3_exp(torch.tensor([0.3, -1.0, 2.0], dtype=torch.float64))
    moved = Camera(R=G @ R, t=3.0 * (t @ G.T) + torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64), f=gt.f)
    rot, trans = pairwise_pose_errors(moved, gt)
    assert rot.abs().max() < 1e-6 and trans.abs().max() < 1e-5
    assert relative_pose_accuracy(moved, gt)["rpa@5"] == 100.0
    # batched leading dims (B, V) give the pooled percentage
    noisy = Camera(R=so3_exp(torch.randn(v, 3, dtype=torch.float64)) @ R, t=t, f=gt.f)
    both_pred = Camera(R=torch.stack([moved.R, noisy.R]), t=torch.stack([moved.t, noisy.t]), f=torch.ones(2, v))
    both_gt = Camera(R=torch.stack([R, R]), t=torch.stack([t, t]), f=torch.ones(2, v))
    single = relative_pose_accuracy(noisy, gt)["rpa@30"]
    assert relative_pose_accuracy(both_pred, both_gt)["rpa@30"] == pytest.approx((100 + single) / 2)


def test_sign_folding_and_errors():
    gt = _cams([_rz(0)] * 2, [[0, 0, 0], [1, 0, 0]])
    pred = _cams([_rz(0)] * 2, [[0, 0, 0], [-1, 0, 0]])  # reversed baseline
    assert pairwise_pose_errors(pred, gt)[1].item() == pytest.approx(180.0)
    assert pairwise_pose_errors(pred, gt, fold_translation_sign=True)[1].item() == pytest.approx(0.0)
    with pytest.raises(ValueError, match="2 views"):
        relative_pose_accuracy(gt[:1], gt[:1])
