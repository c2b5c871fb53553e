"""Pose transferability (XFactor TPS): the metric on a synthetic pair of trajectories against closed forms, the
re-anchoring written out, and the full render -> re-estimate loop on a tiny model (shapes, determinism)."""
from __future__ import annotations

import math

import pytest
import torch

from rayder_core import probe as P
from rayder_core.geometry import Camera, so3_exp
from rayder_core.models.rayder.model import RayDer
from rayder_core.models.rayder.config import ModelConfig
from test_probe import FRAMES, synthetic_cameras


def rotate_about_middle(cams: Camera, deg: float, axis=(0.0, 0.0, 1.0)) -> Camera:
    """Each frame's pose relative to the middle frame gets an extra rotation of `deg` (its camera axes turned)."""
    ax = torch.tensor(axis, dtype=torch.float64)
    D = so3_exp(math.radians(deg) * ax / ax.norm())
    return Camera(R=cams.R @ D, t=cams.t.clone(), f=cams.f.clone())


def test_identical_trajectories_score_perfectly():
    cams = synthetic_cameras(2, seed=0)
    m = P.transfer_errors(cams, cams)
    assert m["R@10"] == m["T@10"] == 100.0 and m["rot_err_deg"] < 1e-5 and m["trans_err_deg"] < 1e-4
    # a rigid change of world frame and scale does not matter (the metric is relative to the middle frame)
    g = so3_exp(torch.tensor([0.3, -1.0, 0.5], dtype=torch.float64))
    moved = Camera(R=g @ cams.R, t=3.0 * (g @ cams.t[..., None])[..., 0] + 1.0, f=cams.f)
    m = P.transfer_errors(cams, moved)
    assert m["R@10"] == 100.0 and m["T@10"] == 100.0 and m["rot_err_deg"] < 1e-5 and m["trans_err_deg"] < 1e-4


def test_known_rotation_error_closed_form():
    """Turning every frame's camera by 15 degrees about its optical axis (the middle one too): relative rotations
    R_m^T R_i become D^T R_m^T R_i D, off by the angle between them; translations in the middle camera's frame are
    rotated by D^T, 15 degrees off unless parallel to the axis. Brute-force reference computed here."""
    cams = synthetic_cameras(1, seed=5)
    other = rotate_about_middle(cams, 15.0)
    m = P.transfer_errors(cams, other)
    Ra = cams.R[0, 12].T @ cams.R[0]
    Rb = other.R[0, 12].T @ other.R[0]
    keep = [i for i in range(FRAMES) if i != 12]
    ref_rot = [math.degrees(math.acos(max(-1.0, min(1.0, ((Ra[i].T @ Rb[i]).trace().item() - 1) / 2)))) for i in keep]
    ta = (cams.R[0, 12].T @ (cams.t[0] - cams.t[0, 12]).T).T
    tb = (other.R[0, 12].T @ (other.t[0] - other.t[0, 12]).T).T
    ref_t = [math.degrees(math.acos(max(-1.0, min(1.0, (ta[i] @ tb[i] / ta[i].norm() / tb[i].norm()).item()))))
             for i in keep]
    assert m["rot_err_deg"] == pytest.approx(sum(ref_rot) / len(keep), rel=1e-6, abs=1e-6)
    assert m["trans_err_deg"] == pytest.approx(sum(ref_t) / len(keep), rel=1e-6)
    assert m["T@10"] == pytest.approx(100.0 * sum(a < 10 for a in ref_t) / len(keep))
    assert m["R@30"] == pytest.approx(100.0 * sum(a < 30 for a in ref_rot) / len(keep))
    # a pure 15-degree error on the translation directions: T@10 = 0, T@20 = 100
    flat = Camera(R=cams.R.clone(), t=cams.t.clone(), f=cams.f)
    rel = (cams.R[0, 12].T @ (cams.t[0] - cams.t[0, 12]).T).T
    axis = torch.nn.functional.normalize(torch.linalg.cross(rel, torch.tensor([0.3, 1.0, -0.2],
                                                                               dtype=torch.float64).expand_as(rel)))
    D = so3_exp(math.radians(15.0) * axis)  # per frame, about an axis perpendicular to its translation
    flat.t[0] = cams.t[0, 12] + (cams.R[0, 12] @ (D @ rel[..., None])[..., 0].T).T
    m = P.transfer_errors(cams, flat)
    assert m["R@10"] == 100.0 and m["T@10"] == 0.0 and m["T@20"] == 100.0
    assert m["trans_err_deg"] == pytest.approx(15.0, abs=1e-6)


def test_reanchor_written_out():
    cams = synthetic_cameras(2, seed=7)
    out = P.reanchor(cams[0], cams[1][3])
    m = FRAMES // 2
    for i in (0, 5, 20):
        # T_anchor T_mid^-1 T_i with 4x4 matrices
        def mat(R, t):
            M = torch.eye(4, dtype=torch.float64)
            M[:3, :3], M[:3, 3] = R, t
            return M
        want = mat(cams.R[1, 3], cams.t[1, 3]) @ torch.linalg.inv(mat(cams.R[0, m], cams.t[0, m])) @ \
            mat(cams.R[0, i], cams.t[0, i])
        torch.testing.assert_close(out.R[i], want[:3, :3])
        torch.testing.assert_close(out.t[i], want[:3, 3])
    torch.testing.assert_close(out.R[m], cams.R[1, 3])


def test_transfer_loop_on_a_tiny_model():
    torch.manual_seed(0)
    model = RayDer(ModelConfig.from_preset("tiny-xs")).eval()
    g = torch.Generator().manual_seed(0)
    a, b = (torch.rand(8, 3, 32, 32, generator=g) * 2 - 1 for _ in range(2))
    ref, est = P.transfer_trajectory(model, a, b)
    assert tuple(ref.shape) == tuple(est.shape) == (8,)
    m = P.transfer_errors(ref, est)
    assert set(m) == {"R@10", "R@20", "R@30", "T@10", "T@20", "T@30", "rot_err_deg", "trans_err_deg"}
    assert all(math.isfinite(v) for v in m.values())
    ref2, est2 = P.transfer_trajectory(model, a, b)
    torch.testing.assert_close(est.R, est2.R)
    torch.testing.assert_close(est.t, est2.t)
    with pytest.raises(ValueError, match="middle frame"):
        P.transfer_trajectory(model, a, b, context=(0, 7))
