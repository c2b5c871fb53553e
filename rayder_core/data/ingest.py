"""Real videos -> H.264 at 6 fps (PyAV) -> WebDataset shards, resumable, plus the nested-fraction manifest.

Inputs (files and directories, searched recursively for common video extensions) are sorted and cut into
groups of ``shard_size``; group ``i`` becomes ``OUT/shards/shard-{i:06d}.tar``. A shard is written atomically,
so after an interruption a re-run skips every finished shard and redoes only the rest. ``OUT/ingest.json``
records the inputs and settings; a re-run with different ones is refused instead of mixing corpora.

Frame-rate conversion holds frames: output frame ``j`` (at ``j / fps`` seconds after the first source frame)
is the last source frame shown at that time. The output has one frame per output time ``j / fps < duration``,
i.e. ``ceil(duration * fps)`` frames (``duration * fps`` for whole multiples), where the source duration is the
last frame's time plus one source frame interval.

Camera poses: when ``VIDEO_STEM.cameras.json`` lies next to a video, holding ``{"cameras": {"R": [N][3][3],
"t": [N][3], "f": [N]}}`` for its N source frames (camera-to-world, OpenCV axes, normalised focal as in
:mod:`rayder_core.geometry`), the poses of the kept frames are stored in the sample JSON as ``cameras``.
"""

from __future__ import annotations

import hashlib
import io
import json
import multiprocessing as mp
import os
import re
import sys
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
from tqdm import tqdm

from rayder_core.data.manifest import build_manifest
from rayder_core.data.shards import DEFAULT_FPS, list_shards, rgb_to_yuv420p, shard_path, write_shard

VIDEO_EXTENSIONS = {".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".flv", ".wmv",
                    ".3gp", ".ogv", ".gif"}


class SkipVideo(Exception):
    """A video that cannot be used (unreadable, too short); the message says why."""


def find_videos(inputs: list[str | os.PathLike]) -> list[Path]:
    """Video files named directly or found (recursively, by extension) under directories; sorted, unique.

    Raises ``FileNotFoundError`` naming any input path that does not exist.
    """
    found: set[Path] = set()
    for item in inputs:
        p = Path(item)
        if not p.exists():
            raise FileNotFoundError(f"input not found: {p}")
        if p.is_dir():
            found.update(q.resolve() for q in p.rglob("*") if q.is_file() and q.suffix.lower() in VIDEO_EXTENSIONS)
        else:
            found.add(p.resolve())
    return sorted(found)


def video_key(path: Path) -> str:
    """A WebDataset-safe unique key: sanitised file stem plus a hash of the full path."""
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", path.stem)[:48].strip("_") or "video"
    return f"{stem}-{hashlib.sha1(str(path).encode()).hexdigest()[:10]}"


def _output_size(w: int, h: int, max_side: int | None) -> tuple[int, int]:
    scale = 1.0 if not max_side or max(w, h) <= max_side else max_side / max(w, h)
    ow, oh = max(2, int(round(w * scale))), max(2, int(round(h * scale)))
    return ow - ow % 2, oh - oh % 2  # yuv420p needs even sizes


def _load_cameras(path: Path) -> dict[str, np.ndarray] | None:
    sidecar = path.with_name(path.stem + ".cameras.json")
    if not sidecar.exists():
        return None
    try:
        data = json.loads(sidecar.read_text())["cameras"]
        cams = {k: np.asarray(data[k], dtype=np.float64) for k in ("R", "t", "f")}
    except (ValueError, KeyError, TypeError) as err:
        raise SkipVideo(f"bad camera file {sidecar} ({type(err).__name__}: {err})") from err
    n = len(cams["f"])
    if cams["R"].shape != (n, 3, 3) or cams["t"].shape != (n, 3):
        raise SkipVideo(f"bad camera file {sidecar}: need R (N,3,3), t (N,3), f (N,)")
    return cams


def transcode(path: str | os.PathLike, fps: float = DEFAULT_FPS, min_seconds: float = 4.0,
              max_side: int | None = None, crf: int = 18) -> tuple[bytes, dict[str, Any]]:
    """Re-encode one video to H.264 mp4 at ``fps``; returns ``(mp4 bytes, metadata)``.

    Raises ``SkipVideo`` with a one-line reason for unreadable or too-short (< ``min_seconds``) videos.
    """
    path = Path(path)
    cams = _load_cameras(path)
    buf = io.BytesIO()
    try:
        with av.open(str(path), mode="r") as src:
            if not src.streams.video:
                raise SkipVideo("no video stream")
            vin = src.streams.video[0]
            vin.thread_type = "AUTO"
            declared = float(vin.duration * vin.time_base) if vin.duration and vin.time_base else None
            if declared is not None and declared + 0.5 < min_seconds:
                raise SkipVideo(f"too short ({declared:.2f} s < {min_seconds:g} s)")
            out = av.open(buf, mode="w", format="mp4")
            vout = None
            t0 = None
            last_time = None
            prev = None  # (frame array, source index) currently on screen
            src_index = -1
            kept: list[int] = []
            step = 1.0 / fps

            def emit(image: np.ndarray, index: int) -> None:
                for packet in vout.encode(rgb_to_yuv420p(image)):
                    out.mux(packet)
                kept.append(index)

            try:
                for frame in src.decode(vin):
                    if frame.time is None:
                        continue
                    src_index += 1
                    if t0 is None:
                        t0 = frame.time
                        src_size = (frame.width, frame.height)
                        ow, oh = _output_size(frame.width, frame.height, max_side)
                        vout = out.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
                        vout.width, vout.height, vout.pix_fmt = ow, oh, "yuv420p"
                        vout.options = {"crf": str(crf), "preset": "veryfast"}
                    ft = frame.time - t0
                    # Every output time before this frame's time shows the previous frame.
                    while prev is not None and len(kept) * step < ft - 1e-6:
                        emit(prev[0], prev[1])
                    image = frame.reformat(width=ow, height=oh, format="rgb24").to_ndarray()
                    prev = (image, src_index)
                    last_time = ft
                if prev is None:
                    raise SkipVideo("no decodable frames")
                rate = float(vin.average_rate) if vin.average_rate else fps
                duration = last_time + 1.0 / rate
                if duration + 1e-6 < min_seconds:
                    raise SkipVideo(f"too short ({duration:.2f} s < {min_seconds:g} s)")
                total = int(np.ceil(duration * fps - 1e-6))  # output times j / fps < duration
                while len(kept) < total:
                    emit(prev[0], prev[1])
                for packet in vout.encode():
                    out.mux(packet)
            finally:
                out.close()
    except SkipVideo:
        raise
    except (av.error.FFmpegError, OSError, ValueError) as err:
        raise SkipVideo(f"unreadable ({type(err).__name__}: {err})") from err
    meta: dict[str, Any] = {
        "source": str(path), "fps": float(fps), "num_frames": len(kept), "duration": len(kept) / fps,
        "width": ow, "height": oh, "source_width": src_size[0], "source_height": src_size[1],
        "source_fps": rate, "source_duration": duration, "source_frames": src_index + 1,
    }
    if cams is not None:
        if len(cams["f"]) != src_index + 1:
            raise SkipVideo(f"camera file has {len(cams['f'])} poses but the video has {src_index + 1} frames")
        idx = np.asarray(kept)
        meta["cameras"] = {k: cams[k][idx].tolist() for k in ("R", "t", "f")}
    return buf.getvalue(), meta


def _ingest_shard(job: tuple[int, list[str], dict[str, Any], str]) -> tuple[int, int, list[str]]:
    index, videos, cfg, shard_dir = job
    samples, skipped = [], []
    for video in videos:
        try:
            data, meta = transcode(video, cfg["fps"], cfg["min_seconds"], cfg["max_side"])
        except SkipVideo as why:
            skipped.append(f"skip {video}: {why}")
            continue
        key = video_key(Path(video))
        meta["key"] = key
        samples.append((key, data, meta))
    write_shard(shard_path(shard_dir, index), samples)
    return index, len(videos), skipped


def ingest(videos: list[str | os.PathLike], out: str | os.PathLike, shard_size: int = 20, fps: float = DEFAULT_FPS,
           min_seconds: float = 4.0, max_side: int | None = None, workers: int = 2,
           fractions: tuple[float, ...] = (0.01, 0.1, 1.0), seed: int = 0, progress: bool = True) -> dict[str, Any]:
    """Ingest ``videos`` (files/directories) into ``out/shards`` and write ``out/manifest.json``.

    Returns ``{"videos", "shards", "written", "skipped" (this run), "reused_shards"}``. Skipped videos are
    reported one line each (to stderr) and counted at the end.
    """
    if shard_size < 1 or fps <= 0 or min_seconds < 0:
        raise ValueError(f"bad ingest settings: shard_size={shard_size}, fps={fps}, min_seconds={min_seconds}")
    paths = [str(p) for p in find_videos(list(videos))]
    if not paths:
        raise ValueError(f"no videos found in {', '.join(map(str, videos))}")
    out = Path(out)
    shard_dir = out / "shards"
    cfg = {"version": 1, "fps": float(fps), "min_seconds": float(min_seconds), "max_side": max_side,
           "shard_size": int(shard_size)}
    record = out / "ingest.json"
    state = {"config": cfg, "videos": paths, "skipped": {}}
    if record.exists():
        previous = json.loads(record.read_text())
        if previous.get("config") != cfg or previous.get("videos") != paths:
            raise ValueError(f"{out} holds an ingest of other videos or settings; use another --out "
                             f"(recorded in {record})")
        state["skipped"] = previous.get("skipped", {})
    out.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps(state, indent=1))
    groups = [paths[i:i + shard_size] for i in range(0, len(paths), shard_size)]
    todo = [(i, g, cfg, str(shard_dir)) for i, g in enumerate(groups) if not shard_path(shard_dir, i).exists()]
    done_videos = len(paths) - sum(len(j[1]) for j in todo)
    bar = tqdm(total=len(paths), initial=done_videos, unit="video", desc="ingest", disable=not progress)
    skipped_now = 0

    def finished(index: int, n: int, skipped: list[str]) -> None:
        nonlocal skipped_now
        for line in skipped:
            tqdm.write(line, file=sys.stderr)
        skipped_now += len(skipped)
        state["skipped"][str(index)] = skipped
        record.write_text(json.dumps(state, indent=1))
        bar.update(n)

    if workers <= 1 or len(todo) <= 1:
        for job in todo:
            finished(*_ingest_shard(job))
    else:
        with mp.get_context("fork").Pool(workers) as pool:
            for result in pool.imap_unordered(_ingest_shard, todo):
                finished(*result)
    bar.close()
    total_skipped = sum(len(v) for v in state["skipped"].values())
    written = len(paths) - total_skipped
    print(f"ingest: {written} videos in {len(groups)} shards under {shard_dir}; skipped {skipped_now} this run "
          f"({total_skipped} in total); reused {len(groups) - len(todo)} finished shards", file=sys.stderr)
    if written == 0:
        raise ValueError(f"every input video was skipped; no shards with videos under {shard_dir}")
    build_manifest(shard_dir, fractions=fractions, seed=seed).save(out / "manifest.json")
    return {"videos": len(paths), "shards": len(groups), "written": written, "skipped": skipped_now,
            "reused_shards": len(groups) - len(todo), "shard_paths": [str(p) for p in list_shards(shard_dir)]}
