"""`evaluate_model`: every benchmark of an eval config on one model; a benchmark that cannot be read is recorded as
missing (one record per reported name, with the reason)."""
from __future__ import annotations

import sys

import torch

from rayder_core.distributed import dist_rank_world
from rayder_core.eval_config import EvalConfig
from rayder_core.evaluation.nvs import NVS_RECORD_METRICS, evaluate_nvs
from rayder_core.evaluation.probe_protocols import PROBE_BENCH_SUFFIX, evaluate_probe_protocols


def evaluate_model(model: torch.nn.Module, cfg: EvalConfig, *, resolution: int, device: torch.device,
                   seed: int = 0, progress: bool = False, rank: int | None = None,
                   world: int | None = None) -> list[dict]:
    """Run every benchmark of `cfg` on `model`; a benchmark that cannot be read is recorded as missing.

    Under torch.distributed every rank must call this (the work is sharded, see `evaluate_nvs` and
    `evaluate_probe`); every rank returns the same records. NVS records carry per-scene rows under "scenes"
    (`write_eval_records` stores them in `eval_scenes.jsonl`, not in `evals.jsonl`)."""
    if rank is None or world is None:
        rank, world = dist_rank_world()
    records = []
    for spec in cfg.benchmarks:
        try:
            if spec.kind == "re10k":
                records.append(evaluate_nvs(model, spec, resolution=resolution, device=device,
                                            use_lpips=cfg.lpips, progress=progress, rank=rank, world=world))
            else:
                records.extend(evaluate_probe_protocols(model, spec, resolution=resolution, device=device,
                                                        iters=cfg.probe_iters, seed=seed, rank=rank, world=world))
        except (FileNotFoundError, ValueError) as exc:
            metrics = NVS_RECORD_METRICS if spec.kind == "re10k" else ("R@10", "t@0.1", "rot_err_deg", "trans_err")
            reason = f"{type(exc).__name__}: {exc}"
            if rank == 0:
                print(f"rayder-eval: benchmark {spec.name}: {reason}", file=sys.stderr)
            names = ([spec.name] if spec.kind == "re10k" else  # one missing record per reported protocol
                     [spec.name + PROBE_BENCH_SUFFIX[p] for p in spec.protocols])
            for name in names:
                ms = ("R@10", "T@10", "rot_err_deg", "trans_err_deg") if name.endswith("-transfer") else metrics
                records.append({"bench": name, "values": {}, "n": 0, "missing": {m: reason for m in ms}})
    return records


