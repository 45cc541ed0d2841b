"""DFoT training steps per second, with the VQ-VAE encoding every batch (the reference) and with the latent cache.

One step = batch assembly + latents (frozen VQ-VAE encode, or cached code lookup) + token packing + per-token noise
levels + DFoT forward + loss + backward + AdamW step. The cache's one-off build time is reported beside it, with the
number of steps after which it has paid for itself. Data: random values in the reference HDF5 layout (speed does
not depend on the values), or ``--data DIR`` (a preprocessed dataset directory, e.g. data/synthetic).

``--phase-check`` also measures how far the cheaper per-clip alternative (encode each whole clip once at its 4
phase offsets and slice windows out of it) would be from real window encodings (see magnet/training/latent_cache.py).

    .venv/bin/python bench/bench_dfot.py [--sizes paper tiny --batch 32 --persons 2 --steps 3 --clips 4 --frames 200]
    .venv/bin/python bench/bench_dfot.py --sizes tiny --phase-check --data data/synthetic --vqvae <vqvae.safetensors>
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _data import build_random_dataset

from datamodules import MotionDataModule
from magnet.models.vqvae import PoseVQVAE, save_vqvae
from magnet.representation import MotionStats
from magnet.training.dfot_module import DFoTModule
from magnet.training.latent_cache import CachedLatentDataset, LatentCache, encode_clip_windows, person_frames


def make_vqvae(preset: str, path: Path, stats: MotionStats, seed: int = 0) -> Path:
    """A randomly initialised VQ-VAE whose codebook is initialised from random inputs (diverse codes)."""
    torch.manual_seed(seed)
    model = PoseVQVAE(preset).train()
    with torch.no_grad():
        model(torch.randn(64, 64, 135), torch.randn(64, 64, 19), torch.randn(64, 16, model.config.dec_cond_dim))
    meta = {"stats_mean": ",".join(repr(float(v)) for v in stats.mean),
            "stats_std": ",".join(repr(float(v)) for v in stats.std)}
    return save_vqvae(model.eval(), path, metadata=meta)


def steps_per_second(module: DFoTModule, dm: MotionDataModule, steps: int) -> float:
    """Time ``steps`` training steps (after one warm-up step)."""
    opt = torch.optim.AdamW(module.model.parameters(), lr=1e-4)
    module.train()
    it = iter(dm.train_dataloader())

    def step():
        batch = next(it)
        x0, valid = module.clean_tokens(batch)
        levels, mask = module.training_levels(valid)
        terms, _, _ = module.loss_terms(x0, levels, mask, step=0)
        opt.zero_grad(set_to_none=True)
        terms["loss"].backward()
        opt.step()

    step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return steps / (time.perf_counter() - t0)


@torch.no_grad()
def phase_check(module: DFoTModule, dm: MotionDataModule, max_clips: int = 20) -> dict[str, float]:
    """Whole-clip encodings at 4 phase offsets vs per-window encodings of the same frames.

    Returns, over the valid latents of every window of the first ``max_clips`` clips, the fraction whose code
    differs and the mean relative L2 difference ``|z_clip - z_window| / |z_window|`` (``_centre``: only the 4
    central latents of each 16-latent window, ``_edge``: the first and last 2).
    """
    vq = module.vqvae
    f = vq.factor
    ds = dm.train_set.datasets[0]
    L = ds.sequence_len
    tz = L // f
    win_codes, clip_codes, positions = [], [], []
    for c, info in enumerate(ds.clips[:max_clips]):
        arr = ds.clip_array(c)
        codes = encode_clip_windows(vq, arr, info.num_persons, L)                 # [P, S, Tz]
        for p in range(info.num_persons):
            value, enc, _ = person_frames(arr, info.num_persons, p)
            for phase in range(f):
                n = (value.shape[0] - phase) // f * f
                z = vq.encode_continuous(value[None, phase:phase + n], enc[None, phase:phase + n])
                _, idx = vq.quantizer.quantize(z)                                 # [1, n / f]
                starts = np.arange(phase, codes.shape[1], f)
                starts = starts[(starts - phase) // f + tz <= idx.shape[1]]
                for s in starts:
                    k = (s - phase) // f
                    win = codes[p, s]
                    valid = win >= 0
                    win_codes.append(win[valid])
                    clip_codes.append(idx[0, k:k + tz].numpy()[valid])
                    positions.append(np.arange(tz)[valid])
    a, b, pos = np.concatenate(win_codes), np.concatenate(clip_codes), np.concatenate(positions)
    cb = vq.quantizer.codebook
    za, zb = cb[torch.from_numpy(a).long()], cb[torch.from_numpy(b).long()]
    rel = ((za - zb).norm(dim=-1) / za.norm(dim=-1).clamp_min(1e-8)).numpy()
    centre = (pos >= tz // 2 - 2) & (pos < tz // 2 + 2)
    edge = (pos < 2) | (pos >= tz - 2)
    out = {"latents": int(a.size)}
    for name, sel in (("", slice(None)), ("_centre", centre), ("_edge", edge)):
        out[f"code_mismatch{name}"] = round(float((a[sel] != b[sel]).mean()), 4)
        out[f"mean_rel_diff{name}"] = round(float(rel[sel].mean()), 4)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="+", default=["paper", "tiny"])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--tiny-batch", type=int, default=64)
    ap.add_argument("--persons", type=int, default=2)
    ap.add_argument("--steps", type=int, default=3, help="timed steps per configuration (paper size is slow on CPU)")
    ap.add_argument("--clips", type=int, default=4)
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--data", type=Path, default=None, help="a dataset directory <dir>/<name>_dataset.hdf5 instead")
    ap.add_argument("--vqvae", type=Path, default=None, help="a trained vqvae.safetensors (else random init)")
    ap.add_argument("--phase-check", action="store_true")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.data is None:
            stats = build_random_dataset(tmp, args.clips, args.frames, args.persons, unit_stats=True)
            dataset = {"name": "bench", "dir": str(tmp)}
        else:
            dataset = {"name": args.data.name, "dir": str(args.data)}
            stats = None
        rows = []
        for size in args.sizes:
            batch = args.batch if size == "paper" else args.tiny_batch
            if args.vqvae is not None:
                vq_path = args.vqvae
            else:
                if stats is None:
                    stats = MotionDataModule(datasets=[dataset], person_num=args.persons).stats
                vq_path = make_vqvae(size, tmp / f"vqvae_{size}.safetensors", stats)
            module = DFoTModule(vqvae_ckpt=str(vq_path), model=size, num_persons=args.persons, body_model=None,
                                stats=stats)
            dm = MotionDataModule(datasets=[dataset], sequence_len=64, person_num=args.persons, batch_size=batch,
                                  num_workers=0, seed=0, epoch_length=batch * (args.steps + 2))
            dm.setup("fit")
            if stats is None:
                module.set_stats(dm.stats)
            fly = steps_per_second(module, dm, args.steps)
            cache = LatentCache.build(module.vqvae, dm.train_set)
            base = dm.train_set
            dm.train_set = CachedLatentDataset(base, cache)
            cached = steps_per_second(module, dm, args.steps)
            dm.train_set = base
            saved = 1.0 / fly - 1.0 / cached
            breakeven = cache.build_seconds / saved if saved > 0 else float("inf")
            rows.append((size, batch, fly, cached, cached / fly, cache.num_windows, cache.build_seconds,
                         cache.nbytes / 1e6, breakeven))
            if args.phase_check:
                print(f"[{size}] whole-clip phase encoding vs window encoding: {phase_check(module, dm)}")
        print(f"\nDFoT training steps/s on {torch.get_num_threads()} CPU thread(s), P={args.persons}, T=64 "
              f"({f'random data, {args.clips} clips x {args.frames} frames' if args.data is None else args.data})")
        head = ("size", "batch", "on-the-fly", "cached", "speed-up", "windows", "build s", "cache MB", "break-even")
        print("| " + " | ".join(head) + " |")
        print("|" + "---|" * len(head))
        for size, b, fly, cached, sp, win, build, mb, be in rows:
            print(f"| {size} | {b} | {fly:.2f} | {cached:.2f} | {sp:.2f}x | {win} | {build:.1f} | {mb:.2f} | "
                  f"{be:.0f} steps |")


if __name__ == "__main__":
    main()
