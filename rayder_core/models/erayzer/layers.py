"""Transformer blocks and embeddings shared by E-RayZer's camera and scene transformers, as the official code builds
them (VGGT-style alternating attention, QitaoZhao/E-RayZer `QK_Norm_TransformerBlock`).

A block is a pre-norm ViT block without any bias: LayerNorm (weight only) -> qkv linear -> RMSNorm QK-norm over the
head dimension (weight, eps 1e-5, computed in float32) -> scaled dot-product attention -> output linear; then
LayerNorm -> GELU MLP (width -> mlp_hidden -> width). There is no rotary embedding: positions enter once, as a fixed
2D sine-cosine table passed through a learned MLP (`PositionMLP`) and added to the patch tokens. No view-index /
frame-order embedding anywhere: global attention sees only content and in-image positions, so permuting the views
permutes the outputs.

Token layout: (B, V, S + N, C) = per view S special tokens followed by N = h * w patch tokens (row-major).
A layer = one frame block (one sequence per view) and one global block (one sequence of all V (S + N) tokens); the
official order is frame first.

Initialisation (official `_init_weights` and `special_init` + `depth_init`): every linear N(0, 0.02) with zero bias;
the linears of the k-th block of a transformer (k = 0, 1, ... in the order the blocks run) N(0, 0.02 / sqrt(2 (k+1))).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

INIT_STD = 0.02


def init_linear(module: nn.Module, std: float = INIT_STD) -> None:
    """N(0, std) weights and zero biases for every nn.Linear inside `module` (the official `_init_weights`)."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, mean=0.0, std=std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def sincos_table_2d(dim: int, h: int, w: int, device: torch.device | None = None) -> Tensor:
    """Fixed 2D sine-cosine position table (h w, dim), row-major over the token grid.

    The first dim/2 channels encode the token's row, the last dim/2 its column; each half is [sin(p w_i), cos(p w_i)]
    with w_i = 10000^(-i / (dim / 4)), i = 0 .. dim/4 - 1 (the official `get_2d_sincos_pos_embed` on a square grid).
    dim must be a multiple of 4."""
    if dim % 4:
        raise ValueError(f"sincos_table_2d: dim {dim} must be a multiple of 4")
    k = dim // 4
    omega = 1.0 / 10000 ** (torch.arange(k, dtype=torch.float64, device=device) / k)
    rows = torch.arange(h, dtype=torch.float64, device=device).repeat_interleave(w)
    cols = torch.arange(w, dtype=torch.float64, device=device).repeat(h)

    def axis(pos: Tensor) -> Tensor:
        a = pos[:, None] * omega[None]
        return torch.cat([torch.sin(a), torch.cos(a)], -1)

    return torch.cat([axis(rows), axis(cols)], -1).float()


class PositionMLP(nn.Module):
    """Learned position embedding: MLP(width -> width, SiLU, width -> width, biases) of the fixed sine-cosine table
    (official `pe_embedder` / `pe_embedder_plucker`). `forward(h, w, dtype)` -> (h w, width)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.width = width
        self.mlp = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))

    def forward(self, h: int, w: int, dtype: torch.dtype | None = None) -> Tensor:
        table = sincos_table_2d(self.width, h, w, self.mlp[0].weight.device)
        out = self.mlp(table.to(self.mlp[0].weight.dtype))
        return out if dtype is None else out.to(dtype)


class RMSNorm(nn.Module):
    """x / sqrt(mean(x^2) + eps) * weight over the last dimension, computed in float32 and cast back."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x) * self.weight.type_as(x)


class Block(nn.Module):
    """Bias-free pre-norm attention block (RMSNorm QK-norm) + GELU MLP; `forward(x (B, L, C)) -> (B, L, C)`."""

    def __init__(self, width: int, head_dim: int, mlp_hidden: int) -> None:
        super().__init__()
        if width % head_dim:
            raise ValueError(f"Block: head_dim {head_dim} must divide width {width}")
        self.head_dim = head_dim
        self.norm1 = nn.LayerNorm(width, bias=False)
        self.qkv = nn.Linear(width, 3 * width, bias=False)
        self.q_norm = RMSNorm(head_dim)
        self.k_norm = RMSNorm(head_dim)
        self.proj = nn.Linear(width, width, bias=False)
        self.norm2 = nn.LayerNorm(width, bias=False)
        self.fc1 = nn.Linear(width, mlp_hidden, bias=False)
        self.fc2 = nn.Linear(mlp_hidden, width, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        q, k, v = rearrange(self.qkv(self.norm1(x)), "b l (n h d) -> n b h l d", n=3, d=self.head_dim)
        q, k = self.q_norm(q), self.k_norm(k)
        out = F.scaled_dot_product_attention(q, k, v)
        x = x + self.proj(rearrange(out, "b h l d -> b l (h d)"))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class AlternatingLayer(nn.Module):
    """One frame block per view and one global block over all views' tokens (order configurable)."""

    def __init__(self, width: int, head_dim: int, mlp_hidden: int, order: str = "frame-global") -> None:
        super().__init__()
        self.frame_block = Block(width, head_dim, mlp_hidden)
        self.global_block = Block(width, head_dim, mlp_hidden)
        self.order = order

    def blocks_in_order(self) -> list[Block]:
        return [self.frame_block if kind == "frame" else self.global_block for kind in self.order.split("-")]

    def forward(self, x: Tensor) -> Tensor:
        """x (B, V, L, C) with L = specials + patches per view."""
        b, v, l, c = x.shape
        for kind in self.order.split("-"):
            if kind == "global":
                x = self.global_block(x.reshape(b, v * l, c)).reshape(b, v, l, c)
            else:
                x = self.frame_block(x.reshape(b * v, l, c)).reshape(b, v, l, c)
        return x


def build_layers(n_layers: int, width: int, head_dim: int, mlp_hidden: int, order: str) -> nn.ModuleList:
    """`n_layers` alternating layers with the official depth-scaled initialisation (module docstring)."""
    layers = nn.ModuleList([AlternatingLayer(width, head_dim, mlp_hidden, order) for _ in range(n_layers)])
    k = 0
    for layer in layers:
        for block in layer.blocks_in_order():
            init_linear(block, INIT_STD / math.sqrt(2 * (k + 1)))
            k += 1
    return layers


def patchify(images: Tensor, patch: int) -> Tensor:
    """(B, V, Ch, H, W) -> (B, V, (H/p)(W/p), p p Ch) patches, row-major over the token grid."""
    return rearrange(images, "b v c (h p) (w q) -> b v (h w) (p q c)", p=patch, q=patch)


def unpatchify(tokens: Tensor, patch: int, h: int, w: int) -> Tensor:
    """(B, V, (H/p)(W/p), p p Ch) -> (B, V, H, W, Ch) channels-last pixels."""
    return rearrange(tokens, "b v (h w) (p q c) -> b v (h p) (w q) c", h=h // patch, w=w // patch, p=patch, q=patch)
