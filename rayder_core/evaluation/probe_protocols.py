"""The camera pose probe protocols of one probe set (Appendix B.2.3; the probe itself is `rayder_core.probe`):
cross_scene (`evaluate_probe`), per_scene and transfer (XFactor TPS), each recorded under its own benchmark name
(`PROBE_BENCH_SUFFIX`), plus RPA@5/15/30 of the model's own predicted cameras."""
from __future__ import annotations

import sys
from typing import Any

import torch

from rayder_core.data.evalsets import ProbeSet
from rayder_core.distributed import all_gather, broadcast, dist_rank_world, raise_first_error, shard_range
from rayder_core.eval_config import BenchmarkSpec
from rayder_core.evaluation.nvs import resize_square
from rayder_core.geometry import Camera
from rayder_core.metrics import relative_pose_accuracy
from rayder_core.probe import (evaluate_pose_probe, per_scene_probe, split_sequences, train_pose_probe,
                               transfer_errors, transfer_trajectory)

PROBE_TEST_FRACTION = 0.25


@torch.no_grad()
def _probe_tokens(model: torch.nn.Module, spec: BenchmarkSpec, resolution: int, device: torch.device,
                  rank: int = 0, world: int = 1) -> tuple[torch.Tensor, Any, int, Any]:
    """Frozen camera tokens (S, T, width), cameras (S, T) of the readable probe sequences, in the set's order, the
    number of sequences skipped as unreadable (one line each; see `ProbeSet(skip_bad=True)`) and the model's own
    predicted cameras (S, T) (float64, CPU; for RPA, which needs no probe).

    Distributed: rank r extracts the tokens of its contiguous block of sequences; every rank gets all of them."""
    local: dict[str, Any] = {"tokens": [], "cams": [], "pred": []}
    try:
        probe_set = ProbeSet(spec.path, skip_bad=True)
        total = len(probe_set) if spec.max_scenes is None else min(len(probe_set), spec.max_scenes)
        lo, hi = shard_range(total, rank, world)
        for seq in probe_set.sequences(lo, hi):
            frames = resize_square(seq.frames.float(), resolution).to(device)[None]
            est = model.predict_cameras(frames)
            local["tokens"].append(est.camera_tokens[0].float().cpu())
            local["cams"].append(seq.cams)
            local["pred"].append(est.camera[0].to(device="cpu", dtype=torch.float64))
        local["skipped"] = list(probe_set.skipped)
    except (FileNotFoundError, ValueError) as exc:
        local = {"error": str(exc), "error_type": type(exc).__name__}
    parts = all_gather(local, world)
    raise_first_error(parts, f"probe set {spec.name}")
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
        # published definition ('rpa@k', the paper's) and the strict one ('rpa_strict@k'), both stored by name
        for definition in ("published", "strict"):
            rpa = relative_pose_accuracy(pred, cams, definition=definition)
            values["values"].update({k: v for k, v in rpa.items() if k != "rpa_pairs"})
    values = broadcast(values, world)
    return {"bench": spec.name, "values": values["values"], "n": values["n"], "missing": {}, "skipped": skipped}


PROBE_BENCH_SUFFIX = {"cross_scene": "", "per_scene": "-per-scene", "transfer": "-transfer"}


def evaluate_probe_protocols(model: torch.nn.Module, spec: BenchmarkSpec, *, resolution: int,
                             device: torch.device, iters: int, seed: int = 0, rank: int | None = None,
                             world: int | None = None) -> list[dict]:
    """The probe protocols `spec.protocols` of one probe set, one record each, labelled by benchmark name:
    cross_scene -> spec.name (`evaluate_probe`), per_scene -> spec.name + '-per-scene' (`probe.per_scene_probe`,
    n = sequences), transfer -> spec.name + '-transfer' (`probe.transfer_trajectory` on the pairs of consecutive
    sequences (s, s+1), n = pairs). Camera tokens are extracted once for both probes."""
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
            values = broadcast(values, world)
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
        fa, fb = (resize_square(q.frames.float(), resolution).to(device) for q in (a, b))
        ref, est = transfer_trajectory(model, fa, fb)
        local["pairs"].append((ref.to("cpu"), est.to("cpu")))
    parts = all_gather(local, world)
    pairs = [p for part in parts for p in part["pairs"]]
    skipped = sum(part["skipped"] for part in parts)
    if not pairs:
        raise ValueError(f"probe set {spec.name} at {spec.path}: no readable pair for pose transfer "
                         f"({skipped} skipped)")
    ref = Camera.cat([r[None] for r, _ in pairs], dim=0)
    est = Camera.cat([e[None] for _, e in pairs], dim=0)
    return transfer_errors(ref, est), len(pairs), skipped


