"""Maximal update parametrisation (muP, Yang et al., Tensor Programs V, arXiv 2203.03466) for any model family.

`model.parametrization: mup` (with `model.mup_base_width`, the width at which muP equals the standard
parametrisation) makes the best learning rate of the base width the best of every width of a ladder that scales all
widths by one multiplier at fixed depth (`scale_width` of each family). It is written out explicitly ("abc" form for
Adam, Table 8 of TP5) instead of replacing modules, so the forward pass of every family is unchanged:

Each parameter is compared with the same-named parameter of the family's model built at the base width; a dimension
whose size differs is an "infinite" (width-scaled) dimension, and m is the ratio of the parameter's fan-in to the
base's (in_features for a linear layer).

=========  =======================================================  ================  =========================
role       which parameters                                         Adam LR           init (std)
=========  =======================================================  ================  =========================
hidden     two width-scaled dims (linear weights width -> width)     lr / m            base std / sqrt(m) (fan-in)
output     linear weights width -> fixed size (readouts, heads)     lr / m            base std / m (0 stays 0)
vector     one width-scaled dim otherwise (input/embedding          lr                unchanged
           weights, biases, norm gains, per-head scales, tokens)
fixed      no width-scaled dim (scalars, fixed-size layers)         lr                unchanged
=========  =======================================================  ================  =========================

"base std" is the standard deviation of the same parameter in the base model (built with the same seed), so the rule
holds whatever the family's own init is; zero-initialised weights stay zero. Weight decay is AdamW's decoupled
lr x wd, so it scales with each group's LR (as `mup.MuAdamW`). Attention logits need no 1/d rule here: the head
dimension is fixed along a ladder (heads = width / head_dim), and RayDer's cosine attention normalises q and k.
With m = 1 everything equals the standard parametrisation. Rules per parameter group: docs/training-eval.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

PARAMETRIZATIONS = ("standard", "mup")
ROLES = ("hidden", "output", "vector", "fixed")


@dataclass(frozen=True)
class ParamRule:
    """How muP treats one parameter: its role, width multiplier m (fan-in ratio to the base), and the factors applied
    to the base LR and to the base model's init std."""

    name: str
    shape: tuple[int, ...]
    base_shape: tuple[int, ...]
    role: str
    width_mult: float
    lr_mult: float
    init_mult: float


def _linear_weights(model: nn.Module) -> set[str]:
    return {f"{prefix}.weight" if prefix else "weight" for prefix, mod in model.named_modules()
            if isinstance(mod, nn.Linear)}


def _fan_in(shape: tuple[int, ...]) -> int:
    """in_features of a (out, in, ...) weight; the size of a vector; 1 for a scalar."""
    return int(math.prod(shape[1:])) if len(shape) > 1 else int(math.prod(shape))


def classify(model: nn.Module, base: nn.Module) -> dict[str, ParamRule]:
    """The muP rule of every parameter of `model`, found by comparing its shape with `base`'s (the same family at the
    base width; may live on the meta device). Raises ValueError when the two models' parameter names differ or a
    parameter changes its number of dimensions."""
    base_shapes = {n: tuple(p.shape) for n, p in base.named_parameters()}
    shapes = {n: tuple(p.shape) for n, p in model.named_parameters()}
    if set(shapes) != set(base_shapes):
        missing, extra = sorted(set(base_shapes) - set(shapes)), sorted(set(shapes) - set(base_shapes))
        raise ValueError(f"muP base model has other parameters than the model: only in base {missing[:5]}, only in "
                         f"model {extra[:5]}")
    linear = _linear_weights(model)
    rules = {}
    for name, shape in shapes.items():
        base_shape = base_shapes[name]
        if len(shape) != len(base_shape):
            raise ValueError(f"muP: parameter {name} has shape {shape} but {base_shape} in the base model")
        infinite = [i for i, (a, b) in enumerate(zip(shape, base_shape)) if a != b]
        m = _fan_in(shape) / _fan_in(base_shape)
        if len(infinite) >= 2:
            role, lr_mult, init_mult = "hidden", 1 / m, 1 / math.sqrt(m)
        elif name in linear and infinite == [1]:  # in_features scales, out_features fixed: a readout
            role, lr_mult, init_mult = "output", 1 / m, 1 / m
        elif infinite:
            role, lr_mult, init_mult = "vector", 1.0, 1.0
        else:
            role, lr_mult, init_mult = "fixed", 1.0, 1.0
        rules[name] = ParamRule(name, shape, base_shape, role, m, lr_mult, init_mult)
    return rules


@torch.no_grad()
def apply_init(model: nn.Module, base: nn.Module, rules: dict[str, ParamRule]) -> None:
    """Rescale `model`'s freshly initialised hidden and output weights in place so that each has the standard deviation
    of the base model's parameter times its rule's `init_mult` (zero and constant tensors are left as they are).
    `base` must hold real (not meta) weights initialised like the model's."""
    base_params = dict(base.named_parameters())
    for name, p in model.named_parameters():
        rule = rules[name]
        if rule.role not in ("hidden", "output") or p.numel() < 2:
            continue
        std = p.float().std()
        if std == 0:
            continue
        target = base_params[name].float().std() * rule.init_mult
        p.mul_((target / std).to(p.dtype))


def param_groups(model: nn.Module, rules: dict[str, ParamRule], weight_decay: float) -> list[dict[str, Any]]:
    """AdamW parameter groups, one per distinct LR multiplier, each with its `lr_mult` (kept in the optimizer's
    state dict, so a resumed run keeps them) and the roles it holds."""
    groups: dict[float, dict[str, Any]] = {}
    for name, p in model.named_parameters():
        rule = rules[name]
        key = round(rule.lr_mult, 12)
        group = groups.setdefault(key, {"params": [], "lr_mult": rule.lr_mult, "roles": [],
                                        "weight_decay": weight_decay})
        group["params"].append(p)
        if rule.role not in group["roles"]:
            group["roles"].append(rule.role)
    return [groups[k] for k in sorted(groups, reverse=True)]


def build_base(build: Callable[[Any], nn.Module], scale_width: Callable[[Any, int], Any], cfg: Any, base_width: int,
               seed: int) -> nn.Module:
    """The family's model at `base_width` (every width scaled by the family's rule), initialised from `seed` on the
    CPU; the torch RNG state of the caller is left unchanged."""
    state = torch.get_rng_state()
    try:
        torch.manual_seed(seed)
        return build(scale_width(cfg, base_width))
    finally:
        torch.set_rng_state(state)


def summary(rules: dict[str, ParamRule]) -> dict[str, Any]:
    """Per role: parameter count and the LR/init multipliers seen (run state and the coordinate-check table)."""
    out: dict[str, Any] = {}
    for rule in rules.values():
        row = out.setdefault(rule.role, {"tensors": 0, "lr_mult": set(), "init_mult": set()})
        row["tensors"] += 1
        row["lr_mult"].add(round(rule.lr_mult, 6))
        row["init_mult"].add(round(rule.init_mult, 6))
    return {role: {"tensors": r["tensors"], "lr_mult": sorted(r["lr_mult"]), "init_mult": sorted(r["init_mult"])}
            for role, r in out.items()}
