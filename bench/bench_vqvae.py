"""VQ-VAE training speed (optimiser steps per second) on random normalised windows.

    .venv/bin/python bench/bench_vqvae.py [--presets paper tiny] [--batch 32] [--steps 5] [--threads 0]

One step = VQVAEModule.training_step (encoder, EMA quantizer, decoder, all losses) + backward + AdamW, i.e. what
the Trainer runs per batch, without data loading (see bench_datamodule.py for the loader).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from magnet.representation import STATS_DIM, MotionStats, PackedLayout
from magnet.training.vqvae_module import VQVAEModule


def fake_batch(batch: int, frames: int = 64) -> dict[str, torch.Tensor]:
    lay = PackedLayout(1)
    x = torch.randn(batch, frames, 1, lay.dim) * 0.5
    x[..., lay.mask] = 1.0
    return {"x": x, "valid": torch.ones(batch, frames, 1, dtype=torch.bool)}


def steps_per_second(preset: str, batch: int, steps: int, warmup: int = 2) -> float:
    stats = MotionStats(np.zeros(STATS_DIM), np.ones(STATS_DIM))
    module = VQVAEModule(model=preset, stats=stats, body_model=None)
    module.train()
    module.log = lambda *args, **kwargs: None  # no Trainer here: logging is the Trainer's job, not measured
    opt = torch.optim.AdamW(module.model.parameters(), lr=2e-4)
    data = fake_batch(batch)
    for i in range(warmup + steps):
        if i == warmup:
            start = time.perf_counter()
        loss = module.training_step(data, i)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(module.model.parameters(), 0.5)
        opt.step()
    return steps / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", nargs="+", default=["paper", "tiny"])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"device: cpu, torch threads: {torch.get_num_threads()}, batch {args.batch} x 64 frames")
    print(f"{'preset':8s} {'steps/s':>8s} {'windows/s':>10s}")
    for preset in args.presets:
        sps = steps_per_second(preset, args.batch, args.steps)
        print(f"{preset:8s} {sps:8.2f} {sps * args.batch:10.1f}")


if __name__ == "__main__":
    import warnings

    warnings.filterwarnings("ignore", message="no SMPL-X model configured")
    main()
