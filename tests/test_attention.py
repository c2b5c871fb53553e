"""The exact CPU attention path against natten.na2d (forward) and against closed forms."""

import natten
import pytest
import torch

from rayder_core.models import attention
from rayder_core.models.rayder import masks


@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
@pytest.mark.parametrize("h,w,kernel", [(8, 8, (7, 7)), (6, 10, (5, 7)), (4, 9, (3, 3)), (7, 5, (7, 5))])
def test_sdpa_neighborhood_equals_natten(h, w, kernel):
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, h, w, 3, 64, generator=g) for _ in range(3))
    q, k = attention.cosine_sim_scale(q, k, torch.full((3,), 10.0))
    ours = attention.neighborhood_attention(q, k, v, kernel, backend="sdpa")
    ref = natten.na2d(q, k, v, kernel_size=kernel, scale=1.0)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)


def test_sdpa_neighborhood_equals_direct_softmax():
    g = torch.Generator().manual_seed(1)
    h, w, kernel = 5, 6, (3, 5)
    q, k, v = (torch.randn(1, h, w, 1, 8, generator=g, dtype=torch.float64) for _ in range(3))
    ours = attention.neighborhood_attention(q, k, v, kernel, backend="sdpa")
    mask = attention.neighborhood_mask(h, w, *kernel)
    qs, ks, vs = q.reshape(h * w, 8), k.reshape(h * w, 8), v.reshape(h * w, 8)
    scores = (qs @ ks.T).masked_fill(~mask, float("-inf"))
    ref = (scores.softmax(-1) @ vs).reshape(1, h, w, 1, 8)
    torch.testing.assert_close(ours, ref)


def test_rope_is_relative_and_norm_preserving():
    freqs = attention.rope_frequencies(2)
    angles = attention.rope_angles(freqs, 4, 4)  # (4, 4, heads, 16)
    g = torch.Generator().manual_seed(2)
    q, k = torch.randn(2, 64, generator=g, dtype=torch.float64), torch.randn(2, 64, generator=g, dtype=torch.float64)
    rot = lambda x, pos: attention.apply_rope(x, angles[pos].double())  # noqa: E731
    # q.k depends only on the offset between positions: (0,0)-(1,2) vs (2,1)-(3,3).
    a = (rot(q, (0, 0)) * rot(k, (1, 2))).sum(-1)
    b = (rot(q, (2, 1)) * rot(k, (3, 3))).sum(-1)
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(rot(q, (3, 2)).norm(dim=-1), q.norm(dim=-1))


def test_cosine_sim_scale():
    q, k = torch.randn(3, 4, 64), torch.randn(3, 4, 64)
    scale = torch.tensor([1.0, 4.0, 9.0, 16.0])
    qs, ks = attention.cosine_sim_scale(q, k, scale)
    torch.testing.assert_close(qs.norm(dim=-1), scale.sqrt().expand(3, 4))
    cos = torch.nn.functional.cosine_similarity(q, k, dim=-1)
    torch.testing.assert_close((qs * ks).sum(-1), cos * scale)


def test_backend_resolution():
    assert attention.resolve_backend("auto", torch.device("cpu")) == "sdpa"
    assert attention.resolve_backend("auto", torch.device("cuda", 0)) == "natten"
    assert attention.resolve_backend("sdpa", torch.device("cuda", 0)) == "sdpa"
    with pytest.raises(ValueError, match="unknown attention backend"):
        attention.resolve_backend("xformers", torch.device("cpu"))


@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
def test_flex_block_mask_equals_boolean_mask():
    from torch.nn.attention.flex_attention import flex_attention

    vm = masks.training_view_mask(4)
    n = 3
    g = torch.Generator().manual_seed(4)
    L = vm.shape[0] * (n + 1)
    q, k, v = (torch.randn(1, 2, L, 64, generator=g) for _ in range(3))
    ours = attention.global_attention(q, k, v, masks.token_mask(vm, n))
    ref = flex_attention(q, k, v, block_mask=masks.flex_block_mask(vm, n), scale=1.0)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
def test_whole_model_natten_backend_forward_equals_sdpa_backend():
    """Forced 'natten' backend on CPU (natten.na2d + eager flex attention, forward only) gives the same images and
    cameras as the exact SDPA path."""
    from rayder_core.models.rayder.model import RayDer
    from rayder_core.models.rayder.config import ModelConfig

    torch.manual_seed(0)
    sdpa = RayDer(ModelConfig.from_preset("tiny-xs", attention_backend="sdpa"))
    with torch.no_grad():
        for p in sdpa.parameters():
            if not p.any():
                p.normal_(0, 0.05)
    nat = RayDer(ModelConfig.from_preset("tiny-xs", attention_backend="natten"))
    nat.load_state_dict(sdpa.state_dict())
    assert (sdpa.backend, nat.backend) == ("sdpa", "natten")
    x = torch.rand(1, 4, 3, 64, 48, generator=torch.Generator().manual_seed(5)) * 2 - 1
    a, b = sdpa.predict_cameras(x), nat.predict_cameras(x)
    torch.testing.assert_close(a.camera_tokens, b.camera_tokens, atol=1e-5, rtol=1e-5)
    out_a = sdpa.predict_views(x[:, :2], a.camera[:, :2], a.camera[:, 2:])
    out_b = nat.predict_views(x[:, :2], a.camera[:, :2], a.camera[:, 2:])
    torch.testing.assert_close(out_a, out_b, atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        ra = sdpa.render(x[:, :2], a.camera[:, :2], a.camera[:, 2:])
        rb = nat.render(x[:, :2], a.camera[:, :2], a.camera[:, 2:])
    torch.testing.assert_close(ra, rb, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
def test_short_sequence_attention_path_equals_sdpa(dtype, tol):
    """The explicit-matmul path that short CPU sequences take computes SDPA's function, values and gradients
    (relative L2 error; q and k cosine-normalised and scaled as in the model, so logits are <= 10)."""
    from rayder_core.models.attention import SMALL_ATTENTION_PAIRS, dense_attention

    g = torch.Generator().manual_seed(0)
    L = 17
    assert L * L <= SMALL_ATTENTION_PAIRS
    q, k = (torch.nn.functional.normalize(torch.randn(3, 2, L, 64, generator=g, dtype=torch.float64), dim=-1)
            * 10**0.5 for _ in range(2))
    v = torch.randn(3, 2, L, 64, generator=g, dtype=torch.float64)
    q, k, v = (t.to(dtype).requires_grad_() for t in (q, k, v))
    mask = torch.rand(L, L, generator=g) > 0.5
    mask |= torch.eye(L, dtype=torch.bool)
    w = torch.randn(3, 2, L, 64, generator=g, dtype=torch.float64)
    ours = dense_attention(q, k, v, mask)
    grads = torch.autograd.grad((ours.double() * w).sum(), (q, k, v))
    ref = torch.nn.functional.scaled_dot_product_attention(q.double(), k.double(), v.double(), attn_mask=mask,
                                                           scale=1.0)
    ref_grads = torch.autograd.grad((ref * w).sum(), (q, k, v))
    rel = lambda a, b: float((a.double() - b.double()).norm() / b.double().norm())  # noqa: E731
    assert ours.dtype == dtype
    assert rel(ours, ref) < tol
    for a, b in zip(grads, ref_grads):
        assert rel(a, b) < 5 * tol
