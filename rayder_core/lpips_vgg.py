"""LPIPS (VGG variant, v0.1) in plain torch, for machines where the `lpips` package cannot be imported.

The `lpips` package imports torchvision at import time, and torchvision's PyPI wheels do not import against a CPU
build of torch. This module rebuilds the same network without torchvision:

- the VGG16 `features` convolution stack, with torchvision's layer indices, so that a torchvision-format checkpoint
  (`vgg16-397923af.pth`, state-dict keys `features.<index>.weight|bias`) loads directly;
- taps after relu1_2, relu2_2, relu3_3, relu4_3 and relu5_3 (features indices 3, 8, 15, 22, 29);
- lpips's input scaling (shift/scale per RGB channel applied to [-1,1] images), unit-length normalisation of every
  feature vector over channels, the squared difference, one non-negative 1x1 linear layer per tap (weights from
  lpips's `weights/v0.1/vgg.pth`) and a spatial average, summed over the five taps.

Inputs to `LpipsVgg.forward` are images in [0,1] (lpips's `normalize=True` semantics). Weight files are loaded with
`torch.load(..., weights_only=True, map_location="cpu")`; nothing is downloaded.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import os
from pathlib import Path

import torch
from torch import nn

VGG16_CHECKPOINT_NAME = "vgg16-397923af.pth"
"""File name of torchvision's ImageNet VGG16 weights in the torch hub cache."""
LPIPS_WEIGHTS_ENV = "RAYDER_LPIPS_WEIGHTS"
"""Environment variable that may point at lpips's linear-layer weights (`.../lpips/weights/v0.1/vgg.pth`)."""
LPIPS_WEIGHTS_IN_PACKAGE = ("weights", "v0.1", "vgg.pth")

# VGG16 "D" configuration: output channels of each 3x3 conv, "M" = 2x2 max pool (stride 2).
VGG16_LAYOUT: tuple[int | str, ...] = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M",
                                       512, 512, 512, "M", 512, 512, 512, "M")
TAP_INDICES = (3, 8, 15, 22, 29)
"""Indices in torchvision's `vgg16().features` of relu1_2, relu2_2, relu3_3, relu4_3, relu5_3."""
TAP_CHANNELS = (64, 128, 256, 512, 512)
# lpips v0.1 input scaling, applied to [-1,1] images: (x - shift) / scale per RGB channel.
LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)
NORMALIZE_EPS = 1e-10


def vgg16_features() -> nn.Sequential:
    """The VGG16 `features` stack up to relu5_3 (index 29), numbered exactly like torchvision's."""
    layers: list[nn.Module] = []
    in_channels = 3
    for item in VGG16_LAYOUT:
        if item == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(in_channels, int(item), kernel_size=3, padding=1), nn.ReLU(inplace=False)]
            in_channels = int(item)
    return nn.Sequential(*layers[: TAP_INDICES[-1] + 1])


class LpipsVgg(nn.Module):
    """LPIPS distance (VGG16, v0.1). `forward(a01, b01)` takes (N,3,H,W) images in [0,1] and returns (N,)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = vgg16_features()
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, kernel_size=1, bias=False) for c in TAP_CHANNELS)
        self.register_buffer("shift", torch.tensor(LPIPS_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(LPIPS_SCALE).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def taps(self, x01: torch.Tensor) -> list[torch.Tensor]:
        """Feature maps at the five taps for (N,3,H,W) images in [0,1], after lpips's input scaling."""
        x = ((2.0 * x01 - 1.0) - self.shift) / self.scale
        out = []
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in TAP_INDICES:
                out.append(x)
        return out

    def forward(self, a01: torch.Tensor, b01: torch.Tensor) -> torch.Tensor:
        total = a01.new_zeros(a01.shape[0])
        for fa, fb, lin in zip(self.taps(a01), self.taps(b01), self.lins):
            na = fa / (fa.square().sum(dim=1, keepdim=True).sqrt() + NORMALIZE_EPS)
            nb = fb / (fb.square().sum(dim=1, keepdim=True).sqrt() + NORMALIZE_EPS)
            total = total + lin((na - nb).square()).mean(dim=(1, 2, 3))
        return total


def load_lpips_vgg(vgg_checkpoint: str | os.PathLike, lpips_weights: str | os.PathLike) -> LpipsVgg:
    """Build `LpipsVgg` from a torchvision-format VGG16 checkpoint and lpips's `vgg.pth` linear weights.

    Raises `ValueError` naming the file and key when either file lacks a tensor or has a wrong shape.
    """
    model = LpipsVgg()
    vgg_state = torch.load(vgg_checkpoint, map_location="cpu", weights_only=True)
    features_state = {k.removeprefix("features."): v for k, v in vgg_state.items() if k.startswith("features.")}
    _load_exact(model.features, features_state, vgg_checkpoint)
    lin_state = torch.load(lpips_weights, map_location="cpu", weights_only=True)
    for i, lin in enumerate(model.lins):
        # lpips stores each linear layer as Sequential(Dropout, Conv2d): key "lin<i>.model.1.weight".
        _load_exact(lin, {"weight": lin_state.get(f"lin{i}.model.1.weight")}, lpips_weights, f"lin{i}.model.1.")
    return model


def _load_exact(module: nn.Module, state: dict, path: str | os.PathLike, prefix: str = "features.") -> None:
    for name, param in module.state_dict().items():
        value = state.get(name)
        if value is None:
            raise ValueError(f"{path}: missing tensor {prefix}{name}")
        if tuple(value.shape) != tuple(param.shape):
            raise ValueError(f"{path}: {prefix}{name} has shape {tuple(value.shape)}, expected {tuple(param.shape)}")
    module.load_state_dict({name: state[name] for name in module.state_dict()})


def vgg16_checkpoint_path() -> Path:
    """Where torchvision keeps its ImageNet VGG16 weights: `torch.hub.get_dir()/checkpoints/vgg16-397923af.pth`
    (`$TORCH_HOME/hub/checkpoints/...`, default `~/.cache/torch/hub/checkpoints/...`)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / VGG16_CHECKPOINT_NAME


def lpips_weights_candidates() -> list[Path]:
    """Places searched, in order, for lpips's linear weights: `$RAYDER_LPIPS_WEIGHTS`, then the installed `lpips`
    package directory (located without importing it, since its import needs torchvision)."""
    candidates: list[Path] = []
    if os.environ.get(LPIPS_WEIGHTS_ENV):
        candidates.append(Path(os.environ[LPIPS_WEIGHTS_ENV]))
    try:
        spec = importlib.util.find_spec("lpips")
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            candidates.append(Path(location).joinpath(*LPIPS_WEIGHTS_IN_PACKAGE))
    try:
        distribution = importlib.metadata.distribution("lpips")
        wanted = "/".join(("lpips",) + LPIPS_WEIGHTS_IN_PACKAGE)
        for file in distribution.files or []:
            if str(file).replace("\\", "/") == wanted:
                candidates.append(Path(distribution.locate_file(file)))
    except importlib.metadata.PackageNotFoundError:
        pass
    return list(dict.fromkeys(candidates))

