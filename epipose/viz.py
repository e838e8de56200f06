"""Figures (matplotlib, Agg backend: no display needed). Pose figures, shared by the evaluate stage and
``epipose predict``: an image with 2D skeletons drawn over it, beside 3D skeleton views; camera rigs
seen from above (triangulate's recovered cameras beside the true ones).

3D poses are root-relative, in a camera's frame (x right, y down, z forward, mm); the views plot
x, the depth z and −y (up).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from epipose import skeleton
from epipose.camera import Camera

MIN_HALF_EXTENT_MM = 800.0      # the 3D views show at least ±this


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def half_extent(poses: Sequence[np.ndarray]) -> float:
    """A symmetric 3D axis limit (mm) that shows all ``poses`` (NaN ignored), at least ``MIN_HALF_EXTENT_MM``."""
    finite = [np.abs(p[np.isfinite(p)]) for p in poses]
    biggest = max((float(f.max()) for f in finite if f.size), default=0.0)
    return max(MIN_HALF_EXTENT_MM, biggest * 1.05)


SIDE_COLOURS = {"l": "tab:blue", "r": "tab:red", "c": "black"}     # colour "sides": left, right, centre


def _bone_colours(colour: str) -> list[str]:
    """One colour per ``skeleton.BONES`` entry: ``colour`` for all, or by the child joint's side for "sides"."""
    if colour != "sides":
        return [colour] * len(skeleton.BONES)
    return [SIDE_COLOURS.get(skeleton.MPII_NAMES[b][:2].rstrip("_"), SIDE_COLOURS["c"]) for _, b in skeleton.BONES]


def pose_figure(image: np.ndarray, skeletons_2d: Sequence[tuple[np.ndarray, str]],
                skeletons_3d: Sequence[tuple[np.ndarray, str, str]], *, image_title: str = "", title: str = "",
                size_px: tuple[int, int] | None = None, dpi: int = 90, lim_mm: float | None = None):
    """A figure: ``image`` (H, W, 3 RGB uint8) with each ``(uv (J, 2) px, colour)`` skeleton drawn over
    it, then one 3D panel per ``(pose (J, 3) root-relative mm, colour, panel title)``. A colour is a
    matplotlib colour or "sides" (left limbs blue, right red, the centre line black); joints set to
    NaN are not drawn.

    ``size_px`` (width, height): the figure's exact pixel size (else 3.5 × 3.6 inches per panel at
    ``dpi``); ``lim_mm``: the 3D views' half extent (else ``half_extent`` of the poses). The caller
    saves or rasterises the figure (``figure_rgb``) and closes it.
    """
    plt = pyplot()
    panels = 1 + len(skeletons_3d)
    if size_px is None:
        fig = plt.figure(figsize=(3.5 * panels, 3.6), dpi=dpi)
    else:
        fig = plt.figure(figsize=(size_px[0] / dpi, size_px[1] / dpi), dpi=dpi)
    ax = fig.add_subplot(1, panels, 1)
    ax.imshow(image)
    for uv, colour in skeletons_2d:
        for (a, b), c in zip(skeleton.BONES, _bone_colours(colour)):
            ax.plot(uv[[a, b], 0], uv[[a, b], 1], "-", color=c, lw=1.5)
    ax.set_xlim(-0.5, image.shape[1] - 0.5)
    ax.set_ylim(image.shape[0] - 0.5, -0.5)
    ax.set_title(image_title, fontsize=8)
    ax.axis("off")
    lim = half_extent([p for p, _, _ in skeletons_3d]) if lim_mm is None else lim_mm
    for k, (pose, colour, panel_title) in enumerate(skeletons_3d):
        ax3 = fig.add_subplot(1, panels, k + 2, projection="3d")
        # Camera frame (x right, y down, z forward) → plot x, z (depth), −y (up).
        for (a, b), c in zip(skeleton.BONES, _bone_colours(colour)):
            ax3.plot(pose[[a, b], 0], pose[[a, b], 2], -pose[[a, b], 1], "-", color=c, lw=2)
        ax3.set_xlim(-lim, lim); ax3.set_ylim(-lim, lim); ax3.set_zlim(-lim, lim)
        ax3.set_xlabel("x (mm)", fontsize=7); ax3.set_ylabel("depth (mm)", fontsize=7)
        ax3.set_zlabel("up (mm)", fontsize=7)
        ax3.tick_params(labelsize=6)
        ax3.view_init(elev=15, azim=-70)
        ax3.set_title(panel_title, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    return fig


def figure_rgb(fig) -> np.ndarray:
    """The figure rasterised: (H, W, 3) uint8 RGB at its own pixel size."""
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()


def save_figure(fig, path) -> None:
    """PNG without a timestamp or software tag (stable bytes), then close the figure."""
    fig.savefig(path, metadata={"Software": None})
    pyplot().close(fig)


def close_figure(fig) -> None:
    pyplot().close(fig)


def rig_figure(panels: dict[str, dict], title: str, axis_labels: tuple[str, str] = ("x (mm)", "y (mm)"), dpi: int = 80):
    """Camera rigs seen from above, one panel per entry: ``{"names": [...], "est": (centres (V, 2),
    directions (V, 2)), "true": the same or None, "person": (2,) or None}`` — estimated cameras red
    crosses, true ones green circles, each with its viewing direction. The caller saves and closes it."""
    plt = pyplot()
    n = max(1, len(panels))
    cols = min(4, n)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.2 * rows + 0.4), dpi=dpi, squeeze=False)
    for ax in axes.ravel()[len(panels):]:
        ax.axis("off")
    for ax, (name, p) in zip(axes.ravel(), panels.items()):
        extent = [c for key in ("est", "true") if p.get(key) is not None for c in p[key][0]]
        arrow = 0.25 * max(1.0, float(np.ptp(np.asarray(extent), axis=0).max())) if extent else 500.0
        for key, colour, marker, label in (("true", "tab:green", "o", "true"), ("est", "tab:red", "x", "recovered")):
            if p.get(key) is None:
                continue
            c, d = (np.asarray(a, dtype=np.float64) for a in p[key])
            ax.scatter(c[:, 0], c[:, 1], c=colour, marker=marker, s=30, label=label, zorder=3)
            d = d / np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-9)
            ax.quiver(c[:, 0], c[:, 1], d[:, 0] * arrow, d[:, 1] * arrow, color=colour, angles="xy",
                      scale_units="xy", scale=1, width=0.006)
        for cam, (x, y) in zip(p["names"], np.asarray(p["est"][0])):
            ax.annotate(cam, (x, y), fontsize=5, xytext=(3, 3), textcoords="offset points")
        if p.get("person") is not None:
            ax.scatter(*p["person"], c="black", marker="*", s=40, label="person (mean)", zorder=3)
        ax.set_aspect("equal", adjustable="datalim")
        ax.set_title(name, fontsize=8)
        ax.set_xlabel(axis_labels[0], fontsize=7)
        ax.set_ylabel(axis_labels[1], fontsize=7)
        ax.tick_params(labelsize=6)
        ax.legend(fontsize=5, loc="best")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


@dataclass(frozen=True)
class RigView:
    """One subject's recovered cameras for ``rig_topview``: world → camera ``R`` (V, 3, 3) and ``t``
    (V, 3, mm) in the reconstruction's world, and the person's ``pelvis`` there (T, 3; NaN where not
    triangulated). ``truth``: the true cameras (same order) or None; ``reference``: the true pose of
    the camera at the reconstruction's origin (None: the reconstruction's world is the true one)."""

    names: tuple[str, ...]
    R: np.ndarray
    t: np.ndarray
    pelvis: np.ndarray
    truth: tuple[Camera, ...] | None = None
    reference: Camera | None = None


def rig_panels(views: dict[str, RigView]) -> tuple[dict[str, dict], tuple[str, str]]:
    """``rig_figure``'s panels (and axis labels) of each subject's recovered cameras.

    Where every view has its true cameras, the recovered rig is placed through the true pose of its
    reference camera (no fitting: rotation, direction and scale errors all show) beside the true rig,
    on the world's ground plane (x, y; Human3.6M's z is up). Otherwise it is drawn in its reference
    camera's frame on the x–z plane (y points down)."""
    panels: dict[str, dict] = {}
    known = all(v.truth is not None for v in views.values())
    for subject, v in sorted(views.items()):
        centres = np.einsum("vji,vj->vi", v.R, -v.t)                  # -Rᵀ t
        dirs = v.R[:, 2, :]                                            # the optical axis, Rᵀ e_z
        pelvis = v.pelvis
        person = np.nanmean(pelvis, axis=0) if np.isfinite(pelvis).any() else None
        true = None
        if known:
            if v.reference is not None:                                # reference frame → world
                T = v.reference
                centres, dirs = (centres - T.t) @ T.R, dirs @ T.R
                person = None if person is None else (person - T.t) @ T.R
            true = (np.array([c.center for c in v.truth])[:, :2], np.array([c.R[2] for c in v.truth])[:, :2])
        axes = [0, 1] if known else [0, 2]
        panels[subject] = {"names": list(v.names), "est": (centres[:, axes], dirs[:, axes]), "true": true,
                           "person": None if person is None else person[axes]}
    return panels, (("x (mm)", "y (mm)") if known else ("x (mm)", "depth z (mm)"))


def rig_topview(views: dict[str, RigView]):
    """The recovered cameras of every subject seen from above (``rig_panels``), titled. The caller saves
    and closes it."""
    panels, axis_labels = rig_panels(views)
    truth = any(p["true"] is not None for p in panels.values())
    title = "Recovered cameras from above (red ×)" + (
        ", the true ones (green ○)" if truth else ", in each subject's reference camera frame")
    return rig_figure(panels, title, axis_labels)
