"""``make demo``: the whole pipeline on the embedded synthetic data, end to end, with a report.

Steps (each skipped when its result exists, so a second run reuses finished steps; ``--force`` redoes them):

1. the synthetic dataset (``python -m magnet.data.synthetic --out DATA``);
2. the tiny VQ-VAE (``python train.py experiment=demo_vqvae ...``);
3. the tiny DFoT (``python train.py experiment=demo_dfot ...``);
4. for each task (joint, partner prediction, live motion control, inbetweening): ``python sample.py`` on the
   held-out test clips, ``python evaluate.py`` on its output, the baselines of the task (``python -m
   magnet.evaluation.baselines``, then ``python evaluate.py``) on the same clips and frames;
5. videos of the first clips (ground truth and samples side by side) and a still per task;
6. ``OUT/REPORT.md``: the metrics with units, the model beside its baselines and the ground truth's own
   reference points, the videos, and the command that produced each artefact.

Training and sampling run as the documented commands (subprocesses, their progress bars shown); evaluation,
baselines and rendering run in this process through the same functions those commands call. ``--quick`` runs
every step with a handful of training and sampling steps on one clip per task (the test suite runs it).

    python -m magnet.demo --out outputs/demo --data data [--quick] [--force]
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TASKS = ("joint", "partner_prediction", "motion_control_live", "inbetweening")
# The demo's sampling settings (the task's shipped settings otherwise): 20 DDIM steps and x0 guidance on every 2nd
# step keep the demo within its 10 minutes; `temporal` roots (every generated person integrates its own deltas): the
# tiny model's partner transforms jitter from token to token, and placing partners from them (temporal_partner)
# measured FD 13.8 against 0.31 for partner prediction on the same clips.
COMMON = ["sampling_num=4", "sampling_steps=20", "sampling.guidance_every=2", "max_clips=8",
          "task.root_transform_mode=temporal"]
SAMPLING = {
    "joint": COMMON,
    "partner_prediction": COMMON,
    "motion_control_live": COMMON,
    "inbetweening": [*COMMON, "task.keyframes=[0,72,147]", "sampling_seq_len=148"],
}
QUICK_TRAIN = ["stage.total_steps=12", "stage.val_every_n_steps=12", "callbacks.model_checkpoint.every_n_train_steps=12",
               "stage.batch_size=8", "data.epoch_length=96", "stage.val_batches=1",
               "callbacks.validation_metrics.enabled=false"]
QUICK_DFOT = ["stage.latent_cache=false"]
QUICK_SAMPLE = ["sampling_num=2", "sampling_steps=2", "max_clips=1"]
METRICS = [  # (label, unit, path in the body dict, lower is better)
    ("FD per frame (positions)", "m^2", ("g", "solo", "fd")),
    ("FD, 30-frame windows / 30", "m^2", ("g", "solo_seq", "fd")),
    ("FD per frame (velocities)", "(m/s)^2", ("k", "solo", "fd")),
    ("MPJPE (mean over samples)", "mm", ("mpjpe_mm",)),
    ("foot sliding ratio", "fraction", ("g", "foot_skate_gen", "foot_sliding_ratio")),
]


@dataclass
class Demo:
    out: Path
    data: Path
    quick: bool = False
    force: bool = False
    python: str = sys.executable
    log: list[dict] = field(default_factory=list)

    # ------------------------------------------------------------------------------------------ steps

    def step(self, name: str, done: Path, command: list[str] | None = None, fn=None, shown: str | None = None) -> None:
        """Run one step unless ``done`` exists; record its command (as the user would type it) and seconds."""
        shown = shown or " ".join(command or [])
        n = len(self.log) + 1
        if done.exists() and not self.force:
            print(f"[{n}] {name}: done earlier ({done}); reusing it", flush=True)
            self.log.append({"step": name, "command": shown, "seconds": None, "reused": True})
            return
        print(f"[{n}] {name}: {shown}", flush=True)
        t0 = time.perf_counter()
        if command is not None:
            res = subprocess.run([self.python, *command], cwd=REPO, check=False)
            if res.returncode != 0:
                raise SystemExit(f"error: demo step '{name}' failed (exit {res.returncode}): {shown}")
        else:
            fn()
        self.log.append({"step": name, "command": shown, "seconds": round(time.perf_counter() - t0, 1),
                         "reused": False})

    def run(self) -> Path:
        out, data = self.out, self.data
        out.mkdir(parents=True, exist_ok=True)
        quick_train = QUICK_TRAIN if self.quick else []
        self.step("synthetic dataset", data / "synthetic" / "manifest.json",
                  ["-m", "magnet.data.synthetic", "--out", str(data)],
                  shown=f"python -m magnet.data.synthetic --out {data}")
        vq = out / "vqvae" / "vqvae.safetensors"
        cmd = ["train.py", "experiment=demo_vqvae", f"paths.data_dir={data}", f"hydra.run.dir={out / 'vqvae'}",
               *quick_train]
        self.step("tiny VQ-VAE", vq, cmd, shown="python " + " ".join(cmd))
        dfot = out / "dfot" / "dfot.safetensors"
        cmd = ["train.py", "experiment=demo_dfot", f"paths.data_dir={data}", f"hydra.run.dir={out / 'dfot'}",
               f"stage.vqvae_ckpt={vq}", *quick_train, *(QUICK_DFOT if self.quick else [])]
        self.step("tiny DFoT", dfot, cmd, shown="python " + " ".join(cmd))
        for task in TASKS:
            self.task(task)
        self.report()
        return out / "REPORT.md"

    def task(self, task: str) -> None:
        from magnet.evaluation import evaluate_directory
        from magnet.evaluation.baselines import BASELINES_FOR_TASK, make_baseline_dir

        out = self.out
        run = out / "samples" / task
        extra = QUICK_SAMPLE if self.quick else []
        cmd = ["sample.py", f"ckpt={out / 'dfot'}", f"paths.data_dir={self.data}", f"task={task}", f"out_dir={run}",
               *SAMPLING[task], *extra]
        self.step(f"sample {task}", run / ".complete", cmd, shown="python " + " ".join(cmd))
        (run / ".complete").touch()
        quick = self.quick  # quick mode skips the ground truth's own reference points (GT-vs-GT FD: costly)
        self.step(f"evaluate {task}", run / "eval_dict_c.yaml",
                  fn=lambda: evaluate_directory(run, baselines=not quick),
                  shown=f"python evaluate.py run_dir={run}" + (" baselines=false" if quick else ""))
        for name in BASELINES_FOR_TASK.get(task, ()):
            base = out / "baselines" / task / name
            self.step(f"baseline {name} ({task})", base / "eval_dict_c.yaml",
                      fn=lambda b=base, n=name: (make_baseline_dir(run, n, b), evaluate_directory(b, baselines=False)),
                      shown=f"python -m magnet.evaluation.baselines {run} --name {name} --out {base} && "
                            f"python evaluate.py run_dir={base} baselines=false")
        self.step(f"videos {task}", out / "videos" / task / ".complete", fn=lambda: self.videos(task, run),
                  shown=f"python -m magnet.visualize.render {run} --out {out / 'videos' / task} --samples 2")

    def videos(self, task: str, run: Path) -> None:
        from magnet.visualize.render import render_clip

        target = self.out / "videos" / task
        files = sorted(run.glob("*.npz"))[: 1 if self.quick else 2]
        for npz in files:
            render_clip(npz, target / f"{npz.stem}.mp4", samples=2, panel_px=192 if self.quick else 288,
                        max_frames=48 if self.quick else None)
        if files:
            render_clip(files[0], target / f"{files[0].stem}.png", samples=2, format="png",
                        panel_px=192 if self.quick else 288)
        (target / ".complete").touch()

    # ------------------------------------------------------------------------------------------ report

    def report(self) -> None:
        import yaml

        from magnet.evaluation.baselines import BASELINES_FOR_TASK

        out = self.out
        lines = ["# Demo report", "",
                 ("Everything below was produced by `make demo` (`python -m magnet.demo --out "
                 f"{out} --data {self.data}{' --quick' if self.quick else ''}`) on the embedded synthetic data: "
                 "tiny VQ-VAE and DFoT trained here, samples of the held-out test clips, metrics by `evaluate.py` "
                 "(fixed mode; for the conditioning tasks only the generated persons are scored), and baselines "
                 "scored on exactly the same clips and frames. Lower is better in every row. The GT-vs-GT FD is "
                 "the FD between two halves of the ground truth (a generator matching the data scores about "
                 "this); the last context frame held is the evaluation's own MPJPE reference."), ""]
        verdicts = []
        for task in TASKS:
            run = out / "samples" / task
            model = yaml.safe_load((run / "eval_dict_c.yaml").read_text())
            bases = {n: yaml.safe_load((out / "baselines" / task / n / "eval_dict_c.yaml").read_text())
                     for n in BASELINES_FOR_TASK.get(task, ())}
            meta = model.get("meta", {})
            lines += [f"## {task}", "",
                      (f"{meta.get('clips')} clips x {meta.get('samples_per_clip')} samples; evaluated persons: "
                      f"{meta.get('evaluated_persons')}; frames {meta.get('generated_frames')} per sample."), ""]
            head = "| metric | unit | model | " + " | ".join(n.replace("_", " ") for n in bases) + " | GT reference |"
            lines += [head, "|" + "---|" * (4 + len(bases))]
            for label, unit, path in METRICS:
                m = _get(model["body"], path)
                if m is None:
                    continue
                ref = _get(model.get("baseline", {}), path)
                row = [label, unit, _fmt(m)] + [_fmt(_get(b["body"], path)) for b in bases.values()] + [_fmt(ref)]
                lines.append("| " + " | ".join(row) + " |")
                judged = label.startswith("FD") or (label.startswith("MPJPE") and task != "joint")
                for n, b in bases.items():
                    v = _get(b["body"], path)
                    if judged and v is not None:
                        verdicts.append((task, label, n, m < v))
            videos = sorted((out / "videos" / task).glob("*.mp4"))
            stills = sorted((out / "videos" / task).glob("*.png"))
            lines += ["", "Videos (ground truth, then samples; amber = context frames): " +
                      ", ".join(f"[{v.name}](videos/{task}/{v.name})" for v in videos) + ".", ""]
            lines += [f"![{task}](videos/{task}/{s.name})" for s in stills] + [""]
        beaten = [v for v in verdicts if v[3]]
        lines += ["## Does the model beat the baselines?", "",
                  (f"{len(beaten)} of {len(verdicts)} comparisons favour the model (the FD rows against every "
                  "baseline; MPJPE too for the conditioning tasks, whose ground truth is one answer):"), ""]
        lines += [f"- {t}, {label}: {'beats' if ok else 'does NOT beat'} {n.replace('_', ' ')}"
                  for t, label, n, ok in verdicts]
        lines += ["", "## Commands and times", "", "| step | command | seconds |", "|---|---|---|"]
        for entry in self.log:
            secs = "reused" if entry["reused"] else f"{entry['seconds']:.1f}"
            lines.append(f"| {entry['step']} | `{entry['command']}` | {secs} |")
        (out / "REPORT.md").write_text("\n".join(lines) + "\n")
        (out / "demo_steps.json").write_text(json.dumps(self.log, indent=1))
        print(f"report: {out / 'REPORT.md'}")


def _get(d, path):
    for k in path:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d if isinstance(d, (int, float)) else None


def _fmt(v) -> str:
    if v is None:
        return "-"
    return f"{v:.4g}"


def main(argv: list[str] | None = None) -> int:
    from magnet.cli import OneLineArgumentParser, fail
    from magnet.errors import MagnetError

    ap = OneLineArgumentParser(prog="python -m magnet.demo", description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="outputs/demo")
    ap.add_argument("--data", default="data")
    ap.add_argument("--quick", action="store_true", help="a handful of steps everywhere (tests)")
    ap.add_argument("--force", action="store_true", help="redo every step")
    args = ap.parse_args(argv)
    out = Path(args.out)
    if args.force and out.exists():
        shutil.rmtree(out)
    t0 = time.perf_counter()
    try:  # evaluation, baselines and rendering run in this process: their user errors stay one line
        Demo(out=out, data=Path(args.data), quick=args.quick, force=args.force).run()
    except MagnetError as exc:
        fail(f"demo: {exc}")
    print(f"demo finished in {time.perf_counter() - t0:.0f} s; outputs in {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
