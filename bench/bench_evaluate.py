"""Seconds to evaluate a run directory on the CPU (magnet.evaluation.evaluate_directory, default mode "fixed").

    .venv/bin/python bench/bench_evaluate.py [--clips 100] [--samples 10] [--frames 200] [--persons 2]
                                             [--context 32] [--mode fixed] [--no-baselines]

Writes ``--clips`` output npz files (GT + ``--samples`` perturbed samples of ``--frames`` frames and ``--persons``
persons, smooth random motion) and ``inf_cfg.yaml`` into a temporary folder, then times one evaluation with the
built-in default skeleton (FK, all metrics for g and k, GT baselines, YAML/CSV/summary). Generation is not timed.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from magnet.body import default_body_model
from magnet.evaluation import evaluate_directory, write_inference_config, write_output_npz
from magnet.geometry import axis_angle_to_quat


def random_clip(rng: np.random.Generator, samples: int, frames: int, persons: int) -> dict[str, np.ndarray]:
    """GT (row 0) + perturbed samples of smooth random motion: ``[1+S, T, P, ...]`` float32 arrays."""
    t = np.arange(frames)[:, None, None, None] / 30.0
    rows = 1 + samples
    amp = rng.uniform(0.05, 0.4, (rows, 1, persons, 21, 3))
    amp[1:] = amp[0] * (1 + 0.2 * rng.normal(size=(samples, 1, persons, 21, 3)))
    phase = rng.uniform(0, 2 * np.pi, (1, 1, persons, 21, 3)) + 0.3 * rng.normal(size=(rows, 1, persons, 21, 3))
    body = amp * np.sin(2 * np.pi * 0.7 * t[None] + phase)  # [R, T, P, 21, 3]
    yaw = np.pi * np.arange(persons)[None, None, :] + 0.3 * np.sin(t[None, ..., 0, 0] + rng.normal(size=(rows, 1, 1)))
    root_aa = np.stack([np.zeros_like(yaw), yaw, np.zeros_like(yaw)], axis=-1)  # [R, T, P, 3]
    pos = np.zeros((rows, frames, persons, 3))
    pos[..., 0] = np.linspace(-0.6, 0.6, persons)[None, None, :] + 0.1 * np.sin(t[None, ..., 0, 0])
    pos[..., 1] = 0.93
    pos[..., 2] = np.cumsum(0.01 + 0.002 * rng.normal(size=(rows, frames, persons)), axis=1)
    q_root = axis_angle_to_quat(torch.from_numpy(root_aa)).numpy()
    return {
        "betas": np.broadcast_to(rng.normal(0, 0.5, (1, 1, persons, 10)), (rows, frames, persons, 10)),
        "T_world_root": np.concatenate([q_root, pos], axis=-1),
        "body_joint_rotations": axis_angle_to_quat(torch.from_numpy(body)).numpy(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=100)
    ap.add_argument("--samples", type=int, default=10)
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--persons", type=int, default=2)
    ap.add_argument("--context", type=int, default=32)
    ap.add_argument("--mode", default="fixed", choices=["fixed", "reference"])
    ap.add_argument("--no-baselines", action="store_true", help="skip the GT-vs-GT FD / static MPJPE baselines")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp)
        for i in range(args.clips):
            write_output_npz(run_dir / f"clip_{i:04d}.npz", **random_clip(rng, args.samples, args.frames, args.persons),
                             context_timesteps=args.context, timesteps=args.frames, gt_timesteps=args.frames,
                             mode="joint")
        write_inference_config(run_dir, {"sampling_task": "joint", "smpl_path": None})
        body = default_body_model()
        start = time.perf_counter()
        result = evaluate_directory(run_dir, mode=args.mode, body_model=body, baselines=not args.no_baselines)
        seconds = time.perf_counter() - start
    meta = result["meta"]
    print(f"evaluate_directory ({args.mode}, {body.source}, {torch.get_num_threads()} threads): {meta['clips']} clips "
          f"x {meta['samples_per_clip']} samples x {args.frames} frames ({args.frames - args.context} evaluated) x "
          f"{args.persons} persons in {seconds:.2f} s")
    print(f"{seconds:.3f}")


if __name__ == "__main__":
    main()
