"""Interactive 3D viewer of sampler outputs in the browser (viser).

``python -m magnet.visualize.view <run dir or npz> [--port 8080] [--host 127.0.0.1] [--smplx PATH] [--fps F]``
serves a page (open the printed address) with the clip's persons as coloured skeletons on a floor grid, and as
SMPL-X meshes when a model file is known (``--smplx``, else ``smpl_path`` of the run's ``inf_cfg.yaml``, else
``$MAGNET_SMPLX_MODEL``; the built-in default skeleton has no mesh). The panel on the right chooses the clip and
the row (ground truth or any sample), plays / pauses, scrubs with a frame slider, sets the playback speed and
toggles meshes / skeletons; it shows whether the current frame is a context frame (copied from the ground truth)
or generated. The server binds 127.0.0.1 (this machine only) unless ``--host`` says otherwise (``--host 0.0.0.0``
exposes it to the network; for a remote machine prefer ``ssh -L 8080:127.0.0.1:8080 <host>``).

Python API::

    from magnet.visualize.view import MotionViewer
    with MotionViewer("outputs/run", port=8080) as viewer:   # starts the server
        print(viewer.url)
        viewer.show(clip=0, row=1, frame=40)                  # what the GUI does
        viewer.wait()                                         # until Ctrl+C (or viewer.stop() elsewhere)

Needs viser (``pip install -e ".[viewer]"``; ``make install`` includes it).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from magnet.body import BodyModel
from magnet.errors import ConfigError, MagnetError
from magnet.evaluation.io import ClipOutput, load_output_npz
from magnet.visualize.render import BONES, PERSON_COLOURS

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "MotionViewer", "main"]

STOP_TIMEOUT_S = 10.0
"""Seconds the command line waits for the server to shut down after Ctrl+C before it exits anyway."""

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080


def _require_viser():
    try:
        import viser
    except ImportError as exc:
        raise ConfigError("the viewer needs viser, which is not installed; run make install or "
                          "pip install -e '.[viewer]'") from exc
    return viser


@dataclass
class _Clip:
    """One output file, its joints (all rows) and, once asked for, mesh vertices per row."""

    output: ClipOutput
    joints: np.ndarray  # [R, T, P, 22, 3] float32
    vertices: dict[int, np.ndarray] = field(default_factory=dict)  # row -> [T, P, V, 3] float32

    @property
    def name(self) -> str:
        return self.output.name


class MotionViewer:
    """A viser server showing sampler outputs (see the module docstring).

    Args:
        path: an output npz file or a run directory of them.
        host: interface to bind (default 127.0.0.1: this machine only).
        port: TCP port (viser takes the next free one when it is busy; see :attr:`url`).
        smplx: a :class:`~magnet.body.BodyModel` or SMPL-X path for forward kinematics and meshes; None = the run's
            (``inf_cfg.yaml`` ``smpl_path``, ``$MAGNET_SMPLX_MODEL``, default skeleton).
        fps: playback speed (default: the run's ``fps``, else 30).
        verbose: let viser print its own start-up messages.

    Every file is loaded and forward kinematics run before the server starts, so bad input fails early
    (``DataError`` / ``BodyModelError`` / ``ConfigError``).
    """

    def __init__(self, path: str | os.PathLike, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
                 smplx: BodyModel | str | os.PathLike | None = None, fps: float | None = None,
                 verbose: bool = False):
        from magnet.motion_files import clip_joints, output_files, run_body_model, run_fps

        self.path = Path(path)
        self.host, self.requested_port, self.verbose = str(host), int(port), bool(verbose)
        if not 0 <= self.requested_port <= 65535:
            raise ConfigError(f"port {port} is outside 0..65535")
        self.body_model = run_body_model(self.path, smplx)
        self.fps = run_fps(self.path) if fps is None else float(fps)
        if self.fps <= 0:
            raise ConfigError(f"fps must be positive, got {fps}")
        self.clips = []
        for f in output_files(self.path):
            out = load_output_npz(f)
            self.clips.append(_Clip(out, clip_joints(out, self.body_model)))
        self.has_mesh = not self.body_model.is_default
        self.clip_index, self.row, self.frame = 0, 0, 0
        self.server = None
        self._stop = threading.Event()
        self._interrupted = False  # set by the command line's signal handler (a plain flag: safe in a handler)
        self._player: threading.Thread | None = None
        self._lock = threading.RLock()
        self._updating = False

    # ------------------------------------------------------------------------------------------------ life cycle
    @property
    def url(self) -> str:
        """``http://<host>:<port>`` of the running server (the real port)."""
        if self.server is None:
            raise RuntimeError("the viewer is not started")
        return f"http://{self.server.get_host()}:{self.server.get_port()}"

    def start(self) -> MotionViewer:
        """Start the server, build the scene and the controls, start the playback thread; returns self."""
        viser = _require_viser()
        try:
            self.server = viser.ViserServer(host=self.host, port=self.requested_port, verbose=self.verbose)
        except OSError as exc:
            raise ConfigError(f"cannot serve on {self.host}:{self.requested_port} ({exc.strerror or exc}); "
                              "pass another --port or --host") from exc
        try:
            self.server.scene.set_up_direction("+y")
            self._build_gui()
            self._build_scene()
            self.show(0, 0, 0)
        except BaseException:
            self.server.stop()  # no server left running behind an error
            self.server = None
            raise
        self._stop.clear()
        self._interrupted = False
        self._player = threading.Thread(target=self._play_loop, name="magnet-viewer-player", daemon=True)
        self._player.start()
        return self

    def stop(self) -> None:
        """Stop playback and the server (the port is released)."""
        self._stop.set()
        if self._player is not None:
            self._player.join(timeout=5.0)
            self._player = None
        if self.server is not None:
            self.server.stop()
            self.server = None

    def wait(self) -> None:
        """Block until :meth:`stop` is called, :meth:`interrupt` is called, or Ctrl+C."""
        try:
            while not self._interrupted and not self._stop.wait(0.2):
                pass
        except KeyboardInterrupt:
            pass

    def interrupt(self) -> None:
        """Make :meth:`wait` return within 0.2 s (safe to call from a signal handler: it only sets a flag)."""
        self._interrupted = True

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------------------------------------------ scene
    def _rows(self, clip: _Clip) -> list[str]:
        from magnet.motion_files import row_label

        return [row_label(r) for r in range(clip.output.num_samples + 1)]

    def _build_gui(self) -> None:
        gui = self.server.gui
        clip = self.clips[0]
        self.gui_clip = gui.add_dropdown("clip", [c.name for c in self.clips], initial_value=clip.name)
        self.gui_row = gui.add_dropdown("show", self._rows(clip), initial_value="ground truth")
        self.gui_play = gui.add_checkbox("play", initial_value=True)
        self.gui_frame = gui.add_slider("frame", min=0, max=max(clip.output.num_frames - 1, 1), step=1,
                                        initial_value=0)
        self.gui_fps = gui.add_slider("fps", min=1.0, max=120.0, step=1.0, initial_value=float(self.fps))
        self.gui_skeleton = gui.add_checkbox("skeletons", initial_value=True)
        self.gui_mesh = gui.add_checkbox("meshes", initial_value=self.has_mesh, disabled=not self.has_mesh,
                                         hint=None if self.has_mesh else "needs an SMPL-X model file (--smplx)")
        self.gui_status = gui.add_markdown("")

        @self.gui_clip.on_update
        def _(_event) -> None:
            if self._updating:  # our own assignment inside show()
                return
            names = [c.name for c in self.clips]
            self.show(names.index(self.gui_clip.value), 0, 0)

        @self.gui_row.on_update
        def _(_event) -> None:
            if self._updating:
                return
            rows = self._rows(self.clips[self.clip_index])
            if self.gui_row.value in rows:
                self.show(self.clip_index, rows.index(self.gui_row.value), self.frame)

        @self.gui_frame.on_update
        def _(_event) -> None:
            if not self._updating:
                self.show(self.clip_index, self.row, int(self.gui_frame.value))

        @self.gui_skeleton.on_update
        @self.gui_mesh.on_update
        def _(_event) -> None:
            if not self._updating:
                self.show(self.clip_index, self.row, self.frame)

    def _build_scene(self) -> None:
        scene = self.server.scene
        every = np.concatenate([c.joints.reshape(-1, 3) for c in self.clips])
        lo, hi = every.min(axis=0), every.max(axis=0)
        centre = (lo + hi) / 2
        size = float(max(hi[0] - lo[0], hi[2] - lo[2])) + 2.0
        self.floor = scene.add_grid("/floor", width=size, height=size, plane="xz", cell_size=0.5,
                                    section_size=1.0, position=(float(centre[0]), 0.0, float(centre[2])))
        radius = float(np.linalg.norm(hi - lo)) / 2 + 1.0
        self.server.initial_camera.look_at = (float(centre[0]), float(centre[1]), float(centre[2]))
        self.server.initial_camera.position = (float(centre[0]), float(centre[1]) + 0.7 * radius,
                                               float(centre[2]) + 2.0 * radius)
        self.server.initial_camera.up = (0.0, 1.0, 0.0)
        self._persons: list[dict] = []
        max_persons = max(c.output.num_persons for c in self.clips)
        for p in range(max_persons):
            colour = PERSON_COLOURS[p % len(PERSON_COLOURS)]
            seg = np.zeros((len(BONES), 2, 3), np.float32)
            handles = {
                "bones": scene.add_line_segments(f"/person{p}/bones", seg, colour, thickness=0.025),
                "joints": scene.add_point_cloud(f"/person{p}/joints", np.zeros((22, 3), np.float32), colour,
                                                point_size=0.05, point_shape="circle", precision="float32"),
            }
            if self.has_mesh:
                faces = self.body_model.faces.cpu().numpy().astype(np.uint32)
                verts = np.zeros((int(faces.max()) + 1, 3), np.float32)
                handles["mesh"] = scene.add_mesh_simple(f"/person{p}/mesh", verts, faces, color=colour,
                                                        opacity=0.85)
            self._persons.append(handles)

    def mesh_vertices(self, clip_index: int, row: int) -> np.ndarray:
        """SMPL-X vertices ``[T, P, V, 3]`` of one row (computed once per row; needs an SMPL-X file)."""
        import torch

        from magnet.geometry import quat_to_matrix

        clip = self.clips[clip_index]
        if row not in clip.vertices:
            out = clip.output
            f32 = torch.float32
            with torch.no_grad():
                local = quat_to_matrix(torch.as_tensor(out.body_joint_rotations[row], dtype=f32))
                root = torch.as_tensor(out.T_world_root[row], dtype=f32)
                verts, _ = self.body_model.smplx_forward(local, quat_to_matrix(root[..., :4]), root[..., 4:7],
                                                         torch.as_tensor(out.betas[row], dtype=f32))
            clip.vertices[row] = verts.numpy().astype(np.float32)
        return clip.vertices[row]

    # ------------------------------------------------------------------------------------------------ drawing
    def show(self, clip: int, row: int, frame: int) -> None:
        """Show ``frame`` of ``row`` (0 = ground truth, k = sample k) of clip number ``clip`` (file order)."""
        from magnet.motion_files import row_frames, row_label

        with self._lock:
            if not 0 <= clip < len(self.clips):
                raise ConfigError(f"clip {clip} is out of range 0..{len(self.clips) - 1}")
            c = self.clips[clip]
            rows = c.output.num_samples + 1
            if not 0 <= row < rows:
                raise ConfigError(f"row {row} is out of range: {c.output.path} holds the ground truth (0) and "
                                  f"samples 1..{rows - 1}")
            frame = int(min(max(frame, 0), c.output.num_frames - 1))
            changed_clip = clip != self.clip_index
            self.clip_index, self.row, self.frame = clip, row, frame
            if self.server is None:
                return
            self._updating = True
            try:
                if changed_clip or self.gui_clip.value != c.name:
                    self.gui_clip.value = c.name
                    self.gui_row.options = self._rows(c)
                    self.gui_frame.max = max(c.output.num_frames - 1, 1)
                if self.gui_row.value != row_label(row):
                    self.gui_row.value = row_label(row)
                if int(self.gui_frame.value) != frame:
                    self.gui_frame.value = frame
            finally:
                self._updating = False
            valid = row_frames(c.output, row)
            present = frame < valid
            joints = c.joints[row, frame]  # [P, 22, 3]
            parents = [p for p, _ in BONES]
            children = [j for _, j in BONES]
            show_mesh = self.has_mesh and bool(self.gui_mesh.value)
            verts = self.mesh_vertices(clip, row)[frame] if show_mesh and present else None
            with self.server.atomic():
                for p, handles in enumerate(self._persons):
                    here = present and p < c.output.num_persons
                    if here:
                        handles["bones"].points = np.stack([joints[p, parents], joints[p, children]], axis=1)
                        handles["joints"].points = joints[p]
                    for key in ("bones", "joints"):
                        handles[key].visible = here and bool(self.gui_skeleton.value)
                    if "mesh" in handles:
                        if here and verts is not None:
                            handles["mesh"].vertices = verts[p]
                        handles["mesh"].visible = here and verts is not None
            ctx = c.output.context_timesteps
            if not present:
                state = f"no frames (this row ends at frame {valid})"
            elif frame < ctx:
                state = "**context** (copied from the ground truth)"
            else:
                state = "ground truth" if row == 0 else "**generated**"
            task = c.output.mode or "unknown task"
            self.gui_status.content = (
                f"frame {frame + 1} / {c.output.num_frames}: {state}  \n"
                f"{task}, {c.output.num_persons} person(s), context {ctx} frames, {c.output.num_samples} "
                f"sample(s)  \nbody model: {self.body_model.source}")

    def _play_loop(self) -> None:
        next_time = time.perf_counter()
        while not self._stop.is_set():
            fps = float(self.gui_fps.value) if self.server is not None else self.fps
            next_time += 1.0 / max(fps, 1e-3)
            delay = next_time - time.perf_counter()
            if delay > 0:
                self._stop.wait(delay)
            else:
                next_time = time.perf_counter()
            if self._stop.is_set() or self.server is None:
                break
            if bool(self.gui_play.value):
                n = self.clips[self.clip_index].output.num_frames
                self.show(self.clip_index, self.row, (self.frame + 1) % n)


def _parser():
    from magnet.cli import OneLineArgumentParser
    from magnet.motion_files import add_body_model_arguments

    p = OneLineArgumentParser(prog="python -m magnet.visualize.view",
                              description="Browse sampler outputs in 3D in the browser (viser).")
    p.add_argument("path", help="an output .npz file or a run directory of them")
    p.add_argument("--host", default=DEFAULT_HOST, help="interface to bind (default 127.0.0.1: this machine only; "
                                                        "0.0.0.0 exposes the viewer to the network)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="port (default 8080; the next free one if busy)")
    add_body_model_arguments(p)
    p.add_argument("--fps", type=float, default=None, help="playback speed (default: inf_cfg.yaml fps, else 30)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point: serves until Ctrl+C; 2 after one ``error: ...`` line for a user error."""
    from magnet.motion_files import body_model_argument

    args = _parser().parse_args(argv)
    try:
        viewer = MotionViewer(args.path, host=args.host, port=args.port, smplx=body_model_argument(args),
                              fps=args.fps)
        viewer.start()
    except MagnetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    # Ctrl+C / SIGTERM only set a flag, installed before the address is printed: no KeyboardInterrupt can land
    # inside viser's or threading's code, or before the wait below, leaving the process hanging or killed by the
    # signal instead of stopping cleanly.
    handlers = {sig: signal.signal(sig, lambda *_: viewer.interrupt()) for sig in (signal.SIGINT, signal.SIGTERM)}
    mesh = "skeletons and SMPL-X meshes" if viewer.has_mesh else "skeletons (pass --smplx for meshes)"
    print(f"viewer: {len(viewer.clips)} clip(s) of {args.path}, {mesh}, at {viewer.url} (Ctrl+C to stop)",
          flush=True)
    try:
        viewer.wait()
    finally:
        _stop_within(viewer, STOP_TIMEOUT_S)
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    return 0


def _stop_within(viewer: MotionViewer, timeout: float) -> None:
    """Stop the viewer; if the server does not shut down within ``timeout`` seconds, exit the process anyway."""
    worker = threading.Thread(target=viewer.stop, name="magnet-viewer-stop", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        print(f"viewer: the server did not stop within {timeout:.0f} s; exiting", file=sys.stderr, flush=True)
        os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
