"""Static-scene NVS benchmarks in the pixelSplat RE10K format, and a camera-probe set.

RE10K / pixelSplat layout (one reader for the real dataset and for ours)::

    ROOT/{split}/000000.torch ...   each a list of dicts: key (str), url (str), timestamps (int64 [V], us),
                                    cameras (float32 [V, 18] = fx, fy, cx, cy normalised by width/height,
                                    0, 0, 3x4 OpenCV world-to-camera row-major), images (list of uint8
                                    tensors holding JPEG bytes)
    ROOT/{split}/index.json         {key: chunk file name}
    evaluation index (JSON)         {key: {"context": [i, j], "target": [k, l, m]} | null}

Images come out centre-cropped to a square, resized with antialiasing to ``resolution`` and in [-1, 1];
cameras come out as :class:`rayder_core.geometry.Camera` (float64, camera-to-world, one normalised focal),
their intrinsics adjusted for the crop (normalised RE10K intrinsics do not change under resizing).

Probe set (ours, DL3DV-style: 24 consecutive frames with ground-truth poses)::

    ROOT/index.json                 {"keys": [...], "num_frames": 24, "fps": 6.0, "height": H, "width": W}
    ROOT/{key}.npz                  frames uint8 (24, H, W, 3), R (24, 3, 3), t (24, 3), f (24,) float64
"""

from __future__ import annotations

import copy
import io
import json
import logging
import os
import re
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from rayder_core.data.loader import to_model_frames
from rayder_core.data.synth import HELDOUT_FAMILIES, TRAIN_FAMILIES, make_clip
from rayder_core.geometry import Camera, camera_from_re10k, camera_to_re10k

PROBE_FRAMES = 24
log = logging.getLogger(__name__)

# What reading one scene can raise on bad data (truncated JPEG: OSError/PIL.UnidentifiedImageError; a malformed
# record: KeyError/IndexError/TypeError/ValueError; a broken torch chunk: RuntimeError/EOFError/pickle errors).
SCENE_ERRORS = (ValueError, OSError, KeyError, IndexError, TypeError, RuntimeError, EOFError)


# ------------------------------------------------------------------------------------------- RE10K


@dataclass
class Re10kScene:
    """One evaluation scene: images in [-1, 1], (V, 3, H, W); cameras camera-to-world (float64)."""

    key: str
    context: torch.Tensor  # (2, 3, H, W)
    target: torch.Tensor  # (3, 3, H, W)
    context_cams: Camera | None  # (2,); None when read with cameras=False
    target_cams: Camera | None  # (3,)
    context_index: tuple[int, ...] = ()
    target_index: tuple[int, ...] = ()


def encode_jpeg(image: np.ndarray, quality: int = 95) -> torch.Tensor:
    """uint8 RGB (H, W, 3) -> JPEG bytes as a uint8 tensor (4:4:4 chroma, ``quality``)."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buf, format="JPEG", quality=quality, subsampling=0)
    return torch.frombuffer(bytearray(buf.getvalue()), dtype=torch.uint8)


def decode_jpeg(data: torch.Tensor) -> np.ndarray:
    """JPEG bytes (uint8 tensor) -> uint8 RGB (H, W, 3)."""
    with Image.open(io.BytesIO(data.numpy().tobytes())) as img:
        return np.asarray(img.convert("RGB"))


def write_re10k_chunks(scenes: Iterable[dict[str, Any]], out_dir: str | os.PathLike, split: str = "test",
                       max_chunk_bytes: int = 100_000_000, jpeg_quality: int = 95) -> list[Path]:
    """Write scenes as pixelSplat ``.torch`` chunks plus ``{split}/index.json``; returns the chunk paths.

    Each scene is a dict with ``key`` (str), ``images`` (uint8 (V, H, W, 3)), ``cameras`` (``Camera`` with
    shape (V,)) or ``rows`` (float (V, 18) pixelSplat camera rows, written as given) and optionally ``timestamps`` (int (V,), microseconds; default: frame index at 6 fps) and
    ``url`` (str). A chunk is closed once it holds ``max_chunk_bytes`` of JPEG data.
    """
    split_dir = Path(out_dir) / split
    split_dir.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    index: dict[str, str] = {}
    chunk: list[dict[str, Any]] = []
    size = 0

    def flush() -> None:
        nonlocal chunk, size
        if chunk:
            path = split_dir / f"{len(paths):06d}.torch"
            tmp = path.with_name(path.name + ".tmp")
            torch.save(chunk, tmp)
            os.replace(tmp, path)
            paths.append(path)
            index.update({item["key"]: path.name for item in chunk})
        chunk, size = [], 0

    for scene in scenes:
        key, images, cams = scene["key"], np.asarray(scene["images"]), scene.get("cameras")
        rows = scene.get("rows")  # precomputed (V, 18) rows (exact fx, fy, cx, cy of real data) instead of cameras
        if key in index or any(item["key"] == key for item in chunk):
            raise ValueError(f"duplicate scene key {key!r}")
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise ValueError(f"scene {key}: images must be uint8 (V, H, W, 3), got {images.dtype} {images.shape}")
        v, h, w = images.shape[:3]
        if rows is not None:
            rows = torch.as_tensor(rows, dtype=torch.float32)
            if tuple(rows.shape) != (v, 18):
                raise ValueError(f"scene {key}: {v} images but camera rows of shape {tuple(rows.shape)}")
        elif cams is None or tuple(cams.shape) != (v,):
            raise ValueError(f"scene {key}: {v} images but cameras of shape "
                             f"{None if cams is None else tuple(cams.shape)}")
        stamps = scene.get("timestamps")
        stamps = torch.as_tensor(np.round(np.arange(v) / 6.0 * 1e6) if stamps is None else stamps).to(torch.int64)
        jpegs = [encode_jpeg(im, jpeg_quality) for im in images]
        chunk.append({
            "key": key,
            "url": scene.get("url", ""),
            "timestamps": stamps,
            "cameras": rows if rows is not None else camera_to_re10k(cams.to(dtype=torch.float64), h, w).to(
                torch.float32),
            "images": jpegs,
        })
        size += sum(j.numel() for j in jpegs)
        if size >= max_chunk_bytes:
            flush()
    flush()
    index_path = split_dir / "index.json"
    index_path.write_text(json.dumps(index, indent=1))
    return paths


def write_evaluation_index(index: dict[str, dict[str, list[int]] | None], path: str | os.PathLike) -> Path:
    """Write ``{key: {"context": [i, j], "target": [k, l, m]} | null}`` to ``path`` (JSON)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(index, indent=1))
    return path


def crop_row_to_square(row18: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Adjust RE10K rows (..., 18) of an h x w image for the centre square crop used by the readers.

    The crop keeps ``s = min(h, w)`` pixels starting at ``((h-s)//2, (w-s)//2)``; normalised intrinsics
    are then re-normalised by ``s``. They stay valid for any resize of the square (edge convention).
    """
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    out = row18.clone().to(torch.float64)
    out[..., 0] = row18[..., 0] * w / s
    out[..., 1] = row18[..., 1] * h / s
    out[..., 2] = (row18[..., 2] * w - left) / s
    out[..., 3] = (row18[..., 3] * h - top) / s
    return out


class Re10kBenchmark:
    """Iterate the scenes of an RE10K-format benchmark that have a non-null evaluation-index entry.

    Args:
        root: dataset root holding ``{split}/*.torch`` and ``{split}/index.json`` (real RE10K from pixelSplat,
            or ``data/synth/bench/re10k-synth``).
        split: sub-directory, ``"test"``.
        index_path: evaluation index JSON; default ``root/evaluation_index.json``.
        resolution: output side in pixels (square).
        skip_bad: a scene (or a whole chunk) that cannot be read is skipped with one log line and recorded in
            ``self.skipped`` as (key, reason) instead of raising; the iteration positions of the other scenes stay.
        cameras: with False the ground-truth camera records are neither parsed nor validated (NVS predicts its own
            cameras); the scene's ``*_cams`` are None.
    """

    def __init__(self, root: str | os.PathLike, split: str = "test", index_path: str | os.PathLike | None = None,
                 resolution: int = 64, *, skip_bad: bool = False, cameras: bool = True):
        self.root, self.split, self.resolution = Path(root), split, int(resolution)
        self.skip_bad, self.cameras = bool(skip_bad), bool(cameras)
        self.skipped: list[tuple[str, str]] = []
        split_dir = self.root / split
        chunk_index = split_dir / "index.json"
        if not chunk_index.exists():
            raise FileNotFoundError(f"RE10K chunk index not found: {chunk_index}")
        self.index_path = Path(index_path) if index_path is not None else self.root / "evaluation_index.json"
        if not self.index_path.exists():
            raise FileNotFoundError(f"evaluation index not found: {self.index_path}")
        self.chunk_of: dict[str, str] = json.loads(chunk_index.read_text())
        evaluation = json.loads(self.index_path.read_text())
        self.views: dict[str, dict[str, list[int]]] = {}
        for key, entry in evaluation.items():
            if entry is None or key not in self.chunk_of:
                continue
            if not isinstance(entry, dict) or "context" not in entry or "target" not in entry:
                raise ValueError(f"{self.index_path}: entry for {key!r} needs 'context' and 'target', got {entry!r}")
            self.views[key] = {"context": [int(i) for i in entry["context"]],
                               "target": [int(i) for i in entry["target"]]}

    def __len__(self) -> int:
        return len(self.views)

    def _chunks(self) -> list[str]:
        return sorted({self.chunk_of[k] for k in self.views})

    def _skip(self, key: str, reason: str) -> None:
        self.skipped.append((key, reason))
        log.warning("skipping scene %s: %s", key, reason)

    def _load_chunk(self, name: str, keys: list[str] | None = None) -> list[dict[str, Any]] | None:
        """The chunk's items; with skip_bad an unreadable chunk returns None and records `keys` (default: all its
        indexed scenes) as skipped."""
        path = self.root / self.split / name
        try:
            if not path.exists():
                raise FileNotFoundError(f"RE10K chunk not found: {path}")
            items = torch.load(path, weights_only=True)
            if not isinstance(items, list):
                raise ValueError(f"{path}: expected a list of scene dicts, got {type(items).__name__}")
            return items
        except Exception as exc:  # noqa: BLE001 - torch.load/pickle raise assorted types on a damaged file
            if not self.skip_bad:
                raise
            for key in keys if keys is not None else [k for k in self.views if self.chunk_of[k] == name]:
                self._skip(key, f"unreadable chunk {path}: {type(exc).__name__}: {exc}")
            return None

    def _read(self, item: Any, name: str) -> Re10kScene | None:
        """Decode one chunk item; None (recorded in `skipped`) when it is bad and skip_bad is set."""
        path = self.root / self.split / name
        try:
            return self._scene(item, path)
        except SCENE_ERRORS as exc:
            if not self.skip_bad:
                raise
            key = item.get("key", "?") if isinstance(item, dict) else "?"
            self._skip(str(key), f"{path}: {type(exc).__name__}: {exc}")
            return None

    @staticmethod
    def _key(item: Any) -> Any:
        return item.get("key") if isinstance(item, dict) else None

    def __iter__(self) -> Iterator[Re10kScene]:
        for name in self._chunks():
            items = self._load_chunk(name)
            for item in items or []:
                if self._key(item) not in self.views:
                    continue
                scene = self._read(item, name)
                if scene is not None:
                    yield scene

    def scenes(self, start: int = 0, stop: int | None = None) -> Iterator[tuple[int, Re10kScene]]:
        """(index, scene) for the scenes at positions start..stop-1 of the iteration order (a rank's shard).

        Only the chunks that hold those scenes are read, and only those scenes are decoded."""
        stop = len(self) if stop is None else min(int(stop), len(self))
        counts: dict[str, int] = {}
        for key in self.views:
            counts[self.chunk_of[key]] = counts.get(self.chunk_of[key], 0) + 1
        first = 0
        for name in self._chunks():
            last = first + counts[name]
            if last > start and first < stop:
                index = first
                mine = [k for k in self.views if self.chunk_of[k] == name][max(start - first, 0):stop - first]
                for item in self._load_chunk(name, mine) or []:
                    if self._key(item) not in self.views:
                        continue
                    if start <= index < stop:
                        scene = self._read(item, name)
                        if scene is not None:
                            yield index, scene
                    index += 1
            first = last
            if first >= stop:
                break

    def _views(self, item: dict[str, Any], idx: list[int], path: Path) -> tuple[torch.Tensor, Camera]:
        key, n = item["key"], len(item["images"])
        bad = [i for i in idx if not 0 <= i < n]
        if bad:
            raise ValueError(f"{path}: scene {key} has {n} views; evaluation index asks for {bad}")
        images = [decode_jpeg(item["images"][i]) for i in idx]
        h, w = images[0].shape[:2]
        if any(im.shape[:2] != (h, w) for im in images):
            raise ValueError(f"{path}: scene {key} mixes image sizes")
        x = to_model_frames(np.stack(images), self.resolution)
        if not self.cameras:
            return x, None
        rows = crop_row_to_square(torch.as_tensor(item["cameras"])[idx], h, w)
        try:
            cams = camera_from_re10k(rows, self.resolution, self.resolution)
        except ValueError as err:
            raise ValueError(f"{path}: scene {key}: {err}") from err
        return x, cams

    def _scene(self, item: dict[str, Any], path: Path) -> Re10kScene:
        views = self.views[item["key"]]
        context, ccam = self._views(item, views["context"], path)
        target, tcam = self._views(item, views["target"], path)
        return Re10kScene(item["key"], context, target, ccam, tcam, tuple(views["context"]), tuple(views["target"]))


# ------------------------------------------------------------------------------------------- probe


@dataclass
class ProbeSequence:
    """Consecutive frames in [-1, 1], (24, 3, H, W), with ground-truth cameras (24,) (float64)."""

    key: str
    frames: torch.Tensor
    cams: Camera


def write_probe_set(sequences: Iterable[dict[str, Any]], root: str | os.PathLike, fps: float = 6.0) -> Path:
    """Write probe sequences (dicts with ``key``, ``frames`` uint8 (24, H, W, 3), ``cameras`` Camera (24,)).

    Returns the path of ``root/index.json``.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    keys, shape = [], None
    for seq in sequences:
        key, frames, cams = seq["key"], np.asarray(seq["frames"]), seq["cameras"]
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or tuple(cams.shape) != frames.shape[:1]:
            raise ValueError(f"probe sequence {key}: need uint8 frames (V, H, W, 3) and cameras (V,), got "
                             f"{frames.dtype} {frames.shape} and {tuple(cams.shape)}")
        if shape is not None and frames.shape != shape:
            raise ValueError(f"probe sequence {key}: shape {frames.shape} differs from earlier {shape}")
        shape = frames.shape
        np.savez_compressed(root / f"{key}.npz", frames=frames, R=cams.R.double().numpy(), t=cams.t.double().numpy(),
                            f=cams.f.double().numpy())
        keys.append(key)
    if shape is None:
        raise ValueError("write_probe_set got no sequences")
    index = {"keys": keys, "num_frames": shape[0], "fps": fps, "height": shape[1], "width": shape[2]}
    (root / "index.json").write_text(json.dumps(index, indent=1))
    return root / "index.json"


class ProbeSet:
    """Iterate :class:`ProbeSequence` items of a probe set written by :func:`write_probe_set`.

    ``resolution`` (optional) centre-crops and resizes frames; focal lengths are adjusted to match.
    ``skip_bad``: a sequence that cannot be read or whose cameras are not finite is skipped with one log line and
    recorded in ``self.skipped`` as (key, reason) instead of raising.
    """

    def __init__(self, root: str | os.PathLike, resolution: int | None = None, *, skip_bad: bool = False):
        self.root = Path(root)
        self.skip_bad = bool(skip_bad)
        self.skipped: list[tuple[str, str]] = []
        index = self.root / "index.json"
        if not index.exists():
            raise FileNotFoundError(f"probe-set index not found: {index}")
        self.index = json.loads(index.read_text())
        self.keys: list[str] = list(self.index["keys"])
        self.resolution = resolution

    def __len__(self) -> int:
        return len(self.keys)

    def __iter__(self) -> Iterator[ProbeSequence]:
        for key in self.keys:
            try:
                seq = self._read(key)
            except (FileNotFoundError, *SCENE_ERRORS) as exc:
                if not self.skip_bad:
                    raise
                self.skipped.append((key, f"{type(exc).__name__}: {exc}"))
                log.warning("skipping probe sequence %s: %s", key, exc)
                continue
            yield seq

    def _read(self, key: str) -> ProbeSequence:
        path = self.root / f"{key}.npz"
        if not path.exists():
            raise FileNotFoundError(f"probe sequence not found: {path}")
        with np.load(path, allow_pickle=False) as data:
            frames, R, t, f = data["frames"], data["R"], data["t"], data["f"]
        if not (np.isfinite(R).all() and np.isfinite(t).all() and np.isfinite(f).all()):
            raise ValueError(f"{path}: non-finite camera record")
        h, w = frames.shape[1:3]
        res = self.resolution or min(h, w)
        cams = Camera(torch.from_numpy(R), torch.from_numpy(t), torch.from_numpy(f))
        if (res, res) != (h, w):
            rows = crop_row_to_square(camera_to_re10k(cams, h, w), h, w)
            cams = camera_from_re10k(rows, res, res)
        return ProbeSequence(key, to_model_frames(frames, res), cams)

    def sequences(self, start: int = 0, stop: int | None = None) -> Iterator[ProbeSequence]:
        """The sequences at positions start..stop-1 (a rank's shard); only those files are read."""
        part = copy.copy(self)
        part.keys = self.keys[start:stop]
        yield from part


# -------------------------------------------------------------------------------- synthetic benchmark


def _camera(meta: dict[str, Any]) -> Camera:
    c = meta["cameras"]
    return Camera(torch.tensor(c["R"], dtype=torch.float64), torch.tensor(c["t"], dtype=torch.float64),
                  torch.tensor(c["f"], dtype=torch.float64))


DEFAULT_CONTEXT_GAPS = (6, 12)
"""Frames between the two context views of `evaluation_index.json` (inclusive range): 1-2 s at 6 fps."""


def gap_index_name(min_gap: int, max_gap: int) -> str:
    """File name of a synthetic benchmark's extra evaluation index with context views `min_gap..max_gap` frames
    apart (`make_synthetic_benchmarks(extra_gaps=...)`), e.g. evaluation_index_gaps12-24.json."""
    return f"evaluation_index_gaps{min_gap}-{max_gap}.json"


def parse_gap_index_name(name: str) -> tuple[int, int] | None:
    """(min_gap, max_gap) of a `gap_index_name` file name; None for any other name."""
    match = re.fullmatch(r"evaluation_index_gaps(\d+)-(\d+)\.json", name)
    return (int(match.group(1)), int(match.group(2))) if match else None


def evaluation_views(rng: np.random.Generator, num_views: int, min_gap: int = DEFAULT_CONTEXT_GAPS[0],
                     max_gap: int = DEFAULT_CONTEXT_GAPS[1]) -> dict[str, list[int]]:
    """Two context frames ``min_gap..max_gap`` apart (at most ``num_views - 1``) and three distinct target frames
    strictly between them."""
    gap = int(rng.integers(min_gap, min(max_gap, num_views - 1) + 1))
    i = int(rng.integers(0, num_views - gap))
    targets = sorted(int(k) for k in rng.choice(np.arange(i + 1, i + gap), size=3, replace=False))
    return {"context": [i, i + gap], "target": targets}


BENCH_FAMILIES = ("heldout", "train")
"""Texture families of a synthetic benchmark: 'heldout' (families never in training: a distribution-shift set) or
'train' (the training families: an in-distribution held-out set)."""


def make_synthetic_benchmarks(out: str | os.PathLike = "data/synth/bench", scenes: int = 64, resolution: int = 64,
                              seed: int = 1000, probe_sequences: int | None = None, seconds: float = 5.0,
                              progress: bool = True, families: str = "heldout",
                              extra_gaps: Sequence[tuple[int, int]] = ()) -> dict[str, Any]:
    """Write ``out/re10k-synth`` (RE10K format + ``evaluation_index.json``) and ``out/probe-synth`` (none when
    ``probe_sequences`` is 0).

    Scenes are static and drawn from their own random streams (seed ``seed``, streams 1 and 2; training clips use
    the corpus seed and stream 0), so no benchmark scene is in any data fraction. ``families``: 'heldout' textures
    never seen in training, or 'train' for an in-distribution held-out set (`BENCH_FAMILIES`). Each (min, max) of
    ``extra_gaps`` adds an index of the same scenes with context views that many frames apart
    (`gap_index_name`, each drawn from its own stream: the default index does not change). Cached: same settings
    and complete output -> nothing is done.
    """
    probe_sequences = scenes if probe_sequences is None else probe_sequences
    extra_gaps = [(int(lo), int(hi)) for lo, hi in extra_gaps]
    if scenes < 1 or probe_sequences < 0 or resolution < 2 or families not in BENCH_FAMILIES \
            or any(not 1 < lo <= hi for lo, hi in extra_gaps):
        raise ValueError(f"bad bench settings: scenes={scenes} (>= 1), probe_sequences={probe_sequences} (>= 0), "
                         f"resolution={resolution}, families={families!r} (one of {BENCH_FAMILIES}), extra_gaps="
                         f"{extra_gaps} (each 2 <= min <= max)")
    texture_families = HELDOUT_FAMILIES if families == "heldout" else TRAIN_FAMILIES
    out = Path(out)
    cfg = {"version": 1, "scenes": scenes, "probe_sequences": probe_sequences, "resolution": resolution,
           "seed": seed, "seconds": seconds, "families": list(texture_families),
           **({"extra_gaps": extra_gaps} if extra_gaps else {})}  # absent when none: older caches stay valid
    record = out / "bench.json"
    re10k, probe = out / "re10k-synth", out / "probe-synth"
    info = {"re10k": str(re10k), "probe": str(probe), "scenes": scenes, "probe_sequences": probe_sequences}
    if record.exists() and json.loads(record.read_text()) == {"config": cfg, "complete": True}:
        return {**info, "cached": True, "seconds": 0.0}
    t0 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps({"config": cfg, "complete": False}))
    for stale in [*(re10k / "test").glob("*.torch"), *probe.glob("*.npz")]:  # from a run with other settings
        stale.unlink()
    rng = np.random.default_rng([seed, 7])
    gap_rngs = {gaps: np.random.default_rng([seed, 7, *gaps]) for gaps in extra_gaps}
    evaluation: dict[str, Any] = {}
    extra: dict[tuple[int, int], dict[str, Any]] = {gaps: {} for gaps in extra_gaps}

    def nvs_scenes():
        for i in tqdm(range(scenes), desc="bench re10k", unit="scene", disable=not progress):
            frames, meta = make_clip(i, seed, resolution, seconds, families=texture_families, stream=1)
            key = f"synthbench{i:05d}"
            evaluation[key] = evaluation_views(rng, len(frames))
            for gaps, gap_rng in gap_rngs.items():
                extra[gaps][key] = evaluation_views(gap_rng, len(frames), *gaps)
            yield {"key": key, "images": frames, "cameras": _camera(meta), "url": meta["source"]}

    write_re10k_chunks(nvs_scenes(), re10k, "test")
    write_evaluation_index(evaluation, re10k / "evaluation_index.json")
    for gaps, index in extra.items():
        write_evaluation_index(index, re10k / gap_index_name(*gaps))

    def probe_seqs():
        for i in tqdm(range(probe_sequences), desc="bench probe", unit="seq", disable=not progress):
            frames, meta = make_clip(i, seed, resolution, PROBE_FRAMES / 6.0, families=texture_families, stream=2)
            yield {"key": f"synthprobe{i:05d}", "frames": frames, "cameras": _camera(meta)}

    if probe_sequences:
        write_probe_set(probe_seqs(), probe)
    record.write_text(json.dumps({"config": cfg, "complete": True}))
    return {**info, "cached": False, "seconds": time.perf_counter() - t0}
