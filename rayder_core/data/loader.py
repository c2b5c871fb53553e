"""Exactly-resumable training loader: WebDataset video shards -> batches of K-frame clips.

Stream of one rank in epoch ``e`` (all randomness from ``seed``, ``e``, ``rank`` and the sample key):

1. all shards in a random order drawn from ``(seed, e)``; rank ``r`` takes every ``world_size``-th of them
   (with fewer shards than ranks, every rank reads all shards and takes every ``world_size``-th usable sample);
2. samples in shard order; a clip shorter than the sampling span (``frames / fps`` seconds, 4 s for 8
   frames at 2 fps) is discarded from its JSON metadata alone, before anything is decoded;
3. a buffer shuffle (``shuffle_buffer`` samples) drawn from ``(seed, e, r)``;
4. consecutive groups of ``batch_size`` samples form the batches of the epoch (an incomplete last group is
   dropped); epochs repeat forever.

Frame times: a start uniform in ``[0, duration - span]``; frame ``i`` sits at ``start + (i + 0.5) / fps`` and is
jittered uniformly by +/- half an interval, i.e. lies uniformly in ``[start + i/fps, start + (i+1)/fps]``
(drawn from ``(seed, e, r, key)``); it shows the source frame on screen at that time. Frames are centre-cropped
to a square, resized with antialiasing to ``resolution`` and scaled to [-1, 1].

DataLoader workers split the rank's stream by batch (worker ``w`` of ``n`` decodes batches ``w, w+n, ...``);
every worker reads the tar headers and JSON of all the rank's shards but reads and decodes only the videos of
its own batches. So the batch sequence does not depend on ``num_workers``, and resuming from
``state_dict()`` = ``{"epoch", "samples", "batches"}`` skips the consumed samples without decoding them.

**Curriculum** (E-RayZer's frame sampling, `rayder_core.data.curriculum`): with a `CurriculumSampler` of
mode ``frame_interval`` or ``overlap``, a clip's frames are not drawn by ``fps`` but by the sampler at the training
progress ``b / total_batches``, where ``b`` is the index of the batch in this rank's stream since the start of
training (one batch per optimizer step; a skipped undecodable batch still counts, so progress depends only on the
stream position). ``overlap`` needs each clip's overlap profile (frame gap -> overlap), computed lazily once per
clip and process: geometric co-visibility from ``meta["cameras"]`` when the clip has poses (``overlap_source``
``auto`` or ``geometric``), else the image-only feature score on the whole decoded video (``feature``, or ``auto``
without poses; extractor ``thumbnail``, the no-download fallback, or ``dinov2`` from the local torch hub cache).
Both are deterministic, so batches do not depend on ``num_workers`` and resume stays exact; the state then also holds
``batches``. Without a sampler (or mode ``none``) frames are drawn by ``fps`` as above (RayDer's sampling). The set of
usable clips (at least ``frames / fps`` seconds) is the same in every mode.

A sample whose video fails to decode is replaced by another sample of the same batch (a warning names shard
and key); a batch with no decodable video is skipped as a whole. Both are deterministic, so resume stays exact.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from rayder_core.data import curriculum as cur
from rayder_core.data.decoded import DecodedCopy
from rayder_core.data.manifest import Manifest
from rayder_core.data.shards import VideoDecodeError, check_member, decode_mp4, split_member_name
from rayder_core.geometry import Camera

log = logging.getLogger(__name__)

OVERLAP_SOURCES = ("auto", "geometric", "feature")
OVERLAP_EXTRACTORS = ("thumbnail", "dinov2")


@dataclass(frozen=True)
class SampleRef:
    """Where one video lies inside a shard, plus its parsed JSON metadata (nothing decoded)."""

    shard: str
    key: str
    meta: dict[str, Any]
    offset: int  # byte offset of the mp4 payload in the tar file
    size: int


def _key_int(key: str) -> int:
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little")


def sample_times(meta: dict[str, Any], frames: int, fps: float, rng: np.random.Generator) -> np.ndarray | None:
    """Sampling times (seconds, (frames,)) of one clip, or ``None`` if the video is shorter than ``frames / fps``.

    ``meta`` needs ``fps`` (source frame rate) and ``num_frames``. Start uniform in ``[0, duration - span]``,
    then frame ``i`` uniform in ``[start + i/fps, start + (i+1)/fps]`` (+/- half an interval around its slot).
    """
    src_fps, n = float(meta["fps"]), int(meta["num_frames"])
    duration, interval = n / src_fps, 1.0 / fps
    span = frames * interval
    if duration + 1e-9 < span:
        return None
    start = rng.uniform(0.0, max(duration - span, 0.0))
    return start + (np.arange(frames) + rng.uniform(0.0, 1.0, frames)) * interval


def frame_indices(meta: dict[str, Any], frames: int, fps: float, rng: np.random.Generator) -> np.ndarray | None:
    """Source frame indices shown at :func:`sample_times` (``floor(time * source_fps)``), or ``None`` if too short."""
    times = sample_times(meta, frames, fps, rng)
    if times is None:
        return None
    src_fps, n = float(meta["fps"]), int(meta["num_frames"])
    return np.minimum(np.floor(times * src_fps + 1e-9).astype(np.int64), n - 1)


def to_model_frames(frames: np.ndarray, resolution: int) -> torch.Tensor:
    """uint8 RGB (K, H, W, 3) -> float32 (K, 3, R, R) in [-1, 1]: centre square crop, antialiased resize."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()
    h, w = x.shape[-2:]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    x = x[..., top:top + s, left:left + s]
    if s != resolution:
        x = F.interpolate(x, size=(resolution, resolution), mode="bilinear", antialias=True, align_corners=False)
    return (x / 127.5 - 1.0).clamp_(-1.0, 1.0)


def read_refs(shard: str, warn: bool = True) -> Iterator[SampleRef]:
    """Sample references of one shard in file order (reads tar headers and JSON members only).

    Samples without an mp4 or with bad JSON are skipped, with a warning naming shard and key if ``warn``.
    """
    path = Path(shard)
    if not path.exists():
        raise FileNotFoundError(f"shard not found: {path}")
    with tarfile.open(path, mode="r:") as tar:
        members: dict[str, dict[str, tarfile.TarInfo]] = {}
        order: list[str] = []
        for m in tar:
            check_member(m, path)
            key, ext = split_member_name(m.name)
            if key not in members:
                members[key] = {}
                order.append(key)
            members[key][ext] = m
        for key in order:
            parts = members[key]
            if "mp4" not in parts or "json" not in parts:
                if warn:
                        log.warning("skipping sample %s in shard %s: it lacks %s", key, path,
                                "the .mp4" if "mp4" not in parts else "the .json")
                continue
            try:
                meta = json.loads(tar.extractfile(parts["json"]).read())
                int(meta["num_frames"]), float(meta["fps"])
            except (ValueError, KeyError, TypeError) as err:
                if warn:
                    log.warning("skipping sample %s in shard %s: bad JSON metadata (%s)", key, path, err)
                continue
            yield SampleRef(str(path), key, meta, parts["mp4"].offset_data, parts["mp4"].size)


class _Stream:
    """The deterministic per-rank stream; shared by the main process and DataLoader workers."""

    def __init__(self, shards: list[str], frames: int, fps: float, resolution: int, batch_size: int, seed: int,
                 rank: int, world_size: int, shuffle_buffer: int, cache_mb: float = 0.0, curriculum: Any = None,
                 total_batches: int | None = None, overlap_source: str = "auto",
                 overlap_extractor: str = "thumbnail", decoded_dir: str | None = None):
        self.decoded = DecodedCopy(decoded_dir) if decoded_dir else None
        self.shards, self.frames, self.fps, self.resolution = shards, frames, fps, resolution
        self.batch_size, self.seed, self.rank, self.world_size = batch_size, seed, rank, world_size
        self.shuffle_buffer = shuffle_buffer
        self.cache_bytes = int(cache_mb * 2**20)
        self._cache: dict[tuple[str, int], np.ndarray] = {}  # (shard, offset) -> all decoded frames (uint8)
        self._model_cache: dict[tuple[str, int], torch.Tensor] = {}  # (shard, offset) -> all frames, model input
        self._cached_bytes = 0  # both caches together
        self.curriculum = curriculum if curriculum is not None and curriculum.mode != "none" else None
        self.total_batches = total_batches
        self.overlap_source, self.overlap_extractor = overlap_source, overlap_extractor
        self._profiles: dict[tuple[str, int], np.ndarray] = {}  # (shard, offset) -> overlap profile
        self._extractor: Any = None
        self._refs: dict[str, list[SampleRef]] = {}  # shard -> its usable sample references, read once

    def shard_refs(self, shard: str, warn: bool = True) -> list[SampleRef]:
        """`read_refs` of `shard`, read on first use and kept: later epochs reuse the tar index and JSON metadata
        instead of parsing them again (60% of the loader's time per sample before; the same references, in the same
        order, either way)."""
        refs = self._refs.get(shard)
        if refs is None:
            refs = self._refs[shard] = list(read_refs(shard, warn))
        return refs

    @property
    def split_by_sample(self) -> bool:
        """With fewer shards than ranks every rank reads all shards and keeps every world_size-th sample."""
        return len(self.shards) < self.world_size

    def rank_shards(self, epoch: int) -> list[str]:
        order = np.random.default_rng([self.seed, epoch, 0x5A]).permutation(len(self.shards))
        if self.split_by_sample:
            return [self.shards[i] for i in order]
        return [self.shards[i] for i in order[self.rank::self.world_size]]

    def epoch_refs(self, epoch: int, warn: bool = True) -> Iterator[SampleRef]:
        """Usable samples of this rank in ``epoch``, shuffled (nothing decoded)."""
        rng = np.random.default_rng([self.seed, epoch, self.rank, 0xB0F])
        span = self.frames / self.fps
        buf: list[SampleRef] = []
        usable = 0
        for shard in self.rank_shards(epoch):
            for ref in self.shard_refs(shard, warn):
                if int(ref.meta["num_frames"]) / float(ref.meta["fps"]) + 1e-9 < span:
                    continue  # too short for the sampling span: discarded
                usable += 1
                if self.split_by_sample and (usable - 1) % self.world_size != self.rank:
                    continue
                if len(buf) < self.shuffle_buffer:
                    buf.append(ref)
                    continue
                j = int(rng.integers(len(buf)))
                yield buf[j]
                buf[j] = ref
        rng.shuffle(buf)
        yield from buf

    def decode(self, ref: SampleRef, epoch: int, handles: dict[str, Any], batch: int = 0) -> torch.Tensor | None:
        rng = np.random.default_rng([self.seed, epoch, self.rank, _key_int(ref.key)])
        try:
            fh = handles.get(ref.shard)
            if fh is None:
                fh = handles[ref.shard] = open(ref.shard, "rb")
            if self.curriculum is None:
                idx = frame_indices(ref.meta, self.frames, self.fps, rng)
                assert idx is not None  # too-short samples never reach here
            else:
                idx = self.curriculum_indices(ref, batch, rng, fh)
            return self._model_frames(ref, idx, fh)
        except (VideoDecodeError, OSError) as err:
            log.warning("skipping corrupt sample: shard %s key %s (%s)", ref.shard, ref.key, err)
            return None

    def progress(self, batch: int) -> float:
        """Training progress in [0, 1] of the stream's batch `batch` (0-based, counted from the start of training)."""
        if not self.total_batches:
            raise ValueError("a curriculum needs total_batches (the run's optimizer steps)")
        return min(max(batch / self.total_batches, 0.0), 1.0)

    def curriculum_indices(self, ref: SampleRef, batch: int, rng: np.random.Generator, fh: Any) -> np.ndarray:
        """Source frame indices of `ref` drawn by the curriculum sampler at the progress of batch `batch`."""
        n = int(ref.meta["num_frames"])
        profile = self.overlap_profile(ref, fh) if self.curriculum.mode == "overlap" else None
        idx, _gap = self.curriculum.sample(n, self.frames, self.progress(batch), rng, profile)
        return np.minimum(idx.astype(np.int64), n - 1)

    def overlap_profile(self, ref: SampleRef, fh: Any) -> np.ndarray:
        """The clip's overlap profile (computed once per process; see the module docstring for the sources)."""
        key = (ref.shard, ref.offset)
        prof = self._profiles.get(key)
        if prof is not None:
            return prof
        cams = ref.meta.get("cameras")
        if self.overlap_source == "geometric" and not cams:
            raise VideoDecodeError(f"overlap_source 'geometric' but clip {ref.key} has no cameras in its JSON")
        if cams and self.overlap_source in ("auto", "geometric"):
            f64 = torch.float64
            camera = Camera(R=torch.tensor(cams["R"], dtype=f64), t=torch.tensor(cams["t"], dtype=f64),
                            f=torch.tensor(cams["f"], dtype=f64))
            h, w = int(ref.meta.get("height", self.resolution)), int(ref.meta.get("width", self.resolution))
            prof = cur.geometric_overlap_profile(camera, h, w)
        else:
            if self._extractor is None:
                self._extractor = (cur.dinov2_extractor() if self.overlap_extractor == "dinov2"
                                   else cur.thumbnail_extractor())
            video = self._cached_frames(ref, np.arange(int(ref.meta["num_frames"])), fh)
            prof = cur.feature_overlap_profile(to_model_frames(video, min(self.resolution, 64)), self._extractor)
        self._profiles[key] = prof
        return prof

    def _model_frames(self, ref: SampleRef, idx: np.ndarray, fh: Any) -> torch.Tensor:
        """Frames `idx` of `ref`'s video as model input (`to_model_frames`). When the frames are downsampled (a clip
        wider than twice the training side: its float32 frames take no more memory than its uint8 pixels) and the
        cache budget allows, the whole video is converted once and kept, so later epochs index it instead of
        resizing again (0.12-0.16 -> 0.06 ms per sample at 32^2 -> 16^2, benchmarks/RESULTS.md); the values are the
        same either way (`F.interpolate` resizes each frame on its own)."""
        key = (ref.shard, ref.offset)
        video = self._model_cache.get(key)
        if video is None:
            side = min(int(ref.meta.get("height", 0)), int(ref.meta.get("width", 0)))
            if side < 2 * self.resolution or key in self._cache or self._cached_bytes >= self.cache_bytes:
                return to_model_frames(self._cached_frames(ref, idx, fh), self.resolution)
            video = to_model_frames(self._whole_video(ref, fh), self.resolution)
            self._model_cache[key] = video
            self._cached_bytes += video.numel() * video.element_size()
        if int(np.max(idx)) >= len(video):
            raise VideoDecodeError(f"frames {sorted(set(int(i) for i in idx if i >= len(video)))[:5]} not found "
                                   f"(video has {len(video)} frames)")
        return video[torch.from_numpy(np.asarray(idx, dtype=np.int64))]

    def _whole_video(self, ref: SampleRef, fh: Any) -> np.ndarray:
        """All frames of `ref`'s video, uint8 (T, H, W, 3): from the shared decoded copy when the loader has one
        (`decoded_dir`; `rayder_core.data.decoded`), else decoded from the shard (raises `VideoDecodeError`)."""
        if self.decoded is not None:
            video = self.decoded.video(ref, self.shard_refs(ref.shard, warn=False))
            if video is not None:
                return video
        fh.seek(ref.offset)
        return decode_mp4(fh.read(ref.size))

    def _cached_frames(self, ref: SampleRef, idx: np.ndarray, fh: Any) -> np.ndarray:
        """Frames `idx` of `ref`'s video. With a cache budget, a video is decoded whole once and kept (uint8) while
        the budget lasts, so later epochs index memory instead of decoding; the frames are the same either way."""
        key = (ref.shard, ref.offset)
        video = self._cache.get(key)
        if video is None:
            if self._cached_bytes >= self.cache_bytes and self.decoded is None:
                fh.seek(ref.offset)
                return decode_mp4(fh.read(ref.size), idx, fps=float(ref.meta["fps"]))
            video = self._whole_video(ref, fh)
            if self._cached_bytes < self.cache_bytes:
                self._cache[key] = video
                self._cached_bytes += video.nbytes
        if int(np.max(idx)) >= len(video):
            raise VideoDecodeError(f"frames {sorted(set(int(i) for i in idx if i >= len(video)))[:5]} not found "
                                   f"(video has {len(video)} frames)")
        return video[np.asarray(idx, dtype=np.int64)]

    def batches(self, epoch: int, samples: int, worker: int = 0, num_workers: int = 1,
                batches: int = 0) -> Iterator[dict[str, Any]]:
        """Batches from position (``epoch``, ``samples``) on, forever; this worker decodes every
        ``num_workers``-th batch and yields only those, each tagged with its end position. ``batches``: batches of
        the stream consumed before the position (since the start of training; the curriculum's clock)."""
        if samples % self.batch_size:
            raise ValueError(f"resume position samples={samples} is not a multiple of batch_size={self.batch_size}")
        g = 0  # batch counter since the resume point: decides the worker
        while True:
            produced = 0
            group: list[SampleRef] = []
            for pos, ref in enumerate(self.epoch_refs(epoch, warn=worker == 0)):
                if pos < samples:
                    continue  # consumed before the resume point: skipped without reading the video
                group.append(ref)
                if len(group) < self.batch_size:
                    continue
                produced += 1
                mine = g % num_workers == worker
                g += 1
                end = pos + 1
                if mine:
                    yield self._make_batch(group, epoch, end, batches + g - 1)
                group = []
            if produced == 0 and samples == 0:
                raise ValueError(
                    f"rank {self.rank} has fewer than batch_size={self.batch_size} usable clips (>= "
                    f"{self.frames / self.fps:g} s) in its {len(self.rank_shards(epoch))} shard(s)")
            epoch, samples = epoch + 1, 0

    def _make_batch(self, group: list[SampleRef], epoch: int, end: int, batch: int = 0) -> dict[str, Any]:
        handles: dict[str, Any] = {}
        try:
            clips = [self.decode(ref, epoch, handles, batch) for ref in group]
        finally:
            for fh in handles.values():
                fh.close()
        good = [i for i, c in enumerate(clips) if c is not None]
        out: dict[str, Any] = {"epoch": epoch, "samples": end, "batches": batch + 1}
        if not good:
            log.warning("skipping batch ending at sample %d of epoch %d: no decodable video", end, epoch)
            out.update(x=None, key=None)
            return out
        # Replace a failed sample with the next good one of the batch (cyclically): deterministic.
        pick = [i if clips[i] is not None else min((j for j in good if j > i), default=good[0])
                for i in range(len(clips))]
        out["x"] = torch.stack([clips[i] for i in pick])
        out["key"] = [group[i].key for i in pick]
        return out


class _WorkerDataset(torch.utils.data.IterableDataset):
    def __init__(self, stream: _Stream, epoch: int, samples: int, batches: int = 0):
        super().__init__()
        self.stream, self.epoch, self.samples, self.batches = stream, epoch, samples, batches

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        worker, n = (0, 1) if info is None else (info.id, info.num_workers)
        return self.stream.batches(self.epoch, self.samples, worker, n, self.batches)


class VideoClipLoader:
    """Infinite iterable of ``{"x": float32 (B, K, 3, H, W) in [-1, 1], "key": list[str]}`` batches.

    Args:
        shards: tar shard paths (e.g. ``Manifest.shards(0.1)``); a missing one raises ``FileNotFoundError``
            naming it (at construction, and again if it disappears before iteration reaches it).
        frames: K, frames per clip. fps: average sampling rate (frames/s) -- the span is ``frames / fps`` s.
        resolution: output side in pixels (square). batch_size: B per rank.
        seed, rank, world_size: randomness and DDP split (shards are split across ranks; with fewer shards
            than ranks, samples are). num_workers: DataLoader worker processes (0 = in-process).
        shuffle_buffer: samples held by the buffer shuffle.
        cache_mb: memory (MiB, per process) for whole decoded videos, reused by later epochs; 0 = decode every
            sample (small corpora at low resolution fit: 2000 clips of 30 frames at 32^2 take ~180 MiB).
        decoded_dir: folder of a decoded copy of the shards shared by processes and runs
            (`rayder_core.data.decoded`): each shard is decoded once per sweep instead of once per run; None = off.
        curriculum: a `rayder_core.data.curriculum.CurriculumSampler` (mode ``frame_interval`` or
            ``overlap``) drawing each clip's frames at the training progress; None or mode ``none``: ``fps`` sampling.
        total_batches: batches of the whole training (its optimizer steps): progress = batch index / total_batches.
        overlap_source: ``auto`` | ``geometric`` | ``feature``; overlap_extractor: ``thumbnail`` | ``dinov2``.

    ``state_dict()`` / ``load_state_dict()`` give exact resume (see module docstring). Iterating starts at
    the current state; the state advances as batches are consumed from the iterator.
    """

    def __init__(self, shards: list[str], frames: int = 8, fps: float = 2.0, resolution: int = 64,
                 batch_size: int = 4, seed: int = 0, rank: int = 0, world_size: int = 1, num_workers: int = 0,
                 shuffle_buffer: int = 256, cache_mb: float = 0.0, curriculum: Any = None,
                 total_batches: int | None = None, overlap_source: str = "auto", overlap_extractor: str = "thumbnail",
                 decoded_dir: str | None = None):
        shards = [str(s) for s in shards]
        if not shards:
            raise ValueError("VideoClipLoader needs at least one shard")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside [0, world_size={world_size})")
        if (frames < 1 or fps <= 0 or resolution < 1 or batch_size < 1 or num_workers < 0 or shuffle_buffer < 1
                or cache_mb < 0):
            raise ValueError(f"bad loader settings: frames={frames}, fps={fps}, resolution={resolution}, "
                             f"batch_size={batch_size}, num_workers={num_workers}, shuffle_buffer={shuffle_buffer}")
        missing = [s for s in shards if not Path(s).exists()]
        if missing:
            raise FileNotFoundError(f"shard not found: {missing[0]}" + (f" (and {len(missing) - 1} more)"
                                                                        if len(missing) > 1 else ""))
        if curriculum is not None and curriculum.mode != "none" and not (total_batches and total_batches > 0):
            raise ValueError(f"curriculum mode {curriculum.mode!r} needs total_batches > 0 (the run's steps)")
        if overlap_source not in OVERLAP_SOURCES or overlap_extractor not in OVERLAP_EXTRACTORS:
            raise ValueError(f"overlap_source must be one of {OVERLAP_SOURCES} and overlap_extractor one of "
                             f"{OVERLAP_EXTRACTORS}, got {overlap_source!r}, {overlap_extractor!r}")
        self.num_workers = num_workers
        self._stream = _Stream(shards, frames, float(fps), resolution, batch_size, seed, rank, world_size,
                               shuffle_buffer, cache_mb, curriculum, total_batches, overlap_source, overlap_extractor,
                               decoded_dir)
        self._epoch, self._samples, self._batches = 0, 0, 0

    @classmethod
    def from_manifest(cls, manifest_path: str, fraction: float, **kwargs: Any) -> "VideoClipLoader":
        """Loader over the shards of one data ``fraction`` of a manifest file."""
        return cls(Manifest.load(manifest_path).shards(fraction), **kwargs)

    @property
    def batch_size(self) -> int:
        return self._stream.batch_size

    def state_dict(self) -> dict[str, int]:
        """``{"epoch": e, "samples": n, "batches": b}``: n samples of epoch e's stream consumed by this rank, b batches
        of the stream consumed in all (the curriculum's clock)."""
        return {"epoch": self._epoch, "samples": self._samples, "batches": self._batches}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Resume position; a state without ``batches`` (saved before the curriculum existed) counts from 0."""
        epoch, samples, batches = int(state["epoch"]), int(state["samples"]), int(state.get("batches", 0))
        if epoch < 0 or samples < 0 or batches < 0 or samples % self.batch_size:
            raise ValueError(f"invalid loader state {state}: need epoch >= 0, batches >= 0 and samples a multiple of "
                             f"batch_size={self.batch_size}")
        self._epoch, self._samples, self._batches = epoch, samples, batches

    def __iter__(self) -> Iterator[dict[str, Any]]:
        dataset = _WorkerDataset(self._stream, self._epoch, self._samples, self._batches)
        if self.num_workers == 0:
            source: Any = iter(dataset)
        else:
            source = iter(torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=self.num_workers,
                                                      prefetch_factor=2, persistent_workers=False))
        for item in source:
            self._epoch, self._samples, self._batches = int(item["epoch"]), int(item["samples"]), int(item["batches"])
            if item["x"] is None:
                continue
            yield {"x": item["x"], "key": list(item["key"])}

