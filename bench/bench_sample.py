"""Sampling speed, every figure measured in one run so the ratios hold across hosts (random weights: speed does
not depend on them; a 420-frame synthetic two-person clip preprocessed as real data).

Sections (``--sections``, default all):

* ``joint``: the DD100 joint configuration (spec 4.9 dd100.yaml: 200 frames requested, 208 generated, 10 samples,
  50 DDIM steps, 500 network calls) without x0 guidance: the sampler, the sampler with every token through every
  layer (``Sampler.prune_rows = False``), the bare network forwards on the same shapes and levels (the
  sampler's overhead is its time over them), and the sampler with the networks under bfloat16 autocast;
* ``guided``: the same with smoothing and foot-skating guidance (the reference's settings): the guided/unguided
  time ratio, and one guidance step fused (one decoder forward, one input-only backward) against the
  straightforward two-pass computation (a forward and backward per term, with the decoder's weight gradients as
  the reference computes them), on the window's shape;
* ``pp``: guided partner prediction (dd100_partner_prediction.yaml: 342 network calls);
* ``live``: live motion control, the latency of one 32-frame chunk (1.07 s of motion at 30 fps) at 50 steps and
  with the fast preset (10 steps, guidance every 2nd step, bf16).

    .venv/bin/python bench/bench_sample.py [--size paper|tiny] [--sections joint guided pp live] [--samples 10]
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
from magnet.sampling.guidance import Guidance

UNGUIDED = {"use_smoothing_guidance": False, "use_foot_skating_guidance": False}
FAST = {"sampling_steps": 10, "guidance_every": 2, "precision": "bf16"}


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
    """The plan's network forwards alone: same shapes, same levels, nothing else."""
    P, W, tm = sampler.num_persons, sampler.token_layout.width, sampler.window
    x = torch.randn(samples, tm, P, W)
    levels = torch.as_tensor(plan.levels, dtype=torch.long)
    with torch.no_grad():
        t0 = time.perf_counter()
        for n in range(plan.num_calls):
            sampler.dfot(x, levels[n].expand(samples, tm, P))
        return time.perf_counter() - t0


class Table:
    def __init__(self):
        print(f"{'what':58s} {'seconds':>8s} {'calls':>6s} {'ms/call':>8s} {'decoder':>8s}")

    def row(self, name: str, sec: float, calls: int, decoder: int | str = "-") -> None:
        print(f"{name:58s} {sec:8.2f} {calls:6d} {1000 * sec / max(calls, 1):8.1f} {decoder!s:>8s}", flush=True)


def run_generate(sampler: Sampler, clip, cfg: SamplingConfig, repeat: int) -> tuple[float, int, int]:
    calls, dec = sampler.network_calls, sampler.decoder_calls
    sec = timed(lambda: sampler.generate(context=clip, config=cfg, seed=0, joints=False), repeat)
    return sec, (sampler.network_calls - calls) // repeat, (sampler.decoder_calls - dec) // repeat + 1


def guidance_step_speedup(sampler: Sampler, cfg: SamplingConfig, samples: int, repeat: int = 5) -> tuple[float, ...]:
    """Seconds of one fused guidance step and of the two-pass one (with weight gradients) on the window shape."""
    g = Guidance(sampler.dfot, sampler.vqvae, sampler.token_layout, cfg, torch.zeros(1, sampler.num_persons, 10))
    x0 = torch.randn(samples, sampler.window, sampler.num_persons, sampler.token_layout.width)
    g.guide(x0, 0.5)
    g.guide_two_pass(x0, 0.5, weight_grads=True)
    fused = timed(lambda: g.guide(x0, 0.5), repeat)
    two = timed(lambda: g.guide_two_pass(x0, 0.5, weight_grads=True), repeat)
    return fused, two


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="paper", choices=["paper", "tiny"])
    ap.add_argument("--sections", nargs="+", default=["joint", "guided", "pp", "live"],
                    choices=["joint", "guided", "pp", "live"])
    ap.add_argument("--samples", type=int, default=10)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=1, help="best of N runs for each measurement")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    dfot, vq = make_models(args.size, 2)
    clip, stats = make_clip()
    sampler = Sampler(dfot, vq, stats)
    print(f"{args.size} size, {torch.get_num_threads()} threads; DD100 settings: {args.frames} frames, "
          f"{args.samples} samples, {args.steps} DDIM steps, P = 2")
    table = Table()
    joint = SamplingConfig.for_task("joint", sampling_num=args.samples, sampling_steps=args.steps,
                                    sampling_seq_len=args.frames)
    sampler.generate(context=clip, config=joint.replace(sampling_steps=2, **UNGUIDED), joints=False)  # warm-up
    t_unguided = None
    if "joint" in args.sections or "guided" in args.sections:
        cfg = joint.replace(**UNGUIDED)
        t_unguided, calls, dec = run_generate(sampler, clip, cfg, args.repeat)
        table.row("joint, unguided: sampler", t_unguided, calls, dec)
    if "joint" in args.sections:
        sampler.prune_rows = False
        t_full, calls, dec = run_generate(sampler, clip, joint.replace(**UNGUIDED), args.repeat)
        sampler.prune_rows = True
        table.row("joint, unguided: every token through every layer", t_full, calls, dec)
        plan = sampler.plan(joint)
        t_bare = min(bare_network(sampler, plan, args.samples) for _ in range(args.repeat))
        table.row("joint: bare network forwards (same calls and shapes)", t_bare, plan.num_calls)
        print(f"  sampler overhead over the bare network: {100 * (t_unguided / t_bare - 1):+.1f}%; "
              f"last-layer pruning: {t_full / t_unguided:.2f}x")
        t_bf16, calls, dec = run_generate(sampler, clip, joint.replace(precision="bf16", **UNGUIDED), args.repeat)
        table.row("joint, unguided, networks in bf16 (sampling.precision=bf16)", t_bf16, calls, dec)
        print(f"  bf16 autocast: {t_unguided / t_bf16:.2f}x faster than fp32")
    if "guided" in args.sections:
        t_guided, calls, dec = run_generate(sampler, clip, joint, args.repeat)
        table.row("joint, guided (smoothing + foot skating, fused)", t_guided, calls, dec)
        fused, two = guidance_step_speedup(sampler, joint, args.samples)
        print(f"  guided / unguided: {t_guided / t_unguided:.2f} (the reference: 4.65)")
        print(f"  one guidance step: fused {1000 * fused:.1f} ms, two-pass with weight gradients {1000 * two:.1f} ms "
              f"-> {two / fused:.2f}x")
        t_fast, calls, dec = run_generate(sampler, clip, joint.replace(**FAST), args.repeat)
        table.row("joint, fast preset (10 steps, guidance every 2nd, bf16)", t_fast, calls, dec)
        print(f"  fast preset vs full guided: {t_guided / t_fast:.1f}x faster")
    if "pp" in args.sections:
        pp = SamplingConfig.for_task("partner_prediction", sampling_num=args.samples, sampling_steps=args.steps,
                                     sampling_seq_len=args.frames, compat="reference")
        t_pp, calls, dec = run_generate(sampler, clip, pp, args.repeat)
        table.row("partner prediction, guided (reference plan)", t_pp, calls, dec)
    if "live" in args.sections:
        for name, kw in (("50 steps, guided", {"sampling_steps": args.steps}), ("fast preset", FAST)):
            session = sampler.live(clip[:32], num_samples=1, joints=False, **kw)
            session.push(clip[32:64])                                   # fills the first window (warm-up)
            t0 = time.perf_counter()
            chunk = session.push(clip[64:96])
            sec = time.perf_counter() - t0
            table.row(f"live, one 32-frame chunk (1.07 s of motion), {name}", sec, chunk.network_calls)
            print(f"  latency / chunk duration: {sec / (32 / 30):.2f}")


if __name__ == "__main__":
    main()
