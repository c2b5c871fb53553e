"""E-RayZer's scene transformer and pixel-aligned Gaussian decoder (official layout).

The reference views' patch tokens are the camera transformer's image embedding (bias-free linear + position MLP,
reused, not a second tokenizer). The 6-channel Plücker map [o x d, d] (official channel order; unit ray directions
through the pixel centres) of the *predicted* reference cameras is patchified, embedded by a bias-free linear and
its own position MLP (`pe_embedder_plucker`). Image and ray tokens are concatenated (2C) and fused by an MLP
(LayerNorm 2C without bias, Linear 2C -> C, SiLU, Linear C -> C), then alternating frame/global blocks run over all
reference views. A decoder (LayerNorm without bias + bias-free Linear) maps each token to patch^2 x G values, one
Gaussian per pixel (G = 3 + 3 (sh+1)^2 + 3 + 4 + 1, 59 for SH degree 3):

* centre = o + t d with the unit ray (o, d) of the pixel and t = sigmoid(mean of the 3 position channels) (far -
  near) + near: a distance along the ray, not a z-depth (near 0, far 8 scene units by default);
* scale = exp(clamp(s - 3, -10, -2)) per axis (scene units);
* opacity = sigmoid(max(o - 2, -10));
* rotation = normalise(q) (w, x, y, z), as the official `rotation_activation`;
* colour = SH coefficients of degree `sh_degree` (rendered as SH + 0.5, as gsplat).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rayder_core.geometry import Camera, ray_origins_directions

from .config import ERayZerConfig
from .layers import PositionMLP, build_layers, init_linear, patchify, unpatchify

PLUCKER_DIM = 6


def plucker_moment_first(cams: Camera, h: int, w: int, dtype: torch.dtype) -> Tensor:
    """Plücker map (B, V, 6, H, W) = [o x d, d] of cameras (B, V) (the official channel order)."""
    o, d = ray_origins_directions(cams.to(dtype=torch.float32), h, w)  # (B, V, H, W, 3), unit d
    return torch.cat([torch.linalg.cross(o, d, dim=-1), d], -1).permute(0, 1, 4, 2, 3).to(dtype)


class SceneTransformer(nn.Module):
    def __init__(self, cfg: ERayZerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        c, p = cfg.width, cfg.patch
        self.ray_embed = nn.Linear(PLUCKER_DIM * p * p, c, bias=False)
        self.pe_embedder_plucker = PositionMLP(c)
        self.fuse = nn.Sequential(nn.LayerNorm(2 * c, bias=False), nn.Linear(2 * c, c), nn.SiLU(), nn.Linear(c, c))
        self.layers = build_layers(cfg.scene_layers, c, cfg.head_dim, cfg.mlp_hidden, cfg.order)
        self.decoder_norm = nn.LayerNorm(c, bias=False)
        self.decoder = nn.Linear(c, p * p * cfg.gaussian_channels, bias=False)  # output fixed by the task
        for m in (self.ray_embed, self.pe_embedder_plucker, self.fuse, self.decoder):
            init_linear(m)

    def forward(self, image_tokens: Tensor, cams: Camera, h: int, w: int) -> dict[str, Tensor]:
        """image_tokens (B, V, N, C) (the camera transformer's `embed` of the reference images, H x W pixels),
        cams (B, V) -> Gaussians with N = V H W per sample: means (B, N, 3), quats (B, N, 4), scales (B, N, 3),
        opacities (B, N), sh (B, N, (sh+1)^2, 3), distance (B, N)."""
        cfg = self.cfg
        p = cfg.patch
        dtype = image_tokens.dtype
        rays = self.ray_embed(patchify(plucker_moment_first(cams, h, w, self.ray_embed.weight.dtype), p))
        rays = rays + self.pe_embedder_plucker(h // p, w // p, rays.dtype)
        x = self.fuse(torch.cat([image_tokens, rays.to(dtype)], -1))
        for layer in self.layers:
            x = layer(x)
        raw = unpatchify(self.decoder(self.decoder_norm(x)), p, h, w).float()  # (B, V, H, W, G)
        return decode_gaussians(raw, cams, cfg)


def decode_gaussians(raw: Tensor, cams: Camera, cfg: ERayZerConfig) -> dict[str, Tensor]:
    """Activations of the per-pixel decoder outputs raw (B, V, H, W, G) of cameras (B, V) (see module docstring)."""
    b, v, h, w, g = raw.shape
    k = (cfg.sh_degree + 1) ** 2
    pos, sh, scale, quat, opac = raw.split([3, 3 * k, 3, 4, 1], dim=-1)
    origins, dirs = ray_origins_directions(cams.to(dtype=torch.float32), h, w)  # (B, V, H, W, 3), unit dirs
    dist = torch.sigmoid(pos.mean(-1, keepdim=True)) * (cfg.far - cfg.near) + cfg.near
    means = origins + dist * dirs
    scales = torch.exp(torch.clamp(scale - 3.0, -10.0, -2.0))
    opacities = torch.sigmoid(torch.clamp_min(opac[..., 0] - 2.0, -10.0))
    quats = F.normalize(quat, dim=-1)
    n = v * h * w
    return {
        "means": means.reshape(b, n, 3),
        "quats": quats.reshape(b, n, 4),
        "scales": scales.reshape(b, n, 3),
        "opacities": opacities.reshape(b, n),
        "sh": sh.reshape(b, n, k, 3),
    }
