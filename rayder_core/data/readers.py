"""Readers of published multi-view benchmark formats, converted into the toolkit's one internal format (pixelSplat
RE10K chunks + an evaluation index, see `rayder_core.data.evalsets`).

Every reader returns `SceneRecord`s: image files plus per-view pinhole intrinsics in pixels (fx, fy, cx, cy, for the
image size on disk) and camera-to-world poses in OpenCV axes (x right, y down, z forward), float64.

Formats and their axis conventions:
- nerfstudio ``transforms.json`` (DL3DV-10K benchmark): ``frames[i].transform_matrix`` is camera-to-world with
  OpenGL/Blender camera axes (x right, y up, z backward); OpenCV = OpenGL with the y and z camera axes negated
  (``c2w @ diag(1, -1, -1, 1)``). Intrinsics ``fl_x, fl_y, cx, cy, w, h`` at the top level or per frame.
- COLMAP sparse models (``cameras.bin/images.bin`` or ``cameras.txt/images.txt``; LLFF, Mip-NeRF 360, Tanks and
  Temples): images store world-to-camera ``qvec`` (w, x, y, z) and ``tvec`` in OpenCV axes already; cameras store
  the model and its parameters (first focal/principal-point parameters are used; distortion is ignored).
- LLFF ``poses_bounds.npy``: (N, 17) = a 3x5 matrix per image (row-major) + near/far bounds. Columns 0-2 are the
  camera-to-world rotation with camera axes (down, right, backward), column 3 the centre, column 4 (h, w, focal)
  in pixels of the full-resolution images; images are ``images/`` sorted by name. OpenCV axes are
  (right, down, forward) = (col 1, col 0, -col 2).

Evaluation-index rules (`view_selection`):
- ``even`` (the paper's DL3DV setting, Table 6 / Figure E.5: RayZer's "even" split): the first ``views`` frames
  (24 by default), even indices are context and odd indices are targets.
- ``every8`` (the LLFF / Mip-NeRF 360 hold-out convention; the paper states no rule for these sets): frames with
  index % 8 == 0 are targets, up to ``max_context`` frames evenly spread over the rest are context.
"""
from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from rayder_core.data.evalsets import write_evaluation_index, write_re10k_chunks

OPENGL_TO_OPENCV = np.diag([1.0, -1.0, -1.0, 1.0])
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".JPG", ".JPEG", ".PNG")
RULES = ("even", "every8")

# COLMAP camera models: id -> (name, number of parameters); focal / principal point = first parameters.
COLMAP_MODELS = {
    0: ("SIMPLE_PINHOLE", 3), 1: ("PINHOLE", 4), 2: ("SIMPLE_RADIAL", 4), 3: ("RADIAL", 5), 4: ("OPENCV", 8),
    5: ("OPENCV_FISHEYE", 8), 6: ("FULL_OPENCV", 12), 7: ("FOV", 5), 8: ("SIMPLE_RADIAL_FISHEYE", 4),
    9: ("RADIAL_FISHEYE", 5), 10: ("THIN_PRISM_FISHEYE", 12),
}
_SINGLE_FOCAL = {"SIMPLE_PINHOLE", "SIMPLE_RADIAL", "RADIAL", "SIMPLE_RADIAL_FISHEYE", "RADIAL_FISHEYE"}


@dataclass
class SceneRecord:
    """One scene: V image files, intrinsics (V, 4) = fx, fy, cx, cy in pixels of the files, camera-to-world (V, 4, 4)
    in OpenCV axes, image sizes (V, 2) = (height, width)."""

    key: str
    images: list[Path]
    intrinsics: np.ndarray
    c2w: np.ndarray
    sizes: np.ndarray

    def __post_init__(self) -> None:
        v = len(self.images)
        if self.intrinsics.shape != (v, 4) or self.c2w.shape != (v, 4, 4) or self.sizes.shape != (v, 2):
            raise ValueError(f"scene {self.key}: {v} images but intrinsics {self.intrinsics.shape}, "
                             f"poses {self.c2w.shape}, sizes {self.sizes.shape}")
        if not np.isfinite(self.c2w).all() or not np.isfinite(self.intrinsics).all():
            raise ValueError(f"scene {self.key}: non-finite camera values")

    def re10k_rows(self) -> torch.Tensor:
        """(V, 18) pixelSplat camera rows: fx/w, fy/h, cx/w, cy/h, 0, 0, world-to-camera 3x4 row-major (OpenCV)."""
        w2c = np.linalg.inv(self.c2w)
        h, w = self.sizes[:, 0].astype(float), self.sizes[:, 1].astype(float)
        k = self.intrinsics
        head = np.stack([k[:, 0] / w, k[:, 1] / h, k[:, 2] / w, k[:, 3] / h, 0 * w, 0 * w], axis=1)
        return torch.from_numpy(np.concatenate([head, w2c[:, :3, :4].reshape(-1, 12)], axis=1))


def _image_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as im:
        return im.height, im.width


def _rescale(intr: np.ndarray, recorded_hw: tuple[float, float], actual_hw: tuple[int, int]) -> np.ndarray:
    """Intrinsics recorded for one image size, expressed for the size of the file on disk (e.g. images_4/)."""
    sy, sx = actual_hw[0] / recorded_hw[0], actual_hw[1] / recorded_hw[1]
    return intr * np.array([sx, sy, sx, sy])


# ------------------------------------------------------------------------------------------ nerfstudio


def read_nerfstudio(scene_dir: str | os.PathLike, key: str | None = None,
                    transforms: str = "transforms.json") -> SceneRecord:
    """A nerfstudio scene (DL3DV-10K benchmark layout: ``scene_dir/transforms.json`` + the image files it names).

    Frames are kept in the file's order sorted by file name (DL3DV lists them in capture order)."""
    scene_dir = Path(scene_dir)
    path = scene_dir / transforms
    if not path.exists():
        raise FileNotFoundError(f"nerfstudio transforms not found: {path}")
    try:
        meta = json.loads(path.read_text())
        frames = sorted(meta["frames"], key=lambda fr: fr["file_path"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: not a nerfstudio transforms file ({type(exc).__name__}: {exc})") from None
    images, intr, c2w, sizes = [], [], [], []
    for i, fr in enumerate(frames):
        try:
            img = scene_dir / fr["file_path"]
            get = lambda k: float(fr[k] if k in fr else meta[k])  # noqa: E731  per-frame values override
            k = np.array([get("fl_x"), get("fl_y"), get("cx"), get("cy")])
            recorded = (get("h"), get("w"))
            m = np.asarray(fr["transform_matrix"], dtype=np.float64)
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{path}: frame {i}: missing or bad key ({type(exc).__name__}: {exc})") from None
        if m.shape == (3, 4):
            m = np.vstack([m, [0, 0, 0, 1]])
        if m.shape != (4, 4):
            raise ValueError(f"{path}: frame {i}: transform_matrix must be 4x4, got {m.shape}")
        if not img.exists():
            raise FileNotFoundError(f"{path}: frame {i}: image not found: {img}")
        hw = _image_size(img)
        images.append(img)
        intr.append(_rescale(k, recorded, hw))
        c2w.append(m @ OPENGL_TO_OPENCV)
        sizes.append(hw)
    return SceneRecord(key or scene_dir.name, images, np.array(intr), np.array(c2w), np.array(sizes))


# ------------------------------------------------------------------------------------------ COLMAP


def qvec_to_rotmat(q: np.ndarray) -> np.ndarray:
    """COLMAP quaternion (w, x, y, z) -> rotation matrix (world-to-camera)."""
    w, x, y, z = np.asarray(q, dtype=np.float64) / np.linalg.norm(q)
    return np.array([
        [1 - 2 * y * y - 2 * z * z, 2 * x * y - 2 * w * z, 2 * z * x + 2 * w * y],
        [2 * x * y + 2 * w * z, 1 - 2 * x * x - 2 * z * z, 2 * y * z - 2 * w * x],
        [2 * z * x - 2 * w * y, 2 * y * z + 2 * w * x, 1 - 2 * x * x - 2 * y * y],
    ])


def _read(fh, fmt: str, path: Path) -> tuple:
    size = struct.calcsize(fmt)
    data = fh.read(size)
    if len(data) != size:
        raise ValueError(f"{path}: truncated COLMAP binary file")
    return struct.unpack(fmt, data)


def read_colmap_cameras(path: str | os.PathLike) -> dict[int, tuple[str, int, int, np.ndarray]]:
    """cameras.bin / cameras.txt -> {camera_id: (model name, width, height, params)}."""
    path = Path(path)
    out = {}
    if path.suffix == ".txt":
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip() or line.startswith("#"):
                continue
            parts = line.split()
            try:
                out[int(parts[0])] = (parts[1], int(parts[2]), int(parts[3]), np.array([float(p) for p in parts[4:]]))
            except (IndexError, ValueError):
                raise ValueError(f"{path}:{n}: bad camera line {line!r}") from None
        return out
    with open(path, "rb") as fh:
        (count,) = _read(fh, "<Q", path)
        for _ in range(count):
            cam_id, model_id, width, height = _read(fh, "<iiQQ", path)
            if model_id not in COLMAP_MODELS:
                raise ValueError(f"{path}: camera {cam_id}: unknown COLMAP model id {model_id}")
            name, n_params = COLMAP_MODELS[model_id]
            out[cam_id] = (name, width, height, np.array(_read(fh, f"<{n_params}d", path)))
    return out


def read_colmap_images(path: str | os.PathLike) -> dict[int, tuple[np.ndarray, np.ndarray, int, str]]:
    """images.bin / images.txt -> {image_id: (qvec (w,x,y,z), tvec, camera_id, name)} (world-to-camera)."""
    path = Path(path)
    out = {}
    if path.suffix == ".txt":
        lines = [ln for ln in path.read_text().splitlines() if not ln.startswith("#")]
        for n in range(0, len(lines) - 1, 2):  # an image line, then its 2D points line (possibly empty)
            parts = lines[n].split()
            if not parts:
                continue
            try:
                out[int(parts[0])] = (np.array([float(p) for p in parts[1:5]]), np.array([float(p) for p in parts[5:8]]),
                                      int(parts[8]), parts[9])
            except (IndexError, ValueError):
                raise ValueError(f"{path}: bad image line {lines[n]!r}") from None
        return out
    with open(path, "rb") as fh:
        (count,) = _read(fh, "<Q", path)
        for _ in range(count):
            image_id, *qt, cam_id = _read(fh, "<i7di", path)
            name = bytearray()
            while True:
                c = fh.read(1)
                if c == b"":
                    raise ValueError(f"{path}: truncated image name")
                if c == b"\x00":
                    break
                name += c
            (n_points,) = _read(fh, "<Q", path)
            fh.seek(24 * n_points, 1)  # x, y (double) + point3D id (int64) per 2D point
            out[image_id] = (np.array(qt[:4]), np.array(qt[4:]), cam_id, name.decode())
    return out


def read_colmap(scene_dir: str | os.PathLike, key: str | None = None, images_dir: str = "images",
                sparse: str = "sparse/0") -> SceneRecord:
    """A COLMAP scene: ``scene_dir/sparse/0/{cameras,images}.{bin,txt}`` + ``scene_dir/images/``; views sorted by
    image name."""
    scene_dir = Path(scene_dir)
    model = scene_dir / sparse
    ext = ".bin" if (model / "images.bin").exists() else ".txt"
    if not (model / f"images{ext}").exists() or not (model / f"cameras{ext}").exists():
        raise FileNotFoundError(f"no COLMAP model (cameras/images .bin or .txt) in {model}")
    cameras = read_colmap_cameras(model / f"cameras{ext}")
    images = sorted(read_colmap_images(model / f"images{ext}").values(), key=lambda r: r[3])
    paths, intr, c2w, sizes = [], [], [], []
    for q, t, cam_id, name in images:
        if cam_id not in cameras:
            raise ValueError(f"{model}: image {name} refers to unknown camera {cam_id}")
        model_name, w, h, p = cameras[cam_id]
        k = (np.array([p[0], p[0], p[1], p[2]]) if model_name in _SINGLE_FOCAL else np.array(p[:4]))
        img = scene_dir / images_dir / name
        if not img.exists():
            raise FileNotFoundError(f"{model}: image not found: {img}")
        hw = _image_size(img)
        w2c = np.eye(4)
        w2c[:3, :3], w2c[:3, 3] = qvec_to_rotmat(q), t
        paths.append(img)
        intr.append(_rescale(k, (h, w), hw))
        c2w.append(np.linalg.inv(w2c))
        sizes.append(hw)
    return SceneRecord(key or scene_dir.name, paths, np.array(intr), np.array(c2w), np.array(sizes))


# ------------------------------------------------------------------------------------------ LLFF


def read_llff(scene_dir: str | os.PathLike, key: str | None = None, images_dir: str = "images") -> SceneRecord:
    """An LLFF scene: ``scene_dir/poses_bounds.npy`` + ``scene_dir/images/`` (sorted by name, one per row)."""
    scene_dir = Path(scene_dir)
    path = scene_dir / "poses_bounds.npy"
    if not path.exists():
        raise FileNotFoundError(f"LLFF poses not found: {path}")
    arr = np.load(path, allow_pickle=False)
    if arr.ndim != 2 or arr.shape[1] != 17:
        raise ValueError(f"{path}: expected (N, 17) poses_bounds, got {arr.shape}")
    files = sorted(p for p in (scene_dir / images_dir).iterdir() if p.suffix in IMAGE_EXTENSIONS)
    if len(files) != arr.shape[0]:
        raise ValueError(f"{path}: {arr.shape[0]} poses but {len(files)} images in {scene_dir / images_dir}")
    mats = arr[:, :15].reshape(-1, 3, 5)
    intr, c2w, sizes = [], [], []
    for img, m in zip(files, mats):
        h, w, f = m[:, 4]
        pose = np.eye(4)
        pose[:3, 0], pose[:3, 1], pose[:3, 2] = m[:, 1], m[:, 0], -m[:, 2]  # (down, right, back) -> OpenCV
        pose[:3, 3] = m[:, 3]
        hw = _image_size(img)
        intr.append(_rescale(np.array([f, f, w / 2, h / 2]), (h, w), hw))
        c2w.append(pose)
        sizes.append(hw)
    return SceneRecord(key or scene_dir.name, files, np.array(intr), np.array(c2w), np.array(sizes))


# ------------------------------------------------------------------------------------------ conversion


def view_selection(n_views: int, rule: str, views: int = 24, max_context: int = 8) -> dict[str, list[int]] | None:
    """Evaluation-index entry {"context": [...], "target": [...]} of a scene with `n_views` frames (see the module
    docstring for the rules); None when the scene has too few frames."""
    if rule == "even":
        if n_views < 2:
            return None
        use = min(n_views, views)
        return {"context": list(range(0, use, 2)), "target": list(range(1, use, 2))}
    if rule == "every8":
        target = [i for i in range(n_views) if i % 8 == 0]
        rest = [i for i in range(n_views) if i % 8]
        if not rest or not target:
            return None
        pick = np.unique(np.round(np.linspace(0, len(rest) - 1, min(max_context, len(rest)))).astype(int))
        return {"context": [rest[i] for i in pick], "target": target}
    raise ValueError(f"unknown view-selection rule {rule!r}; choose from {RULES}")


def _decode(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def write_benchmark(records: Iterable[SceneRecord], out: str | os.PathLike, rule: str, *, views: int = 24,
                    max_context: int = 8, split: str = "test", progress: bool = True) -> dict[str, int]:
    """Write scenes as pixelSplat chunks (`out/{split}/`) with the exact intrinsics of each file, and
    `out/evaluation_index.json` by `rule`. Returns {"scenes", "indexed", "views"}."""
    if rule not in RULES:
        raise ValueError(f"unknown view-selection rule {rule!r}; choose from {RULES}")
    index: dict[str, dict[str, list[int]] | None] = {}
    stats = {"scenes": 0, "indexed": 0, "views": 0}

    def scenes() -> Iterator[dict]:
        for rec in tqdm(records, desc="bench-from", unit="scene", disable=not progress):
            entry = view_selection(len(rec.images), rule, views, max_context)
            keep = sorted(set(entry["context"]) | set(entry["target"])) if entry else list(range(len(rec.images)))
            if entry:  # store only the frames the index uses, re-indexed
                pos = {v: i for i, v in enumerate(keep)}
                entry = {k: [pos[v] for v in vals] for k, vals in entry.items()}
            index[rec.key] = entry
            stats["scenes"] += 1
            stats["indexed"] += entry is not None
            stats["views"] += len(keep)
            yield {"key": rec.key, "images": np.stack([_decode(rec.images[i]) for i in keep]),
                   "rows": rec.re10k_rows()[keep].to(torch.float32), "url": str(rec.images[0].parent)}

    write_re10k_chunks(scenes(), out, split)
    write_evaluation_index(index, Path(out) / "evaluation_index.json")
    return stats
