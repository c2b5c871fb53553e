"""Validated configuration of the E-RayZer network (explicit 3D Gaussians, pairwise pose head).

`ERayZerConfig.from_preset("base")` is the paper's model as the official code builds it (patch 16, 256^2, width 768,
head dim 64 = 12 heads, 8 + 8 layers of one frame and one global attention block each; 245.83M parameters, the 246M
that RayDer's Table 5 lists for E-RayZer*). `XS/S/B/L` are sweep sizes (B = base), `tiny-*` are CPU presets for the
demo and the tests, `tiny-w16 ... tiny-w256` the width ladder (every width scaled by one factor at tiny-xs's depth,
head dim 16; `scale_width`). `ERayZerConfig.from_dict(d, source=...)` validates a user mapping (a YAML `model:`
section) and names the offending key and its source in every error.

Units: `near`/`far` bound the distance of a Gaussian centre along its unit pixel ray (scene units); `render_near` is
the camera-depth near plane of the rasteriser (scene units); `background` is the render background in [0, 1] RGB
(E-RayZer renders on white); `focal_bias` is the additive focal offset in E-RayZer's normalised units (fx / W = fy / H).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

from rayder_core.models.base import config_from_preset, config_values, config_with_values

ROTATIONS = ("6d", "quat")
ATTENTION_ORDERS = ("frame-global", "global-frame")
REF_SPLITS = ("bracketed", "random")
_FLOAT_KEYS = ("mlp_ratio", "near", "far", "render_near", "background", "focal_bias", "perceptual_weight")


@dataclass
class ERayZerConfig:
    """Architecture switches of E-RayZer.

    width: transformer width; every other width of the family derives from it (MLP hidden = mlp_ratio x width,
        position-embedding MLPs, fusion MLP, pose and focal heads width -> width).
    head_dim: attention head dimension; heads = width / head_dim (`heads`). Stored configs that give `heads`
        instead are read as head_dim = width / heads (the meaning they had).
    camera_layers/scene_layers: layers of the camera and scene transformers; each layer is one frame-attention block
        (tokens of one view) and one global-attention block (all tokens of all views), `order` says which first
        (official: frame first).
    mlp_ratio: hidden size of every block's GELU MLP in units of width.
    registers: register tokens per view in the camera transformer (besides the one camera token).
    patch: patch size in pixels (images must be divisible by it).
    sh_degree: spherical-harmonics degree of the Gaussian colours (0..3).
    near/far: range of the centre's distance along the unit pixel ray, distance = sigmoid(t) * (far - near) + near.
    render_near: near plane of the rasteriser in camera depth (Gaussians closer are culled, as gsplat's near_plane).
    background: background colour in [0, 1] (1.0 = white, as the official renderer).
    focal_bias: additive offset of the focal head (official 1.25): fx / W = fy / H = head(token) + focal_bias.
    focal_detach_steps: the focal gets no gradient for this many training steps (official 200).
    rotation: '6d' (Zhou et al.) or 'quat' parametrisation of the relative rotations.
    n_ref: reference (input) views per training clip; None = half of the clip, at least 2 (5 of 10 in the paper).
    ref_split: 'bracketed' (official `random_split`: the first and last view of the clip are always references, the
        other references drawn at random, so every target lies between references) or 'random' (all drawn at random).
    perceptual_weight: weight of the official VGG19 perceptual term (0.2); 0 = off. Needs the VGG19 weights
        (`perceptual_weights` or the ERAYZER_VGG19_WEIGHTS environment variable); without them the term is recorded
        missing with its reason (`ERayZer.perceptual_status`), never silently dropped.
    perceptual_weights: path of the VGG19 weights (MatConvNet `imagenet-vgg-verydeep-19.mat`, or a torch state dict
        with the same layout saved by `perceptual.save_state_dict`), or None.
    renderer: 'auto' (gsplat on CUDA when importable, else the exact dense PyTorch renderer), 'torch' or 'gsplat'.
    """

    preset: str = "custom"
    width: int = 768
    head_dim: int = 64
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
    order: str = "frame-global"
    n_ref: int | None = None
    ref_split: str = "bracketed"
    perceptual_weight: float = 0.2
    perceptual_weights: str | None = None
    renderer: str = "auto"

    def __post_init__(self) -> None:
        self.validate()

    @property
    def heads(self) -> int:
        """Attention heads = width / head_dim."""
        return self.width // self.head_dim

    @property
    def gaussian_channels(self) -> int:
        """Decoder outputs per pixel: 3 (ray distance, averaged) + 3 (sh+1)^2 colour + 3 scale + 4 quat + 1 opacity."""
        return 3 + 3 * (self.sh_degree + 1) ** 2 + 3 + 4 + 1

    @property
    def mlp_hidden(self) -> int:
        return int(round(self.mlp_ratio * self.width))

    def n_ref_for(self, views: int) -> int:
        """Reference views of a `views`-view clip: `n_ref`, else views // 2 (at least 2 with the bracketed split
        on clips of 3 or more views: the first and last view)."""
        if self.n_ref is not None:
            return self.n_ref
        if self.ref_split == "bracketed" and views >= 3:
            return max(2, views // 2)
        return views // 2

    def validate(self, source: str = "ERayZerConfig") -> None:
        def bad(key: str, why: str) -> ValueError:
            return ValueError(f"{source}: invalid model config key '{key}' = {getattr(self, key)!r}: {why}")

        def is_int(v: Any) -> bool:
            return isinstance(v, int) and not isinstance(v, bool)

        def is_num(v: Any) -> bool:
            return isinstance(v, (int, float)) and not isinstance(v, bool)

        for key in ("width", "head_dim", "camera_layers", "scene_layers", "patch"):
            if not is_int(getattr(self, key)) or getattr(self, key) <= 0:
                raise bad(key, "must be a positive integer")
        for key in ("registers", "focal_detach_steps", "sh_degree"):
            if not is_int(getattr(self, key)) or getattr(self, key) < 0:
                raise bad(key, "must be a non-negative integer")
        if not isinstance(self.preset, str):
            raise bad("preset", "must be a string")
        if self.width % 4:
            raise bad("width", "must be a multiple of 4 (2D sine-cosine position embedding: sin and cos per axis)")
        if self.width % self.head_dim:
            raise bad("head_dim", f"must divide width {self.width} (heads = width / head_dim)")
        if self.sh_degree > 3:
            raise bad("sh_degree", "must be 0, 1, 2 or 3")
        for key in _FLOAT_KEYS:
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
        if self.perceptual_weight < 0:
            raise bad("perceptual_weight", "must be >= 0")
        if self.perceptual_weights is not None and not isinstance(self.perceptual_weights, str):
            raise bad("perceptual_weights", "must be a path (string) or null")
        if self.rotation not in ROTATIONS:
            raise bad("rotation", f"must be one of {ROTATIONS}")
        if self.order not in ATTENTION_ORDERS:
            raise bad("order", f"must be one of {ATTENTION_ORDERS}")
        if self.ref_split not in REF_SPLITS:
            raise bad("ref_split", f"must be one of {REF_SPLITS}")
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
        A 'family' key (the registry's selector) is accepted and ignored. A 'heads' key (configs stored before
        `head_dim` existed) sets head_dim = width / heads; given together with 'head_dim' the two must agree.
        Raises ValueError naming key and source."""
        if isinstance(d, Mapping):
            d = {k: v for k, v in d.items() if k != "family"}
        values = config_values(cls, PRESETS, d, source, label="E-RayZer model", extra_keys=frozenset({"heads"}))
        heads = values.pop("heads", None)
        if heads is not None:
            width = values.get("width", cls.width)
            if isinstance(heads, bool) or not isinstance(heads, int) or heads <= 0:
                raise ValueError(f"{source}: invalid model config key 'heads' = {heads!r}: must be a positive integer")
            if not isinstance(width, int) or width % heads:
                raise ValueError(f"{source}: invalid model config key 'heads' = {heads!r}: must divide width "
                                 f"{width!r}")
            if "head_dim" in d and d["head_dim"] != width // heads:
                raise ValueError(f"{source}: model config keys 'heads' = {heads} and 'head_dim' = {d['head_dim']!r} "
                                 f"disagree (width {width} / heads {heads} = {width // heads})")
            values["head_dim"] = width // heads
        cfg = config_with_values(cls, values)
        for key in _FLOAT_KEYS:
            v = getattr(cfg, key)
            if isinstance(v, int) and not isinstance(v, bool):
                setattr(cfg, key, float(v))
        cfg.validate(source)
        return cfg

    def to_dict(self) -> dict[str, Any]:
        """Every field (not the derived `heads`); `from_dict(to_dict())` rebuilds the same config."""
        return dataclasses.asdict(self)


def scale_width(cfg: ERayZerConfig, width: int) -> ERayZerConfig:
    """`cfg` with every width multiplied by width / cfg.width at fixed depth and head dimension: the backbone width,
    and with it the MLP hidden size (mlp_ratio x width), the position-embedding, fusion, pose and focal MLPs (all
    width -> width). Fixed by the task, not scaled: the patch inputs (3 p^2 RGB, 6 p^2 Plücker), the pose output
    (9 = 6-D rotation + translation), the focal output (1) and the Gaussian decoder's output (p^2 x 59 at SH 3).
    The rule of the width ladder (`tiny-w*`) and the base model of muP. Raises ValueError when the new width is not
    a positive multiple of head_dim (and of 4, the position embedding)."""
    if isinstance(width, bool) or not isinstance(width, int) or width <= 0 or width % cfg.head_dim or width % 4:
        raise ValueError(f"scale_width: width {width!r} must be a positive multiple of head_dim {cfg.head_dim} and "
                         f"of 4 ({cfg.preset!r} has width {cfg.width})")
    values = cfg.to_dict()
    values["width"] = width
    return ERayZerConfig.from_dict(values, source=f"scale_width({cfg.preset!r}, {width})")


def _size(width: int, head_dim: int, layers: int, **extra: Any) -> dict[str, Any]:
    return dict(width=width, head_dim=head_dim, camera_layers=layers, scene_layers=layers, **extra)


# base: the paper's model. XS/S/B/L: sweep sizes (B = base, depth per transformer 8 as in the paper; L is 24 layers
# of width 1024). tiny-*: CPU presets (patch 4, SH degree 1, 32^2 images; head dim 32 as before `head_dim` existed).
# Network training FLOPs per 4-view sample at 32^2: `rayder-flops --family erayzer --resolution 32 --views 4`.
_TINY = dict(patch=4, sh_degree=1, registers=2, mlp_ratio=2.0, focal_detach_steps=20)
PRESETS: dict[str, dict[str, Any]] = {
    "base": _size(768, 64, 8),
    "XS": _size(384, 64, 8),
    "S": _size(512, 64, 8),
    "B": _size(768, 64, 8),
    "L": _size(1024, 64, 12),
    "tiny-xs": _size(64, 32, 1, **_TINY),
    "tiny-s": _size(96, 32, 2, **_TINY),
    "tiny-b": _size(128, 32, 2, **_TINY),
    "tiny-l": _size(192, 32, 2, **_TINY),
}
# Named by shape (2 camera + 2 scene layers x width) like RayDer's tiny-2x128 / tiny-2x192, so a grid over both
# families (`sweeps/compare.yaml`) can list the same sizes: aliases of tiny-b / tiny-l.
PRESETS["tiny-2x128"] = dict(PRESETS["tiny-b"])
PRESETS["tiny-2x192"] = dict(PRESETS["tiny-l"])
# Width ladder: tiny-xs's depth (1 camera + 1 scene layer) and tiny settings, head dim 16, every width scaled by one
# factor (`scale_width`): width 16 / 32 / 64 / 128 / 256 = 1 / 2 / 4 / 8 / 16 heads.
LADDER_WIDTHS = (16, 32, 64, 128, 256)
for _w in LADDER_WIDTHS:
    PRESETS[f"tiny-w{_w}"] = _size(_w, 16, 1, **_TINY)
