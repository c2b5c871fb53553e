"""Preflight: check a sweep before it costs cluster time (`rayder-sweep launch` and `--dry-run` run it first).

Every problem is one line that starts with the grid file's dotted key it comes from, e.g.

    base.data.manifest: data/spatialvid/manifest.json does not exist (create it with `rayder-data manifest ...`)
    slurm.gpus_per_node: 8 GPU(s) per node requested, but partition 'debug' has no GPUs configured (sinfo %G: (null))

and when there is any, nothing is submitted (`--skip-preflight` bypasses the checks). What is checked, for the runs
about to be submitted:

- data: each run's manifest exists and loads, its data fraction is in it, the shard files it lists exist, and the
  fraction holds at least `batch_size` videos (one batch of different clips);
- benchmarks: each `eval.benchmarks[i].path` exists and reads as its `kind` (RE10K chunks + evaluation index, or a
  probe set) with at least one scene;
- the run directories (`out_dir`) and the store (`db`) can be written; an existing store opens;
- the executor: local runs that ask for `device: cuda` need a CUDA GPU here; on SLURM (`sinfo`), the partition
  exists (or a default one does), GPUs requested per node are configured on enough of its nodes (`sinfo -o %G`), the
  nodes and CPUs per node fit, and the time limit is within the partition's, for every preset's resources
  (`slurm.per_preset`);
- the estimated training compute of the grid (`rayder_core.models`, evaluation not counted) and, for GPU runs, the
  GPU-hours it means at an assumed utilisation, next to the GPU-hours the time limits reserve; for local CPU runs,
  the **CPU floor**: the least time their training can take here, at 100% of this CPU's matmul peak (one thread's
  peak in the runs' precision, measured before the runs start, x the threads the local executor runs at once).
  Real runs reach a fraction of that peak (the demo prints which), so a time target below the floor is out of reach
  for the grid on this machine, whatever the code does.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from rayder_core.data.evalsets import ProbeSet, Re10kBenchmark
from rayder_core.data.manifest import Manifest
from rayder_core.models import family_of, model_config, train_flops_per_step
from rayder_core.precision import measured_peaks
from rayder_core.store import ResultsStore
from rayder_core.train_config import TrainConfig
from rayder_core.training.trunk import start_step
from sweeps.spec import SlurmSpec, SweepSpec, available_cores

# Assumed GPU throughput for the GPU-hour estimate: dense BF16 peak of an H100/H200 SXM (989 TFLOP/s, NVIDIA's
# datasheet) at 40% model-FLOP utilisation. Both are assumptions, printed with the estimate; override with
# `rayder-sweep launch --gpu-tflops/--mfu`.
GPU_PEAK_TFLOPS = 989.0
ASSUMED_MFU = 0.4


class PreflightError(RuntimeError):
    """The sweep failed its preflight; `problems` holds one line per problem (each naming its YAML key)."""

    def __init__(self, problems: list[str], source: str = "") -> None:
        self.problems = list(problems)
        head = f"{source}: " if source else ""
        super().__init__(f"{head}preflight found {len(problems)} problem(s); nothing was submitted "
                         "(fix them, or --skip-preflight):\n"
                         + "\n".join(f"  {p}" for p in problems))


@dataclass
class Partition:
    """What `sinfo` says about one partition: node groups as (nodes, cpus per node, GPUs per node, gres string)."""

    name: str
    default: bool
    time_limit_min: float | None            # None: no limit
    groups: list[tuple[int, int, int, str]] = field(default_factory=list)

    @property
    def nodes(self) -> int:
        return sum(g[0] for g in self.groups)


@dataclass
class CpuFloor:
    """The least time local CPU runs' training can take on this machine: their FLOPs at 100% of its matmul peak."""

    flops: float                             # training FLOPs of the local CPU runs (3 x forward, exact convention)
    peak_per_thread: dict[str, float]        # precision -> one thread's best square-matmul FLOP/s, measured here
    threads: int                             # threads at once: min(parallel, runs) x threads per run, <= cores
    seconds: float                           # sum over runs of FLOPs / (peak of its precision x threads)

    def achieved(self, seconds: float) -> str:
        """What a training that took `seconds` (wall) reached against the floor, as one phrase."""
        rate = self.flops / seconds
        return (f"{self.flops / 1e12:.3g} TFLOP at {rate / 1e9:.3g} GFLOP/s, {self.seconds / seconds:.0%} of this "
                f"CPU's matmul peak (its floor: {duration(self.seconds)})")

    def summary(self) -> str:
        peaks = ", ".join(f"{p} {v / 1e9:.3g}" for p, v in sorted(self.peak_per_thread.items()))
        return (f"  CPU floor: >= {duration(self.seconds)} of training for {self.flops:.3g} FLOP at 100% of this "
                f"CPU's matmul peak (GFLOP/s per thread, measured now: {peaks}; x {self.threads} "
                f"thread{'s' if self.threads > 1 else ''} at once); runs reach a fraction of it")


def duration(seconds: float) -> str:
    """'12.9 min', or '41.3 s' under a minute."""
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.1f} s"


def cpu_peak_per_thread(precision: str) -> float:
    """One CPU thread's best square-matmul FLOP/s here in `precision` ('fp32' | 'bf16'; 'auto': the better of
    the two, as `precision: auto` would choose), measured once per process (~1-2 s)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        peaks = measured_peaks("cpu")
    finally:
        torch.set_num_threads(threads)
    return max(peaks.values()) if precision == "auto" else peaks[precision]


def cpu_floor(cfgs: list[TrainConfig], flops: list[float], threads_each: int, parallel: int,
              peak_per_thread: Callable[[str], float] = cpu_peak_per_thread) -> CpuFloor | None:
    """The `CpuFloor` of the CPU runs among `cfgs` (training `flops[i]` each) trained `parallel` at a time with
    `threads_each` threads (capped at the cores here); None when none trains on the CPU. `peak_per_thread`:
    precision -> FLOP/s (default: measured now)."""
    cpu = [(c, f) for c, f in zip(cfgs, flops) if c.device == "cpu" and f > 0]
    if not cpu:
        return None
    threads = max(1, min(available_cores(), min(parallel, len(cpu)) * threads_each))
    peaks = {p: peak_per_thread(p) for p in sorted({c.precision for c, _ in cpu})}
    seconds = sum(f / (peaks[c.precision] * threads) for c, f in cpu)
    return CpuFloor(sum(f for _, f in cpu), peaks, threads, seconds)


@dataclass
class PreflightReport:
    """Outcome of `preflight`: problems (empty = OK) and the compute estimate of the runs checked."""

    problems: list[str]
    n_runs: int
    train_flops: float                       # FLOPs of all checked runs' training (3 x forward, exact convention)
    gpu_hours_est: float | None              # at GPU_PEAK_TFLOPS x ASSUMED_MFU (None: no GPU runs)
    gpu_hours_reserved: float | None         # sum over runs of nodes x GPUs/node x time limit (one attempt each)
    notes: list[str] = field(default_factory=list)
    cpu: CpuFloor | None = None              # local CPU runs: the least time their training can take here

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self, *, gpu_tflops: float = GPU_PEAK_TFLOPS, mfu: float = ASSUMED_MFU,
                problems: bool = True) -> str:
        """The estimate, notes and verdict; `problems=False` leaves the problem lines out (PreflightError has them)."""
        pfs_days = self.train_flops / (1e15 * 86400)
        lines = [f"preflight: {self.n_runs} run(s) to submit; training compute {self.train_flops:.3g} FLOP "
                 f"({pfs_days:.3g} PFLOP/s-days; evaluation not counted)"]
        if self.gpu_hours_est is not None:
            lines.append(f"  GPU-hours: ~{self.gpu_hours_est:,.0f} at {mfu:.0%} of {gpu_tflops:g} TFLOP/s per GPU "
                         f"(assumed; --gpu-tflops, --mfu)"
                         + (f"; the time limits reserve up to {self.gpu_hours_reserved:,.0f} GPU-hours per attempt"
                            if self.gpu_hours_reserved else ""))
        if self.cpu is not None:
            lines.append(self.cpu.summary())
        lines += [f"  note: {n}" for n in self.notes]
        if self.ok:
            lines.append("preflight: OK")
        elif problems:
            lines.append(f"preflight: {len(self.problems)} problem(s); nothing submitted (--skip-preflight to bypass):")
            lines += [f"  {p}" for p in self.problems]
        return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ key origins
def _has_key(node: Any, dotted: str) -> bool:
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def _origin(spec: SweepSpec, preset: str, dotted: str, family: str | None = None) -> str:
    """The grid key a run's TrainConfig value `dotted` (e.g. 'data.manifest') comes from, in the merge order of
    `SweepSpec.runs` (base < preset_overrides < family_overrides)."""
    if family is not None and _has_key(spec.grid.family_overrides.get(family, {}), dotted):
        return f"grid.family_overrides.{family}.{dotted}"
    if _has_key(spec.preset_overrides.get(preset, {}), dotted):
        return f"preset_overrides.{preset}.{dotted}"
    return f"base.{dotted}"


def _slurm_origin(spec: SweepSpec, preset: str, key: str) -> str:
    return f"slurm.per_preset.{preset}.{key}" if key in spec.slurm.per_preset.get(preset, {}) else f"slurm.{key}"


# ------------------------------------------------------------------------------------------------ files
def _writable_dir(path: Path) -> tuple[bool, Path]:
    """Whether `path` (a directory, existing or to be created) can be written: the nearest existing ancestor."""
    p = path.absolute()
    while not p.exists():
        p = p.parent
    return (p.is_dir() and os.access(p, os.W_OK | os.X_OK)), p


def _check_manifest(path: str, fraction: float, key: str, fraction_key: str, problems: list[str], cache: dict) -> None:
    if path not in cache:
        p = Path(path)
        if not p.is_file():
            cache[path] = f"{key}: {path} does not exist (create it with `rayder-data synth`, `rayder-data ingest` " \
                          f"or `rayder-data manifest --shards <dir> --fractions 0.01,0.1,1.0`)"
        else:
            try:
                cache[path] = Manifest.load(p)
            except Exception as exc:  # a broken JSON/format of any kind: report, do not crash the preflight
                cache[path] = f"{key}: {path} is not a readable manifest: {type(exc).__name__}: {exc}"
    m = cache[path]
    if isinstance(m, str):
        if m not in problems:
            problems.append(m)
        return
    try:
        m.shards(fraction)
    except KeyError as exc:
        line = f"{fraction_key}: {fraction:g} is not a fraction of {path} ({exc.args[0]})"
        if line not in problems:  # once, not once per preset
            problems.append(line)
        return
    shards = [str((m.root / rel).resolve()) for rel in m.shard_counts]  # every fraction is a prefix of these
    missing = [s for s in shards if not Path(s).is_file()]
    if missing:
        line = (f"{key}: {len(missing)} of the {len(shards)} shard file(s) listed in {path} are missing, "
                f"e.g. {missing[0]}")
        if line not in problems:
            problems.append(line)


def _fraction_key(spec: SweepSpec, fraction: float) -> str:
    """The key path of a run's data fraction: `grid.fractions[i]` for a grid fraction, `data.fraction` otherwise."""
    fractions = list(spec.grid.fractions)
    return f"grid.fractions[{fractions.index(fraction)}]" if fraction in fractions else "data.fraction"


def _check_batch_fits(cfg: TrainConfig, manifest: Any, key: str, problems: list[str]) -> None:
    """A run's data fraction must hold at least one batch of different videos (the loader draws each batch from
    `batch_size` different clips); otherwise the run would fail at its first step."""
    if manifest is None or isinstance(manifest, str):
        return  # an unreadable manifest is reported by _check_manifest
    try:
        videos = manifest.num_videos(cfg.data.fraction)
    except KeyError:
        return  # a fraction not in the manifest is reported by _check_manifest
    if videos < cfg.batch_size:
        line = (f"{key}: {cfg.batch_size} is more than the {videos} video(s) of data fraction {cfg.data.fraction:g} "
                f"in {cfg.data.manifest} (a batch takes batch_size different clips); lower it or drop the fraction")
        if line not in problems:
            problems.append(line)


def _check_benchmark(bench: Any, key: str, problems: list[str], cache: dict) -> None:
    ident = (bench.path, bench.kind, getattr(bench, "index_path", None))
    if ident not in cache:
        cache[ident] = _benchmark_problem(bench, key)
    if cache[ident] and cache[ident] not in problems:
        problems.append(cache[ident])


def _benchmark_problem(bench: Any, key: str) -> str | None:
    path = Path(bench.path)
    what = f"benchmark {bench.name!r} ({bench.kind})"
    if not path.exists():
        hint = ("`rayder-data bench --out <dir>` writes one; real RE10K: pixelSplat's .torch chunks"
                if bench.kind == "re10k" else "`rayder-data bench --out <dir>` writes a probe set next to the benchmark")
        return f"{key}: {bench.path} does not exist ({what}; {hint})"
    try:
        if bench.kind == "re10k":
            index = getattr(bench, "index_path", None)
            b = Re10kBenchmark(path, index_path=index) if index else Re10kBenchmark(path)
            if len(b) == 0:
                return f"{key}: {bench.path}: {what} has no scenes with an evaluation-index entry"
            missing = [c for c in b._chunks() if not (path / b.split / c).is_file()]
            if missing:
                return f"{key}: {bench.path}: {len(missing)} chunk file(s) of {what} are missing, e.g. {missing[0]}"
        elif bench.kind == "probe":
            ps = ProbeSet(path)
            if len(ps) == 0:
                return f"{key}: {bench.path}: {what} has no sequences"
            missing = [k for k in ps.keys if not (path / f"{k}.npz").is_file()]
            if missing:
                return f"{key}: {bench.path}: {len(missing)} sequence file(s) of {what} are missing, e.g. {missing[0]}.npz"
    except Exception as exc:  # wrong format: one line with what the reader said
        return f"{key}: {bench.path} is not a readable {what}: {type(exc).__name__}: {exc}"
    return None


def _check_store(db: Path, problems: list[str]) -> None:
    ok, where = _writable_dir(db.parent)
    if not ok:
        problems.append(f"db: {db}: cannot create or write the store ({where} is not a writable directory)")
        return
    if db.exists():
        if not os.access(db, os.R_OK | os.W_OK):
            problems.append(f"db: {db}: the store exists but is not readable and writable by this user")
            return
        try:
            ResultsStore(db, lock_timeout_s=30).table_counts()
        except Exception as exc:  # newer schema, foreign file, lock timeout ...
            problems.append(f"db: {db}: the store cannot be opened: {exc}")


# ------------------------------------------------------------------------------------------------ SLURM
def parse_slurm_time(text: str) -> float | None:
    """SLURM time limit text -> minutes (None for infinite/UNLIMITED). Formats: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S."""
    text = text.strip()
    if text.lower() in ("infinite", "unlimited", "n/a", ""):
        return None
    days = 0
    if "-" in text:
        d, text = text.split("-", 1)
        days = int(d)
        parts = [int(x) for x in text.split(":")]
        h, m, s = (parts + [0, 0])[:3]
        return days * 1440 + h * 60 + m + s / 60
    parts = [int(x) for x in text.split(":")]
    if len(parts) == 1:
        return float(parts[0])
    if len(parts) == 2:
        return parts[0] + parts[1] / 60
    return parts[0] * 60 + parts[1] + parts[2] / 60


def gres_gpus(gres: str) -> int:
    """GPUs per node in a `sinfo %G` string: 'gpu:8', 'gpu:h100:8(S:0-1)', 'gpu:a100:4,shard:8', '(null)' -> 0."""
    total = 0
    for item in re.split(r",(?![^(]*\))", gres or ""):
        item = item.split("(")[0].strip()
        if not item.startswith("gpu"):
            continue
        fields_ = item.split(":")
        try:
            total += int(fields_[-1])
        except ValueError:
            total += 1
    return total


def sinfo_partitions() -> dict[str, Partition] | str | None:
    """Partitions as `sinfo` reports them; None when sinfo is not installed; a string (what sinfo said) when it is
    installed but fails (e.g. no controller answers)."""
    if shutil.which("sinfo") is None:
        return None
    try:
        proc = subprocess.run(["sinfo", "-h", "-a", "-o", "%P|%l|%D|%c|%G"], capture_output=True, text=True,
                              timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"{type(exc).__name__}: {exc}"
    if proc.returncode != 0:
        return " | ".join(ln.strip() for ln in proc.stderr.splitlines() if ln.strip())[:300] or f"exit {proc.returncode}"
    out = proc.stdout
    parts: dict[str, Partition] = {}
    for line in out.splitlines():
        cols = line.split("|")
        if len(cols) != 5:
            continue
        name, limit, nodes, cpus, gres = cols
        default = name.endswith("*")
        name = name.rstrip("*")
        try:
            limit_min = parse_slurm_time(limit)
        except ValueError:
            limit_min = None
        p = parts.setdefault(name, Partition(name, default, limit_min))
        p.default = p.default or default
        cpus_n = int(cpus.rstrip("+")) if cpus.rstrip("+").isdigit() else 0
        p.groups.append((int(nodes) if nodes.isdigit() else 0, cpus_n, gres_gpus(gres), gres))
    return parts


def slurm_max_array_size() -> int | None:
    """The cluster's MaxArraySize (`scontrol show config`); None when it cannot be read."""
    if shutil.which("scontrol") is None:
        return None
    try:
        out = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, timeout=30,
                             check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"^MaxArraySize\s*=\s*(\d+)", out, re.MULTILINE)
    return int(m.group(1)) if m else None


def check_slurm_resources(spec: SweepSpec, presets: list[str], partitions: dict[str, Partition] | str | None,
                          problems: list[str], notes: list[str]) -> None:
    """Each preset's SLURM resources against the partitions `sinfo` reports (one problem line per key).
    `partitions` as returned by `sinfo_partitions` (None: not checked; a string: sinfo failed, a problem)."""
    if partitions is None:
        notes.append("sinfo is not available: partitions, GPUs and time limits were not checked")
        return
    if isinstance(partitions, str):
        problems.append(f"slurm: sinfo fails, so jobs cannot be submitted here ({partitions}); start/reach the "
                        "SLURM controller, or use --executor local")
        return
    for preset in presets:
        res: SlurmSpec = spec.slurm_for(preset)
        k = lambda key: _slurm_origin(spec, preset, key)  # noqa: E731
        if res.partition:
            names = [n.strip() for n in res.partition.split(",")]
            unknown = [n for n in names if n not in partitions]
            if unknown:
                problems.append(f"{k('partition')}: partition {unknown[0]!r} does not exist (sinfo lists: "
                                f"{', '.join(sorted(partitions)) or 'none'})")
                continue
            part = partitions[names[0]]
        else:
            defaults = [p for p in partitions.values() if p.default]
            if not defaults:
                problems.append(f"{k('partition')}: not set and the cluster has no default partition (sinfo lists: "
                                f"{', '.join(sorted(partitions)) or 'none'})")
                continue
            part = defaults[0]
        fit = [g for g in part.groups if g[2] >= res.gpus_per_node and g[1] >= res.tasks_per_node * res.cpus_per_task]
        if res.gpus_per_node:
            with_gpus = sum(g[0] for g in part.groups if g[2] >= res.gpus_per_node)
            if with_gpus == 0:
                most = max((g[2] for g in part.groups), default=0)
                gres = ", ".join(sorted({g[3] for g in part.groups}))
                problems.append(f"{k('gpus_per_node')}: {res.gpus_per_node} GPU(s) per node requested"
                                + (f" for preset {preset}" if len(presets) > 1 else "")
                                + f", but partition {part.name!r} "
                                + (f"has no GPUs configured (sinfo %G: {gres})" if most == 0 else
                                   f"has at most {most} GPU(s) per node (sinfo %G: {gres})"))
                continue
            if with_gpus < res.nodes:
                problems.append(f"{k('nodes')}: {res.nodes} node(s) with {res.gpus_per_node} GPU(s) requested for "
                                f"preset {preset}, but partition {part.name!r} has {with_gpus} such node(s)")
                continue
        if part.nodes < res.nodes:
            problems.append(f"{k('nodes')}: {res.nodes} node(s) requested for preset {preset}, but partition "
                            f"{part.name!r} has {part.nodes}")
        elif sum(g[0] for g in fit) < res.nodes:
            most = max((g[1] for g in part.groups), default=0)
            problems.append(f"{k('cpus_per_task')}: {res.tasks_per_node} task(s) x {res.cpus_per_task} CPU(s) per node "
                            f"requested for preset {preset}, but the nodes of partition {part.name!r} have at most "
                            f"{most} CPUs")
        if part.time_limit_min is not None and res.time_min > part.time_limit_min:
            problems.append(f"{k('time_min')}: {res.time_min} min exceeds the time limit of partition {part.name!r} "
                            f"({part.time_limit_min:g} min)")


# ------------------------------------------------------------------------------------------------ compute
def run_train_flops(cfg: TrainConfig, cache: dict | None = None) -> float:
    """Training FLOPs a launch of one run costs: analytic FLOPs per step (rayder_core.models, exact convention) x
    the steps it trains (a run that starts from its trunk's checkpoint trains only the steps after it)."""
    cache = {} if cache is None else cache
    key = (repr(sorted(cfg.model.items())), cfg.data.resolution, cfg.data.frames, cfg.batch_size)
    if key not in cache:
        mc = model_config(dict(cfg.model))
        cache[key] = float(train_flops_per_step(mc, cfg.data.resolution, cfg.data.frames, cfg.batch_size))
    return cache[key] * (cfg.steps - start_step(cfg))


# ------------------------------------------------------------------------------------------------ main entry
def preflight(spec: SweepSpec, cfgs: list[TrainConfig], executor: str, *,
              partitions: dict[str, Partition] | str | None = "query",
              gpu_tflops: float = GPU_PEAK_TFLOPS, mfu: float = ASSUMED_MFU,
              peak_per_thread: Callable[[str], float] = cpu_peak_per_thread) -> PreflightReport:
    """Check the runs `cfgs` of `spec` for `executor` ('slurm' | 'local'); see the module docstring.

    `partitions`: the sinfo view to check SLURM resources against ("query": ask sinfo now; see sinfo_partitions).
    `peak_per_thread`: precision -> one CPU thread's matmul FLOP/s, for the CPU floor of local CPU runs (default:
    measured now).
    """
    problems: list[str] = []
    notes: list[str] = []
    manifests: dict = {}
    benches: dict = {}
    flop_cache: dict = {}
    total_flops = 0.0
    run_flops: list[float] = []
    gpu_flops = 0.0
    reserved = 0.0
    for cfg in cfgs:
        preset = cfg.model["preset"]
        family = family_of(dict(cfg.model)) if spec.grid.families else None
        _check_manifest(cfg.data.manifest, cfg.data.fraction, _origin(spec, preset, "data.manifest", family),
                        _fraction_key(spec, cfg.data.fraction), problems, manifests)
        _check_batch_fits(cfg, manifests.get(cfg.data.manifest), _origin(spec, preset, "batch_size", family),
                          problems)
        where = _origin(spec, preset, "eval.benchmarks", family)
        for i, bench in enumerate(cfg.eval.benchmarks):
            _check_benchmark(bench, f"{where}[{i}].path", problems, benches)
        try:
            flops = run_train_flops(cfg, flop_cache)
        except Exception as exc:  # the model config validated already; do not let an estimate break the check
            notes.append(f"no compute estimate for {cfg.run_id}: {exc}")
            flops = 0.0
        total_flops += flops
        run_flops.append(flops)
        gpu_run = (executor == "slurm" and spec.slurm_for(preset).gpus_per_node > 0) or \
            (executor != "slurm" and cfg.device == "cuda")
        if gpu_run:
            gpu_flops += flops
        if executor == "slurm":
            res = spec.slurm_for(preset)
            reserved += res.nodes * res.gpus_per_node * res.time_min / 60
    ok, where = _writable_dir(Path(spec.out_dir))
    if not ok:
        problems.append(f"out_dir: {spec.out_dir}: run directories cannot be created ({where} is not writable)")
    _check_store(spec.db_path, problems)
    presets = sorted({c.model["preset"] for c in cfgs})
    if executor == "slurm":
        parts = sinfo_partitions() if partitions == "query" else partitions
        check_slurm_resources(spec, presets, parts, problems, notes)  # type: ignore[arg-type]
        for preset in presets:
            if spec.slurm_for(preset).gpus_per_node == 0 and any(
                    c.device == "cuda" for c in cfgs if c.model["preset"] == preset):
                problems.append(f"{_slurm_origin(spec, preset, 'gpus_per_node')}: 0, but {_origin(spec, preset, 'device')} "
                                f"is cuda (preset {preset}): the job would get no GPU")
    elif any(c.device == "cuda" for c in cfgs):
        if not torch.cuda.is_available():
            cuda_preset = next(c.model["preset"] for c in cfgs if c.device == "cuda")
            problems.append(f"{_origin(spec, cuda_preset, 'device')}: cuda, but the local executor has no CUDA GPU "
                            "on this machine (use a GPU machine, SLURM, or --set base.device=cpu)")
    gpu_hours = gpu_flops / (gpu_tflops * 1e12 * mfu) / 3600 if gpu_flops else None
    floor = None
    if executor != "slurm" and not problems:
        floor = cpu_floor(cfgs, run_flops, spec.local.threads_each(), spec.local.parallel, peak_per_thread)
    return PreflightReport(problems, len(cfgs), total_flops, gpu_hours, reserved or None, notes, floor)

