"""The trainer of one run on one rank (`Trainer`) and the training loop (`run_training`); see `rayder_core.training`."""
from __future__ import annotations

import contextlib
import json
import math
import os
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch._dynamo
import torch.distributed as dist
import yaml
from tqdm import tqdm

from rayder_core import mup
from rayder_core.data.loader import VideoClipLoader
from rayder_core.data.manifest import Manifest
from rayder_core.distributed import init_distributed
from rayder_core.evaluation.records import write_eval_records
from rayder_core.evaluation.suite import evaluate_model
from rayder_core.fileio import append_jsonl, atomic_write_text, read_jsonl, truncate_jsonl
from rayder_core.metrics import LpipsMetric
from rayder_core.models import build_for_training, model_config, parametrization_of, train_flops_per_step  # model.family selects
from rayder_core.precision import resolve_precision
from rayder_core.runtime import apply_gpu_settings, compile_layers, compile_training_loss, runtime_info
from rayder_core.store import ResultsStore, record_run_dir
from rayder_core.train_config import TrainConfig
from rayder_core.training.checkpoints import CHECKPOINT_DIR, checkpoint_path, latest_checkpoint
from rayder_core.training.schedule import lr_at, lr_phase
from rayder_core.training.signals import StopRequest
from rayder_core.training.trunk import start_from_trunk


class TrainingDiverged(RuntimeError):
    """Too many consecutive steps were skipped (non-finite loss or exploding gradients)."""


@dataclass
class TrainOutcome:
    status: str      # "finished" | "preempted"
    step: int
    run_dir: Path


def _all_reduce_mean(x: float, world: int, device: torch.device) -> float:
    if world == 1:
        return x
    t = torch.tensor([x], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t.item()) / world


class _TrainingLoss(torch.nn.Module):
    """DDP needs the loss computation as `forward`; this wraps `RayDer.training_loss`."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> dict:
        return self.model.training_loss(x, generator=generator)


class Trainer:
    """Owns model, optimizer, data stream and bookkeeping of one run on one rank."""

    def __init__(self, cfg: TrainConfig, *, db: str | None, rank: int, world: int, device: torch.device) -> None:
        self.cfg, self.rank, self.world, self.device = cfg, rank, world, device
        self.run_dir = cfg.run_dir
        # store_mode index: the run directory is the record; `rayder-sweep collect` ingests it (no store writes here)
        self.store = ResultsStore(db) if db and rank == 0 and cfg.store_mode == "direct" else None
        if cfg.batch_size % world:
            raise ValueError(f"batch_size {cfg.batch_size} is not divisible by the world size {world}")
        self.local_batch = cfg.batch_size // world

        source = f"{self.run_dir}/config.yaml: model"
        self.model_cfg = model_config(dict(cfg.model), source=source)
        self.parametrization, base_width = parametrization_of(dict(cfg.model), source)
        # the same seed on every rank: identical initial weights; under muP rescaled per role (rayder_core.mup)
        model, self.mup_rules = build_for_training(dict(cfg.model), cfg.seed, source)
        self.model = model.to(device)
        self.params = sum(p.numel() for p in self.model.parameters())
        apply_gpu_settings(cfg.tf32, device)  # TF32 on CUDA only; NATTEN's fused path where optional
        self.runtime = runtime_info(self.model, device, world)  # recorded in state.json and the store's run config
        self.precision, peaks = self._resolve_precision()
        self.runtime.update(precision=self.precision, requested_precision=cfg.precision,
                            **{f"matmul_peak_{k}_gflops": round(v / 1e9, 1) for k, v in peaks.items()})
        self.ddp = None
        self.loss_fn = self.model.training_loss  # replaced by its compiled form under `compile: loss`
        if world > 1:
            self.ddp = torch.nn.parallel.DistributedDataParallel(
                _TrainingLoss(self.model), device_ids=[device.index] if device.type == "cuda" else None,
                find_unused_parameters=True)
        params = self.model.parameters() if self.mup_rules is None else \
            mup.param_groups(self.model, self.mup_rules, cfg.optim.weight_decay)
        self.optimizer = torch.optim.AdamW(params, lr=cfg.optim.lr, betas=cfg.optim.betas,
                                           weight_decay=cfg.optim.weight_decay)
        self.runtime["parametrization"] = self.parametrization
        if self.mup_rules is not None:
            self.runtime.update(mup_base_width=base_width, mup_roles=mup.summary(self.mup_rules))
        self.generator = torch.Generator(device="cpu").manual_seed(cfg.seed * 1_000_003 + rank)

        manifest_path = Path(cfg.data.manifest)
        if not manifest_path.is_file():
            raise FileNotFoundError(f"{manifest_path}: data manifest not found (create it with `rayder-data "
                                    "manifest` or `rayder-data synth`)")
        self.manifest = Manifest.load(manifest_path)
        self.D = int(self.manifest.num_videos(cfg.data.fraction))
        self.loader = VideoClipLoader(self.manifest.shards(cfg.data.fraction), frames=cfg.data.frames,
                                      fps=cfg.data.fps, resolution=cfg.data.resolution,
                                      batch_size=self.local_batch, seed=cfg.seed, rank=rank, world_size=world,
                                      num_workers=cfg.data.num_workers, cache_mb=cfg.data.cache_mb,
                                      curriculum=cfg.data.curriculum.sampler(), total_batches=cfg.steps,
                                      overlap_source=cfg.data.curriculum.overlap_source,
                                      overlap_extractor=cfg.data.curriculum.overlap_extractor,
                                      decoded_dir=cfg.data.decoded_dir or None)
        self.flops_per_step = float(train_flops_per_step(self.model_cfg, cfg.data.resolution, cfg.data.frames,
                                                         cfg.batch_size))
        self.step = 0
        self.samples = 0
        self.skipped_total = 0
        self.consecutive_skips = 0
        self.elapsed_s = 0.0
        self.started = time.time()
        self.restarts = 0
        self._synced_log_step = -1
        self._skipped_since_log = 0
        self.last_checkpoint: int | None = None
        self._eval_steps: frozenset[int] | None = None
        self.latest: dict[str, float] = {}
        self.lpips = None
        if cfg.perceptual_weight > 0:
            metric = LpipsMetric.create(device)
            if getattr(metric, "reason", None):
                raise RuntimeError(f"perceptual_weight={cfg.perceptual_weight} needs LPIPS: {metric.reason}")
            self.lpips = metric

    def _resolve_precision(self) -> tuple[str, dict[str, float]]:
        """The run's precision: `precision: auto` measures the matmul peaks (rayder_core.precision); under DDP every
        rank uses bf16 only if all ranks chose it. A resumed run reuses its checkpoint's precision (`resume`)."""
        precision, peaks = resolve_precision(self.cfg.precision, self.device)
        if self.world > 1:
            flag = torch.tensor([1.0 if precision == "bf16" else 0.0], device=self.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MIN)
            precision = "bf16" if flag.item() > 0 else "fp32"
        return precision, peaks

    # -------------------------------------------------------------------------------------------- state
    @property
    def flops(self) -> float:
        return self.step * self.flops_per_step

    def write_state(self, status: str, error: str | None = None) -> None:
        if self.rank != 0:
            return
        state = {
            "run_id": self.cfg.run_id, "sweep": self.cfg.sweep, "preset": self.model_cfg.preset,
            "fraction": self.cfg.data.fraction, "D": self.D, "params": self.params, "status": status,
            "step": self.step, "steps": self.cfg.steps, "samples": self.samples, "flops": self.flops,
            "compute_gflop": self.flops / 1e9, "last_checkpoint": self.last_checkpoint, "heartbeat": time.time(),
            "started": self.started, "elapsed_s": self.elapsed_s, "host": socket.gethostname(), "pid": os.getpid(),
            "slurm_job_id": os.environ.get("SLURM_JOB_ID"), "restarts": self.restarts, "latest": self.latest,
            "skipped_total": self.skipped_total, "backend": getattr(self.model, "backend", None), "error": error,
            "runtime": self.runtime, "store_mode": self.cfg.store_mode,
        }
        atomic_write_text(self.run_dir / "state.json", json.dumps(state, indent=1))

    def checkpoint_state(self) -> dict:
        rank_state = {"generator": self.generator.get_state(), "loader": self.loader.state_dict(),
                      "torch_rng": torch.get_rng_state()}
        if self.device.type == "cuda":
            rank_state["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        rank_states = [rank_state]
        if self.world > 1:
            rank_states = [None] * self.world
            dist.all_gather_object(rank_states, rank_state)
        return {
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(), "step": self.step,
            "samples": self.samples, "flops": self.flops, "flops_per_step": self.flops_per_step,
            "skipped_total": self.skipped_total, "consecutive_skips": self.consecutive_skips,
            "elapsed_s": self.elapsed_s, "started": self.started, "restarts": self.restarts,
            "rank_states": rank_states, "run_id": self.cfg.run_id, "precision": self.precision,
        }

    def save_checkpoint(self) -> None:
        state = self.checkpoint_state()  # collective under DDP: every rank calls it
        if self.rank == 0:
            path = checkpoint_path(self.run_dir, self.step)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.tmp")
            torch.save(state, tmp)
            os.replace(tmp, path)  # atomic: a checkpoint file is complete or absent
            truncate_jsonl(self.run_dir / "checkpoints.jsonl", self.step - 1)
            last = max(self.step - 1, 0)  # the checkpoint's LR and phase are those of its last optimizer step
            append_jsonl(self.run_dir / "checkpoints.jsonl",
                          {"step": self.step, "samples": self.samples, "flops": self.flops,
                           "wall_time_s": self.elapsed_s, "lr": lr_at(last, self.cfg),
                           "lr_phase": lr_phase(last, self.cfg)})
            self.last_checkpoint = self.step
            self._prune_checkpoints()
        if self.world > 1:
            dist.barrier()

    def _prune_checkpoints(self) -> None:
        keep = self.cfg.keep_checkpoints
        if keep > 0:
            kept = {checkpoint_path(self.run_dir, s) for s in self.cfg.checkpoint_steps}  # fork points: never pruned
            prunable = [p for p in sorted((self.run_dir / CHECKPOINT_DIR).glob("step_*.pt")) if p not in kept]
            for old in prunable[:-keep]:
                old.unlink()

    def resume(self) -> bool:
        path = latest_checkpoint(self.run_dir)
        if path is None:
            return False
        state = torch.load(path, map_location=self.device, weights_only=True)
        if state.get("run_id") != self.cfg.run_id:
            raise RuntimeError(f"{path}: checkpoint belongs to run {state.get('run_id')}, not {self.cfg.run_id}")
        if len(state["rank_states"]) != self.world:
            raise RuntimeError(f"{path}: saved with {len(state['rank_states'])} ranks; resuming with {self.world} "
                               "would change the data order (resume with the same number of processes)")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        rs = state["rank_states"][self.rank]
        self.generator.set_state(rs["generator"])
        self.loader.load_state_dict(rs["loader"])
        torch.set_rng_state(rs["torch_rng"])
        if "cuda_rng" in rs and self.device.type == "cuda":
            torch.cuda.set_rng_state(rs["cuda_rng"], self.device)
        self.step, self.samples = int(state["step"]), int(state["samples"])
        self.skipped_total = int(state["skipped_total"])
        self.consecutive_skips = int(state["consecutive_skips"])
        self.elapsed_s, self.started = float(state["elapsed_s"]), float(state["started"])
        self.restarts = int(state["restarts"]) + 1
        if state.get("precision") in ("bf16", "fp32"):  # keep the numeric path the run started with
            self.precision = state["precision"]
            self.runtime["precision"] = self.precision
        self.last_checkpoint = self.step
        if self.rank == 0:
            for name in ("metrics.jsonl", "checkpoints.jsonl", "evals.jsonl", "eval_scenes.jsonl"):
                truncate_jsonl(self.run_dir / name, self.step)
            self._synced_log_step = -1
        return True

    def compile_for_remaining_steps(self) -> str:
        """Apply `compile` now that the start step is known (after a resume or a fork from a trunk): only when this
        process trains at least `compile_min_steps` more steps. Returns what was done (recorded as
        `runtime.compile`). `loss` compiles the whole training loss (forward and backward; the first step pays the
        compilation, later processes reuse inductor's on-disk cache); `layers` each transformer layer, which is also
        what `loss` does under DDP (a compiled DDP module is not covered by this project's tests)."""
        cfg, mode = self.cfg, self.cfg.compile_mode
        remaining = cfg.steps - self.step
        if mode == "off":
            done = "off"
        elif not cfg.compiles_from(self.step):
            done = f"eager: {remaining} steps left < compile_min_steps {cfg.compile_min_steps}"
        elif mode == "layers" or self.ddp is not None:
            done = f"layers ({compile_layers(self.model)} modules)"
            if mode == "loss":
                done += " instead of loss under DDP"
        else:
            self.loss_fn = compile_training_loss(self.model)
            done = "loss"
            print(f"{cfg.run_id}: compiling the training loss at its first step ({remaining} steps to train; minutes "
                  "on an empty inductor cache, seconds once it holds the kernels)", file=sys.stderr, flush=True)
        self.runtime["compile"] = done
        return done

    # -------------------------------------------------------------------------------------------- one step
    def train_step(self, x: torch.Tensor) -> dict[str, float]:
        """One optimizer step on a local batch x (B,K,3,H,W) in [-1,1]; returns the logged scalars."""
        cfg = self.cfg
        lr = lr_at(self.step, cfg)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_mult", 1.0)  # muP groups carry their multiplier; standard has none
        autocast = torch.autocast(device_type=self.device.type, dtype=torch.bfloat16,
                                  enabled=self.precision == "bf16")
        with autocast:
            if self.ddp is None:
                out = self.loss_fn(x, generator=self.generator)
            else:
                out = self.ddp(x, generator=self.generator)
            loss = out["loss"]
            if self.lpips is not None:
                render01, target01 = (out["render"].float() + 1) / 2, (out["target"].float() + 1) / 2
                flat = lambda t: t.reshape(-1, *t.shape[-3:])  # noqa: E731  (B, V, 3, H, W) -> (B*V, 3, H, W)
                loss = loss + cfg.perceptual_weight * self.lpips.distance(flat(render01), flat(target01)).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()  # always, even if non-finite: DDP ranks must stay in lockstep
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.optim.grad_clip))
        loss_value = _all_reduce_mean(float(loss.detach()), self.world, self.device)
        factor = cfg.optim.skip_grad_factor  # grad-spike rule: None = off (default)
        too_big = factor is not None and self.step >= cfg.optim.warmup_steps and grad_norm > factor * cfg.optim.grad_clip
        skipped = not math.isfinite(loss_value) or not math.isfinite(grad_norm) or too_big
        if skipped:
            self.optimizer.zero_grad(set_to_none=True)
            self.skipped_total += 1
            self._skipped_since_log += 1
            self.consecutive_skips += 1
        else:
            self.optimizer.step()
            self.consecutive_skips = 0
        mse = _all_reduce_mean(float(out["mse"]), self.world, self.device)
        return {"loss": loss_value, "mse": mse, "psnr": -10 * math.log10(mse / 4) if mse > 0 else float("nan"),
                "lr": lr, "grad_norm": grad_norm, "skipped": int(skipped),
                "focal_mean": float(out.get("focal_mean", float("nan")))}

    # -------------------------------------------------------------------------------------------- eval + store
    def due_for_eval(self, step: int) -> bool:
        """Whether the eval schedule (`EvalConfig.steps_for`: every N steps or log-spaced) evaluates `step`."""
        if self._eval_steps is None:
            self._eval_steps = frozenset(self.cfg.eval.steps_for(self.cfg.steps))
        return step in self._eval_steps

    def evaluate(self) -> None:
        """Evaluate the current weights on every rank, sharded (scenes split by rank, results gathered; see
        `rayder_core.evaluation`); rank 0 writes evals.jsonl / eval_scenes.jsonl. With `eval.mode: job` this does
        nothing: `rayder-eval RUN_DIR --pending` evaluates the saved checkpoints in a separate job."""
        if self.cfg.eval.mode == "job":
            return

        self.model.eval()
        try:
            with torch.random.fork_rng(devices=[]):  # evaluation must not perturb training randomness
                records = evaluate_model(self.model, self.cfg.eval, resolution=self.cfg.data.resolution,
                                         device=self.device, seed=self.cfg.seed, rank=self.rank, world=self.world)
        finally:
            self.model.train()
        if self.rank == 0:
            write_eval_records(self.run_dir, self.step, records)

    def sync_store(self, status: str) -> None:
        if self.store is not None:
            record_run_dir(self.run_dir, self.store, status=status, since_step=self._synced_log_step)
            self._synced_log_step = self.step

    def fail(self, exc: BaseException) -> None:
        self.write_state("failed", error=f"{type(exc).__name__}: {exc}")
        if self.store is not None:
            with contextlib.suppress(Exception):
                record_run_dir(self.run_dir, self.store, status="failed")


# ------------------------------------------------------------------------------------------------ the run
def run_training(cfg: TrainConfig, *, db: str | None = "results.duckdb", progress: bool = True,
                 should_stop: Callable[[int], bool] | None = None) -> TrainOutcome:
    """Train (or resume) the run `cfg`; see the module docstring. `should_stop(step)` lets tests stop early."""
    rank, world, device = init_distributed(cfg.device, timeout_min=cfg.dist_timeout_min)
    run_dir = cfg.run_dir
    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        config_text = yaml.safe_dump(cfg.to_dict(), sort_keys=False)
        cfg_path = run_dir / "config.yaml"
        if not cfg_path.exists():
            atomic_write_text(cfg_path, config_text)
        if cfg.start_from and latest_checkpoint(run_dir) is None:
            print(start_from_trunk(cfg), file=sys.stderr, flush=True)
    if world > 1:
        dist.barrier()
    trainer = Trainer(cfg, db=db, rank=rank, world=world, device=device)
    stop = StopRequest()
    stop.install()
    try:
        resumed = trainer.resume()
        if resumed and trainer.step >= cfg.steps:
            trainer.write_state("finished")
            trainer.sync_store("finished")
            return TrainOutcome("finished", trainer.step, run_dir)
        if resumed and trainer.due_for_eval(trainer.step) and not _has_eval(run_dir, trainer.step):
            trainer.evaluate()  # killed between checkpoint and evaluation last time
        trainer.compile_for_remaining_steps()
        trainer.write_state("running")
        trainer.sync_store("running")
        return _loop(trainer, stop, progress, should_stop)
    except (SystemExit, KeyboardInterrupt):
        # submitit's USR2 handler exits after requeueing (state "preempted" is already written); Ctrl-C or another
        # exit mid-step leaves the last checkpoint as the resume point. Neither is a failure of the run.
        if stop.signum is None:
            trainer.write_state("preempted", error="interrupted (KeyboardInterrupt/SystemExit)")
        raise
    except BaseException as exc:
        trainer.fail(exc)
        raise
    finally:
        stop.uninstall()


def _has_eval(run_dir: Path, step: int) -> bool:
    return any(int(r["step"]) == step for r in read_jsonl(run_dir / "evals.jsonl"))


def _loop(trainer: Trainer, stop: StopRequest, progress: bool,
          should_stop: Callable[[int], bool] | None) -> TrainOutcome:
    cfg = trainer.cfg
    bar = tqdm(total=cfg.steps, initial=trainer.step, desc=cfg.run_id, disable=not progress or trainer.rank != 0,
               dynamic_ncols=True, mininterval=2.0)
    data = iter(trainer.loader)
    t_last = time.time()
    while trainer.step < cfg.steps:
        batch = next(data)
        x = batch["x"].to(trainer.device, non_blocking=True)
        logged = trainer.train_step(x)
        trainer.step += 1
        trainer.samples += cfg.batch_size
        now = time.time()
        trainer.elapsed_s += now - t_last
        t_last = now
        bar.update(1)
        if trainer.consecutive_skips >= cfg.optim.max_consecutive_skips:
            raise TrainingDiverged(
                f"run {cfg.run_id}: {trainer.consecutive_skips} consecutive steps skipped up to step {trainer.step} "
                f"(last loss {logged['loss']:.4g}, grad norm {logged['grad_norm']:.4g}); the last good checkpoint "
                f"is step {trainer.last_checkpoint} in {trainer.run_dir / CHECKPOINT_DIR}")
        if trainer.rank == 0 and (trainer.step % cfg.log_every == 0 or trainer.step == cfg.steps):
            row = {"step": trainer.step, **{k: logged[k] for k in ("loss", "psnr", "lr", "grad_norm", "focal_mean")},
                   "skipped": trainer._skipped_since_log,  # steps skipped since the previous log line
                   "skipped_total": trainer.skipped_total, "flops": trainer.flops}
            trainer._skipped_since_log = 0
            append_jsonl(trainer.run_dir / "metrics.jsonl", row)
            trainer.latest = {"loss": logged["loss"], "psnr": logged["psnr"], "lr": logged["lr"]}
            trainer.write_state("running")
            bar.set_postfix(loss=f"{logged['loss']:.4f}", psnr=f"{logged['psnr']:.2f}", refresh=False)
        at_ckpt = (trainer.step % cfg.checkpoint_every == 0 or trainer.step == cfg.steps
                   or trainer.step in cfg.checkpoint_steps)
        eval_due = trainer.due_for_eval(trainer.step)
        if at_ckpt or eval_due:
            trainer.save_checkpoint()
            if eval_due:
                trainer.evaluate()
            trainer.write_state("running")
            trainer.sync_store("running")
        stop_now = stop.signum is not None or (should_stop is not None and should_stop(trainer.step))
        if trainer.world > 1:
            flag = torch.tensor([float(stop_now)], device=trainer.device)
            dist.all_reduce(flag)
            stop_now = bool(flag.item() > 0)
        if stop_now and trainer.step < cfg.steps:
            if trainer.last_checkpoint != trainer.step:
                trainer.save_checkpoint()
            trainer.write_state("preempted")
            trainer.sync_store("preempted")
            bar.close()
            if stop.signum is not None:
                stop.chain()  # submitit's USR2 handler requeues and exits here
            return TrainOutcome("preempted", trainer.step, trainer.run_dir)
    bar.close()
    trainer.write_state("finished")
    trainer.sync_store("finished")
    return TrainOutcome("finished", trainer.step, trainer.run_dir)
