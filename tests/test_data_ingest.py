"""Shards (mp4 in WebDataset tars, safe reading), ingestion of real containers/codecs, nested manifests."""
from __future__ import annotations

import io
import json
import tarfile
from fractions import Fraction

import av
import numpy as np
import pytest

from rayder_core.data import shards as S
from rayder_core.data.ingest import find_videos, ingest, transcode, video_key
from rayder_core.data.manifest import Manifest, build_manifest, choose_prefixes, fraction_label

STEP = 4  # grey level of source frame i


def write_video(path, n: int, fps: float, codec: str = "mpeg4", w: int = 48, h: int = 32) -> None:
    """A video whose frame i is uniformly grey at level STEP * i (mod 256)."""
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        if codec == "mpeg4":
            s.options = {"qscale": "2"}
        if codec == "ffv1":
            s.pix_fmt = "yuv444p"
        for i in range(n):
            img = np.full((h, w, 3), (STEP * i) % 256, np.uint8)
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


# --------------------------------------------------------------------------------------------- shards


def test_mp4_round_trip_and_indexed_decode():
    rng = np.random.default_rng(0)
    frames = (rng.random((20, 3, 4, 1)) * 255).astype(np.uint8).repeat(8, 1).repeat(8, 2).repeat(3, 3)
    data = S.encode_mp4(frames, 6.0, gop=4)
    full = S.decode_mp4(data)
    assert full.shape == (20, 24, 32, 3)
    mse = np.mean((full.astype(float) - frames) ** 2)
    assert 10 * np.log10(255 ** 2 / mse) > 30
    picked = S.decode_mp4(data, [13, 2, 13, 19, 9], fps=6.0)  # seeks; repeats and any order allowed
    assert np.array_equal(picked, full[[13, 2, 13, 19, 9]])
    with pytest.raises(S.VideoDecodeError):
        S.decode_mp4(b"\x00\x01 definitely not an mp4" * 20)
    with pytest.raises(ValueError, match="even"):
        S.encode_mp4(np.zeros((2, 5, 6, 3), np.uint8))


def test_shard_is_a_webdataset_tar(tmp_path):
    import webdataset as wds

    mp4 = S.encode_mp4(np.zeros((3, 16, 16, 3), np.uint8))
    path = S.write_shard(tmp_path / "shard-000000.tar", [("k0", mp4, {"a": 1}), ("k1", mp4, {"a": 2})])
    with tarfile.open(path) as tar:
        assert sorted(tar.getnames()) == ["k0.json", "k0.mp4", "k1.json", "k1.mp4"]
    assert not list(tmp_path.glob("*.tmp"))
    got = list(S.iter_shard(path))
    assert [s.key for s in got] == ["k0", "k1"] and got[1].meta == {"a": 2} and got[0].files["mp4"] == mp4
    assert S.count_samples(path) == 2
    # the webdataset library reads it too
    ds = wds.WebDataset(str(path), shardshuffle=False)
    assert [d["__key__"] for d in ds] == ["k0", "k1"]
    with pytest.raises(ValueError, match="invalid sample key"):
        S.write_shard(tmp_path / "bad.tar", [("a.b", mp4, {})])


@pytest.mark.parametrize("name, kind", [("../evil.json", "file"), ("/etc/evil.json", "file"),
                                        ("ok/../../x.mp4", "file"), ("link.mp4", "symlink")])
def test_unsafe_tar_members_are_refused(tmp_path, name, kind):
    path = tmp_path / "shard-000000.tar"
    with tarfile.open(path, "w") as tar:
        info = tarfile.TarInfo(name)
        if kind == "symlink":
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            tar.addfile(info)
        else:
            info.size = 2
            tar.addfile(info, io.BytesIO(b"{}"))
    with pytest.raises(S.UnsafeTarError, match="shard-000000.tar"):
        list(S.iter_shard(path))
    with pytest.raises(S.UnsafeTarError):
        S.count_samples(path)


def test_missing_shard_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="gone.tar"):
        list(S.iter_shard(tmp_path / "gone.tar"))


# --------------------------------------------------------------------------------------------- ingest


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    (root / "sub").mkdir()
    write_video(root / "a.avi", 60, 12.0, codec="ffv1")  # 5 s, lossless FFV1 in AVI
    write_video(root / "sub" / "b.mkv", 100, 25.0, codec="libx264")  # 4 s, H.264 in MKV
    write_video(root / "c.mov", 150, 30.0, w=50, h=30)  # 5 s, MPEG-4 in MOV
    write_video(root / "short.mp4", 36, 12.0, codec="libx264")  # 3 s: too short
    (root / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 100)
    (root / "notes.txt").write_text("not a video")
    cams = {"R": np.repeat(np.eye(3)[None], 60, 0).tolist(), "t": [[i, 0, 0] for i in range(60)], "f": [1.0] * 60}
    (root / "a.cameras.json").write_text(json.dumps({"cameras": cams}))
    return root


def test_transcode_resamples_to_6fps_by_holding_frames(videos):
    data, meta = transcode(videos / "a.avi", crf=0)  # lossless, to read frame levels exactly
    frames = S.decode_mp4(data)
    assert meta["fps"] == 6.0 and meta["num_frames"] == 30 == len(frames) and meta["duration"] == 5.0
    assert (meta["width"], meta["height"], meta["source_fps"]) == (48, 32, 12.0)
    # output frame j shows source frame floor(j / 6 * 12) = 2j
    levels = frames.reshape(30, -1).mean(1)
    np.testing.assert_allclose(levels, STEP * 2 * np.arange(30), atol=1)
    assert meta["cameras"]["t"] == [[2 * j, 0, 0] for j in range(30)]
    with av.open(io.BytesIO(data)) as c:
        assert c.streams.video[0].codec_context.name == "h264"
    data, meta = transcode(videos / "c.mov", max_side=24)
    assert (meta["width"], meta["height"]) == (24, 14) and meta["num_frames"] == 30
    assert "cameras" not in meta


def test_ingest_skips_bad_videos_and_resumes(videos, tmp_path, capsys):
    from rayder_core.data.cli import main

    out = tmp_path / "corpus"
    assert main(["ingest", str(videos), "--out", str(out), "--shard-size", "2", "--workers", "1"]) == 0
    err = capsys.readouterr().err
    skip_lines = [line for line in err.replace("\r", "\n").splitlines() if line.startswith("skip ")]
    assert len(skip_lines) == 2
    assert any("corrupt.mp4: unreadable" in s for s in skip_lines)
    assert any("short.mp4: too short" in s for s in skip_lines)
    assert "skipped 2 this run" in err
    shards = S.list_shards(out / "shards")
    assert len(shards) == 3  # 5 videos (sorted), 2 per shard
    samples = [s for p in shards for s in S.iter_shard(p)]
    assert sorted(s.meta["source"].rsplit("/", 1)[1] for s in samples) == ["a.avi", "b.mkv", "c.mov"]
    assert all(s.key == video_key(__import__("pathlib").Path(s.meta["source"])) for s in samples)
    b = next(s for s in samples if s.meta["source"].endswith("b.mkv"))
    assert b.meta["num_frames"] == 24 and len(S.decode_mp4(b.files["mp4"])) == 24
    assert Manifest.load(out / "manifest.json").num_videos(1.0) == 3

    mtimes = {p.name: p.stat().st_mtime_ns for p in shards}
    shards[1].unlink()  # as if the run had been interrupted before this shard
    assert main(["ingest", str(videos), "--out", str(out), "--shard-size", "2", "--workers", "1"]) == 0
    err = capsys.readouterr().err
    assert "reused 2 finished shards" in err
    assert all(p.stat().st_mtime_ns == mtimes[p.name] for p in S.list_shards(out / "shards") if p != shards[1])
    assert shards[1].exists()

    assert main(["ingest", str(videos / "a.avi"), "--out", str(out), "--shard-size", "2"]) == 2
    assert "other videos or settings" in capsys.readouterr().err
    assert main(["ingest", str(videos / "missing.mp4"), "--out", str(tmp_path / "x")]) == 2
    assert "missing.mp4" in capsys.readouterr().err


def test_find_videos_filters_by_extension(videos):
    names = sorted(p.name for p in find_videos([videos]))
    assert names == ["a.avi", "b.mkv", "c.mov", "corrupt.mp4", "short.mp4"]


# -------------------------------------------------------------------------------------------- manifest


def fake_shards(root, counts):
    mp4 = b"\x00" * 8  # manifests count members; the bytes are never decoded here
    for i, n in enumerate(counts):
        S.write_shard(S.shard_path(root, i), [(f"v{i}x{j}", mp4, {}) for j in range(n)])


def test_nested_fractions(tmp_path):
    counts = list(np.random.default_rng(0).integers(15, 25, size=120))
    fake_shards(tmp_path / "shards", counts)
    m = build_manifest(tmp_path / "shards", (0.01, 0.1, 1.0), seed=0)
    total = sum(counts)
    s1, s10, s100 = (set(m.shards(f)) for f in (0.01, 0.1, 1.0))
    assert s1 <= s10 <= s100 and len(s100) == 120 and len(s1) >= 1
    assert m.num_videos(1.0) == total
    for f in (0.01, 0.1):
        assert abs(m.num_videos(f) - f * total) <= 25  # within one shard of the target
    assert m.labels() == {0.01: "1%", 0.1: "10%", 1.0: "100%"}
    path = m.save(tmp_path / "manifest.json")
    again = Manifest.load(path)
    assert again.shards(0.1) == m.shards(0.1) and again.num_videos(0.01) == m.num_videos(0.01)
    with pytest.raises(KeyError, match="available: 1%, 10%, 100%"):
        again.shards(0.5)
    # deterministic in the seed, different across seeds
    assert build_manifest(tmp_path / "shards", seed=0).shards(0.1) == m.shards(0.1)
    assert build_manifest(tmp_path / "shards", seed=1).shards(0.1) != m.shards(0.1)
    # the data directory can be moved as a whole
    moved = tmp_path.rename(tmp_path.with_name(tmp_path.name + "-moved"))
    assert all(p.startswith(str(moved)) for p in Manifest.load(moved / "manifest.json").shards(1.0))


def test_few_shards_still_nest_with_one_shard_minimum(tmp_path):
    fake_shards(tmp_path, [20, 20])
    m = build_manifest(tmp_path, (0.01, 0.1, 0.5, 1.0))
    assert [len(m.shards(f)) for f in (0.01, 0.1, 0.5, 1.0)] == [1, 1, 1, 2]
    assert m.shards(0.01) == m.shards(0.1)
    assert choose_prefixes([10, 10, 10], (1.0, 0.05)) == {0.05: 1, 1.0: 3}
    assert fraction_label(0.005) == "0.5%"
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        choose_prefixes([1], (1.5,))
    with pytest.raises(FileNotFoundError):
        build_manifest(tmp_path / "nothing")
