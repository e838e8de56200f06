"""MPII-style still images: one person each, random viewpoint, scale, position and background.

A chunk of images shares one random room (rendered from a few random viewpoints and reused with
flips and photometric jitter) and a few random bodies, each posed from its own motion clip. Each
image gets its own camera: a random azimuth, elevation, roll and focal length, a distance that
gives the wanted person size, and a principal point that puts the person where wanted (now and
then partly outside the image). The person is rendered in that camera's frame, all images of a
chunk at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from epipose import skeleton
from epipose.camera import Camera, look_at
from epipose.synth.config import MpiiParams
from epipose.synth.motion import ACTIONS, FREESTYLE, generate_motion, random_body
from epipose.synth.render import (LIGHT, Projected, draw_person, person_primitives, random_scene,
                                       render_background, silhouettes, to_projected)


@dataclass(frozen=True)
class Still:
    image: np.ndarray          # (S, S, 3) BGR
    joints: np.ndarray         # (16, 2) pixels, MPII order (may lie outside the image)
    mask: np.ndarray | None = None  # (S, S) bool person pixels, with ``render_stills(with_masks=True)``
    head_box: np.ndarray | None = None  # (2, 2) [[x0, y0], [x1, y1]] px: the drawn head and hair


HEAD_PARTS = ("head", "hair")


def background_views(rng: np.random.Generator, size: int, n_views: int, n_objects: tuple[int, int]) -> list[np.ndarray]:
    """``n_views`` renders of one random room from random standing/sitting eye points."""
    scene = random_scene(rng, clear_radius=300.0, n_objects=n_objects, room_half=(3500.0, 7000.0))
    views = []
    for _ in range(n_views):
        centre = np.array([rng.uniform(-0.7, 0.7) * scene.half_x, rng.uniform(-0.7, 0.7) * scene.half_y,
                           rng.uniform(400, 2500)])
        yaw, pitch = rng.uniform(-np.pi, np.pi), np.radians(rng.uniform(-35, 10))
        target = centre + np.array([np.cos(yaw) * np.cos(pitch), np.sin(yaw) * np.cos(pitch), np.sin(pitch)])
        R, t = look_at(centre, target)
        f = size * rng.uniform(0.6, 1.4)
        K = np.array([[f, 0, (size - 1) / 2], [0, f, (size - 1) / 2], [0, 0, 1.0]])
        views.append(render_background(scene, Camera(K, np.zeros(5), R, t), size, size).image)
    return views


def _jitter_background(rng: np.random.Generator, view: np.ndarray) -> np.ndarray:
    """A flipped / zoomed / re-lit copy of a background view."""
    size = view.shape[0]
    zoom = rng.uniform(0.7, 1.0)
    w = int(round(size * zoom))
    x0, y0 = rng.integers(0, size - w + 1, 2)
    img = view[y0:y0 + w, x0:x0 + w]
    if w != size:
        img = cv2.resize(img, (size, size), interpolation=cv2.INTER_LINEAR)
    if rng.uniform() < 0.5:
        img = img[:, ::-1]
    return cv2.convertScaleAbs(img, alpha=rng.uniform(0.7, 1.25), beta=rng.uniform(-30, 30))


def _rotation_about_z(angle: np.ndarray) -> np.ndarray:
    c, s, o, z = np.cos(angle), np.sin(angle), np.ones_like(angle), np.zeros_like(angle)
    return np.stack([np.stack([c, -s, z], -1), np.stack([s, c, z], -1), np.stack([z, z, o], -1)], -2)


def still_cameras(rng: np.random.Generator, poses: np.ndarray, params: MpiiParams) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-image camera rotations (n, 3, 3), centres (n, 3) and wanted person sizes (n,) in pixels.

    The camera looks at the centre of each pose's joint box from a random azimuth and elevation,
    rolled a little, from a distance that suits a random focal length; ``place_people`` then sets
    the focal length and principal point that give the wanted size and place.
    """
    n = poses.shape[0]
    mpii = skeleton.h36m32_to_mpii(poses)
    centre = 0.5 * (mpii.min(axis=1) + mpii.max(axis=1))
    f_guess = params.image_size * rng.uniform(*params.focal_factor, size=n)
    h_px = params.image_size * rng.uniform(*params.person_height, size=n)
    extent = np.linalg.norm(mpii.max(axis=1) - mpii.min(axis=1), axis=1)
    distance = np.maximum(f_guess * extent / h_px, 1.5 * extent)
    az = rng.uniform(-np.pi, np.pi, n)
    el = np.radians(rng.uniform(*params.elevation_deg, size=n))
    eye = centre + distance[:, None] * np.stack([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)], 1)
    R = np.stack([look_at(e, c)[0] for e, c in zip(eye, centre)])
    roll = np.radians(rng.uniform(-params.roll_deg, params.roll_deg, n))
    R = _rotation_about_z(roll) @ R
    return R, eye, h_px


def place_people(rng: np.random.Generator, joints_n: np.ndarray, h_px: np.ndarray, params: MpiiParams) -> tuple[np.ndarray, np.ndarray]:
    """Focal lengths (n,) and principal points (n, 2) that size and place each person.

    ``joints_n``: (n, 16, 2) normalised image coordinates of the joints.
    """
    size = params.image_size
    lo, hi = joints_n.min(axis=1), joints_n.max(axis=1)
    f = h_px / np.maximum((hi - lo).max(axis=1), 1e-6)
    half = 0.5 * (hi - lo) * f[:, None]                                     # joint box half size, px
    mid = 0.5 * (lo + hi)
    target = size / 2 + rng.normal(0, params.centre_jitter * size, (len(f), 2))
    room = np.maximum(size / 2 - half - 2, 0)                               # keeps the box inside
    target = np.clip(target, size / 2 - room, size / 2 + room)
    # Truncated people: the box centre somewhere between half-way out and the image border.
    truncated = rng.uniform(size=len(f)) < params.truncated_fraction
    direction = rng.normal(size=(len(f), 2))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    edge = size / 2 + direction * size / 2 * rng.uniform(0.55, 1.0, (len(f), 1))
    target = np.where(truncated[:, None], edge, target)
    return f, target - f[:, None] * mid


def clip_action(rng: np.random.Generator, freestyle_share: float) -> str:
    """One of the nine actions, or Freestyle with probability ``freestyle_share`` (no draw at 0: the
    stills of share 0 are those rendered before the share existed)."""
    action = str(rng.choice(ACTIONS))
    return FREESTYLE if freestyle_share > 0 and rng.uniform() < freestyle_share else action


def render_stills(rng: np.random.Generator, count: int, params: MpiiParams, n_objects: tuple[int, int],
                  with_masks: bool = False) -> list[Still]:
    """``count`` MPII-style images (see the module doc), optionally with person masks."""
    size = params.image_size
    views = background_views(rng, size, params.backgrounds_per_chunk, n_objects)
    bodies = [random_body(rng) for _ in range(params.bodies_per_chunk)]
    clip_frames = 60
    clips = [generate_motion(clip_action(rng, params.freestyle_share), clip_frames, 5.0, b, rng) for b in bodies]
    which_body = np.arange(count) % len(bodies)
    poses = np.stack([clips[b][rng.integers(clip_frames)] for b in which_body])
    R, eye, h_px = still_cameras(rng, poses, params)
    cam_poses = np.einsum("nij,nkj->nki", R, poses - eye[:, None])           # camera frames
    mpii_n = skeleton.h36m32_to_mpii(cam_poses)
    mpii_n = mpii_n[..., :2] / mpii_n[..., 2:]
    f, principal = place_people(rng, mpii_n, h_px, params)
    backgrounds = [_jitter_background(rng, views[int(rng.integers(len(views)))]) for _ in range(count)]
    stills: list[Still] = [Still(np.empty(0), np.empty(0))] * count
    light = (R @ LIGHT)[:, None, :]
    for b, body in enumerate(bodies):
        idx = np.flatnonzero(which_body == b)
        if idx.size == 0:
            continue
        prims = person_primitives(cam_poses[idx], body)
        pts = silhouettes(prims, np.zeros(3), light[idx])
        uv = pts[..., :2] / pts[..., 2:] * f[idx, None, None, None, None] + principal[idx, None, None, None, :]
        proj: Projected = to_projected(prims, uv, 0.5 * (prims.a + prims.b)[..., 2])
        head_uv = uv[:, [prims.names.index(name) for name in HEAD_PARTS]].reshape(len(idx), -1, 2)
        head_boxes = np.stack([head_uv.min(axis=1), head_uv.max(axis=1)], axis=1)   # (k, 2, 2)
        for k, i in enumerate(idx):
            image = backgrounds[i].copy()
            draw_person(image, proj, k)
            mask = None
            if with_masks:
                mask = np.zeros((size, size), np.uint8)
                draw_person(mask, proj, k, flat_colours=np.full((len(prims.names), 1), 255))
                mask = mask > 0
            stills[i] = Still(image, mpii_n[i] * f[i] + principal[i], mask, head_boxes[k])
    return stills

