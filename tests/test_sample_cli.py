"""``python sample.py``: plans before paying, outputs the evaluator reads, resume, and one-line refusals."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from magnet.errors import CheckpointError, ConfigError, DataError
from magnet.evaluation import evaluate_directory
from magnet.evaluation.io import load_output_npz
from magnet.sampling import SamplingConfig
from magnet.sampling.plans import Plan
from magnet.sampling.run import sample_directory

REPO = Path(__file__).resolve().parent.parent


def _run(args, cwd=REPO):
    return subprocess.run([sys.executable, "sample.py", *args], cwd=cwd, capture_output=True, text=True, check=False,
                          timeout=600)


def _base(root, ckpt, out):
    # dataset.prepare=null: the session's small synthetic dataset is used as it is (no rebuild)
    return [f"ckpt={ckpt}", f"paths.data_dir={root}", "dataset.prepare=null", f"out_dir={out}", "progress=false"]


def test_plan_only_writes_the_plan_and_prints_calls(synthetic_root, sampler_checkpoints, tmp_path):
    out = tmp_path / "plan"
    r = _run(_base(synthetic_root, sampler_checkpoints[2], out) + ["plan_only=true", "sampling_steps=10"])
    assert r.returncode == 0, r.stderr
    assert "100 network calls" in r.stdout                       # 10 windows x 10 steps for 200 frames
    assert sorted(p.name for p in out.iterdir()) == ["plan.npz"]  # nothing else: no model work
    plan = Plan.load(out / "plan.npz")
    assert plan.num_calls == 100 and plan.levels.dtype == np.int16
    assert plan.window_start.tolist()[::10] == [0, 4, 8, 12, 16, 20, 24, 28, 32, 36]


def test_sample_evaluate_resume_and_refuse(synthetic_root, sampler_checkpoints, tmp_path):
    out = tmp_path / "joint"
    args = _base(synthetic_root, sampler_checkpoints[2], out) + ["sampling_num=2", "sampling_steps=3",
                                                                 "max_clips=2", "sampling_seq_len=96"]
    r = _run(args)
    assert r.returncode == 0, r.stderr
    files = sorted(out.glob("*.npz"))
    assert len(files) == 2 and (out / "inf_cfg.yaml").is_file()
    clip = load_output_npz(files[0])
    assert clip.num_samples == 2 and clip.context_timesteps == 32 and clip.timesteps == 96
    cfg = yaml.safe_load((out / "inf_cfg.yaml").read_text())
    assert cfg["sampling_cfg"]["sampling_task"] == "joint" and cfg["magnet"]["compat"] == "fixed"
    assert cfg["fps"] == 30.0  # the dataset's rate, read by evaluate.py and the renderer
    result = evaluate_directory(out, write=False)
    assert result["meta"]["fps"] == 30
    assert np.isfinite(result["body"]["g"]["solo"]["fd"])

    # a re-run resumes: the finished clips are kept as they are
    stamp = [p.stat().st_mtime_ns for p in files]
    r = _run(args)
    assert r.returncode == 0 and "resumed: 2 clip(s)" in r.stdout
    assert [p.stat().st_mtime_ns for p in files] == stamp

    # another configuration in the same folder: refused (nothing touched), then replaced with overwrite=true
    r = _run(args[:-1] + ["sampling_seq_len=128"])
    assert r.returncode == 2 and "holds another sampling configuration" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert [p.stat().st_mtime_ns for p in files] == stamp
    r = _run(args[:-1] + ["sampling_seq_len=128", "overwrite=true"])
    assert r.returncode == 0, r.stderr
    assert load_output_npz(files[0]).timesteps == 128


@pytest.mark.parametrize("override, needle", [
    ("task=dance_battle", "unknown task 'dance_battle'"),
    ("schedule=zigzag", "unknown schedule 'zigzag'"),
    ("context_seq_len=30", "multiple of 4"),
    ("sampling_steps=0", "sampling_steps must be in"),
    ("seed=abc", "seed must be an integer, got 'abc'"),  # the SamplingConfig fields: test_sampler.py
])
def test_cli_refusals_are_one_line_and_write_nothing(synthetic_root, sampler_checkpoints, tmp_path, override,
                                                     needle):
    out = tmp_path / "never"
    r = _run(_base(synthetic_root, sampler_checkpoints[2], out) + [override])
    assert r.returncode == 2, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], r.stderr
    assert not out.exists()


def _datasets(root):
    return [{"name": "synthetic", "dir": str(root / "synthetic")}]


@pytest.mark.parametrize("case, error, needle", [
    ("below_minimum", ConfigError, "below the minimum of 16"),
    ("missing_ckpt", CheckpointError, "not found"),
    ("vqvae_ckpt", CheckpointError, "holds VQ-VAE weights"),
    ("unknown_clip", DataError, "is not in split"),
    ("persons", DataError, "at least 3 persons"),
    ("few_persons_named", DataError, "has 1 person(s) but the checkpoint generates 2"),
    ("no_split", DataError, "has no split"),
    ("device", ConfigError, "CUDA is not available"),
])
def test_bad_requests_fail_before_model_work(synthetic_root, sampler_checkpoints, tmp_path, case, error, needle):
    import torch

    ckpt = sampler_checkpoints[2]
    kw = {"datasets": _datasets(synthetic_root), "progress": False}
    config = SamplingConfig.for_task("joint", sampling_steps=2)
    if case == "below_minimum":
        with pytest.raises(error, match=needle):
            SamplingConfig.for_task("joint", context_seq_len=8)
        return
    if case == "missing_ckpt":
        ckpt = tmp_path / "missing"
    elif case == "vqvae_ckpt":
        ckpt = ckpt / "vqvae.safetensors"
    elif case == "unknown_clip":
        kw["clips"] = ["synth_9999_nope"]
    elif case == "persons":
        ckpt = sampler_checkpoints[3]
    elif case == "few_persons_named":
        kw["clips"], kw["split"] = ["synth_0001_lead_follow"], "test"
        from magnet.data.hdf5 import open_dataset

        with open_dataset(synthetic_root / "synthetic" / "synthetic_dataset.hdf5") as f:
            if f.shape("test", "synth_0001_lead_follow")[1] != 1:
                pytest.skip("the lead_follow test clip has two persons in this build")
    elif case == "no_split":
        kw["split"] = "holdout"
    elif case == "device":
        if torch.cuda.is_available():
            pytest.skip("CUDA is available here")
        kw["device"] = "cuda"
    out = tmp_path / "never"
    with pytest.raises(error) as err:
        sample_directory(ckpt, out, config, **kw)
    assert needle in str(err.value) and "\n" not in str(err.value), str(err.value)
    assert not out.exists()


def test_three_person_checkpoint_samples_the_three_person_clips(synthetic_root, sampler_checkpoints, tmp_path):
    out = tmp_path / "trio"
    config = SamplingConfig.for_task("joint", sampling_steps=2, sampling_num=1, sampling_seq_len=80)
    run = sample_directory(sampler_checkpoints[3], out, config, datasets=_datasets(synthetic_root), split="val",
                           progress=False)
    assert run.written and run.excluded                        # 2-person clips of the split are left out
    clip = load_output_npz(out / f"{run.written[0]}.npz")
    assert clip.num_persons == 3


def test_clips_too_short_for_the_task_are_left_out_unless_named(synthetic_root, sampler_checkpoints, tmp_path):
    # session clips are 90-150 frames: a keyframe at 120 rules out the shorter ones
    config = SamplingConfig.for_task("inbetweening", sampling_steps=2, sampling_num=1, sampling_seq_len=124,
                                     keyframes=(0, 60, 120))
    kw = {"datasets": _datasets(synthetic_root), "split": "train", "progress": False}
    run = sample_directory(sampler_checkpoints[2], tmp_path / "ib", config, **kw)
    assert run.written and run.excluded
    from magnet.data.hdf5 import open_dataset

    with open_dataset(synthetic_root / "synthetic" / "synthetic_dataset.hdf5") as f:
        short = next(n for n in run.excluded if f.shape("train", n)[1] >= 2)   # too short, not too few persons
    with pytest.raises(DataError, match="keyframe 120 needs its ground truth"):
        sample_directory(sampler_checkpoints[2], tmp_path / "named", config, clips=[short], **kw)
    assert not (tmp_path / "named").exists()
