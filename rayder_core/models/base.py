"""What a model family must provide to the toolkit (training, evaluation, FLOP counting, sweeps).

A family is registered in `rayder_core.models.FAMILIES` as a `Family` record. Its pieces:

* a **validated config** dataclass with `from_dict(mapping, source)` (errors name the key and the source file),
  `from_preset(name, **overrides)`, `to_dict()`, a `preset` field and a module-level `PRESETS` dict
  (paper sizes and tiny CPU presets);
* a **model** (`torch.nn.Module`) built from the config with:
  - `training_loss(frames (B, K, 3, H, W) in [-1, 1], generator) -> dict` with the keys of `RayDer.training_loss`:
    `loss` (scalar, differentiable), `mse`, `psnr` (dB, -10 log10(mse / 4)), `focal_mean` (detached scalars),
    `pred` (detached (B, Vt, 3, H, W)), `render` (the same, differentiable, for the perceptual term), `target`;
    all randomness from `generator`;
  - `predict_cameras(frames) -> object` with `.camera` (`rayder_core.geometry.Camera`, (B, V)) and
    `.camera_tokens` ((B, V, C), the pose probe's input), without gradients;
  - `predict_views(inputs (B, Vi, 3, H, W), cams_in (B, Vi), cams_target (B, Vt), ...) -> (B, Vt, 3, H, W)` in
    [-1, 1] units, without gradients;
  - `cfg` (its config) and `backend` (a short string recorded in the run state);
* **analytic FLOPs**: `count_flops(cfg, resolution, views) -> report` (a dataclass with at least `preset`,
  `params`, `forward_per_sample`, `train_per_sample` in FLOPs = 2 x MACs, training = 3 x forward) and
  `train_flops_per_step(cfg, resolution, views, batch)`; each family's tests check the network part against
  `torch.utils.flop_counter.FlopCounterMode`;
* a **parameter count** `param_count(cfg) -> int` (built on the meta device, no memory).
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from torch import nn


def config_from_preset(cls: type, presets: Mapping[str, Mapping[str, Any]], name: str, overrides: Mapping[str, Any],
                       label: str) -> Any:
    """The `from_preset` of every family's config: preset `name`'s values (+ `preset=name`), `overrides` on top,
    validated by `cls.from_dict`. `label` names the family in errors ("unknown {label} preset ...")."""
    if name not in presets:
        raise ValueError(f"unknown {label} preset {name!r}; choose one of {sorted(presets)}")
    values = {**presets[name], "preset": name, **overrides}
    return cls.from_dict(values, source=f"{label} preset {name!r} with overrides {sorted(overrides)}")


def config_values(cls: type, presets: Mapping[str, Mapping[str, Any]], d: Mapping[str, Any], source: str, *,
                  label: str = "model", extra_keys: frozenset[str] = frozenset()) -> dict[str, Any]:
    """The first half of every family config's `from_dict`: check that `d` is a mapping of known keys (the dataclass
    fields of `cls` and `extra_keys`; errors name `label`, the keys and `source`) and return a known preset's values
    (`d['preset']`) with `d` on top."""
    if not isinstance(d, Mapping):
        raise ValueError(f"{source}: model config must be a mapping, got {type(d).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - known - extra_keys)
    if unknown:
        raise ValueError(f"{source}: unknown {label} config key(s) {unknown}; known keys: {sorted(known | extra_keys)}")
    values: dict[str, Any] = {}
    if d.get("preset") in presets:
        values.update(presets[d["preset"]])
    values.update(d)
    return values


def config_with_values(cls: type, values: Mapping[str, Any]) -> Any:
    """An instance of the config dataclass `cls` with every field from `values` or its default (not yet validated:
    `from_dict` converts and validates)."""
    cfg = cls.__new__(cls)
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        setattr(cfg, f.name, values.get(f.name, default))
    return cfg


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (elements) of a model; works on the meta device."""
    return sum(p.numel() for p in model.parameters())


TRAINING_LOSS_KEYS = ("loss", "mse", "psnr", "focal_mean", "pred", "render", "target")


@dataclass(frozen=True)
class Family:
    """One registered model family (see the module docstring for the contract of each callable)."""

    name: str
    config_from_dict: Callable[[Mapping[str, Any], str], Any]
    config_type: type
    presets: Mapping[str, Mapping[str, Any]]
    build: Callable[[Any], nn.Module]
    count_flops: Callable[[Any, int, int], Any]
    train_flops_per_step: Callable[[Any, int, int, int], float]
    param_count: Callable[[Any], int]
    description: str = ""
    # `scale_width(cfg, width) -> cfg`: every width of the family scaled by width / cfg.width at fixed depth (the width
    # ladder's rule and muP's base model); None where the family has no such rule (muP then refuses to run).
    scale_width: Callable[[Any, int], Any] | None = None
    # `flops_cli(args, parser)`: print `rayder-flops`'s table of the family's presets (`args.presets` None: its
    # default list); parsed by `rayder_core.models.flops_cli`.
    flops_cli: Callable[[argparse.Namespace, argparse.ArgumentParser], None] | None = None
