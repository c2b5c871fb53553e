"""RE10K/pixelSplat chunk writer + reader round trip, crop/resize intrinsics, probe set, `rayder-data bench`."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from rayder_core.data import evalsets as B, synth
from rayder_core.data.loader import to_model_frames
from rayder_core.geometry import Camera


def random_cameras(rng: np.random.Generator, v: int, f: float | np.ndarray = 1.1) -> Camera:
    fwd = rng.normal(size=(v, 3)) + np.array([1.0, 0, 0])
    R = synth.look_rotation(fwd)
    return Camera(torch.from_numpy(R), torch.from_numpy(rng.normal(size=(v, 3))),
                  torch.from_numpy(np.broadcast_to(np.asarray(f, float), (v,)).copy()))


def project(cam: Camera, X: np.ndarray, h: int, w: int) -> np.ndarray:
    """Pixel-index coordinates (u, v) of world point X in each view: the geometry.py pinhole, written out."""
    R, t, f = cam.R.numpy(), cam.t.numpy(), cam.f.numpy()
    Xc = np.einsum("vji,vj->vi", R, X[None] - t)  # R^T (X - t)
    fpx = f * min(h - 1, w - 1) / 2
    return np.stack([fpx * Xc[:, 0] / Xc[:, 2] + (w - 1) / 2, fpx * Xc[:, 1] / Xc[:, 2] + (h - 1) / 2], -1)


def scene(key: str, rng: np.random.Generator, v: int = 6, h: int = 32, w: int = 32) -> dict:
    images = (rng.random((v, h // 4, w // 4, 3)) * 255).astype(np.uint8).repeat(4, 1).repeat(4, 2)
    return {"key": key, "images": images, "cameras": random_cameras(rng, v), "url": f"test://{key}"}


def test_chunk_format_is_pixelsplat(tmp_path):
    rng = np.random.default_rng(0)
    paths = B.write_re10k_chunks([scene("a", rng), scene("b", rng)], tmp_path, "test")
    assert [p.name for p in paths] == ["000000.torch"]
    chunk = torch.load(paths[0], weights_only=True)
    assert isinstance(chunk, list) and [c["key"] for c in chunk] == ["a", "b"]
    item = chunk[0]
    assert set(item) == {"key", "url", "timestamps", "cameras", "images"}
    assert item["cameras"].shape == (6, 18) and item["cameras"].dtype == torch.float32
    assert item["timestamps"].dtype == torch.int64 and item["timestamps"].shape == (6,)
    assert all(im.dtype == torch.uint8 and bytes(im[:2].tolist()) == b"\xff\xd8" for im in item["images"])
    assert torch.all(item["cameras"][:, 4:6] == 0)
    np.testing.assert_allclose(item["cameras"][:, 2:4].numpy(), 0.5)
    # w2c, row-major: [R^T | -R^T t]
    cam = scene("a", np.random.default_rng(0))["cameras"]
    w2c = item["cameras"][:, 6:].reshape(6, 3, 4).double()
    np.testing.assert_allclose(w2c[:, :, :3].numpy(), cam.R.transpose(1, 2).numpy(), atol=1e-6)
    np.testing.assert_allclose(w2c[:, :, 3].numpy(), -(cam.R.transpose(1, 2) @ cam.t[..., None])[..., 0].numpy(),
                               atol=1e-5)
    assert json.loads((tmp_path / "test" / "index.json").read_text()) == {"a": "000000.torch", "b": "000000.torch"}


def test_round_trip_cameras_and_images(tmp_path):
    rng = np.random.default_rng(1)
    scenes = [scene(f"s{i}", rng) for i in range(5)]
    paths = B.write_re10k_chunks(scenes, tmp_path, "test", max_chunk_bytes=1)  # one scene per chunk
    assert len(paths) == 5
    index = {"s0": {"context": [0, 5], "target": [1, 2, 4]}, "s1": None,
             "s3": {"context": [1, 4], "target": [2, 3, 3]}, "absent": {"context": [0, 1], "target": [0, 0, 1]}}
    B.write_evaluation_index(index, tmp_path / "evaluation_index.json")
    bench = B.Re10kBenchmark(tmp_path, resolution=32)
    assert len(bench) == 2  # null and absent keys are skipped
    got = {s.key: s for s in bench}
    assert set(got) == {"s0", "s3"}
    for key in got:
        src, views, out = scenes[int(key[1])], index[key], got[key]
        for part, cams in (("context", out.context_cams), ("target", out.target_cams)):
            idx = views[part]
            ref = src["cameras"][torch.tensor(idx)]
            np.testing.assert_allclose(cams.R.numpy(), ref.R.numpy(), atol=1e-6)
            np.testing.assert_allclose(cams.t.numpy(), ref.t.numpy(), atol=1e-5)
            np.testing.assert_allclose(cams.f.numpy(), ref.f.numpy(), rtol=1e-6)
            images = getattr(out, part)
            assert images.shape == (len(idx), 3, 32, 32)
            decoded = np.stack([B.decode_jpeg(B.encode_jpeg(src["images"][i])) for i in idx])
            assert torch.equal(images, to_model_frames(decoded, 32))  # exactly the stored JPEGs
            err = (images - to_model_frames(src["images"][idx], 32)).abs().mean()
            assert err < 0.03  # and close to the originals (JPEG q95)


@pytest.mark.parametrize("h, w, res", [(36, 64, 36), (36, 64, 24), (64, 48, 32)])
def test_crop_and_resize_keep_projections(tmp_path, h, w, res):
    """A world point projects to the same place before and after the reader's centre crop + resize."""
    rng = np.random.default_rng(2)
    cams = random_cameras(rng, 3, f=np.array([0.9, 1.2, 1.6]))
    images = np.zeros((3, h, w, 3), np.uint8)
    B.write_re10k_chunks([{"key": "k", "images": images, "cameras": cams}], tmp_path)
    B.write_evaluation_index({"k": {"context": [0, 1], "target": [2, 0, 1]}}, tmp_path / "evaluation_index.json")
    out = next(iter(B.Re10kBenchmark(tmp_path, resolution=res)))
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    X = cams.t[0].numpy() + 3.0 * cams.R[0, :, 2].numpy() + 0.3  # in front of view 0
    before = project(cams[torch.tensor([0, 1])], X, h, w)
    after = project(out.context_cams, X, res, res)
    # crop shifts pixel indices; resize maps pixel centres as (x + 0.5) * res / s - 0.5
    expect = (before - np.array([left, top]) + 0.5) * res / s - 0.5
    np.testing.assert_allclose(after, expect, atol=1e-4 * res)


def test_probe_set_round_trip(tmp_path):
    rng = np.random.default_rng(3)
    seqs = [{"key": f"p{i}", "frames": (rng.random((24, 32, 32, 3)) * 255).astype(np.uint8),
             "cameras": random_cameras(rng, 24)} for i in range(3)]
    B.write_probe_set(seqs, tmp_path)
    probe = B.ProbeSet(tmp_path)
    assert len(probe) == 3
    for seq, ref in zip(probe, seqs):
        assert seq.key == ref["key"] and seq.frames.shape == (24, 3, 32, 32)
        assert torch.equal(seq.frames, to_model_frames(ref["frames"], 32))  # lossless
        assert torch.equal(seq.cams.R, ref["cameras"].R) and torch.equal(seq.cams.f, ref["cameras"].f)
    small = next(iter(B.ProbeSet(tmp_path, resolution=16)))
    np.testing.assert_allclose(small.cams.f.numpy(), seqs[0]["cameras"].f.numpy() * 16 * 31 / (32 * 15))


def test_bench_command_writes_disjoint_static_benchmarks(tmp_path, capsys):
    from rayder_core.data.cli import main

    args = ["bench", "--out", str(tmp_path), "--scenes", "3", "--probe-sequences", "2", "--resolution", "32"]
    assert main(args) == 0
    bench = B.Re10kBenchmark(tmp_path / "re10k-synth", resolution=32)
    assert len(bench) == 3
    index = json.loads((tmp_path / "re10k-synth" / "evaluation_index.json").read_text())
    for sc in bench:
        i, j = index[sc.key]["context"]
        assert sc.key.startswith("synthbench") and all(i < k < j for k in index[sc.key]["target"])
        assert len(set(index[sc.key]["target"])) == 3
        assert sc.context.shape == (2, 3, 32, 32) and sc.target_cams.shape == (3,)
    probe = list(B.ProbeSet(tmp_path / "probe-synth"))
    assert len(probe) == 2 and probe[0].frames.shape == (24, 3, 32, 32)
    # ground-truth poses are the renderer's: re-render a probe sequence and compare
    frames, meta = synth.make_clip(0, 1000, 32, 4.0, families=synth.HELDOUT_FAMILIES, stream=2)
    assert torch.equal(probe[0].frames, to_model_frames(frames, 32))
    np.testing.assert_allclose(probe[0].cams.R.numpy(), np.array(meta["cameras"]["R"]))
    capsys.readouterr()
    assert main(args) == 0
    assert "nothing to do" in capsys.readouterr().out


def test_extra_gap_index_reads_the_same_scenes_with_context_views_further_apart(tmp_path, capsys):
    """`--extra-gaps 12-24`: a second index of the same scenes (evaluation_index_gaps12-24.json) whose context views
    are 12..24 frames apart with 3 distinct targets between; the default index (6..12) is the one written without it,
    and the reader takes either."""
    from rayder_core.data.cli import main

    plain, wide = tmp_path / "plain", tmp_path / "wide"
    base = ["bench", "--scenes", "6", "--probe-sequences", "0", "--resolution", "16"]
    assert main([*base, "--out", str(plain)]) == 0
    assert main([*base, "--out", str(wide), "--extra-gaps", "12-24"]) == 0
    default = json.loads((wide / "re10k-synth" / "evaluation_index.json").read_text())
    assert default == json.loads((plain / "re10k-synth" / "evaluation_index.json").read_text())
    name = B.gap_index_name(12, 24)
    assert name == "evaluation_index_gaps12-24.json" and B.parse_gap_index_name(name) == (12, 24)
    assert B.parse_gap_index_name("evaluation_index.json") is None and not (plain / "re10k-synth" / name).exists()
    gaps = json.loads((wide / "re10k-synth" / name).read_text())
    assert gaps.keys() == default.keys()
    for key, views in gaps.items():
        i, j = views["context"]
        assert 12 <= j - i <= 24 and 0 <= i and j < 30 and len(set(views["target"])) == 3
        assert all(i < k < j for k in views["target"])
        assert 6 <= default[key]["context"][1] - default[key]["context"][0] <= 12
    near = {s.key: s for s in B.Re10kBenchmark(wide / "re10k-synth", resolution=16)}
    far = list(B.Re10kBenchmark(wide / "re10k-synth", resolution=16, index_path=wide / "re10k-synth" / name))
    assert len(far) == 6 and all(s.context_index == tuple(gaps[s.key]["context"]) for s in far)
    assert not torch.equal(far[0].context, near[far[0].key].context)
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main([*base, "--out", str(wide), "--extra-gaps", "24-12"])
    assert "--extra-gaps must be MIN-MAX ranges" in capsys.readouterr().err


def test_reader_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="index.json"):
        B.Re10kBenchmark(tmp_path)
    B.write_re10k_chunks([scene("a", np.random.default_rng(0))], tmp_path)
    with pytest.raises(FileNotFoundError, match="evaluation_index.json"):
        B.Re10kBenchmark(tmp_path)
    B.write_evaluation_index({"a": {"context": [0, 9], "target": [1, 2, 3]}}, tmp_path / "evaluation_index.json")
    with pytest.raises(ValueError, match=r"000000.torch: scene a has 6 views.*\[9\]"):
        list(B.Re10kBenchmark(tmp_path))


def test_in_distribution_set_is_new_scenes_of_the_training_families(tmp_path):
    """`--families train`: scenes of the training texture families that are in no data fraction (checked by brute force
    against every frame of a small corpus made by the same generator), no probe set; the default stays held out."""
    from rayder_core.data.cli import main
    from rayder_core.data.manifest import Manifest
    from rayder_core.data.shards import decode_mp4, iter_shard

    out = tmp_path / "indist"
    assert main(["bench", "--out", str(out), "--scenes", "4", "--probe-sequences", "0", "--resolution", "16",
                 "--families", "train"]) == 0
    assert not (out / "probe-synth").exists()
    assert json.loads((out / "bench.json").read_text())["config"]["families"] == list(synth.TRAIN_FAMILIES)
    scenes = list(B.Re10kBenchmark(out / "re10k-synth", resolution=16))
    assert len(scenes) == 4
    for i in range(4):  # the scene generator draws only training families for this set, held-out ones by default
        _, meta = synth.make_clip(i, 1000, 16, 5.0, families=synth.TRAIN_FAMILIES, stream=1)
        assert set(meta["texture_families"]) <= set(synth.TRAIN_FAMILIES)
        _, held = synth.make_clip(i, 1000, 16, 5.0, families=synth.HELDOUT_FAMILIES, stream=1)
        assert set(held["texture_families"]) <= set(synth.HELDOUT_FAMILIES)

    corpus = tmp_path / "corpus"
    synth.synthesize(corpus, clips=12, resolution=16, workers=1, shard_size=4, fractions=(0.34, 1.0), progress=False)
    train_frames = [decode_mp4(sample.files["mp4"]).astype(np.float32)
                    for shard in Manifest.load(corpus / "manifest.json").shards(1.0) for sample in iter_shard(shard)]
    assert len(train_frames) == 12
    for sc_ in scenes:
        views = ((sc_.context.permute(0, 2, 3, 1).numpy() + 1) * 127.5)
        for frames in train_frames:
            diff = np.abs(frames[:, None] - views[None]).mean(axis=(2, 3, 4))
            assert diff.min() > 5.0  # no benchmark view is (nearly) a training frame
