"""Zero-shot evaluation of checkpoints: NVS on RE10K-format benchmarks and the camera pose probe.

NVS protocol (pixelSplat / LVSM / RayZer): for each scene the model predicts the cameras of the 2 context and 3
target views from the images themselves (no ground-truth poses), then renders the targets from the context.
Per image: PSNR (both images clamped to [0,1]), MSE on [-1,1] (the quantity the paper fits), SSIM (Gaussian window 11,
sigma 1.5), LPIPS (VGG, inputs in [0,1]; recorded as missing with the reason when no weights exist). Aggregation:
mean per scene, then mean over scenes; `n` is the scene count. A mean-colour baseline PSNR (every target pixel
predicted as the mean colour of the context views) is recorded as `baseline_psnr` for reference.

Probe protocol (Appendix B.2.3): frozen camera tokens of 24-frame sequences -> 2-layer MLP -> pose, trained on a
split of the sequences and scored on the held-out rest (see `rayder_core.probe`).

`rayder-eval RUN_DIR [--step S | --all] [--db results.duckdb]` evaluates a run's checkpoints after the fact.
"""
from __future__ import annotations

import argparse
import json
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from rayder_core.train_config import BenchmarkSpec, EvalConfig

NVS_METRICS = ("psnr", "mse", "ssim", "lpips")
PROBE_TEST_FRACTION = 0.25


def _resize(images: torch.Tensor, resolution: int) -> torch.Tensor:
    """Resize (..., 3, H, W) images to resolution^2 (antialiased bilinear) if they are not already that size."""
    if images.shape[-1] == resolution and images.shape[-2] == resolution:
        return images
    lead = images.shape[:-3]
    flat = images.reshape(-1, *images.shape[-3:]).float()
    out = F.interpolate(flat, size=(resolution, resolution), mode="bilinear", antialias=True, align_corners=False)
    return out.reshape(*lead, *out.shape[-3:])


@lru_cache(maxsize=4)
def _lpips_for(device: str) -> Any:
    from rayder_core.metrics import LpipsMetric

    return LpipsMetric.create(device)


@torch.no_grad()
def evaluate_nvs(model: torch.nn.Module, spec: BenchmarkSpec, *, resolution: int, device: torch.device,
                 use_lpips: bool = True, progress: bool = False) -> dict:
    """Evaluate NVS on one RE10K-format benchmark. Returns {"bench", "values", "n", "missing"}."""
    from rayder_core.data.benchmarks import Re10kBenchmark
    from rayder_core.metrics import aggregate_scenes, mse_pm1, psnr, ssim

    bench = Re10kBenchmark(spec.path, resolution=resolution)
    lpips_metric = _lpips_for(str(device)) if use_lpips else None
    per_image: dict[str, list[float]] = {m: [] for m in ("psnr", "mse", "ssim", "baseline_psnr")}
    lpips_values: list[float] = []
    scene_ids: list[str] = []
    from tqdm import tqdm

    total = len(bench) if spec.max_scenes is None else min(len(bench), spec.max_scenes)
    for i, scene in enumerate(tqdm(bench, total=total, desc=f"eval {spec.name}", disable=not progress,
                                   leave=False)):
        if spec.max_scenes is not None and i >= spec.max_scenes:
            break
        context = scene.context.to(device).float()[None]   # (1, 2, 3, H, W) in [-1, 1]
        target = scene.target.to(device).float()[None]     # (1, 3, 3, H, W)
        est = model.predict_cameras(torch.cat([context, target], dim=1))
        n_ctx = context.shape[1]
        pred = model.predict_views(context, est.camera[:, :n_ctx], est.camera[:, n_ctx:]).float()[0]
        tgt = target[0]
        per_image["psnr"] += psnr(pred, tgt).tolist()
        per_image["mse"] += mse_pm1(pred, tgt).tolist()
        p01, t01 = ((pred + 1) / 2).clamp(0, 1), ((tgt + 1) / 2).clamp(0, 1)
        per_image["ssim"] += ssim(p01, t01).tolist()
        mean_colour = context[0].mean(dim=(0, 2, 3), keepdim=True).expand_as(tgt)
        per_image["baseline_psnr"] += psnr(mean_colour, tgt).tolist()
        if lpips_metric is not None and getattr(lpips_metric, "available", False):
            lpips_values += lpips_metric(p01, t01).tolist()
        scene_ids += [scene.key] * tgt.shape[0]
    if not scene_ids:
        raise ValueError(f"benchmark {spec.name} at {spec.path}: no scenes to evaluate")
    if lpips_values:
        per_image["lpips"] = lpips_values
    agg = aggregate_scenes(per_image, scene_ids)
    values = {m: v for m, (v, _) in agg.items()}
    n = next(iter(agg.values()))[1]
    missing = {}
    if "lpips" not in values:
        missing["lpips"] = ("disabled in the eval config" if not use_lpips else
                            getattr(lpips_metric, "reason", "LPIPS unavailable"))
    return {"bench": spec.name, "values": values, "n": n, "missing": missing}


@torch.no_grad()
def _probe_tokens(model: torch.nn.Module, spec: BenchmarkSpec, resolution: int, device: torch.device
                  ) -> tuple[torch.Tensor, Any]:
    from rayder_core.data.benchmarks import ProbeSet
    from rayder_core.geometry import Camera

    tokens, cams = [], []
    for i, seq in enumerate(ProbeSet(spec.path)):
        if spec.max_scenes is not None and i >= spec.max_scenes:
            break
        frames = _resize(seq.frames.float(), resolution).to(device)[None]
        tokens.append(model.predict_cameras(frames).camera_tokens[0].float().cpu())
        cams.append(seq.cams)
    if len(tokens) < 2:
        raise ValueError(f"probe set {spec.name} at {spec.path}: needs >= 2 sequences, found {len(tokens)}")
    return torch.stack(tokens), Camera.cat([c[None] for c in cams], dim=0)


def evaluate_probe(model: torch.nn.Module, spec: BenchmarkSpec, *, resolution: int, device: torch.device,
                   iters: int, seed: int = 0) -> dict:
    """Camera pose probe on frozen camera tokens: train on 75% of the sequences, report on the held-out 25%."""
    from rayder_core.probe import evaluate_pose_probe, split_sequences, train_pose_probe

    tokens, cams = _probe_tokens(model, spec, resolution, device)
    train_idx, test_idx = split_sequences(tokens.shape[0], PROBE_TEST_FRACTION, seed=seed)
    with torch.enable_grad():
        result = train_pose_probe(tokens[train_idx], cams[train_idx], iters=iters, seed=seed, progress=False)
    values = evaluate_pose_probe(result, tokens[test_idx], cams[test_idx])
    return {"bench": spec.name, "values": values, "n": int(len(test_idx)), "missing": {}}


def evaluate_model(model: torch.nn.Module, cfg: EvalConfig, *, resolution: int, device: torch.device,
                   seed: int = 0, progress: bool = False) -> list[dict]:
    """Run every benchmark of `cfg` on `model`; a benchmark that cannot be read is recorded as missing."""
    records = []
    for spec in cfg.benchmarks:
        try:
            if spec.kind == "re10k":
                records.append(evaluate_nvs(model, spec, resolution=resolution, device=device,
                                            use_lpips=cfg.lpips, progress=progress))
            else:
                records.append(evaluate_probe(model, spec, resolution=resolution, device=device,
                                              iters=cfg.probe_iters, seed=seed))
        except (FileNotFoundError, ValueError) as exc:
            metrics = NVS_METRICS if spec.kind == "re10k" else ("R@10", "t@0.1", "rot_err_deg", "trans_err")
            reason = f"{type(exc).__name__}: {exc}"
            print(f"rayder-eval: benchmark {spec.name}: {reason}", file=sys.stderr)
            records.append({"bench": spec.name, "values": {}, "n": 0, "missing": {m: reason for m in metrics}})
    return records


def load_model_from_checkpoint(run_dir: Path, checkpoint: Path, device: torch.device) -> torch.nn.Module:
    """Rebuild the run's model from its config.yaml and load a checkpoint (weights_only=True)."""
    from rayder_core.model import RayDer
    from rayder_core.model_config import ModelConfig
    from rayder_core.train_config import load_train_config

    cfg = load_train_config(run_dir / "config.yaml")
    model = RayDer(ModelConfig.from_dict(dict(cfg.model), source=str(run_dir / "config.yaml"))).to(device)
    state = torch.load(checkpoint, map_location=device, weights_only=True)
    model.load_state_dict(state["model"])
    return model.eval()


def main(argv: list[str] | None = None) -> int:
    from rayder_core.results import ResultsStore
    from rayder_core.fileio import append_jsonl, atomic_write_text, read_jsonl
    from rayder_core.train import record_run_dir
    from rayder_core.train_config import load_train_config

    parser = argparse.ArgumentParser(prog="rayder-eval", description="Evaluate a run's checkpoints zero-shot.")
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--step", type=int, default=None, help="checkpoint step (default: the latest)")
    parser.add_argument("--all", action="store_true", help="evaluate every checkpoint")
    parser.add_argument("--db", default="results.duckdb", help="results store ('' to skip)")
    parser.add_argument("--probe-iters", type=int, default=None)
    args = parser.parse_args(argv)
    from rayder_core.yamlconf import ConfigError

    try:
        cfg = load_train_config(args.run_dir / "config.yaml")
    except ConfigError as exc:
        print(f"rayder-eval: {args.run_dir} is not a usable run directory: {exc}", file=sys.stderr)
        return 2
    if args.probe_iters is not None:
        cfg.eval.probe_iters = args.probe_iters
    ckpts = sorted((args.run_dir / "checkpoints").glob("step_*.pt"))
    if args.step is not None:
        ckpts = [c for c in ckpts if int(c.stem.split("_")[1]) == args.step]
    elif not args.all:
        ckpts = ckpts[-1:]
    if not ckpts:
        print(f"rayder-eval: no matching checkpoint in {args.run_dir / 'checkpoints'}", file=sys.stderr)
        return 1
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    for ckpt in ckpts:
        step = int(ckpt.stem.split("_")[1])
        model = load_model_from_checkpoint(args.run_dir, ckpt, device)
        records = evaluate_model(model, cfg.eval, resolution=cfg.data.resolution, device=device, seed=cfg.seed,
                                 progress=True)
        evals_path = args.run_dir / "evals.jsonl"
        names = {r["bench"] for r in records}
        kept = [r for r in read_jsonl(evals_path) if not (r["step"] == step and r["bench"] in names)]
        atomic_write_text(evals_path, "".join(json.dumps(r) + "\n" for r in kept))
        for rec in records:
            append_jsonl(evals_path, {"step": step, **rec})
            vals = ", ".join(f"{k}={v:.4g}" for k, v in rec["values"].items())
            print(f"step {step} {rec['bench']} (n={rec['n']}): {vals}"
                  + "".join(f"\n  {k}: missing ({why})" for k, why in rec["missing"].items()))
    if args.db and (args.run_dir / "state.json").exists():
        record_run_dir(args.run_dir, ResultsStore(args.db))
    return 0


if __name__ == "__main__":
    sys.exit(main())
