"""Procedural video corpus: textured 3-D scenes, smooth camera paths, a vectorised numpy ray caster.

A scene is a ground plane, optionally four walls (indoor) or a sky/fog horizon (outdoor), and a cluster of
boxes (yaw-rotated) and spheres near the origin, each with a tileable procedural texture. Cameras move on
paths that never enter the object cluster: ``orbit``, ``walk`` (a walk-through that looks ahead and inward),
``pan`` (rotation in place) and ``zoom`` (the focal changes over time). In a ``dynamic`` clip one or two
objects move and spin. World frame: z up, metres. Poses are camera-to-world with OpenCV camera axes and one
normalised focal ``f`` (``f_px = f * min(h-1, w-1) / 2``, principal point at the exact centre), the
convention of :mod:`rayder_core.geometry`, so a stored pose is exact for the rendered pixels.

Everything here is numpy (float32) so that worker processes start fast; nothing imports torch.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from rayder_core.data.manifest import Manifest, build_manifest
from rayder_core.data.shards import DEFAULT_FPS, encode_mp4, shard_path, write_shard

TRAIN_FAMILIES = ("checker", "stripes", "noise", "bricks", "grid")
"""Texture families of the training corpus."""
HELDOUT_FAMILIES = ("dots", "waves", "plaid", "marble")
"""Texture families used only by the benchmarks (never in training clips)."""
TRAJECTORIES = ("orbit", "walk", "pan", "zoom")

TEX = 32  # texels per texture tile side (a power of two)
SYNTH_CRF = 0
"""libx264 CRF of the synthetic clips: 0 = lossless, so a regenerated corpus decodes to the same pixels. With the
lossy default (18) libx264's output for a few clips differed between two generations of the same corpus (the
rendered frames did not), and runs trained on the two differed like runs of two seeds."""
_CLUSTER_RADIUS = 2.6  # every object (incl. its motion) stays within this radius of the origin
_CAMERA_MIN_RADIUS = 3.4
_EPS = 1e-4


# ------------------------------------------------------------------------------------------ textures


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    i = np.floor(h * 6.0).astype(int) % 6
    fr = h * 6.0 - np.floor(h * 6.0)
    p, q, t = v * (1 - s), v * (1 - fr * s), v * (1 - (1 - fr) * s)
    table = np.stack([
        np.stack([v, t, p], -1), np.stack([q, v, p], -1), np.stack([p, v, t], -1),
        np.stack([p, q, v], -1), np.stack([t, p, v], -1), np.stack([v, p, q], -1),
    ])
    return table[i, np.arange(len(h))]


def _palette(rng: np.random.Generator, n: int = 3) -> np.ndarray:
    """``n`` random RGB colours in [0, 1] with distinct brightness, shape (n, 3)."""
    base_h = rng.random()
    h = (base_h + rng.uniform(-0.25, 0.25, n) * rng.choice([0.3, 1.0, 2.0])) % 1.0
    s = rng.uniform(0.15, 0.9, n)
    v = np.sort(rng.uniform(0.25, 1.0, n))
    v[-1] = max(v[-1], v[0] + 0.3)
    return _hsv_to_rgb(h, s, np.clip(v, 0, 1))


def _smooth_periodic_noise(rng: np.random.Generator, x: np.ndarray, y: np.ndarray, terms: int = 6) -> np.ndarray:
    """Tileable smooth noise in [0, 1]: a sum of sinusoids with small integer frequencies."""
    out = np.zeros_like(x)
    for _ in range(terms):
        kx, ky = rng.integers(-3, 4, 2)
        if kx == 0 and ky == 0:
            kx = 1
        out += rng.uniform(0.3, 1.0) / np.hypot(kx, ky) * np.sin(2 * np.pi * (kx * x + ky * y) + rng.uniform(0, 2 * np.pi))
    out -= out.min()
    return out / max(out.max(), 1e-6)


def _mix(pal: np.ndarray, a: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    """Blend palette colours: ``a`` in [0,1] between colours 0 and 1, ``b`` (optional) towards colour 2."""
    img = pal[0] * (1 - a[..., None]) + pal[1] * a[..., None]
    if b is not None:
        img = img * (1 - b[..., None]) + pal[2] * b[..., None]
    return img


def make_texture(rng: np.random.Generator, family: str) -> np.ndarray:
    """One tileable texture tile of ``family``, float32 RGB in [0, 1], shape (TEX, TEX, 3)."""
    g = (np.arange(TEX, dtype=np.float64) + 0.5) / TEX
    x, y = np.meshgrid(g, g, indexing="xy")
    pal = _palette(rng)
    if family == "checker":
        n = rng.choice([2, 4])
        img = _mix(pal, ((np.floor(x * n) + np.floor(y * n)) % 2).astype(float))
    elif family == "stripes":
        n = rng.choice([2, 3, 4])
        a, b = [(1, 0), (0, 1), (1, 1), (1, -1)][rng.integers(4)]
        s = 0.5 + 0.5 * np.sin(2 * np.pi * n * (a * x + b * y))
        img = _mix(pal, np.clip((s - 0.5) * rng.uniform(2, 6) + 0.5, 0, 1))
    elif family == "noise":
        img = _mix(pal, _smooth_periodic_noise(rng, x, y), np.clip(_smooth_periodic_noise(rng, x, y) * 2 - 1, 0, 1))
    elif family == "bricks":
        rows, cols = rng.choice([2, 4]), rng.choice([1, 2])
        r = np.floor(y * rows)
        xs = x * cols + 0.5 * (r % 2)
        mortar = (np.minimum(xs % 1, 1 - xs % 1) < 0.06) | (np.minimum((y * rows) % 1, 1 - (y * rows) % 1) < 0.08)
        shade = rng.uniform(0, 1, (rows, 2 * cols + 1))[r.astype(int), np.floor(xs).astype(int) % (2 * cols + 1)]
        img = _mix(pal, 0.35 * shade, mortar.astype(float))
    elif family == "grid":
        n = rng.choice([1, 2, 4])
        lw = rng.uniform(0.05, 0.15)
        line = (np.minimum((x * n) % 1, 1 - (x * n) % 1) < lw) | (np.minimum((y * n) % 1, 1 - (y * n) % 1) < lw)
        img = _mix(pal, line.astype(float), 0.3 * _smooth_periodic_noise(rng, x, y))
    elif family == "dots":
        n = rng.choice([2, 3])
        dist = np.hypot((x * n) % 1 - 0.5, (y * n) % 1 - 0.5)
        img = _mix(pal, (dist < rng.uniform(0.2, 0.4)).astype(float))
    elif family == "waves":
        n, m = rng.integers(1, 4, 2)
        s = 0.5 + 0.5 * np.sin(2 * np.pi * n * x + rng.uniform(1, 3) * np.sin(2 * np.pi * m * y))
        img = _mix(pal, s)
    elif family == "plaid":
        n = rng.choice([2, 3])
        sx = (0.5 + 0.5 * np.sin(2 * np.pi * n * x)) > 0.6
        sy = (0.5 + 0.5 * np.sin(2 * np.pi * n * y)) > 0.6
        img = _mix(pal, sx.astype(float) * 0.8, sy.astype(float) * 0.7)
    elif family == "marble":
        s = 0.5 + 0.5 * np.sin(2 * np.pi * (x + y) + 5.0 * _smooth_periodic_noise(rng, x, y))
        img = _mix(pal, s ** 2)
    else:
        raise ValueError(f"unknown texture family {family!r}; known: {TRAIN_FAMILIES + HELDOUT_FAMILIES}")
    grain = rng.uniform(0.0, 0.06) * rng.standard_normal((TEX, TEX, 1))
    return np.clip(img + grain, 0.0, 1.0).astype(np.float32)


# --------------------------------------------------------------------------------------------- scene


@dataclass
class Scene:
    """Static description of a procedural scene (metres, radians; world z up).

    Boxes: ``box_center`` (Nb, 3) at t=0, ``box_half`` (Nb, 3) half extents in the box frame, ``box_yaw``
    (Nb,). Spheres: ``sph_center`` (Ns, 3), ``sph_radius`` (Ns,). Moving objects: ``motion`` maps the object
    index (boxes first, then spheres) to ``(amplitude_m, angular_speed_rad_s, phase, spin_rad_s)``; the object
    centre follows a horizontal circle of that amplitude starting at its t=0 position.
    """

    room: float  # walls at x, y = +-room (indoor) -- also the bound on camera positions
    wall_height: float
    indoor: bool
    textures: np.ndarray  # (S, TEX, TEX, 3) float32; 0 floor, 1 walls, 2.. objects
    tile: np.ndarray  # (S,) world size of one texture tile (m); spheres: number of tiles around
    box_center: np.ndarray
    box_half: np.ndarray
    box_yaw: np.ndarray
    sph_center: np.ndarray
    sph_radius: np.ndarray
    sun: np.ndarray  # (3,) unit vector towards the light
    ambient: float
    sky_top: np.ndarray
    sky_horizon: np.ndarray
    fog_distance: float
    motion: dict[int, tuple[float, float, float, float]] = field(default_factory=dict)
    texture_families: tuple[str, ...] = ()  # the family of each texture (floor, walls, objects)

    @property
    def num_objects(self) -> int:
        return len(self.box_center) + len(self.sph_center)

    def object_pose(self, index: int, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Centre (F, 3) and yaw/spin angle (F,) of object ``index`` (boxes first) at ``times`` (seconds)."""
        nb = len(self.box_center)
        c0 = self.box_center[index] if index < nb else self.sph_center[index - nb]
        yaw0 = self.box_yaw[index] if index < nb else 0.0
        centre = np.repeat(c0[None].astype(np.float64), len(times), 0)
        yaw = np.full(len(times), yaw0, np.float64)
        if index in self.motion:
            amp, speed, phase, spin = self.motion[index]
            ang = phase + speed * times
            centre[:, 0] += amp * (np.cos(ang) - np.cos(phase))
            centre[:, 1] += amp * (np.sin(ang) - np.sin(phase))
            yaw += spin * times
        return centre, yaw


def random_scene(rng: np.random.Generator, families: tuple[str, ...] = TRAIN_FAMILIES, dynamic: bool = False) -> Scene:
    """Draw a scene: 1-4 boxes and 1-3 spheres in a cluster of radius 2.6 m, textures from ``families``."""
    indoor = bool(rng.random() < 0.6)
    room = float(rng.uniform(5.5, 8.0))
    nb, ns = int(rng.integers(1, 5)), int(rng.integers(1, 4))
    placed: list[tuple[float, float, float]] = []  # (x, y, bounding radius)
    box_c, box_h, box_y, sph_c, sph_r = [], [], [], [], []
    moving = set(rng.choice(nb + ns, size=int(rng.integers(1, 3)), replace=False).tolist()) if dynamic else set()
    box_motion, sph_motion = {}, {}
    for k in range(nb + ns):
        is_box = k < nb
        for _attempt in range(30):
            if is_box:
                half = np.array([rng.uniform(0.2, 0.7), rng.uniform(0.2, 0.7), rng.uniform(0.2, 0.9)])
                bound = float(np.hypot(half[0], half[1]))
            else:
                radius = float(rng.uniform(0.2, 0.6))
                bound = radius
            amp = float(rng.uniform(0.3, 0.7)) if k in moving else 0.0
            reach = _CLUSTER_RADIUS - bound - 2 * amp
            r, a = max(reach, 0.0) * np.sqrt(rng.random()), rng.uniform(0, 2 * np.pi)
            x, y = r * np.cos(a), r * np.sin(a)
            if reach > 0 and all(np.hypot(x - px, y - py) > bound + pb + 0.1 for px, py, pb in placed):
                break
        else:  # no free spot left in the cluster: leave this object out
            continue
        placed.append((x, y, bound))
        motion = (amp, float(rng.uniform(0.5, 1.4) * rng.choice([-1, 1])), float(rng.uniform(0, 2 * np.pi)),
                  float(rng.uniform(-1.0, 1.0)))
        if is_box:
            if k in moving:
                box_motion[len(box_c)] = motion
            box_c.append([x, y, half[2]]), box_h.append(half), box_y.append(rng.uniform(0, np.pi))
        else:
            if k in moving:
                sph_motion[len(sph_c)] = motion
            lift = 0.0 if rng.random() < 0.6 else rng.uniform(0.2, 1.0)
            sph_c.append([x, y, radius + lift]), sph_r.append(radius)
    nb, ns = len(box_c), len(sph_c)
    motion = {**box_motion, **{nb + j: m for j, m in sph_motion.items()}}  # object index: boxes first
    fam = [families[i] for i in rng.integers(0, len(families), 2 + nb + ns)]
    textures = np.stack([make_texture(rng, f) for f in fam])
    tile = np.concatenate([rng.uniform(1.0, 2.5, 2), rng.uniform(0.5, 1.2, nb), rng.integers(1, 3, ns).astype(float)])
    elev, azim = rng.uniform(0.5, 1.2), rng.uniform(0, 2 * np.pi)
    sun = np.array([np.cos(elev) * np.cos(azim), np.cos(elev) * np.sin(azim), np.sin(elev)])
    sky = _palette(rng, 2)
    return Scene(
        room=room, wall_height=float(rng.uniform(2.5, 4.0)), indoor=indoor, textures=textures,
        tile=tile.astype(np.float32),
        box_center=np.array(box_c, np.float64).reshape(-1, 3), box_half=np.array(box_h, np.float64).reshape(-1, 3),
        box_yaw=np.array(box_y, np.float64), sph_center=np.array(sph_c, np.float64).reshape(-1, 3),
        sph_radius=np.array(sph_r, np.float64), sun=sun, ambient=float(rng.uniform(0.35, 0.6)),
        sky_top=(0.5 * sky[0] + 0.3).clip(0, 1), sky_horizon=(0.5 * sky[1] + 0.5).clip(0, 1),
        fog_distance=float(rng.uniform(15.0, 40.0)), motion=motion, texture_families=tuple(fam),
    )


# ------------------------------------------------------------------------------------------- cameras


def look_rotation(forward: np.ndarray) -> np.ndarray:
    """Camera-to-world rotations (F, 3, 3) with OpenCV axes (x right, y down, z = ``forward``), world z up."""
    fwd = forward / np.linalg.norm(forward, axis=-1, keepdims=True)
    up = np.array([0.0, 0.0, 1.0])
    right = np.cross(fwd, up)
    right /= np.linalg.norm(right, axis=-1, keepdims=True)
    down = np.cross(fwd, right)
    return np.stack([right, down, fwd], axis=-1)


def random_trajectory(rng: np.random.Generator, scene: Scene, times: np.ndarray,
                      kind: str | None = None) -> tuple[str, np.ndarray, np.ndarray, np.ndarray]:
    """A smooth camera path over ``times`` (seconds).

    Returns ``(kind, R (F,3,3) camera-to-world, t (F,3) camera centres in m, f (F,) normalised focals)``.
    Speeds are per second, so longer clips travel further at the same pace.
    """
    kind = kind or TRAJECTORIES[rng.integers(len(TRAJECTORIES))]
    if kind not in TRAJECTORIES:
        raise ValueError(f"unknown trajectory {kind!r}; known: {TRAJECTORIES}")
    n = len(times)
    r_max = min(scene.room - 0.7, 6.5)
    radius = rng.uniform(_CAMERA_MIN_RADIUS + 0.1, r_max)
    phi0 = rng.uniform(0, 2 * np.pi)
    height = rng.uniform(0.7, 2.2)
    target = np.array([*rng.uniform(-0.6, 0.6, 2), rng.uniform(0.2, 1.0)])
    wobble = lambda amp: amp * np.sin(2 * np.pi * times / rng.uniform(3.0, 8.0) + rng.uniform(0, 2 * np.pi))  # noqa: E731
    f0 = rng.uniform(0.85, 1.4)
    focal = np.full(n, f0)
    sign = rng.choice([-1.0, 1.0])
    if kind == "orbit":
        phi = phi0 + sign * rng.uniform(0.08, 0.2) * times + wobble(0.03)
        eye = np.stack([radius * np.cos(phi), radius * np.sin(phi), height + wobble(0.1)], -1)
        fwd = target - eye
    elif kind == "walk":
        phi = phi0 + sign * rng.uniform(0.06, 0.14) * times
        rad = np.clip(radius + rng.uniform(-0.15, 0.15) * times, _CAMERA_MIN_RADIUS, r_max)
        eye = np.stack([rad * np.cos(phi), rad * np.sin(phi), height + 0.04 * np.sin(2 * np.pi * 1.6 * times)], -1)
        tangent = sign * np.stack([-np.sin(phi), np.cos(phi), np.zeros(n)], -1)
        inward = -eye * np.array([1.0, 1.0, 0.0]) / rad[:, None]
        alpha = rng.uniform(0.5, 1.1) + wobble(0.08)
        pitch = rng.uniform(-0.35, -0.05)
        horiz = np.cos(alpha)[:, None] * tangent + np.sin(alpha)[:, None] * inward
        fwd = horiz + np.array([0.0, 0.0, np.tan(pitch)])
    elif kind == "pan":
        eye = np.array([radius * np.cos(phi0), radius * np.sin(phi0), height]) + np.zeros((n, 3))
        yaw_c = np.arctan2(target[1] - eye[0, 1], target[0] - eye[0, 0])
        yaw = yaw_c + sign * (rng.uniform(0.1, 0.22) * (times - times.mean())) + wobble(0.03)
        pitch = rng.uniform(-0.35, -0.05) + wobble(0.04)
        fwd = np.stack([np.cos(pitch) * np.cos(yaw), np.cos(pitch) * np.sin(yaw), np.sin(pitch)], -1)
    else:  # zoom: focal changes smoothly, slight dolly
        rad = radius - rng.uniform(0.0, 0.1) * times
        eye = np.stack([rad * np.cos(phi0), rad * np.sin(phi0), np.full(n, height)], -1)
        fwd = target - eye
        rate = sign * rng.uniform(0.08, 0.16)
        focal = np.clip(f0 * np.exp(rate * (times - (times[0] if rate > 0 else times[-1]))), 0.6, 3.0)
    return kind, look_rotation(fwd), eye, focal


# ------------------------------------------------------------------------------------------- renderer


def upsample_textures(textures: np.ndarray) -> np.ndarray:
    """Bilinear 2x upsampling with wrap-around: (S, T, T, 3) -> (S, 2T, 2T, 3), texel centres kept."""
    out = textures
    for axis in (1, 2):
        prev, nxt = np.roll(out, 1, axis=axis), np.roll(out, -1, axis=axis)
        even, odd = 0.75 * out + 0.25 * prev, 0.75 * out + 0.25 * nxt
        out = np.stack([even, odd], axis=axis + 1).reshape(
            *out.shape[:axis], 2 * out.shape[axis], *out.shape[axis + 1:])
    return out.astype(np.float32)


def _sample_textures(fine: np.ndarray, tex_id: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Wrapping lookup of 2x-upsampled textures ``fine`` (S, 2T, 2T, 3) at tile coordinates (u, v) -> (N, 3).

    Nearest texel of the bilinearly upsampled tile: bilinear filtering at half-texel resolution, one gather.
    """
    size = fine.shape[1]
    x = np.floor(u * np.float32(size)).astype(np.int32) & (size - 1)  # size is a power of two: & wraps
    y = np.floor(v * np.float32(size)).astype(np.int32) & (size - 1)
    flat = (tex_id.astype(np.int32) * size + y) * size + x
    return np.take(fine.reshape(-1, 3), flat, axis=0)


def camera_rays(R: np.ndarray, f: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """World ray directions as components ``(dx, dy, dz)``, each float32 (F, H*W), row-major pixels, unit length.

    Pixel (u, v) has camera-space direction ``normalize([(2u-(w-1))/(m f), (2v-(h-1))/(m f), 1])`` with
    ``m = min(h-1, w-1)`` -- the convention of :func:`rayder_core.geometry.ray_origins_directions`.
    """
    m = min(height - 1, width - 1)
    u = ((2.0 * np.arange(width) - (width - 1)) / m).astype(np.float32)
    v = ((2.0 * np.arange(height) - (height - 1)) / m).astype(np.float32)
    uu, vv = np.meshgrid(u, v, indexing="xy")
    inv_f = (1.0 / np.asarray(f, np.float64)).astype(np.float32)[:, None]
    cx, cy = uu.ravel()[None] * inv_f, vv.ravel()[None] * inv_f
    norm = 1.0 / np.sqrt(cx * cx + cy * cy + 1.0)
    cx *= norm
    cy *= norm
    Rf = np.asarray(R, np.float32)
    return tuple(Rf[:, i, 0:1] * cx + Rf[:, i, 1:2] * cy + Rf[:, i, 2:3] * norm for i in range(3))


def render(scene: Scene, R: np.ndarray, t: np.ndarray, f: np.ndarray, times: np.ndarray,
           height: int, width: int) -> np.ndarray:
    """Ray-cast the scene for F cameras at ``times``; returns uint8 RGB frames (F, H, W, 3).

    One ray per pixel centre, vectorised over frames x pixels; objects are intersected one at a time.
    """
    nf, npx = len(t), height * width
    dx, dy, dz = camera_rays(R, f, height, width)  # (F, P) each
    o = t.astype(np.float32)
    ox, oy, oz = o[:, 0:1], o[:, 1:2], o[:, 2:3]  # (F, 1)
    inf = np.float32(np.inf)
    best = np.full((nf, npx), inf, np.float32)
    sid = np.full((nf, npx), -1, np.int16)  # surface id: -1 sky, 0 floor, 1 x-walls, 2 y-walls, 3+k objects
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        tf = np.where(dz < -1e-6, -oz / dz, inf)
        hit = tf < best
        best[hit], sid[hit] = tf[hit], 0
        if scene.indoor:
            L = np.float32(scene.room)
            tx = np.where(dx > 0, (L - ox) / dx, (-L - ox) / dx)
            ty = np.where(dy > 0, (L - oy) / dy, (-L - oy) / dy)
            tw = np.minimum(tx, ty)
            zw = oz + tw * dz
            hit = (tw < best) & (zw < scene.wall_height) & (tw > 0)
            best = np.where(hit, tw, best)
            sid = np.where(hit, np.where(tx < ty, 1, 2), sid).astype(np.int16)
        poses = [scene.object_pose(k, times) for k in range(scene.num_objects)]
        nb = len(scene.box_center)
        cs_list, sn_list = [], []
        for k, (centre, yaw) in enumerate(poses):
            c = centre.astype(np.float32)
            if k < nb:
                cs, sn = np.cos(yaw).astype(np.float32)[:, None], np.sin(yaw).astype(np.float32)[:, None]
                cs_list.append(cs), sn_list.append(sn)
                rx, ry, rz = ox - c[:, 0:1], oy - c[:, 1:2], oz - c[:, 2:3]
                olx, oly = cs * rx + sn * ry, -sn * rx + cs * ry
                dlx, dly = cs * dx + sn * dy, -sn * dx + cs * dy
                tnear = np.full((nf, npx), -inf, np.float32)
                tfar = np.full((nf, npx), inf, np.float32)
                for ol, dl, hh in ((olx, dlx, scene.box_half[k, 0]), (oly, dly, scene.box_half[k, 1]),
                                   (rz, dz, scene.box_half[k, 2])):
                    inv = np.float32(1.0) / dl
                    t1 = (-np.float32(hh) - ol) * inv
                    t2 = (np.float32(hh) - ol) * inv
                    np.maximum(tnear, np.minimum(t1, t2), out=tnear)
                    np.minimum(tfar, np.maximum(t1, t2), out=tfar)
                hit = (tnear <= tfar) & (tnear > _EPS) & (tnear < best)
            else:
                r = np.float32(scene.sph_radius[k - nb])
                rx, ry, rz = ox - c[:, 0:1], oy - c[:, 1:2], oz - c[:, 2:3]
                b = rx * dx + ry * dy + rz * dz
                disc = b * b - (rx * rx + ry * ry + rz * rz - r * r)
                tnear = -b - np.sqrt(np.maximum(disc, 0))
                hit = (disc > 0) & (tnear > _EPS) & (tnear < best)
            best = np.where(hit, tnear, best)
            sid = np.where(hit, np.int16(3 + k), sid)

    # ---- shading: albedo from textures, Lambert + ambient, distance fog, sky gradient
    sid_f, best_f = sid.ravel(), best.ravel()
    frame = np.repeat(np.arange(nf), npx)
    dfx, dfy, dfz = dx.ravel(), dy.ravel(), dz.ravel()
    color = np.empty((nf * npx, 3), np.float32)
    sky = sid_f < 0
    top, horizon = scene.sky_top.astype(np.float32), scene.sky_horizon.astype(np.float32)
    up = np.sqrt(np.clip(dfz[sky], 0, 1))[:, None]
    color[sky] = horizon + (top - horizon) * up
    m = ~sky
    idx = np.nonzero(m)[0]
    s = sid_f[idx]
    fr = frame[idx]
    tt = best_f[idx]
    px = o[fr, 0] + tt * dfx[idx]
    py = o[fr, 1] + tt * dfy[idx]
    pz = o[fr, 2] + tt * dfz[idx]
    u = np.empty_like(tt)
    v = np.empty_like(tt)
    nx, ny, nz = np.zeros_like(tt), np.zeros_like(tt), np.zeros_like(tt)
    tex = np.minimum(s, 1).astype(np.int32)  # floor 0, walls 1, objects below
    sel = s == 0
    u[sel], v[sel], nz[sel] = px[sel] / scene.tile[0], py[sel] / scene.tile[0], 1.0
    sel = s == 1
    u[sel], v[sel], nx[sel] = py[sel] / scene.tile[1], pz[sel] / scene.tile[1], -np.sign(px[sel])
    sel = s == 2
    u[sel], v[sel], ny[sel] = px[sel] / scene.tile[1] + 0.37, pz[sel] / scene.tile[1], -np.sign(py[sel])
    nb = len(scene.box_center)
    for k, (centre, yaw) in enumerate(poses):
        sel = np.nonzero(s == 3 + k)[0]
        if len(sel) == 0:
            continue
        tex[sel] = 2 + k
        fk = fr[sel]
        c = centre[fk].astype(np.float32)
        rx, ry, rz = px[sel] - c[:, 0], py[sel] - c[:, 1], pz[sel] - c[:, 2]
        tile = scene.tile[2 + k]
        if k < nb:
            cs, sn = np.cos(yaw[fk]).astype(np.float32), np.sin(yaw[fk]).astype(np.float32)
            lx, ly = cs * rx + sn * ry, -sn * rx + cs * ry
            half = scene.box_half[k].astype(np.float32)
            rel = np.stack([np.abs(lx) / half[0], np.abs(ly) / half[1], np.abs(rz) / half[2]], -1)
            axis = rel.argmax(-1)
            nlx = np.where(axis == 0, np.sign(lx), 0)
            nly = np.where(axis == 1, np.sign(ly), 0)
            nlz = np.where(axis == 2, np.sign(rz), 0)
            nx[sel], ny[sel], nz[sel] = cs * nlx - sn * nly, sn * nlx + cs * nly, nlz
            a = np.where(axis == 0, ly, lx)
            b = np.where(axis == 2, ly, rz)
            u[sel], v[sel] = a / tile + 0.5 * axis, b / tile
        else:
            r = np.float32(scene.sph_radius[k - nb])
            nx[sel], ny[sel], nz[sel] = rx / r, ry / r, rz / r
            az = np.arctan2(ry, rx) - yaw[fk].astype(np.float32)
            u[sel] = az / (2 * np.pi) * tile
            v[sel] = np.arccos(np.clip(rz / r, -1, 1)) / np.pi * tile
    albedo = _sample_textures(upsample_textures(scene.textures), tex, u, v)
    sun = scene.sun.astype(np.float32)
    lam = np.maximum(nx * sun[0] + ny * sun[1] + nz * sun[2], 0)
    shade = (np.float32(scene.ambient) + np.float32(1 - scene.ambient) * lam)[:, None]
    fog = (1 - np.exp(tt * np.float32(-1.0 / scene.fog_distance)))[:, None]
    up = np.clip(dfz[idx], 0, 1)[:, None]
    fog_col = horizon + (top - horizon) * up
    color[idx] = albedo * shade + (fog_col - albedo * shade) * fog
    img = np.clip(color * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return img.reshape(nf, height, width, 3)


# ---------------------------------------------------------------------------------------------- clips


def clip_rng(seed: int, index: int, stream: int = 0) -> np.random.Generator:
    """Generator for clip ``index``; ``stream`` separates corpora (0 training, 1 benchmark, 2 probe)."""
    return np.random.default_rng([int(seed), int(index), int(stream)])


def make_clip(index: int, seed: int = 0, resolution: int = 64, seconds: float = 5.0, fps: float = DEFAULT_FPS,
              dynamic: bool = False, families: tuple[str, ...] = TRAIN_FAMILIES, stream: int = 0,
              trajectory: str | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """Render one clip: uint8 frames (N, res, res, 3) and its metadata with exact per-frame cameras.

    ``meta["cameras"]`` holds lists ``R`` (N,3,3) camera-to-world, ``t`` (N,3) metres, ``f`` (N,) normalised.
    """
    rng = clip_rng(seed, index, stream)
    n = int(round(seconds * fps))
    if n < 1:
        raise ValueError(f"a clip needs at least one frame: seconds={seconds}, fps={fps}")
    times = np.arange(n) / fps
    scene = random_scene(rng, families, dynamic)
    kind, R, t, f = random_trajectory(rng, scene, times, trajectory)
    frames = render(scene, R, t, f, times, resolution, resolution)
    meta = {
        "source": f"synth:seed={seed},index={index},stream={stream}",
        "fps": float(fps), "num_frames": n, "duration": n / fps, "width": resolution, "height": resolution,
        "trajectory": kind, "dynamic": bool(dynamic), "indoor": scene.indoor,
        "texture_families": list(scene.texture_families),
        "cameras": {"R": np.round(R, 7).tolist(), "t": np.round(t, 7).tolist(), "f": np.round(f, 7).tolist()},
    }
    return frames, meta


def clip_is_dynamic(seed: int, index: int, share: float) -> bool:
    """Whether training clip ``index`` has moving objects (a fixed share, decided independently of the scene)."""
    return bool(np.random.default_rng([int(seed), int(index), 99]).random() < share)


def _synth_shard(job: tuple[int, int, int, dict[str, Any], str]) -> tuple[int, int]:
    shard_index, start, stop, cfg, shard_dir = job
    out = shard_path(shard_dir, shard_index)
    if out.exists():
        return shard_index, 0
    samples = []
    for i in range(start, stop):
        frames, meta = make_clip(i, cfg["seed"], cfg["resolution"], cfg["seconds"], cfg["fps"],
                                 dynamic=clip_is_dynamic(cfg["seed"], i, cfg["dynamic_share"]))
        key = f"synth{i:07d}"
        meta["key"] = key
        samples.append((key, encode_mp4(frames, cfg["fps"], crf=SYNTH_CRF), meta))
    write_shard(out, samples)
    return shard_index, stop - start


def _add_fractions(manifest_path: Path, shard_dir: Path, fractions: tuple[float, ...], seed: int) -> None:
    """Rebuild the manifest of an existing corpus when it lacks some of `fractions` (e.g. a grid asking for 1/4
    of a corpus generated for 1/8): its fractions plus the new ones, with the same seed, so the shard order and the
    fractions it already had stay as they were."""
    manifest = Manifest.load(manifest_path)
    new = [f for f in fractions if not manifest.has(f)]
    if new:
        build_manifest(shard_dir, fractions=tuple(sorted([*manifest.fractions, *new])), seed=seed).save(manifest_path)


def synthesize(out: str | os.PathLike, clips: int = 2000, resolution: int = 64, seconds: float = 5.0,
               dynamic_share: float = 0.3, seed: int = 0, workers: int = 2, shard_size: int = 20,
               fractions: tuple[float, ...] = (0.01, 0.1, 1.0), progress: bool = True,
               force: bool = False) -> dict[str, Any]:
    """Write the synthetic training corpus to ``out/shards/shard-*.tar`` and ``out/manifest.json``.

    Cached: the settings are recorded in ``out/synth.json``; a re-run with the same settings after a
    complete run does nothing, an interrupted run resumes at the missing shards, different settings
    raise ``ValueError`` unless ``force`` (which deletes the old shards first). Returns a summary dict
    (``"cached"``, ``"seconds"``, ...).
    """
    if clips < 1 or resolution < 2 or resolution % 2 or not 0 <= dynamic_share <= 1 or shard_size < 1:
        raise ValueError(f"bad synth settings: clips={clips} (>=1), resolution={resolution} (even, >=2), "
                         f"dynamic_share={dynamic_share} (in [0,1]), shard_size={shard_size} (>=1)")
    out = Path(out)
    cfg = {"version": 2, "crf": SYNTH_CRF, "clips": int(clips), "resolution": int(resolution),
           "seconds": float(seconds), "fps": DEFAULT_FPS, "dynamic_share": float(dynamic_share), "seed": int(seed),
           "shard_size": int(shard_size), "families": list(TRAIN_FAMILIES)}
    record = out / "synth.json"
    shard_dir = out / "shards"
    n_shards = (clips + shard_size - 1) // shard_size
    if record.exists():
        previous = json.loads(record.read_text())
        if previous.get("config") != cfg and force:
            for stale in shard_dir.glob("shard-*.tar*"):
                stale.unlink()
        elif previous.get("config") != cfg:
            before = previous.get("config") or {}
            changed = ", ".join(f"{k}: {before.get(k, '(none)')} -> {cfg.get(k, '(none)')}"
                                for k in sorted(set(before) | set(cfg)) if before.get(k) != cfg.get(k))
            raise ValueError(f"{out} already holds a synthetic corpus made with different settings ({changed}; "
                             f"version 2 = lossless clips); use another --out, or --force to replace it")
        elif previous.get("complete") and all(shard_path(shard_dir, i).exists() for i in range(n_shards)) \
                and (out / "manifest.json").exists():
            _add_fractions(out / "manifest.json", shard_dir, fractions, seed)
            return {"cached": True, "out": str(out), "clips": clips, "shards": n_shards, "seconds": 0.0}
    out.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps({"config": cfg, "complete": False}, indent=1))
    jobs = [(i, i * shard_size, min(clips, (i + 1) * shard_size), cfg, str(shard_dir)) for i in range(n_shards)]
    todo = [j for j in jobs if not shard_path(shard_dir, j[0]).exists()]
    t0 = time.perf_counter()
    bar = tqdm(total=clips, initial=clips - sum(j[2] - j[1] for j in todo), unit="clip", desc="synth",
               disable=not progress)
    if workers <= 1 or len(todo) <= 1:
        for job in todo:
            bar.update(_synth_shard(job)[1])
    else:
        with mp.get_context("fork").Pool(workers) as pool:
            for _, n in pool.imap_unordered(_synth_shard, todo):
                bar.update(n)
    bar.close()
    elapsed = time.perf_counter() - t0
    manifest = build_manifest(shard_dir, fractions=fractions, seed=seed)
    manifest.save(out / "manifest.json")
    record.write_text(json.dumps({"config": cfg, "complete": True, "render_seconds": elapsed}, indent=1))
    return {"cached": False, "out": str(out), "clips": clips, "shards": n_shards, "seconds": elapsed,
            "rendered": sum(j[2] - j[1] for j in todo)}
