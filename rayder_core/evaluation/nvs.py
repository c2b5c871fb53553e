"""Novel-view-synthesis evaluation on one RE10K-format benchmark (the protocol in `rayder_core.evaluation`).

Per image: PSNR (both images clamped to [0,1]), MSE on [-1,1] (the quantity the paper fits), SSIM (Gaussian window
11, sigma 1.5), LPIPS (VGG, inputs in [0,1]; recorded as missing with the reason when no weights exist), the
PSNR of the context views re-rendered from their own cameras (`recon_psnr`: reconstruction fidelity, nothing to
synthesise), and the PSNR of three baselines that need no model (mean colour, nearest context view, frame blend:
`rayder_core.evaluation.baselines`); mean per scene, then over scenes."""
from __future__ import annotations

import sys
from functools import lru_cache
from typing import Any

import torch
import torch.nn.functional as F
from tqdm import tqdm

from rayder_core.data.evalsets import Re10kBenchmark
from rayder_core.distributed import all_gather, dist_rank_world, raise_first_error, shard_range
from rayder_core.eval_config import BenchmarkSpec
from rayder_core.evaluation.baselines import baseline_psnrs, common_baselines
from rayder_core.metrics import LpipsMetric, aggregate_scenes, mse_pm1, psnr, ssim

# The metrics an NVS record carries (values or a missing reason); fits use a subset (reports.common.FITTED_NVS_METRICS).
NVS_RECORD_METRICS = ("psnr", "mse", "ssim", "lpips")


def resize_square(images: torch.Tensor, resolution: int) -> torch.Tensor:
    """Resize (..., 3, H, W) images to resolution^2 (antialiased bilinear) if they are not already that size."""
    if images.shape[-1] == resolution and images.shape[-2] == resolution:
        return images
    lead = images.shape[:-3]
    flat = images.reshape(-1, *images.shape[-3:]).float()
    out = F.interpolate(flat, size=(resolution, resolution), mode="bilinear", antialias=True, align_corners=False)
    return out.reshape(*lead, *out.shape[-3:])


@lru_cache(maxsize=4)
def _lpips_for(device: str) -> Any:
    return LpipsMetric.create(device)


def temporal_order(context_index: tuple[int, ...], target_index: tuple[int, ...]) -> list[int] | None:
    """Positions in cat([context, target]) sorted by frame index (stable), or None when the indices are missing."""
    frames = list(context_index) + list(target_index)
    if not context_index or not target_index:
        return None
    return sorted(range(len(frames)), key=lambda i: frames[i])


def _predict_in_view_order(model: torch.nn.Module, context: torch.Tensor, target: torch.Tensor,
                           context_index: tuple[int, ...], target_index: tuple[int, ...]) -> Any:
    """Cameras (B, Vc + Vt) of cat([context, target]) in that order. A model with `eval_view_order = "temporal"`
    (E-RayZer: its canonical view is the middle of the given order) gets the views sorted by frame index, as the
    official evaluation feeds them; the cameras are then put back in context-then-target order."""
    frames = torch.cat([context, target], dim=1)
    order = temporal_order(context_index, target_index) if getattr(model, "eval_view_order", None) == "temporal" \
        else None
    if order is None:
        return model.predict_cameras(frames).camera
    idx = torch.tensor(order, device=frames.device)
    cams = model.predict_cameras(frames[:, idx]).camera
    inverse = torch.empty_like(idx)
    inverse[idx] = torch.arange(len(order), device=idx.device)
    return cams[:, inverse]


@torch.no_grad()
def evaluate_nvs(model: torch.nn.Module, spec: BenchmarkSpec, *, resolution: int, device: torch.device,
                 use_lpips: bool = True, progress: bool = False, rank: int | None = None,
                 world: int | None = None) -> dict:
    """Evaluate NVS on one RE10K-format benchmark. Returns {"bench", "values", "n", "missing", "scenes"}.

    Distributed (`world` > 1, default: the initialised process group): rank r evaluates the contiguous block
    `shard_range(n_scenes, r, world)` of scenes, then every rank gathers all ranks' per-image values and aggregates
    them in the global scene order, so the metrics are the same numbers as one process computes. `scenes` holds one
    row per scene: {"scene", "index", and the per-scene mean of each metric}. A rank that fails reports its error to
    all ranks, which then raise the same error (no rank is left waiting in a collective).
    """
    if rank is None or world is None:
        rank, world = dist_rank_world()
    local: dict[str, Any] = {"rows": [], "lpips": None}
    try:
        # Bad scenes are skipped (one log line each, counted in "skipped"); NVS never reads ground-truth cameras.
        bench = Re10kBenchmark(spec.path, resolution=resolution, index_path=spec.index, skip_bad=True, cameras=False)
        total = len(bench) if spec.max_scenes is None else min(len(bench), spec.max_scenes)
        lo, hi = shard_range(total, rank, world)
        lpips_metric = _lpips_for(str(device)) if use_lpips else None
        has_lpips = lpips_metric is not None and getattr(lpips_metric, "available", False)
        local["lpips"] = "ok" if has_lpips else ("disabled in the eval config" if not use_lpips else
                                                 getattr(lpips_metric, "reason", "LPIPS unavailable"))
        for index, scene in tqdm(bench.scenes(lo, hi), total=hi - lo, desc=f"eval {spec.name}",
                                 disable=not progress or rank != 0, leave=False):
            context = scene.context.to(device).float()[None]   # (1, 2, 3, H, W) in [-1, 1]
            target = scene.target.to(device).float()[None]     # (1, 3, 3, H, W)
            n_ctx = context.shape[1]
            cams = _predict_in_view_order(model, context, target, scene.context_index, scene.target_index)
            pred = model.predict_views(context, cams[:, :n_ctx], cams[:, n_ctx:]).float()[0]
            tgt = target[0]
            p01, t01 = ((pred + 1) / 2).clamp(0, 1), ((tgt + 1) / 2).clamp(0, 1)
            values = {"psnr": psnr(pred, tgt).tolist(), "mse": mse_pm1(pred, tgt).tolist(),
                      "ssim": ssim(p01, t01).tolist(),
                      **baseline_psnrs(context[0], tgt, scene.context_index, scene.target_index)}
            if has_lpips:
                values["lpips"] = lpips_metric(p01, t01).tolist()
            # the context views re-rendered from their own estimated cameras: nothing to synthesise, so this is the
            # model's reconstruction fidelity, the ceiling of its novel views
            recon = model.predict_views(context, cams[:, :n_ctx], cams[:, :n_ctx]).float()[0]
            local["rows"].append({"index": index, "scene": scene.key, "values": values,
                                  "recon": psnr(recon, context[0]).tolist()})
        local["skipped"] = list(bench.skipped)
    except (FileNotFoundError, ValueError) as exc:
        local = {"error": str(exc), "error_type": type(exc).__name__}
    parts = all_gather(local, world)
    raise_first_error(parts, f"benchmark {spec.name}")
    rows = sorted((r for part in parts for r in part["rows"]), key=lambda r: r["index"])
    skipped = [s for part in parts for s in part.get("skipped", [])]
    if skipped and rank == 0:
        print(f"rayder-eval: benchmark {spec.name}: skipped {len(skipped)} unreadable scene(s), e.g. "
              f"{skipped[0][0]}: {skipped[0][1]}", file=sys.stderr)
    if not rows:
        raise ValueError(f"benchmark {spec.name} at {spec.path}: no scenes to evaluate"
                         + (f" ({len(skipped)} skipped as unreadable)" if skipped else ""))
    lpips_reasons = [part["lpips"] for part in parts if part["lpips"] != "ok"]
    baselines = common_baselines([r["values"] for r in rows])
    metrics = ["psnr", "mse", "ssim", *baselines] + ([] if lpips_reasons else ["lpips"])
    per_image: dict[str, list[float]] = {m: [v for r in rows for v in r["values"][m]] for m in metrics}
    scene_ids = [r["scene"] for r in rows for _ in r["values"]["psnr"]]
    agg = aggregate_scenes(per_image, scene_ids)
    # one value per context view, not per target: aggregated over its own scene ids
    agg.update(aggregate_scenes({"recon_psnr": [v for r in rows for v in r["recon"]]},
                                [r["scene"] for r in rows for _ in r["recon"]]))
    values = {m: v for m, (v, _) in agg.items()}
    n = next(iter(agg.values()))[1]
    missing = {"lpips": lpips_reasons[0]} if lpips_reasons else {}
    scenes = [{"scene": r["scene"], "index": r["index"],
               **{m: sum(r["values"][m]) / len(r["values"][m]) for m in metrics},
               "recon_psnr": sum(r["recon"]) / len(r["recon"])} for r in rows]
    return {"bench": spec.name, "values": values, "n": n, "missing": missing, "scenes": scenes,
            "skipped": len(skipped)}


