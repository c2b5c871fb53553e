"""E-RayZer's perceptual loss: the official VGG19 feature distance (MatConvNet ImageNet VGG19 weights).

Network: VGG19's 16 3x3 convolutions with ReLU, 2x2 *average* pooling between stages (the official module replaces
max pooling by average pooling), taps after relu1_2, relu2_2, relu3_2, relu4_2 and relu5_2. Inputs are images in
[0, 1], scaled to [0, 255] and centred by the ImageNet RGB means (123.68, 116.779, 103.939). The distance of a
prediction p and a target t is

    ( |p - t|_1 + |f1(p) - f1(t)|_1 / 2.6 + |f2| / 4.8 + |f3| / 3.7 + |f4| / 5.6 + |f5| * 10 / 1.5 ) / 255

with |.|_1 the mean absolute difference over all elements (batch, channels, pixels) of each tap.

Weights: no download. `load_vgg19(path)` reads the MatConvNet file `imagenet-vgg-verydeep-19.mat` (scipy) or a torch
state dict with this module's parameter names (`conv1.weight` ... `conv16.bias`, loaded with
`torch.load(weights_only=True)`; `save_state_dict` writes one). `find_weights(path)` looks at the given path, then
at the ERAYZER_VGG19_WEIGHTS environment variable, and raises FileNotFoundError naming where it looked.
"""

from __future__ import annotations

import os
from pathlib import Path

import scipy.io
import torch
import torch.nn.functional as F
from torch import Tensor, nn

WEIGHTS_ENV = "ERAYZER_VGG19_WEIGHTS"
MATCONVNET_FILE = "imagenet-vgg-verydeep-19.mat"
IMAGENET_MEAN_255 = (123.68, 116.779, 103.939)
VGG19_CHANNELS = (64, 64, 128, 128, 256, 256, 256, 256, 512, 512, 512, 512, 512, 512, 512, 512)
POOL_AFTER = (2, 4, 8, 12)  # 1-based conv index after which a 2x2 average pool follows
TAPS = (2, 4, 6, 10, 14)    # relu1_2, relu2_2, relu3_2, relu4_2, relu5_2 (1-based conv index)
TAP_DIVISORS = (2.6, 4.8, 3.7, 5.6, 1.5 / 10.0)
MATCONVNET_CONV_LAYERS = (0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34)  # indices in the .mat 'layers'


class VGG19Features(nn.Module):
    """The convolutions up to relu5_2 (conv1 ... conv14 are used; conv15/16 are kept so a full state dict loads)."""

    def __init__(self) -> None:
        super().__init__()
        cin = 3
        for i, cout in enumerate(VGG19_CHANNELS, start=1):
            setattr(self, f"conv{i}", nn.Conv2d(cin, cout, 3, padding=1))
            cin = cout

    def forward(self, x: Tensor) -> list[Tensor]:
        """x (N, 3, H, W) already scaled and centred -> the five tapped activations."""
        taps = []
        for i in range(1, TAPS[-1] + 1):
            x = F.relu(getattr(self, f"conv{i}")(x))
            if i in TAPS:
                taps.append(x)
            if i in POOL_AFTER:
                x = F.avg_pool2d(x, 2)
        return taps


def find_weights(path: str | None = None) -> Path:
    """The VGG19 weights file: `path`, else $ERAYZER_VGG19_WEIGHTS; FileNotFoundError naming both otherwise."""
    tried = []
    for candidate, label in ((path, "perceptual_weights"), (os.environ.get(WEIGHTS_ENV), f"${WEIGHTS_ENV}")):
        if candidate:
            if Path(candidate).is_file():
                return Path(candidate)
            tried.append(f"{label} = {candidate} (not a file)")
        else:
            tried.append(f"{label} not set")
    raise FileNotFoundError(f"VGG19 weights for the perceptual loss not found ({'; '.join(tried)}); the official "
                            f"file is {MATCONVNET_FILE} (MatConvNet); nothing is downloaded")


def _state_from_matconvnet(path: Path) -> dict[str, Tensor]:
    layers = scipy.io.loadmat(str(path))["layers"][0]
    state = {}
    for i, (idx, cout) in enumerate(zip(MATCONVNET_CONV_LAYERS, VGG19_CHANNELS), start=1):
        weights = layers[idx][0][0][2][0]
        state[f"conv{i}.weight"] = torch.from_numpy(weights[0]).permute(3, 2, 0, 1).float()  # HWIO -> OIHW
        state[f"conv{i}.bias"] = torch.from_numpy(weights[1]).reshape(cout).float()
    return state


def load_vgg19(path: str | os.PathLike) -> VGG19Features:
    """VGG19Features with the weights at `path` (.mat: MatConvNet; anything else: a torch state dict), frozen, eval."""
    path = Path(path)
    state = _state_from_matconvnet(path) if path.suffix == ".mat" else torch.load(path, map_location="cpu",
                                                                                  weights_only=True)
    net = VGG19Features()
    net.load_state_dict(state)
    net.eval()
    for q in net.parameters():
        q.requires_grad_(False)
    return net


def save_state_dict(net: VGG19Features, path: str | os.PathLike) -> None:
    """Write `net`'s weights as a torch state dict that `load_vgg19` reads."""
    torch.save(net.state_dict(), path)


def perceptual_distance(net: VGG19Features, pred01: Tensor, target01: Tensor) -> Tensor:
    """The official perceptual distance (module docstring) of images (..., 3, H, W) in [0, 1]; a scalar."""
    mean = pred01.new_tensor(IMAGENET_MEAN_255).view(3, 1, 1)
    p = pred01.reshape(-1, *pred01.shape[-3:]) * 255.0 - mean
    t = target01.reshape(-1, *target01.shape[-3:]) * 255.0 - mean
    total = (p - t).abs().mean()
    for fp, ft, div in zip(net(p), net(t), TAP_DIVISORS):
        total = total + (fp - ft).abs().mean() / div
    return total / 255.0
