"""Video bytes and WebDataset shards.

* ``encode_mp4`` / ``decode_mp4``: H.264 mp4 in memory with PyAV (frames are uint8 RGB, ``(N, H, W, 3)``).
* ``write_shard`` writes a WebDataset tar (``{key}.mp4`` + ``{key}.json``) with ``webdataset.TarWriter``,
  atomically (``.tmp`` file, then rename), so an interrupted run never leaves a half-written shard behind.
* ``iter_shard`` reads a shard back, grouping members by key, after checking every member name
  (no absolute paths, no ``..``, regular files only): a tar is never extracted to disk.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import webdataset as wds
from av.video.reformatter import VideoReformatter

DEFAULT_FPS = 6.0
SHARD_PATTERN = "shard-{index:06d}.tar"


class UnsafeTarError(ValueError):
    """A tar member name could escape the extraction directory or is not a regular file."""


class VideoDecodeError(RuntimeError):
    """A video could not be decoded (corrupt bytes, no video stream, ...)."""


# --------------------------------------------------------------------------------------------- mp4


def encode_mp4(frames: np.ndarray, fps: float = DEFAULT_FPS, crf: int = 18, preset: str = "veryfast",
               gop: int | None = None) -> bytes:
    """Encode uint8 RGB frames ``(N, H, W, 3)`` to H.264 (yuv420p) mp4 bytes at ``fps`` frames/s.

    H and W must be even (a yuv420p requirement); ``crf=18`` is a high-quality, high-bitrate setting;
    ``gop`` is the maximum key-frame interval in frames (default: libx264's).
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"encode_mp4 expects uint8 frames of shape (N, H, W, 3), got {frames.dtype} {frames.shape}")
    n, h, w, _ = frames.shape
    if n == 0:
        raise ValueError("encode_mp4 got zero frames")
    if h % 2 or w % 2:
        raise ValueError(f"H.264 yuv420p needs even height and width, got {h}x{w}")
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mp4") as container:
        rate = _as_fraction(fps)
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"crf": str(crf), "preset": preset}
        stream.thread_count = 1
        if gop is not None:
            stream.gop_size = int(gop)
        for frame in frames:
            for packet in stream.encode(rgb_to_yuv420p(frame)):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buf.getvalue()


def rgb_to_yuv420p(image: np.ndarray) -> av.VideoFrame:
    """uint8 RGB (H, W, 3) -> yuv420p frame. Converting here, not inside the encoder, keeps encodes
    byte-identical across calls (the encoder's own first conversion in a process differs slightly)."""
    return av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24").reformat(format="yuv420p")


def _as_fraction(fps: float):
    return Fraction(fps).limit_denominator(1001)


def decode_mp4(data: bytes, indices: Sequence[int] | None = None, fps: float | None = None) -> np.ndarray:
    """Decode mp4 bytes to uint8 RGB frames ``(N, H, W, 3)``.

    With ``indices`` (frame numbers at the stream's constant rate ``fps``; repeats allowed, any order) only
    those frames are returned, in the order asked, and decoding stops after the last one needed; the decoder
    seeks to the key frame before the first needed frame. Raises ``VideoDecodeError`` on any decoder failure.
    One colour converter serves every frame of the video: ``frame.to_ndarray(format="rgb24")`` sets one up per
    frame, 5-10x the cost of decoding a 32^2 clip (benchmarks/RESULTS.md, loader); the pixels are identical.
    """
    to_rgb = VideoReformatter()
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            if not container.streams.video:
                raise VideoDecodeError("no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO" if indices is None else "SLICE"
            if indices is None:
                frames = [to_rgb.reformat(f, format="rgb24").to_ndarray() for f in container.decode(stream)]
                if not frames:
                    raise VideoDecodeError("video has no frames")
                return np.stack(frames)
            wanted = [int(i) for i in indices]
            if not wanted:
                raise ValueError("decode_mp4 got an empty index list")
            rate = float(fps) if fps is not None else float(stream.average_rate or DEFAULT_FPS)
            first, last = min(wanted), max(wanted)
            if first > 0 and stream.time_base is not None:
                # Seek to the key frame at or before the first frame needed (0.5 frame of slack).
                target = int(max(0.0, (first - 0.5) / rate) / stream.time_base)
                container.seek(target, stream=stream, backward=True, any_frame=False)
            got: dict[int, np.ndarray] = {}
            need = set(wanted)
            for frame in container.decode(stream):
                if frame.pts is None or frame.time_base is None:
                    raise VideoDecodeError("frame without timestamp")
                idx = int(round(float(frame.pts * frame.time_base) * rate))
                if idx in need:
                    got[idx] = to_rgb.reformat(frame, format="rgb24").to_ndarray()
                if idx >= last:
                    break
            missing = need - got.keys()
            if missing:
                raise VideoDecodeError(f"frames {sorted(missing)[:5]} not found (video shorter than its metadata?)")
            return np.stack([got[i] for i in wanted])
    except VideoDecodeError:
        raise
    except (av.error.FFmpegError, ValueError, IndexError, OSError) as err:  # corrupt data, bad container
        raise VideoDecodeError(f"{type(err).__name__}: {err}") from err


# -------------------------------------------------------------------------------------------- tars


@dataclass
class Sample:
    """One WebDataset sample: ``key`` plus raw member bytes by extension (``"mp4"``, ``"json"``)."""

    key: str
    files: dict[str, bytes]

    @property
    def meta(self) -> dict[str, Any]:
        return json.loads(self.files["json"])


def shard_path(shard_dir: str | os.PathLike, index: int) -> Path:
    return Path(shard_dir) / SHARD_PATTERN.format(index=index)


def write_shard(path: str | os.PathLike, samples: Sequence[tuple[str, bytes, dict[str, Any]]]) -> Path:
    """Write ``(key, mp4_bytes, metadata)`` samples to a WebDataset tar at ``path``, atomically.

    The tar is first written to ``path + ".tmp"`` and renamed when complete.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    seen = set()
    with open(tmp, "wb") as stream:
        writer = wds.TarWriter(stream)
        try:
            for key, mp4, meta in samples:
                _check_key(key)
                if key in seen:
                    raise ValueError(f"duplicate key {key!r} in shard {path}")
                seen.add(key)
                writer.write({"__key__": key, "mp4": mp4, "json": json.dumps(meta).encode()})
        finally:
            writer.close()
    os.replace(tmp, path)
    return path


def _check_key(key: str) -> None:
    if not key or "/" in key or "\\" in key or "." in key or key.startswith("_"):
        raise ValueError(f"invalid sample key {key!r}: must be non-empty, without '/', '\\', '.', or leading '_'")


def check_member(member: tarfile.TarInfo, shard: str | os.PathLike) -> None:
    """Raise ``UnsafeTarError`` unless ``member`` is a regular file with a relative, non-escaping name."""
    name = member.name
    parts = Path(name).parts
    if not member.isfile():
        raise UnsafeTarError(f"{shard}: member {name!r} is not a regular file")
    if name.startswith(("/", "\\")) or os.path.isabs(name) or ".." in parts or (parts and ":" in parts[0]):
        raise UnsafeTarError(f"{shard}: member {name!r} has an unsafe path")


def split_member_name(name: str) -> tuple[str, str]:
    """``"dir/abc.mp4"`` -> ``("dir/abc", "mp4")`` (WebDataset convention: extension after the first dot of the basename)."""
    head, _, base = name.rpartition("/")
    stem, dot, ext = base.partition(".")
    if not dot:
        return name, ""
    return (head + "/" + stem if head else stem), ext


def iter_shard(path: str | os.PathLike, want: Sequence[str] = ("mp4", "json")) -> Iterator[Sample]:
    """Yield the samples of one tar shard in file order, members grouped by key.

    Only member extensions in ``want`` are read; others are seeked over. Raises ``FileNotFoundError``
    naming a missing shard and ``UnsafeTarError`` (naming shard and member) for unsafe members.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"shard not found: {path}")
    with tarfile.open(path, mode="r:") as tar:
        key, files = None, {}
        for member in tar:
            check_member(member, path)
            k, ext = split_member_name(member.name)
            if k != key:
                if key is not None and files:
                    yield Sample(key, files)
                key, files = k, {}
            if ext not in want:
                continue
            fh = tar.extractfile(member)
            files[ext] = fh.read() if fh is not None else b""
        if key is not None and files:
            yield Sample(key, files)


def count_samples(path: str | os.PathLike) -> int:
    """Number of videos (``.mp4`` members) in a shard, reading only tar headers."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"shard not found: {path}")
    n = 0
    with tarfile.open(path, mode="r:") as tar:
        for member in tar:
            check_member(member, path)
            n += split_member_name(member.name)[1] == "mp4"
    return n


def list_shards(shard_dir: str | os.PathLike) -> list[Path]:
    """Finished shards (``*.tar``, not ``*.tar.tmp``) in ``shard_dir``, sorted by name."""
    shard_dir = Path(shard_dir)
    if not shard_dir.is_dir():
        raise FileNotFoundError(f"shard directory not found: {shard_dir}")
    return sorted(p for p in shard_dir.glob("*.tar") if p.is_file())
