"""Validated configuration of the E-RayZer network (explicit 3D Gaussians, pairwise pose head).

`ERayZerConfig.from_preset("base")` is the paper's model (patch 16, 256^2, width 768, 12 heads, 8 + 8 layers of one
global and one frame attention block each; 243.76M parameters, within 0.91% of the 246M that RayDer's Table 5 lists for
E-RayZer*). `XS/S/B/L` are sweep sizes (B = base), `tiny-*` are CPU presets for the demo and the tests.
`ERayZerConfig.from_dict(d, source=...)` validates a user mapping (a YAML `model:` section) and names the offending
key and its source in every error.

Units: `near`/`far` bound the distance of a Gaussian centre along its unit pixel ray (scene units); `render_near` is
the camera-depth near plane of the rasteriser (scene units); `background` is the render background in [0, 1] RGB
(E-RayZer renders on white); `focal_bias` is the initial focal in E-RayZer's width-normalised units (fx / W).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

from rayder_core.models.base import config_from_preset

ROTATIONS = ("6d", "quat")
ATTENTION_ORDERS = ("global-frame", "frame-global")


@dataclass
class ERayZerConfig:
    """Architecture switches of E-RayZer.

    width/heads: transformer width and heads (head dim = width / heads, even and >= 32 for the 2D RoPE).
    camera_layers/scene_layers: layers of the camera and scene transformers; each layer is one global-attention
        block (all tokens of all views) and one frame-attention block (tokens of one view), `order` says which first.
    mlp_ratio: hidden size of every block's GELU MLP in units of width.
    registers: register tokens per view in the camera transformer (besides the one camera token).
    patch: patch size in pixels (images must be divisible by it).
    sh_degree: spherical-harmonics degree of the Gaussian colours (0..3).
    near/far: range of the centre's distance along the unit pixel ray, distance = sigmoid(t) * (far - near) + near.
    render_near: near plane of the rasteriser in camera depth (Gaussians closer are culled, as gsplat's near_plane).
    background: background colour in [0, 1] (1.0 = white, as the official renderer).
    focal_bias: initial focal fx / W (official 1.25); focal_detach_steps: the focal gets no gradient for this many
        training steps (official 200).
    rotation: '6d' (Zhou et al.) or 'quat' parametrisation of the relative rotations.
    n_ref: reference (input) views per training clip; None = half of the clip (5 of 10 in the paper).
    renderer: 'auto' (gsplat on CUDA when importable, else the exact dense PyTorch renderer), 'torch' or 'gsplat'.
    """

    preset: str = "custom"
    width: int = 768
    heads: int = 12
    camera_layers: int = 8
    scene_layers: int = 8
    mlp_ratio: float = 4.0
    registers: int = 4
    patch: int = 16
    sh_degree: int = 3
    near: float = 0.0
    far: float = 8.0
    render_near: float = 0.2
    background: float = 1.0
    focal_bias: float = 1.25
    focal_detach_steps: int = 200
    rotation: str = "6d"
    order: str = "global-frame"
    n_ref: int | None = None
    renderer: str = "auto"

    def __post_init__(self) -> None:
        self.validate()

    @property
    def head_dim(self) -> int:
        return self.width // self.heads

    @property
    def downsample(self) -> int:
        """Pixels per token side (= patch)."""
        return self.patch

    @property
    def gaussian_channels(self) -> int:
        """Decoder outputs per pixel: 3 (ray distance, averaged) + 3 (sh+1)^2 colour + 3 scale + 4 quat + 1 opacity."""
        return 3 + 3 * (self.sh_degree + 1) ** 2 + 3 + 4 + 1

    @property
    def mlp_hidden(self) -> int:
        return int(round(self.mlp_ratio * self.width))

    def validate(self, source: str = "ERayZerConfig") -> None:
        def bad(key: str, why: str) -> ValueError:
            return ValueError(f"{source}: invalid model config key '{key}' = {getattr(self, key)!r}: {why}")

        def is_int(v: Any) -> bool:
            return isinstance(v, int) and not isinstance(v, bool)

        def is_num(v: Any) -> bool:
            return isinstance(v, (int, float)) and not isinstance(v, bool)

        for key in ("width", "heads", "camera_layers", "scene_layers", "patch"):
            if not is_int(getattr(self, key)) or getattr(self, key) <= 0:
                raise bad(key, "must be a positive integer")
        for key in ("registers", "focal_detach_steps", "sh_degree"):
            if not is_int(getattr(self, key)) or getattr(self, key) < 0:
                raise bad(key, "must be a non-negative integer")
        if not isinstance(self.preset, str):
            raise bad("preset", "must be a string")
        if self.width % self.heads:
            raise bad("heads", f"must divide width {self.width}")
        if self.head_dim % 2 or self.head_dim < 32:
            raise bad("heads", f"head dim width/heads = {self.head_dim} must be even and >= 32 (2D RoPE)")
        if self.sh_degree > 3:
            raise bad("sh_degree", "must be 0, 1, 2 or 3")
        for key in ("mlp_ratio", "near", "far", "render_near", "background", "focal_bias"):
            if not is_num(getattr(self, key)):
                raise bad(key, "must be a number")
        if self.mlp_ratio <= 0:
            raise bad("mlp_ratio", "must be positive")
        if not 0 <= self.near < self.far:
            raise bad("far", f"must exceed near = {self.near} >= 0")
        if self.render_near <= 0:
            raise bad("render_near", "must be positive (scene units)")
        if not 0.0 <= self.background <= 1.0:
            raise bad("background", "must lie in [0, 1]")
        if self.focal_bias <= 0:
            raise bad("focal_bias", "must be positive (fx / W)")
        if self.rotation not in ROTATIONS:
            raise bad("rotation", f"must be one of {ROTATIONS}")
        if self.order not in ATTENTION_ORDERS:
            raise bad("order", f"must be one of {ATTENTION_ORDERS}")
        if self.n_ref is not None and (not is_int(self.n_ref) or self.n_ref < 1):
            raise bad("n_ref", "must be a positive integer or null")
        if self.renderer not in ("auto", "torch", "gsplat"):
            raise bad("renderer", "must be 'auto', 'torch' or 'gsplat'")

    # ------------------------------------------------------------------------------------------------------------
    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> "ERayZerConfig":
        """A preset (see `PRESETS`) with optional field overrides."""
        return config_from_preset(cls, PRESETS, name, overrides, label="E-RayZer")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], source: str = "<dict>") -> "ERayZerConfig":
        """Build from a mapping; a known 'preset' pulls in that preset's values and other keys override them.
        A 'family' key (the registry's selector) is accepted and ignored. Raises ValueError naming key and source."""
        if not isinstance(d, Mapping):
            raise ValueError(f"{source}: model config must be a mapping, got {type(d).__name__}")
        d = {k: v for k, v in d.items() if k != "family"}
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"{source}: unknown E-RayZer model config key(s) {unknown}; known keys: {sorted(known)}")
        values: dict[str, Any] = {}
        if d.get("preset") in PRESETS:
            values.update(PRESETS[d["preset"]])
        values.update(d)
        cfg = cls.__new__(cls)
        for f in dataclasses.fields(cls):
            setattr(cfg, f.name, values.get(f.name, f.default))
        for key in ("mlp_ratio", "near", "far", "render_near", "background", "focal_bias"):
            v = getattr(cfg, key)
            if isinstance(v, int) and not isinstance(v, bool):
                setattr(cfg, key, float(v))
        cfg.validate(source)
        return cfg

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _size(width: int, heads: int, layers: int, **extra: Any) -> dict[str, Any]:
    return dict(width=width, heads=heads, camera_layers=layers, scene_layers=layers, **extra)


# base: the paper's model. XS/S/B/L: sweep sizes (B = base, depth per transformer 8 as in the paper; L is 24 layers
# of width 1024). tiny-*: CPU presets (patch 4, SH degree 1, 32^2 images): 0.26 / 1.04 / 1.74 / 3.49 GFLOP of network
# training compute per 4-view sample at 32^2 (`rayder-flops --family erayzer --resolution 32 --views 4`).
_TINY = dict(patch=4, sh_degree=1, registers=2, mlp_ratio=2.0, focal_detach_steps=20)
PRESETS: dict[str, dict[str, Any]] = {
    "base": _size(768, 12, 8),
    "XS": _size(384, 6, 8),
    "S": _size(512, 8, 8),
    "B": _size(768, 12, 8),
    "L": _size(1024, 16, 12),
    "tiny-xs": _size(64, 2, 1, **_TINY),
    "tiny-s": _size(96, 3, 2, **_TINY),
    "tiny-b": _size(128, 4, 2, **_TINY),
    "tiny-l": _size(192, 6, 2, **_TINY),
}
# Named by shape (2 camera + 2 scene layers x width) like RayDer's tiny-2x128 / tiny-2x192, so a grid over both
# families (`sweeps/compare.yaml`) can list the same sizes: aliases of tiny-b / tiny-l.
PRESETS["tiny-2x128"] = dict(PRESETS["tiny-b"])
PRESETS["tiny-2x192"] = dict(PRESETS["tiny-l"])
