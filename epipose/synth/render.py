"""A fast, distortion-aware renderer of a person in a furnished room.

The static scene (a textured room with a few pieces of furniture) is ray-cast once per camera,
per distorted pixel, so perspective and the lens distortion of the camera are exact; it also
yields a depth map used to let furniture occlude the person. The person is a set of shaded 3D
capsules (limbs, torso, head with face and hair, hands, feet) whose silhouettes are sampled in 3D,
projected through ``Camera.project`` (lens distortion included) for all frames at once, and drawn
back to front (painter's algorithm) with anti-aliased ``cv2.fillPoly``. Shading: each capsule is
drawn as a few nested layers, darker rim to lit core, shifted towards the light.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import cv2
import numpy as np

from epipose.camera import Camera
from epipose.synth.motion import Body

_SHIFT = 4                     # fixed-point bits of the polygon vertices given to OpenCV
_CAP_POINTS = 8                # outline points per capsule end
LIGHT = np.array([0.35, -0.45, 1.0]) / np.linalg.norm([0.35, -0.45, 1.0])  # towards the light, world


# --- the static scene -------------------------------------------------------------------------
@dataclass(frozen=True)
class Box:
    """A box standing on the floor: centre (x, y), half sizes (hx, hy), height, yaw."""

    x: float
    y: float
    hx: float
    hy: float
    height: float
    yaw: float
    colour: tuple[int, int, int]
    z0: float = 0.0            # bottom height (> 0 for a table top or a seat)


@dataclass(frozen=True)
class Cylinder:
    """A vertical cylinder (pillar, barrel, bin) standing on the floor."""

    x: float
    y: float
    radius: float
    height: float
    colour: tuple[int, int, int]


@dataclass(frozen=True, eq=False)
class Scene:
    """A room (x in [-half_x, half_x], y likewise, z in [0, height]) with textures and furniture."""

    half_x: float
    half_y: float
    height: float
    floor_texture: np.ndarray          # periodic tile, covering floor_period mm square
    floor_period: float
    wall_textures: tuple[np.ndarray, ...]  # 4 walls: x = +half_x, y = +half_y, x = -half_x, y = -half_y
    ceiling_colour: tuple[int, int, int]
    objects: tuple[Box | Cylinder, ...] = field(default_factory=tuple)
    brightness: float = 1.0


def _value_noise(rng: np.random.Generator, size: int, cells: int, octaves: int = 3) -> np.ndarray:
    """Smooth periodic noise in [0, 1], (size, size) float32."""
    out = np.zeros((size, size), np.float32)
    amp, total = 1.0, 0.0
    for o in range(octaves):
        n = cells * 2 ** o
        grid = rng.uniform(0, 1, (n, n)).astype(np.float32)
        tiled = np.tile(grid, (3, 3))
        up = cv2.resize(tiled, (3 * size, 3 * size), interpolation=cv2.INTER_CUBIC)[size:2 * size, size:2 * size]
        out += amp * up
        total += amp
        amp *= 0.5
    return np.clip(out / total, 0, 1)


def _tint(base: np.ndarray, shade: np.ndarray) -> np.ndarray:
    """Colour ``base`` (3,) modulated by ``shade`` (h, w) → uint8 image."""
    return np.clip(shade[..., None] * base[None, None, :], 0, 255).astype(np.uint8)


def _random_colour(rng: np.random.Generator, sat: tuple[float, float], val: tuple[float, float]) -> np.ndarray:
    hsv = np.array([[[rng.uniform(0, 180), rng.uniform(*sat), rng.uniform(*val)]]], np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0].astype(np.float32)


def _floor_texture(rng: np.random.Generator, size: int = 256) -> tuple[np.ndarray, float]:
    """A periodic floor tile and the mm it spans: tiles, planks, carpet or concrete."""
    kind = rng.integers(4)
    base = _random_colour(rng, (10, 90), (90, 200))
    noise = _value_noise(rng, size, 4)
    if kind == 0:  # square tiles with grout and per-tile tint
        n = int(rng.integers(2, 5))
        period = n * rng.uniform(400, 700)
        idx = (np.arange(size) * n // size)
        tint = rng.uniform(0.85, 1.1, (n, n))[idx[:, None], idx[None, :]]
        shade = tint * (0.9 + 0.15 * noise)
        grout = ((np.arange(size) % (size // n)) < 2)
        shade[grout, :] = 0.55
        shade[:, grout] = 0.55
    elif kind == 1:  # wooden planks along x
        n = int(rng.integers(4, 9))
        period = n * rng.uniform(120, 220)
        rows = np.arange(size) * n // size
        offs = rng.uniform(0, size, n).astype(int)
        cols = (np.arange(size)[None, :] + offs[rows][:, None]) % size
        tint = rng.uniform(0.8, 1.15, n)[rows][:, None] * np.ones((1, size))
        grain = 0.06 * np.sin(np.arange(size)[None, :] * rng.uniform(0.2, 0.5) + 3 * noise)
        shade = tint + grain + 0.1 * (noise - 0.5)
        seam = (np.arange(size) % (size // n)) < 2
        shade[seam, :] *= 0.6
        shade[(cols % size) < 2] *= 0.7
        base = np.array([rng.uniform(40, 90), rng.uniform(80, 130), rng.uniform(120, 190)], np.float32)
    elif kind == 2:  # carpet
        period = rng.uniform(1500, 3000)
        shade = 0.8 + 0.4 * _value_noise(rng, size, 16, 2)
    else:  # concrete
        period = rng.uniform(2000, 4000)
        shade = 0.75 + 0.45 * noise
        base = np.full(3, rng.uniform(110, 170), np.float32) * rng.uniform(0.9, 1.1, 3).astype(np.float32)
    return _tint(base, shade), float(period)


def _wall_texture(rng: np.random.Generator, length: float, height: float, mm_per_px: float = 25.0) -> np.ndarray:
    """A whole wall (length × height mm): paint, panels, a skirting board, posters and doors."""
    w, h = max(int(length / mm_per_px), 8), max(int(height / mm_per_px), 8)
    base = _random_colour(rng, (0, 80), (120, 230))
    noise = cv2.resize(_value_noise(rng, 128, 4), (w, h))
    shade = 0.88 + 0.15 * noise
    if rng.uniform() < 0.6:  # vertical panels
        step = int(rng.uniform(600, 1500) / mm_per_px)
        shade[:, ::max(step, 2)] *= 0.8
    img = _tint(base, shade)
    skirting = max(int(rng.uniform(80, 160) / mm_per_px), 1)
    img[h - skirting:] = (img[h - skirting:] * rng.uniform(0.4, 0.7)).astype(np.uint8)
    for _ in range(int(rng.integers(2, 7))):  # posters, doors, windows, shelves
        pw, ph = int(rng.uniform(400, 1500) / mm_per_px), int(rng.uniform(400, 2200) / mm_per_px)
        x0 = int(rng.uniform(0, max(w - pw, 1)))
        y0 = int(rng.uniform(0.1 * h, max(h - ph - skirting, 0.1 * h + 1)))
        colour = _random_colour(rng, (30, 255), (40, 240))
        cv2.rectangle(img, (x0, y0), (x0 + pw, y0 + ph), colour.tolist(), -1)
        cv2.rectangle(img, (x0, y0), (x0 + pw, y0 + ph), (colour * 0.5).tolist(), 2)
        if rng.uniform() < 0.5:  # some structure inside: stripes or a cross
            for k in range(1, int(rng.integers(2, 5))):
                yy = y0 + k * ph // 4
                cv2.line(img, (x0, yy), (x0 + pw, yy), (colour * 0.7).tolist(), 1)
    return img


def random_scene(rng: np.random.Generator, clear_radius: float = 2100.0, n_objects: tuple[int, int] = (2, 5),
                 camera_azimuths: tuple[float, ...] = (), room_half: tuple[float, float] = (6000.0, 8000.0)) -> Scene:
    """A random room with furniture outside ``clear_radius`` of the centre (where the person moves).

    Furniture keeps 20° away from ``camera_azimuths`` (radians) so that no camera has its view of
    the capture space blocked.
    """
    half_x, half_y = rng.uniform(*room_half), rng.uniform(*room_half)
    height = rng.uniform(3500, 5000)
    floor, period = _floor_texture(rng)
    walls = tuple(_wall_texture(rng, 2 * (half_y if k % 2 == 0 else half_x), height) for k in range(4))
    objects: list[Box | Cylinder] = []
    n = int(rng.integers(n_objects[0], n_objects[1] + 1))
    tries = 0
    while len(objects) < n and tries < 50:
        tries += 1
        az = rng.uniform(-np.pi, np.pi)
        if any(abs(np.angle(np.exp(1j * (az - a)))) < np.radians(20) for a in camera_azimuths):
            continue
        kind = rng.integers(4)
        size = {0: 350.0, 1: 300.0, 2: 450.0, 3: 250.0}[int(kind)]
        r = clear_radius + size + rng.uniform(0, 1200)
        x, y = r * np.cos(az), r * np.sin(az)
        colour = tuple(int(c) for c in _random_colour(rng, (20, 200), (60, 220)))
        yaw = rng.uniform(0, np.pi)
        if kind == 0:    # a crate / cardboard box
            objects.append(Box(x, y, rng.uniform(200, 350), rng.uniform(200, 350), rng.uniform(300, 900), yaw, colour))
        elif kind == 1:  # a pillar or barrel
            objects.append(Cylinder(x, y, rng.uniform(150, 300), rng.uniform(600, height), colour))
        elif kind == 2:  # a table: top and four legs
            hx, hy, top = rng.uniform(300, 450), rng.uniform(250, 400), rng.uniform(700, 780)
            objects.append(Box(x, y, hx, hy, 40.0, yaw, colour, z0=top - 40.0))
            c, s = np.cos(yaw), np.sin(yaw)
            for sx, sy in ((1, 1), (1, -1), (-1, 1), (-1, -1)):
                lx, ly = sx * (hx - 40), sy * (hy - 40)
                objects.append(Box(x + c * lx - s * ly, y + s * lx + c * ly, 25.0, 25.0, top - 40.0, yaw, colour))
        else:            # a chair: seat, back, legs
            hs = rng.uniform(200, 250)
            seat = rng.uniform(420, 480)
            objects.append(Box(x, y, hs, hs, 50.0, yaw, colour, z0=seat - 50.0))
            c, s = np.cos(yaw), np.sin(yaw)
            objects.append(Box(x - c * (hs - 20), y - s * (hs - 20), 20.0, hs, rng.uniform(400, 500), yaw, colour, z0=seat))
            for sx, sy in ((1, 1), (1, -1), (-1, 1), (-1, -1)):
                lx, ly = sx * (hs - 25), sy * (hs - 25)
                objects.append(Box(x + c * lx - s * ly, y + s * lx + c * ly, 20.0, 20.0, seat - 50.0, yaw, colour))
    ceiling = tuple(int(c) for c in rng.uniform(170, 235, 3))
    return Scene(half_x, half_y, height, floor, period, walls, ceiling, tuple(objects), rng.uniform(0.8, 1.15))


@dataclass(frozen=True)
class Background:
    """A rendered static scene for one camera: image, depth (camera z, mm) and furniture pixels."""

    image: np.ndarray                  # (H, W, 3) uint8
    occluder_index: np.ndarray         # flat pixel indices of furniture, sorted by depth
    occluder_depth: np.ndarray         # their depths (ascending)


_RAY_CACHE: dict[bytes, np.ndarray] = {}


def _normalized_pixels(camera: Camera, width: int, height: int) -> np.ndarray:
    """(H, W, 2) undistorted normalised coordinates of every pixel centre (cached per intrinsics)."""
    key = camera.K.tobytes() + camera.dist.tobytes() + np.array([width, height]).tobytes()
    if key not in _RAY_CACHE:
        if len(_RAY_CACHE) > 16:
            _RAY_CACHE.clear()
        u, v = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
        _RAY_CACHE[key] = camera.undistort_points(np.stack([u, v], axis=-1))
    return _RAY_CACHE[key]


def pixel_rays(camera: Camera, width: int, height: int) -> np.ndarray:
    """(H, W, 3) world directions (camera z component 1) of every distorted pixel centre."""
    xn = _normalized_pixels(camera, width, height)
    dc = np.concatenate([xn, np.ones(xn.shape[:-1] + (1,))], axis=-1)
    return dc @ camera.R  # rows: R^T d


def _object_corners(obj: "Box | Cylinder") -> np.ndarray:
    """(8, 3) corners of a bounding box of ``obj``."""
    if isinstance(obj, Box):
        c, s = np.cos(obj.yaw), np.sin(obj.yaw)
        local = np.array([[sx * obj.hx, sy * obj.hy] for sx in (-1, 1) for sy in (-1, 1)])
        xy = local @ np.array([[c, s], [-s, c]]) + (obj.x, obj.y)
        z0, z1 = obj.z0, obj.z0 + obj.height
    else:
        xy = np.array([[obj.x + sx * obj.radius, obj.y + sy * obj.radius] for sx in (-1, 1) for sy in (-1, 1)])
        z0, z1 = 0.0, obj.height
    return np.array([[x, y, z] for x, y in xy for z in (z0, z1)])


def _screen_box(camera: Camera, corners: np.ndarray, width: int, height: int) -> tuple[slice, slice] | None:
    """Pixel rows/columns that may show an object with these corners (None: not in view)."""
    if (camera.world_to_camera(corners)[:, 2] <= 1.0).any():
        return slice(0, height), slice(0, width)
    uv = camera.project(corners)
    lo, hi = uv.min(axis=0), uv.max(axis=0)
    pad = 0.05 * (hi - lo) + 3
    x0, y0 = np.floor(lo - pad).astype(int)
    x1, y1 = np.ceil(hi + pad).astype(int)
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
    if x1 <= x0 or y1 <= y0:
        return None
    return slice(y0, y1), slice(x0, x1)


def _box_hit(o: np.ndarray, d: np.ndarray, box: Box) -> tuple[np.ndarray, np.ndarray]:
    """Ray parameter (inf where missed) and world normal of each ray's entry into ``box``."""
    c, s = np.cos(box.yaw), np.sin(box.yaw)
    rot = np.array([[c, s, 0.0], [-s, c, 0.0], [0.0, 0.0, 1.0]])  # world → box
    centre = np.array([box.x, box.y, box.z0 + box.height / 2])
    half = np.array([box.hx, box.hy, box.height / 2])
    ol = (o - centre) @ rot.T
    dl = d @ rot.T
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / np.where(np.abs(dl) < 1e-12, 1e-12, dl)
        t1, t2 = (-half - ol) * inv, (half - ol) * inv
    tn, tf = np.minimum(t1, t2), np.maximum(t1, t2)
    t_near, t_far = tn.max(axis=-1), tf.min(axis=-1)
    hit = (t_far >= t_near) & (t_near > 0)
    axis = tn.argmax(axis=-1)
    normal_l = np.zeros(d.shape)
    np.put_along_axis(normal_l, axis[..., None], -np.sign(np.take_along_axis(dl, axis[..., None], -1)), -1)
    return np.where(hit, t_near, np.inf), normal_l @ rot


def _cylinder_hit(o: np.ndarray, d: np.ndarray, cyl: Cylinder) -> tuple[np.ndarray, np.ndarray]:
    oc = o[..., :2] - (cyl.x, cyl.y)
    a = (d[..., :2] ** 2).sum(-1)
    b = 2 * (oc * d[..., :2]).sum(-1)
    c0 = (oc ** 2).sum(-1) - cyl.radius ** 2
    disc = b * b - 4 * a * c0
    with np.errstate(invalid="ignore", divide="ignore"):
        t_side = (-b - np.sqrt(np.maximum(disc, 0))) / (2 * a)
        z = o[..., 2] + t_side * d[..., 2]
        side = (disc > 0) & (t_side > 0) & (z >= 0) & (z <= cyl.height)
        t_top = (cyl.height - o[..., 2]) / d[..., 2]
        p_top = o[..., :2] + t_top[..., None] * d[..., :2]
        top = (t_top > 0) & (((p_top - (cyl.x, cyl.y)) ** 2).sum(-1) <= cyl.radius ** 2) & (o[..., 2] > cyl.height)
    t = np.where(side, t_side, np.where(top, t_top, np.inf))
    p = o[..., :2] + t_side[..., None] * d[..., :2]
    n_side = np.concatenate([(p - (cyl.x, cyl.y)) / cyl.radius, np.zeros(d.shape[:-1] + (1,))], axis=-1)
    normal = np.where(side[..., None], n_side, np.array([0.0, 0.0, 1.0]))
    return t, normal


def _lookup(tex: np.ndarray, u: np.ndarray, v: np.ndarray, border: int) -> np.ndarray:
    """Bilinear texture samples at 1-D coordinate arrays → (n, 3) float32."""
    n = u.size
    if n == 0:
        return np.zeros((0, 3), np.float32)
    rows = -(-n // 1024)  # OpenCV maps must stay under 32767 columns: fold into rows of 1024
    maps = np.zeros((2, rows * 1024), np.float32)
    maps[0, :n], maps[1, :n] = u, v
    out = cv2.remap(tex, maps[0].reshape(rows, 1024), maps[1].reshape(rows, 1024), cv2.INTER_LINEAR,
                    borderMode=border)
    return out.reshape(-1, 3)[:n].astype(np.float32)


def render_background(scene: Scene, camera: Camera, width: int, height: int) -> Background:
    """Ray-cast the static scene through every (distorted) pixel of ``camera``."""
    d = pixel_rays(camera, width, height).reshape(-1, 3)
    o = camera.center
    # The room: each ray leaves the box through the nearest of its six planes.
    bounds_hi = np.array([scene.half_x, scene.half_y, scene.height])
    bounds_lo = np.array([-scene.half_x, -scene.half_y, 0.0])
    with np.errstate(divide="ignore", invalid="ignore"):
        t_planes = np.where(d > 0, (bounds_hi - o) / d, np.where(d < 0, (bounds_lo - o) / d, np.inf))
    axis = t_planes.argmin(axis=-1)
    depth = np.take_along_axis(t_planes, axis[:, None], -1)[:, 0]
    img = np.empty((d.shape[0], 3), np.float32)
    surface = axis + 3 * (np.take_along_axis(d, axis[:, None], -1)[:, 0] > 0)  # 0..2: -x,-y,floor; 3..5: +x,+y,ceiling
    # Floor: periodic texture, a little darker towards the walls.
    idx = np.flatnonzero(surface == 2)
    p = o + depth[idx, None] * d[idx]
    th, tw = scene.floor_texture.shape[:2]
    fade = 1.0 - 0.25 * np.clip(np.hypot(p[:, 0] / scene.half_x, p[:, 1] / scene.half_y) - 0.3, 0, 1)
    for obj in scene.objects:  # contact shadows around the furniture
        reach = obj.radius if isinstance(obj, Cylinder) else np.hypot(obj.hx, obj.hy)
        gap = np.hypot(p[:, 0] - obj.x, p[:, 1] - obj.y) - reach
        fade *= 0.65 + 0.35 * np.clip(gap / 250.0, 0, 1)
    floor_rgb = _lookup(scene.floor_texture, p[:, 0] / scene.floor_period * tw, p[:, 1] / scene.floor_period * th,
                        cv2.BORDER_WRAP)
    img[idx] = floor_rgb * fade[:, None]
    img[surface == 5] = scene.ceiling_colour
    # Walls, texture u running along each wall: x = +hx (along +y), y = +hy (along -x),
    # x = -hx (along -y), y = -hy (along +x).
    for k, tex in enumerate(scene.wall_textures):
        ax, sign = k % 2, (1.0 if k < 2 else -1.0)
        idx = np.flatnonzero(surface == ax + (3 if sign > 0 else 0))
        if idx.size == 0:
            continue
        p = o + depth[idx, None] * d[idx]
        along = p[:, 1 - ax] * (sign if ax == 0 else -sign)
        half_len = scene.half_y if ax == 0 else scene.half_x
        wh, ww = tex.shape[:2]
        shade = 0.8 + 0.2 * (1 - np.clip(np.abs(along) / half_len, 0, 1))
        rgb = _lookup(tex, (along + half_len) / (2 * half_len) * ww, (1.0 - p[:, 2] / scene.height) * wh,
                      cv2.BORDER_REFLECT)
        img[idx] = rgb * shade[:, None]
    # Furniture, shaded by its normal; only the pixels of its screen box are ray-cast.
    img = img.reshape(height, width, 3)
    depth = depth.reshape(height, width)
    d = d.reshape(height, width, 3)
    obj_mask = np.zeros((height, width), bool)
    for obj in scene.objects:
        corners = _object_corners(obj)
        window = _screen_box(camera, corners, width, height)
        if window is None:
            continue
        # Only rays that pass the object's bounding sphere are intersected with it.
        dw = d[window]
        centre = corners.mean(axis=0)
        radius = np.linalg.norm(corners - centre, axis=1).max()
        to_c = centre - o
        along = dw @ to_c
        miss2 = to_c @ to_c - along ** 2 / (dw * dw).sum(-1)
        cand = np.flatnonzero((miss2 <= radius ** 2).ravel())
        if cand.size == 0:
            continue
        rays = dw.reshape(-1, 3)[cand]
        t, normal = _box_hit(o, rays, obj) if isinstance(obj, Box) else _cylinder_hit(o, rays, obj)
        sub_depth = depth[window]                                   # views into the full arrays
        nearer = t < sub_depth.reshape(-1)[cand]
        if not nearer.any():
            continue
        rows, cols = np.unravel_index(cand[nearer], sub_depth.shape)
        lit = 0.5 + 0.5 * np.clip(normal[nearer] @ LIGHT, 0, 1)
        img[window][rows, cols] = np.asarray(obj.colour, np.float32) * lit[:, None]
        sub_depth[rows, cols] = t[nearer]
        obj_mask[window][rows, cols] = True
    image = np.clip(img * scene.brightness, 0, 255).astype(np.uint8)
    flat = np.flatnonzero(obj_mask)
    order = np.argsort(depth.ravel()[flat], kind="stable")
    return Background(image, flat[order], depth.ravel()[flat][order].astype(np.float32))


# --- the person -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Primitives:
    """Capsules for all frames: ends ``a``, ``b`` (n, P, 3), radii (P, 2), colours (P, 3) BGR."""

    a: np.ndarray
    b: np.ndarray
    radii: np.ndarray
    colours: np.ndarray
    names: tuple[str, ...]
    shaded: np.ndarray         # (P,) bool: draw nested shading layers (False: flat, e.g. eyes)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-9)


def body_frame(poses: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-frame torso axes from joints only: forward, left, up (n, 3) each."""
    left = _unit(poses[:, 17] - poses[:, 25])
    up = _unit(poses[:, 13] - poses[:, 0])
    fwd = _unit(np.cross(left, up))
    return fwd, _unit(np.cross(up, fwd)), up


def head_frame(poses: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Head centre and axes (forward, left, up) from the Neck/Nose and Head joints and the torso."""
    fwd_t, left_t, _ = body_frame(poses)
    up = _unit(poses[:, 15] - poses[:, 14])
    fwd = _unit(fwd_t - (fwd_t * up).sum(-1, keepdims=True) * up)
    left = np.cross(up, fwd)
    centre = poses[:, 14] + 0.45 * (poses[:, 15] - poses[:, 14])
    return centre, fwd, left, up


def person_primitives(poses: np.ndarray, body: Body) -> Primitives:
    """The capsules of ``body`` in every pose (n, 32, 3)."""
    P = poses
    names: list[str] = []
    ends_a: list[np.ndarray] = []
    ends_b: list[np.ndarray] = []
    radii: list[tuple[float, float]] = []
    colours: list[tuple[int, int, int]] = []
    shaded: list[bool] = []

    def add(name: str, a: np.ndarray, b: np.ndarray, ra: float, rb: float, colour, shade: bool = True) -> None:
        names.append(name)
        ends_a.append(a)
        ends_b.append(b)
        radii.append((ra, rb))
        colours.append(tuple(int(c) for c in colour))
        shaded.append(shade)

    fwd, left, up = body_frame(P)
    hw, hd = body.torso_half_width, body.torso_half_depth
    legs = body.trousers
    shins = body.trousers if body.long_trousers else body.skin
    forearm = body.shirt if body.long_sleeves else body.skin
    hip_mid = P[:, 0]
    thorax = P[:, 13]
    # Torso: a chest bar, a waist bar and a spine filler; shoulders as balls.
    chest = thorax - 0.22 * (thorax - hip_mid)
    add("chest", chest + (hw - hd) * left, chest - (hw - hd) * left, hd, hd, body.shirt)
    waist = hip_mid + 0.45 * (thorax - hip_mid)
    add("waist", waist + 0.75 * (hw - hd) * left, waist - 0.75 * (hw - hd) * left, 0.92 * hd, 0.92 * hd, body.shirt)
    add("spine", hip_mid + 0.3 * (thorax - hip_mid), thorax - 0.1 * (thorax - hip_mid), hd, hd, body.shirt)
    add("pelvis", 0.8 * P[:, 6] + 0.2 * P[:, 1], 0.2 * P[:, 6] + 0.8 * P[:, 1], body.hip_radius, body.hip_radius, legs)
    for side, (sho, elb, wri, hand) in (("l", (17, 18, 19, 22)), ("r", (25, 26, 27, 30))):
        add(f"{side}_shoulder", P[:, sho], P[:, sho], 1.2 * body.upper_arm_radius, 1.2 * body.upper_arm_radius, body.shirt)
        add(f"{side}_upper_arm", P[:, sho], P[:, elb], body.upper_arm_radius, 0.9 * body.upper_arm_radius, body.shirt)
        add(f"{side}_forearm", P[:, elb], P[:, wri], body.forearm_radius, 0.8 * body.forearm_radius, forearm)
        add(f"{side}_hand", P[:, wri], P[:, wri] + 0.75 * (P[:, hand] - P[:, wri]), body.hand_radius, 0.9 * body.hand_radius, body.skin)
    for side, (hip, knee, ankle, toe, site) in (("l", (6, 7, 8, 9, 10)), ("r", (1, 2, 3, 4, 5))):
        add(f"{side}_thigh", P[:, hip], P[:, knee], body.thigh_radius, 0.8 * body.thigh_radius, legs)
        add(f"{side}_shin", P[:, knee], P[:, ankle], body.shin_radius, 0.75 * body.shin_radius, shins)
        heel = P[:, ankle] - 0.5 * body.ankle_height * up - 0.25 * (P[:, toe] - P[:, ankle])
        add(f"{side}_foot", heel, P[:, site] + 0.3 * (P[:, toe] - P[:, site]), body.foot_radius, 0.8 * body.foot_radius, body.shoes)
    # Neck and head: skull, hair cap at the back, eyes, nose, mouth.
    hc, hf, hl, hu = head_frame(P)
    r = body.head_radius
    add("neck", thorax, P[:, 14] - 0.2 * r * hu, body.neck_radius, body.neck_radius, body.skin)
    add("head", hc - 0.35 * r * hu, hc + 0.12 * r * hu, r * 0.92, r, body.skin)
    hair_end = hc - (1.4 if body.long_hair else 0.5) * r * hu - 0.35 * r * hf
    add("hair", hc + 0.2 * r * hu - 0.3 * r * hf, hair_end, 0.97 * r, 0.85 * r, body.hair)
    for side, s in (("l", 1.0), ("r", -1.0)):
        eye = hc + 0.83 * r * hf + 0.36 * r * s * hl + 0.08 * r * hu
        add(f"{side}_eye", eye, eye, 0.13 * r, 0.13 * r, (40, 30, 25), shade=False)
    nose = hc + 0.95 * r * hf - 0.15 * r * hu
    add("nose", nose, nose, 0.16 * r, 0.16 * r, tuple(0.8 * c for c in body.skin))
    mouth = hc + 0.82 * r * hf - 0.42 * r * hu
    add("mouth", mouth + 0.18 * r * hl, mouth - 0.18 * r * hl, 0.06 * r, 0.06 * r, (60, 60, 150), shade=False)
    return Primitives(np.stack(ends_a, axis=1), np.stack(ends_b, axis=1), np.asarray(radii),
                      np.asarray(colours, np.float64), tuple(names), np.asarray(shaded))


# Nested shading layers: (radius scale, shift towards the light as a fraction of the radius, brightness).
LAYERS: tuple[tuple[float, float, float], ...] = ((1.0, 0.0, 0.58), (0.8, 0.15, 0.82), (0.5, 0.35, 1.05))


@dataclass(frozen=True)
class Projected:
    """Per-frame drawing data: outlines (n, P, L, K, 2) int32 fixed-point, draw order (n, P)."""

    outlines: np.ndarray
    order: np.ndarray
    depth: np.ndarray             # (n, P) camera z of each capsule's centre
    colours: np.ndarray           # (P, L, 3) BGR per layer
    n_layers: np.ndarray          # (P,) layers drawn per capsule


def silhouettes(prims: Primitives, eye: np.ndarray, light: np.ndarray = LIGHT, layers=LAYERS) -> np.ndarray:
    """3D outline points (n, P, L, K, 3) of every capsule and shading layer, as seen from ``eye``.

    ``eye`` (3,) and ``light`` (3,) or per frame (n, 1, 3) are in the frame of the primitives.
    Each outline is the capsule's silhouette: two half circles in the plane across the view.
    """
    a, b = prims.a, prims.b
    view = _unit(0.5 * (a + b) - eye)                              # (n, P, 3)
    axis = b - a
    m = axis - (axis * view).sum(-1, keepdims=True) * view
    fallback = np.cross(view, [0.0, 0.0, 1.0])
    m = _unit(np.where(np.linalg.norm(m, axis=-1, keepdims=True) > 1e-6, m, fallback))
    n = np.cross(view, m)
    across = light - (light * view).sum(-1, keepdims=True) * view  # light direction across the view
    theta = np.linspace(-np.pi / 2, np.pi / 2, _CAP_POINTS)
    ring = np.cos(theta)[:, None] * m[:, :, None] + np.sin(theta)[:, None] * n[:, :, None]  # (n, P, K/2, 3)
    pts = []
    for scale, shift, _ in layers:
        ra, rb = (prims.radii * scale).T
        off_a, off_b = (across * (prims.radii * shift)[None, :, i, None] for i in (0, 1))
        cap_b = (b + off_b)[:, :, None] + rb[None, :, None, None] * ring
        cap_a = (a + off_a)[:, :, None] - ra[None, :, None, None] * ring
        pts.append(np.concatenate([cap_b, cap_a], axis=2))
    return np.stack(pts, axis=2)


def to_projected(prims: Primitives, uv: np.ndarray, depth: np.ndarray, layers=LAYERS) -> Projected:
    """Drawing data from projected outlines ``uv`` (n, P, L, K, 2) and capsule depths (n, P)."""
    uv = np.nan_to_num(uv, nan=-1e4, posinf=1e4, neginf=-1e4).clip(-1e4, 1e4)
    outlines = np.round(uv * (1 << _SHIFT)).astype(np.int32)
    order = np.argsort(-depth, axis=1, kind="stable")
    bright = np.array([lay[2] for lay in layers])
    colours = np.clip(prims.colours[:, None, :] * bright[None, :, None] + 12.0 * (bright[None, :, None] > 1), 0, 255)
    n_layers = np.where(prims.shaded, len(layers), 1)
    return Projected(outlines, order, depth, colours, n_layers)


def project_primitives(prims: Primitives, camera: Camera, layers=LAYERS) -> Projected:
    """Silhouettes of every capsule, layer and frame, projected through the camera's lens."""
    uv = camera.project(silhouettes(prims, camera.center, LIGHT, layers))
    depth = camera.world_to_camera(0.5 * (prims.a + prims.b))[..., 2]
    return to_projected(prims, uv, depth, layers)


def draw_person(image: np.ndarray, proj: Projected, frame: int, flat_colours: np.ndarray | None = None) -> None:
    """Draw frame ``frame`` of ``proj`` onto ``image`` back to front (in place).

    With ``flat_colours`` (P, 3) every capsule is drawn once, unshaded and aliased, in that colour
    (a part-label image).
    """
    outlines = proj.outlines[frame]
    for p in proj.order[frame]:
        if flat_colours is not None:
            cv2.fillPoly(image, [outlines[p, 0]], flat_colours[p].tolist(), cv2.LINE_8, _SHIFT)
            continue
        for layer in range(proj.n_layers[p]):
            cv2.fillPoly(image, [outlines[p, layer]], proj.colours[p, layer].tolist(), cv2.LINE_AA, _SHIFT)


def shadow_outlines(camera: Camera, pelvis: np.ndarray, radius: float) -> np.ndarray:
    """(n, 16, 2) pixel outlines of a floor ellipse under each pelvis position (n, 3); NaN if behind."""
    ang = np.linspace(0, 2 * np.pi, 16, endpoint=False)
    ring = np.stack([np.cos(ang) * radius, np.sin(ang) * 0.8 * radius, np.zeros_like(ang)], axis=1)
    pts = ring[None] + pelvis[:, None] * np.array([1.0, 1.0, 0.0])
    uv = camera.project(pts)
    uv[(camera.world_to_camera(pts)[..., 2] <= 0).any(axis=1)] = np.nan
    return uv


def draw_shadow(image: np.ndarray, outline: np.ndarray, strength: float = 0.4) -> None:
    """Darken the inside of a projected floor ellipse (16, 2), softened, in place."""
    if not np.isfinite(outline).all():
        return
    h, w = image.shape[:2]
    x0, y0 = np.floor(outline.min(0)).astype(int) - 2
    x1, y1 = np.ceil(outline.max(0)).astype(int) + 3
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if x1 <= x0 or y1 <= y0:
        return
    mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
    cv2.fillPoly(mask, [np.round((outline - (x0, y0)) * 16).astype(np.int32)], 255, cv2.LINE_AA, 4)
    mask = cv2.blur(mask, (5, 5))
    roi = image[y0:y1, x0:x1]
    roi[:] = (roi * (1.0 - strength / 255.0 * mask[..., None])).astype(np.uint8)


def render_frames(poses: np.ndarray, body: Body, camera: Camera, background: Background) -> Iterator[np.ndarray]:
    """Yield one BGR frame per pose: background, floor shadow, the person, then nearer furniture."""
    proj = project_primitives(person_primitives(poses, body), camera)
    pelvis_depth = camera.world_to_camera(poses[:, 0])[:, 2]
    shadows = shadow_outlines(camera, poses[:, 0], 0.22 * body.height)
    flat_bg = background.image.reshape(-1, 3)
    for f in range(poses.shape[0]):
        img = background.image.copy()
        draw_shadow(img, shadows[f])
        draw_person(img, proj, f)
        k = int(np.searchsorted(background.occluder_depth, pelvis_depth[f]))
        if k:
            idx = background.occluder_index[:k]
            img.reshape(-1, 3)[idx] = flat_bg[idx]
        yield img


def render_labels(poses: np.ndarray, body: Body, camera: Camera, width: int, height: int) -> tuple[np.ndarray, tuple[str, ...]]:
    """Part-label images (n, H, W) uint8: 0 background, ``k + 1`` where capsule ``names[k]`` is in front."""
    prims = person_primitives(poses, body)
    proj = project_primitives(prims, camera)
    labels = np.zeros((poses.shape[0], height, width), np.uint8)
    ids = np.arange(1, len(prims.names) + 1)[:, None]
    for f in range(poses.shape[0]):
        draw_person(labels[f], proj, f, flat_colours=ids)
    return labels, prims.names
