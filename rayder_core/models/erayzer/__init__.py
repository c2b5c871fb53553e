"""E-RayZer model family: explicit pixel-aligned 3D Gaussians, pairwise pose head, visual-overlap curriculum."""

from .config import PRESETS, ERayZerConfig
from .model import ERayZer

__all__ = ["PRESETS", "ERayZerConfig", "ERayZer"]
