"""Tests for rayder_core.geometry against independent references (scipy, closed forms, pinhole projection)."""

import math

import numpy as np
import pytest
import torch
from scipy.linalg import expm
from scipy.spatial.transform import Rotation

from rayder_core.geometry import (
    FOCAL_EPS,
    SMALL_ANGLE,
    Camera,
    camera_from_params,
    camera_from_re10k,
    camera_to_params,
    camera_to_re10k,
    hat,
    plucker_rays,
    ray_origins_directions,
    relative_to,
    rotation_angle_deg,
    se3_exp,
    se3_log,
    so3_exp,
    so3_left_jacobian,
    so3_left_jacobian_inv,
    so3_log,
)

F64 = torch.float64


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _unit(n: int, g: torch.Generator) -> torch.Tensor:
    v = torch.randn(n, 3, dtype=F64, generator=g)
    return v / v.norm(dim=-1, keepdim=True)


def _rotvecs(n: int, seed: int = 0) -> torch.Tensor:
    """Axis-angle vectors covering 0, tiny, Taylor-switch, generic and near-pi angles (all < pi)."""
    g = _gen(seed)
    angles = torch.cat(
        [
            torch.tensor([0.0, 1e-12, 1e-7, 1e-4, SMALL_ANGLE * 0.999, SMALL_ANGLE * 1.001], dtype=F64),
            torch.tensor([math.pi - 0.1001, math.pi - 0.0999, math.pi - 1e-4, math.pi - 1e-8], dtype=F64),
            torch.rand(n, dtype=F64, generator=g) * math.pi,
        ]
    )
    return _unit(len(angles), g) * angles[:, None]


def _random_camera(shape, seed: int = 0) -> Camera:
    g = _gen(seed)
    ext = torch.randn(*shape, 6, dtype=F64, generator=g)
    intr = 0.4 * torch.randn(*shape, 1, dtype=F64, generator=g)
    return camera_from_params(ext, intr)


# ---------------------------------------------------------------------------------------------- SO(3)


def test_hat_is_cross_product():
    g = _gen(1)
    a, b = torch.randn(2, 5, 3, dtype=F64, generator=g)
    np.testing.assert_allclose((hat(a) @ b[..., None])[..., 0], np.cross(a.numpy(), b.numpy()), atol=1e-15)


def test_so3_exp_matches_scipy():
    w = _rotvecs(200)
    ref = Rotation.from_rotvec(w.numpy()).as_matrix()
    np.testing.assert_allclose(so3_exp(w).numpy(), ref, atol=1e-14)


def test_so3_log_matches_scipy_and_roundtrips():
    w = _rotvecs(200, seed=2)
    R = so3_exp(w)
    got = so3_log(R)
    np.testing.assert_allclose(got.numpy(), Rotation.from_matrix(R.numpy()).as_rotvec(), atol=1e-12)
    np.testing.assert_allclose(got.numpy(), w.numpy(), atol=1e-10)


def test_so3_log_exactly_pi():
    axes = _unit(20, _gen(3))
    R = so3_exp(axes * math.pi)
    got = so3_log(R)
    np.testing.assert_allclose(got.norm(dim=-1).numpy(), math.pi, atol=1e-12)
    np.testing.assert_allclose(so3_exp(got).numpy(), R.numpy(), atol=1e-12)  # +-axis both valid at pi


def test_so3_left_jacobian_matches_series():
    # J_left = sum_k K^k / (k+1)!  = top-right block of expm([[K, I], [0, 0]]).
    w = _rotvecs(50, seed=4)
    for wi, J in zip(w.numpy(), so3_left_jacobian(w).numpy()):
        M = np.zeros((6, 6))
        M[:3, :3] = hat(torch.from_numpy(wi)).numpy()
        M[:3, 3:] = np.eye(3)
        np.testing.assert_allclose(J, expm(M)[:3, 3:], atol=1e-13)
    eye = np.broadcast_to(np.eye(3), (len(w), 3, 3))
    np.testing.assert_allclose((so3_left_jacobian(w) @ so3_left_jacobian_inv(w)).numpy(), eye, atol=1e-11)


@pytest.mark.parametrize("fn", [so3_exp, so3_left_jacobian, so3_left_jacobian_inv])
def test_taylor_branch_is_continuous_at_switch(fn):
    axes = _unit(10, _gen(5))
    # Angles 1e-14 rad either side of the switch: the outputs may only move by ~1e-14 if both branches agree.
    below, above = fn(axes * (SMALL_ANGLE - 1e-14)), fn(axes * (SMALL_ANGLE + 1e-14))
    np.testing.assert_allclose(below.numpy(), above.numpy(), rtol=0, atol=1e-13)
    # Derivative continuity as well (autograd through each branch).
    grads = []
    for eps in (-1e-9, 1e-9):
        wi = (axes * (SMALL_ANGLE + eps)).requires_grad_(True)
        (fn(wi) * torch.arange(9, dtype=F64).view(3, 3)).sum().backward()
        grads.append(wi.grad)
    np.testing.assert_allclose(grads[0].numpy(), grads[1].numpy(), atol=1e-8)


def test_so3_log_continuous_at_switches():
    axes = _unit(10, _gen(6))
    for switch in (SMALL_ANGLE, math.pi - 0.1):
        lo, hi = switch - 1e-11, switch + 1e-11
        np.testing.assert_allclose(so3_log(so3_exp(axes * lo)).numpy(), (axes * lo).numpy(), atol=1e-12)
        np.testing.assert_allclose(so3_log(so3_exp(axes * hi)).numpy(), (axes * hi).numpy(), atol=1e-12)


def test_gradients_finite_at_identity():
    w = torch.zeros(2, 3, dtype=F64, requires_grad=True)
    (so3_exp(w).sum() + so3_left_jacobian(w).sum() + so3_left_jacobian_inv(w).sum()).backward()
    assert torch.isfinite(w.grad).all()
    # d exp(w)/dw at 0 is hat: d(R[2,1])/dw_x = 1
    w = torch.zeros(3, dtype=F64, requires_grad=True)
    so3_exp(w)[2, 1].backward()
    np.testing.assert_allclose(w.grad.numpy(), [1.0, 0.0, 0.0], atol=1e-15)


# ---------------------------------------------------------------------------------------------- SE(3)


def _twist_matrix(xi: np.ndarray) -> np.ndarray:
    M = np.zeros((4, 4))
    M[:3, :3] = hat(torch.from_numpy(xi[:3])).numpy()
    M[:3, 3] = xi[3:]
    return M


def test_se3_exp_matches_expm():
    w = _rotvecs(60, seed=7)
    v = 2 * torch.randn(len(w), 3, dtype=F64, generator=_gen(7))
    xi = torch.cat([w, v], dim=-1)
    R, t = se3_exp(xi.float())  # float32 input is computed in float64
    assert R.dtype == t.dtype == F64
    ref = np.stack([expm(_twist_matrix(x)) for x in xi.float().double().numpy()])
    np.testing.assert_allclose(R.numpy(), ref[:, :3, :3], atol=1e-12)
    np.testing.assert_allclose(t.numpy(), ref[:, :3, 3], atol=1e-12)


def test_se3_log_exp_roundtrip():
    w = _rotvecs(100, seed=8)
    v = 3 * torch.randn(len(w), 3, dtype=F64, generator=_gen(8))
    xi = torch.cat([w, v], dim=-1)
    np.testing.assert_allclose(se3_log(*se3_exp(xi)).numpy(), xi.numpy(), atol=1e-9)
    # exp(log(T)) = T for random T, including rotations by exactly pi
    R_random = torch.from_numpy(Rotation.random(50, random_state=8).as_matrix())
    R = torch.cat([R_random, so3_exp(_unit(5, _gen(9)) * math.pi)])
    t = torch.randn(len(R), 3, dtype=F64, generator=_gen(10))
    R2, t2 = se3_exp(se3_log(R, t))
    np.testing.assert_allclose(R2.numpy(), R.numpy(), atol=1e-12)
    np.testing.assert_allclose(t2.numpy(), t.numpy(), atol=1e-10)


def test_camera_params_roundtrip():
    cam = _random_camera((3, 4), seed=11)
    ext, intr = camera_to_params(cam)
    cam2 = camera_from_params(ext, intr)
    for a, b in ((cam.R, cam2.R), (cam.t, cam2.t), (cam.f, cam2.f)):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-10)
    zero = camera_from_params(torch.zeros(6), torch.zeros(1))
    assert zero.f.item() == pytest.approx(1 + FOCAL_EPS, abs=1e-15)
    np.testing.assert_allclose(zero.matrix().numpy(), np.eye(4), atol=0)


# ---------------------------------------------------------------------------------------------- Camera


def test_camera_container():
    cam = _random_camera((2, 5), seed=12)
    assert cam.shape == (2, 5)
    assert cam[..., 1:3].shape == (2, 2) and cam[:, -1].shape == (2,)
    torch.testing.assert_close(cam[..., 3].R, cam.R[:, 3])
    torch.testing.assert_close(cam[1].t, cam.t[1])
    cat = Camera.cat([cam, cam[:, :2]], dim=-1)
    assert cat.shape == (2, 7)
    torch.testing.assert_close(cat[:, 5:].f, cam.f[:, :2])
    assert cam.to(dtype=torch.float32).R.dtype == torch.float32
    M = cam.matrix()
    torch.testing.assert_close(M[..., :3, :3], cam.R)
    torch.testing.assert_close(M[..., :3, 3], cam.t)
    torch.testing.assert_close(M[..., 3, :], torch.tensor([0, 0, 0, 1], dtype=F64).expand(2, 5, 4))
    with pytest.raises(ValueError, match="leading dims"):
        Camera(R=cam.R, t=cam.t[:, :2], f=cam.f)


# ---------------------------------------------------------------------------------------------- rays


def test_plucker_invariants():
    cam = _random_camera((2, 3), seed=13)
    rays = plucker_rays(cam, 6, 9)
    assert rays.shape == (2, 3, 6, 9, 6) and rays.dtype == F64
    d, m = rays[..., :3], rays[..., 3:]
    np.testing.assert_allclose(d.norm(dim=-1).numpy(), 1.0, atol=1e-14)
    np.testing.assert_allclose((d * m).sum(-1).numpy(), 0.0, atol=1e-13)
    # The moment does not depend on which point of the line is used as origin.
    o = cam.t[..., None, None, :]
    for lam in (-2.0, 0.7, 5.0):
        np.testing.assert_allclose(torch.linalg.cross(o + lam * d, d, dim=-1).numpy(), m.numpy(), atol=1e-12)
    o2, d2 = ray_origins_directions(cam, 6, 9)
    torch.testing.assert_close(d2, d, rtol=0, atol=0)
    torch.testing.assert_close(o2, o.expand_as(o2), rtol=0, atol=0)
    r32 = plucker_rays(cam, 6, 9, dtype=torch.float32)
    assert r32.dtype == torch.float32
    torch.testing.assert_close(r32, rays.float(), rtol=0, atol=0)


@pytest.mark.parametrize("h,w", [(5, 5), (7, 11), (9, 3)])
def test_centre_pixel_ray_is_optical_axis(h, w):
    cam = _random_camera((4,), seed=14)
    _, d = ray_origins_directions(cam, h, w)
    np.testing.assert_allclose(d[:, h // 2, w // 2].numpy(), cam.R[..., 2].numpy(), atol=1e-15)


@pytest.mark.parametrize("n", [2, 8, 33])
def test_extreme_pixel_angles_match_focal(n):
    """Square image: camera-frame corner rays are [+-1, +-1, f] (up to scale), the centre-row ends [+-1, 0, f]."""
    cam = _random_camera((5,), seed=15)
    f = cam.f.numpy()
    _, d = ray_origins_directions(cam, n, n)

    def angle_deg(a, b):
        cos = (d[:, a[0], a[1]] * d[:, b[0], b[1]]).sum(-1).clamp(-1, 1)
        return np.degrees(np.arccos(cos.numpy()))

    last = n - 1
    np.testing.assert_allclose(angle_deg((0, 0), (last, last)), np.degrees(2 * np.arctan(np.sqrt(2) / f)), atol=1e-6)
    np.testing.assert_allclose(angle_deg((last, 0), (0, last)), np.degrees(2 * np.arctan(np.sqrt(2) / f)), atol=1e-6)
    for a, b in (((0, 0), (0, last)), ((0, 0), (last, 0)), ((last, 0), (last, last))):
        np.testing.assert_allclose(angle_deg(a, b), np.degrees(np.arccos(f**2 / (2 + f**2))), atol=1e-6)
    if n % 2:  # centre row and column exist: horizontal and vertical field of view between pixel centres
        c = n // 2
        np.testing.assert_allclose(angle_deg((c, 0), (c, last)), np.degrees(2 * np.arctan(1 / f)), atol=1e-6)
        np.testing.assert_allclose(angle_deg((0, c), (last, c)), np.degrees(2 * np.arctan(1 / f)), atol=1e-6)


@pytest.mark.parametrize("h,w", [(4, 7), (12, 5)])
def test_rays_match_pinhole_projection(h, w):
    """Points on each pixel's ray project back to that pixel with K = [[f_px, 0, (w-1)/2], [0, f_px, (h-1)/2]]."""
    cam = _random_camera((3,), seed=16)
    o, d = ray_origins_directions(cam, h, w)
    X = o + 2.5 * d  # world points
    Xc = torch.einsum("bji,bhwj->bhwi", cam.R, X - cam.t[:, None, None])  # R^T (X - t)
    f_px = cam.f * min(h - 1, w - 1) / 2
    u = f_px[:, None, None] * Xc[..., 0] / Xc[..., 2] + (w - 1) / 2
    v = f_px[:, None, None] * Xc[..., 1] / Xc[..., 2] + (h - 1) / 2
    vv, uu = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    np.testing.assert_allclose(u.numpy(), np.broadcast_to(uu, u.shape), atol=1e-10)
    np.testing.assert_allclose(v.numpy(), np.broadcast_to(vv, v.shape), atol=1e-10)
    assert (Xc[..., 2] > 0).all()  # z forward


def test_ray_size_errors():
    cam = _random_camera((1,))
    with pytest.raises(ValueError, match="h=1"):
        plucker_rays(cam, 1, 8)


def test_gradcheck_plucker_wrt_params():
    g = _gen(17)
    ext = 0.5 * torch.randn(1, 2, 6, dtype=F64, generator=g)
    ext[0, 1, :3] = 1e-3  # one view in the Taylor branch
    intr = 0.2 * torch.randn(1, 2, 1, dtype=F64, generator=g)
    ext.requires_grad_(True)
    intr.requires_grad_(True)

    def fn(e, i):
        return plucker_rays(camera_from_params(e, i), 3, 4)

    assert torch.autograd.gradcheck(fn, (ext, intr), eps=1e-6, atol=1e-7)
    loss = fn(ext, intr).float().square().mean()  # loss in the activation dtype still reaches the params
    loss.backward()
    assert ext.grad.abs().sum() > 0 and intr.grad.abs().sum() > 0


# ---------------------------------------------------------------------------------------------- RE10K


@pytest.mark.parametrize("h,w", [(256, 256), (64, 96), (360, 640), (2, 2)])
def test_re10k_roundtrip(h, w):
    cam = _random_camera((3, 4), seed=18)
    row = camera_to_re10k(cam, h, w)
    assert row.shape == (3, 4, 18)
    np.testing.assert_allclose(row[..., 2:4].numpy(), 0.5)
    np.testing.assert_allclose(row[..., 4:6].numpy(), 0.0)
    # w2c block is the inverse of the c2w matrix
    w2c = row[..., 6:].reshape(3, 4, 3, 4).numpy()
    np.testing.assert_allclose(w2c, np.linalg.inv(cam.matrix().numpy())[..., :3, :], atol=1e-12)
    cam2 = camera_from_re10k(row, h, w)
    for a, b in ((cam.R, cam2.R), (cam.t, cam2.t), (cam.f, cam2.f)):
        np.testing.assert_allclose(b.numpy(), a.numpy(), atol=1e-12)


@pytest.mark.parametrize("h,w", [(6, 6), (5, 8)])
def test_re10k_intrinsics_project_pixel_centres(h, w):
    """Pixel-edge convention: our ray through pixel index (u, v) hits (u + 0.5, v + 0.5) under the RE10K K."""
    cam = _random_camera((2,), seed=19)
    row = camera_to_re10k(cam, h, w)
    fx, fy, cx, cy = (row[:, i, None, None] for i in range(4))
    _, d = ray_origins_directions(cam, h, w)
    dc = torch.einsum("bji,bhwj->bhwi", cam.R, d)  # camera-frame directions
    u_edge = fx * w * dc[..., 0] / dc[..., 2] + cx * w
    v_edge = fy * h * dc[..., 1] / dc[..., 2] + cy * h
    vv, uu = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    np.testing.assert_allclose(u_edge.numpy(), np.broadcast_to(uu + 0.5, u_edge.shape), atol=1e-10)
    np.testing.assert_allclose(v_edge.numpy(), np.broadcast_to(vv + 0.5, v_edge.shape), atol=1e-10)


def test_re10k_tolerates_rounding_and_orthonormalises():
    cam = _random_camera((5,), seed=20)
    row = camera_to_re10k(cam, 64, 64).float()  # stored rows are float32
    row[:, 1] *= 1.005  # within tol=0.01
    cam2 = camera_from_re10k(row, 64, 64)
    eye = np.broadcast_to(np.eye(3), (5, 3, 3))
    np.testing.assert_allclose((cam2.R.transpose(-1, -2) @ cam2.R).numpy(), eye, atol=1e-14)
    np.testing.assert_allclose(cam2.R.numpy(), cam.R.numpy(), atol=1e-6)
    np.testing.assert_allclose(cam2.f.numpy(), cam.f.numpy() * 1.0025, rtol=1e-5)


def test_re10k_inconsistent_rows_raise():
    cam = _random_camera((2, 3), seed=21)
    row = camera_to_re10k(cam, 64, 64)
    bad = row.clone()
    bad[1, 2, 0] *= 1.05
    with pytest.raises(ValueError, match=r"fx and fy.*row \(1, 2\).*fx_px="):
        camera_from_re10k(bad, 64, 64)
    # a square image's row read as a non-square image is inconsistent too
    with pytest.raises(ValueError, match="fx and fy"):
        camera_from_re10k(row, 64, 96)
    bad = row.clone()
    bad[0, 1, 3] = 0.52
    with pytest.raises(ValueError, match=r"principal point.*row \(0, 1\).*cy=0.52"):
        camera_from_re10k(bad, 64, 64)
    bad = row.clone()
    bad[0, 0, 6:9] *= 2
    with pytest.raises(ValueError, match="not a rotation"):
        camera_from_re10k(bad, 64, 64)
    with pytest.raises(ValueError, match=r"\(\.\.\., 18\)"):
        camera_from_re10k(row[..., :12], 64, 64)


# ---------------------------------------------------------------------------------------------- evaluation helpers


def test_rotation_angle_matches_scipy():
    Ra = Rotation.random(100, random_state=22)
    Rb = Rotation.random(100, random_state=23)
    small = Ra[:10] * Rotation.from_rotvec(np.tile([1e-7, 0.0, 0.0], (10, 1)))
    got = rotation_angle_deg(torch.from_numpy(Ra.as_matrix()), torch.from_numpy(Rb.as_matrix()))
    np.testing.assert_allclose(got.numpy(), np.degrees((Ra.inv() * Rb).magnitude()), atol=1e-10)
    tiny = rotation_angle_deg(torch.from_numpy(Ra[:10].as_matrix()), torch.from_numpy(small.as_matrix()))
    np.testing.assert_allclose(tiny.numpy(), np.degrees(1e-7), rtol=1e-6)
    flip = so3_exp(_unit(4, _gen(25)) * math.pi)
    np.testing.assert_allclose(rotation_angle_deg(torch.eye(3, dtype=F64), flip).numpy(), 180.0, atol=1e-9)


def test_relative_to_matches_matrix_inverse_and_is_gauge_invariant():
    cam = _random_camera((2, 5), seed=26)
    rel = relative_to(cam, 2)
    M = cam.matrix().numpy()
    expected = np.linalg.inv(M[:, 2:3]) @ M
    np.testing.assert_allclose(rel.matrix().numpy(), expected, atol=1e-12)
    np.testing.assert_allclose(rel[:, 2].matrix().numpy(), np.broadcast_to(np.eye(4), (2, 4, 4)), atol=1e-14)
    torch.testing.assert_close(rel.f, cam.f)
    # Any world transform G applied to all views (c2w -> G c2w) leaves relative poses unchanged.
    G = torch.eye(4, dtype=F64)
    G[:3, :3] = so3_exp(torch.tensor([0.3, -1.2, 2.0], dtype=F64))
    G[:3, 3] = torch.tensor([1.0, -2.0, 0.5], dtype=F64)
    moved = G @ cam.matrix()
    cam_g = Camera(R=moved[..., :3, :3], t=moved[..., :3, 3], f=cam.f)
    np.testing.assert_allclose(relative_to(cam_g, -3).matrix().numpy(), rel.matrix().numpy(), atol=1e-12)
    # dim=0 picks the reference along the first leading dim
    rel0 = relative_to(cam, 1, dim=0)
    np.testing.assert_allclose(rel0.matrix().numpy(), np.linalg.inv(M[1:2]) @ M, atol=1e-12)
    with pytest.raises(IndexError):
        relative_to(cam, 5)
