"""Transformer building blocks of RayDer (Llama-2 style with HDiT modifications).

All linears are bias-free except the heads' output layers. Every norm is an RMSNorm whose scale is `1 + Linear(cond)`
(zero-initialised) of a per-view, per-token-type conditioning vector. Attention and feed-forward output projections
are zero-initialised, so each residual block starts as the identity.

Tensor layout: view tokens are channels-last (B, V, h, w, C); registers (one per view, backbone only) are (B, V, C);
conditioning vectors are (B, V, d_cond).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from rayder_core.models import attention
from rayder_core.models.attention import D_HEAD


FF_EXPAND = 3
NORM_EPS = 1e-6


def rms_norm(x: Tensor, scale: Tensor, eps: float = NORM_EPS) -> Tensor:
    """RMSNorm computed in fp32 (at least), multiplied by `scale`, returned in x's dtype."""
    dtype = torch.promote_types(x.dtype, torch.float32)
    xf = x.to(dtype)
    out = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps) * scale.to(dtype)
    return out.to(x.dtype)


class RMSNorm(nn.Module):
    def __init__(self, features: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(features))

    def forward(self, x: Tensor) -> Tensor:
        return rms_norm(x, self.weight)


class AdaRMSNorm(nn.Module):
    """RMSNorm with scale 1 + Linear(cond); cond (B, V, d_cond) broadcasts over the token axes of x (B, V, ..., C)."""

    def __init__(self, features: int, d_cond: int) -> None:
        super().__init__()
        self.linear = nn.Linear(d_cond, features, bias=False)
        nn.init.zeros_(self.linear.weight)

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        scale = self.linear(cond) + 1
        scale = scale.view(*scale.shape[:2], *([1] * (x.ndim - 3)), scale.shape[-1])
        return rms_norm(x, scale)


class SwiGLU(nn.Module):
    """Feed-forward x -> down(a * silu(g)), [a, g] = up(x), hidden FF_EXPAND x width; down zero-initialised."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.up = nn.Linear(width, 2 * FF_EXPAND * width, bias=False)
        self.down = nn.Linear(FF_EXPAND * width, width, bias=False)
        nn.init.zeros_(self.down.weight)

    def forward(self, x: Tensor) -> Tensor:
        a, g = self.up(x).chunk(2, dim=-1)
        return self.down(a * F.silu(g))


class CosineAttentionWeights(nn.Module):
    """qkv / out projections and the learned per-head cosine-similarity scale (init 10)."""

    def __init__(self, width: int, head_dim: int = D_HEAD) -> None:
        super().__init__()
        self.heads = width // head_dim
        self.qkv = nn.Linear(width, 3 * width, bias=False)
        self.out = nn.Linear(width, width, bias=False)
        nn.init.zeros_(self.out.weight)
        self.scale = nn.Parameter(torch.full((self.heads,), 10.0))
        self.register_buffer("rope_freqs", attention.rope_frequencies(self.heads, head_dim), persistent=False)

    def project(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(..., C) -> q, k, v each (..., heads, D); q and k normalised and scaled in fp32."""
        q, k, v = rearrange(self.qkv(x), "... (n h d) -> n ... h d", n=3, h=self.heads)
        q, k = attention.cosine_sim_scale(q, k, self.scale)
        return q, k, v


# ----------------------------------------------------------------------------------------------------------------------
# Hourglass: neighbourhood-attention layers, merges and splits


class NeighborhoodLayer(nn.Module):
    """Per-frame neighbourhood attention (axial RoPE, kernel clamped to the grid) then SwiGLU, pre-norm residuals."""

    def __init__(self, width: int, d_cond: int, kernel: int, head_dim: int = D_HEAD) -> None:
        super().__init__()
        self.kernel = kernel
        self.attn_norm = AdaRMSNorm(width, d_cond)
        self.attn = CosineAttentionWeights(width, head_dim)
        self.ff_norm = AdaRMSNorm(width, d_cond)
        self.ff = SwiGLU(width)

    def forward(self, x: Tensor, cond: Tensor, backend: str) -> Tensor:
        b, v, h, w, c = x.shape
        q, k, val = self.attn.project(self.attn_norm(x, cond).reshape(b * v, h, w, c))
        angles = attention.rope_angles(self.attn.rope_freqs, h, w)
        q, k = attention.apply_rope(q, angles).to(val.dtype), attention.apply_rope(k, angles).to(val.dtype)
        kernel = (attention.fit_kernel(self.kernel, h), attention.fit_kernel(self.kernel, w))
        out = attention.neighborhood_attention(q, k, val, kernel, backend)
        x = x + self.attn.out(out.reshape(b, v, h, w, c))
        return x + self.ff(self.ff_norm(x, cond))


class TokenMerge(nn.Module):
    """Patch-merge p x p tokens into one: Linear(p*p*C_in -> C_out), no bias."""

    def __init__(self, in_features: int, out_features: int, patch: int) -> None:
        super().__init__()
        self.patch = patch
        self.proj = nn.Linear(in_features * patch * patch, out_features, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        p = self.patch
        return self.proj(rearrange(x, "b v (h p) (w q) c -> b v h w (p q c)", p=p, q=p))


class TokenSplit(nn.Module):
    """Split each token into p x p: Linear(C_in -> p*p*C_out), then lerp(skip, x, fac) with learned fac (init 0.5)."""

    def __init__(self, in_features: int, out_features: int, patch: int) -> None:
        super().__init__()
        self.patch = patch
        self.proj = nn.Linear(in_features, out_features * patch * patch, bias=False)
        self.fac = nn.Parameter(torch.tensor(0.5))

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        p = self.patch
        x = rearrange(self.proj(x), "b v h w (p q c) -> b v (h p) (w q) c", p=p, q=p)
        return torch.lerp(skip, x, self.fac.to(x.dtype))


class PixelOutput(nn.Module):
    """Final RMSNorm and zero-initialised Linear to p x p RGB pixels (no activation: the initial output is 0)."""

    def __init__(self, in_features: int, patch: int, channels: int = 3) -> None:
        super().__init__()
        self.patch = patch
        self.norm = RMSNorm(in_features)
        self.proj = nn.Linear(in_features, channels * patch * patch, bias=False)
        nn.init.zeros_(self.proj.weight)

    def forward(self, x: Tensor) -> Tensor:
        p = self.patch
        return rearrange(self.proj(self.norm(x)), "b v h w (p q c) -> b v (h p) (w q) c", p=p, q=p)


# ----------------------------------------------------------------------------------------------------------------------
# Backbone layer: global attention over all views (+ registers), per-frame attention, SwiGLU


class GlobalContext:
    """What the global attention of every backbone layer shares in one forward pass: the token-level mask (or flex
    block mask) and, for cached inference, the prefix keys/values of each layer and whether to record them."""

    def __init__(self, mask: Tensor | None, block_mask=None, prefix_kv: list | None = None, record: bool = False):
        self.mask = mask
        self.block_mask = block_mask
        self.prefix_kv = prefix_kv
        self.record = record
        self.recorded: list[tuple[Tensor, Tensor]] = []


class GlobalLocalLayer(nn.Module):
    """Tokens and registers share the projection and FF weights but have separate adaptive norms."""

    def __init__(self, width: int, d_cond: int, head_dim: int = D_HEAD) -> None:
        super().__init__()
        self.global_norm, self.global_reg_norm = AdaRMSNorm(width, d_cond), AdaRMSNorm(width, d_cond)
        self.global_attn = CosineAttentionWeights(width, head_dim)
        self.local_norm, self.local_reg_norm = AdaRMSNorm(width, d_cond), AdaRMSNorm(width, d_cond)
        self.local_attn = CosineAttentionWeights(width, head_dim)
        self.ff_norm, self.ff_reg_norm = AdaRMSNorm(width, d_cond), AdaRMSNorm(width, d_cond)
        self.ff = SwiGLU(width)

    def forward(
        self, x: Tensor, reg: Tensor, cond: Tensor, cond_reg: Tensor, ctx: GlobalContext, layer: int
    ) -> tuple[Tensor, Tensor]:
        b, v, h, w, c = x.shape
        n = h * w
        # Global attention: [view 0 tokens ... view V-1 tokens, registers], no positional encoding.
        seq = torch.cat([self.global_norm(x, cond).reshape(b, v * n, c), self.global_reg_norm(reg, cond_reg)], 1)
        q, k, val = (t.transpose(1, 2) for t in self.global_attn.project(seq))  # (B, heads, L, D)
        q, k = q.to(val.dtype), k.to(val.dtype)
        if ctx.record:
            ctx.recorded.append((k, val))
        if ctx.prefix_kv is not None:
            pk, pv = ctx.prefix_kv[layer]
            k, val = torch.cat([pk.to(k.dtype), k], 2), torch.cat([pv.to(val.dtype), val], 2)
        out = attention.global_attention(q, k, val, ctx.mask, ctx.block_mask)
        out = self.global_attn.out(out.transpose(1, 2).reshape(b, v * n + v, c))
        x = x + out[:, : v * n].reshape(b, v, h, w, c)
        reg = reg + out[:, v * n :]

        # Per-frame attention: each frame's tokens plus its register, axial RoPE on the tokens.
        tokens = self.local_norm(x, cond).reshape(b, v, n, c)
        seq = torch.cat([tokens, self.local_reg_norm(reg, cond_reg)[:, :, None]], 2)
        q, k, val = self.local_attn.project(seq.reshape(b * v, n + 1, c))  # (BV, L, heads, D)
        angles = attention.rope_angles(self.local_attn.rope_freqs, h, w).reshape(n, *q.shape[-2:-1], -1)
        rope = lambda t: torch.cat([attention.apply_rope(t[:, :n], angles), t[:, n:]], 1)  # noqa: E731
        q, k = rope(q).to(val.dtype), rope(k).to(val.dtype)
        out = attention.dense_attention(q.transpose(1, 2), k.transpose(1, 2), val.transpose(1, 2))
        out = self.local_attn.out(out.transpose(1, 2).reshape(b, v, n + 1, c))
        x = x + out[:, :, :n].reshape(b, v, h, w, c)
        reg = reg + out[:, :, n]

        x = x + self.ff(self.ff_norm(x, cond))
        reg = reg + self.ff(self.ff_reg_norm(reg, cond_reg))
        return x, reg


class MLPHead(nn.Module):
    """RMSNorm then Linear with bias; optionally zero-initialised (focal head: f starts at exp(0) = 1)."""

    def __init__(self, width: int, out_features: int, zero_init: bool = False) -> None:
        super().__init__()
        self.norm = RMSNorm(width)
        self.proj = nn.Linear(width, out_features)
        if zero_init:
            nn.init.zeros_(self.proj.weight)
            nn.init.zeros_(self.proj.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(self.norm(x))
