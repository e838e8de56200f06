"""Pose figures shared by the evaluate stage and ``epipose predict``: an image with 2D skeletons
drawn over it, beside 3D skeleton views (matplotlib, Agg backend: no display needed).

3D poses are root-relative, in a camera's frame (x right, y down, z forward, mm); the views plot
x, the depth z and −y (up).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from epipose import skeleton

MIN_HALF_EXTENT_MM = 800.0      # the 3D views show at least ±this


def _pyplot():
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
    plt = _pyplot()
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
    _pyplot().close(fig)


def close_figure(fig) -> None:
    _pyplot().close(fig)
