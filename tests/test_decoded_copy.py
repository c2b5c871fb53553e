"""The decoded copy of the shards shared by a sweep's runs (`rayder_core.data.decoded`): batches identical to decoding,
a second process decodes nothing, stale and unreadable copies are never used, a corrupt clip is still skipped."""
from __future__ import annotations

import logging
import os

import numpy as np
import pytest
import torch

import rayder_core.data.decoded as decoded_mod
import rayder_core.data.loader as loader_mod
from rayder_core.data.decoded import DecodedCopy
from rayder_core.data.loader import VideoClipLoader, read_refs
from rayder_core.data.manifest import Manifest
from rayder_core.data.shards import decode_mp4, encode_mp4, write_shard
from rayder_core.train_config import load_train_config


def _no_decoding(*_args, **_kwargs):
    raise AssertionError("decoded although the shard's copy exists")


def _batches(shards, n: int, **kw) -> list[dict]:
    it = iter(VideoClipLoader(shards, frames=4, fps=2.0, batch_size=4, seed=3, **kw))
    return [next(it) for _ in range(n)]


@pytest.mark.parametrize("resolution,cache_mb", [(16, 64), (32, 64), (32, 0.05)])
def test_copy_gives_identical_batches_and_a_second_process_decodes_nothing(synth_data, tmp_path, monkeypatch,
                                                                           resolution, cache_mb):
    """Over three epochs (15 batches of 4 from 20 clips), a loader that writes the copy and a later one that only
    reads it give the batches of plain decoding, bit for bit: at 16^2 (kept as model input), 32^2 (kept as pixels)
    and with a budget of about one clip (the copy serves what the memory cache cannot hold)."""
    shards = Manifest.load(synth_data.manifest).shards(0.01)
    plain = _batches(shards, 15, resolution=resolution, cache_mb=cache_mb)
    first = _batches(shards, 15, resolution=resolution, cache_mb=cache_mb, decoded_dir=str(tmp_path))
    files = sorted(tmp_path.glob("*.npz"))
    assert len(files) == len(shards)
    monkeypatch.setattr(loader_mod, "decode_mp4", _no_decoding)
    monkeypatch.setattr(decoded_mod, "decode_mp4", _no_decoding)
    second = _batches(shards, 15, resolution=resolution, cache_mb=cache_mb, decoded_dir=str(tmp_path))
    for i, (p, a, b) in enumerate(zip(plain, first, second)):
        assert p["key"] == a["key"] == b["key"], i
        assert torch.equal(p["x"], a["x"]) and torch.equal(p["x"], b["x"]), i


def test_copy_holds_exactly_the_decoded_frames(synth_data, tmp_path):
    """Each clip in a shard's file equals `decode_mp4` of its mp4 (brute force over the shard)."""
    shard = Manifest.load(synth_data.manifest).shards(0.01)[0]
    refs = list(read_refs(shard))
    copy = DecodedCopy(tmp_path)
    with open(shard, "rb") as fh:
        for ref in refs:
            fh.seek(ref.offset)
            expected = decode_mp4(fh.read(ref.size))
            got = copy.video(ref, refs)
            assert got.dtype == np.uint8 and np.array_equal(got, expected), ref.key
    reread = DecodedCopy(tmp_path)  # a new process: from the file
    assert all(np.array_equal(reread.video(r, refs), copy.video(r, refs)) for r in refs)


def test_a_changed_shard_gets_a_new_copy(synth_data, tmp_path):
    """The file is named by the shard's path, size and modification time: touching the shard names another file."""
    shard = Manifest.load(synth_data.manifest).shards(0.01)[0]
    copy = DecodedCopy(tmp_path)
    before = copy.path(shard)
    st = os.stat(shard)
    try:
        os.utime(shard, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
        assert copy.path(shard) != before
    finally:
        os.utime(shard, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert copy.path(shard) == before


def test_an_unreadable_copy_is_reported_and_rebuilt(synth_data, tmp_path, caplog):
    shard = Manifest.load(synth_data.manifest).shards(0.01)[0]
    refs = list(read_refs(shard))
    DecodedCopy(tmp_path).video(refs[0], refs)
    path = DecodedCopy(tmp_path).path(shard)
    path.write_bytes(path.read_bytes()[:200])  # truncated
    with caplog.at_level(logging.WARNING, logger="rayder_core.data.decoded"):
        video = DecodedCopy(tmp_path).video(refs[0], refs)
    with open(shard, "rb") as fh:
        fh.seek(refs[0].offset)
        assert np.array_equal(video, decode_mp4(fh.read(refs[0].size)))
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and str(path) in lines[0] and shard in lines[0] and "unreadable" in lines[0]
    assert DecodedCopy(tmp_path)._load(shard) is not None  # rewritten whole


def test_a_corrupt_clip_is_left_out_and_still_skipped_with_a_warning(tmp_path, caplog):
    frames = np.repeat((np.arange(36, dtype=np.uint8) * 3)[:, None, None, None], 3, -1)
    good = encode_mp4(np.broadcast_to(frames, (36, 32, 32, 3)).copy(), 6.0, gop=5)
    meta = {"fps": 6.0, "num_frames": 36, "duration": 6.0, "width": 32, "height": 32}
    samples = [(f"ok{i}", good, meta) for i in range(3)] + [("broken", b"\x00garbage" * 50, meta)]
    shard = str(write_shard(tmp_path / "shard-000000.tar", samples))
    refs = list(read_refs(shard))
    copy_dir = tmp_path / "decoded"
    assert DecodedCopy(copy_dir).video(refs[3], refs) is None  # the broken clip
    with caplog.at_level(logging.WARNING, logger="rayder_core.data.loader"):
        batch = VideoClipLoader([shard], batch_size=4, shuffle_buffer=1, decoded_dir=str(copy_dir))
        batch = next(iter(batch))
    assert sorted(set(batch["key"])) == ["ok0", "ok1", "ok2"]
    lines = [r.getMessage() for r in caplog.records if "broken" in r.getMessage()]
    assert len(lines) == 1 and shard in lines[0]


def test_the_copy_does_not_change_the_run_id():
    base = {"model": {"preset": "tiny-w16"}, "steps": 10}
    a = load_train_config(base)
    b = load_train_config(base, ["data.decoded_dir=runs/decoded"])
    assert b.data.decoded_dir == "runs/decoded" and a.run_id == b.run_id
