"""Reading and writing generated-motion outputs: one npz per clip plus ``inf_cfg.yaml`` (spec 7.1 / 7.2).

An output npz holds the ground truth in row 0 and S generated samples in rows 1..S:

=============================== ======================== ==================================================
key                             shape / type             content
=============================== ======================== ==================================================
``betas``                       float [1+S, T, P, 10]    SMPL-X shape per frame
``T_world_root``                float [1+S, T, P, 7]     pelvis pose ``[qw, qx, qy, qz, tx, ty, tz]``, world
``body_joint_rotations``        float [1+S, T, P, 21, 4] local wxyz quaternions of SMPL-X joints 1..21
``hand_joint_rotations``        float [1+S, T, P, 30, 4] hands (all zeros = "no hands", never evaluated)
``context_timesteps``           int                      frames of GT context at the start
``timesteps``                   int                      generated length (<= T)
``gt_timesteps`` (optional)     int                      valid GT length (VQ-VAE outputs have none)
``mode`` (optional)             str                      the sampling task
``joint_phase_start_timesteps`` int (optional)           -1, or the first joint-phase frame of pp2joint
=============================== ======================== ==================================================

``inf_cfg.yaml`` next to the npz files names the sampling task (``sampling_task``; ``task_mode`` is accepted,
both at the top level or under ``sampling_cfg``; one of :data:`SAMPLING_TASKS`) and the body model (``smpl_path``,
null = default skeleton). The reference writes it with OmegaConf, whose paths carry the tag
``!!python/object/apply:pathlib.PosixPath``; :func:`load_yaml` reads such a tag as the path's string and refuses
every other Python tag (nothing is imported or executed).
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from yaml.constructor import ConstructorError

from magnet.errors import ConfigError, DataError
from magnet.utils import atomic_path

__all__ = [
    "INF_CFG_NAME",
    "MOTION_KEYS",
    "SAMPLING_TASKS",
    "ClipOutput",
    "InferenceConfig",
    "check_task",
    "list_output_files",
    "load_output_npz",
    "load_yaml",
    "read_inference_config",
    "write_inference_config",
    "write_output_npz",
]

INF_CFG_NAME = "inf_cfg.yaml"
# motion arrays and their trailing shapes after [1+S, T, P]
MOTION_KEYS: dict[str, tuple[int, ...]] = {
    "betas": (10,),
    "T_world_root": (7,),
    "body_joint_rotations": (21, 4),
    "hand_joint_rotations": (30, 4),
}
_INT_KEYS = ("context_timesteps", "timesteps", "gt_timesteps", "joint_phase_start_timesteps")
_REQUIRED_INTS = ("context_timesteps", "timesteps")
# every sampling task the reference's inference writes (spec 4.3, 4.4, 4.9)
SAMPLING_TASKS = (
    "joint",
    "next_token",
    "partner_prediction",
    "motion_control_live",
    "motion_control",
    "partner_inpainting",
    "inbetweening",
    "agentic_turn_taking",
    "agentic_sync",
    "pp2joint",
)


def check_task(task: str, where: str) -> str:
    """``task`` if it is one of :data:`SAMPLING_TASKS`, else a :class:`ConfigError` naming ``where`` and the
    known tasks."""
    if task not in SAMPLING_TASKS:
        raise ConfigError(f"{where}: unknown sampling task {task!r}; known tasks: {', '.join(SAMPLING_TASKS)}")
    return task


# ------------------------------------------------------------------------------------------------ YAML
class _PathTagLoader(yaml.SafeLoader):
    """PyYAML's safe loader plus OmegaConf's pathlib tags (read as plain strings)."""


_PATH_TAG = "tag:yaml.org,2002:python/object/apply:pathlib."
_POSIX_PATHS = ("PosixPath", "PurePosixPath", "Path", "PurePath")
_WINDOWS_PATHS = ("WindowsPath", "PureWindowsPath")


def _construct_path(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> str:
    """``!!python/object/apply:pathlib.PosixPath [part, ...]`` -> the path string; nothing is imported."""
    from pathlib import PurePosixPath, PureWindowsPath

    if suffix not in _POSIX_PATHS + _WINDOWS_PATHS:
        raise ConstructorError(None, None, f"unsupported tag {node.tag!r}", node.start_mark)
    if isinstance(node, yaml.SequenceNode):
        parts = loader.construct_sequence(node, deep=True)
    elif isinstance(node, yaml.MappingNode):  # the long form {args: [...]}
        parts = loader.construct_mapping(node, deep=True).get("args", [])
    else:
        parts = [loader.construct_scalar(node)]
    if not all(isinstance(p, str) for p in parts):
        raise ConstructorError(None, None, f"{node.tag!r} needs string parts, got {parts!r}", node.start_mark)
    if not parts:
        return "."
    return str((PureWindowsPath if suffix in _WINDOWS_PATHS else PurePosixPath)(*parts))


_PathTagLoader.add_multi_constructor(_PATH_TAG, _construct_path)


def load_yaml(text: str) -> Any:
    """Parse YAML like ``yaml.safe_load``, reading OmegaConf's ``!!python/object/apply:pathlib.*Path`` tags as path
    strings. Any other Python tag raises ``yaml.YAMLError`` (a ConstructorError): nothing gets executed."""
    return yaml.load(text, Loader=_PathTagLoader)


@dataclass
class ClipOutput:
    """One clip's output file (validated). Arrays are numpy float32 with row 0 = GT and rows 1..S = samples.

    Attributes:
        path: the npz file; ``name`` is its stem (the clip name).
        betas: ``[1+S, T, P, 10]``; T_world_root: ``[1+S, T, P, 7]`` (wxyz + xyz);
        body_joint_rotations: ``[1+S, T, P, 21, 4]``; hand_joint_rotations: ``[1+S, T, P, 30, 4]``.
        context_timesteps, timesteps: ints; gt_timesteps, joint_phase_start_timesteps: int or None;
        mode: the task string or None.
    """

    path: Path
    betas: np.ndarray
    T_world_root: np.ndarray
    body_joint_rotations: np.ndarray
    hand_joint_rotations: np.ndarray
    context_timesteps: int
    timesteps: int
    gt_timesteps: int | None = None
    mode: str | None = None
    joint_phase_start_timesteps: int | None = None

    @property
    def name(self) -> str:
        return self.path.stem

    @property
    def num_samples(self) -> int:
        """S, the number of generated rows (rows 1..S)."""
        return int(self.betas.shape[0]) - 1

    @property
    def num_frames(self) -> int:
        """T, the stored length of every row."""
        return int(self.betas.shape[1])

    @property
    def num_persons(self) -> int:
        return int(self.betas.shape[2])

    @property
    def gt_end(self) -> int:
        """End of the valid GT frames: ``gt_timesteps`` if present, else ``timesteps`` (VQ-VAE outputs)."""
        return self.gt_timesteps if self.gt_timesteps is not None else self.timesteps


# ------------------------------------------------------------------------------------------------- validation
def _scalar_int(value: np.ndarray, where: str, key: str) -> int:
    arr = np.asarray(value)
    if arr.size != 1 or arr.dtype.kind not in "iuf":
        raise DataError(f"{where}: key '{key}' must be one integer, got dtype {arr.dtype} shape {arr.shape}; "
                        "regenerate the file")
    v = arr.reshape(()).item()
    if isinstance(v, float) and (not np.isfinite(v) or v != int(v)):
        raise DataError(f"{where}: key '{key}' must be an integer, got {v}; regenerate the file")
    return int(v)


def _check_finite(arr: np.ndarray, where: str, key: str) -> None:
    finite = np.isfinite(arr)
    if not finite.all():
        idx = tuple(int(i) for i in np.argwhere(~finite)[0])
        row, frame, person = idx[:3]
        raise DataError(f"{where}: key '{key}' has NaN/Inf at row {row} (0 = GT), frame {frame}, person {person}; "
                        "the generated motion is broken, regenerate it")


def _check_quats(arr: np.ndarray, where: str, key: str) -> None:
    norm = np.linalg.norm(arr, axis=-1)
    bad = norm < 1e-6
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        raise DataError(f"{where}: key '{key}' has a zero quaternion at row {idx[0]} (0 = GT), frame {idx[1]}, "
                        f"person {idx[2]}; rotations must be non-zero wxyz quaternions")


def validate_clip(clip: ClipOutput) -> ClipOutput:
    """Check shapes, consistency, finiteness and the frame counters of ``clip``; return it (DataError on failure)."""
    where = str(clip.path)
    lead = None
    for key, tail in MOTION_KEYS.items():
        arr = getattr(clip, key)
        if arr.ndim != 3 + len(tail) or tuple(arr.shape[3:]) != tail:
            want = "[1+S, T, P, " + ", ".join(str(t) for t in tail) + "]"
            raise DataError(f"{where}: key '{key}' has shape {tuple(arr.shape)}, expected {want}; "
                            "regenerate the file")
        if lead is None:
            lead = tuple(arr.shape[:3])
        elif tuple(arr.shape[:3]) != lead:
            raise DataError(f"{where}: key '{key}' has [rows, frames, persons] = {tuple(arr.shape[:3])} but "
                            f"'betas' has {lead}; all motion keys must agree")
        _check_finite(arr, where, key)
    rows, frames, persons = lead
    if rows < 2:
        raise DataError(f"{where}: {rows} row(s) on axis 0, need the GT (row 0) and at least one sample")
    if frames < 1 or persons < 1:
        raise DataError(f"{where}: no frames or no persons (shape {lead}); regenerate the file")
    _check_quats(clip.T_world_root[..., :4], where, "T_world_root")
    _check_quats(clip.body_joint_rotations, where, "body_joint_rotations")
    ctx, ts, gt = clip.context_timesteps, clip.timesteps, clip.gt_timesteps
    if not 1 <= ts <= frames:
        raise DataError(f"{where}: timesteps={ts} is outside 1..{frames} (the stored frame count)")
    if gt is not None and not 1 <= gt <= frames:
        raise DataError(f"{where}: gt_timesteps={gt} is outside 1..{frames} (the stored frame count)")
    if not 0 <= ctx < clip.gt_end:
        raise DataError(f"{where}: context_timesteps={ctx} must be >= 0 and below the GT end {clip.gt_end}")
    return clip


def load_output_npz(path: str | os.PathLike) -> ClipOutput:
    """Load and validate one output npz (see the module docstring for the keys).

    Raises:
        DataError: one line naming the file and the key: missing file or key, unreadable file, wrong or
            mismatched shapes, NaN/Inf, zero quaternions, or frame counters out of range.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"output file not found: {path}")
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"{path}: not a readable npz file ({type(exc).__name__}); regenerate it") from exc
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise DataError(f"{path}: not an npz archive (a single array); regenerate it")
    with data:
        files = set(data.files)
        for key in (*MOTION_KEYS, *_REQUIRED_INTS):
            if key not in files:
                raise DataError(f"{path}: key '{key}' is missing (has: {', '.join(sorted(files)) or 'nothing'}); "
                                "the file is not a magnet/MAGNet output, regenerate it")
        arrays: dict[str, Any] = {}
        for key in (*MOTION_KEYS, *_INT_KEYS, "mode"):
            if key not in files:
                continue
            try:
                value = data[key]
            except (ValueError, OSError, zipfile.BadZipFile) as exc:
                raise DataError(f"{path}: key '{key}' cannot be read ({type(exc).__name__}: pickled objects are "
                                "refused, or the file is corrupt); regenerate it") from exc
            arrays[key] = value
    for key in MOTION_KEYS:
        arr = arrays[key]
        if arr.dtype.kind != "f":
            raise DataError(f"{path}: key '{key}' has dtype {arr.dtype}, expected float; regenerate the file")
        arrays[key] = np.ascontiguousarray(arr, dtype=np.float32)
    ints = {k: _scalar_int(arrays[k], str(path), k) for k in _INT_KEYS if k in arrays}
    mode = None
    if "mode" in arrays:
        m = np.asarray(arrays["mode"])
        if m.dtype.kind not in "US" or m.size != 1:
            raise DataError(f"{path}: key 'mode' must be one string, got dtype {m.dtype}; regenerate the file")
        mode = m.reshape(()).item()
        mode = mode.decode() if isinstance(mode, bytes) else str(mode)
    clip = ClipOutput(
        path=path,
        betas=arrays["betas"],
        T_world_root=arrays["T_world_root"],
        body_joint_rotations=arrays["body_joint_rotations"],
        hand_joint_rotations=arrays["hand_joint_rotations"],
        context_timesteps=ints["context_timesteps"],
        timesteps=ints["timesteps"],
        gt_timesteps=ints.get("gt_timesteps"),
        mode=mode,
        joint_phase_start_timesteps=ints.get("joint_phase_start_timesteps"),
    )
    return validate_clip(clip)


def _numpy32(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.ascontiguousarray(np.asarray(x, dtype=np.float32))


def write_output_npz(
    path: str | os.PathLike,
    *,
    betas: Any,
    T_world_root: Any,
    body_joint_rotations: Any,
    hand_joint_rotations: Any | None = None,
    context_timesteps: int,
    timesteps: int | None = None,
    gt_timesteps: int | None = None,
    mode: str | None = None,
    joint_phase_start_timesteps: int | None = None,
) -> Path:
    """Validate and write one output npz atomically (arrays torch or numpy, stored float32).

    ``hand_joint_rotations`` None writes zeros ``[1+S, T, P, 30, 4]`` (the reference's "no hands");
    ``timesteps`` None means T. Optional integers / ``mode`` are written only when given. Returns the path.
    """
    path = Path(path)
    b = _numpy32(betas)
    hands = (np.zeros((*b.shape[:3], 30, 4), np.float32) if hand_joint_rotations is None
             else _numpy32(hand_joint_rotations))
    clip = ClipOutput(
        path=path,
        betas=b,
        T_world_root=_numpy32(T_world_root),
        body_joint_rotations=_numpy32(body_joint_rotations),
        hand_joint_rotations=hands,
        context_timesteps=int(context_timesteps),
        timesteps=int(b.shape[1] if timesteps is None else timesteps),
        gt_timesteps=None if gt_timesteps is None else int(gt_timesteps),
        mode=None if mode is None else str(mode),
        joint_phase_start_timesteps=None if joint_phase_start_timesteps is None else int(joint_phase_start_timesteps),
    )
    validate_clip(clip)
    arrays: dict[str, np.ndarray] = {key: getattr(clip, key) for key in MOTION_KEYS}
    for key in _INT_KEYS:
        value = getattr(clip, key)
        if value is not None:
            arrays[key] = np.asarray(value, dtype=np.int64)
    if clip.mode is not None:
        arrays["mode"] = np.asarray(clip.mode)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
    return path


def list_output_files(run_dir: str | os.PathLike, test_set: str | os.PathLike | None = None) -> list[Path]:
    """The npz files to evaluate: every ``*.npz`` in ``run_dir`` (sorted by name), or the clips listed under key
    ``test`` of the YAML file ``test_set`` (in that order).

    Raises:
        DataError: ``run_dir`` is missing or holds no npz; the test-set file is missing, malformed or names a
            clip without an npz.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise DataError(f"run directory not found: {run_dir}; pass run_dir=<a directory of sampled *.npz outputs>")
    if test_set is None:
        files = sorted(p for p in run_dir.glob("*.npz") if p.is_file())
        if not files:
            raise DataError(f"no *.npz outputs in {run_dir}; sample into it first with python sample.py "
                            f"ckpt=<training run dir> out_dir={run_dir} (or make an example with python -m "
                            "magnet.evaluation.make_example --data <dataset dir> --out <dir>)")
        return files
    test_set = Path(test_set)
    if not test_set.is_file():
        raise DataError(f"test-set file not found: {test_set}; pass a YAML file with a 'test:' list of clip names")
    try:
        content = load_yaml(test_set.read_text())
    except yaml.YAMLError as exc:
        raise DataError(f"{test_set}: not valid YAML ({type(exc).__name__}); it needs a 'test:' list") from exc
    names = content.get("test") if isinstance(content, dict) else None
    if not isinstance(names, list) or not names:
        raise DataError(f"{test_set}: needs a non-empty list under key 'test' (clip names without .npz)")
    files = []
    for name in names:
        p = run_dir / f"{name}.npz"
        if not p.is_file():
            raise DataError(f"{test_set} lists clip '{name}' but {p} does not exist; fix the list or the run_dir")
        files.append(p)
    return files


# ------------------------------------------------------------------------------------------ inference config
@dataclass(frozen=True)
class InferenceConfig:
    """What evaluation reads from ``inf_cfg.yaml``.

    ``sampling_task``: the task named by ``sampling_task`` (top level or under ``sampling_cfg``), else by
    ``task_mode``, else None. ``reference_task_mode``: what the reference eval read (``sampling_cfg.task_mode``,
    default "joint"). ``smpl_path``: the SMPL-X file or None. ``found``: False when the file was absent.
    ``driven``: the person slots the conditioning tasks were given (``sampling_cfg.driven``, as ``sample.py`` writes
    it; default ``(0,)``, the reference's slot A).
    """

    path: Path
    sampling_task: str | None = None
    reference_task_mode: str = "joint"
    smpl_path: str | None = None
    found: bool = True
    driven: tuple[int, ...] = (0,)


def _lookup(cfg: dict, key: str) -> Any:
    if cfg.get(key) is not None:
        return cfg[key]
    sub = cfg.get("sampling_cfg")
    if isinstance(sub, dict) and sub.get(key) is not None:
        return sub[key]
    return None


def read_inference_config(run_dir: str | os.PathLike, allow_missing: bool = False) -> InferenceConfig:
    """Read ``<run_dir>/inf_cfg.yaml`` (see :class:`InferenceConfig`); OmegaConf path tags, as the reference writes
    them, are read as path strings (:func:`load_yaml`).

    Raises:
        ConfigError: the file is missing (unless ``allow_missing``: then task None and the default skeleton), is
            not a YAML mapping, holds a Python tag other than a path, or names an unknown sampling task.
    """
    path = Path(run_dir) / INF_CFG_NAME
    if not path.is_file():
        if allow_missing:
            return InferenceConfig(path=path, found=False)
        raise ConfigError(f"{path} is missing; add it (e.g. 'sampling_task: joint' and 'smpl_path: null') or pass "
                          "allow_missing_config=true to evaluate with defaults (all persons, default skeleton)")
    try:
        cfg = load_yaml(path.read_text())
    except yaml.YAMLError as exc:
        detail = " ".join(str(getattr(exc, "problem", None) or type(exc).__name__).split())
        raise ConfigError(f"{path}: not valid YAML ({detail}); fix or regenerate it") from exc
    if cfg is None:
        cfg = {}
    if not isinstance(cfg, dict):
        raise ConfigError(f"{path}: expected a YAML mapping, got {type(cfg).__name__}")
    task = _lookup(cfg, "sampling_task") or _lookup(cfg, "task_mode")
    if task is not None:
        check_task(str(task), f"{path} (sampling_task)")
    sub = cfg.get("sampling_cfg")
    ref_task = "joint"
    if isinstance(sub, dict) and sub.get("task_mode"):
        ref_task = check_task(str(sub["task_mode"]), f"{path} (sampling_cfg.task_mode)")
    smpl = cfg.get("smpl_path")
    driven = _lookup(cfg, "driven")
    try:
        driven = (0,) if driven is None else tuple(int(i) for i in driven)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{path}: sampling_cfg.driven must be a list of person slots, got {driven!r}") from exc
    return InferenceConfig(
        path=path,
        sampling_task=None if task is None else str(task),
        reference_task_mode=ref_task,
        smpl_path=None if smpl in (None, "") else str(smpl),
        found=True,
        driven=driven,
    )


def write_inference_config(run_dir: str | os.PathLike, config: dict) -> Path:
    """Write ``config`` as ``<run_dir>/inf_cfg.yaml`` (atomic, keys in the given order)."""
    path = Path(run_dir) / INF_CFG_NAME
    with atomic_path(path) as tmp:
        tmp.write_text(yaml.safe_dump(config, sort_keys=False, default_flow_style=False))
    return path
