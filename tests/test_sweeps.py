"""Sweeps and clusters through the real entry points: Hydra's sweep syntaxes with train.py, sample.py and
evaluate.py (each job in its own directory with its resolved config), the submitit launchers (local jobs for real;
the SLURM job script as submitit writes it), the objective returned to sweepers, and an Optuna search."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent


def _train_args(root, out, *extra):
    """train.py -m (Hydra's flags come before the overrides) on a tiny, fast configuration, plus ``extra``."""
    return [sys.executable, "train.py", "-m", "experiment=demo_vqvae", f"paths.data_dir={root}", f"paths.output_root={out}",
            "dataset.build.num_clips=12", "+dataset.prepare.frames=[90,150]", "stage.total_steps=3",
            "stage.batch_size=8", "stage.val_every_n_steps=3", "stage.val_batches=1", "data.epoch_length=160",
            "callbacks.validation_metrics=null", *extra]


def _sweep_dir(out: Path, *parts: str) -> Path:
    (sweep,) = list(out.joinpath("multirun", *parts).iterdir())
    return sweep


def test_train_sweep_on_the_local_submitit_launcher(synthetic_root, tmp_path):
    """choice / range / glob in one sweep of two jobs, each a separate process (hydra/launcher=submitit_local),
    each in <sweep>/<n>/ with its resolved config and weights; objective= comes back as the job's return value."""
    out = tmp_path / "outputs"
    res = subprocess.run(_train_args(synthetic_root, out, "model=glob(t*)", "seed=range(1,3)",
                                     "stage.lr=choice(1e-3)", "objective=val/mpjpe_mm",
                                     "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=20"),
                         cwd=REPO, capture_output=True, text=True, timeout=900, check=False)
    assert res.returncode == 0, res.stderr[-3000:]
    sweep = _sweep_dir(out, "vqvae")
    assert (sweep / "multirun.yaml").is_file()
    seeds = {}
    for job in ("0", "1"):
        cfg = yaml.safe_load((sweep / job / ".hydra" / "config.yaml").read_text())
        assert cfg["model"]["name"] == "tiny" and cfg["stage"]["lr"] == 1e-3
        seeds[job] = cfg["seed"]
        resolved = yaml.safe_load((sweep / job / ".hydra" / "resolved.yaml").read_text())
        assert resolved["stage"]["model"] == cfg["model"]["vqvae"]  # every network dimension, resolved
        assert resolved["data"]["batch_size"] == 8 and resolved["paths"]["data_dir"] == str(synthetic_root)
        assert resolved["callbacks"]["model_checkpoint"]["dirpath"] == str(sweep / job / "checkpoints")
        assert (sweep / job / "vqvae.safetensors").is_file() and (sweep / job / "checkpoints" / "last.ckpt").is_file()
    assert seeds == {"0": 1, "1": 2}
    returned = {}
    for result in sweep.glob(".submitit/*/*_result.pkl"):
        status, job_return = pickle.loads(result.read_bytes())
        assert status == "success"
        returned[job_return.cfg.seed] = job_return.return_value
    assert set(returned) == {1, 2}
    for seed, value in returned.items():  # the objective is the job's final val/mpjpe_mm, as a float
        job = "0" if seed == 1 else "1"
        rows = (sweep / job / "csv" / "metrics.csv").read_text().splitlines()
        col = rows[0].split(",").index("val/mpjpe_mm")
        logged = [float(r.split(",")[col]) for r in rows[1:] if r.split(",")[col]]
        assert isinstance(value, float) and value == pytest.approx(logged[-1], rel=1e-6)


def test_slurm_job_script(tmp_path):
    """hydra/launcher=slurm: the job array script submitit writes from conf/hydra/launcher/slurm.yaml (sbatch and
    srun are stand-ins here: sbatch keeps the script and refuses the job)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = tmp_path / "job.sbatch"
    (bin_dir / "sbatch").write_text(f'#!/bin/sh\ncp "$1" {script}\necho "sbatch: no cluster here" >&2\nexit 1\n')
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")
    for tool in ("sbatch", "srun"):
        (bin_dir / tool).chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    res = subprocess.run([sys.executable, "train.py", "-m", "stage=dfot", "dataset=dd100", "stage.lr=1e-4,2e-4",
                          f"paths.output_root={tmp_path / 'outputs'}", "hydra/launcher=slurm", "trainer=ddp",
                          "trainer.num_nodes=2", "hydra.launcher.gpus_per_node=4", "hydra.launcher.partition=gpu",
                          "hydra.launcher.account=proj", "hydra.launcher.timeout_min=720",
                          "hydra.launcher.array_parallelism=1", "hydra.launcher.mem_gb=128",
                          "hydra.launcher.setup=[source .venv/bin/activate]"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert res.returncode != 0 and "sbatch: no cluster here" in res.stderr  # nothing ran: no GPU node needed
    flags = {line.split("=", 1)[0]: line.split("=", 1)[1] if "=" in line else True
             for line in script.read_text().splitlines() if line.startswith("#SBATCH ")}
    assert flags["#SBATCH --partition"] == "gpu" and flags["#SBATCH --account"] == "proj"
    assert flags["#SBATCH --nodes"] == "2" and flags["#SBATCH --gpus-per-node"] == "4"
    assert flags["#SBATCH --ntasks-per-node"] == "4"  # one task per GPU, as Lightning's SLURM DDP expects
    assert flags["#SBATCH --cpus-per-task"] == "8" and flags["#SBATCH --mem"] == "128GB"
    assert flags["#SBATCH --time"] == "720" and flags["#SBATCH --array"] == "0-1%1"  # 2 jobs, 1 at a time
    assert flags["#SBATCH --signal"] == "USR1@120" and flags["#SBATCH --requeue"] is True  # Lightning's requeue
    assert "source .venv/bin/activate" in script.read_text()
    assert "submitit.core._submit" in script.read_text()


def test_sample_sweep(synthetic_root, sampler_checkpoints, tmp_path):
    """sample.py -m: glob over schedules x range over steps; with out_dir set to each job's directory every job
    plans into its own folder next to its resolved config."""
    out = tmp_path / "outputs"
    res = subprocess.run([sys.executable, "sample.py", "-m", f"ckpt={sampler_checkpoints[2]}",
                          f"paths.data_dir={synthetic_root}", f"paths.output_root={out}", "dataset.prepare=null",
                          "progress=false", "plan_only=true", "task=joint", "max_clips=1",
                          "schedule=glob(*,exclude=task_default)", "sampling_steps=range(5,11,5)",
                          "out_dir=${hydra:runtime.output_dir}"],
                         cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
    assert res.returncode == 0, res.stderr[-3000:]
    sweep = _sweep_dir(out, "samples")
    from magnet.sampling.plans import Plan

    seen = set()
    for job in sorted(p for p in sweep.iterdir() if p.is_dir()):
        cfg = yaml.safe_load((job / ".hydra" / "config.yaml").read_text())
        plan = Plan.load(job / "plan.npz")
        seen.add((cfg["schedule"]["name"], cfg["sampling_steps"]))
        assert cfg["out_dir"] == "${hydra:runtime.output_dir}"  # the job's own directory: its plan.npz is here
        assert (plan.schedule, plan.sampling_steps) == (cfg["schedule"]["name"], cfg["sampling_steps"])
    assert seen == {(s, n) for s in ("autoregressive", "causal_uncertainty", "full_sequence") for n in (5, 10)}


def test_evaluate_sweep(synthetic_root, tmp_path):
    """evaluate.py -m over two output directories (comma list) x two lengths (choice): the metrics land in each
    run_dir, each job's resolved config in the sweep directory."""
    from magnet.evaluation.make_example import make_perturbed_outputs

    runs = []
    for k, noise in enumerate((0.05, 0.1)):
        runs.append(tmp_path / f"run{k}")
        make_perturbed_outputs(synthetic_root / "synthetic", "test", runs[-1], num_samples=2, noise=noise,
                               num_frames=90)
    res = subprocess.run([sys.executable, str(REPO / "evaluate.py"), "-m", f"run_dir={runs[0]},{runs[1]}",
                          "seq_len=choice(60,80)", "print_summary=false", "baselines=false"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=600, check=False)
    assert res.returncode == 0, res.stderr[-3000:]
    fd = {}
    for run in runs:
        for length in (60, 80):
            result = yaml.safe_load((run / f"eval_dict_c_seq_{length}.yaml").read_text())
            fd[run.name, length] = result["body"]["g"]["solo"]["fd"]
    assert all(np.isfinite(v) for v in fd.values()) and fd["run0", 60] < fd["run1", 60]  # more noise, larger FD
    sweep = _sweep_dir(tmp_path / "outputs", "evaluate")
    jobs = [yaml.safe_load((sweep / str(n) / ".hydra" / "config.yaml").read_text()) for n in range(4)]
    assert {(Path(j["run_dir"]).name, j["seq_len"]) for j in jobs} == set(fd)
    assert not (tmp_path / ".hydra").exists()  # nothing written into the working directory itself


@pytest.mark.slow
def test_optuna_search(synthetic_root, tmp_path):
    """hydra/sweeper=optuna_search for two trials: the sweeper gets each trial's objective back and writes the
    best one. (Slow: two training runs; CI runs the objective's return value through the submitit launcher above,
    the sweeper's config in test_configs.py and its objective check below.)"""
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    out = tmp_path / "outputs"
    res = subprocess.run(_train_args(synthetic_root, out, "hydra/sweeper=optuna_search",
                                     "hydra.sweeper.n_trials=2", "objective=val/mpjpe_mm"),
                         cwd=REPO, capture_output=True, text=True, timeout=900, check=False)
    assert res.returncode == 0, res.stderr[-3000:]
    sweep = _sweep_dir(out, "vqvae")
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert set(best["best_params"]) == {"stage.lr", "stage.warmup_steps", "stage.weight_decay"}
    finals = []
    for trial in ("0", "1"):
        cfg = yaml.safe_load((sweep / trial / ".hydra" / "config.yaml").read_text())
        assert 5e-5 <= cfg["stage"]["lr"] <= 2e-3 and cfg["stage"]["warmup_steps"] in (500, 1000, 2000)
        rows = (sweep / trial / "csv" / "metrics.csv").read_text().splitlines()
        col = rows[0].split(",").index("val/mpjpe_mm")
        finals.append([float(r.split(",")[col]) for r in rows[1:] if r.split(",")[col]][-1])
    assert best["best_value"] == pytest.approx(min(finals), rel=1e-6)


def test_optimising_sweeper_needs_an_objective(synthetic_root, tmp_path):
    """Without objective= the sweeper would get nothing to minimise: refused before any training, one line."""
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    res = subprocess.run(_train_args(synthetic_root, tmp_path / "none", "hydra/sweeper=optuna_search",
                                     "hydra.sweeper.n_trials=1"),
                         cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert res.returncode == 2 and len(lines) == 1 and "name it with objective=" in lines[0], res.stderr[-2000:]
    assert not any(p.is_file() and p.name != "multirun.yaml" for p in (tmp_path / "none").rglob("*"))
