"""What the decoded copy of the shards (`data.decoded_dir`, `rayder_core.data.decoded`) saves a sweep's run: seconds for
one loader to deliver the first epoch of a data fraction (every clip decoded or loaded once; later epochs come from
the in-memory cache either way), measured three ways in one run on this machine:

- no copy: every run decodes its fraction (what each demo run did before);
- building: the first run that reads a shard decodes it and writes the copy;
- reading: every later run of the sweep loads the copy.

    .venv/bin/python benchmarks/decoded_copy.py [--data data/synth] [--fraction 1.0] [--resolution 16] [--batch 32]

Needs the demo's corpus (`make demo` or `rayder-data synth`); the copy goes to a temporary folder.
"""
from __future__ import annotations

import argparse
import tempfile
import time

from rayder_core.data.loader import VideoClipLoader
from rayder_core.data.manifest import Manifest


def first_epoch_s(shards: list[str], args: argparse.Namespace, decoded_dir: str | None) -> tuple[float, int]:
    """Seconds to iterate the first epoch's batches (one process, one thread) and the clips they held."""
    loader = VideoClipLoader(shards, frames=args.frames, fps=2.0, resolution=args.resolution, batch_size=args.batch,
                             seed=0, cache_mb=args.cache_mb, decoded_dir=decoded_dir)
    t0 = time.perf_counter()
    clips = 0
    for batch in loader:
        clips += len(batch["key"])
        if loader.state_dict()["epoch"] > 0:
            break
    return time.perf_counter() - t0, clips


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="data/synth", help="corpus directory with manifest.json")
    parser.add_argument("--fraction", type=float, default=1.0)
    parser.add_argument("--resolution", type=int, default=16)
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--cache-mb", type=float, default=256.0)
    args = parser.parse_args()
    manifest = Manifest.load(f"{args.data}/manifest.json")
    shards = manifest.shards(args.fraction)
    print(f"{manifest.num_videos(args.fraction)} clips in {len(shards)} shards, {args.resolution}^2, batch {args.batch}")
    print("| first epoch | s | clips | vs no copy |\n|---|---|---|---|", flush=True)
    base = None
    with tempfile.TemporaryDirectory() as tmp:
        for name, where in (("no copy", None), ("building the copy", tmp), ("reading the copy", tmp)):
            sec, clips = first_epoch_s(shards, args, where)  # rows print as measured (the first two take ~20-50 s)
            base = base or sec
            print(f"| {name} | {sec:.1f} | {clips} | {base / sec:.1f}x |", flush=True)


if __name__ == "__main__":
    main()
