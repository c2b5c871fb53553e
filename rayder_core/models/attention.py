"""Attention kernels and their backends.

Cosine-similarity attention (HDiT): q and k are L2-normalised in fp32 and each multiplied by sqrt(scale) with a
learned per-head scale (init 10), then attention runs with softmax scale 1. Axial RoPE is used in per-frame attention
only.

Backends, picked by device unless forced in the config:
- 'natten' (CUDA): neighbourhood attention via `natten.na2d` (fused kernels), masked global attention via compiled
  flex attention with a block mask.
- 'sdpa' (CPU, or forced): exact equivalents that also train on CPU, where flex attention has no backward:
  neighbourhood attention = SDPA with the NATTEN window mask within each frame, global attention = SDPA with a
  boolean mask. Both compute the dense score matrix (see flops.py for the dense vs allowed-pair counts).
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.attention.flex_attention import flex_attention


D_HEAD = 64
# On CPU, attention over at most this many query x key pairs runs as explicit matmuls + softmax instead of SDPA:
# PyTorch's CPU flash kernel works in 512-key blocks, and its bf16 backward costs 3-6x the explicit form for the
# short sequences of the tiny presets (17-102 tokens; measured in benchmarks/attention_paths.py). Longer sequences
# (e.g. a 16x16 neighbourhood grid) keep SDPA, which is faster there.
SMALL_ATTENTION_PAIRS = 128 * 128
ROPE_FREQS = 8  # rotary frequencies per head and axis at head_dim 64: dims [0, 16) rotate with [16, 32), the rest not


def rope_freqs_per_axis(head_dim: int) -> int:
    """Rotary frequencies per axis for a head of `head_dim` channels: head_dim / 8, so that half of every head is
    rotated (dims [0, head_dim/4) with [head_dim/4, head_dim/2)); 8 at the paper's head dimension 64."""
    return head_dim // 8


def resolve_backend(requested: str, device: torch.device) -> str:
    """'auto' -> 'natten' on CUDA, 'sdpa' elsewhere. A forced 'natten' on CPU works for inference only."""
    if requested == "auto":
        return "natten" if device.type == "cuda" else "sdpa"
    if requested not in ("natten", "sdpa"):
        raise ValueError(f"unknown attention backend {requested!r}; use 'auto', 'natten' or 'sdpa'")
    return requested


def cosine_sim_scale(q: Tensor, k: Tensor, scale: Tensor, head_dim: int = -2) -> tuple[Tensor, Tensor]:
    """L2-normalise q and k (fp32) and multiply each by sqrt(scale); `scale` has one entry per head, and the heads
    are at dimension `head_dim` of q and k."""
    shape = [1] * q.ndim
    shape[head_dim] = scale.numel()
    s = scale.float().sqrt().view(shape)
    return F.normalize(q.float(), dim=-1) * s, F.normalize(k.float(), dim=-1) * s


def rope_frequencies(n_heads: int, head_dim: int = D_HEAD) -> Tensor:
    """Per-head spatial frequencies, log-spaced in [pi, 10 pi): (n_heads, head_dim / 8)."""
    n = rope_freqs_per_axis(head_dim)
    freqs = torch.linspace(math.log(math.pi), math.log(10 * math.pi), n_heads * n + 1)[:-1].exp()
    return freqs.view(n, n_heads).T.contiguous()


def grid_positions(height: int, width: int, device: torch.device | None = None) -> Tensor:
    """(y, x) bin centres of a token grid in [-1, 1] along the longer side (aspect-preserving): (height, width, 2)."""
    side = max(height, width)
    y = (torch.arange(height, device=device, dtype=torch.float32) + 0.5 - height / 2) * 2 / side
    x = (torch.arange(width, device=device, dtype=torch.float32) + 0.5 - width / 2) * 2 / side
    return torch.stack(torch.meshgrid(y, x, indexing="ij"), dim=-1)


def rope_angles(freqs: Tensor, height: int, width: int) -> Tensor:
    """Rotation angles (height, width, heads, 2 x freqs per axis) for a token grid; freqs from `rope_frequencies`."""
    pos = grid_positions(height, width, freqs.device)
    return torch.cat([pos[..., 0, None, None] * freqs, pos[..., 1, None, None] * freqs], dim=-1)


def apply_rope(x: Tensor, angles: Tensor) -> Tensor:
    """Rotate-half RoPE on the first 2 * angles.shape[-1] dims of the last axis; angles broadcast against x[..., :n]."""
    n = angles.shape[-1]
    x1, x2, rest = x[..., :n], x[..., n : 2 * n], x[..., 2 * n :]
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin, rest], dim=-1)


def dense_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> Tensor:
    """softmax(q k^T, masked) v over (..., L, head_dim) with softmax scale 1 (q, k already scaled).

    mask: (Lq, Lk) bool, True = may attend (every query must see at least one key), or None. Short sequences on CPU
    use explicit batched matmuls (in the inputs' dtype, AMX for bf16) with the softmax in fp32 (or fp64); everything else
    uses `F.scaled_dot_product_attention`. Both compute the same function."""
    if q.device.type == "cpu" and q.shape[-2] * k.shape[-2] <= SMALL_ATTENTION_PAIRS:
        scores = torch.matmul(q, k.transpose(-1, -2))
        scores = scores.to(torch.promote_types(scores.dtype, torch.float32))  # softmax in fp32 at least
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        return torch.matmul(scores.softmax(-1).to(v.dtype), v)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=1.0)


# ----------------------------------------------------------------------------------------------------------------------
# Neighbourhood attention within each frame: the NATTEN window (dilation 1) as a boolean mask for the exact CPU path


def neighborhood_window(length: int, kernel: int, device: torch.device | str | None = None) -> Tensor:
    """1D NATTEN window (dilation 1, odd kernel): query i sees keys start(i)..start(i)+kernel-1 with
    start(i) = clamp(i - kernel//2, 0, length - kernel). Returns (length, length) bool."""
    if kernel % 2 == 0 or not 1 <= kernel <= length:
        raise ValueError(f"neighbourhood kernel {kernel} must be odd and in [1, {length}]")
    i = torch.arange(length, device=device)
    centre = i.clamp(kernel // 2, length - 1 - kernel // 2)
    return (centre[:, None] - i[None, :]).abs() <= kernel // 2


def neighborhood_mask(
    height: int, width: int, kernel_h: int, kernel_w: int, device: torch.device | str | None = None
) -> Tensor:
    """2D neighbourhood mask over a row-major (height, width) token grid, rows and columns each with their own
    kernel (correct for non-square grids). Returns (height*width, height*width) bool."""
    rows = neighborhood_window(height, kernel_h, device)
    cols = neighborhood_window(width, kernel_w, device)
    return (rows[:, None, :, None] & cols[None, :, None, :]).reshape(height * width, height * width)


def fit_kernel(kernel: int, side: int) -> int:
    """Largest odd kernel <= min(kernel, side): grids smaller than the kernel get a smaller window."""
    k = min(kernel, side)
    return k if k % 2 else k - 1



@functools.lru_cache(maxsize=64)
def _cached_na_mask(height: int, width: int, kh: int, kw: int, device: torch.device) -> Tensor:
    return neighborhood_mask(height, width, kh, kw, device)


def neighborhood_attention(q: Tensor, k: Tensor, v: Tensor, kernel: tuple[int, int], backend: str) -> Tensor:
    """2D neighbourhood attention with NATTEN semantics, softmax scale 1 (q, k already scaled).

    q, k, v: (batch, height, width, heads, head_dim) (NATTEN's heads-last layout). Returns the same layout.
    """
    b, h, w, nh, d = q.shape
    if backend == "natten":
        import natten  # optional dependency: the fused CUDA kernels (the 'natten' backend only)

        return natten.na2d(q.contiguous(), k.contiguous(), v.contiguous(), kernel_size=kernel, scale=1.0)
    mask = _cached_na_mask(h, w, kernel[0], kernel[1], q.device)
    to_seq = lambda t: t.reshape(b, h * w, nh, d).transpose(1, 2)  # noqa: E731
    out = dense_attention(to_seq(q), to_seq(k), to_seq(v), mask)
    return out.transpose(1, 2).reshape(b, h, w, nh, d)


# ----------------------------------------------------------------------------------------------------------------------
# Global (masked) attention

_compiled_flex = None


def _flex_attention():
    global _compiled_flex
    if _compiled_flex is None:
        _compiled_flex = torch.compile(flex_attention, dynamic=False)
    return _compiled_flex


def global_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, block_mask=None) -> Tensor:
    """Attention over (batch, heads, L, head_dim) with softmax scale 1 (q, k already scaled).

    mask: (Lq, Lk) bool (True = may attend) or None for full attention; block_mask: a flex BlockMask with the same
    pattern, used instead of `mask` when given (CUDA backend)."""
    if block_mask is not None:
        if q.device.type == "cuda":
            return _flex_attention()(q, k, v, block_mask=block_mask, scale=1.0)
        return flex_attention(q, k, v, block_mask=block_mask, scale=1.0)
    return dense_attention(q, k, v, mask)
