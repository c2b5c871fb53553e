"""Zero-shot evaluation of checkpoints: NVS on RE10K-format benchmarks and the camera pose probe.

NVS protocol (pixelSplat / LVSM / RayZer): for each scene the model predicts the cameras of the 2 context and 3
target views from the images themselves (no ground-truth poses; E-RayZer gets them sorted by frame index, as its
official evaluation), then renders the targets from the context.
Per image: PSNR (both images clamped to [0,1]), MSE on [-1,1] (the quantity the paper fits), SSIM (Gaussian window 11,
sigma 1.5), LPIPS (VGG, inputs in [0,1]; recorded as missing with the reason when no weights exist). Aggregation:
mean per scene, then mean over scenes; `n` is the scene count. A mean-colour baseline PSNR (every target pixel
predicted as the mean colour of the context views) is recorded as `baseline_psnr` for reference.

Probe protocol (Appendix B.2.3): frozen camera tokens of 24-frame sequences -> 2-layer MLP -> pose, trained on a
split of the sequences and scored on the held-out rest (see `rayder_core.probe`).

Distributed: every rank calls `evaluate_model`; scenes (and probe sequences) are split into contiguous blocks by
rank, per-image values and tokens are gathered, metrics aggregated in the global scene order (the same numbers as
one process), and the probe MLP is trained on rank 0 from the gathered tokens, its metrics broadcast.

`rayder-eval RUN_DIR [--step S | --all | --pending] [--db results.duckdb]` evaluates a run's checkpoints after the
fact (under torchrun/srun with several processes: sharded as above). `--pending` is the job of `eval.mode: job`.
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


def dist_rank_world() -> tuple[int, int]:
    """(rank, world size) of the initialised default process group, or (0, 1) without one."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def shard_range(total: int, rank: int, world: int) -> tuple[int, int]:
    """Contiguous block [start, stop) of `total` items owned by `rank` of `world` (sizes differ by at most 1)."""
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} is not in 0..{world - 1}")
    return total * rank // world, total * (rank + 1) // world


def _all_gather(obj: Any, world: int) -> list[Any]:
    """Every rank's `obj` (picklable), in rank order, on every rank; [obj] without a process group."""
    if world == 1:
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * world
    dist.all_gather_object(out, obj)
    return out


def _broadcast(obj: Any, world: int) -> Any:
    """Rank 0's `obj` on every rank."""
    if world == 1:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _raise_first_error(parts: list[dict], where: str) -> None:
    """Re-raise (on every rank alike) the first error a rank reported, so all ranks take the same path."""
    for rank, part in enumerate(parts):
        if "error" in part:
            kind = FileNotFoundError if part["error_type"] == "FileNotFoundError" else ValueError
            raise kind(f"{part['error']} (rank {rank}, {where})")


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
    from rayder_core.data.evalsets import Re10kBenchmark
    from rayder_core.metrics import aggregate_scenes, mse_pm1, psnr, ssim

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
        from tqdm import tqdm

        for index, scene in tqdm(bench.scenes(lo, hi), total=hi - lo, desc=f"eval {spec.name}",
                                 disable=not progress or rank != 0, leave=False):
            context = scene.context.to(device).float()[None]   # (1, 2, 3, H, W) in [-1, 1]
            target = scene.target.to(device).float()[None]     # (1, 3, 3, H, W)
            n_ctx = context.shape[1]
            cams = _predict_in_view_order(model, context, target, scene.context_index, scene.target_index)
            pred = model.predict_views(context, cams[:, :n_ctx], cams[:, n_ctx:]).float()[0]
            tgt = target[0]
            p01, t01 = ((pred + 1) / 2).clamp(0, 1), ((tgt + 1) / 2).clamp(0, 1)
            mean_colour = context[0].mean(dim=(0, 2, 3), keepdim=True).expand_as(tgt)
            values = {"psnr": psnr(pred, tgt).tolist(), "mse": mse_pm1(pred, tgt).tolist(),
                      "ssim": ssim(p01, t01).tolist(), "baseline_psnr": psnr(mean_colour, tgt).tolist()}
            if has_lpips:
                values["lpips"] = lpips_metric(p01, t01).tolist()
            local["rows"].append({"index": index, "scene": scene.key, "values": values})
        local["skipped"] = list(bench.skipped)
    except (FileNotFoundError, ValueError) as exc:
        local = {"error": str(exc), "error_type": type(exc).__name__}
    parts = _all_gather(local, world)
    _raise_first_error(parts, f"benchmark {spec.name}")
    rows = sorted((r for part in parts for r in part["rows"]), key=lambda r: r["index"])
    skipped = [s for part in parts for s in part.get("skipped", [])]
    if skipped and rank == 0:
        print(f"rayder-eval: benchmark {spec.name}: skipped {len(skipped)} unreadable scene(s), e.g. "
              f"{skipped[0][0]}: {skipped[0][1]}", file=sys.stderr)
    if not rows:
        raise ValueError(f"benchmark {spec.name} at {spec.path}: no scenes to evaluate"
                         + (f" ({len(skipped)} skipped as unreadable)" if skipped else ""))
    lpips_reasons = [part["lpips"] for part in parts if part["lpips"] != "ok"]
    metrics = ["psnr", "mse", "ssim", "baseline_psnr"] + ([] if lpips_reasons else ["lpips"])
    per_image: dict[str, list[float]] = {m: [v for r in rows for v in r["values"][m]] for m in metrics}
    scene_ids = [r["scene"] for r in rows for _ in r["values"]["psnr"]]
    agg = aggregate_scenes(per_image, scene_ids)
    values = {m: v for m, (v, _) in agg.items()}
    n = next(iter(agg.values()))[1]
    missing = {"lpips": lpips_reasons[0]} if lpips_reasons else {}
    scenes = [{"scene": r["scene"], "index": r["index"],
               **{m: sum(r["values"][m]) / len(r["values"][m]) for m in metrics}} for r in rows]
    return {"bench": spec.name, "values": values, "n": n, "missing": missing, "scenes": scenes,
            "skipped": len(skipped)}


@torch.no_grad()
def _probe_tokens(model: torch.nn.Module, spec: BenchmarkSpec, resolution: int, device: torch.device,
                  rank: int = 0, world: int = 1) -> tuple[torch.Tensor, Any, int, Any]:
    """Frozen camera tokens (S, T, width), cameras (S, T) of the readable probe sequences, in the set's order, the
    number of sequences skipped as unreadable (one line each; see `ProbeSet(skip_bad=True)`) and the model's own
    predicted cameras (S, T) (float64, CPU; for RPA, which needs no probe).

    Distributed: rank r extracts the tokens of its contiguous block of sequences; every rank gets all of them."""
    from rayder_core.data.evalsets import ProbeSet
    from rayder_core.geometry import Camera

    local: dict[str, Any] = {"tokens": [], "cams": [], "pred": []}
    try:
        probe_set = ProbeSet(spec.path, skip_bad=True)
        total = len(probe_set) if spec.max_scenes is None else min(len(probe_set), spec.max_scenes)
        lo, hi = shard_range(total, rank, world)
        for seq in probe_set.sequences(lo, hi):
            frames = _resize(seq.frames.float(), resolution).to(device)[None]
            est = model.predict_cameras(frames)
            local["tokens"].append(est.camera_tokens[0].float().cpu())
            local["cams"].append(seq.cams)
            local["pred"].append(est.camera[0].to(device="cpu", dtype=torch.float64))
        local["skipped"] = list(probe_set.skipped)
    except (FileNotFoundError, ValueError) as exc:
        local = {"error": str(exc), "error_type": type(exc).__name__}
    parts = _all_gather(local, world)
    _raise_first_error(parts, f"probe set {spec.name}")
    tokens = [t for part in parts for t in part["tokens"]]
    cams = [c for part in parts for c in part["cams"]]
    skipped = [s for part in parts for s in part.get("skipped", [])]
    if skipped and rank == 0:
        print(f"rayder-eval: probe set {spec.name}: skipped {len(skipped)} unreadable sequence(s), e.g. "
              f"{skipped[0][0]}: {skipped[0][1]}", file=sys.stderr)
    if len(tokens) < 2:
        raise ValueError(f"probe set {spec.name} at {spec.path}: needs >= 2 sequences, found {len(tokens)}"
                         + (f" ({len(skipped)} skipped as unreadable)" if skipped else ""))
    pred = [c for part in parts for c in part["pred"]]
    return (torch.stack(tokens), Camera.cat([c[None] for c in cams], dim=0), len(skipped),
            Camera.cat([c[None] for c in pred], dim=0))


def evaluate_probe(model: torch.nn.Module, spec: BenchmarkSpec, *, resolution: int, device: torch.device,
                   iters: int, seed: int = 0, rank: int | None = None, world: int | None = None,
                   tokens_cams: tuple[torch.Tensor, Any, int, Any] | None = None) -> dict:
    """Camera pose probe on frozen camera tokens: train on 75% of the sequences, report on the held-out 25%.

    Distributed: token extraction (the model's forward passes) is sharded over the ranks and the tokens gathered;
    the probe MLP is then trained and scored on rank 0 only, from the gathered tokens (a 2-layer MLP: seconds, far
    inside the process-group timeout), and its metrics are broadcast, so every rank returns rank 0's numbers.
    """
    from rayder_core.probe import evaluate_pose_probe, split_sequences, train_pose_probe

    if rank is None or world is None:
        rank, world = dist_rank_world()
    tokens, cams, skipped, pred = tokens_cams or _probe_tokens(model, spec, resolution, device, rank, world)
    values = None
    if rank == 0:
        train_idx, test_idx = split_sequences(tokens.shape[0], PROBE_TEST_FRACTION, seed=seed)
        with torch.enable_grad():
            result = train_pose_probe(tokens[train_idx], cams[train_idx], iters=iters, seed=seed, progress=False)
        values = {"values": evaluate_pose_probe(result, tokens[test_idx], cams[test_idx]), "n": int(len(test_idx))}
        # RPA@5/15/30 of the model's own predicted cameras over all sequences (no probe needed; any model family)
        from rayder_core.metrics import relative_pose_accuracy

        # published definition ('rpa@k', the paper's) and the strict one ('rpa_strict@k'), both stored by name
        for definition in ("published", "strict"):
            rpa = relative_pose_accuracy(pred, cams, definition=definition)
            values["values"].update({k: v for k, v in rpa.items() if k != "rpa_pairs"})
    values = _broadcast(values, world)
    return {"bench": spec.name, "values": values["values"], "n": values["n"], "missing": {}, "skipped": skipped}


PROBE_BENCH_SUFFIX = {"cross_scene": "", "per_scene": "-per-scene", "transfer": "-transfer"}


def evaluate_probe_protocols(model: torch.nn.Module, spec: BenchmarkSpec, *, resolution: int,
                             device: torch.device, iters: int, seed: int = 0, rank: int | None = None,
                             world: int | None = None) -> list[dict]:
    """The probe protocols `spec.protocols` of one probe set, one record each, labelled by benchmark name:
    cross_scene -> spec.name (`evaluate_probe`), per_scene -> spec.name + '-per-scene' (`probe.per_scene_probe`,
    n = sequences), transfer -> spec.name + '-transfer' (`probe.transfer_trajectory` on the pairs of consecutive
    sequences (s, s+1), n = pairs). Camera tokens are extracted once for both probes."""
    from rayder_core.probe import per_scene_probe

    if rank is None or world is None:
        rank, world = dist_rank_world()
    records = []
    tokens_cams = None
    if {"cross_scene", "per_scene"} & set(spec.protocols):
        tokens_cams = _probe_tokens(model, spec, resolution, device, rank, world)
    for protocol in spec.protocols:
        name = spec.name + PROBE_BENCH_SUFFIX[protocol]
        if protocol == "cross_scene":
            records.append(evaluate_probe(model, spec, resolution=resolution, device=device, iters=iters, seed=seed,
                                          rank=rank, world=world, tokens_cams=tokens_cams))
        elif protocol == "per_scene":
            values = None
            if rank == 0:
                with torch.enable_grad():
                    values = per_scene_probe(tokens_cams[0], tokens_cams[1], iters=iters, seed=seed)
            values = _broadcast(values, world)
            records.append({"bench": name, "values": values, "n": int(tokens_cams[0].shape[0]), "missing": {},
                            "skipped": tokens_cams[2]})
        else:
            values, n, skipped = _transfer_values(model, spec, resolution, device, rank, world)
            records.append({"bench": name, "values": values, "n": n, "missing": {}, "skipped": skipped})
    return records


@torch.no_grad()
def _transfer_values(model: torch.nn.Module, spec: BenchmarkSpec, resolution: int, device: torch.device,
                     rank: int, world: int) -> tuple[dict[str, float], int, int]:
    """XFactor TPS over the pairs (s, s+1 mod S) of the probe set; pairs sharded over the ranks. Returns the
    metrics, the number of pairs evaluated and the number skipped (a sequence of the pair unreadable)."""
    from rayder_core.data.evalsets import ProbeSet
    from rayder_core.geometry import Camera
    from rayder_core.probe import transfer_errors, transfer_trajectory

    probe_set = ProbeSet(spec.path, skip_bad=True)
    total = len(probe_set) if spec.max_scenes is None else min(len(probe_set), spec.max_scenes)
    if total < 2:
        raise ValueError(f"probe set {spec.name} at {spec.path}: transfer needs >= 2 sequences, found {total}")
    lo, hi = shard_range(total, rank, world)
    local: dict[str, Any] = {"pairs": [], "skipped": 0}
    for s in range(lo, hi):
        a, b = (next(iter(probe_set.sequences(i, i + 1)), None) for i in (s, (s + 1) % total))
        if a is None or b is None:
            local["skipped"] += 1
            continue
        fa, fb = (_resize(q.frames.float(), resolution).to(device) for q in (a, b))
        ref, est = transfer_trajectory(model, fa, fb)
        local["pairs"].append((ref.to("cpu"), est.to("cpu")))
    parts = _all_gather(local, world)
    pairs = [p for part in parts for p in part["pairs"]]
    skipped = sum(part["skipped"] for part in parts)
    if not pairs:
        raise ValueError(f"probe set {spec.name} at {spec.path}: no readable pair for pose transfer "
                         f"({skipped} skipped)")
    ref = Camera.cat([r[None] for r, _ in pairs], dim=0)
    est = Camera.cat([e[None] for _, e in pairs], dim=0)
    return transfer_errors(ref, est), len(pairs), skipped


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
            metrics = NVS_METRICS if spec.kind == "re10k" else ("R@10", "t@0.1", "rot_err_deg", "trans_err")
            reason = f"{type(exc).__name__}: {exc}"
            if rank == 0:
                print(f"rayder-eval: benchmark {spec.name}: {reason}", file=sys.stderr)
            names = ([spec.name] if spec.kind == "re10k" else  # one missing record per reported protocol
                     [spec.name + PROBE_BENCH_SUFFIX[p] for p in spec.protocols])
            for name in names:
                ms = ("R@10", "T@10", "rot_err_deg", "trans_err_deg") if name.endswith("-transfer") else metrics
                records.append({"bench": name, "values": {}, "n": 0, "missing": {m: reason for m in ms}})
    return records


EVAL_SCENES_FILE = "eval_scenes.jsonl"


def write_eval_records(run_dir: Path, step: int, records: list[dict], *, replace: bool = False) -> None:
    """Append a checkpoint's records to `evals.jsonl` (metrics) and `eval_scenes.jsonl` (one line per scene:
    step, bench, scene, index and that scene's metrics). `replace` first drops earlier lines of the same
    (step, bench), as a re-evaluation does."""
    from rayder_core.fileio import append_jsonl, atomic_write_text, read_jsonl

    run_dir = Path(run_dir)
    if replace:
        names = {r["bench"] for r in records}
        for name in ("evals.jsonl", EVAL_SCENES_FILE):
            path = run_dir / name
            if path.exists():
                kept = [r for r in read_jsonl(path) if not (r["step"] == step and r["bench"] in names)]
                atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in kept))
    for rec in records:
        append_jsonl(run_dir / "evals.jsonl", {"step": step, **{k: v for k, v in rec.items() if k != "scenes"}})
        if rec.get("scenes"):
            with open(run_dir / EVAL_SCENES_FILE, "a") as fh:
                fh.write("".join(json.dumps({"step": step, "bench": rec["bench"], **row}) + "\n"
                                 for row in rec["scenes"]))


def load_model_from_checkpoint(run_dir: Path, checkpoint: Path, device: torch.device) -> torch.nn.Module:
    """Rebuild the run's model from its config.yaml and load a checkpoint (weights_only=True)."""
    from rayder_core.models import build_model
    from rayder_core.train_config import load_train_config

    cfg = load_train_config(run_dir / "config.yaml")
    model = build_model(dict(cfg.model), source=str(run_dir / "config.yaml")).to(device)  # any model.family
    state = torch.load(checkpoint, map_location=device, weights_only=True)
    model.load_state_dict(state["model"])
    return model.eval()


def due_steps(cfg: Any, steps: list[int]) -> list[int]:
    """The checkpoint steps among `steps` that the run's eval schedule evaluates (`EvalConfig.steps_for`: every
    `eval.every` steps from `eval.from_step`, or log-spaced, and the final step)."""
    due = set(cfg.eval.steps_for(cfg.steps))
    return [s for s in steps if s in due]


def main(argv: list[str] | None = None) -> int:
    from rayder_core.distributed import init_distributed
    from rayder_core.fileio import read_jsonl
    from rayder_core.store import record_run_dir
    from rayder_core.store import ResultsStore
    from rayder_core.train_config import load_train_config

    parser = argparse.ArgumentParser(
        prog="rayder-eval", description="Evaluate a run's checkpoints zero-shot. Under torchrun/srun with several "
        "processes the scenes are sharded over the ranks (same numbers as one process).")
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--step", type=int, default=None, help="checkpoint step (default: the latest)")
    parser.add_argument("--all", action="store_true", help="evaluate every checkpoint")
    parser.add_argument("--pending", action="store_true",
                        help="evaluate every checkpoint the eval schedule asks for that has no evals.jsonl line "
                             "yet (the job of `eval.mode: job`; idempotent)")
    parser.add_argument("--db", default="results.duckdb",
                        help="results store ('' to skip; ignored with store_mode: index, collect instead)")
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
    step_of = {c: int(c.stem.split("_")[1]) for c in ckpts}
    if args.step is not None:
        ckpts = [c for c in ckpts if step_of[c] == args.step]
    elif args.pending:
        done = {int(r["step"]) for r in read_jsonl(args.run_dir / "evals.jsonl")}
        due = set(due_steps(cfg, list(step_of.values())))
        ckpts = [c for c in ckpts if step_of[c] in due and step_of[c] not in done]
        if not ckpts:
            print(f"rayder-eval: {args.run_dir}: no pending evaluation")
            return 0
    elif not args.all:
        ckpts = ckpts[-1:]
    if not ckpts:
        print(f"rayder-eval: no matching checkpoint in {args.run_dir / 'checkpoints'}", file=sys.stderr)
        return 1
    # "auto": CUDA when present (as before), whatever device the run trained on
    rank, world, device = init_distributed("auto", timeout_min=cfg.dist_timeout_min)
    for ckpt in ckpts:
        step = step_of[ckpt]
        model = load_model_from_checkpoint(args.run_dir, ckpt, device)
        records = evaluate_model(model, cfg.eval, resolution=cfg.data.resolution, device=device, seed=cfg.seed,
                                 progress=True, rank=rank, world=world)
        if rank != 0:
            continue
        write_eval_records(args.run_dir, step, records, replace=True)
        for rec in records:
            vals = ", ".join(f"{k}={v:.4g}" for k, v in rec["values"].items())
            print(f"step {step} {rec['bench']} (n={rec['n']}): {vals}"
                  + "".join(f"\n  {k}: missing ({why})" for k, why in rec["missing"].items()))
    if (rank == 0 and args.db and cfg.store_mode == "direct" and (args.run_dir / "state.json").exists()):
        record_run_dir(args.run_dir, ResultsStore(args.db))
    if world > 1:  # leave together: a rank exiting while another still talks to gloo aborts (SIGABRT) at teardown
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
