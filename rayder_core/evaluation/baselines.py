"""Novel-view baselines that need no model: what a learned NVS model must beat before its scaling law means anything.

For each target view of a scene (images in [-1, 1]; context views at frame indices `context_index`, the target at
frame index k), three predictions made from the context images and the frame indices alone, never from the target:

- `baseline_psnr`, mean colour: every pixel the mean colour of the context views (no frame index needed);
- `copy_psnr`, nearest context: the context view nearest to k in frame index (a tie: the earlier one);
- `blend_psnr`, frame blend: the two context views that bracket k mixed linearly in frame index,
  (1 - w) c_a + w c_b with w = (k - i_a) / (i_b - i_a); a target outside every bracket gets the nearest view.
  What a model that only interpolates pixels in time would render; at small camera motion it is a strong baseline.

Each is scored like the model (PSNR per image, both images clamped to [0, 1]; mean per scene, then over scenes),
so its PSNR compares directly with the model's. `benchmark_baselines` scores them on a benchmark without any model,
e.g. for a store evaluated before `copy_psnr` and `blend_psnr` were recorded.
"""
from __future__ import annotations

from pathlib import Path

import torch
from tqdm import tqdm

from rayder_core.data.evalsets import Re10kBenchmark
from rayder_core.metrics import aggregate_scenes, psnr

BASELINE_METRICS = ("baseline_psnr", "copy_psnr", "blend_psnr")
"""The recorded baseline PSNRs (dB): mean colour, nearest context view, frame blend (module doc)."""


def _nearest(context_index: tuple[int, ...], k: int) -> int:
    return min(range(len(context_index)), key=lambda j: (abs(context_index[j] - k), context_index[j]))


def blend_weights(context_index: tuple[int, ...], k: int) -> dict[int, float]:
    """{context position: weight} of the frame blend for a target at frame index k: the closest context views on
    either side of k, linear in frame index; the nearest view alone when no view lies on one side (or k is a
    context frame)."""
    before = [j for j, i in enumerate(context_index) if i <= k]
    after = [j for j, i in enumerate(context_index) if i >= k]
    if not before or not after:
        return {_nearest(context_index, k): 1.0}
    a = max(before, key=lambda j: context_index[j])
    b = min(after, key=lambda j: context_index[j])
    if context_index[a] == context_index[b]:
        return {a: 1.0}
    w = (k - context_index[a]) / (context_index[b] - context_index[a])
    return {a: 1.0 - w, b: w}


def baseline_views(context: torch.Tensor, context_index: tuple[int, ...],
                   target_index: tuple[int, ...]) -> dict[str, torch.Tensor]:
    """The baselines' predictions of the target views: {metric name: (Vt, 3, H, W)} from the context views
    (Vc, 3, H, W) in [-1, 1]. Without frame indices (empty tuples) only the mean colour is defined."""
    mean = context.mean(dim=(0, 2, 3), keepdim=True)  # (1, 3, 1, 1)
    if not context_index or not target_index:
        return {"baseline_psnr": mean}
    if len(context_index) != context.shape[0]:
        raise ValueError(f"baseline_views: {context.shape[0]} context views but {len(context_index)} frame indices")
    copy = torch.stack([context[_nearest(context_index, k)] for k in target_index])
    blend = torch.stack([sum(w * context[j] for j, w in blend_weights(context_index, k).items())
                         for k in target_index])
    return {"baseline_psnr": mean.expand(len(target_index), *context.shape[1:]), "copy_psnr": copy,
            "blend_psnr": blend}


def baseline_psnrs(context: torch.Tensor, target: torch.Tensor, context_index: tuple[int, ...],
                   target_index: tuple[int, ...]) -> dict[str, list[float]]:
    """PSNR (dB) per target view of each baseline (`baseline_views`); context (Vc, 3, H, W) and target
    (Vt, 3, H, W) in [-1, 1]."""
    out = {}
    for name, pred in baseline_views(context, context_index, target_index).items():
        out[name] = psnr(pred.expand_as(target), target).tolist()
    return out


def common_baselines(per_scene_values: list[dict]) -> list[str]:
    """The baseline metrics (`BASELINE_METRICS` order) that every scene's values have: copy and blend need frame
    indices, which an evaluation index may leave out for some scenes."""
    return [m for m in BASELINE_METRICS if all(m in values for values in per_scene_values)]


def benchmark_baselines(path: str | Path, resolution: int, *, index: str | Path | None = None,
                        max_scenes: int | None = None, progress: bool = False) -> dict[str, float]:
    """Each baseline's PSNR (dB) on an RE10K-format benchmark at `resolution`^2, aggregated as `evaluate_nvs`
    aggregates a model's (mean per scene, then over scenes), plus "scenes" (how many were scored)."""
    bench = Re10kBenchmark(path, resolution=resolution, index_path=index, skip_bad=True, cameras=False)
    total = len(bench) if max_scenes is None else min(len(bench), max_scenes)
    rows = [(scene.key, baseline_psnrs(scene.context.float(), scene.target.float(), scene.context_index,
                                       scene.target_index))
            for _, scene in tqdm(bench.scenes(0, total), total=total, desc="baselines", disable=not progress,
                                 leave=False)]
    metrics = common_baselines([values for _, values in rows])
    per_image = {m: [v for _, values in rows for v in values[m]] for m in metrics}
    scene_ids = [key for key, values in rows for _ in values["baseline_psnr"]]
    if not scene_ids:
        raise ValueError(f"benchmark {path}: no scenes to score")
    agg = aggregate_scenes(per_image, scene_ids)
    return {**{m: v for m, (v, _) in agg.items()}, "scenes": float(len(set(scene_ids)))}

