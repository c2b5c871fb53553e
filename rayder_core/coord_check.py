"""Coordinate check of a parametrisation (as in the `mup` package's README): the RMS of every block's output over the
first training steps, for a ladder of widths. Under a correct muP each block's RMS stays the same order as the width
grows; under the standard parametrisation with one LR for every width, updates grow with width and so do the
activations that follow them (most visibly the zero-initialised readouts).

    rows = coord_check({"preset": "tiny-w16", ...}, widths=[16, 32, 64, 128], parametrization="mup", base_width=16,
                       lr=1e-2, steps=10)

Each row: width, step (0 = before the first update), block (qualified module name), rms. Used by
`benchmarks/coord_check.py` (table + figure) and the tests.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import Tensor, nn

from rayder_core import mup
from rayder_core.models import build_for_training, family_of, get_family, model_config

# Modules whose output is recorded: every item of a ModuleList (one transformer/hourglass layer each, at any depth)
# and every other child that holds no ModuleList (merges, heads, outputs); a child that holds ModuleLists (a
# sub-network such as E-RayZer's camera transformer) is walked into. Embeddings are inputs, not blocks.
_CONTAINERS = (nn.ModuleList, nn.ModuleDict)


def _holds_layers(module: nn.Module) -> bool:
    return any(isinstance(m, _CONTAINERS) for m in module.children())


def recorded_blocks(model: nn.Module, prefix: str = "") -> list[tuple[str, nn.Module]]:
    """(name, module) of the blocks a coordinate check records, in definition order."""
    blocks = []
    for name, child in model.named_children():
        full = f"{prefix}{name}"
        if isinstance(child, _CONTAINERS):
            for sub_name, sub in child.named_children():
                if isinstance(sub, _CONTAINERS) or _holds_layers(sub) and not isinstance(sub, nn.Sequential):
                    blocks += recorded_blocks(nn.ModuleDict({sub_name: sub}), f"{full}.")
                else:
                    blocks.append((f"{full}.{sub_name}", sub))
        elif _holds_layers(child):
            blocks += recorded_blocks(child, f"{full}.")
        elif not isinstance(child, nn.Embedding):
            blocks.append((full, child))
    return blocks


def _first_tensor(out: Any) -> Tensor | None:
    if isinstance(out, Tensor):
        return out
    if isinstance(out, (tuple, list)):
        return next((t for t in out if isinstance(t, Tensor)), None)
    return None


def smooth_frames(batch: int, views: int, resolution: int, seed: int) -> Tensor:
    """(batch, views, 3, res, res) images in [-1, 1]: bilinearly upsampled 4x4 noise (a smooth, learnable input)."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(batch * views, 3, 4, 4, generator=g) * 2 - 1
    up = nn.functional.interpolate(low, size=(resolution, resolution), mode="bilinear", align_corners=False)
    return up.view(batch, views, 3, resolution, resolution)


def coord_check(model: Mapping[str, Any], widths: list[int], parametrization: str, base_width: int, lr: float,
                steps: int = 10, batch: int = 2, views: int = 4, resolution: int = 16, seed: int = 0,
                weight_decay: float = 0.0, break_readout: bool = False) -> list[dict[str, Any]]:
    """Block-output RMS at steps 0..steps of AdamW training on one fixed batch (`smooth_frames`), per width.

    model: a model mapping (family, preset, architecture keys); each width is `scale_width(model, width)` of its
    family. parametrization: 'standard' (one LR) or 'mup' (base width `base_width`). break_readout: muP without the
    output role's multipliers (a deliberately broken muP, for tests). Runs on the CPU in fp32."""
    if parametrization not in mup.PARAMETRIZATIONS:
        raise ValueError(f"coord_check: parametrization must be one of {mup.PARAMETRIZATIONS}, got {parametrization!r}")
    family_cfg = model_config(dict(model), source="coord_check(model)")
    family = get_family(family_of(family_cfg))
    x = smooth_frames(batch, views, resolution, seed)
    rows: list[dict[str, Any]] = []
    for width in widths:
        scaled = family.scale_width(family_cfg, width).to_dict()
        mapping = {**scaled, "family": family.name, "parametrization": parametrization}
        if parametrization == "mup":
            mapping["mup_base_width"] = base_width
        net, rules = build_for_training(mapping, seed, source=f"coord_check width {width}")
        if rules is not None and break_readout:
            rules = _without_readout_multipliers(net, rules)
        params = net.parameters() if rules is None else mup.param_groups(net, rules, weight_decay)
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
        for group in opt.param_groups:
            group["lr"] = lr * group.get("lr_mult", 1.0)
        current: dict[str, float] = {}
        hooks = []
        for name, block in recorded_blocks(net):
            def hook(_m: nn.Module, _inp: Any, out: Any, name: str = name) -> None:
                t = _first_tensor(out)
                if t is not None:
                    current[name] = float(t.detach().float().pow(2).mean().sqrt())
            hooks.append(block.register_forward_hook(hook))
        gen = torch.Generator().manual_seed(seed)
        try:
            for step in range(steps + 1):
                current.clear()
                gen.manual_seed(seed)  # the same views order and dropout every step: only the weights change
                loss = net.training_loss(x, generator=gen)["loss"]
                rows += [{"width": width, "step": step, "block": b, "rms": v} for b, v in current.items()]
                if step == steps:
                    break
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        finally:
            for h in hooks:
                h.remove()
    return rows


@torch.no_grad()
def _without_readout_multipliers(net: nn.Module, rules: dict[str, mup.ParamRule]) -> dict[str, mup.ParamRule]:
    """Undo muP's output-role init and LR factors (a broken muP that the coordinate check must catch)."""
    params = dict(net.named_parameters())
    fixed = {}
    for name, rule in rules.items():
        if rule.role == "output":
            params[name].div_(rule.init_mult)
            rule = mup.ParamRule(rule.name, rule.shape, rule.base_shape, rule.role, rule.width_mult, 1.0, 1.0)
        fixed[name] = rule
    return fixed


def width_spread(rows: list[dict[str, Any]], last_step: int, first_step: int = 1) -> dict[str, float]:
    """Per block: max over widths / min over widths of the output RMS averaged over steps first_step..last_step (1 =
    the same at every width). Averaging a few steps keeps Adam's early oscillations (the sign of an update flips from
    one step to the next at a large LR) from posing as a width effect."""
    sums: dict[tuple[str, int], list[float]] = {}
    for r in rows:
        if first_step <= r["step"] <= last_step:
            sums.setdefault((r["block"], r["width"]), []).append(r["rms"])
    by_block: dict[str, list[float]] = {}
    for (block, _), values in sums.items():
        by_block.setdefault(block, []).append(sum(values) / len(values))
    return {b: max(v) / max(min(v), 1e-30) for b, v in by_block.items()}
