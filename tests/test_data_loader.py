"""Training loader: frame timing and jitter, short-clip rejection, corrupt samples, rank/worker split, exact resume."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from scipy import stats

import rayder_core.data.loader as loader_mod
from rayder_core.data.loader import VideoClipLoader, frame_indices, sample_times, to_model_frames
from rayder_core.data.shards import encode_mp4, write_shard

FPS = 6.0
STEP = 3  # grey level of source frame i is STEP * i: decoded frames reveal which source frame they are


def index_video(n: int, size: int = 32) -> bytes:
    """H.264 mp4 whose frame i is uniformly grey at level STEP * i (key frame every 5 frames)."""
    frames = np.repeat((np.arange(n, dtype=np.uint8) * STEP)[:, None, None, None], 3, axis=-1)
    return encode_mp4(np.broadcast_to(frames, (n, size, size, 3)).copy(), FPS, gop=5)


def meta(n: int) -> dict:
    return {"fps": FPS, "num_frames": n, "duration": n / FPS, "width": 32, "height": 32}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """6 shards x 4 clips of index videos: 20 clips of 6-12 s and 4 clips of 3 s (too short for 8 frames @ 2 fps)."""
    root = tmp_path_factory.mktemp("loader")
    shards, lengths = [], {}
    rng = np.random.default_rng(0)
    videos = {n: index_video(n) for n in (18, 36, 54, 72)}
    for s in range(6):
        samples = []
        for j in range(4):
            key = f"clip{s}x{j}"
            n = 18 if j == 3 and s < 4 else int(rng.choice([36, 54, 72]))
            lengths[key] = n
            samples.append((key, videos[n], meta(n)))
        shards.append(str(write_shard(root / f"shard-{s:06d}.tar", samples)))
    return shards, lengths


def take(loader: VideoClipLoader, n: int) -> list[dict]:
    it = iter(loader)
    return [next(it) for _ in range(n)]


# ---------------------------------------------------------------------------------------------- timing


def test_sample_times_are_jittered_uniformly_within_their_slots():
    m = meta(60)  # 10 s
    starts, offsets = [], []
    for seed in range(400):
        t = sample_times(m, 8, 2.0, np.random.default_rng(seed))
        start = np.random.default_rng(seed).uniform(0.0, 10.0 - 4.0)  # the first draw is the start
        slot = (t - start) * 2.0 - np.arange(8)  # position inside each 0.5 s slot, in [0, 1)
        assert np.all((slot >= 0) & (slot < 1))
        assert np.all(t >= 0) and np.all(t <= 10.0)
        starts.append(start)
        offsets.extend(slot)
    # uniform jitter of +/- half an interval around the slot centre, uniform start over [0, duration - span]
    assert stats.kstest(offsets, "uniform").pvalue > 1e-3
    assert stats.kstest(np.array(starts) / 6.0, "uniform").pvalue > 1e-3
    # the average rate is 2 fps: mean spacing 0.5 s
    spacing = np.diff(sample_times(m, 8, 2.0, np.random.default_rng(1)))
    assert 0.0 < spacing.min() and spacing.max() < 1.0


def test_frame_indices_follow_times_and_reject_short_clips():
    rng = np.random.default_rng(3)
    t = sample_times(meta(60), 8, 2.0, np.random.default_rng(3))
    idx = frame_indices(meta(60), 8, 2.0, rng)
    np.testing.assert_array_equal(idx, np.floor(t * FPS).astype(int))
    assert frame_indices(meta(23), 8, 2.0, rng) is None  # 3.83 s < 4 s
    assert frame_indices(meta(24), 8, 2.0, rng) is not None  # exactly 4 s is enough
    assert frame_indices(meta(23), 4, 2.0, rng) is not None  # 2 s span


def test_decoded_frames_are_the_sampled_source_frames(corpus):
    shards, lengths = corpus
    loader = VideoClipLoader(shards, frames=8, fps=2.0, resolution=32, batch_size=4, seed=5)
    for batch in take(loader, 3):
        assert batch["x"].shape == (4, 8, 3, 32, 32) and batch["x"].dtype == torch.float32
        for key, clip in zip(batch["key"], batch["x"]):
            level = ((clip.mean(dim=(1, 2, 3)) + 1) * 127.5).numpy()
            got = np.round(level / STEP).astype(int)
            rng = np.random.default_rng([5, 0, 0, loader_mod._key_int(key)])
            want = frame_indices(meta(lengths[key]), 8, 2.0, rng)
            np.testing.assert_array_equal(got, want)


# ------------------------------------------------------------------------------- rejection, corruption


def test_short_clips_are_never_sampled(corpus):
    shards, lengths = corpus
    keys = {k for b in take(VideoClipLoader(shards, batch_size=2, seed=1), 10) for k in b["key"]}
    assert keys and all(lengths[k] >= 24 for k in keys)
    short = {k for k, n in lengths.items() if n < 24}
    keys4 = {k for b in take(VideoClipLoader(shards, frames=4, batch_size=24, seed=1), 1) for k in b["key"]}
    assert short <= keys4  # a 2 s span admits the 3 s clips


def test_corrupt_sample_is_skipped_with_a_warning(tmp_path, caplog):
    good = index_video(36)
    samples = [(f"ok{i}", good, meta(36)) for i in range(3)] + [("broken", b"\x00garbage" * 50, meta(36)),
                                                               ("nometa", good, {"fps": 6.0})]
    shard = str(write_shard(tmp_path / "shard-000000.tar", samples))
    with caplog.at_level(logging.WARNING, logger="rayder_core.data.loader"):
        batch = take(VideoClipLoader([shard], batch_size=4, shuffle_buffer=1), 1)[0]
    assert batch["x"].shape[0] == 4 and "broken" not in batch["key"] and "nometa" not in batch["key"]
    assert sorted(set(batch["key"])) == ["ok0", "ok1", "ok2"]
    for bad in ("broken", "nometa"):
        lines = [r.getMessage() for r in caplog.records if bad in r.getMessage()]
        assert len(lines) == 1 and shard in lines[0]


def test_missing_shard_raises_naming_it(corpus, tmp_path):
    missing = str(tmp_path / "nope.tar")
    with pytest.raises(FileNotFoundError, match="nope.tar"):
        VideoClipLoader([*corpus[0], missing])


# ------------------------------------------------------------------------------------- split, resume


def epoch0_keys(loader: VideoClipLoader) -> list[str]:
    keys, it = [], iter(loader)
    while True:
        batch = next(it)
        if loader.state_dict()["epoch"] > 0:
            return keys
        keys += batch["key"]


@pytest.mark.parametrize("n_shards, world", [(6, 2), (1, 3)])  # split by shard; by sample (shards < ranks)
def test_ranks_see_disjoint_samples_covering_the_epoch(corpus, n_shards, world):
    shards, lengths = corpus
    shards = shards[:n_shards]
    names = {f"clip{s}x{j}" for s in range(n_shards) for j in range(4)}
    usable = {k for k in names if lengths[k] >= 24}
    per_rank = [epoch0_keys(VideoClipLoader(shards, batch_size=1, seed=2, rank=r, world_size=world))
                for r in range(world)]
    flat = [k for keys in per_rank for k in keys]
    assert len(flat) == len(set(flat)) and set(flat) == usable
    assert all(per_rank)


def test_epochs_reshuffle(corpus):
    loader = VideoClipLoader(corpus[0], batch_size=4, seed=0)
    batches = take(loader, 10)  # 20 usable clips -> 5 batches per epoch
    e0 = [k for b in batches[:5] for k in b["key"]]
    e1 = [k for b in batches[5:] for k in b["key"]]
    assert sorted(e0) == sorted(e1) and e0 != e1
    assert loader.state_dict() == {"epoch": 1, "samples": 20, "batches": 10}


def test_resume_is_exact_and_skips_without_decoding(corpus, monkeypatch):
    shards, _ = corpus
    reference = take(VideoClipLoader(shards, batch_size=4, seed=7), 9)  # crosses into epoch 1
    first = VideoClipLoader(shards, batch_size=4, seed=7)
    take(first, 3)
    state = first.state_dict()
    assert state == {"epoch": 0, "samples": 12, "batches": 3}

    calls = []
    real = loader_mod.decode_mp4
    monkeypatch.setattr(loader_mod, "decode_mp4", lambda *a, **k: calls.append(1) or real(*a, **k))
    resumed = VideoClipLoader(shards, batch_size=4, seed=7)
    resumed.load_state_dict(state)
    rest = take(resumed, 6)
    assert len(calls) == 6 * 4  # the 12 consumed samples were skipped, not decoded
    for a, b in zip(reference[3:], rest):
        assert a["key"] == b["key"]
        assert torch.equal(a["x"], b["x"])


def test_shard_index_is_read_once_and_later_epochs_match_fresh_reads(corpus, monkeypatch):
    """Each shard's tar index and JSON are parsed once per loader; epochs 1 and 2 then equal the batches of a fresh
    loader resumed at those epochs (which reads the shards from disk again)."""
    shards, _ = corpus
    calls = []
    real = loader_mod.read_refs
    monkeypatch.setattr(loader_mod, "read_refs", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    got = take(VideoClipLoader(shards, batch_size=4, seed=5), 15)  # 5 batches per epoch: epochs 0, 1, 2
    assert sorted(calls) == sorted(shards)
    for epoch in (1, 2):
        fresh = VideoClipLoader(shards, batch_size=4, seed=5)
        fresh.load_state_dict({"epoch": epoch, "samples": 0, "batches": 5 * epoch})
        for a, b in zip(got[5 * epoch:5 * epoch + 5], take(fresh, 5)):
            assert a["key"] == b["key"] and torch.equal(a["x"], b["x"])
    assert len(calls) == 3 * len(shards)  # the two fresh loaders read every shard once more each


def test_workers_give_the_same_stream_as_in_process(corpus):
    shards, _ = corpus
    ref = take(VideoClipLoader(shards, batch_size=2, seed=3), 5)
    ld = VideoClipLoader(shards, batch_size=2, seed=3, num_workers=2)
    ld.load_state_dict({"epoch": 0, "samples": 2, "batches": 1})
    got = take(ld, 4)
    assert [b["key"] for b in got] == [b["key"] for b in ref[1:]]
    assert all(torch.equal(a["x"], b["x"]) for a, b in zip(ref[1:], got))
    assert ld.state_dict() == {"epoch": 0, "samples": 10, "batches": 5}


def test_bad_state_is_rejected(corpus):
    with pytest.raises(ValueError, match="multiple of batch_size"):
        VideoClipLoader(corpus[0], batch_size=4).load_state_dict({"epoch": 0, "samples": 3})


# --------------------------------------------------------------------------------------- transforms


def test_centre_crop_and_antialiased_resize():
    frame = np.zeros((1, 32, 64, 3), np.uint8)
    frame[..., :16, 0] = 255  # red bands left and right are cropped away
    frame[..., 48:, 0] = 255
    frame[..., 16:48, 2] = 255
    x = to_model_frames(frame, 16)
    assert x.shape == (1, 3, 16, 16)
    assert torch.allclose(x[0, 2], torch.ones(16, 16)) and torch.allclose(x[0, 0], -torch.ones(16, 16))
    checker = ((np.indices((64, 64)).sum(0) % 2) * 255).astype(np.uint8)
    y = to_model_frames(np.repeat(checker[None, ..., None], 3, -1), 16)
    assert y.std() < 0.02 and abs(float(y.mean())) < 0.02  # antialiased: a 1-px checker averages to grey


def _cached_streams_match_plain(synth_data, resolution: int):
    """A loader with a large cache and one with room for about one clip, each checked batch by batch over three
    epochs (20 clips per shard: 15 batches of 4) against decoding every sample; returns the two streams."""
    from rayder_core.data.manifest import Manifest

    shards = Manifest.load(synth_data.manifest).shards(0.01)
    kw = dict(frames=4, fps=2.0, resolution=resolution, batch_size=4, seed=3)
    plain = iter(VideoClipLoader(shards, **kw))
    cached_loader = VideoClipLoader(shards, cache_mb=64, **kw)
    small_loader = VideoClipLoader(shards, cache_mb=0.05, **kw)
    cached, small = iter(cached_loader), iter(small_loader)
    for i in range(15):
        ref = next(plain)
        for loader_batch in (next(cached), next(small)):
            assert loader_batch["key"] == ref["key"], i
            assert torch.equal(loader_batch["x"], ref["x"]), i
    return cached_loader._stream, small_loader._stream


def test_decoded_video_cache_gives_identical_batches(synth_data):
    """cache_mb keeps whole decoded videos in memory: batches over several epochs equal uncached decoding, also
    when the budget is too small to hold them all (the rest is decoded per sample)."""
    stream, small = _cached_streams_match_plain(synth_data, resolution=32)
    assert stream._cache and 0 < len(small._cache) < len(stream._cache)


def test_downsampled_frames_are_cached_as_model_input_with_identical_batches(synth_data):
    """Training at half the clips' side (32^2 clips -> 16^2, as the demo does): the cache keeps each video converted
    to model input (resized once), and every batch over several epochs is bit-identical to decoding and resizing per
    sample, also when the budget holds only part of the videos."""
    stream, small = _cached_streams_match_plain(synth_data, resolution=16)
    assert stream._model_cache and not stream._cache  # 32^2 clips at 16^2: kept as model input, not as pixels
    assert all(v.shape[1:] == (3, 16, 16) and v.dtype == torch.float32 for v in stream._model_cache.values())
    assert 0 < len(small._model_cache) < len(stream._model_cache)
