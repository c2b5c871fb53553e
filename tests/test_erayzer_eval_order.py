"""Evaluation view order: E-RayZer's cameras are predicted on the scene's views sorted by frame index (official
evaluation), so the canonical (identity) view is the temporal middle, and the cameras come back in context-then-target
order; other families keep the given order."""

from __future__ import annotations

import torch

from rayder_core.evaluation.nvs import _predict_in_view_order, temporal_order
from rayder_core.geometry import Camera
from rayder_core.models.erayzer import ERayZer, ERayZerConfig


class _Recorder(torch.nn.Module):
    """Cameras whose t_x is the constant pixel value of each input view; records the order it was fed."""

    def __init__(self, order: str | None) -> None:
        super().__init__()
        if order is not None:
            self.eval_view_order = order
        self.fed: list[float] = []

    def predict_cameras(self, frames: torch.Tensor):
        vals = frames[0, :, 0, 0, 0]
        self.fed = vals.tolist()
        b, v = frames.shape[:2]
        t = torch.zeros(b, v, 3)
        t[..., 0] = frames[:, :, 0, 0, 0]
        cam = Camera(R=torch.eye(3).expand(b, v, 3, 3), t=t, f=torch.ones(b, v))
        return type("Est", (), {"camera": cam})()


def _views(values):
    return torch.tensor(values, dtype=torch.float32).view(1, -1, 1, 1, 1).expand(1, len(values), 3, 4, 4)


def test_temporal_models_get_sorted_views_and_cameras_back_in_order():
    context_index, target_index = (0, 40), (10, 20, 30)
    context, target = _views([0.0, 40.0]), _views([10.0, 20.0, 30.0])
    m = _Recorder("temporal")
    cams = _predict_in_view_order(m, context, target, context_index, target_index)
    assert m.fed == [0.0, 10.0, 20.0, 30.0, 40.0]  # sorted by frame index: the canonical view is frame 20
    assert cams.t[0, :, 0].tolist() == [0.0, 40.0, 10.0, 20.0, 30.0]  # back in context-then-target order
    plain = _Recorder(None)
    _predict_in_view_order(plain, context, target, context_index, target_index)
    assert plain.fed == [0.0, 40.0, 10.0, 20.0, 30.0]  # other families: the given order
    assert temporal_order((), (1, 2)) is None
    assert temporal_order((5, 1), (3,)) == [1, 2, 0]


def test_erayzer_canonical_view_is_the_temporal_middle_in_evaluation():
    torch.manual_seed(0)
    m = ERayZer(ERayZerConfig.from_preset("tiny-xs")).eval()
    context, target = torch.rand(1, 2, 3, 16, 16) * 2 - 1, torch.rand(1, 3, 3, 16, 16) * 2 - 1
    cams = _predict_in_view_order(m, context, target, (0, 96), (10, 53, 85))
    # sorted: frames 0, 10, 53, 85, 96 -> the middle (53) is target 1 = position 3 of cat([context, target])
    assert torch.equal(cams.R[0, 3], torch.eye(3)) and torch.equal(cams.t[0, 3], torch.zeros(3))
    assert cams.t[0, 2].abs().max() > 0  # the first target (canonical before issue 24) is not the identity
    direct = m.predict_cameras(torch.cat([context, target], 1)[:, [0, 2, 3, 4, 1]]).camera
    assert torch.allclose(cams.t[0, [0, 2, 3, 4, 1]], direct.t[0])
