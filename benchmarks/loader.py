"""Does the video loader keep ahead of training? Decoded samples/s of ONE loader worker vs samples/s consumed by a
training step (forward + backward + AdamW) of each tiny preset, measured in the same run on this machine.

A ratio > 1 means one worker alone feeds training; with `num_workers = n` the loader rate scales ~n-fold.

    .venv/bin/python benchmarks/loader.py [--data data/synth] [--resolution 64] [--batch-size 8]
        [--presets tiny-xs,tiny-s,tiny-b,tiny-l] [--batches 20] [--steps 3]

Without a corpus at --data, a 120-clip synthetic corpus is rendered into a temporary directory first.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from rayder_core.data.loader import VideoClipLoader
from rayder_core.data.manifest import Manifest
from rayder_core.data.synth import synthesize


def loader_rate(shards: list[str], resolution: int, batch_size: int, frames: int, batches: int) -> float:
    """Decoded samples per second of one in-process loader worker (after one warm-up batch)."""
    loader = VideoClipLoader(shards, frames=frames, resolution=resolution, batch_size=batch_size, seed=0)
    it = iter(loader)
    next(it)
    t0 = time.perf_counter()
    for _ in range(batches):
        next(it)
    return batches * batch_size / (time.perf_counter() - t0)


def train_rate(preset: str, resolution: int, batch_size: int, frames: int, steps: int) -> float:
    """Samples per second consumed by training steps of a tiny preset (after one warm-up step)."""
    from rayder_core.models.rayder.model import RayDer
    from rayder_core.models.rayder.config import ModelConfig

    torch.manual_seed(0)
    model = RayDer(ModelConfig.from_preset(preset))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.rand(batch_size, frames, 3, resolution, resolution) * 2 - 1

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        model.training_loss(x)["loss"].backward()
        opt.step()

    step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch_size / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="data/synth", help="corpus directory with manifest.json")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--presets", default="tiny-xs,tiny-s,tiny-b,tiny-l")
    parser.add_argument("--batches", type=int, default=20, help="loader batches to time")
    parser.add_argument("--steps", type=int, default=3, help="training steps to time per preset")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(args.data)
        if not (data / "manifest.json").exists():
            print(f"no corpus at {data}: rendering 120 clips into a temporary directory")
            synthesize(tmp, clips=120, resolution=args.resolution, workers=2, progress=False)
            data = Path(tmp)
        shards = Manifest.load(data / "manifest.json").shards(1.0)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # a DataLoader worker runs single-threaded
        rate = loader_rate(shards, args.resolution, args.batch_size, args.frames, args.batches)
        torch.set_num_threads(threads)
        print(f"loader: {rate:8.1f} decoded samples/s per worker  ({args.frames} frames at {args.resolution}px, "
              f"batch {args.batch_size}, corpus {data})")
        for preset in [p for p in args.presets.split(",") if p]:
            need = train_rate(preset, args.resolution, args.batch_size, args.frames, args.steps)
            print(f"train {preset:8s}: {need:8.1f} samples/s consumed ({torch.get_num_threads()} threads)   "
                  f"loader/train ratio = {rate / need:6.1f}  {'ahead' if rate > need else 'BEHIND'}")


if __name__ == "__main__":
    main()
