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
    "CHAIN_TASKS",
    "COMPAT_MODES",
    "ROLLING_TASKS",
    "SCHEDULES",
    "Plan",
    "PlanBuilder",
    "ar_window_matrix",
    "chain_plan",
    "inbetweening_plan",
    "index_to_level",
    "joint_plan",
    "pp2joint_plan",
    "prune_rows",
    "rolling_plan",
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
               "step", "chain", "context_len", "pointer")


@dataclass
class Plan:
    """A sampling plan: one entry per network call (see the module docstring). Arrays are numpy.

    ``levels``, ``next_levels`` int16 ``[N, Tm, P]``; ``context``, ``inject``, ``driven`` bool ``[N, Tm, P]``;
    ``window_start`` int32 ``[N]`` (latent frames); ``window_index``, ``row`` int16 ``[N]``; ``step`` int32 ``[N]``
    (denoising step; several calls share a step in the two-chain tasks); ``chain`` int8 ``[N]``; ``context_len``
    int32 ``[N]`` (latent frames the window treats as context, as passed to guidance and post-processing);
    ``pointer`` int16 ``[N]`` (turn-taking: the flat window token copied from chain A into chain B before B's call,
    -1 for none; see :func:`chain_plan`).
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
    pointer: np.ndarray
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
                kw = {k: d[k] for k in PLAN_ARRAYS if k in d.files}
                kw.setdefault("pointer", np.full(len(kw["levels"]), -1, np.int16))
                for k in ("task", "schedule", "compat"):
                    kw[k] = str(d[k])
                for k in ("sampling_steps", "num_persons", "window", "total_latent", "context_latent",
                          "group_size", "frames_per_latent"):
                    kw[k] = int(d[k])
        except (OSError, KeyError, ValueError) as exc:
            raise DataError(f"{path} is not a plan file written by magnet ({type(exc).__name__}: {exc})") from exc
        return cls(**kw)


class PlanBuilder:
    """Accumulates network calls into a :class:`Plan` (window by window, or call by call for the two-chain
    tasks)."""

    def __init__(self, num_persons: int, window: int, sampling_steps: int):
        self.P, self.Tm = int(num_persons), int(window)
        self.table = index_to_level(sampling_steps)
        self.rows: dict[str, list] = {k: [] for k in PLAN_ARRAYS}
        self.num_windows = 0
        self.num_steps = 0

    def levels_of(self, index_matrix: np.ndarray) -> np.ndarray:
        """Index matrix ``[rows, L]`` -> levels ``[rows, Tm, P]`` (int64)."""
        return self.table[index_matrix].reshape(len(index_matrix), self.Tm, self.P)

    def _mask(self, mask, n: int) -> np.ndarray:
        shape = (n, self.Tm, self.P)
        if mask is None:
            return np.zeros(shape, bool)
        return np.broadcast_to(np.asarray(mask, bool), shape).copy()

    def add_calls(self, levels: np.ndarray, next_levels: np.ndarray, *, start: int, context_len: int,
                  context: np.ndarray, steps: np.ndarray, rows: np.ndarray, window: int, chain: int = 0,
                  inject=None, driven=None, pointer=None) -> None:
        """Add calls: ``levels``, ``next_levels`` ``[n, Tm, P]``, masks ``[n, Tm, P]`` or ``[Tm, P]``."""
        n = len(levels)
        r = self.rows
        r["levels"].append(np.asarray(levels).astype(np.int16))
        r["next_levels"].append(np.asarray(next_levels).astype(np.int16))
        r["context"].append(self._mask(context, n))
        r["inject"].append(self._mask(inject, n))
        r["driven"].append(self._mask(driven, n))
        r["window_start"].append(np.full(n, int(start), np.int32))
        r["window_index"].append(np.full(n, int(window), np.int16))
        r["row"].append(np.asarray(rows, np.int16))
        r["step"].append(np.asarray(steps, np.int32))
        r["chain"].append(np.full(n, chain, np.int8))
        r["context_len"].append(np.full(n, int(context_len), np.int32))
        r["pointer"].append(np.full(n, -1, np.int16) if pointer is None else np.asarray(pointer, np.int16))
        if n:
            self.num_steps = max(self.num_steps, int(np.max(steps)) + 1)

    def add_window(self, levels: np.ndarray, start: int, context_len: int, *, context: np.ndarray,
                   inject=None, driven=None) -> None:
        """Add the calls of one window: ``levels[rows, Tm, P]``; call m goes from row m to row m + 1."""
        calls = len(levels) - 1
        self.add_calls(levels[:-1], levels[1:], start=start, context_len=context_len, context=context,
                       steps=np.arange(self.num_steps, self.num_steps + calls), rows=np.arange(calls),
                       window=self.num_windows, inject=inject, driven=driven)
        self.num_windows += 1

    def build(self, **kw) -> Plan:
        arrays = {}
        for k, parts in self.rows.items():
            arrays[k] = np.concatenate(parts) if parts else np.zeros((0,), np.int32)
        order = np.argsort(arrays["step"] * 8 + arrays["chain"], kind="stable")   # calls in execution order
        arrays = {k: v[order] for k, v in arrays.items()}
        return Plan(num_persons=self.P, window=self.Tm, **arrays, **kw)


def _reference_context(levels: np.ndarray, start: int, context_len: int, global_ctx: np.ndarray,
                       persist: bool = True) -> np.ndarray:
    """The reference's context bookkeeping for one window, call by call (spec 4.1): the window's slice of a mask
    kept over the whole sequence, plus every token at or after ``context_len`` whose current level is -1; with
    ``persist`` the result is written back to the sequence mask (the two-chain tasks' leading chain never writes
    it back). ``levels[rows, Tm, P]`` -> ``[rows - 1, Tm, P]``."""
    tm = levels.shape[1]
    out = []
    gen = np.arange(tm)[:, None] >= max(int(context_len), 0)
    for m in range(len(levels) - 1):
        mask = global_ctx[start:start + tm] | (gen & (levels[m] == -1))
        if persist:
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


def _check_joint_args(P: int, Tm: int, schedule: str, ar_seq_stride: int, context_seq_len: int, subseq_len: int,
                      f: int) -> tuple[int, int]:
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
    return stride, tc


def _joint_windows(builder: PlanBuilder, task: str, sampling_seq_len: int, context_seq_len: int, sampling_steps: int,
                   schedule: str, subseq_len: int, ar_seq_stride: int, offset_proportion: float, compat: str,
                   f: int) -> tuple[list[tuple[np.ndarray, int, int]], int, int, int]:
    """The windows of joint generation -> ``([(levels[rows, Tm, P], start, context_len), ...], total_latent,
    context_latent, group_size)``: the first window with the context, then the AR windows."""
    P, Tm = builder.P, builder.Tm
    stride, tc = _check_joint_args(P, Tm, schedule, ar_seq_stride, context_seq_len, subseq_len, f)
    L = Tm * P
    g = task_group_size(task, schedule, P, subseq_len)
    M = schedule_matrix(schedule, L, g, sampling_steps, offset_proportion, compat)
    M[:, : tc * P] = 0
    M = prune_rows(M)
    n_itr, total = joint_layout(sampling_seq_len, Tm, stride, f, compat)
    s_tok = stride * P
    A = ar_window_matrix(M, s_tok, sampling_steps, compat)
    ar_ctx = Tm - s_tok if compat == "reference" else Tm - stride
    windows = [(builder.levels_of(M), 0, tc)]
    windows += [(builder.levels_of(A), i * stride, ar_ctx) for i in range(1, n_itr + 1)]
    return windows, total, tc, g


def joint_plan(num_persons: int, sampling_seq_len: int = 200, context_seq_len: int = 32, sampling_steps: int = 50,
               schedule: str = "causal_uncertainty", subseq_len: int = 16, ar_seq_stride: int = 16,
               offset_proportion: float = 0.75, compat: str = "fixed", window: int = 16,
               frames_per_latent: int = 4, task: str = "joint") -> Plan:
    """The plan of joint generation (spec 4.3): the first window with ``context_seq_len`` frames of context, then
    AR windows shifted by ``ar_seq_stride`` frames, each denoising only its newest ``ar_seq_stride`` frames."""
    check_compat(compat)
    f = int(frames_per_latent)
    builder = PlanBuilder(num_persons, window, sampling_steps)
    windows, total, tc, g = _joint_windows(builder, task, sampling_seq_len, context_seq_len, sampling_steps,
                                           schedule, subseq_len, ar_seq_stride, offset_proportion, compat, f)
    global_ctx = np.zeros((total, builder.P), bool)
    global_ctx[:tc] = True
    for lv, start, c in windows:
        ctx = _reference_context(lv, start, c, global_ctx) if compat == "reference" else lv[:-1] == -1
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


def add_rolling_window(builder: PlanBuilder, task: str, start: int, ctx_len: int, driven: tuple[int, ...],
                       first: bool, sampling_steps: int, schedule: str, offset_proportion: float, compat: str) -> None:
    """Add one rolling-task window starting at latent frame ``start`` whose first ``ctx_len`` latent frames are
    context (``first``: the clip's opening window, whose context is ground truth for every person)."""
    P, Tm = builder.P, builder.Tm
    drv = np.zeros(P, bool)
    drv[list(driven)] = True
    g = task_group_size(task, schedule, P, 1)
    clean_driven = task != "partner_prediction"
    M = schedule_matrix(schedule, Tm * P, g, sampling_steps, offset_proportion, compat).reshape(-1, Tm, P)
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
    inject[:ctx_len, :] = True if first else drv[None, :]
    if clean_driven:
        inject[:, drv] = True
    driven_mask = np.zeros((Tm, P), bool)
    if not clean_driven:
        driven_mask[:, drv] = True
    builder.add_window(lv, start, ctx_len, context=ctx, inject=inject, driven=driven_mask)


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
    builder = PlanBuilder(P, Tm, sampling_steps)
    t_gt, chunks = rolling_layout(clip_frames, sampling_seq_len, tc, Tm, f, compat)
    for c, (start, ctx_len) in enumerate(chunks):
        add_rolling_window(builder, task, start, ctx_len, driven, c == 0, sampling_steps, schedule,
                           offset_proportion, compat)
    total = max(t_gt, chunks[-1][0] + Tm)
    plan = builder.build(task=task, schedule=schedule, compat=compat, sampling_steps=int(sampling_steps),
                         total_latent=total, context_latent=tc, group_size=task_group_size(task, schedule, P, 1),
                         frames_per_latent=f)
    plan.meta.update({"gt_latent": t_gt, "driven": sorted(int(i) for i in set(driven))})
    return plan


# ------------------------------------------------------------------------------------------ two-chain tasks

CHAIN_TASKS = ("agentic_turn_taking", "agentic_sync")


def chain_plan(task: str, num_persons: int, sampling_seq_len: int = 200, context_seq_len: int = 32,
               sampling_steps: int = 50, schedule: str = "causal_uncertainty", subseq_len: int = 4,
               ar_seq_stride: int = 8, offset_proportion: float = 0.75, compat: str = "fixed", window: int = 16,
               frames_per_latent: int = 4) -> Plan:
    """The plan of the two-chain tasks (spec 4.4): two chains A (``chain`` 0) and B (1) of the joint model share
    the joint windows (groups of ``subseq_len`` tokens), one call each per denoising step.

    ``agentic_turn_taking``: A steps first; its newest finished token p (flat window index) is copied into B,
    which takes it at level -1 for its step (A's call row: ``pointer`` = p); after B's step, B's token p + 1 (the
    next one, still being denoised) is copied back into A (B's call row: ``pointer`` = p + 1). The reference
    searches p among the generated region's clean tokens, counts it from the first generated token but uses it from
    the window start, so its copies land in the context region and the exchange barely happens; ``compat=fixed``
    takes the newest clean token of the window (from the window start), so at every step B continues from A's
    latest token and A receives B's next one. ``agentic_sync``: both chains step, then each adopts the other's
    clean tokens of its own person; the reference makes a third call on B's stale input whose result it discards
    (``chain`` 2); the fixed plan does not pay for it.
    """
    check_compat(compat)
    if task not in CHAIN_TASKS:
        raise ConfigError(f"two-chain task {task!r} unknown; choose one of {list(CHAIN_TASKS)}")
    f = int(frames_per_latent)
    builder = PlanBuilder(num_persons, window, sampling_steps)
    P, Tm = builder.P, builder.Tm
    L = Tm * P
    windows, total, tc, g = _joint_windows(builder, task, sampling_seq_len, context_seq_len, sampling_steps,
                                           schedule, subseq_len, ar_seq_stride, offset_proportion, compat, f)
    reference = compat == "reference"
    init = np.zeros((total, P), bool)
    init[:tc] = True
    mask_b = init.copy()
    step = 0
    for w, (lv, start, c) in enumerate(windows):
        ctx_a_all = _reference_context(lv, start, c, init, persist=False) if reference else lv[:-1] == -1
        gen_start = max(int(c), 0) * P
        for m in range(len(lv) - 1):
            cur, nxt, ctx_a = lv[m], lv[m + 1], ctx_a_all[m]
            rows = np.array([m])
            common = {"start": start, "context_len": c, "steps": np.array([step]), "rows": rows, "window": w}
            if task == "agentic_turn_taking":
                if reference:
                    marked = np.nonzero(ctx_a.reshape(-1)[gen_start:])[0]
                    p_rel = int(marked.max()) if marked.size else 0
                    to_b = p_rel if p_rel > 0 else -1        # counted from the generated region, used from the
                    to_a = p_rel + 1                         # window start (and copied back even without a p)
                else:
                    marked = np.nonzero(ctx_a.reshape(-1))[0]   # the newest clean token of the window
                    to_b = int(marked.max()) if marked.size else -1
                    to_a = to_b + 1 if 0 <= to_b < L - 1 else -1
                cur_b, nxt_b = cur.copy(), nxt.copy()
                if to_b >= 0:
                    cur_b.reshape(-1)[to_b] = -1
                    nxt_b.reshape(-1)[to_b] = -1
                if reference:
                    ctx_b = mask_b[start:start + Tm].copy()
                    gen = np.arange(Tm)[:, None] >= max(int(c), 0)
                    mask_b[start:start + Tm] |= gen & (cur == -1)
                else:
                    ctx_b = cur_b == -1
                builder.add_calls(cur[None], nxt[None], context=ctx_a[None], chain=0, pointer=[to_b], **common)
                builder.add_calls(cur_b[None], nxt_b[None], context=ctx_b[None], chain=1, pointer=[to_a], **common)
            else:
                builder.add_calls(cur[None], nxt[None], context=ctx_a[None], chain=0, **common)
                builder.add_calls(cur[None], nxt[None], context=ctx_a[None], chain=1, **common)
                if reference:
                    builder.add_calls(cur[None], nxt[None], context=ctx_a[None], chain=2, **common)
            step += 1
        builder.num_windows += 1
    return builder.build(task=task, schedule=schedule, compat=compat, sampling_steps=int(sampling_steps),
                         total_latent=total, context_latent=tc, group_size=g, frames_per_latent=f)


# ------------------------------------------------------------------------------------------- inbetweening


def inbetweening_plan(num_persons: int, keyframes: tuple[int, ...] = (0, 63), sampling_seq_len: int = 64,
                      context_seq_len: int = 32, sampling_steps: int = 50, schedule: str = "causal_uncertainty",
                      offset_proportion: float = 0.75, compat: str = "fixed", window: int = 16,
                      frames_per_latent: int = 4) -> Plan:
    """The plan of inbetweening (spec 4.4): ground-truth keyframe tokens at level -1 in every row (``context`` and
    ``inject``), everything else generated with one latent frame per group.

    A keyframe at frame ``f`` pins latent frame ``f // 4``. The reference runs one 64-frame window (longer
    sequences are not defined there) and sets the keyframes clean after pruning, so its first call changes
    nothing (65 calls for the shipped config). ``compat=fixed`` prunes after pinning and covers any length of at
    least one window with rolling windows: the first starts at frame 0 without context, each next one keeps the
    last ``context_seq_len`` frames of the generated motion as context, the last one ends at the sequence end.
    """
    check_compat(compat)
    f = int(frames_per_latent)
    P, Tm = int(num_persons), int(window)
    frames = int(sampling_seq_len) // f * f if compat == "reference" else -(-int(sampling_seq_len) // f) * f
    tz = frames // f
    keys = sorted({int(k) for k in keyframes})
    if compat == "reference" and tz != Tm:
        raise ConfigError(f"the reference's inbetweening runs exactly one {Tm * f}-frame window; sampling_seq_len "
                          f"{sampling_seq_len} needs compat=fixed")
    if tz < Tm:
        raise ConfigError(f"inbetweening needs sampling_seq_len >= {Tm * f} frames (one window), got "
                          f"{sampling_seq_len}")
    key_lat = np.zeros((tz, P), bool)
    for k in keys:
        key_lat[k // f] = True
    builder = PlanBuilder(P, Tm, sampling_steps)
    g = task_group_size("inbetweening", schedule, P, 1)
    if compat == "reference":
        M = prune_rows(schedule_matrix(schedule, Tm * P, g, sampling_steps, offset_proportion, compat))
        M = np.where(key_lat.reshape(-1)[None], 0, M)
        lv = builder.levels_of(M)
        ctx = np.broadcast_to(key_lat, lv[:-1].shape)
        builder.add_window(lv, 0, Tm, context=ctx)
        chunks = [(0, 0)]
    else:
        tc = max(int(context_seq_len) // f, 1)
        stride = Tm - tc
        chunks = [(0, 0)]
        while chunks[-1][0] + Tm < tz:
            start = min(chunks[-1][0] + stride, tz - Tm)
            chunks.append((start, chunks[-1][0] + Tm - start))
        for start, ctx_len in chunks:
            M = schedule_matrix(schedule, Tm * P, g, sampling_steps, offset_proportion, compat).reshape(-1, Tm, P)
            M[:, :ctx_len] = 0
            M[:, key_lat[start:start + Tm]] = 0
            M = prune_rows(M.reshape(len(M), Tm * P))
            lv = builder.levels_of(M)
            builder.add_window(lv, start, ctx_len, context=lv[:-1] == -1, inject=key_lat[start:start + Tm])
    plan = builder.build(task="inbetweening", schedule=schedule, compat=compat,
                         sampling_steps=int(sampling_steps), total_latent=tz, context_latent=0, group_size=g,
                         frames_per_latent=f)
    plan.meta.update({"keyframes": keys, "chunks": chunks})
    return plan


# ------------------------------------------------------------------------------------------------ pp2joint


def pp2joint_plan(num_persons: int, clip_frames: int, driven: tuple[int, ...] = (0,), sampling_seq_len: int = 400,
                  context_seq_len: int = 32, sampling_steps: int = 50, schedule: str = "causal_uncertainty",
                  subseq_len: int = 1, ar_seq_stride: int = 8, offset_proportion: float = 0.75,
                  compat: str = "fixed", window: int = 16, frames_per_latent: int = 4) -> Plan:
    """Partner prediction over ``min(sampling_seq_len, clip)`` frames, then joint generation of ``sampling_seq_len``
    more frames from the last ``context_seq_len`` frames of it (spec 4.4). One token sequence holds both: phase 2
    starts at the latent frame ``T_gt - Tc``, so the output is phase 1 without its last context frames followed by
    phase 2. ``meta``: ``phase2_window`` (first window of phase 2), ``joint_phase_start`` (frames)."""
    f = int(frames_per_latent)
    pp = rolling_plan("partner_prediction", num_persons, clip_frames, driven, sampling_seq_len, context_seq_len,
                      sampling_steps, schedule, offset_proportion, compat, window, f)
    t_gt = int(pp.meta["gt_latent"])
    joint = joint_plan(num_persons, sampling_seq_len, context_seq_len, sampling_steps, schedule, subseq_len,
                       ar_seq_stride, offset_proportion, compat, window, f, task="joint")
    offset = t_gt - joint.context_latent
    arrays = {}
    for k in PLAN_ARRAYS:
        a, b = getattr(pp, k), getattr(joint, k)
        if k == "window_start":
            b = b + offset
        elif k == "window_index":
            b = b + pp.num_windows
        elif k == "step":
            b = b + pp.num_steps
        arrays[k] = np.concatenate([a, b])
    plan = Plan(task="pp2joint", schedule=schedule, compat=compat, sampling_steps=int(sampling_steps),
                num_persons=pp.num_persons, window=pp.window, total_latent=offset + joint.total_latent,
                context_latent=pp.context_latent, group_size=pp.group_size, frames_per_latent=f, **arrays)
    plan.meta.update({"gt_latent": t_gt, "driven": pp.meta["driven"], "phase2_window": pp.num_windows,
                      "phase2_start": offset, "joint_phase_start": t_gt * f})
    return plan
