"""Analytic FLOPs of E-RayZer training, network and rasterisation counted separately.

Conventions (as RayDer's flops module): FLOPs = 2 x multiply-accumulates of every matmul (linear layers, q k^T, attn v);
elementwise work (LayerNorms, QK-norm, RoPE, GELU, softmax, Plücker rays, Gaussian activations) is not counted;
training = 3 x forward. One training sample = one clip of `views` frames: camera transformer on all views (+ pose
head for V - 1 pairs and the focal head), scene transformer on `n_ref` reference views (embeddings, fusion MLP,
blocks, decoder). Attention is dense (no masks), so FlopCounterMode counts the same network FLOPs
(tests/test_erayzer_model.py checks this on CPU with the math SDPA backend).

Rasterisation is not a matmul network and is reported separately (`raster_forward`), as the dense PyTorch renderer's
work per target view: per (camera, Gaussian) ~PROJECT_FLOPS for the EWA projection and SH colour, per (pixel,
Gaussian) pair RASTER_PAIR_FLOPS (quadratic form 12 as a matmul, exp/clamp/threshold 4, transmittance 2, weight 2,
colour 6). gsplat evaluates only pairs inside each Gaussian's 3-sigma tile footprint, so this dense count is an upper
bound of its work. It is *not* included in `train_per_sample` (the compute axis of the scaling laws).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .config import ERayZerConfig

TRAIN_FACTOR = 3
PROJECT_FLOPS = 250
RASTER_PAIR_FLOPS = 26


@dataclass
class ERayZerFlopReport:
    """FLOPs of one training sample. camera_forward / scene_forward / forward_per_sample / train_per_sample: network
    (matmul) FLOPs; raster_forward: dense rasterisation estimate of one forward (not in train_per_sample)."""

    family: str
    preset: str
    params: int
    resolution: int
    views: int
    n_ref: int
    camera_forward: float
    scene_forward: float
    forward_per_sample: float
    train_per_sample: float
    raster_forward: float


def _block(tokens: float, seq: float, cfg: ERayZerConfig) -> float:
    """One block over `tokens` tokens in sequences of length `seq`: qkv, proj, MLP linears + attention."""
    c, h = cfg.width, cfg.mlp_hidden
    linears = 2.0 * tokens * (c * 3 * c + c * c + 2 * c * h)
    attention = 4.0 * tokens * seq * c
    return linears + attention


def _transformer(views: int, per_view: int, layers: int, cfg: ERayZerConfig) -> float:
    total = 0.0
    for _ in range(layers):
        total += _block(views * per_view, views * per_view, cfg)  # global
        total += _block(views * per_view, per_view, cfg)  # frame
    return total


def n_ref_for(cfg: ERayZerConfig, views: int) -> int:
    return cfg.n_ref if cfg.n_ref is not None else views // 2


def forward_flops(cfg: ERayZerConfig, resolution: int | tuple[int, int], views: int) -> dict[str, float]:
    """Forward FLOPs of one sample: {'camera', 'scene', 'raster'} (see module docstring)."""
    h, w = (resolution, resolution) if isinstance(resolution, int) else resolution
    p, c = cfg.patch, cfg.width
    if h % p or w % p:
        raise ValueError(f"resolution {h}x{w} must be divisible by the patch size {p}")
    if views < 2:
        raise ValueError(f"need at least 2 views per clip, got {views}")
    n = (h // p) * (w // p)
    special = 1 + cfg.registers
    camera = 2.0 * views * n * 3 * p * p * c
    camera += _transformer(views, n + special, cfg.camera_layers, cfg)
    camera += 2.0 * views * (2 * c * c + c * 9)  # pairwise head (evaluated for all V, the canonical one discarded)
    camera += 2.0 * c  # focal head on the canonical token, per sample
    n_ref = n_ref_for(cfg, views)
    scene = 2.0 * n_ref * n * (3 * p * p * c + 6 * p * p * c + 2 * c * c + c * c)
    scene += _transformer(n_ref, n, cfg.scene_layers, cfg)
    scene += 2.0 * n_ref * n * c * p * p * cfg.gaussian_channels
    gaussians = n_ref * h * w
    targets = views - n_ref
    raster = targets * (gaussians * PROJECT_FLOPS + h * w * gaussians * RASTER_PAIR_FLOPS)
    return {"camera": camera, "scene": scene, "raster": float(raster)}


def param_count(cfg: ERayZerConfig) -> int:
    from .model import ERayZer

    with torch.device("meta"):
        model = ERayZer(cfg)
    return sum(q.numel() for q in model.parameters())


def count_flops(cfg: ERayZerConfig, resolution: int, views: int) -> ERayZerFlopReport:
    f = forward_flops(cfg, resolution, views)
    forward = f["camera"] + f["scene"]
    return ERayZerFlopReport(
        family="erayzer", preset=cfg.preset, params=param_count(cfg), resolution=resolution, views=views,
        n_ref=n_ref_for(cfg, views), camera_forward=f["camera"], scene_forward=f["scene"], forward_per_sample=forward,
        train_per_sample=TRAIN_FACTOR * forward, raster_forward=f["raster"],
    )


def train_flops_per_step(cfg: ERayZerConfig, resolution: int, views: int, batch: int) -> float:
    """Network training FLOPs of one optimizer step of `batch` clips (3 x forward; rasterisation not included)."""
    return batch * count_flops(cfg, resolution, views).train_per_sample


def cli(args, parser) -> None:
    """`rayder-flops --family erayzer [--presets ...] [--resolution R] [--views V] [--json]` (called by
    rayder_core.models.rayder.flops.main). With RayDer's default preset list, all E-RayZer presets are listed."""
    import json
    from dataclasses import asdict

    from .config import PRESETS

    names = [n.strip() for n in args.presets.split(",") if n.strip()]
    if args.presets == "XS,S,B,L":
        names = list(PRESETS)
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
            d["convention"] = "exact (network matmuls, 3 x forward; rasterisation separate in raster_forward)"
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
                 "decoder); train = 3 x forward. 'raster fwd' = dense splatting estimate of one forward, not in train.")
    print("\n".join(lines))
