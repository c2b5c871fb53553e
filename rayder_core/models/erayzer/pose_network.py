"""E-RayZer's camera transformer: alternating frame/global attention and a pairwise pose head (official layout).

Every view's patches are embedded by a bias-free linear (`image_embed`, shared with the scene transformer) plus the
learned sine-cosine position embedding (`pe_embedder`); one camera token and `registers` register tokens (the same
learned embeddings for every view: there is no view-index embedding) go in front of the patch tokens. After the
transformer (no final norm, as the official code):

* the **middle view** (index V // 2 of the given order; the clip's temporal middle, since clips and evaluation views
  are fed sorted by time) is canonical: its pose is the identity (exactly);
* each other view i gets a pose from MLP(concat(token_c, token_i)) (Linear 2C -> C, SiLU, Linear C -> 9 (6-D) or 7
  (quaternion)), a residual over the identity: rotation from 6-D (Gram-Schmidt of two columns, Zhou et al.) or a
  quaternion, translation = the last 3 outputs. The pose is camera-to-world in the canonical camera's frame
  (RayDer's convention, OpenCV axes);
* one focal from the canonical token, shared by all views: focal = MLP(token_c) + focal_bias (Linear C -> C, SiLU,
  Linear C -> 1 without bias; additive bias 1.25), the official normalised focal fx / W = fy / H; principal point at
  the image centre. In RayDer's normalised units (`rayder_core.geometry`) this is f = focal W / (min(H-1, W-1) / 2).
  RayDer's Camera holds one pixel focal for both axes, so E-RayZer needs square images (fx = fy in pixels).

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
from .layers import PositionMLP, build_layers, init_linear, patchify


@dataclass
class CameraPrediction:
    """camera: Camera (B, V) float32 (c2w in the canonical view's frame, one shared focal). camera_tokens: (B, V, C)
    final camera tokens (the probe's input). canonical: index of the canonical view. image_tokens: (B, V, N, C) the
    embedded patches (+ position embedding) the scene transformer reuses. state: always None (E-RayZer has no dynamic
    state; the field keeps RayDer's CameraEstimate interface)."""

    camera: Camera
    camera_tokens: Tensor
    canonical: int
    image_tokens: Tensor | None = None
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
CAMERA_TOKEN_STD = 1e-6  # official initialisation of the camera and register tokens


def rotation_size(rotation: str) -> int:
    """Outputs of the rotation parametrisation: 6 ('6d') or 4 ('quat')."""
    return 6 if rotation == "6d" else 4


class CameraTransformer(nn.Module):
    def __init__(self, cfg: ERayZerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        c = cfg.width
        self.image_embed = nn.Linear(3 * cfg.patch**2, c, bias=False)
        self.pe_embedder = PositionMLP(c)
        self.camera_token = nn.Parameter(torch.randn(1, c) * CAMERA_TOKEN_STD)
        self.register_tokens = nn.Parameter(torch.randn(cfg.registers, c) * CAMERA_TOKEN_STD)
        self.layers = build_layers(cfg.camera_layers, c, cfg.head_dim, cfg.mlp_hidden, cfg.order)
        self.pose_head = nn.Sequential(nn.Linear(2 * c, c), nn.SiLU(), nn.Linear(c, rotation_size(cfg.rotation) + 3))
        self.focal_head = nn.Sequential(nn.Linear(c, c), nn.SiLU(), nn.Linear(c, 1, bias=False))
        for m in (self.image_embed, self.pe_embedder, self.pose_head, self.focal_head):
            init_linear(m)

    @property
    def n_special(self) -> int:
        return 1 + self.cfg.registers

    def embed(self, frames: Tensor) -> Tensor:
        """Patch tokens (B, V, N, C) of frames (B, V, 3, H, W) in [-1, 1]: linear patch embedding + position MLP."""
        h, w = frames.shape[-2:]
        p = self.cfg.patch
        x = self.image_embed(patchify(frames, p))
        return x + self.pe_embedder(h // p, w // p, x.dtype)

    def tokens(self, image_tokens: Tensor) -> Tensor:
        """Final camera tokens (B, V, C) of embedded patches (B, V, N, C)."""
        b, v = image_tokens.shape[:2]
        special = torch.cat([self.camera_token, self.register_tokens], 0).to(image_tokens.dtype)
        x = torch.cat([special.expand(b, v, -1, -1), image_tokens], 2)
        for layer in self.layers:
            x = layer(x)
        return x[:, :, 0]

    def relative_poses(self, tokens: Tensor, canonical: int) -> tuple[Tensor, Tensor]:
        """Pairwise head on the V - 1 non-canonical views: (R (B, V, 3, 3), t (B, V, 3)); the canonical view is
        exactly the identity."""
        b, v, c = tokens.shape
        others = [i for i in range(v) if i != canonical]
        R = torch.eye(3, dtype=torch.float32, device=tokens.device).repeat(b, v, 1, 1)
        t = torch.zeros(b, v, 3, dtype=torch.float32, device=tokens.device)
        if not others:
            return R, t
        pair = torch.cat([tokens[:, canonical : canonical + 1].expand(-1, len(others), -1), tokens[:, others]], -1)
        out = self.pose_head(pair).float()
        k = rotation_size(self.cfg.rotation)
        if self.cfg.rotation == "6d":
            rot = rotation_from_6d(out[..., :k] + out.new_tensor(_IDENTITY_6D))
        else:
            rot = rotation_from_quat(out[..., :k] + out.new_tensor(_IDENTITY_QUAT))
        idx = torch.tensor(others, device=tokens.device)
        R = R.index_copy(1, idx, rot)
        t = t.index_copy(1, idx, out[..., k : k + 3])
        return R, t

    def forward(self, frames: Tensor, detach_focal: bool = False) -> CameraPrediction:
        b, v, _, h, w = frames.shape
        if h != w:
            raise ValueError(f"E-RayZer camera head: images must be square (the focal is fx / W = fy / H and RayDer's "
                             f"Camera holds one pixel focal), got {h}x{w}")
        image_tokens = self.embed(frames)
        tokens = self.tokens(image_tokens)
        canonical = v // 2
        R, t = self.relative_poses(tokens, canonical)
        focal = (self.focal_head(tokens[:, canonical]).float()[:, 0] + self.cfg.focal_bias)  # fx / W = fy / H, (B,)
        if detach_focal:
            focal = focal.detach()
        f = focal * w / (min(h - 1, w - 1) / 2)
        return CameraPrediction(camera=Camera(R=R, t=t, f=f[:, None].expand(b, v)), camera_tokens=tokens,
                                canonical=canonical, image_tokens=image_tokens)
