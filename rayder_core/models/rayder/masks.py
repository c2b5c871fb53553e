"""Attention masks: view-level rules B.1 (inference) and B.2 (training) and their token-level expansion (the
neighbourhood-attention window lives beside its kernel, `rayder_core.models.attention`). All masks are boolean,
True = may attend.

Views in a novel-view-synthesis sequence are laid out as [inputs..., targets...]. For training (B.2) the K views of a
clip, in (random) order, give inputs = views[:-1] and targets = views[1:]: input i is clip view i, target j is clip
view j + 1, so target j sees itself and inputs 0..j. Inputs never see targets under either rule, which is what makes
caching the inputs' keys/values at inference exact.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn.attention.flex_attention import create_block_mask


def inference_view_mask(n_in: int, n_target: int, device: torch.device | str | None = None) -> Tensor:
    """Rule B.1 over n_in + n_target views: inputs block-causal among themselves, each target sees itself and every
    input. Returns (V, V) bool, V = n_in + n_target."""
    v = n_in + n_target
    q = torch.arange(v, device=device)[:, None]
    k = torch.arange(v, device=device)[None, :]
    q_in, k_in = q < n_in, k < n_in
    return (q_in & k_in & (k <= q)) | (~q_in & (k_in | (k == q)))


def parallel_view_mask(n_in: int, n_target: int, device: torch.device | str | None = None) -> Tensor:
    """Parallel-target attention of the paper's Config E over n_in + n_target views: inputs attend to every input
    (bidirectional, no causality yet: that is Config F), each target sees itself and every input.
    Returns (V, V) bool, V = n_in + n_target."""
    if n_in < 1 or n_target < 1:
        raise ValueError(f"parallel-target attention needs >= 1 input and >= 1 target, got {n_in} and {n_target}")
    v = n_in + n_target
    q = torch.arange(v, device=device)[:, None]
    k = torch.arange(v, device=device)[None, :]
    return (k < n_in) | (k == q)


def full_view_mask(n_views: int, device: torch.device | str | None = None) -> Tensor:
    """Full attention over n_views views (decoder-only rendering of one target, the paper's Config D)."""
    return torch.ones(n_views, n_views, dtype=torch.bool, device=device)


def training_view_mask(n_views: int, device: torch.device | str | None = None) -> Tensor:
    """Rule B.2 for a clip of n_views views: n_views - 1 inputs then n_views - 1 targets. Inputs are block-causal,
    target j (clip view j + 1) sees itself and inputs 0..j. Returns (2(K-1), 2(K-1)) bool."""
    if n_views < 2:
        raise ValueError(f"training needs at least 2 views per clip, got {n_views}")
    n = n_views - 1
    q = torch.arange(2 * n, device=device)[:, None]
    k = torch.arange(2 * n, device=device)[None, :]
    q_in, k_in = q < n, k < n
    q_view = torch.where(q_in, q, q - n + 1)  # index into the clip
    k_view = torch.where(k_in, k, k - n + 1)
    both_in = q_in & k_in & (k_view <= q_view)
    target_sees_input = ~q_in & k_in & (k_view < q_view)
    itself = ~q_in & ~k_in & (k == q)
    return both_in | target_sees_input | itself


def token_slots(n_views: int, tokens_per_view: int, device: torch.device | str | None = None) -> Tensor:
    """View index of every position of a global-attention sequence laid out as
    [view 0 tokens, ..., view V-1 tokens, register 0, ..., register V-1]. Returns (V * (N + 1),) long."""
    views = torch.arange(n_views, device=device)
    return torch.cat([views.repeat_interleave(tokens_per_view), views])


def token_mask(view_mask: Tensor, tokens_per_view: int, n_prefix: int = 0) -> Tensor:
    """Expand a view-level mask (Vq, Vp + Vq) to tokens. Queries are the Vq current views (layout of `token_slots`);
    keys are the Vp prefix views (cached inputs) followed by the Vq current views, each in the same layout.
    Returns (Vq * (N + 1), (Vp + Vq) * (N + 1)) bool."""
    vq = view_mask.shape[0]
    if view_mask.shape[1] != n_prefix + vq:
        raise ValueError(f"view mask {tuple(view_mask.shape)} does not match {n_prefix} prefix + {vq} views")
    q_slot = token_slots(vq, tokens_per_view, view_mask.device) + n_prefix
    k_slot = key_slots(vq, tokens_per_view, n_prefix, view_mask.device)
    return view_mask[(q_slot - n_prefix)[:, None], k_slot[None, :]]


def key_slots(n_views: int, tokens_per_view: int, n_prefix: int, device: torch.device | str | None = None) -> Tensor:
    """View index of every key position: prefix sequence (if any) followed by the current sequence."""
    cur = token_slots(n_views, tokens_per_view, device) + n_prefix
    if n_prefix == 0:
        return cur
    return torch.cat([token_slots(n_prefix, tokens_per_view, device), cur])


_BLOCK_MASKS: dict = {}


def flex_block_mask(view_mask: Tensor, tokens_per_view: int, n_prefix: int = 0):
    """A flex-attention BlockMask with the same pattern as `token_mask` (used by the CUDA backend); cached by
    pattern, sequence layout and device."""
    pattern = tuple(view_mask.flatten().tolist())
    key = (tuple(view_mask.shape), pattern, tokens_per_view, n_prefix, str(view_mask.device))
    if key in _BLOCK_MASKS:
        return _BLOCK_MASKS[key]

    vq = view_mask.shape[0]
    q_slot = token_slots(vq, tokens_per_view, view_mask.device)
    k_slot = key_slots(vq, tokens_per_view, n_prefix, view_mask.device)

    def mask_mod(b, h, q_idx, kv_idx):
        return view_mask[q_slot[q_idx], k_slot[kv_idx]]

    block_mask = create_block_mask(
        mask_mod, B=None, H=None, Q_LEN=q_slot.numel(), KV_LEN=k_slot.numel(), device=view_mask.device
    )
    if len(_BLOCK_MASKS) > 256:
        _BLOCK_MASKS.clear()
    _BLOCK_MASKS[key] = block_mask
    return block_mask
