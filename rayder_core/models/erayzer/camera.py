"""E-RayZer's camera transformer: alternating frame/global attention and a pairwise pose head.

Every view contributes one camera token and `registers` register tokens (the same learned embeddings for every view:
there is no view-index embedding) in front of its patch tokens. After the transformer:

* the **middle view** (index V // 2 of the given order) is canonical: its pose is the identity (exactly);
* each other view i gets a pose from MLP(concat(token_c, token_i)) (2C -> C -> 9), a residual over the identity:
  rotation from 6-D (Gram-Schmidt of two columns, Zhou et al.) or a quaternion, translation = the last 3 outputs.
  The pose is camera-to-world in the canonical camera's frame (RayDer's convention, OpenCV axes);
* one focal, from the canonical token, shared by all views: fx / W = focal_bias * exp(head(token_c)) (zero-init
  head, so fx / W = 1.25 at the start as the official bias), principal point at the image centre. In RayDer's
  normalised units (`rayder_core.geometry`) this is f = fx_px / (min(H-1, W-1) / 2) with fx_px = (fx / W) * W.

Because the transformer is permutation-equivariant over views and the head is applied per pair, permuting the
non-canonical views permutes their poses (tests/test_erayzer_model.py checks this).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rayder_core.geometry import Camera

from .config import ERayZerConfig
from .layers import AlternatingLayer, patchify, rope_table


@dataclass
class CameraPrediction:
    """camera: Camera (B, V) float32 (c2w in the canonical view's frame, one shared focal). camera_tokens: (B, V, C)
    final camera tokens (the probe's input). canonical: index of the canonical view. state: always None (E-RayZer
    has no dynamic state; the field keeps RayDer's CameraEstimate interface)."""

    camera: Camera
    camera_tokens: Tensor
    canonical: int
    state: Tensor | None = None


def rotation_from_6d(x: Tensor) -> Tensor:
    """(..., 6) -> (..., 3, 3): Gram-Schmidt of the two 3-vectors; they become the first two columns."""
    a = F.normalize(x[..., :3], dim=-1)
    b = x[..., 3:6]
    b = F.normalize(b - (a * b).sum(-1, keepdim=True) * a, dim=-1)
    c = torch.linalg.cross(a, b, dim=-1)
    return torch.stack([a, b, c], dim=-1)


def rotation_from_quat(q: Tensor) -> Tensor:
    """(..., 4) quaternion (w, x, y, z), normalised here -> (..., 3, 3) rotation."""
    w, x, y, z = F.normalize(q, dim=-1).unbind(-1)
    return torch.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
        ],
        dim=-1,
    ).unflatten(-1, (3, 3))


_IDENTITY_6D = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
_IDENTITY_QUAT = (1.0, 0.0, 0.0, 0.0)


class CameraTransformer(nn.Module):
    def __init__(self, cfg: ERayZerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        c = cfg.width
        self.patch_embed = nn.Linear(3 * cfg.patch**2, c)
        self.camera_token = nn.Parameter(torch.randn(1, c) * 0.02)
        self.register_tokens = nn.Parameter(torch.randn(cfg.registers, c) * 0.02)
        self.layers = nn.ModuleList(
            [AlternatingLayer(c, cfg.heads, cfg.mlp_hidden, cfg.order) for _ in range(cfg.camera_layers)]
        )
        self.norm = nn.LayerNorm(c)
        self.pose_mlp = nn.Sequential(nn.Linear(2 * c, c), nn.GELU(), nn.Linear(c, 9))
        with torch.no_grad():  # start near the identity pose
            self.pose_mlp[2].weight.mul_(0.1)
            self.pose_mlp[2].bias.zero_()
        self.focal_head = nn.Linear(c, 1)
        nn.init.zeros_(self.focal_head.weight)
        nn.init.zeros_(self.focal_head.bias)

    @property
    def n_special(self) -> int:
        return 1 + self.cfg.registers

    def tokens(self, frames: Tensor) -> Tensor:
        """Final camera tokens (B, V, C) of frames (B, V, 3, H, W) in [-1, 1]."""
        b, v, _, h, w = frames.shape
        p = self.cfg.patch
        x = self.patch_embed(patchify(frames, p))
        special = torch.cat([self.camera_token, self.register_tokens], 0).to(x.dtype)
        x = torch.cat([special.expand(b, v, -1, -1), x], 2)
        angles = rope_table(self.cfg.heads, h // p, w // p, self.n_special, frames.device)
        for layer in self.layers:
            x = layer(x, angles)
        return self.norm(x[:, :, 0])

    def relative_poses(self, tokens: Tensor, canonical: int) -> tuple[Tensor, Tensor]:
        """Pairwise head: (R (B, V, 3, 3), t (B, V, 3)); the canonical view is exactly the identity."""
        b, v, c = tokens.shape
        out = self.pose_mlp(torch.cat([tokens[:, canonical : canonical + 1].expand(-1, v, -1), tokens], -1)).float()
        if self.cfg.rotation == "6d":
            R = rotation_from_6d(out[..., :6] + out.new_tensor(_IDENTITY_6D))
        else:
            R = rotation_from_quat(out[..., :4] + out.new_tensor(_IDENTITY_QUAT))
        t = out[..., 6:9]
        is_canon = torch.zeros(v, dtype=torch.bool, device=tokens.device)
        is_canon[canonical] = True
        eye = torch.eye(3, dtype=R.dtype, device=R.device)
        R = torch.where(is_canon[:, None, None], eye, R)
        t = torch.where(is_canon[:, None], torch.zeros_like(t), t)
        return R, t

    def forward(self, frames: Tensor, detach_focal: bool = False) -> CameraPrediction:
        b, v, _, h, w = frames.shape
        tokens = self.tokens(frames)
        canonical = v // 2
        R, t = self.relative_poses(tokens, canonical)
        fx_over_w = self.cfg.focal_bias * torch.exp(self.focal_head(tokens[:, canonical]).float()[:, 0])  # (B,)
        if detach_focal:
            fx_over_w = fx_over_w.detach()
        f = fx_over_w * w / (min(h - 1, w - 1) / 2)
        return CameraPrediction(
            camera=Camera(R=R, t=t, f=f[:, None].expand(b, v)), camera_tokens=tokens, canonical=canonical
        )
