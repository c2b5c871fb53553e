"""Analytic FLOP counts of RayDer training, and the `rayder-flops` CLI.

Conventions (all numbers are FLOPs, not MACs):
- 2 FLOPs per multiply-accumulate of every matmul: linear layers, q.k^T and attn.v. Elementwise work (norms,
  softmax, RoPE, activations, Plücker rays) is not counted, as in `torch.utils.flop_counter.FlopCounterMode`.
- Attention costs 4 * head_dim * heads FLOPs per query-key pair. "Allowed" counts only the pairs the mask allows
  (neighbourhood attention: kernel_h * kernel_w keys per query; global attention: rules B.1/B.2); "dense" counts the
  pairs actually computed by the exact CPU path (SDPA with a boolean mask computes every pair of each frame or of
  the whole sequence). The headline numbers use allowed pairs; `dense_attention_extra` is the difference.
- Role-conditioning linears of the adaptive norms are counted once per view (they do not depend on the tokens).
- One training sample = one clip of `views` frames as trained: camera estimation on all views (encoder side +
  backbone) and one render pass with V-1 inputs and V-1 targets under mask B.2 (decoder side for the targets only);
  for autoregression='none' V//2 inputs and V - V//2 targets under mask B.1; 'parallel' (Config E) V - n_targets
  inputs and n_targets targets in one sequence; 'per_target' (Config D) n_targets sequences of the inputs + 1 target.
- Training = 3 x forward (backward = 2 x forward), per sample; per step = batch x per sample.

Two conventions for C (`--convention`, `train_flops_per_step(..., convention=)`):
- `exact` (default, the results store's unit): train = 3 x (matmul forward + attention forward), the count above,
  verified against `FlopCounterMode`.
- `paper`: the rule that reproduces the paper's Table B.3 "TFLOP/step (BS 1)":
      train = 3 x (3 x M + A)
  M = forward matmul FLOPs of the *transformer layers* only (backbone layers and neighbourhood-attention layers:
  q/k/v/out projections, SwiGLU, role-conditioning linears once per view), i.e. Kaplan et al.'s non-embedding count:
  the patch embedding, the hourglass token merges/splits, the pixel output and the camera/state heads are not
  counted. A = attention products (q.k^T, attn.v) on mask-allowed pairs. Both over the layers the reference code
  runs: the render pass runs the decoder side on *every* view of the sequence (the official `_reconstruct` runs
  the whole backbone on [inputs, targets] and keeps the targets' pixels; our model decodes the targets only), the
  camera pass the encoder side + backbone ("only the encoder side, alongside the main block, is used").
  3 x M is the usual training estimate 6 x N x D taken as the forward cost; x 3 again for training (the factor
  of 9 on M is not derivable from the paper, but a free least-squares fit of five columns on (M, A) gives 8.97
  and 2.93). Against the six columns (XS/S/B/L at 256^2 with 8 views, B with 24 views, L at 576^2 with 8 views)
  the rule gives 0.997, 1.001, 1.045, 1.010, 1.016, 1.004 of the table. Scaling-B at 8 views is the one column no
  rule of this form fits better than ~3-4%: it is inconsistent with B at 24 views and L at 8 views (same
  architecture family); 28.79 instead of 27.79 would put it at 1.008. Before this rule the paper convention
  counted all matmuls (merges included) with the decoder on targets only: 0.948 for XS (5.2% low).
  Exponents of fitted laws do not depend on the convention (paper ~ 2.0-2.6 x exact, slowly varying); the constants
  A, B of Eq. 4-6 and GFLOP axes do.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass

import torch
import yaml

from rayder_core.models import attention
from rayder_core.models.base import count_parameters

from . import build, masks
from .layers import FF_EXPAND
from .config import PRESETS, ModelConfig
from .three_network import forward_flops as three_network_flops
from .tokens import INTRINSICS_PARAMS, PLUCKER_DIM, POSE_PARAMS, RGB_DIM

TRAIN_FACTOR = 3  # forward + backward (2 x forward)
PAPER_MATMUL_FACTOR = 3  # the paper's convention counts the layers' forward matmuls as 3 x (2 x N x D), see above
CONVENTIONS = ("exact", "paper")

# Paper Table B.3, "TFLOP/step (BS 1)" at 256^2 with 8 views.
PAPER_TFLOP_PER_STEP = {"XS": 5.93, "S": 11.56, "B": 27.79, "L": 48.37}
# All six columns of Table B.3, keyed by (preset, resolution, views): Scaling-XS/S/B/L, RayDer-B-DL3DV (24 views),
# RayDer-L-576 (8 views at 576^2).
PAPER_TABLE_B3 = {
    ("XS", 256, 8): 5.93, ("S", 256, 8): 11.56, ("B", 256, 8): 27.79, ("L", 256, 8): 48.37,
    ("B", 256, 24): 101.79, ("L", 576, 8): 304.08,
}


def paper_tflop(preset: str, resolution: int, views: int) -> float | None:
    """Table B.3 TFLOP/step at batch 1 for this (preset, resolution, views), or None if the table has no column."""
    return PAPER_TABLE_B3.get((preset, int(resolution), int(views)))


@dataclass
class FlopReport:
    """FLOPs of one training sample (one clip). camera_forward / render_forward / forward_per_sample /
    train_per_sample count allowed attention pairs; dense_attention_extra is what the dense (masked SDPA) path
    computes on top of that in one forward; train_per_sample_dense = 3 x (forward + extra).
    matmul_forward + attention_forward = forward_per_sample (attention: the q.k^T and attn.v products);
    paper_matmul_forward / paper_attention_forward = M and A of the paper convention (transformer layers only,
    decoder side on every render view; see the module docstring); train_per_sample_paper = 3 x (3 x M + A), the
    paper's Table B.3 convention."""

    preset: str
    params: int
    resolution: int
    views: int
    camera_forward: float
    render_forward: float
    forward_per_sample: float
    train_per_sample: float
    dense_attention_extra: float
    train_per_sample_dense: float
    matmul_forward: float = 0.0
    attention_forward: float = 0.0
    train_per_sample_paper: float = 0.0
    paper_matmul_forward: float = 0.0
    paper_attention_forward: float = 0.0

    def train(self, convention: str = "exact") -> float:
        """Training FLOPs of one sample in `convention` ('exact' or 'paper')."""
        check_convention(convention)
        return self.train_per_sample if convention == "exact" else self.train_per_sample_paper


def check_convention(convention: str) -> str:
    """Return `convention` if it is one of CONVENTIONS, else raise ValueError naming the choices."""
    if convention not in CONVENTIONS:
        raise ValueError(f"unknown FLOP convention {convention!r}; choose from {CONVENTIONS}")
    return convention


class _Counter:
    def __init__(self, cfg: ModelConfig, height: int, width: int) -> None:
        d = cfg.downsample
        if height % d or width % d:
            raise ValueError(f"resolution {height}x{width} must be divisible by {d}")
        self.cfg = cfg
        self.grids = [(height // cfg.patch, width // cfg.patch)]
        self.grids.append((self.grids[0][0] // 2, self.grids[0][1] // 2))
        self.grids.append((self.grids[1][0] // 2, self.grids[1][1] // 2))
        self.allowed = 0.0
        self.dense = 0.0
        self.attn_allowed = 0.0  # the attention part of `allowed` (q.k^T and attn.v)
        self.embed = 0.0  # the part of `allowed` outside the transformer layers (merges/splits, pixel output, heads)

    def linear(self, tokens: float, fan_in: int, fan_out: int, embed: bool = False) -> None:
        flops = 2.0 * tokens * fan_in * fan_out
        self.allowed += flops
        self.dense += flops
        if embed:
            self.embed += flops

    def attention(self, allowed_pairs: float, dense_pairs: float, width: int) -> None:
        self.allowed += 4.0 * allowed_pairs * width
        self.dense += 4.0 * dense_pairs * width
        self.attn_allowed += 4.0 * allowed_pairs * width

    def ff(self, tokens: float, width: int) -> None:
        self.linear(tokens, width, 2 * FF_EXPAND * width)
        self.linear(tokens, FF_EXPAND * width, width)

    def na_layers(self, level: int, views: int) -> None:
        cfg = self.cfg
        if not cfg.local_layers:
            return
        c, depth = cfg.local_widths[level], cfg.local_depths[level]
        h, w = self.grids[level]
        n = h * w
        kh, kw = attention.fit_kernel(cfg.kernel, h), attention.fit_kernel(cfg.kernel, w)
        for _ in range(depth):
            self.linear(views, cfg.d_cond, c)  # 2 adaptive norms: cond linears, once per view
            self.linear(views, cfg.d_cond, c)
            self.linear(views * n, c, 3 * c)
            self.attention(views * n * kh * kw, views * n * n, c)
            self.linear(views * n, c, c)
            self.ff(views * n, c)

    def encoder(self, views: int) -> None:
        cfg = self.cfg
        (w0, w1), (n0, n1, n2) = cfg.local_widths, (h * w for h, w in self.grids)
        self.linear(views * n0, (RGB_DIM + PLUCKER_DIM) * cfg.patch**2, w0, embed=True)
        self.na_layers(0, views)
        self.linear(views * n1, 4 * w0, w1, embed=True)
        self.na_layers(1, views)
        self.linear(views * n2, 4 * w1, cfg.width, embed=True)

    def backbone(self, view_mask: torch.Tensor | None, views: int) -> None:
        cfg, w = self.cfg, self.cfg.width
        m = self.grids[2][0] * self.grids[2][1] + 1  # tokens + register per view
        allowed_views = views * views if view_mask is None else float(view_mask.sum())
        for _ in range(cfg.depth):
            for _ in range(6):
                self.linear(views, cfg.d_cond, w)  # 6 adaptive norms (3 for tokens, 3 for registers)
            self.linear(views * m, w, 3 * w)  # global attention
            self.attention(allowed_views * m * m, (views * m) ** 2, w)
            self.linear(views * m, w, w)
            self.linear(views * m, w, 3 * w)  # per-frame attention (tokens + own register)
            self.attention(views * m * m, views * m * m, w)
            self.linear(views * m, w, w)
            self.ff(views * m, w)

    def decoder(self, views: int) -> None:
        cfg = self.cfg
        (w0, w1), (n0, n1, n2) = cfg.local_widths, (h * w for h, w in self.grids)
        self.linear(views * n2, cfg.width, 4 * w1, embed=True)
        self.na_layers(1, views)
        self.linear(views * n1, w1, 4 * w0, embed=True)
        self.na_layers(0, views)
        self.linear(views * n0, w0, RGB_DIM * cfg.patch**2, embed=True)

    def heads(self, views: int) -> None:
        cfg = self.cfg
        self.linear(views, cfg.width, POSE_PARAMS, embed=True)
        self.linear(views, cfg.width, INTRINSICS_PARAMS, embed=True)
        if cfg.dynamic_state:
            self.linear(views, cfg.width, cfg.d_state, embed=True)

    def take(self) -> tuple[float, float, float, float]:
        out = (self.allowed, self.dense, self.attn_allowed, self.embed)
        self.allowed = self.dense = self.attn_allowed = self.embed = 0.0
        return out


def _param_count(cfg: ModelConfig) -> int:
    with torch.device("meta"):
        return count_parameters(build(cfg))


def _render_sequences(cfg: ModelConfig, views: int) -> list[tuple[int, int, torch.Tensor]]:
    """(inputs, targets, view mask) of each render sequence of one training clip of `views` frames."""
    if cfg.autoregression == "none":
        n_in, n_t = views // 2, views - views // 2
        return [(n_in, n_t, masks.inference_view_mask(n_in, n_t))]
    if cfg.autoregression == "parallel":  # Config E
        n_in, n_t = views - cfg.n_targets, cfg.n_targets
        return [(n_in, n_t, masks.parallel_view_mask(n_in, n_t))]
    if cfg.autoregression == "per_target":  # Config D: one full-attention sequence per target
        n_in = views - cfg.n_targets
        return [(n_in, 1, masks.full_view_mask(n_in + 1))] * cfg.n_targets
    return [(views - 1, views - 1, masks.training_view_mask(views))]


def _count_pass(cfg: ModelConfig, h: int, w: int, views: int, decode_all: bool) -> dict[str, float]:
    """Camera pass + render sequences of one clip; decode_all: decoder side on every view of a render sequence
    (the reference code, the paper convention) instead of the targets only (our model)."""
    c = _Counter(cfg, h, w)
    c.encoder(views)
    c.backbone(None, views)
    c.heads(views)
    camera, camera_dense, camera_attn, camera_embed = c.take()
    for n_in, n_t, view_mask in _render_sequences(cfg, views):
        c.encoder(n_in + n_t)
        if cfg.dynamic_state:
            c.linear(n_in + n_t, cfg.d_state, cfg.width, embed=True)  # state projection of the NVS registers
        c.backbone(view_mask, n_in + n_t)
        c.decoder(n_in + n_t if decode_all else n_t)
    render, render_dense, render_attn, render_embed = c.take()
    return {"camera": camera, "render": render, "camera_dense": camera_dense, "render_dense": render_dense,
            "camera_attention": camera_attn, "render_attention": render_attn,
            "camera_embed": camera_embed, "render_embed": render_embed}


def forward_flops(cfg: ModelConfig, resolution: int | tuple[int, int], views: int) -> dict[str, float]:
    """Forward FLOPs of one training sample: {'camera', 'render', 'camera_dense', 'render_dense',
    'camera_attention', 'render_attention', 'camera_embed', 'render_embed'} ('*_attention': the allowed-pair
    attention part of 'camera'/'render'; '*_embed': the part outside the transformer layers). Dispatches on
    `cfg.architecture` ('three_network': Configs A-C, `three_network.forward_flops`)."""
    if views < 2:
        raise ValueError(f"need at least 2 views per clip, got {views}")
    if cfg.architecture == "three_network":
        return three_network_flops(cfg, resolution, views)
    h, w = (resolution, resolution) if isinstance(resolution, int) else resolution
    return _count_pass(cfg, h, w, views, decode_all=False)


def paper_forward_parts(cfg: ModelConfig, resolution: int | tuple[int, int], views: int) -> tuple[float, float]:
    """(M, A) of the paper convention for one sample: forward matmul FLOPs of the transformer layers and attention
    FLOPs on allowed pairs, with the decoder side on every view of each render sequence (module docstring)."""
    if views < 2:
        raise ValueError(f"need at least 2 views per clip, got {views}")
    if cfg.architecture == "three_network":  # every layer already runs on every view of its sequence
        f = forward_flops(cfg, resolution, views)
    else:
        h, w = (resolution, resolution) if isinstance(resolution, int) else resolution
        f = _count_pass(cfg, h, w, views, decode_all=True)
    attention = f["camera_attention"] + f["render_attention"]
    matmul = f["camera"] + f["render"] - attention - f["camera_embed"] - f["render_embed"]
    return matmul, attention


def count_flops(cfg: ModelConfig, resolution: int, views: int) -> FlopReport:
    """FLOPs of one training sample (one clip of `views` frames at resolution x resolution pixels)."""
    f = forward_flops(cfg, resolution, views)
    forward = f["camera"] + f["render"]
    dense = f["camera_dense"] + f["render_dense"]
    attention = f["camera_attention"] + f["render_attention"]
    matmul = forward - attention
    paper_matmul, paper_attention = paper_forward_parts(cfg, resolution, views)
    return FlopReport(
        preset=cfg.preset,
        params=_param_count(cfg),
        resolution=resolution,
        views=views,
        camera_forward=f["camera"],
        render_forward=f["render"],
        forward_per_sample=forward,
        train_per_sample=TRAIN_FACTOR * forward,
        dense_attention_extra=dense - forward,
        train_per_sample_dense=TRAIN_FACTOR * dense,
        matmul_forward=matmul,
        attention_forward=attention,
        train_per_sample_paper=TRAIN_FACTOR * (PAPER_MATMUL_FACTOR * paper_matmul + paper_attention),
        paper_matmul_forward=paper_matmul,
        paper_attention_forward=paper_attention,
    )


def train_flops_per_step(cfg: ModelConfig, resolution: int, views: int, batch: int,
                         convention: str = "exact") -> float:
    """Training FLOPs of one optimizer step of `batch` clips (allowed attention pairs) in `convention`:
    'exact' = 3 x forward (the store's unit), 'paper' = Table B.3's 3 x (3 x M + A) (module docstring)."""
    return batch * count_flops(cfg, resolution, views).train(check_convention(convention))


def _si(value: float, unit: str = "") -> str:
    """3 significant digits with an SI prefix: 20.4k, 1.24M, 0.307G."""
    for scale, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{prefix}{unit}"
    return f"{value:.3g}{unit}"


def _table(rows: list[FlopReport], convention: str = "exact") -> str:
    width = max([6] + [len(r.preset) for r in rows])
    head = (
        f"{'preset':>{width}} {'params':>8} {'res':>5} {'V':>2} {'cam fwd':>9} {'NVS fwd':>9} {'attn fwd':>9} "
        f"{'train/sample':>13} {'dense extra':>11} {'paper':>8} {'ours/paper':>10}"
    )
    lines = [f"convention: {convention}", head, "-" * len(head)]
    for r in rows:
        paper = paper_tflop(r.preset, r.resolution, r.views)
        train = r.train(convention)
        paper_s = f"{paper:8.2f}" if paper else f"{'-':>8}"
        ratio_s = f"{train / 1e12 / paper:10.3f}" if paper else f"{'-':>10}"
        lines.append(
            f"{r.preset:>{width}} {_si(r.params):>8} {r.resolution:5d} {r.views:2d} "
            f"{_si(r.camera_forward):>9} {_si(r.render_forward):>9} {_si(r.attention_forward):>9} "
            f"{_si(train):>13} {_si(r.dense_attention_extra):>11} {paper_s} {ratio_s}"
        )
    rule = ("train = 3 x forward (exact)" if convention == "exact"
            else "train = 3 x (3 x M + A), M = transformer-layer matmuls with the decoder on every render view, "
                 "A = attention (paper's Table B.3 convention)")
    lines.append(
        f"FLOPs = 2 x multiply-accumulates; {rule}; attention on mask-allowed pairs "
        "('dense extra' = additional forward FLOPs of the dense masked-SDPA path). "
        "'paper' = Table B.3 TFLOP/step at batch 1 where the table has a column for (preset, res, V)."
    )
    return "\n".join(lines)


def _parse_override(text: str) -> tuple[str, object]:
    """'key=value' with a YAML value (2, false, [64, 64])."""
    if "=" not in text:
        raise ValueError(f"--set {text!r}: expected KEY=VALUE")
    key, value = text.split("=", 1)
    return key.strip(), yaml.safe_load(value)


DEFAULT_CLI_PRESETS = "XS,S,B,L"


def cli(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """`rayder-flops [--family rayder] [--presets XS,S,B,L] [--resolution R] [--views V] [--convention C] [--set K=V]
    [--json]`: the table (or JSON) of the presets' analytic FLOPs (`rayder_core.models.flops_cli` parses)."""
    args.presets = args.presets or DEFAULT_CLI_PRESETS
    names = [n.strip() for n in args.presets.split(",") if n.strip()]
    unknown = [n for n in names if n not in PRESETS]
    if unknown:
        parser.error(f"unknown preset(s) {unknown}; choose from {list(PRESETS)}")
    try:
        overrides = dict(_parse_override(o) for o in args.overrides)
        rows = [count_flops(ModelConfig.from_preset(n, **overrides), args.resolution, args.views) for n in names]
    except ValueError as e:
        parser.error(str(e))
    if args.json:
        out = []
        for r in rows:
            d = asdict(r)
            paper = paper_tflop(r.preset, r.resolution, r.views)
            d["convention"] = args.convention
            d["train_tflop_per_step_bs1"] = r.train(args.convention) / 1e12
            d["paper_tflop_per_step_bs1"] = paper
            d["ratio_to_paper"] = r.train(args.convention) / 1e12 / paper if paper else None
            out.append(d)
        print(json.dumps(out, indent=2))
    else:
        print(_table(rows, args.convention))

