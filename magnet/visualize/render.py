"""Skeleton videos (mp4 / gif) of multi-person motion: ground truth and samples side by side.

Each panel shows one row of a clip (the ground truth or a sample) with the same fixed camera, so panels compare
directly: the camera looks at the centre of everything every panel shows over the whole clip, from 20 degrees
above the floor, across the main horizontal spread of the persons (two persons facing each other stand left and
right), and its view is fitted to all joints of all frames, so no one leaves the picture. One colour per person
(the left side of each body drawn lighter), a floor grid (0.5 m cells) with a shadow under each pelvis, and a
title per panel. Context frames (``t < context_timesteps``, copied from the ground truth) are marked by an amber
background and a ``context`` label; a sample's frames after its valid length are left empty.

Rendering is matplotlib (Agg, no display) with blitting: the static picture (grid, titles) is drawn once and only
the skeletons and labels are redrawn per frame, then streamed to ffmpeg (``imageio-ffmpeg``, H.264, yuv420p) or
quantised to a fixed 256-colour palette for a GIF (Pillow). Files are written under a temporary name and renamed
into place when complete.

Python API::

    from magnet.visualize import render_clip, render_panels
    render_clip("outputs/run/clip_000.npz", "outputs/run/videos/clip_000.mp4", samples=2)
    render_panels([gt_joints, sample_joints], "out.gif", titles=["ground truth", "sample"], context_frames=32)

Command line::

    python -m magnet.visualize.render <npz file or run dir> [--out DIR] [--samples N] [--format mp4|gif|png]
        [--frame T] [--fps F] [--max-frames N] [--smplx PATH] [--panel-size PX]

``--format png`` writes one still (``--frame``, default the middle of the generated frames) instead of a video.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from magnet.body.kinematic_tree import JOINT_NAMES, PARENTS
from magnet.errors import ConfigError, DataError, MagnetError
from magnet.utils import atomic_path

__all__ = [
    "FORMATS",
    "PERSON_COLOURS",
    "Camera",
    "SkeletonRenderer",
    "fit_camera",
    "gif_bytes",
    "gif_durations",
    "main",
    "render_clip",
    "render_outputs",
    "render_panels",
    "save_png",
    "write_video",
]

FORMATS = ("mp4", "gif", "png")  # png: one still frame
NUM_JOINTS = 22  # pelvis + 21 body joints: what is drawn
HEAD = 15
BONES: tuple[tuple[int, int], ...] = tuple((PARENTS[j], j) for j in range(1, NUM_JOINTS))
LEFT_BONE = np.array([JOINT_NAMES[j].startswith("left_") for _, j in BONES])
# person colours (matplotlib's tab10 blue, orange, green, red, purple, brown); more persons cycle
PERSON_COLOURS: tuple[tuple[int, int, int], ...] = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
)
CONTEXT_TINT = "#fbecc8"
CONTEXT_LABEL = "#e69500"
GENERATED_LABEL = "#4c72b0"
GRID_COLOUR = "#c8c8c8"
ELEVATION_DEG = 20.0
HEADER_PX = 28
FOOTER_PX = 20
DPI = 96
MACRO_BLOCK = 16  # H.264 / yuv420p friendly frame sizes
MIN_ASPECT, MAX_ASPECT = 0.5, 1.25  # panel height / width


def _round_up(px: float) -> int:
    """``px`` rounded up to a multiple of 16 (at least 16)."""
    return max(MACRO_BLOCK, math.ceil(float(px) / MACRO_BLOCK - 1e-9) * MACRO_BLOCK)


# ------------------------------------------------------------------------------------------------ camera
@dataclass(frozen=True)
class Camera:
    """A fixed pinhole camera: ``position`` and orthonormal ``right``, ``up``, ``forward`` (world, Y-up)."""

    position: np.ndarray
    right: np.ndarray
    up: np.ndarray
    forward: np.ndarray

    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``points [..., 3]`` -> (image coordinates ``[..., 2]`` on the plane at depth 1, depth ``[...]``)."""
        rel = np.asarray(points, dtype=np.float64) - self.position
        depth = rel @ self.forward
        safe = np.maximum(depth, 1e-6)
        xy = np.stack([rel @ self.right, rel @ self.up], axis=-1) / safe[..., None]
        return xy, depth


def fit_camera(points: np.ndarray, elevation_deg: float = ELEVATION_DEG, margin: float = 1.0) -> Camera:
    """A camera that sees all of ``points [..., 3]`` (every joint of every panel and frame).

    It looks at the centre of their bounding box from ``elevation_deg`` above the horizon, perpendicular to the
    main horizontal spread of the points (camera on the +z side of that line), from a distance of 2.5 times the
    bounding radius plus ``margin`` metres (a mild perspective; the floor grid stays in front of the camera).
    """
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    centre = (lo + hi) / 2
    radius = float(np.linalg.norm(hi - lo)) / 2 + margin
    xz = pts[:, [0, 2]] - centre[[0, 2]]
    cov = xz.T @ xz / max(len(xz), 1)
    evals, evecs = np.linalg.eigh(cov)
    spread = evecs[:, 1] if evals[1] > 1.2 * evals[0] else np.array([1.0, 0.0])  # isotropic: look along -z
    side = np.array([-spread[1], spread[0]])  # horizontal, perpendicular to the spread
    if side[1] < 0 or (side[1] == 0 and side[0] < 0):
        side = -side  # the camera stands on the +z side (persons facing +z are seen from the front)
    el = np.deg2rad(elevation_deg)
    forward = np.array([-side[0] * np.cos(el), -np.sin(el), -side[1] * np.cos(el)])
    right = np.cross(forward, np.array([0.0, 1.0, 0.0]))
    right /= np.linalg.norm(right)
    up = np.cross(right, forward)
    distance = 2.5 * radius
    return Camera(position=centre - forward * distance, right=right, up=up, forward=forward)


def _floor_height(joints: np.ndarray) -> float:
    """The floor: y = 0 (the data's floor after preprocessing) unless every joint is far (> 0.3 m) from it, then
    the lowest joint height."""
    low = float(np.min(joints[..., 1]))
    return 0.0 if -0.3 <= low <= 0.3 else low


def _rgb(colour: tuple[int, int, int], lighten: float = 0.0) -> np.ndarray:
    c = np.asarray(colour, dtype=np.float64) / 255.0
    return c + (1.0 - c) * lighten


# ------------------------------------------------------------------------------------------------ renderer
class SkeletonRenderer:
    """Frames of side-by-side skeleton panels (numpy RGB images).

    Args:
        panels: one array per panel, ``[T, P, J, 3]`` world joints with J >= 22 (SMPL-X order, joint 0 = pelvis;
            joints after 21 are ignored), metres, Y-up; every panel has the same T and P.
        titles: one title per panel (default ``panel 1``, ...).
        context_frames: frames ``t < context_frames`` are marked as context.
        valid_frames: per panel, frames after this count are drawn empty (default: all T).
        fps: frame rate (for the time shown in the footer).
        caption: footer text (e.g. the clip name and task).
        generated: per panel, whether its frames after the context are generated (labelled ``generated``);
            default none.
        panel_px: width of each panel in pixels (rounded up to a multiple of 16); its height follows the
            picture (0.5 to 1.25 times the width, a multiple of 16; 28 + 20 pixels of title and footer are added).
    """

    def __init__(self, panels: Sequence[np.ndarray], *, titles: Sequence[str] | None = None,
                 context_frames: int = 0, valid_frames: Sequence[int] | None = None, fps: float = 30.0,
                 caption: str = "", generated: Sequence[bool] | None = None, panel_px: int = 384):
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.collections import LineCollection
        from matplotlib.figure import Figure

        arrays = [np.asarray(p, dtype=np.float64) for p in panels]
        if not arrays:
            raise ConfigError("render: no panels to draw")
        shape = arrays[0].shape
        for i, a in enumerate(arrays):
            if a.ndim != 4 or a.shape[-1] != 3 or a.shape[2] < NUM_JOINTS:
                raise DataError(f"render: panel {i} has shape {tuple(a.shape)}, expected [T, P, J>=22, 3]")
            if a.shape[:2] != shape[:2]:
                raise DataError(f"render: panel {i} has [T, P] = {tuple(a.shape[:2])}, panel 0 has "
                                f"{tuple(shape[:2])}; all panels need the same frames and persons")
            if not np.isfinite(a[..., :NUM_JOINTS, :]).all():
                raise DataError(f"render: panel {i} holds NaN/Inf joint positions")
        self.num_panels = len(arrays)
        self.num_frames, self.num_persons = int(shape[0]), int(shape[1])
        if self.num_frames < 1:
            raise DataError("render: the panels have no frames")
        joints = np.stack([a[:, :, :NUM_JOINTS] for a in arrays])  # [n, T, P, 22, 3]
        self.titles = list(titles) if titles is not None else [f"panel {i + 1}" for i in range(self.num_panels)]
        if len(self.titles) != self.num_panels:
            raise ConfigError(f"render: {len(self.titles)} titles for {self.num_panels} panels")
        self.valid = [self.num_frames] * self.num_panels if valid_frames is None else [int(v) for v in valid_frames]
        if len(self.valid) != self.num_panels:
            raise ConfigError(f"render: {len(self.valid)} valid_frames for {self.num_panels} panels")
        self.generated = [False] * self.num_panels if generated is None else [bool(g) for g in generated]
        if len(self.generated) != self.num_panels:
            raise ConfigError(f"render: {len(self.generated)} generated flags for {self.num_panels} panels")
        self.context_frames = int(context_frames)
        self.fps = float(fps)
        if self.fps <= 0:
            raise ConfigError(f"render: fps must be positive, got {fps}")

        # camera, floor, grid and view fitted to the frames that are drawn (each panel's valid frames), then the
        # projections of all frames at once
        shown = np.concatenate([joints[i, : max(1, min(v, self.num_frames))] for i, v in enumerate(self.valid)])
        self.camera = fit_camera(shown)
        floor = _floor_height(shown)
        xy, depth = self.camera.project(joints)  # [n, T, P, 22, 2], [n, T, P, 22]
        parent = np.array([b[0] for b in BONES])
        child = np.array([b[1] for b in BONES])
        self._segments = np.stack([xy[..., parent, :], xy[..., child, :]], axis=-2)  # [n, T, P, 21, 2, 2]
        self._seg_depth = (depth[..., parent] + depth[..., child]) / 2  # [n, T, P, 21]
        self._heads = xy[..., HEAD, :]  # [n, T, P, 2]
        shadow = joints[..., 0, :].copy()
        shadow[..., 1] = floor
        self._shadows = self.camera.project(shadow)[0]  # [n, T, P, 2]
        colours = np.array([[_rgb(PERSON_COLOURS[p % len(PERSON_COLOURS)], 0.45 if left else 0.0)
                             for left in LEFT_BONE] for p in range(self.num_persons)])  # [P, 21, 3]
        self._seg_colours = colours.reshape(-1, 3)
        self._head_colours = np.array([_rgb(PERSON_COLOURS[p % len(PERSON_COLOURS)])
                                       for p in range(self.num_persons)])

        # view limits: every projected joint of every drawn frame of every panel plus a 6 % margin; the panel's height
        # follows the picture (between half and 1.25 times its width), the other extent is widened to match
        flat = self.camera.project(shown)[0].reshape(-1, 2)
        lo, hi = flat.min(axis=0), flat.max(axis=0)
        mid, half = (lo + hi) / 2, (hi - lo) / 2 * 1.06 + 1e-6
        aspect = float(np.clip(half[1] / half[0], MIN_ASPECT, MAX_ASPECT))
        half = np.maximum(half, [half[1] / aspect, half[0] * aspect])
        self._xlim = (mid[0] - half[0], mid[0] + half[0])
        self._ylim = (mid[1] - half[1], mid[1] + half[1])

        px = _round_up(panel_px)
        py = _round_up(px * aspect)
        half[1] = half[0] * py / px  # exact pixel aspect after rounding
        self._ylim = (mid[1] - half[1], mid[1] + half[1])
        self.width = px * self.num_panels
        self.height = py + HEADER_PX + FOOTER_PX

        # figure: panels side by side, titles above, caption and frame counter below
        fig = Figure(figsize=(self.width / DPI, self.height / DPI), dpi=DPI, facecolor="white")
        self._canvas = FigureCanvasAgg(fig)
        self._fig = fig
        self._axes, self._bones, self._head_art, self._shadow_art, self._status = [], [], [], [], []
        grid = self._floor_grid(shown, floor)
        for i in range(self.num_panels):
            ax = fig.add_axes((i / self.num_panels, FOOTER_PX / self.height, 1 / self.num_panels, py / self.height))
            ax.set_xlim(*self._xlim)
            ax.set_ylim(*self._ylim)
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_color("#999999")
                spine.set_linewidth(0.8)
            ax.add_collection(LineCollection(grid, colors=GRID_COLOUR, linewidths=0.7, zorder=1))
            shadow_art = ax.scatter([], [], s=140, c="#000000", alpha=0.12, linewidths=0, animated=True, zorder=2)
            bones = LineCollection([], linewidths=2.6, capstyle="round", animated=True, zorder=3)
            ax.add_collection(bones)
            heads = ax.scatter([], [], s=60, linewidths=0, animated=True, zorder=4)
            status = ax.text(0.02, 0.97, "", transform=ax.transAxes, ha="left", va="top", fontsize=9,
                             color="white", fontweight="bold", animated=True, zorder=5,
                             bbox={"boxstyle": "round,pad=0.25", "facecolor": CONTEXT_LABEL, "edgecolor": "none"})
            fig.text((i + 0.5) / self.num_panels, 1 - (HEADER_PX / 2) / self.height, self.titles[i],
                     ha="center", va="center", fontsize=11, fontweight="bold")
            self._axes.append(ax)
            self._bones.append(bones)
            self._head_art.append(heads)
            self._shadow_art.append(shadow_art)
            self._status.append(status)
        fig.text(0.005, (FOOTER_PX / 2) / self.height, caption, ha="left", va="center", fontsize=8, color="#444444")
        self._counter = fig.text(0.995, (FOOTER_PX / 2) / self.height, "", ha="right", va="center", fontsize=8,
                                 color="#444444", animated=True)
        # the static picture twice: plain and with the context tint
        self._background = {}
        for tinted in (False, True):
            for ax in self._axes:
                ax.set_facecolor(CONTEXT_TINT if tinted else "white")
            self._canvas.draw()
            self._background[tinted] = self._canvas.copy_from_bbox(fig.bbox)

    def _floor_grid(self, joints: np.ndarray, floor: float) -> list[np.ndarray]:
        """Projected 2D segments of a 0.5 m floor grid covering the persons' area plus 1 m."""
        step = 0.5
        xz = joints[..., [0, 2]].reshape(-1, 2)
        lo = np.floor((xz.min(axis=0) - 1.0) / step) * step
        hi = np.ceil((xz.max(axis=0) + 1.0) / step) * step
        lines = []
        for x in np.arange(lo[0], hi[0] + step / 2, step):
            lines.append(((x, floor, lo[1]), (x, floor, hi[1])))
        for z in np.arange(lo[1], hi[1] + step / 2, step):
            lines.append(((lo[0], floor, z), (hi[0], floor, z)))
        pts = np.asarray(lines, dtype=np.float64)  # [L, 2, 3]
        # subdivide so the perspective bends nothing across the camera plane
        t = np.linspace(0.0, 1.0, 9)[:, None]
        out = []
        for a, b in pts:
            xy, depth = self.camera.project(a + (b - a) * t)
            if (depth > 0.05).all():
                out.append(xy)
        return out

    def frame(self, t: int) -> np.ndarray:
        """The image of frame ``t``: ``uint8 [H, W, 3]``."""
        if not 0 <= t < self.num_frames:
            raise IndexError(f"frame {t} outside 0..{self.num_frames - 1}")
        in_context = t < self.context_frames
        self._canvas.restore_region(self._background[in_context])
        for i, ax in enumerate(self._axes):
            status = self._status[i]
            if t < self.valid[i]:
                order = np.argsort(-self._seg_depth[i, t].reshape(-1), kind="stable")  # far bones first
                self._bones[i].set_segments(self._segments[i, t].reshape(-1, 2, 2)[order])
                self._bones[i].set_color(self._seg_colours[order])
                self._head_art[i].set_offsets(self._heads[i, t])
                self._head_art[i].set_facecolor(self._head_colours)
                self._shadow_art[i].set_offsets(self._shadows[i, t])
                for art in (self._shadow_art[i], self._bones[i], self._head_art[i]):
                    ax.draw_artist(art)
                if in_context:
                    label, colour = "context", CONTEXT_LABEL
                elif self.generated[i]:
                    label, colour = "generated", GENERATED_LABEL
                else:
                    label, colour = "", CONTEXT_LABEL
            else:
                label, colour = f"ends at frame {self.valid[i]}", "#888888"
            if label:
                status.set_text(label)
                status.get_bbox_patch().set_facecolor(colour)
                ax.draw_artist(status)
        self._counter.set_text(f"frame {t + 1}/{self.num_frames}  {t / self.fps:5.2f} s")
        self._fig.draw_artist(self._counter)
        return np.asarray(self._canvas.buffer_rgba())[..., :3].copy()

    def frames(self, max_frames: int | None = None) -> Iterator[np.ndarray]:
        """Frames 0 .. min(T, max_frames) - 1."""
        end = self.num_frames if max_frames is None else min(self.num_frames, int(max_frames))
        for t in range(end):
            yield self.frame(t)

    @property
    def view_limits(self) -> tuple[tuple[float, float], tuple[float, float]]:
        """((x0, x1), (y0, y1)): the part of the camera's image plane every panel shows."""
        return self._xlim, self._ylim

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in pixels."""
        return self.width, self.height


# ------------------------------------------------------------------------------------------------ writers
def _format_of(path: Path, format: str | None) -> str:
    fmt = (format or path.suffix.lstrip(".")).lower()
    if fmt not in FORMATS:
        raise ConfigError(f"unknown format {fmt!r} for {path}; use one of {', '.join(FORMATS)}")
    return fmt


def gif_bytes(frames: Sequence[np.ndarray], fps: float = 30.0,
              palette_frames: Sequence[np.ndarray] | None = None) -> bytes:
    """An animated GIF (looping) of ``uint8 [H, W, 3]`` frames. Every frame is mapped, without dithering, to one
    256-colour palette made from ``palette_frames`` (default: the first and last frame), so colours do not flicker;
    delays follow :func:`gif_durations`."""
    import io

    from PIL import Image

    if not len(frames):
        raise DataError("no frames to encode as a GIF")
    samples = list(palette_frames) if palette_frames else [frames[0], frames[-1]]
    palette = Image.fromarray(np.concatenate(samples, axis=0)).quantize(
        colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    images = [Image.fromarray(np.ascontiguousarray(f)).quantize(palette=palette, dither=Image.Dither.NONE)
              for f in frames]
    buf = io.BytesIO()
    images[0].save(buf, format="GIF", save_all=True, append_images=images[1:],
                   duration=gif_durations(len(images), fps), loop=0, optimize=False)
    return buf.getvalue()


def gif_durations(count: int, fps: float) -> list[int]:
    """Per-frame GIF delays in ms. GIF stores hundredths of a second, so delays alternate (30 fps: 30, 40, 30, ...
    ms) to keep frame k at k / fps seconds to within 10 ms; at least 20 ms (browsers slow shorter delays down)."""
    ends = [max(20 * (k + 1), math.floor((k + 1) * 100.0 / fps + 0.5) * 10) for k in range(count)]
    return [b - a for a, b in zip([0] + ends[:-1], ends)]


def write_video(frames: Iterable[np.ndarray], path: str | os.PathLike, fps: float = 30.0,
                format: str | None = None, palette_frames: Sequence[np.ndarray] | None = None) -> Path:
    """Write ``uint8 [H, W, 3]`` frames to an mp4 (H.264) or gif file, atomically; returns the path.

    ``format`` defaults to the file suffix. For a gif, ``palette_frames`` (default: the first and last frame)
    choose the 256 colours of the palette every frame is mapped to (see :func:`gif_bytes`).
    """
    path = Path(path)
    fmt = _format_of(path, format)
    if fmt == "png":
        raise ConfigError(f"{path}: png is a still image, not a video; use save_png or render_panels")
    if fps <= 0:
        raise ConfigError(f"fps must be positive, got {fps}")
    it = iter(frames)
    first = next(it, None)
    if first is None:
        raise DataError(f"no frames to write to {path}")
    height, width = first.shape[:2]
    with atomic_path(path) as tmp:
        if fmt == "mp4":
            import imageio_ffmpeg

            writer = imageio_ffmpeg.write_frames(
                str(tmp), (width, height), fps=float(fps), codec="libx264", quality=6, macro_block_size=MACRO_BLOCK,
                pix_fmt_out="yuv420p", output_params=["-f", "mp4", "-movflags", "+faststart"],
                ffmpeg_log_level="error")
            writer.send(None)
            try:
                writer.send(np.ascontiguousarray(first))
                for frame in it:
                    writer.send(np.ascontiguousarray(frame))
            finally:
                writer.close()
        else:
            tmp.write_bytes(gif_bytes([first, *it], fps, palette_frames))
    return path


def save_png(frame: np.ndarray, path: str | os.PathLike) -> Path:
    """Write one ``uint8 [H, W, 3]`` frame as a PNG (atomically); returns the path."""
    from PIL import Image

    path = Path(path)
    with atomic_path(path) as tmp:
        Image.fromarray(np.ascontiguousarray(frame)).save(tmp, format="PNG")
    return path


def default_still_frame(num_frames: int, context_frames: int) -> int:
    """The frame a still shows by default: the middle of the frames after the context (or of all frames)."""
    start = context_frames if context_frames < num_frames else 0
    return start + (num_frames - start) // 2


def render_panels(panels: Sequence[np.ndarray], path: str | os.PathLike, *, titles: Sequence[str] | None = None,
                  context_frames: int = 0, valid_frames: Sequence[int] | None = None, fps: float = 30.0,
                  max_frames: int | None = None, caption: str = "", generated: Sequence[bool] | None = None,
                  panel_px: int = 384, format: str | None = None, still_frame: int | None = None) -> Path:
    """Render side-by-side panels of world joints (``[T, P, J>=22, 3]`` each) to ``path``: an .mp4 or .gif video,
    or a .png still of frame ``still_frame`` (default :func:`default_still_frame`).

    See :class:`SkeletonRenderer` for the arguments; ``max_frames`` keeps the first frames only. Returns the path.
    """
    path = Path(path)
    fmt = _format_of(path, format)
    renderer = SkeletonRenderer(panels, titles=titles, context_frames=context_frames, valid_frames=valid_frames,
                                fps=fps, caption=caption, generated=generated, panel_px=panel_px)
    count = renderer.num_frames if max_frames is None else max(1, min(renderer.num_frames, int(max_frames)))
    if fmt == "png":
        t = default_still_frame(count, context_frames) if still_frame is None else int(still_frame)
        if not 0 <= t < count:
            raise ConfigError(f"still frame {t} is outside 0..{count - 1}")
        return save_png(renderer.frame(t), path)
    palette = None
    if fmt == "gif":  # palette from a context frame, a middle frame and the last one
        palette = [renderer.frame(t) for t in sorted({0, count // 2, count - 1})]
    return write_video(renderer.frames(count), path, fps=fps, format=fmt, palette_frames=palette)


# ------------------------------------------------------------------------------------------------ sampler outputs
def render_clip(npz: str | os.PathLike, out: str | os.PathLike, *, samples: int | Sequence[int] | None = None,
                fps: float | None = None, max_frames: int | None = None, format: str | None = None,
                smplx=None, panel_px: int = 384, still_frame: int | None = None) -> Path:
    """Render one sampler output npz: the ground truth then the chosen samples, side by side.

    Args:
        npz: an output file (:func:`magnet.evaluation.io.load_output_npz` format, ours or the reference's).
        out: the file to write: .mp4 / .gif video, or a .png still of frame ``still_frame`` (default: the middle
            of the generated frames); ``format`` overrides the suffix.
        samples: None = all samples, an int N = samples 1..N, a list = those sample indices.
        fps: frame rate; None = ``fps`` of the run's ``inf_cfg.yaml``, else 30.
        max_frames: render only the first frames.
        smplx: a :class:`~magnet.body.BodyModel` or SMPL-X path; None = the run's (see
            :func:`magnet.motion_files.run_body_model`).
        panel_px: panel size in pixels.

    Raises:
        DataError: missing or malformed file. ConfigError: sample index out of range, unknown format.
        BodyModelError: a named SMPL-X file is missing.
    """
    from magnet.evaluation.io import load_output_npz
    from magnet.motion_files import clip_joints, row_frames, row_label, run_body_model, run_fps, select_rows

    npz = Path(npz)
    out = Path(out)
    _format_of(out, format)
    clip = load_output_npz(npz)
    rows = select_rows(clip, samples)
    if max_frames is not None and int(max_frames) < 1:
        raise ConfigError(f"max_frames must be >= 1, got {max_frames}")
    body_model = run_body_model(npz, smplx)
    fps = run_fps(npz) if fps is None else float(fps)
    valid = [row_frames(clip, r) for r in rows]
    frames = max(valid) if max_frames is None else min(max(valid), int(max_frames))
    joints = clip_joints(clip, body_model, rows, frames)
    task = clip.mode or "unknown task"
    caption = (f"{clip.name} | {task} | {clip.num_persons} person{'s' if clip.num_persons > 1 else ''} | "
               f"context {clip.context_timesteps} frames | {'default skeleton' if body_model.is_default else 'SMPL-X'}")
    return render_panels(list(joints), out, titles=[row_label(r) for r in rows],
                         context_frames=clip.context_timesteps, valid_frames=valid, fps=fps, caption=caption,
                         generated=[r != 0 for r in rows], panel_px=panel_px, format=format,
                         still_frame=still_frame)


def render_outputs(path: str | os.PathLike, out_dir: str | os.PathLike | None = None, *,
                   samples: int | Sequence[int] | None = None, format: str = "mp4", fps: float | None = None,
                   max_frames: int | None = None, smplx=None, panel_px: int = 384, still_frame: int | None = None,
                   log=None) -> list[Path]:
    """Render every output npz at ``path`` (a file or a run directory) to ``<out_dir>/<clip>.<format>``.

    ``out_dir`` defaults to ``<run dir>/videos``. Every file is loaded and checked (and the sample selection
    validated) before the first video is written. Returns the video paths. ``log(message)`` gets one line per
    video (None: silent).
    """
    from magnet.evaluation.io import load_output_npz
    from magnet.motion_files import output_files, row_frames, run_body_model, run_directory, select_rows

    if format not in FORMATS:
        raise ConfigError(f"unknown format {format!r}; use one of {', '.join(FORMATS)}")
    files = output_files(path)
    for f in files:  # fail before writing anything
        clip = load_output_npz(f)
        rows = select_rows(clip, samples)
        frames = max(row_frames(clip, r) for r in rows)
        frames = frames if max_frames is None else min(frames, int(max_frames))
        if still_frame is not None and not 0 <= int(still_frame) < frames:
            raise ConfigError(f"still frame {still_frame} is outside 0..{frames - 1} for {f}")
    body_model = run_body_model(path, smplx)
    out_dir = Path(out_dir) if out_dir is not None else run_directory(path) / "videos"
    written = []
    for f in files:
        t0 = time.perf_counter()
        video = render_clip(f, out_dir / f"{f.stem}.{format}", samples=samples, fps=fps, max_frames=max_frames,
                            format=format, smplx=body_model, panel_px=panel_px, still_frame=still_frame)
        written.append(video)
        if log is not None:
            log(f"wrote {video} ({video.stat().st_size / 1e6:.2f} MB, {time.perf_counter() - t0:.1f} s)")
    return written


def _parser():
    from magnet.cli import OneLineArgumentParser
    from magnet.motion_files import add_body_model_arguments

    p = OneLineArgumentParser(prog="python -m magnet.visualize.render",
                              description="Render sampler outputs (ground truth and samples side by side) to "
                                          "mp4 or gif skeleton videos.")
    p.add_argument("path", help="an output .npz file or a run directory of them (sample.py out_dir)")
    p.add_argument("--out", default=None, help="output directory (default: <run dir>/videos)")
    p.add_argument("--samples", type=int, default=None,
                   help="samples per video, beside the ground truth (default: up to 3)")
    p.add_argument("--format", choices=FORMATS, default="mp4", help="mp4 (default) or gif video, or a png still")
    p.add_argument("--frame", type=int, default=None,
                   help="png only: the frame to show (default: the middle of the generated frames)")
    p.add_argument("--fps", type=float, default=None, help="frame rate (default: inf_cfg.yaml fps, else 30)")
    p.add_argument("--max-frames", type=int, default=None, help="render only the first N frames")
    add_body_model_arguments(p)
    p.add_argument("--panel-size", type=int, default=384, help="panel side in pixels (default 384)")
    return p


DEFAULT_CLI_SAMPLES = 3


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point: 0 on success, 2 after one ``error: ...`` line for a user error."""
    from magnet.motion_files import body_model_argument

    args = _parser().parse_args(argv)
    try:
        if args.fps is not None and args.fps <= 0:
            raise ConfigError(f"--fps must be positive, got {args.fps}")
        if args.max_frames is not None and args.max_frames < 1:
            raise ConfigError(f"--max-frames must be >= 1, got {args.max_frames}")
        if args.frame is not None and args.format != "png":
            raise ConfigError("--frame chooses the frame of a still; use it with --format png")
        samples = args.samples
        if samples is None:  # default: up to 3 samples, whatever the files hold
            from magnet.evaluation.io import load_output_npz
            from magnet.motion_files import output_files

            samples = min([DEFAULT_CLI_SAMPLES] + [load_output_npz(f).num_samples for f in output_files(args.path)])
        t0 = time.perf_counter()
        videos = render_outputs(args.path, args.out, samples=samples, format=args.format, fps=args.fps,
                                max_frames=args.max_frames, smplx=body_model_argument(args),
                                panel_px=args.panel_size, still_frame=args.frame, log=print)
    except MagnetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"rendered {len(videos)} {'image' if args.format == 'png' else 'video'}(s) in "
          f"{time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
