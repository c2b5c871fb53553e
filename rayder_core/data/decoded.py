"""A decoded copy of the training shards on disk, shared by every process and run that reads them.

Each training process keeps the videos it decodes in memory (the loader's ``cache_mb``), but a sweep starts a new
process per run, and every run decoded its data fraction again: ~10.5 ms per 32^2 clip, ~21 s per run at D = 2048,
~5.6 of the demo's ~47 core-minutes (benchmarks/RESULTS.md). With a ``DecodedCopy`` the first process to need a
shard decodes all of its clips once and writes them to ``root`` as one ``.npz`` (uint8 RGB frames exactly as
``decode_mp4`` returns them, no pickle); every later process loads that file instead.

A shard's file is named by a hash of the shard's absolute path, size and modification time, so a regenerated or
replaced shard never reads a stale copy. Files are written to a temporary name and renamed, so two processes that
decode the same shard at once both leave a whole file (the same bytes). A file that cannot be read (truncated,
edited) is reported with a warning naming it and the shard is decoded again; a clip that fails to decode is left out
of the copy, and the loader then decodes it itself and skips it with its usual warning, as without a copy.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import zipfile
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from rayder_core.data.shards import VideoDecodeError, decode_mp4

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
"""Part of every file's name: a change of the stored layout gets new files instead of misreading old ones."""


class ClipRef(Protocol):
    """What the copy needs of a sample reference (`rayder_core.data.loader.SampleRef`)."""

    shard: str
    offset: int
    size: int


class DecodedCopy:
    """Whole decoded videos (uint8 ``(T, H, W, 3)``) of each shard, one ``.npz`` per shard under ``root``.

    Args:
        root: folder of the copy (created on first write); a sweep's runs share it.
        keep_shards: shards kept loaded in this process (least recently used dropped first).
        decode: ``bytes -> uint8 (T, H, W, 3)``, raising ``VideoDecodeError``; default `decode_mp4`.
    """

    def __init__(self, root: str | Path, keep_shards: int = 8,
                 decode: Callable[[bytes], np.ndarray] | None = None) -> None:
        self.root = Path(root)
        self.keep_shards = max(1, int(keep_shards))
        self._decode = decode
        self._loaded: OrderedDict[str, dict[int, np.ndarray]] = OrderedDict()

    def path(self, shard: str) -> Path:
        """The copy's file for `shard` (named by its absolute path, size and modification time)."""
        p = Path(shard).resolve()
        st = p.stat()
        key = f"{p}\0{st.st_size}\0{st.st_mtime_ns}\0v{FORMAT_VERSION}"
        return self.root / f"{p.stem}-{hashlib.sha1(key.encode()).hexdigest()[:16]}.npz"

    def video(self, ref: ClipRef, shard_refs: Sequence[ClipRef]) -> np.ndarray | None:
        """All frames of `ref`'s video, uint8 ``(T, H, W, 3)``; None when it did not decode. `shard_refs` are all the
        references of `ref.shard` (the clips decoded together when the shard has no copy yet)."""
        videos = self._loaded.get(ref.shard)
        if videos is None:
            videos = self._load(ref.shard)
            if videos is None:
                videos = self._build(ref.shard, shard_refs)
            self._loaded[ref.shard] = videos
            while len(self._loaded) > self.keep_shards:
                self._loaded.popitem(last=False)
        else:
            self._loaded.move_to_end(ref.shard)
        return videos.get(int(ref.offset))

    def _load(self, shard: str) -> dict[int, np.ndarray] | None:
        path = self.path(shard)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as z:
                offsets, lengths, frames = z["offsets"], z["lengths"], z["frames"]
            if offsets.shape != lengths.shape or int(lengths.sum()) != len(frames) or frames.dtype != np.uint8:
                raise ValueError(f"inconsistent arrays (offsets {offsets.shape}, lengths sum {int(lengths.sum())}, "
                                 f"frames {frames.shape} {frames.dtype})")
        except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as err:
            log.warning("decoded copy %s of shard %s is unreadable (%s); decoding the shard again", path, shard, err)
            return None
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        return {int(o): frames[s:s + n] for o, s, n in zip(offsets, starts, lengths)}

    def _build(self, shard: str, refs: Sequence[ClipRef]) -> dict[int, np.ndarray]:
        decode = self._decode or decode_mp4
        videos: dict[int, np.ndarray] = {}
        with open(shard, "rb") as fh:
            for ref in refs:
                fh.seek(ref.offset)
                try:
                    videos[int(ref.offset)] = decode(fh.read(ref.size))
                except VideoDecodeError:
                    continue  # left out: the loader decodes it itself and skips it with its warning
        if videos:
            self._write(shard, videos)
        return videos

    def _write(self, shard: str, videos: dict[int, np.ndarray]) -> None:
        path = self.path(shard)
        shapes = {v.shape[1:] for v in videos.values()}
        if len(shapes) != 1:
            return  # clips of different sizes in one shard: kept in memory only (one array per file)
        offsets = np.array(list(videos), dtype=np.int64)
        lengths = np.array([len(v) for v in videos.values()], dtype=np.int64)
        tmp: str | None = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.stem, suffix=".tmp")
            with os.fdopen(fd, "wb") as f:
                np.savez(f, offsets=offsets, lengths=lengths, frames=np.concatenate(list(videos.values())))
            os.replace(tmp, path)
            tmp = None
        except OSError as err:
            log.warning("could not write the decoded copy %s of shard %s (%s); training goes on without it",
                        path, shard, err)
        finally:
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)
