"""Model-family registry: every consumer (training, evaluation, FLOP counting, sweeps) goes through it.

`model.family: rayder | erayzer` in a run or grid YAML selects the family; a model mapping without the key is RayDer,
so old configs keep working. Each family is a subpackage shaped the same way (`config`, `layers`, `model`, `flops`, and the family's own
parts): RayDer in `rayder_core.models.rayder`, E-RayZer in `rayder_core.models.erayzer`. The attention kernels they
use (`attention`) and the family contract (`base`) sit beside them; `flops_cli` is `rayder-flops`.

    from rayder_core.models import build_model, model_config, train_flops_per_step
    cfg = model_config({"family": "erayzer", "preset": "tiny-xs"}, source="run.yaml: model")
    model = build_model(cfg)
    flops = train_flops_per_step(cfg, resolution=32, views=4, batch=2)
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn

from rayder_core import mup
from rayder_core.family import DEFAULT_FAMILY
from rayder_core.mup import PARAMETRIZATIONS

from . import erayzer, rayder
from .base import TRAINING_LOSS_KEYS, Family
from .erayzer import config as erayzer_config, flops as erayzer_flops
from .rayder import config as rayder_config, flops as rayder_flops

# Keys of a model mapping that choose how the network is parametrised for training, not its architecture: the
# registry takes them out before the family's config sees the mapping (`parametrization_of`).
PARAMETRIZATION_KEYS = ("parametrization", "mup_base_width")


def _rayder_family() -> Family:
    return Family(
        name="rayder", config_from_dict=rayder_config.ModelConfig.from_dict, config_type=rayder_config.ModelConfig,
        presets=rayder_config.PRESETS, build=rayder.build, count_flops=rayder_flops.count_flops,
        train_flops_per_step=rayder_flops.train_flops_per_step, param_count=rayder_flops._param_count,
        scale_width=rayder_config.scale_width, flops_cli=rayder_flops.cli,
        description="RayDer: one hourglass transformer, implicit rendering, per-view absolute cameras",
    )


def _erayzer_family() -> Family:
    return Family(
        name="erayzer", config_from_dict=erayzer_config.ERayZerConfig.from_dict,
        config_type=erayzer_config.ERayZerConfig, presets=erayzer_config.PRESETS, build=erayzer.ERayZer,
        count_flops=erayzer_flops.count_flops, train_flops_per_step=erayzer_flops.train_flops_per_step,
        param_count=erayzer_flops.param_count, scale_width=erayzer_config.scale_width, flops_cli=erayzer_flops.cli,
        description="E-RayZer: camera + scene transformers, pixel-aligned 3D Gaussians, splatting",
    )


_FACTORIES = {"rayder": _rayder_family, "erayzer": _erayzer_family}
FAMILIES: tuple[str, ...] = tuple(_FACTORIES)
_cache: dict[str, Family] = {}


def get_family(name: str) -> Family:
    """The registered family `name` (ValueError listing the known families otherwise)."""
    if name not in _FACTORIES:
        raise ValueError(f"unknown model family {name!r}; choose one of {list(FAMILIES)}")
    if name not in _cache:
        _cache[name] = _FACTORIES[name]()
    return _cache[name]


def family_of(model: Mapping[str, Any] | Any, source: str = "<model config>") -> str:
    """Family of a model mapping (its 'family' key, default 'rayder') or of a config object / model."""
    if isinstance(model, Mapping):
        fam = model.get("family", DEFAULT_FAMILY)
        if fam not in _FACTORIES:
            raise ValueError(f"{source}: invalid model config key 'family' = {fam!r}: must be one of {list(FAMILIES)}")
        return fam
    cfg = getattr(model, "cfg", model)
    for name in FAMILIES:
        if isinstance(cfg, get_family(name).config_type):
            return name
    raise TypeError(f"{type(model).__name__} is not a config or model of a registered family {list(FAMILIES)}")


def parametrization_of(model: Mapping[str, Any], source: str = "<model config>") -> tuple[str, int | None]:
    """(`model.parametrization`, `model.mup_base_width`) of a model mapping: ('standard', None) by default; 'mup'
    needs a positive integer base width and a family with a width rule. Errors name the key and `source`."""
    name = model.get("parametrization", "standard")
    if name not in PARAMETRIZATIONS:
        raise ValueError(f"{source}: invalid model config key 'parametrization' = {name!r}: must be one of "
                         f"{list(PARAMETRIZATIONS)}")
    base = model.get("mup_base_width")
    if name == "standard":
        if base is not None:
            raise ValueError(f"{source}: model config key 'mup_base_width' = {base!r} is only used with "
                             "parametrization: mup")
        return name, None
    if not isinstance(base, int) or isinstance(base, bool) or base <= 0:
        raise ValueError(f"{source}: invalid model config key 'mup_base_width' = {base!r}: parametrization 'mup' "
                         "needs the base width (a positive integer; the width at which muP equals standard)")
    family = get_family(family_of(model, source))
    if family.scale_width is None:
        raise ValueError(f"{source}: parametrization 'mup' needs a width rule, which family {family.name!r} has not")
    return name, base


def model_config(model: Mapping[str, Any] | Any, source: str = "<model config>") -> Any:
    """Validated config of a model mapping (e.g. a YAML `model:` section); config objects pass through. The
    parametrisation keys (`PARAMETRIZATION_KEYS`) are validated here and are not part of the family's config."""
    if not isinstance(model, Mapping):
        family_of(model)
        return model
    _, base_width = parametrization_of(model, source)
    arch = {k: v for k, v in model.items() if k not in PARAMETRIZATION_KEYS}
    cfg = get_family(family_of(model, source)).config_from_dict(arch, source)
    if base_width is not None:
        get_family(family_of(cfg)).scale_width(cfg, base_width)  # the base model must exist (ValueError otherwise)
    return cfg


def build_model(model: Mapping[str, Any] | Any, source: str = "<model config>") -> nn.Module:
    """The network of a model mapping or config object (randomly initialised, on the default device)."""
    cfg = model_config(model, source)
    return get_family(family_of(cfg)).build(cfg)


def build_for_training(model: Mapping[str, Any], seed: int, source: str = "<model config>"
                       ) -> tuple[nn.Module, dict[str, mup.ParamRule] | None]:
    """The network of a model mapping initialised from `seed` under its `parametrization`, and its muP rules (None
    under the standard parametrisation, whose network is exactly `build_model`'s after `torch.manual_seed(seed)`).
    Under muP the hidden and output weights are rescaled from the base-width model (`rayder_core.mup`); give the
    optimizer `mup.param_groups(model, rules, weight_decay)`. The model is on the CPU."""
    cfg = model_config(model, source)
    name, base_width = parametrization_of(model, source)
    torch.manual_seed(seed)
    net = build_model(cfg)
    if name == "standard":
        return net, None
    family = get_family(family_of(cfg))
    base = mup.build_base(family.build, family.scale_width, cfg, base_width, seed)
    rules = mup.classify(net, base)
    mup.apply_init(net, base, rules)
    return net, rules


def count_flops(cfg: Any, resolution: int, views: int) -> Any:
    """The family's FLOP report of one training sample (network FLOPs; see each family's flops module)."""
    cfg = model_config(cfg)
    return get_family(family_of(cfg)).count_flops(cfg, resolution, views)


def train_flops_per_step(cfg: Any, resolution: int, views: int, batch: int) -> float:
    """Training FLOPs of one optimizer step of `batch` clips (the compute axis of the scaling laws)."""
    cfg = model_config(cfg)
    return float(get_family(family_of(cfg)).train_flops_per_step(cfg, resolution, views, batch))


def param_count(cfg: Any) -> int:
    """Parameter count of a config (or mapping), built on the meta device."""
    cfg = model_config(cfg)
    return int(get_family(family_of(cfg)).param_count(cfg))


def presets(family: str = DEFAULT_FAMILY) -> dict[str, dict[str, Any]]:
    """The family's presets (name -> field values)."""
    return {k: dict(v) for k, v in get_family(family).presets.items()}


__all__ = [
    "DEFAULT_FAMILY", "FAMILIES", "Family", "PARAMETRIZATION_KEYS", "TRAINING_LOSS_KEYS", "build_for_training",
    "build_model", "count_flops", "family_of",
    "get_family", "model_config", "param_count", "parametrization_of", "presets", "train_flops_per_step",
]
