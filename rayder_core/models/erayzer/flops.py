"""Analytic FLOPs of E-RayZer training: network matmuls and rasterisation, both on the compute axis.

Conventions (as RayDer's flops module, the `exact` convention of the results store): FLOPs = 2 x multiply-accumulates
of every matmul (linear layers, q k^T, attn v); elementwise work (LayerNorms, RMS QK-norm, GELU/SiLU, softmax,
Plücker rays, Gaussian activations) is not counted; training = 3 x forward. One training sample = one clip of `views`
frames: camera transformer on all views (patch embedding, the position MLP on the token grid once, blocks, pose head
on the V - 1 non-canonical pairs, focal head on the canonical token), scene transformer on `n_ref` reference views
(their image tokens are the camera transformer's, reused: not counted twice; Plücker embedding, its position MLP,
fusion MLP, blocks, decoder). Attention is dense (no masks), so FlopCounterMode counts the same network FLOPs
(tests/test_erayzer_model.py checks this on CPU with the math SDPA backend).

Rasterisation (`raster_forward`), an analytic estimate of the dense renderer's work per target view: per (camera,
Gaussian) PROJECT_FLOPS = 250 for the EWA projection and the SH colour, per (pixel, Gaussian) pair
RASTER_PAIR_FLOPS = 26 (quadratic form 12 as a matmul, exp/clamp/threshold 4, transmittance 2, weight 2, colour 6).
Gaussians = n_ref H W (one per reference pixel); pairs = targets x H W x Gaussians. It is counted in the forward and
(x 3) in the training FLOPs: at 16^2 with 4 views (2 references) it is 7.1 MFLOP per forward, the same for every
model size, against 19.7 MFLOP of tiny-xs's network before issue 24 - leaving it out flattered the smallest models.
gsplat evaluates only the pairs inside each Gaussian's 3-sigma tile footprint, so on a GPU this is an upper bound.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass

import torch

from rayder_core.models.base import count_parameters

from .pose_network import rotation_size
from .config import PRESETS, ERayZerConfig
from .model import ERayZer

TRAIN_FACTOR = 3
PROJECT_FLOPS = 250
RASTER_PAIR_FLOPS = 26


@dataclass
class ERayZerFlopReport:
    """FLOPs of one training sample. camera_forward / scene_forward / network_forward: network (matmul) FLOPs;
    raster_forward: analytic rasterisation estimate of one forward; forward_per_sample = network + raster;
    train_per_sample = 3 x forward_per_sample (the compute axis, `exact` convention)."""

    family: str
    preset: str
    params: int
    resolution: int
    views: int
    n_ref: int
    camera_forward: float
    scene_forward: float
    network_forward: float
    raster_forward: float
    forward_per_sample: float
    train_per_sample: float


def _block(tokens: float, seq: float, cfg: ERayZerConfig) -> float:
    """One block over `tokens` tokens in sequences of length `seq`: qkv, proj, MLP linears + attention."""
    c, h = cfg.width, cfg.mlp_hidden
    linears = 2.0 * tokens * (c * 3 * c + c * c + 2 * c * h)
    attention = 4.0 * tokens * seq * c
    return linears + attention


def _transformer(views: int, per_view: int, layers: int, cfg: ERayZerConfig) -> float:
    total = 0.0
    for _ in range(layers):
        total += _block(views * per_view, per_view, cfg)  # frame
        total += _block(views * per_view, views * per_view, cfg)  # global
    return total


def n_ref_for(cfg: ERayZerConfig, views: int) -> int:
    return cfg.n_ref_for(views)


def forward_flops(cfg: ERayZerConfig, resolution: int | tuple[int, int], views: int) -> dict[str, float]:
    """Forward FLOPs of one sample: {'camera', 'scene', 'raster'} (see module docstring)."""
    h, w = (resolution, resolution) if isinstance(resolution, int) else resolution
    p, c = cfg.patch, cfg.width
    if h % p or w % p:
        raise ValueError(f"resolution {h}x{w} must be divisible by the patch size {p}")
    if views < 2:
        raise ValueError(f"need at least 2 views per clip, got {views}")
    n = (h // p) * (w // p)
    position_mlp = 2.0 * n * 2 * c * c  # the sine-cosine table through Linear(c, c), SiLU, Linear(c, c), once
    special = 1 + cfg.registers
    camera = 2.0 * views * n * 3 * p * p * c + position_mlp
    camera += _transformer(views, n + special, cfg.camera_layers, cfg)
    camera += 2.0 * (views - 1) * (2 * c * c + c * (rotation_size(cfg.rotation) + 3))  # pairwise head
    camera += 2.0 * (c * c + c)  # focal head on the canonical token, per sample
    n_ref = n_ref_for(cfg, views)
    scene = 2.0 * n_ref * n * (6 * p * p * c + 2 * c * c + c * c) + position_mlp
    scene += _transformer(n_ref, n, cfg.scene_layers, cfg)
    scene += 2.0 * n_ref * n * c * p * p * cfg.gaussian_channels
    gaussians = n_ref * h * w
    targets = views - n_ref
    raster = targets * (gaussians * PROJECT_FLOPS + h * w * gaussians * RASTER_PAIR_FLOPS)
    return {"camera": camera, "scene": scene, "raster": float(raster)}


def param_count(cfg: ERayZerConfig) -> int:
    with torch.device("meta"):
        return count_parameters(ERayZer(cfg))


def count_flops(cfg: ERayZerConfig, resolution: int, views: int) -> ERayZerFlopReport:
    f = forward_flops(cfg, resolution, views)
    network = f["camera"] + f["scene"]
    forward = network + f["raster"]
    return ERayZerFlopReport(
        family="erayzer", preset=cfg.preset, params=param_count(cfg), resolution=resolution, views=views,
        n_ref=n_ref_for(cfg, views), camera_forward=f["camera"], scene_forward=f["scene"], network_forward=network,
        raster_forward=f["raster"], forward_per_sample=forward, train_per_sample=TRAIN_FACTOR * forward,
    )


def train_flops_per_step(cfg: ERayZerConfig, resolution: int, views: int, batch: int) -> float:
    """Training FLOPs of one optimizer step of `batch` clips (3 x (network + rasterisation) forward)."""
    return batch * count_flops(cfg, resolution, views).train_per_sample


def cli(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """`rayder-flops --family erayzer [--presets ...] [--resolution R] [--views V] [--json]`
    (`rayder_core.models.flops_cli` parses): every E-RayZer preset unless `--presets` names some."""
    names = list(PRESETS) if args.presets is None else [n.strip() for n in args.presets.split(",") if n.strip()]
    unknown = [n for n in names if n not in PRESETS]
    if unknown:
        parser.error(f"unknown E-RayZer preset(s) {unknown}; choose from {list(PRESETS)}")
    rows = []
    for name in names:
        cfg = ERayZerConfig.from_preset(name)
        if args.resolution % cfg.patch:
            continue  # e.g. the patch-16 presets at 32^2: listed only where the resolution fits
        try:
            rows.append(count_flops(cfg, args.resolution, args.views))
        except ValueError as e:
            parser.error(str(e))
    if not rows:
        parser.error(f"no E-RayZer preset of {names} fits resolution {args.resolution} "
                     "(must be divisible by the patch)")
    if args.json:
        out = []
        for r in rows:
            d = asdict(r)
            d["train_tflop_per_step_bs1"] = r.train_per_sample / 1e12
            d["convention"] = "exact (network matmuls + rasterisation estimate, 3 x forward)"
            out.append(d)
        print(json.dumps(out, indent=2))
        return
    head = (f"{'preset':>8} {'params':>9} {'res':>5} {'V':>2} {'ref':>3} {'cam fwd':>9} {'scene fwd':>9} "
            f"{'train/sample':>13} {'raster fwd':>10}")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r.preset:>8} {r.params / 1e6:8.2f}M {r.resolution:5d} {r.views:2d} {r.n_ref:3d} "
            f"{r.camera_forward / 1e9:8.2f}G {r.scene_forward / 1e9:8.2f}G {r.train_per_sample / 1e12:12.4f}T "
            f"{r.raster_forward / 1e9:9.2f}G"
        )
    lines.append("E-RayZer: FLOPs = 2 x multiply-accumulates of the network (camera + scene transformers, heads, "
                 "decoder) + 'raster fwd' (dense splatting estimate, 26 FLOP per pixel-Gaussian pair); "
                 "train = 3 x forward.")
    print("\n".join(lines))
