"""`rayder-flops`: the analytic training-FLOP table of a model family's presets. The options are parsed here and the
family's own table is printed by the `flops_cli` of its registry record (`rayder_core.models.get_family`)."""

from __future__ import annotations

import argparse

from rayder_core.models import DEFAULT_FAMILY, FAMILIES, get_family
from rayder_core.models.rayder.flops import CONVENTIONS


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="rayder-flops",
                                     description="Analytic training FLOPs per sample of a model family's presets.")
    parser.add_argument("--family", choices=FAMILIES, default=DEFAULT_FAMILY,
                        help="model family (default rayder); erayzer lists its presets (all by default) with "
                             "parameter counts")
    parser.add_argument("--resolution", type=int, default=256, help="square image side in pixels (divisible by 16)")
    parser.add_argument("--views", type=int, default=8, help="views per training clip")
    parser.add_argument("--presets", default=None,
                        help="comma-separated preset names (default: RayDer XS,S,B,L; every E-RayZer preset)")
    parser.add_argument("--convention", choices=CONVENTIONS, default="exact",
                        help="RayDer only. 'exact': 3 x forward (the results store's unit); 'paper': 3 x (3 x M + A), "
                             "M = transformer-layer matmuls (no merges/embeddings) with the decoder on every render "
                             "view, A = attention, which reproduces Table B.3")
    parser.add_argument("--json", action="store_true", help="print the table as JSON")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="RayDer only: model-config override for every preset, e.g. --set patch=2 "
                             "--set local_layers=false (the demo's ladder)")
    args = parser.parse_args(argv)
    get_family(args.family).flops_cli(args, parser)


if __name__ == "__main__":
    main()
