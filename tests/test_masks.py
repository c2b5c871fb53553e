"""Masks against direct loops over the paper's rules B.1 / B.2 and NATTEN's window definition."""

import random

import pytest
import torch

from rayder_core.models import attention
from rayder_core.models.rayder import masks


def b1_rule(n_in: int, n_t: int) -> torch.Tensor:
    """Rule B.1 written out: inputs are I_0..I_{n_in-1}, targets follow."""
    v = n_in + n_t
    out = torch.zeros(v, v, dtype=torch.bool)
    for i in range(v):
        for j in range(v):
            i_in, j_in = i < n_in, j < n_in
            same_view = i == j
            both_input_causal = i_in and j_in and j < i
            target_sees_input = (not i_in) and j_in
            out[i, j] = same_view or both_input_causal or target_sees_input
    return out


def b2_rule(k: int) -> torch.Tensor:
    """Rule B.2 written out over a clip of k views: slots [inputs = views 0..k-2, targets = views 1..k-1]."""
    slots = [(i, True) for i in range(k - 1)] + [(i, False) for i in range(1, k)]  # (clip view, is input)
    n = len(slots)
    out = torch.zeros(n, n, dtype=torch.bool)
    for a, (i, i_in) in enumerate(slots):
        for b, (j, j_in) in enumerate(slots):
            same_view_same_role = i == j and i_in == j_in
            both_input_causal = j < i and i_in and j_in
            target_sees_earlier_input = (not i_in) and j_in and j < i
            out[a, b] = same_view_same_role or both_input_causal or target_sees_earlier_input
    return out


@pytest.mark.parametrize("seed", range(6))
def test_view_masks_match_rules(seed):
    rng = random.Random(seed)
    n_in, n_t, k = rng.randint(1, 7), rng.randint(1, 9), rng.randint(2, 10)
    assert torch.equal(masks.inference_view_mask(n_in, n_t), b1_rule(n_in, n_t))
    assert torch.equal(masks.training_view_mask(k), b2_rule(k))


def test_inputs_never_see_targets():
    m = masks.training_view_mask(8)
    assert not m[:7, 7:].any()
    m = masks.inference_view_mask(3, 5)
    assert not m[:3, 3:].any()


def test_token_mask_expansion_and_prefix():
    vm = masks.inference_view_mask(3, 2)
    n = 4
    full = masks.token_mask(vm, n)
    slots = masks.token_slots(5, n)
    for a in range(full.shape[0]):
        for b in range(full.shape[1]):
            assert full[a, b] == vm[slots[a], slots[b]]
    # Target rows against [cached inputs, targets] keys select the same pairs as the full mask.
    cached = masks.token_mask(vm[3:], n, n_prefix=3)
    keys = masks.key_slots(2, n, 3)
    q_slots = masks.token_slots(2, n) + 3
    assert torch.equal(cached, vm[q_slots[:, None], keys[None, :]])


@pytest.mark.parametrize("length,kernel", [(5, 3), (8, 7), (9, 5), (1, 1), (6, 5)])
def test_neighborhood_window_matches_natten_definition(length, kernel):
    got = attention.neighborhood_window(length, kernel)
    for i in range(length):
        start = min(max(i - kernel // 2, 0), length - kernel)
        want = torch.zeros(length, dtype=torch.bool)
        want[start : start + kernel] = True
        assert torch.equal(got[i], want)
        assert int(got[i].sum()) == kernel


def test_neighborhood_mask_non_square():
    h, w, kh, kw = 4, 9, 3, 7
    m = attention.neighborhood_mask(h, w, kh, kw)
    rows, cols = attention.neighborhood_window(h, kh), attention.neighborhood_window(w, kw)
    for q in range(h * w):
        for k in range(h * w):
            assert m[q, k] == (rows[q // w, k // w] and cols[q % w, k % w])


def test_fit_kernel_and_errors():
    assert [attention.fit_kernel(7, s) for s in (1, 2, 3, 4, 6, 7, 16)] == [1, 1, 3, 3, 5, 7, 7]
    with pytest.raises(ValueError, match="at least 2 views"):
        masks.training_view_mask(1)
    with pytest.raises(ValueError, match="kernel"):
        attention.neighborhood_window(4, 5)
