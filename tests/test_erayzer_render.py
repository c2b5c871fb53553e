"""E-RayZer's dense PyTorch splatting renderer against an independent brute-force per-pixel loop (values), finite
differences (gradients, incl. the focal), the focal-folding identity used for gsplat, and pixel alignment."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rayder_core.geometry import Camera, ray_origins_directions, so3_exp
from rayder_core.models.erayzer import render as R


# ---------------------------------------------------------------------------------------------- brute force (numpy)
def _quat_rot(q):
    w, x, y, z = q / np.linalg.norm(q)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])


def brute_force(means, quats, scales, opac, colors, viewmat, K, W, H, near, bg):
    """gsplat's per-pixel loop written out scalar by scalar (float64 numpy): project each Gaussian (EWA, frustum
    clamp, eps2d 0.3), sort by depth, then for every pixel composite front to back with alpha = min(0.999, o e^-s),
    skip alpha < 1/255, stop before T <= 1e-4, add T * background."""
    Rw, tw = viewmat[:3, :3], viewmat[:3, 3]
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    proj = []
    for i in range(len(means)):
        p = Rw @ means[i] + tw
        if p[2] <= near:
            continue
        Rq = _quat_rot(quats[i])
        S = np.diag(scales[i])
        cov = Rq @ S @ S.T @ Rq.T
        covc = Rw @ cov @ Rw.T
        limx = 1.3 * 0.5 * W / fx  # (W - cx)/fx + 0.3 * tan_fovx with cx = W/2
        limy = 1.3 * 0.5 * H / fy
        tx = p[2] * min(max(p[0] / p[2], -limx), limx)
        ty = p[2] * min(max(p[1] / p[2], -limy), limy)
        J = np.array([[fx / p[2], 0, -fx * tx / p[2] ** 2], [0, fy / p[2], -fy * ty / p[2] ** 2]])
        c2 = J @ covc @ J.T + 0.3 * np.eye(2)
        proj.append((p[2], np.array([fx * p[0] / p[2] + cx, fy * p[1] / p[2] + cy]), np.linalg.inv(c2), opac[i],
                     colors[i]))
    proj.sort(key=lambda g: g[0])
    img = np.zeros((H, W, 3))
    for j in range(H):
        for i in range(W):
            px = np.array([i + 0.5, j + 0.5])
            T, acc = 1.0, np.zeros(3)
            for _, m2, conic, o, c in proj:
                d = m2 - px
                sigma = 0.5 * d @ conic @ d
                alpha = min(0.999, o * math.exp(-sigma))
                if sigma < 0 or alpha < 1 / 255:
                    continue
                if T * (1 - alpha) <= 1e-4:
                    break
                acc += alpha * T * c
                T *= 1 - alpha
            img[j, i] = acc + T * bg
    return img


def _scene(n=6, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(n, 3, generator=g, dtype=dtype) * torch.tensor([0.6, 0.6, 0.5], dtype=dtype)
    means[:, 2] += 3.0
    means[0, 2] = 0.1  # behind the near plane: culled
    quats = torch.randn(n, 4, generator=g, dtype=dtype)
    scales = 0.05 + 0.25 * torch.rand(n, 3, generator=g, dtype=dtype)
    opac = 0.3 + 0.6 * torch.rand(n, generator=g, dtype=dtype)
    opac[3] = 0.9995  # alpha clamp at the centre
    colors = torch.rand(n, 3, generator=g, dtype=dtype)
    # camera: small rotation and translation, focal f (normalised)
    cam = Camera(R=so3_exp(torch.tensor([0.05, -0.08, 0.03], dtype=dtype)), t=torch.tensor([0.1, -0.05, 0.2],
                 dtype=dtype), f=torch.tensor(1.3, dtype=dtype))
    return means, quats, scales, opac, colors, cam


@pytest.mark.parametrize("W,H,seed", [(9, 7, 0), (12, 12, 1), (8, 10, 2)])
def test_dense_renderer_matches_brute_force(W, H, seed):
    means, quats, scales, opac, colors, cam = _scene(seed=seed)
    vm, K = R.camera_to_viewmat_K(cam, H, W)
    img, alpha = R.rasterize_dense(means, quats, scales, opac, colors, vm, K, W, H, near_plane=0.2, background=0.7)
    ref = brute_force(*(t.numpy() for t in (means, quats, scales, opac, colors, vm, K)), W, H, 0.2, 0.7)
    err = np.abs(img.detach().numpy() - ref).max()
    print(f"{W}x{H} seed {seed}: max |dense - brute force| = {err:.2e}; image mean {ref.mean():.4f}")
    assert err < 1e-9
    assert ref.std() > 0.01  # a non-trivial image
    # pixel chunking changes nothing
    img2, _ = R.rasterize_dense(means, quats, scales, opac, colors, vm, K, W, H, 0.2, 0.7, pixel_chunk=5)
    assert torch.equal(img, img2)


def test_early_termination_and_background():
    """A stack of nearly opaque Gaussians: compositing stops before T <= 1e-4 exactly as the loop does."""
    n = 5
    means = torch.tensor([[0.0, 0.0, 2.0 + 0.1 * i] for i in range(n)], dtype=torch.float64)
    quats = torch.tensor([[1.0, 0, 0, 0]] * n, dtype=torch.float64)
    scales = torch.full((n, 3), 0.5, dtype=torch.float64)
    opac = torch.tensor([0.98, 0.97, 0.99, 0.95, 0.9], dtype=torch.float64)
    colors = torch.eye(3, dtype=torch.float64).repeat(2, 1)[:n]
    cam = Camera(R=torch.eye(3, dtype=torch.float64), t=torch.zeros(3, dtype=torch.float64),
                 f=torch.tensor(1.0, dtype=torch.float64))
    vm, K = R.camera_to_viewmat_K(cam, 5, 5)
    img, alpha = R.rasterize_dense(means, quats, scales, opac, colors, vm, K, 5, 5, 0.2, 1.0)
    ref = brute_force(*(t.numpy() for t in (means, quats, scales, opac, colors, vm, K)), 5, 5, 0.2, 1.0)
    assert np.abs(img.numpy() - ref).max() < 1e-12
    # centre pixel (sigma = 0): 0.98 and 0.97 composite (T = 6e-4); the third (0.99) would take T to 6e-6 <= 1e-4,
    # so compositing stops there: alpha = 1 - 6e-4, colour = 0.98 red + 0.02 * 0.97 green + 6e-4 background
    assert float(alpha[2, 2]) == pytest.approx(1 - 0.02 * 0.03, abs=1e-12)
    expect = torch.tensor([0.98 + 6e-4, 0.02 * 0.97 + 6e-4, 6e-4], dtype=torch.float64)
    assert torch.allclose(img[2, 2], expect, atol=1e-12)


def _render_fn(which, W=8, H=7, seed=3):
    means, quats, scales, opac, colors, cam = _scene(seed=seed)
    base = dict(means=means, quats=quats, scales=scales, opac=opac, colors=colors, omega=torch.tensor(
        [0.05, -0.08, 0.03], dtype=torch.float64), t=cam.t, f=cam.f)

    def fn(x):
        kw = dict(base)
        kw[which] = x
        c = Camera(R=so3_exp(kw["omega"]), t=kw["t"], f=kw["f"])
        vm, K = R.camera_to_viewmat_K(c, H, W)
        img, _ = R.rasterize_dense(kw["means"], kw["quats"], kw["scales"], kw["opac"], kw["colors"], vm, K, W, H,
                                   0.2, 0.4)
        w = torch.linspace(0.5, 1.5, img.numel(), dtype=torch.float64).reshape(img.shape)
        return (img * w).sum()

    return fn, base[which]


@pytest.mark.parametrize("which", ["means", "quats", "scales", "opac", "colors", "omega", "t", "f"])
def test_gradients_match_finite_differences(which):
    fn, x0 = _render_fn(which)
    x = x0.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(fn(x), x)
    eps = 1e-6
    flat = x0.reshape(-1)
    num = torch.zeros_like(flat)
    for i in range(flat.numel()):
        d = torch.zeros_like(flat)
        d[i] = eps
        num[i] = (fn((flat + d).reshape(x0.shape)) - fn((flat - d).reshape(x0.shape))) / (2 * eps)
    err = (g.reshape(-1) - num).abs().max() / max(num.abs().max(), 1e-12)
    print(f"{which}: |grad| max {num.abs().max():.3e}, relative error {err:.2e}")
    assert num.abs().max() > 1e-4  # the parameter matters
    assert err < 1e-5


def test_focal_gradient_matches_brute_force_difference():
    """The focal's autograd gradient equals a finite difference of the independent brute-force loop."""
    means, quats, scales, opac, colors, cam = _scene(seed=4)
    W = H = 8
    wts = np.linspace(0.5, 1.5, H * W * 3).reshape(H, W, 3)

    def brute(f):
        vm, K = R.camera_to_viewmat_K(Camera(R=cam.R, t=cam.t, f=torch.tensor(f, dtype=torch.float64)), H, W)
        return (brute_force(*(t.numpy() for t in (means, quats, scales, opac, colors, vm, K)), W, H, 0.2, 0.4)
                * wts).sum()

    f = cam.f.clone().requires_grad_(True)
    vm, K = R.camera_to_viewmat_K(Camera(R=cam.R, t=cam.t, f=f), H, W)
    img, _ = R.rasterize_dense(means, quats, scales, opac, colors, vm, K, W, H, 0.2, 0.4)
    (g,) = torch.autograd.grad((img * torch.from_numpy(wts)).sum(), f)
    eps = 1e-6
    num = (brute(float(cam.f) + eps) - brute(float(cam.f) - eps)) / (2 * eps)
    print(f"d render / d focal: autograd {float(g):.8f}, brute-force finite difference {num:.8f}")
    assert abs(num) > 1e-3
    assert float(g) == pytest.approx(num, rel=1e-5)


def test_focal_folding_is_exact():
    """Rendering with the focal folded into the view matrix (the gsplat path) gives the same image and the same focal
    gradient as with the focal in K."""
    means, quats, scales, opac, colors, cam = _scene(seed=5)
    W, H = 10, 9
    grads, imgs = [], []
    for fold in (False, True):
        f = cam.f.clone().requires_grad_(True)
        vm, K = R.camera_to_viewmat_K(Camera(R=cam.R, t=cam.t, f=f), H, W)
        if fold:
            vm, K = R.fold_focal(vm, K, f0=1.0)
            assert not K.requires_grad and float(K[0, 0]) == 1.0
        img, _ = R.rasterize_dense(means, quats, scales, opac, colors, vm, K, W, H, 0.2, 1.0)
        (g,) = torch.autograd.grad(img.square().sum(), f)
        grads.append(float(g))
        imgs.append(img.detach())
    print(f"focal gradient: K path {grads[0]:.10f}, folded path {grads[1]:.10f}")
    assert torch.allclose(imgs[0], imgs[1], atol=1e-12)
    assert grads[1] == pytest.approx(grads[0], rel=1e-9)
    assert abs(grads[0]) > 1e-3


def test_pixel_aligned_gaussian_lands_on_its_pixel():
    """A Gaussian on the ray of pixel (u, v) (rayder_core.geometry convention) projects to that pixel's centre."""
    H, W = 6, 9
    cam = Camera(R=so3_exp(torch.tensor([0.2, -0.1, 0.3], dtype=torch.float64)),
                 t=torch.tensor([0.3, 0.1, -0.2], dtype=torch.float64), f=torch.tensor(0.9, dtype=torch.float64))
    o, d = ray_origins_directions(cam, H, W)
    pts = (o + 2.5 * d).reshape(-1, 3)
    vm, K = R.camera_to_viewmat_K(cam, H, W)
    q = torch.tensor([[1.0, 0, 0, 0]], dtype=torch.float64).expand(len(pts), 4)
    m2, _, _, valid = R.project_gaussians(pts, q, torch.full_like(pts, 0.01), vm, K, W, H, 0.2)
    vv, uu = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    expect = torch.stack([uu + 0.5, vv + 0.5], -1).reshape(-1, 2).double()
    assert valid.all()
    assert torch.allclose(m2, expect, atol=1e-9)


def test_sh_degree_zero_and_one_closed_form():
    dirs = torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]], dtype=torch.float64)
    sh = torch.zeros(2, 4, 3, dtype=torch.float64)
    sh[:, 0] = 0.5
    sh[:, 2] = 1.0  # the z-coefficient (C1 * z)
    out = R.sh_to_rgb(sh, dirs)
    c0, c1 = 0.28209479177387814, 0.4886025119029199
    assert torch.allclose(out[0], torch.full((3,), c0 * 0.5 + c1 + 0.5, dtype=torch.float64))
    assert torch.allclose(out[1], torch.full((3,), c0 * 0.5 + 0.5, dtype=torch.float64))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="gsplat comparison needs a CUDA device (none here)")
def test_dense_renderer_matches_gsplat_on_cuda():  # pragma: no cover - GPU only
    gsplat = pytest.importorskip("gsplat", reason="gsplat is not installed")
    means, quats, scales, opac, colors, cam = _scene(n=200, seed=6, dtype=torch.float32)
    W = H = 32
    vm, K = R.camera_to_viewmat_K(cam, H, W)
    ours, _ = R.rasterize_dense(means, quats, scales, opac, colors, vm, K, W, H, 0.2, 1.0)
    dev = "cuda"
    img, _, _ = gsplat.rasterization(means.to(dev), quats.to(dev), scales.to(dev), opac.to(dev), colors.to(dev),
                                     vm[None].to(dev), K[None].to(dev), W, H, near_plane=0.2,
                                     backgrounds=torch.ones(1, 3, device=dev), packed=False)
    err = (img[0].cpu() - ours).abs().max()
    print(f"max |dense - gsplat| = {err:.2e}")
    assert err < 2e-2  # tails beyond the 3-sigma tile footprint differ (module docstring)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="gsplat on the GPU needs a CUDA device (none here)")
def test_gsplat_path_matches_the_dense_renderer_with_gradients_on_cuda():  # pragma: no cover - GPU only
    """`render_views` through gsplat (`_render_gsplat`, the focal folded into the view matrices by `fold_focal`)
    against the dense renderer on the same CUDA tensors: images within 1e-4, gradients of means, opacities and the
    focal within 1e-3 relative. Opacities stay below 0.35, so every pixel outside gsplat's 3-sigma footprint has
    alpha < 1/255 and is skipped by both renderers (the only place they could differ)."""
    pytest.importorskip("gsplat", reason="gsplat is not installed")
    dev = torch.device("cuda")
    g = torch.Generator().manual_seed(7)
    b, n, v, size = 2, 300, 3, 32
    means = (torch.randn(b, n, 3, generator=g) * torch.tensor([0.5, 0.5, 0.4]) + torch.tensor([0.0, 0.0, 3.0]))
    quats = F.normalize(torch.randn(b, n, 4, generator=g), dim=-1)
    scales = 0.03 + 0.08 * torch.rand(b, n, 3, generator=g)
    opac = 0.05 + 0.28 * torch.rand(b, n, generator=g)
    sh = 0.3 * torch.randn(b, n, 4, 3, generator=g)
    yaw = torch.tensor([[0.0, 0.05, -0.04], [0.02, -0.03, 0.06]])
    Rs = so3_exp(torch.stack([torch.zeros_like(yaw), yaw, torch.zeros_like(yaw)], -1).double()).float()
    t = 0.1 * torch.randn(b, v, 3, generator=g)
    f = torch.full((b, v), 1.4)
    results = {}
    for backend in ("torch", "gsplat"):
        leaves = {"means": means.to(dev).requires_grad_(True), "opacities": opac.to(dev).requires_grad_(True),
                  "f": f.to(dev).requires_grad_(True)}
        gs = {"means": leaves["means"], "quats": quats.to(dev), "scales": scales.to(dev),
              "opacities": leaves["opacities"], "sh": sh.to(dev)}
        cams = Camera(R=Rs.to(dev), t=t.to(dev), f=leaves["f"])
        img = R.render_views(gs, cams, size, size, near_plane=0.2, background=1.0, backend=backend,
                             memory_checkpoint=False)
        weights = torch.linspace(0.5, 1.5, img.numel(), device=dev).reshape(img.shape)
        grads = torch.autograd.grad((img * weights).sum(), list(leaves.values()))
        results[backend] = (img.detach().cpu(), {k: gr.cpu() for k, gr in zip(leaves, grads)})
    (img_t, grad_t), (img_g, grad_g) = results["torch"], results["gsplat"]
    err = (img_t - img_g).abs().max().item()
    print(f"max |dense - gsplat| = {err:.2e}")
    assert err < 1e-4
    for k in ("means", "opacities", "f"):
        rel = ((grad_t[k] - grad_g[k]).norm() / grad_t[k].norm()).item()
        print(f"gradient {k}: relative difference {rel:.2e}")
        assert rel < 1e-3, k
