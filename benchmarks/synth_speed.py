"""How fast is `rayder-data synth`? Renders N clips (default 500, 64x64, 5 s at 6 fps) with 2 worker processes,
exactly as the CLI does (ray casting + H.264 encoding + tar shards), and extrapolates to 10,000 clips.

The machine may be shared, so two projections are printed: from wall time (what you get right now) and from
CPU time (what 2 dedicated cores would give). The target is 10,000 clips in 10 minutes on 2 cores.

    .venv/bin/python benchmarks/synth_speed.py [--clips 500] [--resolution 64] [--workers 2]
"""
from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time

from rayder_core.data.synth import synthesize

TARGET_CLIPS, TARGET_SECONDS = 10_000, 600.0


def cpu_seconds() -> float:
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=500)
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        load0 = os.getloadavg()[0]
        wall0, cpu0 = time.perf_counter(), cpu_seconds()
        synthesize(tmp, clips=args.clips, resolution=args.resolution, seconds=args.seconds, workers=args.workers,
                   progress=False)
        wall, cpu = time.perf_counter() - wall0, cpu_seconds() - cpu0
        load1 = os.getloadavg()[0]

    per_clip_wall, per_clip_cpu = wall / args.clips, cpu / args.clips
    proj_wall = TARGET_CLIPS * per_clip_wall
    proj_cpu = TARGET_CLIPS * per_clip_cpu / args.workers
    print(f"synth: {args.clips} clips of {args.resolution}x{args.resolution}, {args.seconds:g} s at 6 fps, "
          f"{args.workers} workers (1-min load average {load0:.1f} -> {load1:.1f} on {os.cpu_count()} CPUs)")
    print(f"  wall  {wall:7.1f} s   {args.clips / wall:6.1f} clips/s")
    print(f"  cpu   {cpu:7.1f} s   {per_clip_cpu * 1e3:6.1f} ms per clip (render + encode + shard)")
    print(f"  projected for {TARGET_CLIPS} clips: {proj_wall:6.0f} s from wall time (this machine now), "
          f"{proj_cpu:6.0f} s from CPU time on {args.workers} dedicated cores")
    print(f"  target {TARGET_SECONDS:.0f} s: ratio projected/target = {proj_wall / TARGET_SECONDS:.2f} (wall), "
          f"{proj_cpu / TARGET_SECONDS:.2f} (cpu)  -> {'MEETS' if proj_cpu <= TARGET_SECONDS else 'MISSES'} "
          "the target on dedicated cores")


if __name__ == "__main__":
    main()
