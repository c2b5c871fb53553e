"""Synthetic corpus: ray-caster geometry against analytic intersections, poses, textures, caching, CLI."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from rayder_core.data import synth
from rayder_core.data.shards import decode_mp4, iter_shard, list_shards, rgb_to_yuv420p
from rayder_core.geometry import Camera, ray_origins_directions


def flat_scene(sphere_center, radius) -> synth.Scene:
    """Unlit scene of constant colours: floor red, sphere blue, black sky, no fog."""
    tex = np.zeros((3, synth.TEX, synth.TEX, 3), np.float32)
    tex[0, ..., 0] = 1.0
    tex[1, ..., 1] = 1.0
    tex[2, ..., 2] = 1.0
    return synth.Scene(
        room=50.0, wall_height=3.0, indoor=False, textures=tex, tile=np.ones(3, np.float32),
        box_center=np.zeros((0, 3)), box_half=np.zeros((0, 3)), box_yaw=np.zeros(0),
        sph_center=np.array([sphere_center], float), sph_radius=np.array([radius]), sun=np.array([0, 0, 1.0]),
        ambient=1.0, sky_top=np.zeros(3), sky_horizon=np.zeros(3), fog_distance=1e12)


def test_camera_rays_match_geometry_convention():
    R = synth.look_rotation(np.array([[1.0, 0.3, -0.2], [-0.4, 1.0, 0.1]]))
    f = np.array([1.3, 0.8])
    for h, w in ((32, 32), (24, 40)):
        dx, dy, dz = synth.camera_rays(R, f, h, w)
        cam = Camera(torch.from_numpy(R), torch.zeros(2, 3, dtype=torch.float64), torch.from_numpy(f))
        _, d = ray_origins_directions(cam, h, w)
        ours = np.stack([dx, dy, dz], -1).reshape(2, h, w, 3)
        np.testing.assert_allclose(ours, d.numpy(), atol=2e-6)


def test_look_rotation_is_opencv_camera_to_world():
    R = synth.look_rotation(np.array([[1.0, 0.0, 0.0]]))[0]
    np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(R) == pytest.approx(1.0)
    np.testing.assert_allclose(R[:, 2], [1, 0, 0])  # z forward
    np.testing.assert_allclose(R[:, 1], [0, 0, -1])  # y down (world z is up)
    np.testing.assert_allclose(R[:, 0], [0, -1, 0])  # x right of +x looking, z up


def test_render_matches_analytic_sphere_and_floor():
    centre, radius = np.array([0.0, 0.2, 1.0]), 0.6
    scene = flat_scene(centre, radius)
    eye = np.array([[-3.0, 0.5, 1.4]])
    R = synth.look_rotation(np.array([[3.0, -0.6, -0.5]]))
    f = np.array([1.2])
    h = w = 48
    img = synth.render(scene, R, eye, f, np.zeros(1), h, w)[0].astype(int)

    cam = Camera(torch.from_numpy(R), torch.from_numpy(eye), torch.from_numpy(f))
    _, d = ray_origins_directions(cam, h, w)
    d = d[0].numpy()
    oc = centre - eye[0]
    along = d @ oc
    dist = np.linalg.norm(oc - along[..., None] * d, axis=-1)  # ray-to-centre distance
    sphere = (dist < radius) & (along > 0)
    floor = ~sphere & (d[..., 2] < 0)
    sky = ~sphere & ~floor
    clear = np.abs(dist - radius) > 1e-3
    assert sphere.sum() > 50 and floor.sum() > 50 and sky.sum() > 50
    assert np.all(img[sphere & clear] == [0, 0, 255])
    assert np.all(img[floor & clear] == [255, 0, 0])
    assert np.all(img[sky & clear] == [0, 0, 0])


def test_texture_families_are_disjoint_and_varied():
    assert not set(synth.TRAIN_FAMILIES) & set(synth.HELDOUT_FAMILIES)
    rng = np.random.default_rng(0)
    for family in synth.TRAIN_FAMILIES + synth.HELDOUT_FAMILIES:
        tex = synth.make_texture(rng, family)
        assert tex.shape == (synth.TEX, synth.TEX, 3) and tex.dtype == np.float32
        assert 0 <= tex.min() and tex.max() <= 1 and tex.std() > 0.03, family
    with pytest.raises(ValueError, match="unknown texture family"):
        synth.make_texture(rng, "velvet")


def test_clips_are_deterministic_with_exact_pose_metadata():
    a, meta = synth.make_clip(3, seed=0, resolution=32, seconds=2.0)
    b, _ = synth.make_clip(3, seed=0, resolution=32, seconds=2.0)
    c, _ = synth.make_clip(4, seed=0, resolution=32, seconds=2.0)
    assert a.shape == (12, 32, 32, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    R, t, f = (np.array(meta["cameras"][k]) for k in ("R", "t", "f"))
    assert R.shape == (12, 3, 3) and t.shape == (12, 3) and f.shape == (12,)
    np.testing.assert_allclose(R @ np.swapaxes(R, 1, 2), np.broadcast_to(np.eye(3), R.shape), atol=1e-6)
    assert np.all(f > 0.5) and meta["num_frames"] == 12 and meta["fps"] == 6.0


@pytest.mark.parametrize("kind", synth.TRAJECTORIES)
def test_trajectories_are_smooth_and_stay_outside_the_object_cluster(kind):
    times = np.arange(30) / 6.0
    for i in range(5):
        rng = synth.clip_rng(0, i)
        scene = synth.random_scene(rng)
        got, R, t, f = synth.random_trajectory(rng, scene, times, kind)
        assert got == kind
        assert np.all(np.hypot(t[:, 0], t[:, 1]) > 2.6) and np.all(np.abs(t[:, :2]) < scene.room)
        step = np.linalg.norm(np.diff(t, axis=0), axis=-1)
        assert step.max() < 0.3  # < 1.8 m/s at 6 fps
        turn = np.degrees(np.arccos(np.clip(np.einsum("fi,fi->f", R[1:, :, 2], R[:-1, :, 2]), -1, 1)))
        assert turn.max() < 5.0
        if kind == "zoom":
            assert abs(np.log(f[-1] / f[0])) > 0.3
        else:
            assert np.ptp(f) == 0


def test_dynamic_share_and_moving_objects():
    share = np.mean([synth.clip_is_dynamic(0, i, 0.3) for i in range(4000)])
    assert abs(share - 0.3) < 0.03
    times = np.arange(30) / 6.0
    scene = synth.random_scene(np.random.default_rng(1), dynamic=True)
    assert scene.motion
    for k in range(scene.num_objects):
        centre, _ = scene.object_pose(k, times)
        moved = np.linalg.norm(centre[-1] - centre[0]) > 0.05 or k not in scene.motion
        assert moved and (k in scene.motion or np.ptp(centre, axis=0).max() == 0)
    assert not synth.random_scene(np.random.default_rng(1), dynamic=False).motion


def test_frames_are_textured_and_temporally_coherent():
    near, far, spread = [], [], []
    for i in range(8):
        frames, _ = synth.make_clip(i, seed=0, resolution=32, seconds=5.0)
        x = frames.astype(float) / 255
        spread.append(x.std(axis=(1, 2)).mean())
        near.append(np.abs(x[1:] - x[:-1]).mean())
        far.append(np.abs(x[24:] - x[:6]).mean())
    assert np.mean(spread) > 0.08  # not flat colour
    assert np.mean(near) < 0.6 * np.mean(far)  # consecutive frames are predictable from each other
    assert np.mean(far) > 0.03  # the camera does move


def test_synthesize_writes_shards_is_cached_and_resumes(tmp_path, capsys):
    from rayder_core.data.cli import main

    out = tmp_path / "synth"
    assert main(["synth", "--out", str(out), "--clips", "6", "--resolution", "32", "--seconds", "5",
                 "--shard-size", "2", "--workers", "1", "--dynamic-share", "0.5"]) == 0
    shards = list_shards(out / "shards")
    assert [p.name for p in shards] == [f"shard-{i:06d}.tar" for i in range(3)]
    samples = [s for p in shards for s in iter_shard(p)]
    assert [s.key for s in samples] == [f"synth{i:07d}" for i in range(6)]
    for i, s in enumerate(samples):
        m = s.meta
        frames = decode_mp4(s.files["mp4"])
        assert frames.shape == (30, 32, 32, 3) and m["num_frames"] == 30 and m["duration"] == 5.0
        assert len(m["cameras"]["R"]) == 30
        ref, _ = synth.make_clip(i, 0, 32, 5.0, dynamic=synth.clip_is_dynamic(0, i, 0.5))
        mse = np.mean((frames.astype(float) - ref) ** 2)
        assert 10 * np.log10(255 ** 2 / mse) > 24  # the mp4 holds the rendered frames
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["total_videos"] == 6

    before = {p.name: p.stat().st_mtime_ns for p in shards}
    capsys.readouterr()
    assert main(["synth", "--out", str(out), "--clips", "6", "--resolution", "32", "--seconds", "5",
                 "--shard-size", "2", "--workers", "1", "--dynamic-share", "0.5"]) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert {p.name: p.stat().st_mtime_ns for p in list_shards(out / "shards")} == before

    mp4_before = [s.files["mp4"] for s in iter_shard(shards[1])]
    shards[1].unlink()  # as if interrupted
    info = synth.synthesize(out, clips=6, resolution=32, seconds=5, shard_size=2, workers=1, dynamic_share=0.5,
                            progress=False)
    assert info["rendered"] == 2 and not info["cached"]
    # deterministic re-render: the same clips, decoded to the same pixels (lossless encodes; the encoded bytes are
    # not guaranteed identical across encoder runs)
    for new, old in zip([s.files["mp4"] for s in iter_shard(shards[1])], mp4_before, strict=True):
        assert np.array_equal(decode_mp4(new), decode_mp4(old))
    assert shards[0].stat().st_mtime_ns == before[shards[0].name]

    assert main(["synth", "--out", str(out), "--clips", "8", "--resolution", "32", "--shard-size", "2"]) == 2
    err = capsys.readouterr().err
    assert "different settings" in err and "clips: 6 -> 8" in err and "dynamic_share: 0.5 -> 0.3" in err


def test_cached_corpus_gains_the_fractions_a_grid_asks_for(tmp_path):
    """A corpus generated for fractions 1/4 and 1 and asked again for 1/2 keeps its clips (nothing rendered) and its
    manifest gains 1/2, with the shards of 1/4 and 1 unchanged (same seed: the same shard order)."""
    from rayder_core.data.manifest import Manifest

    out = tmp_path / "synth"
    kw = dict(clips=8, resolution=32, seconds=5, shard_size=2, workers=1, progress=False)
    synth.synthesize(out, fractions=(0.25, 1.0), **kw)
    before = Manifest.load(out / "manifest.json")
    info = synth.synthesize(out, fractions=(0.5, 1.0), **kw)
    after = Manifest.load(out / "manifest.json")
    assert info["cached"]
    assert sorted(after.fractions) == [0.25, 0.5, 1.0]
    assert after.has(0.5) and not before.has(0.5) and before.has(0.25 + 1e-15)
    assert after.shards(0.25) == before.shards(0.25) and after.shards(1.0) == before.shards(1.0)
    assert after.shards(0.5)[:1] == before.shards(0.25) and len(after.shards(0.5)) == 2 and after.num_videos(0.5) == 4


def _decoded(root) -> dict[str, np.ndarray]:
    return {s.key: decode_mp4(s.files["mp4"]) for p in list_shards(root / "shards") for s in iter_shard(p)}


def test_regenerated_corpus_decodes_to_the_same_pixels(tmp_path):
    """Two generations of one corpus with 2 worker processes decode to identical frames (lossless H.264: with the
    lossy CRF 18, libx264's output for some clips differed between generations although the rendered frames did
    not), and the decoded frames are exactly the rendered ones through yuv420p."""
    kw = dict(clips=24, resolution=32, seconds=5, shard_size=2, workers=2, dynamic_share=0.5, progress=False)
    synth.synthesize(tmp_path / "a", **kw)
    synth.synthesize(tmp_path / "b", **kw)
    a, b = _decoded(tmp_path / "a"), _decoded(tmp_path / "b")
    assert sorted(a) == sorted(b) == [f"synth{i:07d}" for i in range(24)]
    assert [k for k in a if not np.array_equal(a[k], b[k])] == []
    for i in (0, 7, 23):  # lossless: decoded = the rendered frames through yuv420p and back, exactly
        ref, _ = synth.make_clip(i, 0, 32, 5.0, dynamic=synth.clip_is_dynamic(0, i, 0.5))
        through_yuv = np.stack([rgb_to_yuv420p(f).to_ndarray(format="rgb24") for f in ref])
        assert np.array_equal(a[f"synth{i:07d}"], through_yuv)
