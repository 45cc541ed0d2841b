"""Shared fixtures: a tiny synthetic dataset built once per test session."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory):
    """A data dir holding ``synthetic/`` with 12 short clips (train/val/test), built through preprocessing."""
    from magnet.data.synthetic import ensure_synthetic_dataset

    root = tmp_path_factory.mktemp("data")
    ensure_synthetic_dataset(root, num_clips=12, seed=0, frames=(90, 150))
    return root


@pytest.fixture(scope="session")
def sampler_checkpoints(synthetic_root, tmp_path_factory):
    """Tiny trained DFoT checkpoints for 1, 2 and 3 persons: ``{P: dir}`` holding dfot.safetensors,
    vqvae.safetensors and last.ckpt (tests/sampling_fixtures.py)."""
    from sampling_fixtures import build_checkpoints

    return build_checkpoints(synthetic_root, tmp_path_factory.mktemp("dfot"))
