"""Noise-level plans: which level every token has at every network call (reference spec 4.1, 4.2, 4.4).

A plan is plain data computed without a model. For every network call ``n`` it holds

* ``levels[n]`` ``[Tm, P]``: the level each token of the window is fed with (``-1`` = clean, ``max_t - 1`` = pure
  noise),
* ``next_levels[n]`` ``[Tm, P]``: the level the call's denoising step moves each token to,
* ``context[n]`` ``[Tm, P]``: tokens the sampler treats as context (never written back by the step),
* ``inject[n]`` ``[Tm, P]``: tokens reset to the clean ground truth after the step,
* ``driven[n]`` ``[Tm, P]``: tokens replaced after the step by the ground truth noised to their next level
  (partner prediction's driven person),
* ``window_start[n]``: the first latent frame of the window in the sequence, and bookkeeping (window index, row of
  the window's schedule, denoising step, chain, the context length passed on).

How the matrices are built (spec 4.2). Schedules are index matrices ``M[m, t]`` over the ``L = Tm * P`` tokens of
a window, flattened time-major and person-minor (token ``t`` is latent frame ``t // P``, person ``t % P``), with
values in ``0 .. N`` (``N = sampling_steps``); row ``m`` is the state before denoising step ``m``. Tokens are
grouped ``g`` at a time (``group = t // g``):

* ``full_sequence``: ``M[m, t] = N - m``;
* ``causal_uncertainty`` (pyramid): ``M[m, t] = clamp(N + t // g - m, 0, N)``: each group trails the previous one
  by one step;
* ``autoregressive``: ``M[m, t] = clamp(N + (t // g) d - m, 0, N)`` with ``d = N - int(N (1 - offset))``.

Context tokens are then set to index 0 and leading rows identical to the next row are pruned (keeping the last of
them). Indices map to levels by ``trunc(linspace(-1, max_t - 1, N + 1))[index]`` (``20 i - 1`` for N = 50). An
AR window (joint generation after the first window) runs the remainder of the pyramid for the newest
``ar_stride`` latent frames only, everything before them clean.

``compat="reference"`` reproduces the reference's plans exactly, defects included (its recorded levels are test
fixtures); ``compat="fixed"`` differs where the reference is wrong:

* the pyramid's height uses ``ceil(L / g)`` groups, so an incomplete last group reaches level -1 (the reference
  uses ``floor`` and leaves it noisy);
* the context length of AR windows is ``Tm - ar_stride`` latent frames (the reference subtracts the stride in
  tokens, ``Tm - ar_stride * P``);
* context = every clean token at that call (the reference's bookkeeping marks context through a mask kept across
  windows, which leaves clean tokens unmarked; it has no effect on the levels);
* an AR window whose newest token is below pure noise already in the first row starts at that row (the reference
  then keeps only the last row).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from magnet.errors import ConfigError, DataError
from magnet.utils import atomic_path

__all__ = [
    "COMPAT_MODES",
    "SCHEDULES",
    "Plan",
    "PlanBuilder",
    "ar_window_matrix",
    "index_to_level",
    "joint_plan",
    "prune_rows",
    "schedule_matrix",
]

SCHEDULES = ("full_sequence", "causal_uncertainty", "autoregressive")
COMPAT_MODES = ("fixed", "reference")
MAX_T = 1000


def check_compat(compat: str) -> str:
    if compat not in COMPAT_MODES:
        raise ConfigError(f"compat {compat!r} unknown; choose one of {list(COMPAT_MODES)}")
    return compat


def check_steps(sampling_steps: int, max_t: int = MAX_T) -> int:
    n = int(sampling_steps)
    if not 1 <= n <= max_t:
        raise ConfigError(f"sampling_steps must be in [1, {max_t}], got {sampling_steps}")
    return n


def index_to_level(sampling_steps: int, max_t: int = MAX_T) -> np.ndarray:
    """Levels of the schedule indices ``0 .. N``: ``linspace(-1, max_t - 1, N + 1)`` truncated toward zero
    (int64 ``[N + 1]``), computed as the reference does (torch float32 ``linspace`` then ``long``), so every N maps
    to the reference's levels exactly. Index 0 is ``-1`` (clean), index N ``max_t - 1`` (pure noise); for N = 50
    the level of index i is ``20 i - 1``.
    """
    import torch

    n = check_steps(sampling_steps, max_t)
    return torch.linspace(-1.0, float(max_t - 1), n + 1, dtype=torch.float32).long().numpy()


def schedule_matrix(schedule: str, num_tokens: int, group_size: int, sampling_steps: int,
                    offset_proportion: float = 0.75, compat: str = "fixed") -> np.ndarray:
    """Index matrix ``[rows, num_tokens]`` (int64, values in ``0 .. N``) of a schedule, before context and pruning.

    ``group_size`` tokens share a level (``t // group_size``). See the module docstring for the formulas; with
    ``compat="reference"`` the pyramid has ``N + floor(L / g)`` rows (an incomplete last group never reaches 0),
    with ``"fixed"`` ``N + ceil(L / g)``.
    """
    check_compat(compat)
    n = check_steps(sampling_steps)
    L, g = int(num_tokens), int(group_size)
    if L < 1 or g < 1:
        raise ConfigError(f"schedule needs num_tokens >= 1 and group_size >= 1, got {L} and {g}")
    group = np.arange(L) // g
    groups = math.ceil(L / g)
    if schedule == "full_sequence":
        m = np.arange(n + 1)[:, None]
        return np.broadcast_to(n - m, (n + 1, L)).copy()
    if schedule == "causal_uncertainty":
        height = n + (L // g if compat == "reference" else groups)
        m = np.arange(height)[:, None]
        return np.clip(n + group[None, :] - m, 0, n)
    if schedule == "autoregressive":
        if not 0.0 <= float(offset_proportion) <= 1.0:
            raise ConfigError(f"offset_proportion must be in [0, 1], got {offset_proportion}")
        d = n - int(n * (1.0 - float(offset_proportion)))
        height = n + (groups - 1) * d + 1
        m = np.arange(height)[:, None]
        return np.clip(n + group[None, :] * d - m, 0, n)
    raise ConfigError(f"schedule {schedule!r} unknown; choose one of {list(SCHEDULES)}")


def prune_rows(matrix: np.ndarray) -> np.ndarray:
    """Drop leading rows identical to the next row, keeping the last of them."""
    start = 0
    while start + 1 < len(matrix) and np.array_equal(matrix[start], matrix[start + 1]):
        start += 1
    return matrix[start:]


def ar_window_matrix(matrix: np.ndarray, stride_tokens: int, sampling_steps: int, compat: str = "fixed"
                     ) -> np.ndarray:
    """The schedule of an AR window from a window's pruned ``matrix`` (spec 4.2, ``_create_ar_schedule_matrix``).

    Finds the first row ``r`` whose token at ``L - stride_tokens`` is below pure noise, takes the rows from
    ``r - 1`` on and sets every token but the last ``stride_tokens`` to index 0 (clean). With ``r = 0`` the
    reference keeps only the last row; ``compat="fixed"`` starts at row 0.
    """
    n = check_steps(sampling_steps)
    L = matrix.shape[1]
    s = int(stride_tokens)
    if not 1 <= s <= L:
        raise ConfigError(f"AR stride of {s} tokens must be in [1, {L}] (the window's tokens)")
    below = np.nonzero(matrix[:, L - s] < n)[0]
    r = int(below[0]) if below.size else len(matrix) - 1
    if r == 0 and compat == "fixed":
        out = matrix.copy()
    else:
        out = matrix[r - 1:].copy()  # r = 0: [-1:] keeps only the last row (the reference's behaviour)
    out[:, : L - s] = 0
    return out


# ------------------------------------------------------------------------------------------------- plans


PLAN_ARRAYS = ("levels", "next_levels", "context", "inject", "driven", "window_start", "window_index", "row",
               "step", "chain", "context_len")


@dataclass
class Plan:
    """A sampling plan: one entry per network call (see the module docstring). Arrays are numpy.

    ``levels``, ``next_levels`` int16 ``[N, Tm, P]``; ``context``, ``inject``, ``driven`` bool ``[N, Tm, P]``;
    ``window_start`` int32 ``[N]`` (latent frames); ``window_index``, ``row`` int16 ``[N]``; ``step`` int32 ``[N]``
    (denoising step; several calls share a step in the two-chain tasks); ``chain`` int8 ``[N]``; ``context_len``
    int32 ``[N]`` (latent frames the window treats as context, as passed to guidance and post-processing).
    """

    task: str
    schedule: str
    compat: str
    sampling_steps: int
    num_persons: int
    window: int
    total_latent: int
    context_latent: int
    group_size: int
    levels: np.ndarray
    next_levels: np.ndarray
    context: np.ndarray
    inject: np.ndarray
    driven: np.ndarray
    window_start: np.ndarray
    window_index: np.ndarray
    row: np.ndarray
    step: np.ndarray
    chain: np.ndarray
    context_len: np.ndarray
    frames_per_latent: int = 4
    meta: dict = field(default_factory=dict)

    @property
    def num_calls(self) -> int:
        """Network calls (transformer forwards of the window batch; CFG terms not counted)."""
        return int(self.levels.shape[0])

    @property
    def num_steps(self) -> int:
        """Denoising steps (= guidance steps)."""
        return int(self.step.max()) + 1 if self.num_calls else 0

    @property
    def num_windows(self) -> int:
        return int(self.window_index.max()) + 1 if self.num_calls else 0

    @property
    def total_frames(self) -> int:
        return self.total_latent * self.frames_per_latent

    def window_calls(self) -> list[np.ndarray]:
        """Call indices of each window (in order), as arrays of consecutive call numbers."""
        out = []
        for w in range(self.num_windows):
            out.append(np.nonzero(self.window_index == w)[0])
        return out

    def summary(self) -> str:
        return (f"task {self.task}, schedule {self.schedule}, compat {self.compat}: {self.num_calls} network calls "
                f"in {self.num_steps} denoising steps over {self.num_windows} window(s) of {self.window} latent "
                f"frames; {self.total_latent} latent frames ({self.total_frames} frames) with "
                f"{self.context_latent} of context; {self.sampling_steps} sampling steps, group size "
                f"{self.group_size} tokens, {self.num_persons} person(s)")

    def save(self, path: str | os.PathLike) -> Path:
        """Write the plan to an npz (atomic): the arrays plus scalar metadata."""
        path = Path(path)
        arrays = {k: getattr(self, k) for k in PLAN_ARRAYS}
        scalars = {"task": np.asarray(self.task), "schedule": np.asarray(self.schedule),
                   "compat": np.asarray(self.compat)}
        for k in ("sampling_steps", "num_persons", "window", "total_latent", "context_latent", "group_size",
                  "frames_per_latent"):
            scalars[k] = np.asarray(int(getattr(self, k)), dtype=np.int64)
        scalars["num_calls"] = np.asarray(self.num_calls, dtype=np.int64)
        scalars["num_steps"] = np.asarray(self.num_steps, dtype=np.int64)
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, **arrays, **scalars)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> Plan:
        try:
            with np.load(path, allow_pickle=False) as d:
                kw = {k: d[k] for k in PLAN_ARRAYS}
                for k in ("task", "schedule", "compat"):
                    kw[k] = str(d[k])
                for k in ("sampling_steps", "num_persons", "window", "total_latent", "context_latent",
                          "group_size", "frames_per_latent"):
                    kw[k] = int(d[k])
        except (OSError, KeyError, ValueError) as exc:
            raise DataError(f"{path} is not a plan file written by magnet ({type(exc).__name__}: {exc})") from exc
        return cls(**kw)


class PlanBuilder:
    """Accumulates network calls window by window into a :class:`Plan`."""

    def __init__(self, num_persons: int, window: int, sampling_steps: int):
        self.P, self.Tm = int(num_persons), int(window)
        self.table = index_to_level(sampling_steps)
        self.rows: dict[str, list] = {k: [] for k in PLAN_ARRAYS}
        self.num_windows = 0
        self.num_steps = 0

    def levels_of(self, index_matrix: np.ndarray) -> np.ndarray:
        """Index matrix ``[rows, L]`` -> levels ``[rows, Tm, P]`` (int64)."""
        return self.table[index_matrix].reshape(len(index_matrix), self.Tm, self.P)

    def add_window(self, levels: np.ndarray, start: int, context_len: int, *, context: np.ndarray,
                   inject: np.ndarray | None = None, driven: np.ndarray | None = None, chain: int = 0,
                   steps: np.ndarray | None = None, new_window: bool = True) -> None:
        """Add the calls of one window: ``levels[rows, Tm, P]``; call m goes from row m to row m + 1.

        ``context``, ``inject``, ``driven``: bool ``[rows - 1, Tm, P]`` per call (or ``[Tm, P]`` for all calls).
        """
        calls = len(levels) - 1
        shape = (calls, self.Tm, self.P)

        def per_call(mask):
            if mask is None:
                return np.zeros(shape, bool)
            mask = np.asarray(mask, bool)
            return np.broadcast_to(mask, shape).copy()

        r = self.rows
        r["levels"].append(levels[:-1].astype(np.int16))
        r["next_levels"].append(levels[1:].astype(np.int16))
        r["context"].append(per_call(context))
        r["inject"].append(per_call(inject))
        r["driven"].append(per_call(driven))
        r["window_start"].append(np.full(calls, int(start), np.int32))
        r["window_index"].append(np.full(calls, self.num_windows, np.int16))
        r["row"].append(np.arange(calls, dtype=np.int16))
        if steps is None:
            steps = np.arange(self.num_steps, self.num_steps + calls)
        r["step"].append(np.asarray(steps, np.int32))
        r["chain"].append(np.full(calls, chain, np.int8))
        r["context_len"].append(np.full(calls, int(context_len), np.int32))
        self.num_steps = int(max(self.num_steps, int(np.max(steps)) + 1 if calls else self.num_steps))
        if new_window:
            self.num_windows += 1

    def build(self, **kw) -> Plan:
        arrays = {}
        for k, parts in self.rows.items():
            arrays[k] = np.concatenate(parts) if parts else np.zeros((0,), np.int32)
        return Plan(num_persons=self.P, window=self.Tm, **arrays, **kw)


def _reference_context(levels: np.ndarray, start: int, context_len: int, global_ctx: np.ndarray) -> np.ndarray:
    """The reference's context bookkeeping for one window, call by call (spec 4.1): the window's slice of a mask
    kept over the whole sequence, plus every token at or after ``context_len`` whose current level is -1; the
    result is written back to the sequence mask. ``levels[rows, Tm, P]`` -> ``[rows - 1, Tm, P]``."""
    tm = levels.shape[1]
    out = []
    gen = np.arange(tm)[:, None] >= max(int(context_len), 0)
    for m in range(len(levels) - 1):
        mask = global_ctx[start:start + tm] | (gen & (levels[m] == -1))
        global_ctx[start:start + tm] = mask
        out.append(mask.copy())
    return np.stack(out) if out else np.zeros((0, tm, levels.shape[2]), bool)


def task_group_size(task: str, schedule: str, num_persons: int, subseq_len: int) -> int:
    """Tokens per group (spec 4.2): the joint sampler ``subseq_len * P`` (1 for ``autoregressive``), the two-chain
    tasks ``subseq_len`` tokens, the rolling tasks and inbetweening ``P`` (one latent frame)."""
    p = int(num_persons)
    if task in ("joint", "next_token"):
        return 1 if schedule == "autoregressive" else int(subseq_len) * p
    if task in ("agentic_turn_taking", "agentic_sync"):
        return 1 if schedule == "autoregressive" else int(subseq_len)
    return p


def joint_layout(sampling_seq_len: int, window: int, ar_stride: int, frames_per_latent: int = 4,
                 compat: str = "fixed") -> tuple[int, int]:
    """``(n_iterations, total_latent)`` of joint generation (spec 4.3): ``n = ceil((max(len/4, Tm) - Tm) /
    stride)`` AR windows after the first, ``T = n * stride + Tm`` latent frames (context included). The reference
    divides the length by 4 rounding down (a length that is not a multiple of 4 can come out 1-3 frames short);
    ``compat="fixed"`` always covers the requested frames."""
    if compat == "reference":
        req = float(int(sampling_seq_len) // frames_per_latent)
    else:
        req = float(sampling_seq_len) / frames_per_latent
    n_itr = math.ceil((max(req, window) - window) / ar_stride)
    return n_itr, n_itr * ar_stride + window


def joint_plan(num_persons: int, sampling_seq_len: int = 200, context_seq_len: int = 32, sampling_steps: int = 50,
               schedule: str = "causal_uncertainty", subseq_len: int = 16, ar_seq_stride: int = 16,
               offset_proportion: float = 0.75, compat: str = "fixed", window: int = 16,
               frames_per_latent: int = 4, task: str = "joint") -> Plan:
    """The plan of joint generation (spec 4.3): the first window with ``context_seq_len`` frames of context, then
    AR windows shifted by ``ar_seq_stride`` frames, each denoising only its newest ``ar_seq_stride`` frames."""
    check_compat(compat)
    f = int(frames_per_latent)
    P, Tm = int(num_persons), int(window)
    if schedule not in SCHEDULES:
        raise ConfigError(f"schedule {schedule!r} unknown; choose one of {list(SCHEDULES)}")
    if int(ar_seq_stride) % f or int(ar_seq_stride) < f:
        raise ConfigError(f"ar_seq_stride must be a positive multiple of {f} frames, got {ar_seq_stride}")
    stride = int(ar_seq_stride) // f
    if stride > Tm:
        raise ConfigError(f"ar_seq_stride {ar_seq_stride} frames exceeds the window ({Tm * f} frames)")
    tc = int(context_seq_len) // f
    if not 0 <= tc < Tm:
        raise ConfigError(f"context_seq_len {context_seq_len} must leave room in the {Tm * f}-frame window")
    if int(subseq_len) < 1:
        raise ConfigError(f"sampling_subseq_len must be >= 1, got {subseq_len}")
    L = Tm * P
    g = task_group_size(task, schedule, P, subseq_len)
    builder = PlanBuilder(P, Tm, sampling_steps)
    M = schedule_matrix(schedule, L, g, sampling_steps, offset_proportion, compat)
    M[:, : tc * P] = 0
    M = prune_rows(M)
    n_itr, total = joint_layout(sampling_seq_len, Tm, stride, f, compat)
    s_tok = stride * P
    A = ar_window_matrix(M, s_tok, sampling_steps, compat)
    ar_ctx = Tm - s_tok if compat == "reference" else Tm - stride
    global_ctx = np.zeros((total, P), bool)
    global_ctx[:tc] = True
    for i in range(n_itr + 1):
        mat, start, c = (M, 0, tc) if i == 0 else (A, i * stride, ar_ctx)
        lv = builder.levels_of(mat)
        if compat == "reference":
            ctx = _reference_context(lv, start, c, global_ctx)
        else:
            ctx = lv[:-1] == -1
        builder.add_window(lv, start, c, context=ctx)
    return builder.build(task=task, schedule=schedule, compat=compat, sampling_steps=int(sampling_steps),
                         total_latent=total, context_latent=tc, group_size=g, frames_per_latent=f)


# --------------------------------------------------------------------------------------------- rolling tasks

ROLLING_TASKS = ("partner_prediction", "motion_control_live", "partner_inpainting")


def rolling_layout(clip_frames: int, sampling_seq_len: int, context_latent: int, window: int,
                   frames_per_latent: int = 4, compat: str = "fixed") -> tuple[int, list[tuple[int, int]]]:
    """``(T_gt, [(start, context_len), ...])`` of the rolling tasks (spec 4.4), in latent frames.

    ``T_gt = min(sampling_seq_len, clip_frames)`` rounded down to whole latent frames; chunks of ``window``
    latent frames advance by ``window - context_latent``; each starts with ``context_latent`` frames of context.
    The reference's last chunk may run past ``T_gt`` (its output is truncated); ``compat="fixed"`` moves the last
    chunk back so that it ends at ``T_gt`` (its context is then everything before the previous chunk's end).
    """
    f = int(frames_per_latent)
    t_gt = min(int(sampling_seq_len), int(clip_frames)) // f
    tc, tm = int(context_latent), int(window)
    stride = tm - tc
    n_chunks = math.ceil((t_gt - tm) / stride) + 1 if t_gt > tm else 1
    chunks = []
    for c in range(n_chunks):
        start = c * stride
        if compat == "fixed" and c > 0 and start + tm > t_gt:
            prev_end = chunks[-1][0] + tm
            start = t_gt - tm
            chunks.append((start, prev_end - start))
        else:
            chunks.append((start, tc))
    return t_gt, chunks


def rolling_plan(task: str, num_persons: int, clip_frames: int, driven: tuple[int, ...] = (0,),
                 sampling_seq_len: int = 200, context_seq_len: int = 32, sampling_steps: int = 50,
                 schedule: str = "causal_uncertainty", offset_proportion: float = 0.75, compat: str = "fixed",
                 window: int = 16, frames_per_latent: int = 4) -> Plan:
    """The plan of a rolling task (spec 4.4): ``partner_prediction`` (driven persons follow the generated ones'
    levels, noised from their ground truth after every step), ``motion_control_live`` and ``partner_inpainting``
    (driven persons clean ground truth at level -1 in every row). Every chunk runs the whole pruned schedule with
    one latent frame per group; ``sampling_subseq_len`` and ``ar_seq_stride`` play no part."""
    check_compat(compat)
    if task not in ROLLING_TASKS:
        raise ConfigError(f"rolling task {task!r} unknown; choose one of {list(ROLLING_TASKS)}")
    f = int(frames_per_latent)
    P, Tm = int(num_persons), int(window)
    tc = int(context_seq_len) // f
    if not 0 < tc < Tm:
        raise ConfigError(f"context_seq_len {context_seq_len} must give 1 to {Tm - 1} latent frames "
                          f"({f} to {(Tm - 1) * f} frames)")
    drv = np.zeros(P, bool)
    drv[list(driven)] = True
    g = task_group_size(task, schedule, P, 1)
    builder = PlanBuilder(P, Tm, sampling_steps)
    t_gt, chunks = rolling_layout(clip_frames, sampling_seq_len, tc, Tm, f, compat)
    clean_driven = task != "partner_prediction"
    for c, (start, ctx_len) in enumerate(chunks):
        M = schedule_matrix(schedule, Tm * P, g, sampling_steps, offset_proportion, compat)
        M = M.reshape(len(M), Tm, P)
        M[:, :ctx_len] = 0
        if clean_driven:
            M[:, :, drv] = 0
        M = prune_rows(M.reshape(len(M), Tm * P))
        lv = builder.levels_of(M)
        if compat == "reference":
            chunk_ctx = np.zeros((start + Tm, P), bool)
            chunk_ctx[start:start + ctx_len] = True
            ctx = _reference_context(lv, start, ctx_len, chunk_ctx)
        else:
            ctx = lv[:-1] == -1
        inject = np.zeros((Tm, P), bool)
        inject[:ctx_len, :] = True if c == 0 else drv[None, :]
        if clean_driven:
            inject[:, drv] = True
        driven_mask = np.zeros((Tm, P), bool)
        if not clean_driven:
            driven_mask[:, drv] = True
        builder.add_window(lv, start, ctx_len, context=ctx, inject=inject, driven=driven_mask)
    total = max(t_gt, chunks[-1][0] + Tm)
    plan = builder.build(task=task, schedule=schedule, compat=compat, sampling_steps=int(sampling_steps),
                         total_latent=total, context_latent=tc, group_size=g, frames_per_latent=f)
    plan.meta.update({"gt_latent": t_gt, "driven": [int(i) for i in np.nonzero(drv)[0]]})
    return plan
