"""E-RayZer's scene transformer and pixel-aligned Gaussian decoder.

Reference images are patchified and embedded, the 6-channel Plücker map (`rayder_core.geometry.plucker_rays`,
[d, o x d]) of the *predicted* reference cameras is patchified and embedded, the two are concatenated and fused by an
MLP (2C -> C -> C), then alternating frame/global blocks run over all reference views. A LayerNorm + Linear decoder
maps each token to patch^2 x G values, one Gaussian per pixel (G = 3 + 3 (sh+1)^2 + 3 + 4 + 1, 59 for SH degree 3):

* centre = o + t d with the unit ray (o, d) of the pixel and t = sigmoid(mean of the 3 position channels) (far -
  near) + near: a distance along the ray, not a z-depth (near 0, far 8 scene units by default);
* scale = exp(clamp(s - 3, -10, -2)) per axis (scene units);
* opacity = sigmoid(max(o - 2, -10));
* rotation = normalise(q + (1, 0, 0, 0)) (w, x, y, z) - the identity offset keeps a zero output well defined;
* colour = SH coefficients of degree `sh_degree` (rendered as SH + 0.5, as gsplat).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rayder_core.geometry import Camera, plucker_rays, ray_origins_directions

from .config import ERayZerConfig
from .layers import AlternatingLayer, patchify, rope_table, unpatchify

PLUCKER_DIM = 6


class SceneTransformer(nn.Module):
    def __init__(self, cfg: ERayZerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        c, p = cfg.width, cfg.patch
        self.image_embed = nn.Linear(3 * p * p, c)
        self.ray_embed = nn.Linear(PLUCKER_DIM * p * p, c)
        self.fuse = nn.Sequential(nn.Linear(2 * c, c), nn.GELU(), nn.Linear(c, c))
        self.layers = nn.ModuleList(
            [AlternatingLayer(c, cfg.heads, cfg.mlp_hidden, cfg.order) for _ in range(cfg.scene_layers)]
        )
        self.decoder_norm = nn.LayerNorm(c)
        self.decoder = nn.Linear(c, p * p * cfg.gaussian_channels)

    def forward(self, images: Tensor, cams: Camera) -> dict[str, Tensor]:
        """images (B, V, 3, H, W) in [-1, 1], cams (B, V) -> Gaussians with N = V H W per sample:
        means (B, N, 3), quats (B, N, 4), scales (B, N, 3), opacities (B, N), sh (B, N, (sh+1)^2, 3)."""
        cfg = self.cfg
        b, v, _, h, w = images.shape
        p = cfg.patch
        dtype = images.dtype
        rays = plucker_rays(cams, h, w, dtype=dtype).permute(0, 1, 4, 2, 3)  # (B, V, 6, H, W)
        x = torch.cat([self.image_embed(patchify(images, p)), self.ray_embed(patchify(rays, p))], -1)
        x = self.fuse(x)
        angles = rope_table(cfg.heads, h // p, w // p, 0, images.device)
        for layer in self.layers:
            x = layer(x, angles)
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
    quats = F.normalize(quat + quat.new_tensor([1.0, 0.0, 0.0, 0.0]), dim=-1)
    n = v * h * w
    return {
        "means": means.reshape(b, n, 3),
        "quats": quats.reshape(b, n, 4),
        "scales": scales.reshape(b, n, 3),
        "opacities": opacities.reshape(b, n),
        "sh": sh.reshape(b, n, k, 3),
        "distance": dist.reshape(b, n),
    }
