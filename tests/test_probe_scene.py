"""Per-scene pose probe (Appendix B.2.3): paper alignment written out, the frame split, a perfect token -> pose map
gives R@10 = 100 % on held-out frames, tokens without pose information do not, batched probes = separate probes."""
from __future__ import annotations

import pytest
import torch

from rayder_core import probe as P
from rayder_core.geometry import Camera, se3_log, so3_exp
from test_probe import FRAMES, synthetic_cameras


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def test_paper_alignment_written_out():
    cams = synthetic_cameras(3, seed=4)
    R, t = P.align_at_middle(cams, "paper")
    m = FRAMES // 2
    for s in range(3):
        for i in (0, 5, m, 23):
            torch.testing.assert_close(R[s, i], cams.R[s, i] @ cams.R[s, m].T)
            torch.testing.assert_close(t[s, i], cams.t[s, i] - cams.t[s, m])
    Rn, tn = P.probe_targets(cams, "paper")
    assert torch.allclose(Rn, R) and torch.linalg.vector_norm(tn, dim=-1).amax(-1).sub(1).abs().max() < 1e-5
    # the two alignments differ (R_i R_m^T vs R_m^T R_i) but agree on the rotation angle to the middle frame
    Rc, _ = P.align_at_middle(cams, "camera")
    assert not torch.allclose(Rc, R)
    ang = lambda X: torch.arccos(((X.diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2).clamp(-1, 1))  # noqa: E731
    torch.testing.assert_close(ang(Rc), ang(R))
    with pytest.raises(ValueError, match="unknown pose alignment"):
        P.align_at_middle(cams, "world")


def test_split_states_held_out_frames():
    train, test = P.per_scene_split(24)
    assert test.tolist() == list(range(1, 24, 2)) and train.tolist() == list(range(0, 24, 2))
    assert 12 in train.tolist() and not set(train.tolist()) & set(test.tolist())


def perfect_tokens(cams: Camera, width: int = 32, seed: int = 0) -> torch.Tensor:
    """Tokens that hold the aligned pose exactly: a fixed random linear embedding of its twist."""
    R, t = P.probe_targets(cams, "paper")
    xi = se3_log(R, t).float()  # (S, T, 6)
    W = torch.randn(6, width, generator=torch.Generator().manual_seed(seed))
    return xi @ W


def test_perfect_map_gives_full_accuracy_on_held_out_frames():
    cams = synthetic_cameras(4, seed=1)
    metrics = P.per_scene_probe(perfect_tokens(cams), cams, iters=1500, lr=3e-3, seed=0)
    print(metrics)
    assert metrics["R@10"] == 100.0 and metrics["rot_err_deg"] < 3.0 and metrics["t@0.1"] >= 90.0


def test_uninformative_tokens_fail():
    cams = synthetic_cameras(4, seed=2)
    noise = torch.randn(4, FRAMES, 32, generator=torch.Generator().manual_seed(0))
    metrics = P.per_scene_probe(noise, cams, iters=1500, lr=3e-3, seed=0)
    print(metrics)
    assert metrics["rot_err_deg"] > 8.0 and metrics["R@10"] < 80.0


def test_batched_probes_equal_separate_probes():
    """The batched MLP is S separate PoseProbes: same initialisation, same outputs; and a scene's result does not
    depend on the other scenes trained with it (sum of per-scene losses, elementwise AdamW)."""
    torch.manual_seed(0)
    batched = P._BatchedProbe(2, 32)
    torch.manual_seed(0)
    singles = [P.PoseProbe(32) for _ in range(2)]
    for s in range(2):
        torch.testing.assert_close(batched.w1[s], singles[s].mlp[0].weight.T)
    x = torch.randn(2, 5, 32)
    Rb, tb = batched(x)
    for s in range(2):  # the MLP runs in float32 (baddbmm and addmm sum in different orders), its pose in float64:
        Rs, ts = singles[s](x[s])  # float32 tolerances, not float64 ones
        torch.testing.assert_close(Rb[s], Rs, rtol=1.3e-6, atol=1e-5)
        torch.testing.assert_close(tb[s], ts, rtol=1.3e-6, atol=1e-5)
    cams = synthetic_cameras(3, seed=3)
    tok = perfect_tokens(cams)
    alone = P.per_scene_probe(tok[:1], cams[:1], iters=40, lr=1e-3, seed=0, by_scene=True)
    trio = P.per_scene_probe(tok, cams, iters=40, lr=1e-3, seed=0, by_scene=True)
    assert len(trio) == 3
    for key in ("rot_err_deg", "trans_err"):
        assert trio[0][key] == pytest.approx(alone[0][key], rel=1e-5)
    assert trio[1]["rot_err_deg"] != pytest.approx(trio[0]["rot_err_deg"], rel=1e-3)
