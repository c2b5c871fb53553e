"""Differentiable 3D Gaussian splatting: an exact dense PyTorch renderer (CPU, tests, demo) and the gsplat path (CUDA).

Conventions (gsplat 1.x `rasterization`, pinhole, `packed=False`, `antialiased=False`, which the official E-RayZer
code uses):

* Cameras: `viewmats` (C, 4, 4) world-to-camera, OpenCV axes; `Ks` (C, 3, 3) in pixels with the image spanning
  [0, W] x [0, H] (pixel (i, j) is evaluated at its centre (i + 0.5, j + 0.5)). RayDer's `Camera` (c2w, one
  normalised focal, principal point at the exact centre) maps to fx = fy = f min(H-1, W-1) / 2, cx = W / 2, cy = H / 2
  (`camera_to_viewmat_K`).
* Projection (EWA): Sigma = R S S^T R^T from the (w, x, y, z) quaternion and the scales; Sigma_c = W Sigma W^T;
  J = [[fx/z, 0, -fx tx/z^2], [0, fy/z, -fy ty/z^2]] with tx/z, ty/z clamped to the frustum widened by 30% of the
  half-FoV (gsplat's `_persp_proj`); cov2d = J Sigma_c J^T + 0.3 I (gsplat's eps2d); the mean projects unclamped.
  Gaussians with camera depth z <= near_plane (or >= far_plane) are culled.
* Compositing, per pixel in ascending depth: sigma = 1/2 d^T conic d (d = mean2d - pixel),
  alpha = min(0.999, opacity exp(-sigma)); a Gaussian with sigma < 0 or alpha < 1/255 is skipped; compositing stops
  *before* the Gaussian whose T (1 - alpha) would be <= 1e-4 (exclusive, as gsplat); colour = sum alpha_i T_i c_i +
  T_final * background; the returned alpha is 1 - T_final.
* Colours from spherical harmonics as gsplat: c = SH(normalise(mean - camera centre)) + 0.5, clamped at 0.

Difference to gsplat's CUDA rasteriser: gsplat evaluates a Gaussian only inside the 16x16 tiles its 3-sigma box
touches; here every pixel sees every Gaussian (the dense evaluation is exact for the stated formula), so the two differ
only in tails beyond ~3 sigma where alpha < 0.0111 x opacity.

Focal gradient with gsplat: upstream gsplat returns no gradient for `Ks`. `fold_focal` rescales the camera-space x and
y by fx / f0 inside the view matrix and passes K with the constant focal f0; the projected means, J Sigma_c J^T and the
frustum clamp are then identical (x' = s x, J' diag(s, s, 1) = J), and the focal's gradient flows through `viewmats`,
which gsplat differentiates. tests/test_erayzer_render.py proves the identity (values and focal gradients) on CPU.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from rayder_core.geometry import Camera

from .pose_network import rotation_from_quat  # (w, x, y, z) -> R, one definition for the family

ALPHA_MAX = 0.999
ALPHA_MIN = 1.0 / 255.0
T_MIN = 1e-4
EPS2D = 0.3
FRUSTUM_SLACK = 0.3
SIGMA_MAX = 40.0

# Real SH basis constants (gsplat / 3DGS), degrees 0..3.
_C0 = 0.28209479177387814
_C1 = 0.4886025119029199
_C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396)
_C3 = (
    -0.5900435899266435, 2.890611442640554, -0.4570457994644658, 0.3731763325901154,
    -0.4570457994644658, 1.445305721320277, -0.5900435899266435,
)


def sh_basis(degree: int, dirs: Tensor) -> Tensor:
    """Real SH basis (..., (degree+1)^2) at unit directions (..., 3) (normalised here), 3DGS sign conventions."""
    x, y, z = F.normalize(dirs, dim=-1).unbind(-1)
    out = [torch.full_like(x, _C0)]
    if degree >= 1:
        out += [-_C1 * y, _C1 * z, -_C1 * x]
    if degree >= 2:
        xx, yy, zz, xy, yz, xz = x * x, y * y, z * z, x * y, y * z, x * z
        out += [_C2[0] * xy, _C2[1] * yz, _C2[2] * (2 * zz - xx - yy), _C2[3] * xz, _C2[4] * (xx - yy)]
    if degree >= 3:
        out += [
            _C3[0] * y * (3 * xx - yy), _C3[1] * xy * z, _C3[2] * y * (4 * zz - xx - yy),
            _C3[3] * z * (2 * zz - 3 * xx - 3 * yy), _C3[4] * x * (4 * zz - xx - yy),
            _C3[5] * z * (xx - yy), _C3[6] * x * (xx - 3 * yy),
        ]
    return torch.stack(out, -1)


def sh_to_rgb(sh: Tensor, dirs: Tensor) -> Tensor:
    """Colours (..., 3) in [0, inf) from SH coefficients (..., K, 3) viewed along dirs (..., 3): SH + 0.5, >= 0."""
    degree = int(math.isqrt(sh.shape[-2])) - 1
    if (degree + 1) ** 2 != sh.shape[-2]:
        raise ValueError(f"sh_to_rgb: {sh.shape[-2]} coefficients is not (degree+1)^2")
    basis = sh_basis(degree, dirs)
    return torch.clamp_min((basis[..., None] * sh).sum(-2) + 0.5, 0.0)


def camera_to_viewmat_K(cam: Camera, height: int, width: int) -> tuple[Tensor, Tensor]:
    """RayDer cameras (...) -> (viewmats (..., 4, 4) world-to-camera, Ks (..., 3, 3) in pixels), gsplat conventions."""
    R, t = cam.R, cam.t
    Rt = R.transpose(-1, -2)
    top = torch.cat([Rt, -(Rt @ t[..., None])], -1)
    bottom = torch.zeros(*top.shape[:-2], 1, 4, dtype=top.dtype, device=top.device)
    bottom[..., 0, 3] = 1
    viewmat = torch.cat([top, bottom], -2)
    f_px = cam.f * (min(height - 1, width - 1) / 2)
    zero, one = torch.zeros_like(f_px), torch.ones_like(f_px)
    K = torch.stack(
        [f_px, zero, zero + width / 2, zero, f_px, zero + height / 2, zero, zero, one], -1
    ).unflatten(-1, (3, 3))
    return viewmat, K


def fold_focal(viewmats: Tensor, Ks: Tensor, f0: float = 1.0) -> tuple[Tensor, Tensor]:
    """Move the focal from K into the view matrix: viewmat' = diag(fx/f0, fy/f0, 1, 1) viewmat, K' = K with fx = fy
    = f0. Rendering (viewmat', K') equals rendering (viewmat, K) exactly; the focal's gradient then flows through
    viewmat' (gsplat differentiates viewmats but not Ks)."""
    sx, sy = Ks[..., 0, 0] / f0, Ks[..., 1, 1] / f0
    scale = torch.stack([sx, sy, torch.ones_like(sx), torch.ones_like(sx)], -1)
    K2 = Ks.clone()
    K2[..., 0, 0] = f0
    K2[..., 1, 1] = f0
    return viewmats * scale[..., :, None], K2.detach()


def project_gaussians(
    means: Tensor, quats: Tensor, scales: Tensor, viewmat: Tensor, K: Tensor, width: int, height: int,
    near_plane: float, far_plane: float = 1e10,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """EWA projection: means (N, 3), quats (N, 4), scales (N, 3) to cameras viewmat (..., 4, 4), K (..., 3, 3).

    Returns means2d (..., N, 2) [pixels, edge coordinates], conics (..., N, 3) (a, b, c of the inverse 2D covariance
    [[a, b], [b, c]]), depths (..., N) camera z, valid (..., N) bool (inside (near_plane, far_plane))."""
    Rw, tw = viewmat[..., :3, :3], viewmat[..., :3, 3]
    pc = torch.einsum("...ij,nj->...ni", Rw, means) + tw[..., None, :]
    z = pc[..., 2]
    valid = (z > near_plane) & (z < far_plane)
    zs = torch.where(valid, z, torch.ones_like(z))  # safe depth for culled Gaussians (their alpha is zeroed)
    M = rotation_from_quat(quats) * scales[:, None, :]  # R diag(s)
    cov = M @ M.transpose(-1, -2)  # (N, 3, 3)
    cov_c = Rw[..., None, :, :] @ cov @ Rw.transpose(-1, -2)[..., None, :, :]
    fx, fy = K[..., 0, 0, None], K[..., 1, 1, None]
    cx, cy = K[..., 0, 2, None], K[..., 1, 2, None]
    tan_fovx, tan_fovy = 0.5 * width / fx, 0.5 * height / fy
    lim_x_pos, lim_x_neg = (width - cx) / fx + FRUSTUM_SLACK * tan_fovx, cx / fx + FRUSTUM_SLACK * tan_fovx
    lim_y_pos, lim_y_neg = (height - cy) / fy + FRUSTUM_SLACK * tan_fovy, cy / fy + FRUSTUM_SLACK * tan_fovy
    tx = zs * torch.minimum(torch.maximum(pc[..., 0] / zs, -lim_x_neg), lim_x_pos)
    ty = zs * torch.minimum(torch.maximum(pc[..., 1] / zs, -lim_y_neg), lim_y_pos)
    zero = torch.zeros_like(zs)
    J = torch.stack([fx / zs + zero, zero, -fx * tx / zs**2, zero, fy / zs + zero, -fy * ty / zs**2], -1)
    J = J.unflatten(-1, (2, 3))
    cov2d = J @ cov_c @ J.transpose(-1, -2)
    a = cov2d[..., 0, 0] + EPS2D
    b = cov2d[..., 0, 1]
    c = cov2d[..., 1, 1] + EPS2D
    det = a * c - b * b
    conics = torch.stack([c / det, -b / det, a / det], -1)
    means2d = torch.stack([fx * pc[..., 0] / zs + cx, fy * pc[..., 1] / zs + cy], -1)
    return means2d, conics, z, valid


def _quadratic_form(means2d: Tensor, conics: Tensor, pix: Tensor, centre: Tensor) -> Tensor:
    """sigma (..., P, N) = 1/2 d^T conic d with d = mean2d - pixel, as one float64 matmul of the expanded quadratic
    (pixel monomials (P, 6) @ per-Gaussian coefficients (..., 6, N)); coordinates are taken relative to the image
    centre and the matmul runs in float64, so the expansion loses no precision that matters."""
    m = (means2d - centre).double()
    q = (pix - centre).double()
    a, b, c = conics.double().unbind(-1)
    mx, my = m.unbind(-1)
    coeff = torch.stack(
        [0.5 * a, 0.5 * c, b, -(a * mx + b * my), -(c * my + b * mx),
         0.5 * a * mx * mx + 0.5 * c * my * my + b * mx * my],
        -2,
    )  # (..., 6, N)
    px, py = q.unbind(-1)
    mono = torch.stack([px * px, py * py, px * py, px, py, torch.ones_like(px)], -1)  # (P, 6)
    return (mono @ coeff).to(means2d.dtype)


def _composite(means2d: Tensor, conics: Tensor, opac: Tensor, colors: Tensor, pix: Tensor, bg: Tensor,
               centre: Tensor) -> tuple[Tensor, Tensor]:
    """Dense front-to-back compositing of depth-sorted Gaussians (..., N) over pixels pix (P, 2):
    (rgb (..., P, 3), alpha (..., P)).

    The stop rule is a prefix mask: with T_i = prod_{j<=i} (1 - alpha_j), Gaussian i contributes iff T_i > 1e-4, and
    then all earlier ones contribute too, so weights = alpha_i T_{i-1} [T_i > 1e-4] and T_final = 1 - sum(weights)
    (telescoping) - one cumulative product per pixel."""
    sigma = _quadratic_form(means2d, conics, pix, centre)
    # exp(-sigma) of sigma > SIGMA_MAX is < 1e-17, far below ALPHA_MIN: clamping avoids slow denormals.
    alpha = torch.clamp_max(opac[..., None, :] * torch.exp(-torch.clamp_max(sigma, SIGMA_MAX)), ALPHA_MAX)
    alpha = torch.where((sigma >= 0) & (alpha >= ALPHA_MIN), alpha, torch.zeros_like(alpha))
    trans = torch.cumprod(1 - alpha, dim=-1)  # T after each Gaussian
    keep = trans.detach() > T_MIN
    t_before = torch.cat([torch.ones_like(trans[..., :1]), trans[..., :-1]], -1)
    weights = alpha * t_before * keep
    alpha_total = weights.sum(-1)
    rgb = weights @ colors + (1 - alpha_total)[..., None] * bg
    return rgb, alpha_total


def rasterize_dense(
    means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor, colors: Tensor, viewmat: Tensor, K: Tensor,
    width: int, height: int, near_plane: float = 0.2, background: Tensor | float = 1.0, pixel_chunk: int | None = None,
) -> tuple[Tensor, Tensor]:
    """Render densely: means (N, 3), quats (N, 4), scales (N, 3), opacities (N,), colors (N, 3) or per camera
    (..., N, 3) (already view-dependent), cameras viewmat (..., 4, 4), K (..., 3, 3) -> (image (..., H, W, 3),
    alpha (..., H, W)). Exact for the conventions in the module docstring.

    pixel_chunk: render this many pixels at a time (memory: cameras x pixels x N floats per intermediate)."""
    means2d, conics, depths, valid = project_gaussians(means, quats, scales, viewmat, K, width, height, near_plane)
    lead = depths.shape[:-1]
    order = torch.argsort(torch.where(valid, depths, torch.full_like(depths, float("inf"))), dim=-1)
    take = lambda t: torch.take_along_dim(t, order[..., None], dim=-2)  # noqa: E731
    means2d, conics = take(means2d), take(conics)
    colors = take(colors.expand(*lead, *colors.shape[-2:]))
    opac = torch.take_along_dim(torch.where(valid, opacities, torch.zeros_like(opacities)), order, dim=-1)
    ys, xs = torch.meshgrid(
        torch.arange(height, dtype=means.dtype, device=means.device) + 0.5,
        torch.arange(width, dtype=means.dtype, device=means.device) + 0.5,
        indexing="ij",
    )
    pix = torch.stack([xs, ys], -1).reshape(-1, 2)
    bg = torch.as_tensor(background, dtype=means.dtype, device=means.device).expand(3)
    centre = pix.new_tensor([width / 2, height / 2])
    chunk = pix.shape[0] if pixel_chunk is None else pixel_chunk
    rgbs, alphas = [], []
    for start in range(0, pix.shape[0], chunk):
        rgb, a = _composite(means2d, conics, opac, colors, pix[start : start + chunk], bg, centre)
        rgbs.append(rgb)
        alphas.append(a)
    return torch.cat(rgbs, -2).reshape(*lead, height, width, 3), torch.cat(alphas, -1).reshape(*lead, height, width)


def render_views(
    gaussians: dict[str, Tensor], cams: Camera, height: int, width: int, *, near_plane: float = 0.2,
    background: float = 1.0, backend: str = "auto", memory_checkpoint: bool = True,
) -> Tensor:
    """Render per-sample Gaussians to cameras: gaussians = {means (B, N, 3), quats (B, N, 4), scales (B, N, 3),
    opacities (B, N), sh (B, N, K, 3)}; cams (B, V). Returns RGB (B, V, H, W, 3) in [0, 1]-ish units (not clamped;
    background `background`). backend: 'auto' (gsplat on CUDA when importable), 'torch' or 'gsplat'.
    memory_checkpoint: recompute each sample's compositing in the backward pass instead of storing it."""
    b, v = cams.shape
    use_gsplat = choose_renderer(backend, gaussians["means"].device) == "gsplat"
    viewmats, Ks = camera_to_viewmat_K(cams.to(dtype=torch.float32), height, width)
    if use_gsplat:
        return _render_gsplat(gaussians, viewmats, Ks, height, width, near_plane, background)

    def one(means, quats, scales, opac, sh, vm, K):
        campos = -(vm[:, :3, :3].transpose(-1, -2) @ vm[:, :3, 3:])[..., 0]  # (V, 3) camera centres
        colors = sh_to_rgb(sh[None], means[None] - campos[:, None])  # (V, N, 3)
        return rasterize_dense(means, quats, scales, opac, colors, vm, K, width, height, near_plane, background)[0]

    out = []
    for i in range(b):
        args = [gaussians[k][i].float() for k in ("means", "quats", "scales", "opacities", "sh")]
        args += [viewmats[i], Ks[i]]
        if memory_checkpoint and torch.is_grad_enabled():
            out.append(checkpoint(one, *args, use_reentrant=False))
        else:
            out.append(one(*args))
    return torch.stack(out)


def choose_renderer(requested: str, device: torch.device) -> str:
    """The renderer of `requested` ('auto' | 'torch' | 'gsplat') for tensors on `device`: 'auto' is gsplat on CUDA
    when gsplat imports, the dense torch rasteriser otherwise."""
    if requested != "auto":
        return requested
    return "gsplat" if device.type == "cuda" and _gsplat_available() else "torch"


def _gsplat_available() -> bool:
    try:
        import gsplat  # noqa: F401  (optional dependency: CUDA rasteriser)
    except Exception:  # noqa: BLE001  (gsplat raises various errors without a CUDA toolchain)
        return False
    return True


def _render_gsplat(gaussians: dict[str, Tensor], viewmats: Tensor, Ks: Tensor, height: int, width: int,
                   near_plane: float, background: float) -> Tensor:  # pragma: no cover - needs CUDA + gsplat
    """gsplat path (per batch element, fp32): the focal is folded into the view matrices (see `fold_focal`)."""
    from gsplat import rasterization  # optional dependency: CUDA rasteriser

    sh = gaussians["sh"]
    degree = int(math.isqrt(sh.shape[-2])) - 1
    out = []
    for i in range(viewmats.shape[0]):
        vm, K = fold_focal(viewmats[i], Ks[i])
        bg = torch.full((vm.shape[0], 3), float(background), device=vm.device)
        img, _, _ = rasterization(
            gaussians["means"][i].float(), gaussians["quats"][i].float(), gaussians["scales"][i].float(),
            gaussians["opacities"][i].float(), sh[i].float(), vm, K, width, height, near_plane=near_plane,
            sh_degree=degree, backgrounds=bg, packed=False,
        )
        out.append(img)
    return torch.stack(out)
