"""Camera geometry for RayDer: Lie-group maps, cameras, Plücker ray maps and the RE10K camera format.

Conventions (RayDer reference code, see docs/model.md, "Camera geometry"):

* Poses are **camera-to-world**: ``R`` rotates camera-space directions into world space and ``t`` is
  the camera centre in world coordinates. Camera axes follow OpenCV: x right, y down, z forward.
* Intrinsics are **one normalised focal** ``f`` per view (dimensionless), principal point at the exact
  image centre. Pixels ``(u, v)`` are integer indices (``u`` = column, ``v`` = row). With
  ``s = 1 / min(h-1, w-1)`` the camera-space ray of pixel ``(u, v)`` is
  ``[(2u-(w-1))*s/f, (2v-(h-1))*s/f, 1]``, so the focal in pixels is ``f_px = f * min(h-1, w-1) / 2``
  and, for a square image, the field of view measured between the first and last pixel centres
  (horizontally or vertically) is ``2*atan(1/f)`` (f = 1 gives 90 degrees).
* A Plücker ray map is ``cat([d, o x d])`` (unit direction first, then moment) at full pixel
  resolution, computed in float64 and cast to the requested dtype at the end.

All functions are torch-native, batched over any leading dimensions and differentiable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

__all__ = [
    "FOCAL_EPS",
    "SMALL_ANGLE",
    "Camera",
    "hat",
    "vee",
    "so3_exp",
    "so3_log",
    "so3_left_jacobian",
    "so3_left_jacobian_inv",
    "se3_exp",
    "se3_log",
    "camera_from_params",
    "camera_to_params",
    "ray_origins_directions",
    "plucker_rays",
    "camera_to_re10k",
    "camera_from_re10k",
    "rotation_angle_deg",
    "relative_to",
]

FOCAL_EPS = 1e-6
"""Added to ``exp(intr)`` so that the focal can never reach zero (RayDer ``FOCAL_LENGTH_EPS``)."""

SMALL_ANGLE = 0.1
"""Rotation angle (radians) below which the SO(3) coefficient functions use their Taylor series.

The closed forms of ``(1-cos t)/t^2``, ``(t-sin t)/t^3`` and the inverse-Jacobian coefficient lose
about ``eps/t^2`` relative precision to cancellation, and their autograd derivatives more; at 0.1 rad
that is ~1e-13 in float64, while the Taylor series (kept to the t^8 term) is exact to ~1e-18 there.
"""

# Above this angle (radians) so3_log reads the rotation axis from the symmetric part of R,
# because sin(theta) -> 0 makes the antisymmetric part useless near pi.
_NEAR_PI = torch.pi - 0.1


# --------------------------------------------------------------------------------------------------
# Camera container
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Camera:
    """A batch of pinhole cameras: camera-to-world pose, OpenCV axes, one normalised focal per view.

    Attributes:
        R: (..., 3, 3) rotation, camera-space directions -> world-space directions.
        t: (..., 3) camera centre in world coordinates (scene units).
        f: (...) normalised focal; focal in pixels is ``f * min(h-1, w-1) / 2``.

    All three fields share the same leading ("batch") dimensions, which is ``Camera.shape``.
    """

    R: torch.Tensor
    t: torch.Tensor
    f: torch.Tensor

    def __post_init__(self) -> None:
        for name in ("R", "t", "f"):
            if not isinstance(getattr(self, name), torch.Tensor):
                raise TypeError(f"Camera.{name} must be a torch.Tensor, got {type(getattr(self, name)).__name__}")
        if self.R.ndim < 2 or self.R.shape[-2:] != (3, 3):
            raise ValueError(f"Camera.R must have shape (..., 3, 3), got {tuple(self.R.shape)}")
        if self.t.ndim < 1 or self.t.shape[-1] != 3:
            raise ValueError(f"Camera.t must have shape (..., 3), got {tuple(self.t.shape)}")
        if not (self.R.shape[:-2] == self.t.shape[:-1] == self.f.shape):
            raise ValueError(
                "Camera fields must share leading dims: "
                f"R {tuple(self.R.shape)}, t {tuple(self.t.shape)}, f {tuple(self.f.shape)}"
            )

    @property
    def shape(self) -> torch.Size:
        """Leading (batch) dimensions shared by ``R``, ``t`` and ``f``."""
        return self.f.shape

    @property
    def device(self) -> torch.device:
        return self.f.device

    @property
    def dtype(self) -> torch.dtype:
        return self.R.dtype

    def __getitem__(self, index) -> "Camera":
        """Index all fields over the leading dims, e.g. ``cam[:, 0]``, ``cam[..., -1]``, ``cam[mask]``."""
        index = index if isinstance(index, tuple) else (index,)
        return Camera(
            R=self.R[(*index, slice(None), slice(None))],
            t=self.t[(*index, slice(None))],
            f=self.f[index],
        )

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "Camera":
        """Move and/or cast all fields."""
        return Camera(
            R=self.R.to(device=device, dtype=dtype),
            t=self.t.to(device=device, dtype=dtype),
            f=self.f.to(device=device, dtype=dtype),
        )

    @classmethod
    def cat(cls, cams: Sequence["Camera"], dim: int = 0) -> "Camera":
        """Concatenate cameras along leading dim ``dim`` (negative values count from the last leading dim)."""
        cams = list(cams)
        if not cams:
            raise ValueError("Camera.cat needs at least one camera")
        nlead = len(cams[0].shape)
        if not -nlead <= dim < nlead:
            raise ValueError(f"Camera.cat: dim={dim} out of range for cameras with {nlead} leading dims")
        d = dim % nlead
        return cls(
            R=torch.cat([c.R for c in cams], dim=d),
            t=torch.cat([c.t for c in cams], dim=d),
            f=torch.cat([c.f for c in cams], dim=d),
        )

    def matrix(self) -> torch.Tensor:
        """(..., 4, 4) homogeneous camera-to-world matrix ``[[R, t], [0, 1]]``."""
        top = torch.cat([self.R, self.t[..., :, None]], dim=-1)
        bottom = torch.zeros(*self.shape, 1, 4, dtype=self.R.dtype, device=self.R.device)
        bottom[..., 0, 3] = 1
        return torch.cat([top, bottom], dim=-2)


# --------------------------------------------------------------------------------------------------
# SO(3) / SE(3)
# --------------------------------------------------------------------------------------------------


def _check_last(x: torch.Tensor, size: int, name: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim < 1 or x.shape[-1] != size:
        raise ValueError(f"{name} must have shape (..., {size}), got {tuple(x.shape)}")


def _check_rotation_shape(R: torch.Tensor, name: str) -> None:
    if not isinstance(R, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(R).__name__}")
    if R.ndim < 2 or R.shape[-2:] != (3, 3):
        raise ValueError(f"{name} must have shape (..., 3, 3), got {tuple(R.shape)}")


def hat(v: torch.Tensor) -> torch.Tensor:
    """Skew-symmetric matrix of ``v`` (..., 3) -> (..., 3, 3), so that ``hat(a) @ b == cross(a, b)``."""
    _check_last(v, 3, "hat: v")
    x, y, z = v.unbind(-1)
    o = torch.zeros_like(x)
    return torch.stack([o, -z, y, z, o, -x, -y, x, o], dim=-1).unflatten(-1, (3, 3))


def vee(M: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`hat` on the antisymmetric part of ``M`` (..., 3, 3) -> (..., 3)."""
    _check_rotation_shape(M, "vee: M")
    A = 0.5 * (M - M.transpose(-1, -2))
    return torch.stack([A[..., 2, 1], A[..., 0, 2], A[..., 1, 0]], dim=-1)


def _horner(x: torch.Tensor, coeffs: Sequence[float]) -> torch.Tensor:
    """sum_k coeffs[k] * x**k."""
    out = torch.full_like(x, coeffs[-1])
    for c in reversed(coeffs[:-1]):
        out = out * x + c
    return out


# Taylor coefficients in theta^2 (kept to the theta^8 term).
_TAYLOR_SIN_OVER_T = (1.0, -1 / 6, 1 / 120, -1 / 5040, 1 / 362880)  # sin t / t
_TAYLOR_ONE_MINUS_COS = (1 / 2, -1 / 24, 1 / 720, -1 / 40320, 1 / 3628800)  # (1 - cos t) / t^2
_TAYLOR_T_MINUS_SIN = (1 / 6, -1 / 120, 1 / 5040, -1 / 362880, 1 / 39916800)  # (t - sin t) / t^3
_TAYLOR_JINV = (1 / 12, 1 / 720, 1 / 30240, 1 / 1209600, 1 / 47900160)  # 1/t^2 - (1+cos t)/(2 t sin t)
_TAYLOR_T_OVER_SIN = (1.0, 1 / 6, 7 / 360, 31 / 15120, 127 / 604800)  # t / sin t


def _angle_terms(theta2: torch.Tensor):
    """(small-angle mask, safe theta) for the closed forms; theta is 1 where the Taylor branch is used."""
    small = theta2 < SMALL_ANGLE**2
    theta = torch.sqrt(torch.where(small, torch.ones_like(theta2), theta2))
    return small, theta


def _coeff_a_b(theta2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A = sin t / t and B = (1 - cos t) / t^2, with Taylor series below SMALL_ANGLE."""
    small, theta = _angle_terms(theta2)
    a = torch.where(small, _horner(theta2, _TAYLOR_SIN_OVER_T), torch.sin(theta) / theta)
    half_sin = torch.sin(0.5 * theta)
    b = torch.where(small, _horner(theta2, _TAYLOR_ONE_MINUS_COS), 2 * half_sin * half_sin / (theta * theta))
    return a, b


def so3_exp(omega: torch.Tensor) -> torch.Tensor:
    """Rotation matrix of the axis-angle vector ``omega`` (..., 3) [radians] -> (..., 3, 3).

    Rodrigues' formula ``R = I + A K + B K^2`` (K = hat(omega)); A and B switch to their Taylor series
    below :data:`SMALL_ANGLE`, so values and gradients are finite and accurate at omega = 0.
    """
    _check_last(omega, 3, "so3_exp: omega")
    theta2 = (omega * omega).sum(-1)
    a, b = _coeff_a_b(theta2)
    K = hat(omega)
    eye = torch.eye(3, dtype=omega.dtype, device=omega.device)
    return eye + a[..., None, None] * K + b[..., None, None] * (K @ K)


def so3_log(R: torch.Tensor) -> torch.Tensor:
    """Axis-angle vector (..., 3) [radians, angle in [0, pi]] of rotation matrices R (..., 3, 3).

    The angle is ``atan2(|vee(R)|, (tr R - 1)/2)``, accurate over the whole range. Below
    :data:`SMALL_ANGLE` the factor ``theta / sin(theta)`` uses its Taylor series; within 0.1 rad of pi
    the axis is read from the symmetric part ``(R + R^T)/2 = cos(t) I + (1 - cos t) n n^T`` and its sign
    from the antisymmetric part. Inputs should be orthonormal up to rounding.
    """
    _check_rotation_shape(R, "so3_log: R")
    a = vee(R)  # sin(theta) * axis
    cos = 0.5 * (R.diagonal(dim1=-2, dim2=-1).sum(-1) - 1)
    sin2 = (a * a).sum(-1)
    sin = torch.sqrt(torch.where(sin2 > 0, sin2, torch.ones_like(sin2))) * (sin2 > 0)
    theta = torch.atan2(sin, cos)
    theta2 = theta * theta

    # Generic and small-angle branch: omega = theta / sin(theta) * a.
    small = theta2 < SMALL_ANGLE**2
    near_pi = theta > _NEAR_PI
    safe_sin = torch.where(small | near_pi, torch.ones_like(sin), sin)
    factor = torch.where(small, _horner(theta2, _TAYLOR_T_OVER_SIN), theta / safe_sin)
    omega_generic = factor[..., None] * a

    # Near-pi branch: n n^T = ((R + R^T)/2 - cos I) / (1 - cos); take the best-conditioned column.
    one_minus_cos = torch.where(near_pi, 1 - cos, torch.ones_like(cos))
    eye = torch.eye(3, dtype=R.dtype, device=R.device)
    nnT = (0.5 * (R + R.transpose(-1, -2)) - cos[..., None, None] * eye) / one_minus_cos[..., None, None]
    diag = nnT.diagonal(dim1=-2, dim2=-1)
    k = diag.argmax(-1)
    col = torch.gather(nnT, -1, k[..., None, None].expand(*k.shape, 3, 1))[..., 0]
    col_norm = torch.linalg.vector_norm(col, dim=-1, keepdim=True)
    axis = col / torch.where(col_norm > 0, col_norm, torch.ones_like(col_norm))
    sign = torch.where((axis * a).sum(-1, keepdim=True) < 0, -1.0, 1.0).to(R.dtype)
    omega_pi = sign * axis * theta[..., None]

    return torch.where(near_pi[..., None], omega_pi, omega_generic)


def _coeff_c(theta2: torch.Tensor) -> torch.Tensor:
    """C = (t - sin t) / t^3 with a Taylor series below SMALL_ANGLE."""
    small, theta = _angle_terms(theta2)
    return torch.where(small, _horner(theta2, _TAYLOR_T_MINUS_SIN), (theta - torch.sin(theta)) / theta**3)


def so3_left_jacobian(omega: torch.Tensor) -> torch.Tensor:
    """Left Jacobian of SO(3), ``J = I + B K + C K^2`` (K = hat(omega)), (..., 3) -> (..., 3, 3)."""
    _check_last(omega, 3, "so3_left_jacobian: omega")
    theta2 = (omega * omega).sum(-1)
    _, b = _coeff_a_b(theta2)
    c = _coeff_c(theta2)
    K = hat(omega)
    eye = torch.eye(3, dtype=omega.dtype, device=omega.device)
    return eye + b[..., None, None] * K + c[..., None, None] * (K @ K)


def so3_left_jacobian_inv(omega: torch.Tensor) -> torch.Tensor:
    """Inverse left Jacobian, ``J^-1 = I - K/2 + D K^2`` with ``D = 1/t^2 - (1+cos t)/(2 t sin t)``.

    Valid for angles below 2*pi (singular there); :func:`so3_log` returns angles <= pi.
    """
    _check_last(omega, 3, "so3_left_jacobian_inv: omega")
    theta2 = (omega * omega).sum(-1)
    small, theta = _angle_terms(theta2)
    half = 0.5 * theta
    # (1 + cos t) / (2 t sin t) = cot(t/2) / (2 t)
    d_closed = 1 / (theta * theta) - torch.cos(half) / (2 * theta * torch.sin(half))
    d = torch.where(small, _horner(theta2, _TAYLOR_JINV), d_closed)
    K = hat(omega)
    eye = torch.eye(3, dtype=omega.dtype, device=omega.device)
    return eye - 0.5 * K + d[..., None, None] * (K @ K)


def se3_exp(xi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """SE(3) exponential of ``xi = [omega(3), v(3)]`` (..., 6) -> (R (..., 3, 3), t (..., 3)), float64.

    ``R = so3_exp(omega)``, ``t = J_left(omega) v`` (the full exponential, as in RayDer's
    ``Camera.from_parameters``). Computed in float64; the outputs are float64.
    """
    _check_last(xi, 6, "se3_exp: xi")
    xi = xi.to(torch.float64)
    omega, v = xi[..., :3], xi[..., 3:]
    R = so3_exp(omega)
    t = (so3_left_jacobian(omega) @ v[..., None])[..., 0]
    return R, t


def se3_log(R: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`se3_exp`: (R (..., 3, 3), t (..., 3)) -> xi (..., 6) float64, rotation angle <= pi."""
    _check_rotation_shape(R, "se3_log: R")
    _check_last(t, 3, "se3_log: t")
    R = R.to(torch.float64)
    t = t.to(torch.float64)
    omega = so3_log(R)
    v = (so3_left_jacobian_inv(omega) @ t[..., None])[..., 0]
    return torch.cat([omega, v], dim=-1)


# --------------------------------------------------------------------------------------------------
# Network parameters <-> cameras
# --------------------------------------------------------------------------------------------------


def camera_from_params(ext: torch.Tensor, intr: torch.Tensor) -> Camera:
    """Camera from the network's head outputs (float64 camera).

    Args:
        ext: (..., 6) se(3) twist ``[omega, v]``; pose = ``se3_exp(ext)`` (camera-to-world).
        intr: (..., 1) log focal; ``f = exp(intr[..., 0]) + FOCAL_EPS`` (so intr = 0 gives f ~ 1).
    """
    _check_last(ext, 6, "camera_from_params: ext")
    _check_last(intr, 1, "camera_from_params: intr")
    if ext.shape[:-1] != intr.shape[:-1]:
        raise ValueError(
            f"camera_from_params: ext {tuple(ext.shape)} and intr {tuple(intr.shape)} must share leading dims"
        )
    R, t = se3_exp(ext)
    f = torch.exp(intr[..., 0].to(torch.float64)) + FOCAL_EPS
    return Camera(R=R, t=t, f=f)


def camera_to_params(cam: Camera) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse of :func:`camera_from_params`: returns float64 ``(ext (..., 6), intr (..., 1))``."""
    f = cam.f.to(torch.float64)
    if bool((f <= FOCAL_EPS).any()):
        raise ValueError(f"camera_to_params: focal must exceed FOCAL_EPS={FOCAL_EPS}, got min f={f.min().item()}")
    ext = se3_log(cam.R, cam.t)
    intr = torch.log(f - FOCAL_EPS)[..., None]
    return ext, intr


# --------------------------------------------------------------------------------------------------
# Rays
# --------------------------------------------------------------------------------------------------


def _check_image_size(h: int, w: int, where: str) -> None:
    if int(h) != h or int(w) != w or h < 2 or w < 2:
        raise ValueError(
            f"{where}: image size must be integers >= 2 (the focal is defined by min(h-1, w-1)), got h={h}, w={w}"
        )


def _rays_float64(cam: Camera, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """World-frame (origins, unit directions), each (..., h, w, 3), float64."""
    _check_image_size(h, w, "rays")
    dev = cam.R.device
    R = cam.R.to(torch.float64)
    t = cam.t.to(torch.float64)
    f = cam.f.to(torch.float64)
    s = 1.0 / min(h - 1, w - 1)
    x = (2 * torch.arange(w, dtype=torch.float64, device=dev) - (w - 1)) * s  # (w,) in [-1, 1] on the short side
    y = (2 * torch.arange(h, dtype=torch.float64, device=dev) - (h - 1)) * s  # (h,)
    inv_f = (1.0 / f)[..., None, None]  # (..., 1, 1)
    xs = x[None, :] * inv_f  # (..., 1, w)
    ys = y[:, None] * inv_f  # (..., h, 1)
    # d_world = R @ [x, y, 1] = x R[:, 0] + y R[:, 1] + R[:, 2]; normalising once after rotation equals
    # normalize(R normalize(d_c)) because normalisation only rescales.
    col = R[..., None, None, :, :]  # (..., 1, 1, 3, 3)
    d = xs[..., None] * col[..., 0] + ys[..., None] * col[..., 1] + col[..., 2]
    d = d / torch.linalg.vector_norm(d, dim=-1, keepdim=True)
    o = t[..., None, None, :].expand_as(d)
    return o, d


def ray_origins_directions(cam: Camera, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel world-frame ray origins and unit directions, each (..., h, w, 3).

    Pixel ``[v, u]`` (row, column) of the output is the ray through pixel centre ``(u, v)``; origins are
    the camera centre ``t``. Computed in float64 and returned in the camera's dtype.
    """
    o, d = _rays_float64(cam, h, w)
    return o.to(cam.dtype), d.to(cam.dtype)


def plucker_rays(cam: Camera, h: int, w: int, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Plücker ray map (..., h, w, 6) = ``cat([d, o x d])``, computed in float64.

    Args:
        cam: cameras with leading dims ``...``.
        h, w: image size in pixels.
        dtype: output dtype (e.g. the activation dtype); default: the camera's dtype.
    """
    o, d = _rays_float64(cam, h, w)
    rays = torch.cat([d, torch.linalg.cross(o, d, dim=-1)], dim=-1)
    return rays.to(cam.dtype if dtype is None else dtype)


# --------------------------------------------------------------------------------------------------
# RE10K / pixelSplat camera rows
# --------------------------------------------------------------------------------------------------


def camera_to_re10k(cam: Camera, h: int, w: int) -> torch.Tensor:
    """RE10K / pixelSplat camera row (..., 18) ``[fx, fy, cx, cy, 0, 0, w2c 3x4 row-major]`` for an h x w image.

    Derivation of the intrinsics. RayDer measures pixels by integer index with the principal point at
    ``((w-1)/2, (h-1)/2)`` and focal ``f_px = f * min(h-1, w-1) / 2`` pixels. RE10K measures pixel *edges*
    (the image spans [0, w], pixel index u has its centre at u + 0.5): shifting the origin by half a
    pixel leaves the focal in pixels unchanged and moves the principal point to ``(w/2, h/2)``. RE10K
    then normalises x-quantities by w and y-quantities by h, so::

        fx = f_px / w,  fy = f_px / h,  cx = cy = 0.5.

    (Note the normalisers are w and h, not w-1 and h-1.) Extrinsics are world-to-camera:
    ``[R^T | -R^T t]``. The row has the camera's dtype.
    """
    _check_image_size(h, w, "camera_to_re10k")
    f_px = cam.f * (min(h - 1, w - 1) / 2)
    half = torch.full_like(cam.f, 0.5)
    zero = torch.zeros_like(cam.f)
    R_w2c = cam.R.transpose(-1, -2)
    t_w2c = -(R_w2c @ cam.t[..., None])
    w2c = torch.cat([R_w2c, t_w2c], dim=-1).flatten(-2)
    intr = torch.stack([f_px / w, f_px / h, half, half, zero, zero], dim=-1)
    return torch.cat([intr, w2c.to(intr.dtype)], dim=-1)


def _describe_bad(mask: torch.Tensor, **values: torch.Tensor) -> str:
    """Human-readable list of (up to 5) offending batch indices with their values."""
    idx = mask.nonzero()
    parts = []
    for row in idx[:5]:
        key = tuple(int(i) for i in row)
        vals = ", ".join(f"{name}={float(v[key]):.6g}" for name, v in values.items())
        label = "row" if not key else f"row {key[0] if len(key) == 1 else key}"
        parts.append(f"{label}: {vals}")
    more = f" (and {len(idx) - 5} more)" if len(idx) > 5 else ""
    return "; ".join(parts) + more


def camera_from_re10k(row18: torch.Tensor, h: int, w: int, *, tol: float = 0.01) -> Camera:
    """Camera (float64) from RE10K / pixelSplat rows (..., 18) of an h x w image.

    Inverse of :func:`camera_to_re10k` (see there for the derivation). The single focal comes from the
    mean of ``fx_px = fx * w`` and ``fy_px = fy * h``: ``f = (fx_px + fy_px) / 2 / (min(h-1, w-1) / 2)``.
    The rotation is projected onto SO(3) (SVD) to remove rounding in the stored rows.

    Raises:
        ValueError: naming the offending rows and values if ``|fx_px - fy_px|`` exceeds ``tol`` times
            their mean, if ``|cx - 0.5|`` or ``|cy - 0.5|`` exceeds ``tol`` (normalised units), if a focal
            is not positive, or if the w2c rotation is not a rotation (orthonormality error > 1e-3 or
            det < 0). Crop RE10K frames to the centre square and adjust the intrinsics first.
    """
    _check_image_size(h, w, "camera_from_re10k")
    row = torch.as_tensor(row18).to(torch.float64)
    _check_last(row, 18, "camera_from_re10k: row18")
    fx_px, fy_px = row[..., 0] * w, row[..., 1] * h
    cx, cy = row[..., 2], row[..., 3]

    bad = ~((fx_px > 0) & (fy_px > 0))
    if bool(bad.any()):
        raise ValueError(
            f"camera_from_re10k: non-positive focal for a {h}x{w} image: "
            + _describe_bad(bad, fx_px=fx_px, fy_px=fy_px)
        )
    mean_px = 0.5 * (fx_px + fy_px)
    rel = (fx_px - fy_px).abs() / mean_px
    bad = rel > tol
    if bool(bad.any()):
        raise ValueError(
            f"camera_from_re10k: fx and fy (in pixels of a {h}x{w} image) differ by more than tol={tol} relative; "
            "RayDer has one focal per view (crop to square / rescale intrinsics first): "
            + _describe_bad(bad, fx_px=fx_px, fy_px=fy_px, rel_diff=rel)
        )
    off = torch.maximum((cx - 0.5).abs(), (cy - 0.5).abs())
    bad = off > tol
    if bool(bad.any()):
        raise ValueError(
            f"camera_from_re10k: principal point off the image centre (0.5, 0.5) by more than tol={tol}: "
            + _describe_bad(bad, cx=cx, cy=cy)
        )

    w2c = row[..., 6:].unflatten(-1, (3, 4))
    R_w2c, t_w2c = w2c[..., :3], w2c[..., 3]
    eye = torch.eye(3, dtype=torch.float64, device=row.device)
    ortho_err = (R_w2c @ R_w2c.transpose(-1, -2) - eye).abs().amax(dim=(-1, -2))
    det = torch.linalg.det(R_w2c)
    bad = (ortho_err > 1e-3) | (det < 0)
    if bool(bad.any()):
        raise ValueError(
            "camera_from_re10k: w2c[:, :3] is not a rotation matrix: "
            + _describe_bad(bad, ortho_err=ortho_err, det=det)
        )
    U, _, Vh = torch.linalg.svd(R_w2c)
    R_w2c = U @ Vh  # nearest rotation (det > 0 was checked above)

    R = R_w2c.transpose(-1, -2)
    t = -(R @ t_w2c[..., None])[..., 0]
    f = mean_px / (min(h - 1, w - 1) / 2)
    return Camera(R=R, t=t, f=f)


# --------------------------------------------------------------------------------------------------
# Evaluation helpers
# --------------------------------------------------------------------------------------------------


def rotation_angle_deg(Ra: torch.Tensor, Rb: torch.Tensor) -> torch.Tensor:
    """Geodesic angle between rotations, in degrees in [0, 180]; broadcasts over leading dims.

    Uses ``atan2(|vee(Ra^T Rb)|, (tr(Ra^T Rb) - 1) / 2)``, which stays accurate near 0 and 180 degrees
    (unlike ``arccos``).
    """
    _check_rotation_shape(Ra, "rotation_angle_deg: Ra")
    _check_rotation_shape(Rb, "rotation_angle_deg: Rb")
    M = Ra.transpose(-1, -2) @ Rb
    sin = torch.linalg.vector_norm(vee(M), dim=-1)
    cos = 0.5 * (M.diagonal(dim1=-2, dim2=-1).sum(-1) - 1)
    return torch.rad2deg(torch.atan2(sin, cos))


def relative_to(cams: Camera, ref_index: int, dim: int = -1) -> Camera:
    """Express every pose in the camera frame of view ``ref_index`` along leading dim ``dim``.

    Returns ``c2w_ref^-1 @ c2w_i`` for every view i (``R = R_ref^T R_i``, ``t = R_ref^T (t_i - t_ref)``),
    so the reference view becomes the identity pose; focals are unchanged.
    """
    nlead = len(cams.shape)
    if not -nlead <= dim < nlead:
        raise ValueError(f"relative_to: dim={dim} out of range for cameras with {nlead} leading dims")
    d = dim % nlead
    n = cams.shape[d]
    if not -n <= ref_index < n:
        raise IndexError(f"relative_to: ref_index={ref_index} out of range for {n} views along dim {dim}")
    i = ref_index % n
    R_ref = cams.R.narrow(d, i, 1)
    t_ref = cams.t.narrow(d, i, 1)
    R_ref_T = R_ref.transpose(-1, -2)
    R = R_ref_T @ cams.R
    t = (R_ref_T @ (cams.t - t_ref)[..., None])[..., 0]
    return Camera(R=R, t=t, f=cams.f)
