"""Relative pose accuracy RPA@5/15/30 (rayder_core.metrics) against hand-computed cases and the official evaluation
code restated (E-RayZer's camera_eval.py, from VGGT): the published definition (sign-folded translation angle, <=) is
the default, the strict one (no folding, <) a named option."""

from __future__ import annotations

import math

import pytest
import torch

from rayder_core.geometry import Camera, so3_exp
from rayder_core.metrics import pairwise_pose_errors, relative_pose_accuracy, rpa_key


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
    out = relative_pose_accuracy(pred, gt, definition="strict")
    assert out["rpa_pairs"] == 3 and set(out) == {"rpa_strict@5", "rpa_strict@15", "rpa_strict@30", "rpa_pairs"}
    out = {k.replace("_strict", ""): v for k, v in out.items()}
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


def official_rpa(gt_c2w: torch.Tensor, pred_c2w: torch.Tensor, thresholds=(5, 15, 30)) -> dict[str, float]:
    """evaluate_camera_pose_metrics of the official code restated (4x4 c2w matrices (N, 4, 4)), in percent."""
    n = gt_c2w.shape[0]
    i1, i2 = torch.combinations(torch.arange(n), 2, with_replacement=False).unbind(-1)

    def inv_se3(m):
        out = torch.eye(4, dtype=m.dtype).repeat(m.shape[0], 1, 1)
        out[:, :3, :3] = m[:, :3, :3].transpose(1, 2)
        out[:, :3, 3:] = -m[:, :3, :3].transpose(1, 2) @ m[:, :3, 3:]
        return out

    gt_w2c, pred_w2c = torch.inverse(gt_c2w), torch.inverse(pred_c2w)
    rel_gt = gt_w2c[i1] @ inv_se3(gt_w2c[i2])
    rel_pred = pred_w2c[i1] @ inv_se3(pred_w2c[i2])
    eps = 1e-15
    tr = (rel_gt[:, :3, :3].transpose(1, 2) @ rel_pred[:, :3, :3]).diagonal(dim1=-2, dim2=-1).sum(-1)
    r_err = torch.rad2deg(torch.arccos(torch.clamp((tr - 1) / 2, -1 + eps, 1 - eps)))
    tg = rel_gt[:, :3, 3] / (rel_gt[:, :3, 3].norm(dim=1, keepdim=True) + eps)
    tp = rel_pred[:, :3, 3] / (rel_pred[:, :3, 3].norm(dim=1, keepdim=True) + eps)
    a = torch.acos(torch.clamp((tg * tp).sum(1), -1 + eps, 1 - eps))
    t_err = torch.rad2deg(torch.minimum(a, math.pi - a))
    err = torch.maximum(r_err, t_err)
    return {f"rpa@{t}": float((err <= t).double().mean() * 100) for t in thresholds}


def _c2w(cam: Camera) -> torch.Tensor:
    m = torch.eye(4, dtype=torch.float64).repeat(cam.shape[0], 1, 1)
    m[:, :3, :3], m[:, :3, 3] = cam.R, cam.t
    return m


def test_published_definition_matches_the_official_code():
    torch.manual_seed(0)
    for trial in range(20):
        v = 6
        R = so3_exp(torch.randn(v, 3, dtype=torch.float64))
        t = torch.randn(v, 3, dtype=torch.float64)
        gt = Camera(R=R, t=t, f=torch.ones(v, dtype=torch.float64))
        noise = 0.05 * (trial + 1) / 4
        pred = Camera(R=so3_exp(noise * torch.randn(v, 3, dtype=torch.float64)) @ R,
                      t=t + noise * torch.randn(v, 3, dtype=torch.float64) * (-1 if trial % 2 else 1),
                      f=gt.f)
        ours = relative_pose_accuracy(pred, gt)
        ref = official_rpa(_c2w(gt), _c2w(pred))
        for k in (5, 15, 30):
            assert ours[rpa_key(k)] == pytest.approx(ref[f"rpa@{k}"], abs=1e-9)
        strict = relative_pose_accuracy(pred, gt, definition="strict")
        assert all(strict[rpa_key(k, "strict")] <= ours[rpa_key(k)] for k in (5, 15, 30))


def test_published_counts_equality_and_folds_the_sign_strict_does_not():
    gt = _cams([_rz(0)] * 2, [[0, 0, 0], [1, 0, 0]])
    flipped = _cams([_rz(0)] * 2, [[0, 0, 0], [-1, 0, 0]])  # reversed baseline: 180 deg, folded 0 deg
    assert relative_pose_accuracy(flipped, gt)["rpa@5"] == 100.0
    assert relative_pose_accuracy(flipped, gt, definition="strict")["rpa_strict@30"] == 0.0
    # an error of exactly 15 deg (rotation about z, along-x translation unchanged in camera 0's frame) counts at @15
    # for the published definition (<=) and not for the strict one (<)
    exact = _cams([_rz(0), _rz(15)], [[0, 0, 0], [1, 0, 0]])
    err = pairwise_pose_errors(exact, gt)[0].item()
    assert err == pytest.approx(15.0, abs=1e-9)
    published = relative_pose_accuracy(exact, gt, thresholds=(err,))
    strict = relative_pose_accuracy(exact, gt, thresholds=(err,), definition="strict")
    assert published[rpa_key(err)] == 100.0 and strict[rpa_key(err, "strict")] == 0.0
    with pytest.raises(ValueError, match="definition"):
        relative_pose_accuracy(gt, gt, definition="vggt")
