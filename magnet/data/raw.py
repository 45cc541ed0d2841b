"""Raw SMPL-X sequences and adapters for the raw layouts of the supported datasets.

A :class:`RawSequence` holds one clip of 1-4 persons as SMPL-X parameters, persons first:

=================  ================  =======================================================================
field              shape             meaning
=================  ================  =======================================================================
``name``           str               sequence name (the HDF5 dataset key)
``fps``            float             frame rate of the raw data
``betas``          ``[P, 10]``       SMPL-X shape (first 10 components; fewer are zero-padded)
``global_orient``  ``[P, T, 3]``     root orientation, axis-angle (rotates about the pelvis joint J0)
``body_pose``      ``[P, T, 21, 3]`` local axis-angle of SMPL-X joints 1..21
``hand_pose``      ``[P, T, 30, 3]`` 15 left then 15 right finger joints (axis-angle), or ``None`` (identity)
``transl``         ``[P, T, 3]``     SMPL-X ``transl``: world pelvis = ``transl + J0(betas)``
``up_axis``        ``"y"|"z"``       up axis of the raw world frame
``meta``           dict              ``path`` (source file or folder), ``format``, ``files``, ...
=================  ================  =======================================================================

Raw layouts read by :func:`load_raw` (``.npz`` files, or ``.pkl``/``.pickle`` files holding a dict of arrays;
pickles can run code when loaded, so only read files you trust). Key aliases are tried in the order given.
Per-frame arrays may be stored persons-first ``[P, T, ...]``, time-first ``[T, P, ...]`` or for a single person
``[T, ...]``. The person axis is the one of length <= 4 when the other is longer; an integer key
``person_axis`` (0 = persons first, 1 = time first) decides explicitly (needed for clips of <= 4 frames).
Pose arrays may be flat (``63``, ``45``) or split per joint (``21 x 3``, ``15 x 3``). ``betas`` may be ``[B]``,
``[P, B]``, ``[T, B]`` (single person) or ``[P, T, B]`` / ``[T, P, B]`` (the first frame is used).
An optional scalar key ``fps`` / ``mocap_framerate`` / ``mocap_frame_rate`` / ``frame_rate`` overrides the
default frame rate of the layout.

* ``dd100`` (z-up, 30 fps): ``poses [P,T,165]`` in the full SMPL-X layout (0:3 global orientation, 3:66 body,
  66:75 jaw and eyes (ignored), 75:120 left hand, 120:165 right hand), ``transl`` or ``trans [P,T,3]``,
  ``betas``; an optional ``global_orient [P,T,3]`` replaces ``poses[..., 0:3]``.
* ``duobox`` (y-up, 30 fps): ``body_pose [P,T,63]``, ``global_orient [P,T,3]``, ``transl``/``trans [P,T,3]``,
  ``betas``; optional ``left_hand_pose``/``right_hand_pose [P,T,45]`` (else hands are the identity).
* ``embody3d`` (y-up, 30 fps): as ``duobox`` with ``left_hand_pose`` and ``right_hand_pose [P,T,45]`` required.
* ``interx`` (y-up, 120 fps): ``body_pose``/``pose_body [P,T,63]``, ``global_orient``/``root_orient [P,T,3]``,
  ``transl``/``trans [P,T,3]``, ``betas``; optional hands ``left_hand_pose``/``pose_lhand`` and
  ``right_hand_pose``/``pose_rhand [P,T,45]``.
* ``amass`` (z-up, like the AMASS release): ``poses [T,156]`` (SMPL-H: 0:3 root, 3:66 body, 66:111 left hand,
  111:156 right hand) or ``[T,165]`` (SMPL-X layout as in ``dd100``), ``trans``/``transl [T,3]``, ``betas``,
  and the frame rate ``mocap_framerate`` (or ``mocap_frame_rate``/``fps``) is required.

Several files holding the persons of one scene are combined: :func:`load_raw` on a folder concatenates the
persons of every raw file in it (sorted by file name), and :func:`discover_raw` groups files whose stems carry a
person tag (``P1``, ``<base>_p0``, ``<base>_person1``, ``<base>_leader`` / ``<base>_follower``) into one
sequence named ``<base>`` (the folder name when the stem is only the tag, as in Inter-X ``<scene>/P1.npz``).
Files of one scene with different lengths are cut to the shortest (with a warning).
"""

from __future__ import annotations

import dataclasses
import math
import pickle
import re
import warnings
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from magnet.errors import DataError

FORMATS = ("dd100", "duobox", "embody3d", "interx", "amass")
RAW_SUFFIXES = (".npz", ".pkl", ".pickle")
NUM_BETAS = 10

_LAYOUT_HELP = {
    "dd100": "poses [P,T,165], transl or trans [P,T,3], betas [P,10]",
    "duobox": "body_pose [P,T,63], global_orient [P,T,3], transl [P,T,3], betas [P,10]",
    "embody3d": "body_pose [P,T,63], global_orient [P,T,3], transl [P,T,3], betas [P,10], "
    "left_hand_pose and right_hand_pose [P,T,45]",
    "interx": "body_pose or pose_body [P,T,63], global_orient or root_orient [P,T,3], transl or trans [P,T,3], "
    "betas [P,10]",
    "amass": "poses [T,156 or 165], trans [T,3], betas [16], mocap_framerate",
}
_DEFAULTS = {  # format -> (fps, up_axis)
    "dd100": (30.0, "z"),
    "duobox": (30.0, "y"),
    "embody3d": (30.0, "y"),
    "interx": (120.0, "y"),
    "amass": (None, "z"),
}
_FPS_KEYS = ("fps", "mocap_framerate", "mocap_frame_rate", "frame_rate")
_PERSON_TAG = re.compile(r"^(?P<base>.*?)(?:^|[_\-.])(?:(?:p|person)(?P<idx>\d+)|(?P<role>leader|follower))$", re.IGNORECASE)


@dataclasses.dataclass
class RawSequence:
    """One raw clip of 1-4 persons in SMPL-X parameters, persons first (see the module docstring)."""

    name: str
    fps: float
    betas: np.ndarray  # [P, 10]
    global_orient: np.ndarray  # [P, T, 3]
    body_pose: np.ndarray  # [P, T, 21, 3]
    hand_pose: np.ndarray | None  # [P, T, 30, 3]
    transl: np.ndarray  # [P, T, 3]
    up_axis: str = "y"
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def num_persons(self) -> int:
        return int(np.shape(self.global_orient)[0])

    @property
    def num_frames(self) -> int:
        return int(np.shape(self.global_orient)[1])

    @property
    def source(self) -> str:
        """The source file (or the name when the sequence did not come from a file), for error messages."""
        return str(self.meta.get("path", self.name))

    def validate(self) -> RawSequence:
        """Check shapes, person count (1..4), frame rate, up axis and finite values; return ``self``.

        Raises ``DataError`` naming the source file and the offending key.
        """
        src = self.source
        if not isinstance(self.name, str) or not self.name:
            raise DataError(f"{src}: the sequence name must be a non-empty string, got {self.name!r}")
        try:
            fps = float(self.fps)
        except (TypeError, ValueError):
            fps = float("nan")
        if not (math.isfinite(fps) and fps > 0):
            raise DataError(f"{src}: key 'fps' must be a positive number, got {self.fps!r}")
        if self.up_axis not in ("y", "z"):
            raise DataError(f"{src}: up_axis must be 'y' or 'z', got {self.up_axis!r}")
        go = np.asarray(self.global_orient)
        if go.ndim != 3 or go.shape[-1] != 3:
            raise DataError(f"{src}: key 'global_orient' has shape {list(go.shape)}, expected [P,T,3]")
        P, T = go.shape[:2]
        if not 1 <= P <= 4:
            raise DataError(f"{src}: {P} persons in the sequence, expected 1 to 4")
        if T < 1:
            raise DataError(f"{src}: the sequence has no frames")
        expected = {
            "betas": (P, NUM_BETAS),
            "global_orient": (P, T, 3),
            "body_pose": (P, T, 21, 3),
            "transl": (P, T, 3),
        }
        if self.hand_pose is not None:
            expected["hand_pose"] = (P, T, 30, 3)
        for key, shape in expected.items():
            arr = np.asarray(getattr(self, key))
            if tuple(arr.shape) != shape:
                raise DataError(
                    f"{src}: key '{key}' has shape {list(arr.shape)}, expected {list(shape)} "
                    f"(P={P} persons, T={T} frames)"
                )
            if not np.issubdtype(arr.dtype, np.number):
                raise DataError(f"{src}: key '{key}' is not numeric (dtype {arr.dtype})")
            if not np.all(np.isfinite(arr)):
                bad = np.argwhere(~np.isfinite(arr))[0].tolist()
                raise DataError(f"{src}: key '{key}' holds NaN or infinite values (first at index {bad})")
        return self


# --------------------------------------------------------------------------------------------- file reading


def _read_file(path: Path) -> dict[str, Any]:
    """Read one raw file into a dict of arrays (``.npz`` or a pickled dict)."""
    suffix = path.suffix.lower()
    if not path.is_file():
        raise DataError(f"{path}: raw file not found")
    try:
        if suffix == ".npz":
            if not zipfile.is_zipfile(path):  # np.load would blame pickled data for any non-zip content
                raise DataError(f"{path}: not a valid .npz file (not a zip archive; truncated or corrupt); re-export it")
            with np.load(path, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        if suffix in (".pkl", ".pickle"):
            with open(path, "rb") as f:
                obj = pickle.load(f)
            if not isinstance(obj, dict):
                raise DataError(f"{path}: the pickle holds a {type(obj).__name__}, expected a dict of arrays")
            return dict(obj)
    except DataError:
        raise
    except (OSError, ValueError, EOFError, KeyError, pickle.UnpicklingError, zipfile.BadZipFile,
            ImportError, AttributeError, TypeError) as exc:  # the last three: pickles of unavailable classes
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"{path}: cannot read the raw file ({msg}); re-export it") from None
    raise DataError(f"{path}: unsupported file type '{suffix}', expected one of {', '.join(RAW_SUFFIXES)}")


class _Reader:
    """Key lookup and axis handling for one raw file of a given layout."""

    def __init__(self, data: dict[str, Any], path: Path, fmt: str):
        self.data, self.path, self.fmt = data, path, fmt
        axis = data.get("person_axis")
        self.person_axis = None if axis is None else int(np.asarray(axis).reshape(-1)[0])
        if self.person_axis not in (None, 0, 1):
            raise DataError(f"{path}: key 'person_axis' must be 0 (persons first) or 1 (time first)")

    def has(self, *names: str) -> bool:
        return any(n in self.data for n in names)

    def get(self, *names: str) -> tuple[str, np.ndarray]:
        """The first present key among ``names`` (aliases) and its array, else DataError for ``names[0]``."""
        for n in names:
            if n in self.data:
                try:
                    arr = np.asarray(self.data[n])
                except (TypeError, ValueError):  # ragged lists, objects
                    arr = None
                if arr is None or not np.issubdtype(arr.dtype, np.number):
                    raise DataError(f"{self.path}: key '{n}' is not a numeric array")
                return n, arr.astype(np.float64)
        raise DataError(f"{self.path}: missing key '{names[0]}' ({self.fmt} layout expects {_LAYOUT_HELP[self.fmt]})")

    def per_frame(self, *names: str, width: int, joints: int | None = None) -> np.ndarray:
        """Per-frame array as ``[P, T, width]`` (a ``[..., joints, 3]`` layout is flattened first)."""
        key, arr = self.get(*names)
        if joints is not None and arr.ndim >= 2 and arr.shape[-2:] == (joints, 3):
            arr = arr.reshape(*arr.shape[:-2], joints * 3)
        if arr.ndim not in (2, 3) or arr.shape[-1] != width:
            raise DataError(
                f"{self.path}: key '{key}' has shape {list(arr.shape)}, expected [P,T,{width}], [T,P,{width}] "
                f"or [T,{width}] ({self.fmt} layout)"
            )
        if arr.ndim == 2:
            return arr[None]
        a, b = arr.shape[:2]
        axis = self.person_axis
        if axis is None:
            if a <= 4 < b:
                axis = 0
            elif b <= 4 < a:
                axis = 1
            elif a == 1:
                axis = 0
            elif b == 1:
                axis = 1
            else:
                raise DataError(
                    f"{self.path}: key '{key}' has shape {list(arr.shape)}: cannot tell the person axis from the "
                    f"time axis; add an integer key 'person_axis' (0 = [P,T,...], 1 = [T,P,...])"
                )
        return arr if axis == 0 else np.swapaxes(arr, 0, 1)

    def betas(self, num_persons: int) -> np.ndarray:
        """``[P, 10]`` (first 10 components; zero-padded when fewer are stored)."""
        key, b = self.get("betas")
        P = num_persons
        if b.ndim == 1:
            b = np.broadcast_to(b, (P, b.shape[0]))
        elif b.ndim == 2:
            if b.shape[0] != P:
                if P != 1:
                    raise DataError(f"{self.path}: key '{key}' has shape {list(b.shape)}, expected [{P},10]")
                b = b[:1]  # per-frame betas of one person: take the first frame
        elif b.ndim == 3:
            if b.shape[0] == P and (self.person_axis in (None, 0)):
                b = b[:, 0]
            elif b.shape[1] == P:
                b = b[0]
            else:
                raise DataError(f"{self.path}: key '{key}' has shape {list(b.shape)}, expected [{P},10]")
        else:
            raise DataError(f"{self.path}: key '{key}' has shape {list(b.shape)}, expected [{P},10]")
        out = np.zeros((P, NUM_BETAS))
        n = min(NUM_BETAS, b.shape[-1])
        out[:, :n] = b[:, :n]
        return out

    def fps(self, default: float | None) -> float:
        for k in _FPS_KEYS:
            if k in self.data:
                try:
                    return float(np.asarray(self.data[k]).reshape(-1)[0])
                except (TypeError, ValueError, IndexError):
                    raise DataError(f"{self.path}: key '{k}' is not a number") from None
        if default is None:
            raise DataError(f"{self.path}: missing key 'mocap_framerate' ({self.fmt} layout expects "
                            f"{_LAYOUT_HELP[self.fmt]})")
        return default


def _hands_from(r: _Reader, left: tuple[str, ...], right: tuple[str, ...], required: bool) -> np.ndarray | None:
    if not required and not (r.has(*left) or r.has(*right)):
        return None
    lh = r.per_frame(*left, width=45, joints=15)
    rh = r.per_frame(*right, width=45, joints=15)
    if lh.shape[:2] != rh.shape[:2]:
        raise DataError(f"{r.path}: '{left[0]}' {list(lh.shape)} and '{right[0]}' {list(rh.shape)} differ in P or T")
    return np.concatenate([lh, rh], axis=-1)


def _read_layout(data: dict[str, Any], path: Path, fmt: str) -> dict[str, Any]:
    """Arrays of one file as ``global_orient [P,T,3]``, ``body_pose [P,T,63]``, ``hand_pose [P,T,90] | None``,
    ``transl [P,T,3]``, ``betas [P,10]``, ``fps``."""
    r = _Reader(data, path, fmt)
    default_fps = _DEFAULTS[fmt][0]
    if fmt in ("dd100", "amass"):
        _, poses = r.get("poses")
        widths = (165,) if fmt == "dd100" else (156, 165)
        if poses.shape[-1] not in widths:
            raise DataError(
                f"{path}: key 'poses' has last dimension {poses.shape[-1]}, expected "
                f"{' or '.join(map(str, widths))} ({fmt} layout expects {_LAYOUT_HELP[fmt]})"
            )
        poses = r.per_frame("poses", width=poses.shape[-1])
        glob = poses[..., 0:3]
        if fmt == "dd100" and r.has("global_orient"):
            glob = r.per_frame("global_orient", width=3)
        body = poses[..., 3:66]  # SMPL-X/SMPL-H body joints 1..21 (sliced once, unlike the reference)
        hands = poses[..., 66:156] if poses.shape[-1] == 156 else poses[..., 75:165]
        transl = r.per_frame("transl", "trans", width=3)
    else:
        body_keys = ("body_pose", "pose_body") if fmt == "interx" else ("body_pose",)
        glob_keys = ("global_orient", "root_orient") if fmt == "interx" else ("global_orient",)
        body = r.per_frame(*body_keys, width=63, joints=21)
        glob = r.per_frame(*glob_keys, width=3)
        transl = r.per_frame("transl", "trans", width=3)
        left = ("left_hand_pose", "pose_lhand")
        right = ("right_hand_pose", "pose_rhand")
        hands = _hands_from(r, left, right, required=fmt == "embody3d")
    shapes = {"global_orient": glob.shape[:2], "body_pose": body.shape[:2], "transl": transl.shape[:2]}
    if hands is not None:
        shapes["hand_pose"] = hands.shape[:2]
    if len(set(shapes.values())) != 1:
        desc = ", ".join(f"{k} {list(v)}" for k, v in shapes.items())
        raise DataError(f"{path}: persons/frames disagree between keys ({desc}); expected the same [P,T]")
    P = glob.shape[0]
    return {
        "global_orient": glob,
        "body_pose": body,
        "hand_pose": hands,
        "transl": transl,
        "betas": r.betas(P),
        "fps": r.fps(default_fps),
    }


# --------------------------------------------------------------------------------------------- public API


def _check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise DataError(f"unknown raw format '{fmt}'; choose one of {', '.join(FORMATS)}")
    return fmt


def _raw_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in RAW_SUFFIXES)


def load_raw_files(
    paths: Sequence[str | Path],
    fmt: str,
    *,
    name: str | None = None,
    fps: float | None = None,
    up_axis: str | None = None,
) -> RawSequence:
    """Load the persons of one scene from one or more raw files (persons concatenated in the given order).

    ``fps`` / ``up_axis`` override the layout's defaults (and any frame-rate key in the files).
    Returns a validated :class:`RawSequence`.
    """
    _check_format(fmt)
    paths = [Path(p) for p in paths]
    if not paths:
        raise DataError("load_raw_files: no raw files given")
    parts = [_read_layout(_read_file(p), p, fmt) for p in paths]
    src = paths[0] if len(paths) == 1 else paths[0].parent
    rates = {float(p["fps"]) for p in parts}
    if fps is None and len(rates) > 1:
        raise DataError(f"{src}: the files of one scene have different frame rates {sorted(rates)}")
    T = min(p["transl"].shape[1] for p in parts)
    if any(p["transl"].shape[1] != T for p in parts):
        lengths = [p["transl"].shape[1] for p in parts]
        warnings.warn(f"{src}: person files have different lengths {lengths}; cut to the shortest ({T} frames)",
                      stacklevel=2)

    def cat(key: str) -> np.ndarray:
        return np.concatenate([p[key][:, :T] for p in parts], axis=0)

    has_hands = [p["hand_pose"] is not None for p in parts]
    if any(has_hands) and not all(has_hands):
        for p in parts:
            if p["hand_pose"] is None:
                p["hand_pose"] = np.zeros(p["body_pose"].shape[:2] + (90,))
    P = sum(p["transl"].shape[0] for p in parts)
    hands = cat("hand_pose").reshape(P, T, 30, 3) if any(has_hands) else None
    seq_name = name if name is not None else (paths[0].stem if len(paths) == 1 else paths[0].parent.name)
    seq = RawSequence(
        name=seq_name,
        fps=float(fps) if fps is not None else parts[0]["fps"],
        betas=np.concatenate([p["betas"] for p in parts], axis=0),
        global_orient=cat("global_orient"),
        body_pose=cat("body_pose").reshape(P, T, 21, 3),
        hand_pose=hands,
        transl=cat("transl"),
        up_axis=up_axis if up_axis is not None else _DEFAULTS[fmt][1],
        meta={"path": str(src), "format": fmt, "files": [str(p) for p in paths]},
    )
    return seq.validate()


def load_raw(path: str | Path, fmt: str, *, name: str | None = None, fps: float | None = None,
             up_axis: str | None = None) -> RawSequence:
    """Load one raw sequence in layout ``fmt`` (one of :data:`FORMATS`).

    ``path`` is a raw file holding all persons, or a folder whose raw files each hold persons of the same scene
    (concatenated in file-name order). Raises ``DataError`` naming the file and key on any problem.
    """
    _check_format(fmt)
    path = Path(path)
    if path.is_dir():
        files = _raw_files(path)
        if not files:
            raise DataError(f"{path}: no raw files ({', '.join(RAW_SUFFIXES)}) in the folder")
        return load_raw_files(files, fmt, name=name or path.name, fps=fps, up_axis=up_axis)
    if not path.exists():
        raise DataError(f"{path}: raw file or folder not found")
    return load_raw_files([path], fmt, name=name, fps=fps, up_axis=up_axis)


@dataclasses.dataclass(frozen=True)
class RawSource:
    """One sequence found on disk: its name and the files holding its persons (in person order)."""

    name: str
    files: tuple[Path, ...]


def discover_raw(root: str | Path) -> list[RawSource]:
    """Find the raw sequences under ``root`` (recursively), sorted by name.

    Every raw file is one sequence named by its stem, except files whose stems carry a person tag (``P1``,
    ``<base>_p0``, ``<base>_person1``, ``<base>_leader``/``<base>_follower``): those of one folder with the same
    base form one sequence (persons ordered by tag; leader before follower) named ``<base>``, or the folder name
    when the stem is only the tag. Two sequences with the same name raise ``DataError``.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: input folder not found; pass the folder holding the raw sequence files")
    groups: dict[tuple[Path, str], list[tuple[int, str, Path]]] = {}
    singles: list[RawSource] = []
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path.suffix.lower() not in RAW_SUFFIXES:
            continue
        m = _PERSON_TAG.match(path.stem)
        if m is None:
            singles.append(RawSource(path.stem, (path,)))
            continue
        idx = int(m["idx"]) if m["idx"] is not None else (0 if m["role"].lower() == "leader" else 1)
        base = m["base"] or path.parent.name
        groups.setdefault((path.parent, base), []).append((idx, path.name, path))
    sources = singles + [
        RawSource(base, tuple(p for _, _, p in sorted(items))) for (_, base), items in groups.items()
    ]
    seen: dict[str, RawSource] = {}
    for s in sources:
        if s.name in seen:
            raise DataError(
                f"{root}: two sequences are named '{s.name}' ({seen[s.name].files[0]} and {s.files[0]}); "
                f"rename one of them"
            )
        seen[s.name] = s
    return sorted(sources, key=lambda s: s.name)


class RawDirectory:
    """The raw sequences under a folder, loaded lazily one at a time (``len()`` and ``names`` without loading).

    Iterating yields validated :class:`RawSequence` objects in name order.
    """

    def __init__(self, root: str | Path, fmt: str, *, fps: float | None = None, up_axis: str | None = None):
        self.fmt = _check_format(fmt)
        self.root = Path(root)
        self.fps, self.up_axis = fps, up_axis
        self.sources = discover_raw(self.root)

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.sources]

    def __len__(self) -> int:
        return len(self.sources)

    def __iter__(self) -> Iterator[RawSequence]:
        for s in self.sources:
            yield load_raw_files(s.files, self.fmt, name=s.name, fps=self.fps, up_axis=self.up_axis)
