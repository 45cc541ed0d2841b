"""Sampling speed: the DD100 joint configuration (spec 4.9 dd100.yaml) end to end, against the bare network.

One clip (a 420-frame synthetic two-person clip, preprocessed as real data), ``--samples`` samples as the batch,
``--steps`` DDIM steps, 200 frames requested (208 generated: 1 window + 9 AR windows = 500 network calls at 50
steps). Random weights (speed does not depend on them). Measured in one run, so the ratios hold across hosts:

* ``sampler``: ``Sampler.generate`` without x0 guidance (plans, steps, smoothing, post-processing, decoding, roots);
* ``sampler, every token``: the same with the last-layer pruning off (``Sampler.prune_rows = False``): every token
  through every layer, the straightforward computation;
* ``bare network``: the same number of network forwards on the same shapes and levels and nothing else; the
  sampler's overhead is its time over this one.

    .venv/bin/python bench/bench_sample.py [--size paper|tiny] [--samples 10] [--steps 50] [--frames 200]
"""

from __future__ import annotations

import argparse
import time

import torch

from magnet.body import default_body_model
from magnet.data.preprocess import preprocess_sequence
from magnet.data.synthetic import generate_sequence
from magnet.models.dfot import DFoT
from magnet.models.vqvae import PoseVQVAE
from magnet.representation import compute_stats
from magnet.sampling import Sampler, SamplingConfig


def make_models(size: str, persons: int, seed: int = 0):
    """A random DFoT and a random VQ-VAE whose codebook is initialised from random inputs."""
    torch.manual_seed(seed)
    vq = PoseVQVAE(size).train()
    with torch.no_grad():
        vq(torch.randn(64, 64, 135), torch.randn(64, 64, 19), torch.randn(64, 16, vq.config.dec_cond_dim))
    dfot = DFoT(size, persons, latent_dim=vq.config.d_latent)
    return dfot.eval(), vq.eval()


def make_clip(frames: int = 420, persons: int = 2, seed: int = 0):
    body = default_body_model()
    raw = generate_sequence("mirror" if persons == 2 else "circle_dance", seed, num_frames=frames,
                            num_persons=persons, body_model=body)
    clip = preprocess_sequence(raw, body)
    return clip, compute_stats([clip])


def timed(fn, repeat: int = 1) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def bare_network(sampler: Sampler, plan, samples: int) -> float:
    """The plan's network forwards alone: same shapes, same levels, the window's tokens as input."""
    P, W, tm = sampler.num_persons, sampler.token_layout.width, sampler.window
    x = torch.randn(samples, tm, P, W)
    levels = torch.as_tensor(plan.levels, dtype=torch.long)
    with torch.no_grad():
        t0 = time.perf_counter()
        for n in range(plan.num_calls):
            sampler.dfot(x, levels[n].expand(samples, tm, P))
        return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="paper", choices=["paper", "tiny"])
    ap.add_argument("--samples", type=int, default=10)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--persons", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=1, help="best of N runs for each measurement")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    dfot, vq = make_models(args.size, args.persons)
    clip, stats = make_clip(persons=args.persons)
    sampler = Sampler(dfot, vq, stats)
    cfg = SamplingConfig.for_task("joint", sampling_num=args.samples, sampling_steps=args.steps,
                                  sampling_seq_len=args.frames, use_smoothing_guidance=False,
                                  use_foot_skating_guidance=False)
    plan = sampler.plan(cfg)
    print(f"DD100 joint configuration, {args.size} size: {plan.total_frames} frames, {args.samples} samples, "
          f"{args.steps} DDIM steps, P = {args.persons}, {torch.get_num_threads()} threads")
    print(f"plan: {plan.summary()}")

    def run():
        return sampler.generate(context=clip, config=cfg, seed=0, joints=False)

    run()  # warm-up (first-call allocations)
    calls = sampler.network_calls
    t_sampler = timed(run, args.repeat)
    calls = (sampler.network_calls - calls) // args.repeat
    sampler.prune_rows = False
    t_full = timed(run, args.repeat)
    sampler.prune_rows = True
    t_bare = min(bare_network(sampler, plan, args.samples) for _ in range(args.repeat))

    rows = [
        ("sampler (unguided)", t_sampler, calls),
        ("sampler, every token through every layer", t_full, calls),
        ("bare network forwards (same calls and shapes)", t_bare, plan.num_calls),
    ]
    print(f"{'what':48s} {'seconds':>8s} {'calls':>6s} {'ms/call':>8s}")
    for name, sec, n in rows:
        print(f"{name:48s} {sec:8.2f} {n:6d} {1000 * sec / max(n, 1):8.1f}")
    print(f"sampler overhead over the bare network: {100 * (t_sampler / t_bare - 1):+.1f}%")
    print(f"last-layer pruning speed-up: {t_full / t_sampler:.2f}x")


if __name__ == "__main__":
    main()
