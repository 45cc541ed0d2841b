"""Sampling options (reference spec 4.1-4.9) as one validated dataclass, and the per-task defaults of 4.9.

Library code takes a :class:`SamplingConfig`; ``sample.py`` builds it from ``conf/sample.yaml`` (groups ``task/``
and ``schedule/``). Every field keeps the reference's name where it has one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from magnet.errors import ConfigError
from magnet.sampling.plans import COMPAT_MODES, SCHEDULES, check_steps

__all__ = [
    "CONTEXT_MINIMUM",
    "ROOT_MODES",
    "TASKS",
    "TASK_DEFAULTS",
    "SamplingConfig",
]

TASKS = ("joint", "partner_prediction", "motion_control_live", "partner_inpainting", "inbetweening",
         "agentic_turn_taking", "agentic_sync", "pp2joint")
"""The eight sampling tasks (spec 4.3, 4.4)."""

ROOT_MODES = ("temporal", "temporal_partner")
PROCESSES = ("ddim", "ddpm")
PRECISIONS = ("fp32", "bf16")

CONTEXT_MINIMUM = {"joint": 16, "agentic_turn_taking": 16, "agentic_sync": 16, "partner_prediction": 4,
                   "motion_control_live": 4, "pp2joint": 4, "partner_inpainting": 4, "inbetweening": 0}
"""Minimum ``context_seq_len`` in frames per task (spec 4.1; the reference does not check inpainting, which needs
at least one latent frame here)."""


@dataclass(frozen=True)
class SamplingConfig:
    """Everything that decides what the sampler computes (names as in the reference's ``sampling_cfg``).

    ``compat``: ``fixed`` (default; reference defects fixed) or ``reference`` (the reference's computation,
    defects included). ``driven``: person slots given as ground truth by the conditioning tasks. ``guidance_every``:
    x0 guidance on every k-th denoising step only (1 = every step, the reference). ``precision``: ``fp32`` (the
    reference) or ``bf16`` (the networks under bfloat16 autocast: about 3x faster on CPUs with AVX512-BF16 and on
    recent GPUs; the denoising arithmetic stays float32).
    """

    task: str = "joint"
    sampling_schedule: str = "causal_uncertainty"
    sampling_steps: int = 50
    sampling_num: int = 10
    denoising_process: str = "ddim"
    ddim_eta: float = 0.0
    context_seq_len: int = 32
    sampling_seq_len: int = 200
    sampling_subseq_len: int = 16
    ar_seq_stride: int = 16
    offset_proportion: float = 0.75
    root_transform_mode: str = "temporal_partner"
    is_update_history_transforms: bool = True
    use_temporal_smoothing: bool = True
    temporal_smoothing_strength: float = 0.3
    temporal_smoothing_start_step: int = 0
    cfg_scale_dict: dict[str, float] = field(default_factory=lambda: {"clean": 1.0})
    use_smoothing_guidance: bool = False
    smoothing_guidance_weight: float = 2.0
    smoothing_guidance_start_ratio: float = 0.0
    smoothing_guidance_end_ratio: float = 1.0
    use_foot_skating_guidance: bool = False
    foot_skating_guidance_weight: float = 2.0
    foot_skating_guidance_start_ratio: float = 0.0
    foot_skating_guidance_end_ratio: float = 1.0
    driven: tuple[int, ...] = (0,)
    keyframes: tuple[int, ...] = (0, 63)
    guidance_every: int = 1
    precision: str = "fp32"
    compat: str = "fixed"

    def __post_init__(self) -> None:
        self._coerce_types()
        if self.task not in TASKS:
            raise ConfigError(f"unknown task {self.task!r}; choose one of {', '.join(TASKS)}")
        if self.sampling_schedule not in SCHEDULES:
            raise ConfigError(f"unknown schedule {self.sampling_schedule!r}; choose one of {', '.join(SCHEDULES)}")
        if self.compat not in COMPAT_MODES:
            raise ConfigError(f"compat {self.compat!r} unknown; choose one of {', '.join(COMPAT_MODES)}")
        if self.denoising_process not in PROCESSES:
            raise ConfigError(f"denoising_process {self.denoising_process!r} unknown; choose one of "
                              f"{', '.join(PROCESSES)}")
        if self.root_transform_mode not in ROOT_MODES:
            raise ConfigError(f"root_transform_mode {self.root_transform_mode!r} unknown; choose one of "
                              f"{', '.join(ROOT_MODES)}")
        check_steps(self.sampling_steps)
        if int(self.sampling_num) < 1:
            raise ConfigError(f"sampling_num must be >= 1, got {self.sampling_num}")
        if float(self.ddim_eta) < 0:
            raise ConfigError(f"ddim_eta must be >= 0, got {self.ddim_eta}")
        ctx = int(self.context_seq_len)
        if ctx % 4:
            raise ConfigError(f"context_seq_len must be a multiple of 4 frames (one latent frame), got {ctx}")
        minimum = CONTEXT_MINIMUM[self.task]
        if ctx < minimum:
            raise ConfigError(f"context_seq_len {ctx} is below the minimum of {minimum} frames for task "
                              f"{self.task}")
        if int(self.sampling_seq_len) < 1:
            raise ConfigError(f"sampling_seq_len must be >= 1 frame, got {self.sampling_seq_len}")
        if int(self.sampling_subseq_len) < 1:
            raise ConfigError(f"sampling_subseq_len must be >= 1, got {self.sampling_subseq_len}")
        if int(self.ar_seq_stride) < 4 or int(self.ar_seq_stride) % 4:
            raise ConfigError(f"ar_seq_stride must be a positive multiple of 4 frames, got {self.ar_seq_stride}")
        if not 0.0 <= float(self.offset_proportion) <= 1.0:
            raise ConfigError(f"offset_proportion must be in [0, 1], got {self.offset_proportion}")
        if not 0.0 <= float(self.temporal_smoothing_strength) <= 1.0:
            raise ConfigError(f"temporal_smoothing_strength must be in [0, 1], got "
                              f"{self.temporal_smoothing_strength}")
        for name in ("smoothing_guidance", "foot_skating_guidance"):
            lo, hi = float(getattr(self, f"{name}_start_ratio")), float(getattr(self, f"{name}_end_ratio"))
            if not 0.0 <= lo <= hi <= 1.0:
                raise ConfigError(f"{name}_start_ratio / end_ratio must satisfy 0 <= start <= end <= 1, got "
                                  f"{lo} and {hi}")
        if int(self.guidance_every) < 1:
            raise ConfigError(f"guidance_every must be >= 1, got {self.guidance_every}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision {self.precision!r} unknown; choose one of {', '.join(PRECISIONS)}")

    def _coerce_types(self) -> None:
        """Every field to its declared type, or one ConfigError line naming the field (``sampling_num=abc``,
        ``sampling_num=1.5``, ``use_smoothing_guidance=maybe``, ``driven=abc`` are refused, not truncated or read as
        true)."""
        from magnet.utils import require_bool, require_number

        for f in fields(self):
            value, kind = getattr(self, f.name), str(f.type)
            if kind == "int":
                value = require_number(f.name, value, integer=True)
            elif kind == "float":
                value = require_number(f.name, value)
            elif kind == "bool":
                value = require_bool(f.name, value)
            elif kind == "str":
                if not isinstance(value, str):
                    raise ConfigError(f"{f.name} must be a name, got {value!r}")
            elif kind.startswith("tuple"):
                if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
                    raise ConfigError(f"{f.name} must be a list of integers such as [0], got {value!r}")
                value = tuple(require_number(f"{f.name} entry", v, integer=True) for v in value)
            elif kind.startswith("dict"):
                if not isinstance(value, dict) or not value:
                    raise ConfigError(f"{f.name} must be a non-empty mapping such as {{clean: 1.0}}, got {value!r}")
                value = {str(k): require_number(f"{f.name}.{k}", v) for k, v in value.items()}
            object.__setattr__(self, f.name, value)

    @property
    def context_latent(self) -> int:
        return int(self.context_seq_len) // 4

    def replace(self, **changes: Any) -> SamplingConfig:
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["driven"] = list(self.driven)
        d["keyframes"] = list(self.keyframes)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SamplingConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown sampling option(s) {unknown}; known: {sorted(known)}")
        return cls(**d)

    @classmethod
    def for_task(cls, task: str, **overrides: Any) -> SamplingConfig:
        """The reference's shipped settings for ``task`` (spec 4.9), with ``overrides``."""
        if task not in TASK_DEFAULTS:
            raise ConfigError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
        return cls(**{**TASK_DEFAULTS[task], **overrides})


_GUIDED = {"use_smoothing_guidance": True, "use_foot_skating_guidance": True}

TASK_DEFAULTS: dict[str, dict[str, Any]] = {
    # dd100.yaml
    "joint": {"task": "joint", "sampling_subseq_len": 16, "ar_seq_stride": 16, "sampling_seq_len": 200,
              "sampling_num": 10, "root_transform_mode": "temporal_partner", **_GUIDED},
    "partner_prediction": {"task": "partner_prediction", "sampling_subseq_len": 1, "ar_seq_stride": 8,
                           "sampling_seq_len": 200, "sampling_num": 10, "root_transform_mode": "temporal_partner",
                           **_GUIDED},
    "agentic_turn_taking": {"task": "agentic_turn_taking", "sampling_subseq_len": 4, "ar_seq_stride": 8,
                            "sampling_seq_len": 200, "sampling_num": 10, "root_transform_mode": "temporal",
                            **_GUIDED},
    "agentic_sync": {"task": "agentic_sync", "sampling_subseq_len": 4, "ar_seq_stride": 8, "sampling_seq_len": 200,
                     "sampling_num": 10, "root_transform_mode": "temporal", **_GUIDED},
    "motion_control_live": {"task": "motion_control_live", "sampling_subseq_len": 4, "ar_seq_stride": 8,
                            "sampling_seq_len": 200, "sampling_num": 1, "root_transform_mode": "temporal",
                            **_GUIDED},
    "partner_inpainting": {"task": "partner_inpainting", "sampling_schedule": "full_sequence",
                           "sampling_subseq_len": 2, "ar_seq_stride": 32, "sampling_seq_len": 150,
                           "sampling_num": 10, "root_transform_mode": "temporal_partner", **_GUIDED},
    "inbetweening": {"task": "inbetweening", "sampling_subseq_len": 2, "ar_seq_stride": 4, "sampling_seq_len": 64,
                     "sampling_num": 1, "root_transform_mode": "temporal", "keyframes": (0, 63), **_GUIDED},
    "pp2joint": {"task": "pp2joint", "sampling_subseq_len": 1, "ar_seq_stride": 8, "sampling_seq_len": 400,
                 "sampling_num": 10, "root_transform_mode": "temporal_partner", **_GUIDED},
}
