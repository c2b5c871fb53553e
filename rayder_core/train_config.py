"""The configuration of one training run (`rayder-train CONFIG.yaml --set key=value`), validated from plain YAML.

A run's identity (`run_id`) is a hash of its resolved config, so the same config always maps to the same run
directory and the same rows in the results store; launching it again resumes or skips it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from rayder_core.data.curriculum import CurriculumSampler
from rayder_core.eval_config import EvalConfig
from rayder_core.models import model_config
from rayder_core.run_identity import identity_digest, identity_of
from rayder_core.yamlconf import ConfigError, apply_overrides, from_mapping, load_yaml, to_mapping


@dataclass
class CurriculumConfig:
    """How a clip's frames are drawn (`data.curriculum`): `none` = by `data.fps` (RayDer's sampling, the default);
    `frame_interval` (RayZer-style: the frame gap anneals from 1 to its maximum) and `overlap` (E-RayZer: the gap
    whose visual overlap matches a target drawn from a range annealed from `start` to `end` over the first
    `anneal_fraction` of the run) use `rayder_core.data.curriculum.CurriculumSampler`; see
    `rayder_core.data.loader` for the overlap sources. Switchable for either family (the paper's ablation)."""

    mode: Literal["none", "frame_interval", "overlap"] = "none"
    start: tuple[float, float] = (1.0, 1.0)
    end: tuple[float, float] = (0.5, 1.0)
    anneal_fraction: float = 0.57
    span_views: int | None = None           # views spanning the window (default: half the clip's views, >= 2)
    overlap_source: Literal["auto", "geometric", "feature"] = "auto"   # auto: poses when the clip has them
    overlap_extractor: Literal["thumbnail", "dinov2"] = "thumbnail"    # feature source: no-download fallback / DINOv2

    def __post_init__(self) -> None:
        if not all(0.0 <= v <= 1.0 for v in (*self.start, *self.end)) or self.start[0] > self.start[1] \
                or self.end[0] > self.end[1]:
            raise ValueError(f"data.curriculum.start/end must be ranges [lo, hi] in [0, 1], got {self.start}, "
                             f"{self.end}")
        if not 0.0 <= self.anneal_fraction <= 1.0:
            raise ValueError(f"data.curriculum.anneal_fraction must be in [0, 1], got {self.anneal_fraction}")
        if self.span_views is not None and self.span_views < 2:
            raise ValueError(f"data.curriculum.span_views must be >= 2 or null, got {self.span_views}")

    def sampler(self) -> Any:
        """The `CurriculumSampler` of this config, or None for mode `none`."""
        if self.mode == "none":
            return None
        return CurriculumSampler(self.mode, tuple(self.start), tuple(self.end), self.anneal_fraction, self.span_views)


@dataclass
class DataConfig:
    """Training data: a manifest of nested fractions (see `rayder-data manifest`) and clip sampling."""

    manifest: str = "data/synth/manifest.json"
    fraction: float = 1.0          # data fraction, e.g. 0.01 for the 1% subset
    frames: int = 8                # K frames per clip
    fps: float = 2.0               # average sampling rate of the K frames (frames/second of video)
    resolution: int = 64           # square training resolution in pixels (divisible by 16)
    num_workers: int = 0           # DataLoader workers per rank
    cache_mb: float = 0.0          # MiB per loader process for whole decoded videos (0: decode every sample)
    decoded_dir: str = ""          # decoded copy of the shards shared by a sweep's runs ("": none); not in the run id
    curriculum: CurriculumConfig = field(default_factory=CurriculumConfig)  # frame sampling (none: by fps)

    def __post_init__(self) -> None:
        if not 0 < self.fraction <= 1:
            raise ValueError(f"data.fraction must be in (0, 1], got {self.fraction}")
        if self.frames < 2:
            raise ValueError(f"data.frames must be >= 2, got {self.frames}")
        if self.resolution % 8:
            raise ValueError(f"data.resolution must be divisible by the model's downsampling (16 by default, "
                             f"8 with model.patch=2), got {self.resolution}")


@dataclass
class OptimConfig:
    """AdamW with linear warmup and a warmup-stable-decay (WSD) schedule; gradient clipping and step skipping."""

    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 0.01
    warmup_steps: int = 1000
    decay_start: int | None = None        # WSD: the LR is constant from warmup until this step ...
    decay_halve_every: int | None = None  # ... then halves every N steps (None: no decay stage)
    grad_clip: float = 1.0
    # Grad-spike rule, off by default (the paper, Appendix C.3, found that skipping stalls training): with a
    # factor, a step after warmup whose grad norm > factor x grad_clip is skipped. Steps with a non-finite loss or
    # gradient are always skipped (weights untouched) and counted.
    skip_grad_factor: float | None = None
    max_consecutive_skips: int = 20       # stop the run (last good checkpoint intact) after this many in a row

    def __post_init__(self) -> None:
        if self.lr <= 0 or self.grad_clip <= 0:
            raise ValueError("optim.lr and optim.grad_clip must be > 0")
        if (self.decay_start is None) != (self.decay_halve_every is None):
            raise ValueError("optim.decay_start and optim.decay_halve_every must be given together")
        if self.decay_halve_every is not None and self.decay_halve_every <= 0:
            raise ValueError("optim.decay_halve_every must be > 0")
        if self.skip_grad_factor is not None and not self.skip_grad_factor > 0:
            raise ValueError(f"optim.skip_grad_factor must be > 0 or null (off), got {self.skip_grad_factor}")


@dataclass
class TrainConfig:
    """Everything that defines a training run. Units: steps are optimizer steps; batch_size is the global batch."""

    model: dict[str, Any] = field(default_factory=lambda: {"preset": "tiny-xs"})
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    steps: int = 1000
    batch_size: int = 4
    precision: Literal["auto", "bf16", "fp32"] = "auto"  # auto: bf16 autocast where the measured bf16 matmul
                                          # peak beats fp32's (rayder_core.precision), else fp32; fixed per run
    compile: bool | Literal["layers", "loss"] = False  # torch.compile: true / layers = each transformer layer
                                          # (regional, eager fallback); loss = the whole training loss, forward and
                                          # backward (speed and compile time: benchmarks/RESULTS.md)
    compile_min_steps: int = 0            # compile only when this process trains at least this many steps (a
                                          # run forked or resumed near its end stays eager: compiling costs more)
    device: str = "auto"                  # auto | cpu | cuda
    seed: int = 0
    checkpoint_every: int = 500
    keep_checkpoints: int = 0             # 0 keeps all (a scaling study evaluates every one)
    checkpoint_steps: list[int] = field(default_factory=list)  # also saved at these steps and never pruned (the
                                          # fork points of shorter runs that share this run's trunk)
    start_from: str | None = None         # a checkpoint file of a run whose first steps are this run's (a longer
                                          # run of the same grid point): without a checkpoint of its own, the run
                                          # starts from a copy of it if it exists, else from step 0 (the same run)
    log_every: int = 10
    perceptual_weight: float = 0.0        # weight of an LPIPS-VGG term added to the MSE loss
    sweep: str = "default"
    out_dir: str = "runs"
    tf32: bool = True                     # CUDA only: TF32 matmuls/convolutions for fp32 work (no effect on CPU)
    dist_timeout_min: float = 30.0        # torch.distributed process-group timeout (collectives), minutes
    store_mode: Literal["direct", "index"] = "direct"  # direct: rank 0 writes the store as it goes; index: runs
                                          # write only their run directory and `rayder-sweep collect` ingests it

    def __post_init__(self) -> None:
        if "preset" not in self.model:
            raise ValueError("model.preset is required (e.g. tiny-xs, XS, S, B, L)")
        if self.steps <= 0 or self.batch_size <= 0:
            raise ValueError("steps and batch_size must be > 0")
        if self.checkpoint_every <= 0 or self.log_every <= 0:
            raise ValueError("checkpoint_every and log_every must be > 0")
        if any(not 0 < s < self.steps for s in self.checkpoint_steps):
            raise ValueError(f"checkpoint_steps must lie inside the run (1..{self.steps - 1}), got {self.checkpoint_steps}")
        if self.compile_min_steps < 0:
            raise ValueError(f"compile_min_steps must be >= 0, got {self.compile_min_steps}")
        if not self.dist_timeout_min > 0:
            raise ValueError(f"dist_timeout_min must be > 0 (minutes), got {self.dist_timeout_min}")

    # --------------------------------------------------------------------------------------------- identity
    def identity(self) -> dict[str, Any]:
        """The fields that define what is trained (not where it is written or how it is logged):
        `rayder_core.run_identity.identity_of` of this config."""
        return identity_of(to_mapping(self))

    @property
    def run_id(self) -> str:
        """Stable id: `<sweep>-<preset>-f<fraction>-<hash of the resolved config>`; a model family other than RayDer
        is named before the preset (`<sweep>-erayzer-<preset>-...`), so RayDer's ids are those of before families."""
        digest = identity_digest(self.identity())
        frac = f"{self.data.fraction:g}"
        family = self.model.get("family", "rayder")
        prefix = f"{self.sweep}-" if family == "rayder" else f"{self.sweep}-{family}-"
        return f"{prefix}{self.model['preset']}-f{frac}-{digest}"

    @property
    def compile_mode(self) -> Literal["off", "layers", "loss"]:
        """`compile` as one of off / layers / loss (`true` is `layers`, as before `loss` existed)."""
        if self.compile is True:
            return "layers"
        return "off" if self.compile is False else self.compile

    def compiles_from(self, step: int) -> bool:
        """Whether a process that trains this run from `step` compiles (`compile` on and at least
        `compile_min_steps` steps left); the trainer and the launcher's run order both ask this."""
        return self.compile_mode != "off" and self.steps - step >= self.compile_min_steps

    @property
    def run_dir(self) -> Path:
        return Path(self.out_dir) / self.run_id

    def to_dict(self) -> dict[str, Any]:
        return to_mapping(self)


def load_train_config(source: str | Path | dict, overrides: list[str] | None = None) -> TrainConfig:
    """Build a TrainConfig from a YAML file (or mapping) plus `key.sub=value` overrides; errors name the key."""
    if isinstance(source, dict):
        data, name = source, "<mapping>"
    else:
        data, name = load_yaml(source), str(source)
    if overrides:
        data = apply_overrides(data, overrides)
        name += " (with --set overrides)"
    cfg = from_mapping(TrainConfig, data, source=name)
    try:
        model_config(dict(cfg.model), source=f"{name}: model")  # validates with the family's config (model.family)
    except ImportError:  # pragma: no cover - model module always present in a complete install
        pass
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return cfg
