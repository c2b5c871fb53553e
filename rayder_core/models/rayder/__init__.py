"""The RayDer family (arXiv 2605.31535): `config` (ModelConfig, PRESETS), `tokens` (shared constants,
`CameraEstimate`), `layers`, `masks`, `model` (RayDer, the single network), `three_network` (the Configs A-C
ablation), `flops` (analytic FLOPs). Registered in `rayder_core.models`; `build` is the family's constructor."""

from __future__ import annotations

from torch import nn

from .config import ModelConfig
from .model import RayDer
from .three_network import ThreeNetworkRayDer


def build(cfg: ModelConfig) -> nn.Module:
    """The network of a RayDer-family config: `RayDer` (architecture 'single') or `ThreeNetworkRayDer`
    ('three_network', Configs A-C)."""
    if cfg.architecture == "three_network":
        return ThreeNetworkRayDer(cfg)
    return RayDer(cfg)
