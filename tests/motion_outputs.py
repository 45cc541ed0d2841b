"""Small sampler-format output directories for the visualisation and export tests (from the synthetic test clips)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from magnet.evaluation.make_example import make_perturbed_outputs


def make_outputs(data_root: Path, out_dir: Path, *, frames: int = 48, samples: int = 2, context: int = 16,
                 max_clips: int = 2, task: str = "joint") -> list[Path]:
    """Ground truth + ``samples`` perturbed copies (0.1 rad, 0.1 m/s drift) of the first synthetic test clips, cut
    to ``frames`` frames, with ``inf_cfg.yaml``; returns the npz paths."""
    return make_perturbed_outputs(data_root / "synthetic", "test", out_dir, num_samples=samples, noise=0.1, seed=0,
                                  root_drift=0.1, context=context, max_clips=max_clips, num_frames=frames, task=task)


def write_foreign_npz(path: Path) -> Path:
    """An npz that is not a sampler output (other keys)."""
    np.savez(path, poses=np.zeros((4, 165)), trans=np.zeros((4, 3)))
    return path
