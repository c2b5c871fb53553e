"""Nested data fractions over a shard directory.

The shards are put in one seeded random order; the shard set of a fraction is the shortest prefix of that
order whose video count is closest to ``fraction * total`` (at least one shard). Prefixes of one order are
nested by construction: the 1% set is a subset of the 10% set, which is a subset of the 100% set. D (the
number of videos) is recorded per fraction. Shard paths are stored relative to the manifest file, so a data
directory can be moved as a whole.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rayder_core.data.shards import count_samples, list_shards
from rayder_core.fileio import atomic_write_text

MANIFEST_VERSION = 1


def fraction_label(fraction: float) -> str:
    """``0.01 -> "1%"``, ``0.1 -> "10%"``, ``1.0 -> "100%"``, ``0.005 -> "0.5%"``."""
    return f"{fraction * 100:.6g}%"


@dataclass
class Manifest:
    """Nested shard subsets per data fraction (see module docstring).

    ``shard_counts`` maps each shard (path relative to ``root``) to its number of videos, in the seeded order;
    ``fractions`` maps a fraction (float in (0, 1]) to its number of leading shards of that order.
    """

    root: Path
    seed: int
    shard_counts: dict[str, int]
    fractions: dict[float, int]

    # ---------------------------------------------------------------------------------------- queries
    def _match(self, fraction: float) -> float | None:
        """The manifest's fraction equal to `fraction` (up to float rounding), or None."""
        return next((f for f in self.fractions if math.isclose(f, fraction, rel_tol=1e-9, abs_tol=1e-12)), None)

    def has(self, fraction: float) -> bool:
        """Whether `fraction` (e.g. 0.25) is one of the manifest's fractions."""
        return self._match(fraction) is not None

    def _key(self, fraction: float) -> float:
        f = self._match(fraction)
        if f is not None:
            return f
        raise KeyError(f"fraction {fraction} is not in the manifest; available: "
                       f"{', '.join(fraction_label(f) for f in sorted(self.fractions))}")

    def shards(self, fraction: float) -> list[str]:
        """Absolute shard paths of ``fraction`` (a float such as 0.01), in the manifest's seeded order."""
        n = self.fractions[self._key(fraction)]
        return [str((self.root / rel).resolve()) for rel in list(self.shard_counts)[:n]]

    def num_videos(self, fraction: float) -> int:
        """D: the number of videos in the shards of ``fraction``."""
        n = self.fractions[self._key(fraction)]
        return int(sum(list(self.shard_counts.values())[:n]))

    def labels(self) -> dict[float, str]:
        return {f: fraction_label(f) for f in sorted(self.fractions)}

    # --------------------------------------------------------------------------------------------- io
    def to_json(self, where: Path) -> dict:
        where = Path(where).resolve().parent
        order = list(self.shard_counts)
        rel = [os.path.relpath((self.root / p).resolve(), where) for p in order]
        return {
            "version": MANIFEST_VERSION,
            "seed": self.seed,
            "total_videos": int(sum(self.shard_counts.values())),
            "shards": [{"path": r, "videos": self.shard_counts[p]} for r, p in zip(rel, order)],
            "fractions": [
                {"fraction": f, "label": fraction_label(f), "num_shards": n, "num_videos": self.num_videos(f),
                 "shards": rel[:n]}
                for f, n in sorted(self.fractions.items())
            ],
        }

    def save(self, path: str | os.PathLike) -> Path:
        """Write the manifest JSON to ``path`` (atomically)."""
        path = Path(path)
        atomic_write_text(path, json.dumps(self.to_json(path), indent=1))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Manifest":
        """Read a manifest written by :meth:`save`; shard paths resolve relative to the file."""
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"manifest not found: {path}")
        try:
            data = json.loads(path.read_text())
            counts = {entry["path"]: int(entry["videos"]) for entry in data["shards"]}
            fractions = {float(e["fraction"]): int(e["num_shards"]) for e in data["fractions"]}
            seed = int(data["seed"])
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{path}: not a valid rayder data manifest ({type(err).__name__}: {err})") from err
        return cls(root=path.resolve().parent, seed=seed, shard_counts=counts, fractions=fractions)


def choose_prefixes(counts: list[int], fractions: tuple[float, ...]) -> dict[float, int]:
    """Number of leading shards per fraction: the prefix whose video count is closest to ``f * total``.

    At least one shard per fraction, non-decreasing in the fraction (so the sets nest), all shards for 1.0.
    """
    cum = np.cumsum(counts)
    total = int(cum[-1])
    out: dict[float, int] = {}
    previous = 1
    for f in sorted(fractions):
        if not 0 < f <= 1:
            raise ValueError(f"data fractions must lie in (0, 1], got {f}")
        n = len(counts) if math.isclose(f, 1.0) else int(np.argmin(np.abs(cum - f * total))) + 1
        n = max(n, previous)
        out[float(f)] = n
        previous = n
    return out


class CollapsedFractionsWarning(UserWarning):
    """Several data fractions of a manifest select the same shards (too few shards for distinct nested sets)."""


def collapsed_fractions(prefixes: dict[float, int]) -> list[list[float]]:
    """Groups (>= 2) of fractions that select the same number of leading shards, i.e. the same data."""
    groups: dict[int, list[float]] = {}
    for f, n in sorted(prefixes.items()):
        groups.setdefault(n, []).append(f)
    return [g for g in groups.values() if len(g) > 1]


def warn_collapsed_fractions(prefixes: dict[float, int], counts: list[int], where: str = "") -> list[list[float]]:
    """Warn (CollapsedFractionsWarning) when fractions coincide; returns the groups."""
    groups = collapsed_fractions(prefixes)
    for g in groups:
        n = prefixes[g[0]]
        labels = " = ".join(fraction_label(f) for f in g)
        smallest = min(f for f in prefixes)
        warnings.warn(
            f"{where}: data fractions {labels} are the same {n} shard(s) (D = {int(sum(counts[:n]))} videos) out of "
            f"{len(counts)} shards: a scaling study over them is not over distinct data. Distinct nested fractions "
            f"down to {fraction_label(smallest)} need at least ~{math.ceil(1 / smallest)} shards: use more videos "
            "or a smaller --shard-size.", CollapsedFractionsWarning, stacklevel=3)
    return groups


def build_manifest(shard_dir: str | os.PathLike, fractions: tuple[float, ...] = (0.01, 0.1, 1.0),
                   seed: int = 0) -> Manifest:
    """Count the videos of every shard in ``shard_dir`` and choose nested fractions with ``seed``.

    Raises ``FileNotFoundError`` if the directory is missing and ``ValueError`` if it holds no videos.
    """
    shard_dir = Path(shard_dir)
    paths = list_shards(shard_dir)
    counts = {p.name: count_samples(p) for p in paths}
    counts = {k: v for k, v in counts.items() if v > 0}
    if not counts:
        raise ValueError(f"no videos found in shards under {shard_dir}")
    names = sorted(counts)
    order = np.random.default_rng(seed).permutation(len(names))
    ordered = {str(shard_dir.resolve() / names[i]): counts[names[i]] for i in order}
    prefixes = choose_prefixes(list(ordered.values()), tuple(fractions))
    warn_collapsed_fractions(prefixes, list(ordered.values()), where=str(shard_dir))
    return Manifest(root=Path("/"), seed=int(seed), shard_counts=ordered, fractions=prefixes)
