"""Sweep grids (`sweeps/*.yaml`): plain YAML -> validated `SweepSpec` -> one `TrainConfig` per run.

A grid file has these top-level keys (every error names the file and the dotted key):

    name: paper                 # sweep name, recorded in the store (ablation variants add `-<ablation>`)
    out_dir: runs/paper         # run directories: <out_dir>/<run_id>/ (relative to the working directory)
    db: results.duckdb          # the results store the runs write to
    base: {...}                 # a TrainConfig mapping shared by every run (data, optim, steps, eval, ...)
    preset_overrides:           # TrainConfig keys that differ per model preset, e.g. {L: {steps: 300000}}
    grid:
      presets: [XS, S, B, L]    # model presets (rayder_core.models.rayder.config.PRESETS)
      fractions: [0.01, 0.1, 1.0]
      seeds: [0]
      ablations: {no-local: {local_layers: false}}   # extra variants: model-key overrides (baseline kept)
      families: [rayder, erayzer]   # optional model-family axis (rayder_core.models.FAMILIES); every run is
                                    # recorded with its family (store column runs.family; `rayder-fit --family`)
      family_overrides: {erayzer: {model: {patch: 4}}} # TrainConfig keys that differ per family (optional);
                                    # applied after preset_overrides: base < preset_overrides < family_overrides
      steps: [1000, 2000, 4000]     # optional run-length axis (optimizer steps; Chinchilla approach 1), or per
                                    # fraction: {0.01: [1000], 1.0: [1000, 2000, 4000]}; base.optim's WSD decay
                                    # (decay_start, decay_halve_every, given for base.steps) scales with each length
      share_trunks: true            # with grid.steps: a shorter run starts from the longest run's checkpoint at
                                    # its decay start (the same run: rayder_core/training/trunk.py), so lengths
                                    # 1000 / 2000 cost 2200 steps, not 3000 (default true)
      exclude:                      # optional: grid points not run, matched on preset / fraction / seed / steps
        - {preset: L, steps: 4000}  # (a value or a list each)
    holdout:                    # runs beyond the grid that validate the law fitted on the grid alone (optional)
      - {preset: L, fraction: 1.0, steps: 400000}   # recorded as sweep `<name>-holdout`; `set:` other keys
    fit: {checkpoints: final, min_step: 300, fix: {L_inf: 0}}   # how the study's laws are fitted (FitSpec)
    slurm: {...}                # SlurmSpec: resources of one run's job; per_preset overrides (e.g. nodes)
    local: {...}                # LocalSpec: how many runs at once on the local executor

The grid axes own `model.preset`, `data.fraction`, `seed`, `sweep` and `out_dir` (and `model.family` when
`grid.families` is given, `steps` outside `base` when `grid.steps` is): setting them in `base` is an error. Without
`grid.families` the family is `base.model.family` (default rayder), and an ablation may switch it (`ablations: {erayzer: {family: erayzer}}`). With it, runs of every
family share the sweep name (the store's `runs.family` tells them apart) and every preset must exist in every family.
"""
from __future__ import annotations

import copy
import itertools
import json
import os
import shlex
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from fitting.checkpoints import CHECKPOINT_MODES
from fitting.holdout_runs import HOLDOUT_SUFFIX
from fitting.laws import DEFAULT_LAW, constrain, get_law
from fitting.bootstrap import POINT_UNIT, STORE_BOOTSTRAP_UNITS
from fitting.replicates import REPLICATE_MODES
from rayder_core.models import FAMILIES, family_of, model_config, presets
from rayder_core.train_config import TrainConfig
from rayder_core.training.checkpoints import checkpoint_path
from rayder_core.training.trunk import fork_step, trunk_identity
from rayder_core.yamlconf import ConfigError, apply_overrides, from_mapping, load_yaml


EXCLUDE_KEYS = ("preset", "fraction", "seed", "steps")


@dataclass
class GridAxes:
    """The axes of the grid; runs are their Cartesian product (ablations x presets x fractions x seeds x steps),
    less the `exclude`d points."""

    presets: list[str]
    fractions: list[float]
    seeds: list[int] = field(default_factory=lambda: [0])
    ablations: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> model-key overrides
    include_baseline: bool = True       # with ablations: also run the un-ablated model
    families: list[str] | None = None   # model-family axis (None: the family of base.model)
    family_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)  # family -> TrainConfig keys
    steps: list[int] | dict[float, list[int]] | None = None  # run lengths: every point, or per fraction
    exclude: list[dict[str, Any]] = field(default_factory=list)  # points not run: {preset, fraction, seed, steps}
    share_trunks: bool = True           # shorter runs of a grid point start from its longest run (training/trunk.py)

    def lengths(self, fraction: float) -> list[int | None]:
        """Run lengths (optimizer steps) of the grid points at `fraction`; [None]: base.steps (no steps axis)."""
        if self.steps is None:
            return [None]
        if isinstance(self.steps, dict):
            return next(v for f, v in self.steps.items() if _same_fraction(f, fraction))
        return list(self.steps)

    def excluded(self, point: dict[str, Any]) -> bool:
        """Does an `exclude` entry match `point` (keys of EXCLUDE_KEYS)?"""
        return any(all(_matches(point[k], v) for k, v in entry.items()) for entry in self.exclude)

    def _check_lengths(self) -> None:
        def check(values: Any, key: str) -> None:
            if not isinstance(values, list) or not values:
                raise ValueError(f"{key}: expected a non-empty list of run lengths (optimizer steps), got {values!r}")
            for i, v in enumerate(values):
                if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                    raise ValueError(f"{key}[{i}]: a run length must be a positive integer, got {v!r}")
            if len(set(values)) != len(values):
                raise ValueError(f"{key} has duplicates: {values}")
        if self.steps is None:
            return
        if isinstance(self.steps, list):
            check(self.steps, "steps")
            return
        by_fraction = {}
        for f, values in self.steps.items():
            if isinstance(f, bool) or not isinstance(f, (int, float)) or not any(
                    _same_fraction(f, g) for g in self.fractions):
                raise ValueError(f"steps.{f}: not a fraction of grid.fractions {self.fractions}")
            check(values, f"steps.{f}")
            by_fraction[float(f)] = values
        missing = [g for g in self.fractions if not any(_same_fraction(g, f) for f in by_fraction)]
        if missing:
            raise ValueError(f"steps: no run lengths for fraction(s) {missing} (give every fraction of grid.fractions)")
        self.steps = by_fraction

    def _check_exclude(self) -> None:
        for i, entry in enumerate(self.exclude):
            if not isinstance(entry, dict) or not entry:
                raise ValueError(f"exclude[{i}]: expected a mapping of {list(EXCLUDE_KEYS)}, got {entry!r}")
            bad = [k for k in entry if k not in EXCLUDE_KEYS]
            if bad:
                raise ValueError(f"exclude[{i}].{bad[0]}: unknown key; choose from {list(EXCLUDE_KEYS)}")

    def __post_init__(self) -> None:
        self._check_lengths()
        self._check_exclude()
        if self.families is not None:
            if not self.families or len(set(self.families)) != len(self.families):
                raise ValueError(f"families must list distinct families, got {self.families}")
            bad = [f for f in self.families if f not in FAMILIES]
            if bad:
                raise ValueError(f"families: unknown model famil{'y' if len(bad) == 1 else 'ies'} {bad}; choose from "
                                 f"{list(FAMILIES)}")
        for name, overrides in self.family_overrides.items():
            if name not in (self.families or []):
                raise ValueError(f"family_overrides.{name}: not a family of grid.families {self.families}")
            model = overrides.get("model", {}) if isinstance(overrides, dict) else None
            if not isinstance(model, dict) or "family" in model or "preset" in model:
                raise ValueError(f"family_overrides.{name}: expected a mapping of TrainConfig keys (model.family and "
                                 "model.preset are set by the grid)")
        for key in ("presets", "fractions", "seeds"):
            values = getattr(self, key)
            if not values:
                raise ValueError(f"{key} must list at least one value")
            if len(set(values)) != len(values):
                raise ValueError(f"{key} has duplicates: {values}")
        for i, f in enumerate(self.fractions):
            if not 0 < f <= 1:
                raise ValueError(f"fractions[{i}]: a data fraction must be in (0, 1], got {f}")
        for name, overrides in self.ablations.items():
            if not isinstance(overrides, dict) or not overrides:
                raise ValueError(f"ablations.{name}: expected a non-empty mapping of model keys")
        if not self.include_baseline and not self.ablations:
            raise ValueError("include_baseline: false needs at least one ablation")


@dataclass
class SlurmSpec:
    """Resources of one run's SLURM job (a grid is submitted as one job array per distinct resource set).

    time_min is the job's time limit in minutes; a run that reaches it saves a checkpoint on the warning signal
    (USR2, `signal_delay_s` before the limit) and is requeued, at most `max_requeues` times. Keep time_min > 10:
    submitit counts every USR2 of a job with a limit of 10 min or less as a timeout, not a preemption.
    """

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    nodes: int = 1
    gpus_per_node: int = 0
    tasks_per_node: int = 1             # one task per GPU for torch.distributed
    cpus_per_task: int = 2
    mem_gb: float | None = None         # None: the partition's default; 0: all of the node's memory
    time_min: int = 240
    array_parallelism: int = 64         # runs of one array running at the same time
    max_requeues: int = 10              # timeouts a run may be requeued after (preemptions do not count)
    signal_delay_s: int = 120
    extra: dict[str, Any] = field(default_factory=dict)   # other sbatch options, e.g. {exclusive: true}
    setup: list[str] = field(default_factory=list)        # shell lines run before the job (module load ...)
    per_preset: dict[str, dict[str, Any]] = field(default_factory=dict)  # preset -> overrides of these keys

    def __post_init__(self) -> None:
        for key in ("nodes", "tasks_per_node", "cpus_per_task", "time_min", "array_parallelism"):
            if getattr(self, key) <= 0:
                raise ValueError(f"{key} must be > 0, got {getattr(self, key)}")
        for key in ("gpus_per_node", "max_requeues", "signal_delay_s"):
            if getattr(self, key) < 0:
                raise ValueError(f"{key} must be >= 0, got {getattr(self, key)}")
        if self.mem_gb is not None and self.mem_gb < 0:
            raise ValueError(f"mem_gb must be >= 0, got {self.mem_gb}")

    def for_preset(self, preset: str, source: str = "<slurm>") -> "SlurmSpec":
        """This spec with `per_preset[preset]` applied (validated like the block itself)."""
        overrides = self.per_preset.get(preset)
        if not overrides:
            return self
        merged = {f.name: copy.deepcopy(getattr(self, f.name)) for f in fields(self) if f.name != "per_preset"}
        merged.update(overrides)
        return from_mapping(SlurmSpec, merged, source=source, prefix=f"slurm.per_preset.{preset}.")

    @property
    def world_size(self) -> int:
        return self.nodes * self.tasks_per_node

    def executor_parameters(self) -> dict[str, Any]:
        """Parameters of `submitit.SlurmExecutor.update_parameters` (sbatch options)."""
        params: dict[str, Any] = {
            "nodes": self.nodes, "ntasks_per_node": self.tasks_per_node, "cpus_per_task": self.cpus_per_task,
            "time": self.time_min, "array_parallelism": self.array_parallelism,
            "signal_delay_s": self.signal_delay_s,
        }
        for key in ("partition", "account", "qos", "constraint"):
            if getattr(self, key):
                params[key] = getattr(self, key)
        if self.gpus_per_node:
            params["gpus_per_node"] = self.gpus_per_node
        if self.mem_gb is not None:
            params["mem"] = f"{int(self.mem_gb)}G" if self.mem_gb else "0"
        if self.setup:
            params["setup"] = list(self.setup)
        if self.extra:
            params["additional_parameters"] = dict(self.extra)
        return params


@dataclass
class LocalSpec:
    """The local executor (no SLURM): runs as subprocesses of `rayder-sweep launch`, `parallel` at a time."""

    parallel: int = 1
    threads_per_run: int = 0            # torch CPU threads per run; 0: available cores // parallel
    timeout_min: int = 24 * 60          # a run is signalled (saves, requeues) after this long

    def __post_init__(self) -> None:
        if self.parallel <= 0 or self.threads_per_run < 0 or self.timeout_min <= 0:
            raise ValueError("parallel and timeout_min must be > 0, threads_per_run >= 0")

    def threads_each(self) -> int:
        """Torch CPU threads of each run: `threads_per_run`, or the cores available here // `parallel`."""
        if self.threads_per_run:
            return self.threads_per_run
        return max(1, available_cores() // self.parallel)


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


@dataclass
class FitSpec:
    """How the study's laws are fitted from the store (`python -m sweeps.demo`, its report and seed check; the same
    as `rayder-fit --checkpoints C --min-step N --fix NAME=VALUE --replicates R --bootstrap-by U`)."""

    checkpoints: str = "all"            # all | cooldown | final (fitting.checkpoints.select_checkpoints)
    min_step: int = 0                   # checkpoints before this training step are left out
    fix: dict[str, float] = field(default_factory=dict)  # parameters of the card law held fixed, e.g. {L_inf: 0}
    replicates: str = "mean"            # mean | median | all: how the seeds of one cell become a point
    bootstrap_by: str = POINT_UNIT      # point | trunk: what a bootstrap resample draws (fitting.bootstrap)

    def __post_init__(self) -> None:
        if self.checkpoints not in CHECKPOINT_MODES:
            raise ValueError(f"checkpoints must be one of {CHECKPOINT_MODES}, got {self.checkpoints!r}")
        if self.replicates not in REPLICATE_MODES:
            raise ValueError(f"replicates must be one of {REPLICATE_MODES}, got {self.replicates!r}")
        if self.min_step < 0:
            raise ValueError(f"min_step must be >= 0, got {self.min_step}")
        if self.bootstrap_by not in STORE_BOOTSTRAP_UNITS:
            raise ValueError(f"bootstrap_by must be one of {STORE_BOOTSTRAP_UNITS}, got {self.bootstrap_by!r}")
        names = get_law(DEFAULT_LAW).param_names
        for name, value in self.fix.items():  # per key, so that the error names it (fit.fix.NAME)
            if name not in names:
                raise ValueError(f"fix.{name}: not a parameter of the card law {list(names)}")
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise ValueError(f"fix.{name}: expected a number, got {value!r}")
        constrain(DEFAULT_LAW, self.fix)  # the fit's own check of the values (e.g. a positive constant at 0)

    def rayder_fit_args(self) -> str:
        """These settings as `rayder-fit` / `rayder-report` options."""
        return (f" --checkpoints {self.checkpoints}" * (self.checkpoints != "all")
                + f" --min-step {self.min_step}" * (self.min_step > 0)
                + "".join(f" --fix {k}={v:g}" for k, v in self.fix.items())
                + f" --replicates {self.replicates}" * (self.replicates != "mean")
                + f" --bootstrap-by {self.bootstrap_by}" * (self.bootstrap_by != POINT_UNIT))


@dataclass
class HoldoutRun:
    """One run beyond the grid (a larger preset, or longer training): trained with the grid's `base` (plus its
    preset's overrides and `set`), recorded under the sweep `<name>-holdout` so that fits of the grid exclude it,
    then compared with the law's prediction (`fitting.extrapolation.predict_holdout`, `python -m sweeps.demo`)."""

    preset: str
    fraction: float = 1.0
    seed: int | None = None  # None: one run per grid seed (a seed-1 study is validated by seed-1 runs)
    steps: int | None = None  # run length (None: base.steps); base.optim's WSD decay scales with it as in grid.steps
    set: dict[str, Any] = field(default_factory=dict)  # other TrainConfig keys that differ from base

    def __post_init__(self) -> None:
        if not 0 < self.fraction <= 1:
            raise ValueError(f"fraction must be in (0, 1], got {self.fraction}")
        if self.steps is not None and self.steps <= 0:
            raise ValueError(f"steps must be > 0, got {self.steps}")
        if self.steps is not None and "steps" in self.set:
            raise ValueError("steps given twice (steps and set.steps): keep one")


@dataclass
class SweepSpec:
    """A validated grid file. `runs()` expands it into one TrainConfig per run."""

    name: str
    grid: GridAxes
    base: dict[str, Any] = field(default_factory=dict)
    preset_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    out_dir: str = "runs"
    db: str = "results.duckdb"
    slurm: SlurmSpec = field(default_factory=SlurmSpec)
    local: LocalSpec = field(default_factory=LocalSpec)
    holdout: list[HoldoutRun] = field(default_factory=list)
    fit: FitSpec = field(default_factory=FitSpec)
    source: str = field(default="<mapping>", init=False, repr=False)  # the grid file (for error messages)
    path: str | None = field(default=None, init=False, repr=False)     # the grid file as given (load_spec)
    overrides: list[str] = field(default_factory=list, init=False, repr=False)  # its --set overrides

    def cli_args(self) -> str:
        """The grid file and its --set overrides as command-line arguments (to print follow-up commands)."""
        if self.path is None:
            return "<grid.yaml>"
        return shlex.quote(self.path) + "".join(f" --set {shlex.quote(o)}" for o in self.overrides)

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name or self.name.strip() != self.name:
            raise ValueError(f"name must be a non-empty word without '/', got {self.name!r}")

    # ----------------------------------------------------------------------------------------- expansion
    def family_models(self) -> list[tuple[str | None, dict[str, Any]]]:
        """(family, TrainConfig keys it sets, model.family included) per entry of the family axis; [(None, {})]
        without `grid.families`."""
        if self.grid.families is None:
            return [(None, {})]
        return [(f, _deep_merge({"model": {"family": f}}, self.grid.family_overrides.get(f, {})))
                for f in self.grid.families]

    def points(self) -> list[dict[str, Any]]:
        """The grid's points before ablations and families: {preset, fraction, seed, steps} (steps None: base.steps),
        in a stable order, `exclude`d points left out."""
        out = []
        for preset, fraction, seed in itertools.product(self.grid.presets, self.grid.fractions, self.grid.seeds):
            for steps in self.grid.lengths(fraction):
                point = {"preset": preset, "fraction": fraction, "seed": seed, "steps": steps}
                if not self.grid.excluded(point):
                    out.append(point)
        return out

    def runs(self) -> list[TrainConfig]:
        """One validated TrainConfig per grid point, in a stable order (family, ablation, preset, fraction, seed,
        steps)."""
        variants: list[tuple[str | None, dict[str, Any]]] = []
        if self.grid.include_baseline:
            variants.append((None, {}))
        variants += list(self.grid.ablations.items())
        out_dir = str(Path(self.out_dir).expanduser().absolute())
        configs: list[TrainConfig] = []
        for (family, family_model), (ablation, model_overrides), point in itertools.product(
                self.family_models(), variants, self.points()):
            preset, fraction, seed, steps = point["preset"], point["fraction"], point["seed"], point["steps"]
            mapping = _deep_merge(_deep_merge(self.base, self.preset_overrides.get(preset, {})), family_model)
            mapping = with_length(mapping, steps)
            mapping["model"] = {**mapping.get("model", {}), "preset": preset, **model_overrides}
            mapping.setdefault("data", {})["fraction"] = fraction
            mapping["seed"] = seed
            mapping["sweep"] = self.name if ablation is None else f"{self.name}-{ablation}"
            mapping["out_dir"] = out_dir
            where = f"grid point preset={preset} fraction={fraction:g} seed={seed}" + (
                f" steps={steps}" if steps else "") + (f" ablation={ablation}" if ablation else "") + (
                f" family={family}" if family else "")
            configs.append(_train_config(mapping, f"{self.source} ({where})"))
        if self.grid.share_trunks:
            configs = share_trunks(configs)
        for (family, family_model), (i, h) in itertools.product(self.family_models(), enumerate(self.holdout)):
            for seed in ([h.seed] if h.seed is not None else self.grid.seeds):
                mapping = _deep_merge(_deep_merge(_deep_merge(self.base, self.preset_overrides.get(h.preset, {})),
                                                  family_model), h.set)
                mapping = with_length(mapping, h.steps)
                mapping["model"] = {**mapping.get("model", {}), "preset": h.preset}
                mapping.setdefault("data", {})["fraction"] = h.fraction
                mapping["seed"] = seed
                mapping["sweep"] = self.holdout_sweep
                mapping["out_dir"] = out_dir
                where = f"holdout[{i}] seed={seed}" + (f" family={family}" if family else "")
                configs.append(_train_config(mapping, f"{self.source} ({where})"))
        seen: dict[str, int] = {}
        for i, cfg in enumerate(configs):
            if cfg.run_id in seen:
                raise ConfigError(f"{self.source}: grid points {seen[cfg.run_id]} and {i} resolve to the same run "
                                  f"{cfg.run_id}; remove the duplicate")
            seen[cfg.run_id] = i
        return configs

    @property
    def holdout_sweep(self) -> str:
        """Sweep name of the held-out runs (fits of the grid use `--sweep <name>`, which excludes them)."""
        return f"{self.name}{HOLDOUT_SUFFIX}"

    def slurm_for(self, preset: str) -> SlurmSpec:
        return self.slurm.for_preset(preset, source=self.source)

    @property
    def db_path(self) -> Path:
        return Path(self.db).expanduser().absolute()


_GRID_OWNED = {("model", "preset"): "grid.presets", ("data", "fraction"): "grid.fractions",
               ("seed",): "grid.seeds", ("sweep",): "name", ("out_dir",): "out_dir"}


def _same_fraction(a: Any, b: float) -> bool:
    """Are `a` (a number from the grid file) and the fraction `b` the same data fraction?"""
    return isinstance(a, (int, float)) and not isinstance(a, bool) and abs(float(a) - b) <= 1e-12


def _matches(value: Any, wanted: Any) -> bool:
    """Does a grid point's value equal `wanted` (or one of its items)? Fractions compare as floats."""
    options = wanted if isinstance(wanted, list) else [wanted]
    if isinstance(value, float):
        return any(_same_fraction(w, value) for w in options)
    return value in options


def share_trunks(configs: list[TrainConfig]) -> list[TrainConfig]:
    """`configs` with every run that shares its first steps with a longer run (the same grid point at another
    length, `fork_step`) set to start from the longest such run's checkpoint at the fork step (`start_from`), and
    that run saving and keeping the checkpoint (`checkpoint_steps`). Order and run ids are unchanged."""
    by_trunk: dict[str, list[int]] = {}
    for i, cfg in enumerate(configs):
        by_trunk.setdefault(json.dumps([cfg.sweep, trunk_identity(cfg)], sort_keys=True), []).append(i)
    out = list(configs)
    for members in by_trunk.values():
        trunk = max(members, key=lambda i: configs[i].steps)
        saves: set[int] = set()
        for i in members:
            step = fork_step(configs[i], configs[trunk]) if i != trunk else None
            if step is not None:
                out[i] = replace(configs[i], start_from=str(checkpoint_path(configs[trunk].run_dir, step)))
                saves.add(step)
        if saves:
            out[trunk] = replace(configs[trunk], checkpoint_steps=sorted(saves | set(configs[trunk].checkpoint_steps)))
    return out


def with_length(mapping: dict[str, Any], steps: int | None) -> dict[str, Any]:
    """`mapping` (TrainConfig keys) trained for `steps` optimizer steps (None: unchanged). The WSD decay of
    `optim` is given for the mapping's own `steps` (default 1000); it scales with the length so that every run
    decays over the same share of its steps to the same final LR (warmup is kept)."""
    if steps is None:
        return mapping
    out = copy.deepcopy(mapping)
    ref = out.get("steps", TrainConfig.steps)
    optim = out.get("optim", {})
    if isinstance(optim, dict) and optim.get("decay_start") is not None and isinstance(ref, int) and ref > 0:
        scale = steps / ref
        optim["decay_start"] = int(round(optim["decay_start"] * scale))
        if optim.get("decay_halve_every") is not None:
            optim["decay_halve_every"] = max(1, int(round(optim["decay_halve_every"] * scale)))
    out["steps"] = steps
    return out


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _train_config(mapping: dict[str, Any], source: str, prefix: str = "") -> TrainConfig:
    """Validate a TrainConfig mapping, including its model section; errors name `source` and the key."""
    cfg = from_mapping(TrainConfig, mapping, source=source, prefix=prefix)
    try:
        model_config(dict(cfg.model), source=f"{source}: {prefix}model")  # the config of its model.family
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return cfg


def _no_family(data: Any, source: str, key: str) -> None:
    """With grid.families, the grid owns model.family."""
    if isinstance(data, dict) and isinstance(data.get("model"), dict) and "family" in data["model"]:
        raise ConfigError(f"{source}: {key}.model.family: set by the grid (grid.families), not here")


def _check_train_section(data: dict[str, Any], source: str, key: str, presets: list[str]) -> None:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: {key}: expected a mapping of TrainConfig keys, got {data!r}")
    for path, owner in _GRID_OWNED.items():
        node: Any = data
        for part in path[:-1]:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict) and path[-1] in node:
            raise ConfigError(f"{source}: {key}.{'.'.join(path)}: set by the grid ({owner}), not here")
    mapping = copy.deepcopy(data)
    mapping.setdefault("model", {})["preset"] = presets[0]
    _train_config(mapping, source, prefix=f"{key}.")


def spec_from_mapping(data: dict[str, Any], source: str = "<mapping>") -> SweepSpec:
    """Validate a grid mapping (as read from YAML). Raises ConfigError naming `source` and the dotted key."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping, got {type(data).__name__}")
    spec = from_mapping(SweepSpec, data, source=source)
    spec.source = source
    base_model = spec.base.get("model", {}) if isinstance(spec.base, dict) else {}
    if spec.grid.families is not None and isinstance(base_model, dict) and "family" in base_model:
        raise ConfigError(f"{source}: base.model.family: set by the grid (grid.families), not here")
    try:
        families = spec.grid.families or [family_of(base_model if isinstance(base_model, dict) else {},
                                                    source=f"{source}: base.model")]
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    # a preset must exist in every family of the grid
    PRESETS = {p: v for p, v in presets(families[0]).items() if all(p in presets(f) for f in families[1:])}
    if spec.grid.families is not None:
        for fam, model in spec.family_models():
            for i, preset in enumerate(spec.grid.presets):
                if preset not in presets(fam):
                    raise ConfigError(f"{source}: grid.presets[{i}]: unknown {fam} preset {preset!r}; choose from "
                                      f"{sorted(presets(fam))} (with grid.families every preset must exist in every "
                                      "family)")
            mapping = _deep_merge(spec.base, model) if isinstance(spec.base, dict) else spec.base
            _check_train_section(mapping, source, f"base (family {fam})", spec.grid.presets)
    for i, preset in enumerate(spec.grid.presets):
        if preset not in PRESETS:
            raise ConfigError(f"{source}: grid.presets[{i}]: unknown model preset {preset!r}; "
                              f"choose from {sorted(PRESETS)}")
    with_families = spec.grid.families is not None
    if not with_families:
        _check_train_section(spec.base, source, "base", spec.grid.presets)
    for preset, overrides in spec.preset_overrides.items():
        if preset not in spec.grid.presets:
            raise ConfigError(f"{source}: preset_overrides.{preset}: not a preset of grid.presets "
                              f"{spec.grid.presets}")
        if with_families:
            _no_family(overrides, source, f"preset_overrides.{preset}")
        for _fam, model in spec.family_models():
            merged = _deep_merge(_deep_merge(spec.base, model), overrides)
            _check_train_section(merged, source, f"preset_overrides.{preset}", [preset])
    for name, overrides in spec.grid.ablations.items():
        if with_families and "family" in overrides:
            raise ConfigError(f"{source}: grid.ablations.{name}.family: set by the grid (grid.families), not here")
        for _fam, fam_over in spec.family_models():
            model = {**_deep_merge(spec.base, fam_over).get("model", {}), "preset": spec.grid.presets[0], **overrides}
            try:
                model_config(model, source=f"{source}: grid.ablations.{name}")  # may switch model.family
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
    for i, h in enumerate(spec.holdout):
        if h.preset not in PRESETS:
            raise ConfigError(f"{source}: holdout[{i}].preset: unknown model preset {h.preset!r}; "
                              f"choose from {sorted(PRESETS)}")
        if with_families:
            _no_family(h.set, source, f"holdout[{i}].set")
        for _fam, model in spec.family_models():
            _check_train_section(_deep_merge(model, h.set) if model else h.set, source,
                                 f"holdout[{i}].set", [h.preset])
    if spec.grid.steps is not None:
        for preset, overrides in spec.preset_overrides.items():
            if isinstance(overrides, dict) and "steps" in overrides:
                raise ConfigError(f"{source}: preset_overrides.{preset}.steps: set by the grid (grid.steps), not here")
    _check_exclude_presets(spec, source, set(PRESETS))
    for preset, overrides in spec.slurm.per_preset.items():
        if preset not in spec.grid.presets:
            raise ConfigError(f"{source}: slurm.per_preset.{preset}: not a preset of grid.presets "
                              f"{spec.grid.presets}")
        if not isinstance(overrides, dict) or "per_preset" in overrides:
            raise ConfigError(f"{source}: slurm.per_preset.{preset}: expected a mapping of slurm keys")
        spec.slurm_for(preset)  # validates the merged block
    return spec


def _check_exclude_presets(spec: SweepSpec, source: str, known_presets: set[str]) -> None:
    """`grid.exclude` names known presets (a typo would silently run the point) and leaves something to run; an entry
    may match nothing (`--set grid.steps=[400]` keeps the file's exclusions valid)."""
    for i, entry in enumerate(spec.grid.exclude):
        names = entry.get("preset", [])
        for name in names if isinstance(names, list) else [names]:
            if name not in known_presets:
                raise ConfigError(f"{source}: grid.exclude[{i}].preset: unknown model preset {name!r}")
    if not spec.points():
        raise ConfigError(f"{source}: grid.exclude: every grid point is excluded")


def load_spec(path: str | Path, overrides: list[str] | None = None) -> SweepSpec:
    """Read and validate a grid file; `overrides` are `key.sub=value` strings (e.g. `base.steps=100`)."""
    data = load_yaml(path)
    source = str(path)
    if overrides:
        data = apply_overrides(data, overrides)
        source += " (with --set overrides)"
    spec = spec_from_mapping(data, source)
    spec.path = str(path)
    spec.overrides = list(overrides or [])
    return spec
