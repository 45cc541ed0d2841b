"""Speed against quality of sampling settings on a trained checkpoint (default: the demo's tiny DFoT) and the held-out
synthetic test clips: DDIM steps x x0-guidance frequency x precision. Every setting samples the same clips with the
same seed and is evaluated by the evaluation code (fixed mode): seconds, network calls, FD, windowed FD
and foot sliding; the speed-up is against the full setting (50 steps, guidance every step, fp32) measured in the
same run. Used to pick ``sampling=fast`` (README, Sampling).

    .venv/bin/python bench/bench_fast_preset.py [--ckpt outputs/demo/dfot] [--data data] [--clips 8] [--samples 4]
        [--task joint] [--root temporal]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from magnet.evaluation import evaluate_directory
from magnet.sampling import SamplingConfig
from magnet.sampling.run import sample_directory

GRID = [  # (steps, guidance every, precision); guidance every 0 = no x0 guidance
    (50, 1, "fp32"), (50, 0, "fp32"), (20, 1, "fp32"), (20, 2, "fp32"), (10, 1, "fp32"), (10, 2, "fp32"),
    (10, 0, "fp32"), (10, 2, "bf16"), (5, 1, "fp32"), (5, 0, "fp32"),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt", default="outputs/demo/dfot")
    ap.add_argument("--data", default="data")
    ap.add_argument("--task", default="joint")
    ap.add_argument("--clips", type=int, default=8)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--root", default="temporal", help="root_transform_mode")
    args = ap.parse_args()
    datasets = [{"name": "synthetic", "dir": str(Path(args.data) / "synthetic")}]
    rows = []
    print(f"{args.task} on {args.clips} test clips x {args.samples} samples, checkpoint {args.ckpt}")
    print(f"{'steps':>5s} {'guide':>5s} {'prec':>5s} {'seconds':>8s} {'speed-up':>8s} {'calls':>6s} "
          f"{'FD':>8s} {'FD win':>8s} {'sliding':>8s}")
    with tempfile.TemporaryDirectory() as tmp:
        full = None
        for steps, every, precision in GRID:
            guided = every > 0
            cfg = SamplingConfig.for_task(args.task, sampling_steps=steps, sampling_num=args.samples,
                                          guidance_every=max(every, 1), precision=precision,
                                          use_smoothing_guidance=guided, use_foot_skating_guidance=guided,
                                          root_transform_mode=args.root)
            out = Path(tmp) / f"s{steps}_g{every}_{precision}"
            t0 = time.perf_counter()
            run = sample_directory(args.ckpt, out, cfg, datasets=datasets, split="test", max_clips=args.clips,
                                   seed=1111, progress=False, log=lambda *_: None)
            sec = time.perf_counter() - t0
            body = evaluate_directory(out, write=False, baselines=False)["body"]
            fd, fdw = body["g"]["solo"]["fd"], body["g"]["solo_seq"]["fd"]
            slide = body["g"]["foot_skate_gen"]["foot_sliding_ratio"]
            full = full or sec
            rows.append((steps, every, precision, sec, full / sec, run.network_calls, fd, fdw, slide))
            print(f"{steps:5d} {every if guided else '-':>5} {precision:>5s} {sec:8.1f} {full / sec:7.1f}x "
                  f"{run.network_calls:6d} {fd:8.4f} {fdw:8.4f} {slide:8.3f}", flush=True)
    ref = rows[0]
    print(f"full setting: FD {ref[6]:.4f}; settings at least 10x faster with FD within 5%:")
    for r in rows[1:]:
        if r[4] >= 10 and r[6] <= ref[6] * 1.05:
            print(f"  {r[0]} steps, guidance every {r[1] or '-'}, {r[2]}: {r[4]:.1f}x, FD {r[6]:.4f}")


if __name__ == "__main__":
    main()
