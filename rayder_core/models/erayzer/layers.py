"""Transformer blocks shared by E-RayZer's camera and scene transformers (VGGT-style alternating attention).

A block is a pre-LayerNorm ViT block: attention with biased qkv, QK-norm (LayerNorm over the head dimension) and 2D
axial RoPE on patch tokens (special tokens - camera and register tokens - are not rotated), then a GELU MLP. No view
index / frame-order embedding anywhere: global attention sees only content and in-image positions, so permuting the
views permutes the outputs.

Token layout: (B, V, S + N, C) = per view S special tokens followed by N = h * w patch tokens (row-major).
A layer = one global block (one sequence of all V (S + N) tokens) and one frame block (one sequence per view).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from rayder_core.attention import ROPE_FREQS, apply_rope, rope_angles


def rope_table(n_heads: int, h: int, w: int, n_special: int, device: torch.device) -> Tensor:
    """RoPE angles (n_special + h w, heads, 2 ROPE_FREQS): zero (identity rotation) for the special tokens.

    Per-head frequencies are log-spaced in [pi, 10 pi) as in `rayder_core.attention.rope_frequencies`."""
    from rayder_core.attention import rope_frequencies

    freqs = rope_frequencies(n_heads).to(device)
    ang = rope_angles(freqs, h, w).reshape(h * w, n_heads, 2 * ROPE_FREQS)
    return torch.cat([ang.new_zeros(n_special, n_heads, 2 * ROPE_FREQS), ang], 0)


class Block(nn.Module):
    """Pre-norm attention block (QK-norm, RoPE) + GELU MLP; `forward(x (B, L, C), angles (L, heads, 16) or None)`."""

    def __init__(self, width: int, heads: int, mlp_hidden: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.q_norm = nn.LayerNorm(width // heads)
        self.k_norm = nn.LayerNorm(width // heads)
        self.proj = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, mlp_hidden)
        self.fc2 = nn.Linear(mlp_hidden, width)

    def forward(self, x: Tensor, angles: Tensor | None) -> Tensor:
        q, k, v = rearrange(self.qkv(self.norm1(x)), "b l (n h d) -> n b h l d", n=3, h=self.heads)
        q, k = self.q_norm(q), self.k_norm(k)
        if angles is not None:  # angles (L, heads, r) -> (heads, L, r)
            a = angles.transpose(0, 1)
            q, k = apply_rope(q, a), apply_rope(k, a)
        out = F.scaled_dot_product_attention(q, k, v)
        x = x + self.proj(rearrange(out, "b h l d -> b l (h d)"))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class AlternatingLayer(nn.Module):
    """One global block over all views' tokens and one frame block per view (order configurable)."""

    def __init__(self, width: int, heads: int, mlp_hidden: int, order: str = "global-frame") -> None:
        super().__init__()
        self.global_block = Block(width, heads, mlp_hidden)
        self.frame_block = Block(width, heads, mlp_hidden)
        self.order = order

    def forward(self, x: Tensor, angles: Tensor) -> Tensor:
        """x (B, V, L, C) with L = specials + patches per view; angles (L, heads, r) for one view."""
        b, v, l, c = x.shape
        for kind in self.order.split("-"):
            if kind == "global":
                x = self.global_block(x.reshape(b, v * l, c), angles.repeat(v, 1, 1)).reshape(b, v, l, c)
            else:
                x = self.frame_block(x.reshape(b * v, l, c), angles).reshape(b, v, l, c)
        return x


def patchify(images: Tensor, patch: int) -> Tensor:
    """(B, V, Ch, H, W) -> (B, V, (H/p)(W/p), p p Ch) patches, row-major over the token grid."""
    return rearrange(images, "b v c (h p) (w q) -> b v (h w) (p q c)", p=patch, q=patch)


def unpatchify(tokens: Tensor, patch: int, h: int, w: int) -> Tensor:
    """(B, V, (H/p)(W/p), p p Ch) -> (B, V, H, W, Ch) channels-last pixels."""
    return rearrange(tokens, "b v (h w) (p q c) -> b v (h p) (w q) c", h=h // patch, w=w // patch, p=patch, q=patch)
