"""Validated configuration of the RayDer network (one backbone, camera estimation + novel view synthesis).

`ModelConfig.from_preset("B")` gives the paper's sizes (Table 2); `tiny-*` presets are small CPU models for the
scaling demo. `ModelConfig.from_dict(d, source=...)` validates a user-supplied mapping (e.g. a YAML section) and names
the offending key and its source in every error.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

from rayder_core.models.base import config_from_preset, config_values, config_with_values

D_HEAD = 64  # default head dimension of every attention layer (the paper's); `head_dim` overrides it
AUTOREGRESSION_MODES = ("random", "ordered", "none", "parallel", "per_target")
ATTENTION_BACKENDS = ("auto", "natten", "sdpa")
ARCHITECTURES = ("single", "three_network")


@dataclass
class ModelConfig:
    """Architecture and ablation switches.

    width/depth/heads: backbone (global + per-frame attention) width, number of layers, heads (= width / head_dim).
    head_dim: channels per attention head in every attention layer (64 in the paper; 16 in the width ladder
        `tiny-w*`, so that the smallest widths still have whole heads).
    local_widths/local_depths: the two neighbourhood-attention levels of the hourglass (per side: down and up).
    patch: first patch-merge size in pixels; the two later merges are 2x2, so the total downsample is 4 * patch.
    kernel: neighbourhood-attention kernel (odd); shrunk to the largest odd size <= the token grid side when smaller.
    d_state: dynamic-state size; dynamic_state switches the state head and the state input of target registers.
    state_dropout: probability of zeroing a target's state in training (per sample and view).
    autoregression: 'random' (random view order, training mask B.2), 'ordered' (given order, B.2),
        'none' (first half of the views are inputs, the rest targets, inference mask B.1),
        'parallel' (Config E: each step a random partition into K - n_targets inputs and n_targets targets, inputs
        attend to each other, targets to themselves and the inputs, all targets in one sequence),
        'per_target' (Config D: the same random partition, each target rendered in its own sequence of the inputs
        plus that target under full attention, i.e. decoder-only without parallel targets).
    n_targets: targets per clip of 'parallel' / 'per_target' (Table B.2: 2 of 8 views); unused by other modes.
    local_layers: with False the hourglass keeps its merges/splits but has no neighbourhood-attention layers.
    attention_backend: 'auto' (natten + flex attention on CUDA, exact masked SDPA on CPU), 'natten' or 'sdpa'.
    architecture: 'single' (the one network M, Configs D-H and the presets) or 'three_network' (Configs A-C:
        separate E_cam, E_scene, D_render of `depth` layers each, `three_network.py`; needs local_layers false and
        autoregression 'per_target': n_targets targets per clip, each rendered from z in its own sequence).
    """

    preset: str = "custom"
    width: int = 384
    depth: int = 12
    heads: int = 6
    head_dim: int = D_HEAD
    local_widths: tuple[int, int] = (128, 256)
    local_depths: tuple[int, int] = (2, 2)
    patch: int = 4
    kernel: int = 7
    d_state: int = 256
    dynamic_state: bool = True
    state_dropout: float = 0.5
    autoregression: str = "random"
    n_targets: int = 2
    local_layers: bool = True
    attention_backend: str = "auto"
    architecture: str = "single"

    def __post_init__(self) -> None:
        self.local_widths = tuple(self.local_widths)  # YAML/JSON give lists
        self.local_depths = tuple(self.local_depths)
        self.validate()

    # ------------------------------------------------------------------------------------------------------------
    @property
    def d_cond(self) -> int:
        """Size of the role-conditioning vector fed to every adaptive RMSNorm (2 x width, as the reference)."""
        return 2 * self.width

    @property
    def downsample(self) -> int:
        """Pixels per backbone token side (patch x 2 x 2 = 16 by default)."""
        return self.patch * 4

    def validate(self, source: str = "ModelConfig") -> None:
        def bad(key: str, why: str) -> ValueError:
            return ValueError(f"{source}: invalid model config key '{key}' = {getattr(self, key)!r}: {why}")

        for key in ("width", "depth", "heads", "head_dim", "patch", "kernel", "d_state", "n_targets"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise bad(key, "must be a positive integer")
        if not isinstance(self.preset, str):
            raise bad("preset", "must be a string")
        if self.head_dim % 8:
            raise bad("head_dim", "must be a multiple of 8 (axial RoPE rotates half the head in 4-channel groups)")
        if self.width % self.head_dim:
            raise bad("width", f"must be a multiple of the head dimension {self.head_dim}")
        if self.heads != self.width // self.head_dim:
            raise bad("heads", f"must equal width / head_dim = {self.width // self.head_dim}")
        for key in ("local_widths", "local_depths"):
            value = getattr(self, key)
            if len(value) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value):
                raise bad(key, "must be two positive integers")
        if any(w % self.head_dim for w in self.local_widths):
            raise bad("local_widths", f"each must be a multiple of the head dimension {self.head_dim}")
        if self.kernel % 2 == 0:
            raise bad("kernel", "must be odd")
        for key in ("dynamic_state", "local_layers"):
            if not isinstance(getattr(self, key), bool):
                raise bad(key, "must be true or false")
        if isinstance(self.state_dropout, bool) or not isinstance(self.state_dropout, (int, float)) or not (
            0.0 <= self.state_dropout <= 1.0
        ):
            raise bad("state_dropout", "must be a number in [0, 1]")
        if self.autoregression not in AUTOREGRESSION_MODES:
            raise bad("autoregression", f"must be one of {AUTOREGRESSION_MODES}")
        if self.attention_backend not in ATTENTION_BACKENDS:
            raise bad("attention_backend", f"must be one of {ATTENTION_BACKENDS}")
        if self.architecture not in ARCHITECTURES:
            raise bad("architecture", f"must be one of {ARCHITECTURES}")
        if self.architecture == "three_network":
            if self.local_layers:
                raise bad("local_layers", "architecture 'three_network' (Configs A-C) has no local layers: set false")
            if self.autoregression != "per_target":
                raise bad("autoregression", "architecture 'three_network' renders each of the n_targets targets "
                          "from z in its own sequence: set 'per_target'")

    # ------------------------------------------------------------------------------------------------------------
    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> "ModelConfig":
        """A preset ('XS','S','B','L','tiny-xs','tiny-s','tiny-b','tiny-l') with optional field overrides."""
        return config_from_preset(cls, PRESETS, name, overrides, label="model")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], source: str = "<dict>") -> "ModelConfig":
        """Build from a mapping. A 'preset' key alone pulls in that preset's values; other keys override them.

        Raises ValueError naming the key and `source` for unknown keys and bad values.
        """
        if isinstance(d, Mapping) and "family" in d:  # the registry's selector; this config is the 'rayder' family
            if d["family"] != "rayder":
                raise ValueError(f"{source}: model config key 'family' = {d['family']!r} is not RayDer's; build it "
                                 "through rayder_core.models.model_config")
            d = {k: v for k, v in d.items() if k != "family"}
        cfg = config_with_values(cls, config_values(cls, PRESETS, d, source))
        for key in ("local_widths", "local_depths"):
            value = getattr(cfg, key)
            if not isinstance(value, (list, tuple)):
                raise ValueError(f"{source}: invalid model config key '{key}' = {value!r}: must be a list of two ints")
            setattr(cfg, key, tuple(value))
        if isinstance(cfg.state_dropout, int) and not isinstance(cfg.state_dropout, bool):
            cfg.state_dropout = float(cfg.state_dropout)
        cfg.validate(source)
        return cfg

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["local_widths"] = list(self.local_widths)
        d["local_depths"] = list(self.local_depths)
        return d


def _size(width: int, depth: int, head_dim: int = D_HEAD, **extra: Any) -> dict[str, Any]:
    heads = width // head_dim
    return dict(width=width, depth=depth, heads=heads, **({"head_dim": head_dim} if head_dim != D_HEAD else {}),
                **extra)


# The width ladder: one multiplier scales every width at fixed depth (backbone, both hourglass levels, dynamic state,
# and through d_cond = 2 x width the conditioning), head dimension fixed at 16 (heads = width / 16). Parameters and
# training FLOPs per step grow ~4x per doubling (`rayder-flops --presets tiny-w16,...`), so the size axis of a study
# on this ladder is a real compute axis; `model.parametrization: mup` makes one base LR serve every rung. Width 48
# (3 heads) sits between 32 and 64: the demo's ladder is w32 / w48 / w64 (width 16, one head, takes off late or
# memorises in some seeds: docs/benchmarks.md).
LADDER_HEAD_DIM = 16
LADDER_WIDTHS = (16, 32, 48, 64, 128, 256)
LADDER_DEPTH = 2


def _ladder(width: int) -> dict[str, Any]:
    return _size(width, LADDER_DEPTH, head_dim=LADDER_HEAD_DIM, local_widths=(width, width), local_depths=(1, 1),
                 d_state=width // 2)


def scale_width(cfg: ModelConfig, width: int) -> ModelConfig:
    """`cfg` with every width multiplied by width / cfg.width (backbone, hourglass levels, d_state, heads; depth,
    head dimension and everything else unchanged): the rule of the width ladder, and the base model of muP.

    Raises ValueError when a scaled width is not a whole multiple of the head dimension."""
    factor = width / cfg.width

    def scaled(value: int, key: str, multiple: int) -> int:
        new = value * factor
        if abs(new - round(new)) > 1e-9 or round(new) % multiple or round(new) <= 0:
            raise ValueError(f"scale_width: {key} = {value} x {width}/{cfg.width} = {new:g} is not a positive "
                             f"multiple of {multiple} (head_dim {cfg.head_dim})")
        return int(round(new))

    values = cfg.to_dict()
    values.update(width=scaled(cfg.width, "width", cfg.head_dim), heads=width // cfg.head_dim,
                  local_widths=[scaled(w, "local_widths", cfg.head_dim) for w in cfg.local_widths],
                  d_state=scaled(cfg.d_state, "d_state", 1))
    return ModelConfig.from_dict(values, source=f"scale_width({cfg.preset!r}, {width})")


# Table 2 of the paper (layers, width, heads); parameters 59M / 145M / 422M / 743M.
# Tiny presets: CPU-sized models for the scaling demo (32^2, 8 views, batch ~4). The hourglass (one 64-wide
# neighbourhood layer per level and side) is shared; the backbone grows in width and depth so that each preset costs
# >= 1.8x the training FLOPs of the previous one at 32^2 (4.3 / 8.2 / 15.5 / 31.3 GFLOP per step of 4 clips; see
# `rayder-flops --presets tiny-xs,tiny-s,tiny-b,tiny-l --resolution 32`).
_TINY_LOCAL = dict(local_widths=(64, 64), local_depths=(1, 1), d_state=32)
PRESETS: dict[str, dict[str, Any]] = {
    "XS": _size(384, 12),
    "S": _size(512, 18),
    "B": _size(768, 24),
    "L": _size(1024, 24),
    "tiny-xs": _size(64, 2, **_TINY_LOCAL),
    "tiny-s": _size(128, 5, **_TINY_LOCAL),
    "tiny-b": _size(192, 6, **_TINY_LOCAL),
    "tiny-l": _size(256, 8, **_TINY_LOCAL),
    # Shallow and wide (depth 2 like tiny-xs): the embedded demo's larger sizes. At 32^2 a deeper backbone learns
    # more slowly per step in a CPU budget; width adds capacity at a smaller cost in step time.
    "tiny-2x128": _size(128, 2, **_TINY_LOCAL),
    "tiny-2x192": _size(192, 2, **_TINY_LOCAL),
    "tiny-2x256": _size(256, 2, **_TINY_LOCAL),
    **{f"tiny-w{w}": _ladder(w) for w in LADDER_WIDTHS},
}
