"""Seconds and file sizes of skeleton videos (magnet.visualize.render) and exports (magnet.export) on the CPU.

    .venv/bin/python bench/bench_render.py [--frames 200] [--persons 2] [--samples 1 3] [--panel 384]

Writes one output npz (GT + samples of smooth random motion, default skeleton) into a temporary folder and times
``render_clip`` (loading, forward kinematics, drawing, encoding) for each ``--samples`` count (panels = 1 + S) in
mp4 and gif, then ``export_outputs`` to BVH and SMPL-X npz (GT + every sample, every person).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_evaluate import random_clip

from magnet.evaluation import write_inference_config, write_output_npz
from magnet.export import export_outputs
from magnet.visualize.render import render_clip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=200)
    p.add_argument("--persons", type=int, default=2)
    p.add_argument("--samples", type=int, nargs="+", default=[1, 3])
    p.add_argument("--panel", type=int, default=384)
    args = p.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        arrays = random_clip(rng, max(args.samples), args.frames, args.persons)
        npz = write_output_npz(run / "clip.npz", **arrays, context_timesteps=32)
        write_inference_config(run, {"sampling_task": "joint", "smpl_path": None})
        print(f"{args.frames} frames, {args.persons} persons, panel width {args.panel} px, default skeleton")
        for s in args.samples:
            for fmt in ("mp4", "gif"):
                t0 = time.perf_counter()
                video = render_clip(npz, Path(tmp) / f"s{s}.{fmt}", samples=s, panel_px=args.panel)
                dt = time.perf_counter() - t0
                print(f"render {1 + s} panels {fmt}: {dt:5.2f} s, {video.stat().st_size / 1e6:6.2f} MB")
        rows = 1 + max(args.samples)
        for fmt in ("bvh", "smplx"):
            t0 = time.perf_counter()
            files = export_outputs(run, Path(tmp) / fmt, fmt)
            dt = time.perf_counter() - t0
            size = sum(f.stat().st_size for f in files) / len(files) / 1e6
            print(f"export {fmt}: {len(files)} files ({rows} rows x {args.persons} persons) in {dt:5.2f} s, "
                  f"{size:.2f} MB each")


if __name__ == "__main__":
    main()
