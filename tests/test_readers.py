"""Benchmark readers: each fixture is written here in the published on-disk format (nerfstudio transforms.json with
OpenGL axes, COLMAP cameras/images .bin and .txt per the COLMAP documentation, LLFF poses_bounds.npy with
(down, right, back) axes), read back and compared with the cameras it was made from; then converted with
`rayder-data bench-from` and read by the RE10K reader."""
from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.spatial.transform import Rotation

from rayder_core.data import readers
from rayder_core.data.evalsets import Re10kBenchmark
from rayder_core.data.cli import main as data_main

H, W, V = 40, 48, 10


def make_scene(seed: int = 0, centred: bool = False):
    """Random OpenCV camera-to-world poses, intrinsics (pixels) and images."""
    rng = np.random.default_rng(seed)
    R = Rotation.random(V, random_state=seed).as_matrix()
    c2w = np.tile(np.eye(4), (V, 1, 1))
    c2w[:, :3, :3], c2w[:, :3, 3] = R, rng.normal(size=(V, 3))
    if centred:
        k = np.tile([30.0, 30.0, W / 2, H / 2], (V, 1))
    else:
        k = np.column_stack([rng.uniform(25, 35, V), rng.uniform(25, 35, V), rng.uniform(20, 28, V),
                             rng.uniform(16, 24, V)])
    images = (rng.random((V, H, W, 3)) * 255).astype(np.uint8)
    return c2w, k, images


def save_images(folder, images, names):
    folder.mkdir(parents=True, exist_ok=True)
    for im, name in zip(images, names):
        Image.fromarray(im).save(folder / name)


def write_nerfstudio(root, c2w, k, images):
    names = [f"frame_{i + 1:05d}.png" for i in range(V)]
    save_images(root / "images", images, names)
    frames = []
    for i in range(V):
        R, t = c2w[i, :3, :3], c2w[i, :3, 3]
        gl = np.eye(4)
        gl[:3, 0], gl[:3, 1], gl[:3, 2], gl[:3, 3] = R[:, 0], -R[:, 1], -R[:, 2], t  # OpenGL: x right, y up, z back
        frames.append({"file_path": f"images/{names[i]}", "transform_matrix": gl.tolist(),
                       "fl_x": k[i, 0], "fl_y": k[i, 1], "cx": k[i, 2], "cy": k[i, 3]})
    (root / "transforms.json").write_text(json.dumps({"w": W, "h": H, "camera_model": "OPENCV", "k1": 0.0,
                                                      "frames": frames[::-1]}))  # file order need not be frame order


def write_colmap(root, c2w, k, images, binary: bool):
    names = [f"img_{i:03d}.jpg" for i in range(V)]
    save_images(root / "images", images, names)
    model = root / "sparse" / "0"
    model.mkdir(parents=True)
    w2c = np.linalg.inv(c2w)
    quats = Rotation.from_matrix(w2c[:, :3, :3]).as_quat()  # scipy: (x, y, z, w)
    qvec = np.column_stack([quats[:, 3], quats[:, :3]])       # COLMAP: (w, x, y, z)
    if binary:
        with open(model / "cameras.bin", "wb") as fh:
            fh.write(struct.pack("<Q", V))
            for i in range(V):  # one PINHOLE camera (model id 1) per image
                fh.write(struct.pack("<iiQQ", i + 1, 1, W, H) + struct.pack("<4d", *k[i]))
        with open(model / "images.bin", "wb") as fh:
            fh.write(struct.pack("<Q", V))
            for i in range(V):
                fh.write(struct.pack("<i", 100 + i) + struct.pack("<4d", *qvec[i]) + struct.pack("<3d", *w2c[i, :3, 3])
                         + struct.pack("<i", i + 1) + names[i].encode() + b"\x00")
                fh.write(struct.pack("<Q", 2) + struct.pack("<ddq", 1.5, 2.5, 7) + struct.pack("<ddq", 3.0, 4.0, -1))
    else:
        lines = ["# Camera list with one line of data per camera:", "#   CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]"]
        lines += [f"{i + 1} PINHOLE {W} {H} {' '.join(repr(float(x)) for x in k[i])}" for i in range(V)]
        (model / "cameras.txt").write_text("\n".join(lines) + "\n")
        lines = ["# Image list with two lines of data per image:", "#   IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME",
                 "#   POINTS2D[] as (X, Y, POINT3D_ID)"]
        for i in range(V):
            vals = " ".join(repr(float(x)) for x in [*qvec[i], *w2c[i, :3, 3]])
            lines += [f"{100 + i} {vals} {i + 1} {names[i]}", "1.5 2.5 7 3.0 4.0 -1" if i % 2 else ""]
        (model / "images.txt").write_text("\n".join(lines) + "\n")


def write_llff(root, c2w, f, images, full_scale: int = 4):
    names = [f"IMG_{i:04d}.JPG" for i in range(V)]
    save_images(root / "images", images, names)
    rows = []
    for i in range(V):
        R, t = c2w[i, :3, :3], c2w[i, :3, 3]
        m = np.column_stack([R[:, 1], R[:, 0], -R[:, 2], t,  # LLFF camera axes: down, right, backward
                             [H * full_scale, W * full_scale, f * full_scale]])
        rows.append(np.concatenate([m.reshape(-1), [0.5, 10.0]]))
    np.save(root / "poses_bounds.npy", np.array(rows))


def check(rec, c2w, k, order=None):
    order = np.arange(V) if order is None else order
    np.testing.assert_allclose(rec.c2w, c2w[order], atol=1e-9)
    np.testing.assert_allclose(rec.intrinsics, k[order], rtol=1e-9)
    assert rec.sizes.tolist() == [[H, W]] * V


def test_nerfstudio_round_trip(tmp_path):
    c2w, k, images = make_scene(0)
    write_nerfstudio(tmp_path / "scene", c2w, k, images)
    rec = readers.read_nerfstudio(tmp_path / "scene")
    check(rec, c2w, k)
    assert [p.name for p in rec.images] == [f"frame_{i + 1:05d}.png" for i in range(V)]


@pytest.mark.parametrize("binary", [True, False])
def test_colmap_round_trip(tmp_path, binary):
    c2w, k, images = make_scene(1)
    write_colmap(tmp_path / "scene", c2w, k, images, binary)
    check(readers.read_colmap(tmp_path / "scene"), c2w, k)


def test_llff_round_trip_rescales_intrinsics(tmp_path):
    c2w, _, images = make_scene(2)
    write_llff(tmp_path / "scene", c2w, 30.0, images)
    rec = readers.read_llff(tmp_path / "scene")
    # poses_bounds is for 4x the image size on disk: focal and centre scale by 1/4
    check(rec, c2w, np.tile([30.0, 30.0, W / 2, H / 2], (V, 1)))


def test_bad_inputs_name_the_file(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "transforms.json").write_text(json.dumps({"frames": [{"file_path": "x.png"}]}))
    with pytest.raises(ValueError, match="transforms.json: frame 0"):
        readers.read_nerfstudio(tmp_path / "a")
    np.save(tmp_path / "a" / "poses_bounds.npy", np.zeros((3, 15)))
    with pytest.raises(ValueError, match=r"poses_bounds.npy: expected \(N, 17\)"):
        readers.read_llff(tmp_path / "a")
    with pytest.raises(FileNotFoundError, match="no COLMAP model"):
        readers.read_colmap(tmp_path / "a")


def test_view_selection_rules():
    assert readers.view_selection(30, "even") == {"context": list(range(0, 24, 2)), "target": list(range(1, 24, 2))}
    e8 = readers.view_selection(20, "every8", max_context=4)
    assert e8["target"] == [0, 8, 16] and len(e8["context"]) == 4 and not set(e8["context"]) & {0, 8, 16}
    with pytest.raises(ValueError, match="unknown view-selection rule"):
        readers.view_selection(20, "odd")


def test_bench_from_to_re10k_reader(tmp_path, capsys):
    """CLI conversion; the RE10K reader then gives the original poses (centred, square-pixel fixture: the reader's
    single-focal camera is exact) and the exact rows of a general fixture."""
    c2w, k, images = make_scene(3, centred=True)
    write_nerfstudio(tmp_path / "dl3dv" / "0a1b" / "nerfstudio", c2w, k, images)
    c2w2, k2, images2 = make_scene(4)
    write_nerfstudio(tmp_path / "dl3dv" / "ffee" / "nerfstudio", c2w2, k2, images2)
    assert data_main(["bench-from", "dl3dv", str(tmp_path / "dl3dv"), "--out", str(tmp_path / "out")]) == 0
    assert "2 scenes (2 indexed by rule 'even'" in capsys.readouterr().out
    index = json.loads((tmp_path / "out" / "evaluation_index.json").read_text())
    assert index["0a1b"] == {"context": [0, 2, 4, 6, 8], "target": [1, 3, 5, 7, 9]}
    chunk = torch.load(tmp_path / "out" / "test" / "000000.torch", weights_only=True)
    general = next(c for c in chunk if c["key"] == "ffee")
    w2c = np.linalg.inv(c2w2)
    np.testing.assert_allclose(general["cameras"][:, :4].numpy(), k2 / [W, H, W, H], rtol=1e-6)
    np.testing.assert_allclose(general["cameras"][:, 6:].reshape(V, 3, 4).numpy(), w2c[:, :3], atol=1e-5)
    bench = Re10kBenchmark(tmp_path / "out", resolution=32, index_path=tmp_path / "out" / "evaluation_index.json")
    scene = next(s for s in bench if s.key == "0a1b")
    np.testing.assert_allclose(scene.context_cams.R.numpy(), c2w[0:10:2, :3, :3], atol=1e-5)
    np.testing.assert_allclose(scene.target_cams.t.numpy(), c2w[1:10:2, :3, 3], atol=1e-5)
    # JPEG round trip of the context images (centre crop 40x40 of 40x48, resized to 32)
    assert scene.context.shape == (5, 3, 32, 32)


@pytest.mark.parametrize("fmt", ["colmap", "llff"])
def test_bench_from_colmap_and_llff(tmp_path, fmt, capsys):
    c2w, k, images = make_scene(5)
    if fmt == "colmap":
        write_colmap(tmp_path / "sets" / "garden", c2w, k, images, binary=True)
    else:
        write_llff(tmp_path / "sets" / "fern", c2w, 30.0, images)
    assert data_main(["bench-from", fmt, str(tmp_path / "sets"), "--out", str(tmp_path / "out"),
                      "--max-context", "3"]) == 0
    index = json.loads((tmp_path / "out" / "evaluation_index.json").read_text())
    (key, entry), = index.items()
    # every8 over 10 frames: targets 0 and 8, 3 context frames spread over the rest -> stored frames re-indexed
    assert len(entry["target"]) == 2 and len(entry["context"]) == 3
    chunk = torch.load(tmp_path / "out" / "test" / "000000.torch", weights_only=True)
    assert len(chunk[0]["images"]) == 5
    assert data_main(["bench-from", fmt, str(tmp_path / "nothing"), "--out", str(tmp_path / "o2")]) == 2
