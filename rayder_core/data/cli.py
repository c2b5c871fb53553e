"""``rayder-data``: make the synthetic corpus and benchmarks, ingest videos, build manifests.

    rayder-data synth --out data/synth --clips 2000 --resolution 64 --seconds 5 --dynamic-share 0.3 --seed 0 --workers 2
    rayder-data ingest VIDEOS... --out DIR --shard-size 20
    rayder-data manifest --shards DIR --fractions 0.01,0.1,1.0 --seed 0
    rayder-data bench --out data/synth/bench --scenes 64 --resolution 64 --seed 1000
    rayder-data bench-from {dl3dv,colmap,llff} ROOT... --out DIR [--rule even|every8] [--views 24]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rayder_core.data.manifest import Manifest, build_manifest
from rayder_core.data.synth import synthesize
from rayder_core.data.ingest import ingest
from rayder_core.data.evalsets import make_synthetic_benchmarks
from rayder_core.data import readers


def _fractions(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"--fractions must be comma-separated numbers, got {text!r}") from None
    if not values or any(not 0 < v <= 1 for v in values):
        raise argparse.ArgumentTypeError(f"--fractions must lie in (0, 1], got {text!r}")
    return values


def _gap_ranges(text: str) -> tuple[tuple[int, int], ...]:
    """'12-24,18-29' -> ((12, 24), (18, 29)): frames between the two context views, inclusive."""
    try:
        ranges = tuple(tuple(int(v) for v in part.split("-")) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"--extra-gaps must be MIN-MAX ranges of frames, got {text!r}") from None
    if not ranges or any(len(r) != 2 or not 1 < r[0] <= r[1] for r in ranges):
        raise argparse.ArgumentTypeError(f"--extra-gaps must be MIN-MAX ranges with 2 <= MIN <= MAX, got {text!r}")
    return ranges  # type: ignore[return-value]


def _print_manifest(manifest, path: Path) -> None:
    print(f"manifest: {path}")
    for f, label in manifest.labels().items():
        print(f"  {label:>6}: {len(manifest.shards(f)):5d} shards, D = {manifest.num_videos(f)} videos")


def cmd_synth(args: argparse.Namespace) -> int:
    info = synthesize(args.out, clips=args.clips, resolution=args.resolution, seconds=args.seconds,
                      dynamic_share=args.dynamic_share, seed=args.seed, workers=args.workers,
                      shard_size=args.shard_size, fractions=args.fractions, force=args.force)
    if info["cached"]:
        print(f"synth: {args.out} already holds these {args.clips} clips ({info['shards']} shards); nothing to do")
    else:
        print(f"synth: rendered {info['rendered']} clips into {info['shards']} shards under {args.out}/shards "
              f"in {info['seconds']:.1f} s")
    _print_manifest(Manifest.load(Path(args.out) / "manifest.json"), Path(args.out) / "manifest.json")
    return 0


def cmd_manifest(args: argparse.Namespace) -> int:
    out = Path(args.out) if args.out else Path(args.shards).resolve().parent / "manifest.json"
    manifest = build_manifest(args.shards, fractions=args.fractions, seed=args.seed)
    manifest.save(out)
    _print_manifest(manifest, out)
    return 0


def cmd_ingest(args: argparse.Namespace) -> int:
    ingest(args.videos, args.out, shard_size=args.shard_size, fps=args.fps, min_seconds=args.min_seconds,
           max_side=args.max_side, workers=args.workers, fractions=args.fractions, seed=args.seed)
    _print_manifest(Manifest.load(Path(args.out) / "manifest.json"), Path(args.out) / "manifest.json")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    info = make_synthetic_benchmarks(args.out, scenes=args.scenes, resolution=args.resolution, seed=args.seed,
                                     probe_sequences=args.probe_sequences, families=args.families,
                                     extra_gaps=args.extra_gaps)
    if info["cached"]:
        print(f"bench: {args.out} already holds these benchmarks; nothing to do")
    else:
        print(f"bench: wrote {info['scenes']} RE10K-format scenes to {info['re10k']} and "
              f"{info['probe_sequences']} probe sequences to {info['probe']} in {info['seconds']:.1f} s")
    return 0


def _find_scenes(fmt: str, roots: list[str]) -> list[tuple[str, Path]]:
    """(key, scene directory) of every scene of format `fmt` under the roots (a root may itself be a scene)."""
    marker = {"dl3dv": "transforms.json", "colmap": "sparse/0", "llff": "poses_bounds.npy"}[fmt]
    found: list[tuple[str, Path]] = []
    for root in map(Path, roots):
        if not root.exists():
            raise FileNotFoundError(f"bench-from {fmt}: {root} does not exist")
        if fmt == "colmap":
            hits = sorted({p.parent.parent for p in root.rglob("0") if p.parent.name == "sparse" and p.is_dir()})
        else:
            hits = sorted({p.parent for p in root.rglob(marker)})
        for d in hits:
            rel = d.relative_to(root)
            parts = [x for x in rel.parts if x != "nerfstudio"] or [root.name]
            found.append(("_".join(parts), d))
    if not found:
        raise FileNotFoundError(f"bench-from {fmt}: no scene ({marker}) under {', '.join(roots)}")
    keys = [k for k, _ in found]
    if len(set(keys)) != len(keys):
        raise ValueError(f"bench-from {fmt}: duplicate scene keys {sorted(k for k in keys if keys.count(k) > 1)}")
    return found


def cmd_bench_from(args: argparse.Namespace) -> int:
    read = {"dl3dv": readers.read_nerfstudio, "colmap": readers.read_colmap, "llff": readers.read_llff}[args.format]
    rule = args.rule or ("even" if args.format == "dl3dv" else "every8")
    scenes = _find_scenes(args.format, args.roots)
    stats = readers.write_benchmark((read(d, key=k) for k, d in scenes), args.out, rule, views=args.views,
                                    max_context=args.max_context)
    print(f"bench-from {args.format}: {stats['scenes']} scenes ({stats['indexed']} indexed by rule {rule!r}, "
          f"{stats['views']} views) -> {args.out}/test, index {args.out}/evaluation_index.json")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rayder-data", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("synth", help="render the procedural training corpus (cached)")
    p.add_argument("--out", default="data/synth", help="output directory (default: data/synth)")
    p.add_argument("--clips", type=int, default=2000, help="number of clips (default: 2000)")
    p.add_argument("--resolution", type=int, default=64, help="square frame side in pixels, even (default: 64)")
    p.add_argument("--seconds", type=float, default=5.0, help="clip length in seconds at 6 fps (default: 5)")
    p.add_argument("--dynamic-share", type=float, default=0.3, help="share of clips with moving objects (0.3)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2, help="render processes (default: 2)")
    p.add_argument("--shard-size", type=int, default=20, help="clips per shard (default: 20)")
    p.add_argument("--fractions", type=_fractions, default=(0.01, 0.1, 1.0), help="manifest fractions")
    p.add_argument("--force", action="store_true", help="replace a corpus made with other settings in --out")
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("ingest", help="re-encode videos to H.264 at 6 fps into WebDataset shards (resumable)")
    p.add_argument("videos", nargs="+", help="video files and/or directories (searched recursively)")
    p.add_argument("--out", required=True, help="output directory: shards in OUT/shards, OUT/manifest.json")
    p.add_argument("--shard-size", type=int, default=20, help="videos per shard (default: 20)")
    p.add_argument("--fps", type=float, default=6.0, help="output frame rate (default: 6)")
    p.add_argument("--min-seconds", type=float, default=4.0, help="skip videos shorter than this (default: 4)")
    p.add_argument("--max-side", type=int, default=None, help="downscale so the longer side is at most this")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--fractions", type=_fractions, default=(0.01, 0.1, 1.0))
    p.add_argument("--seed", type=int, default=0, help="manifest seed")
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser("manifest", help="(re)build the nested-fraction manifest of a shard directory")
    p.add_argument("--shards", required=True, help="directory of *.tar shards")
    p.add_argument("--fractions", type=_fractions, default=(0.01, 0.1, 1.0))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="manifest path (default: SHARDS/../manifest.json)")
    p.set_defaults(func=cmd_manifest)

    p = sub.add_parser("bench", help="write the synthetic RE10K-format NVS benchmark and the camera-probe set")
    p.add_argument("--out", default="data/synth/bench")
    p.add_argument("--scenes", type=int, default=64, help="static NVS scenes (default: 64)")
    p.add_argument("--probe-sequences", type=int, default=None, help="probe sequences (default: = --scenes)")
    p.add_argument("--resolution", type=int, default=64)
    p.add_argument("--seed", type=int, default=1000)
    p.add_argument("--families", choices=("heldout", "train"), default="heldout",
                   help="texture families: 'heldout' (never in training: a distribution-shift set, the default) or "
                        "'train' (an in-distribution held-out set: new scenes of the training families)")
    p.add_argument("--extra-gaps", type=_gap_ranges, default=(), metavar="MIN-MAX[,MIN-MAX]",
                   help="also write an evaluation index of the same scenes with the context views MIN..MAX frames "
                        "apart (re10k-synth/evaluation_index_gapsMIN-MAX.json), e.g. 12-24; the default index has "
                        "them 6..12 frames apart")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("bench-from", help="convert a DL3DV (nerfstudio), COLMAP or LLFF benchmark to our format")
    p.add_argument("format", choices=("dl3dv", "colmap", "llff"))
    p.add_argument("roots", nargs="+", help="scene directories or directories that contain scenes")
    p.add_argument("--out", required=True, help="output: OUT/test/*.torch chunks + OUT/evaluation_index.json")
    p.add_argument("--rule", choices=("even", "every8"), default=None,
                   help="view selection: 'even' (paper, DL3DV: first --views frames, even = context, odd = targets; "
                        "default for dl3dv) or 'every8' (LLFF/Mip-NeRF 360 hold-out, default for colmap/llff)")
    p.add_argument("--views", type=int, default=24, help="frames used by the 'even' rule (default: 24)")
    p.add_argument("--max-context", type=int, default=8, help="context frames of the 'every8' rule (default: 8)")
    p.set_defaults(func=cmd_bench_from)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (FileNotFoundError, ValueError) as err:
        print(f"rayder-data {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
