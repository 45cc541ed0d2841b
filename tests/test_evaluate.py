"""Evaluation pipeline: output npz IO, perturbed example outputs, evaluate_directory, evaluate.py errors.

Most directories use context 32 with 60-frame clips, so the 30-frame windowed FD (1890-dim eigendecompositions,
seconds each on a small CPU) is skipped; the windowed pooling is checked on small features instead.
"""

from __future__ import annotations

import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from magnet.body import default_body_model
from magnet.data.hdf5 import HDF5Writer, read_sequence
from magnet.errors import BodyModelError, ConfigError, DataError
from magnet.evaluation import (
    SAMPLING_TASKS,
    ClipOutput,
    evaluate_directory,
    forward_joints,
    load_output_npz,
    load_yaml,
    read_inference_config,
    select_frames,
    to_csv_lines,
    write_output_npz,
)
from magnet.evaluation.make_example import make_perturbed_outputs
from magnet.evaluation.run import _block_half_sums, _fd, _fd_sums
from magnet.geometry import axis_angle_to_matrix, yaw_matrix
from magnet.metrics import windowed_frechet_distance
from magnet.representation import pack_sequence, world_joints

REPO = Path(__file__).resolve().parents[1]
T_CLIP, P_CLIP = 60, 2
EVAL_FILES = ("eval_dict_c.yaml", "eval_dict_c.csv", "eval_summary.md")


def _clip(seed: int, frames: int = T_CLIP, persons: int = P_CLIP) -> torch.Tensor:
    """A packed clip: two persons 1 m apart facing each other, swaying joints, walking slowly along +z."""
    rng = np.random.default_rng(seed)
    t = torch.arange(frames, dtype=torch.float64) / 30
    amp = torch.from_numpy(rng.uniform(0.1, 0.4, (persons, 21, 3)))
    phase = torch.from_numpy(rng.uniform(0, 2 * np.pi, (persons, 21, 3)))
    body = axis_angle_to_matrix(amp * torch.sin(2 * np.pi * 0.8 * t[:, None, None, None] + phase))
    yaw = torch.tensor([0.0, np.pi])[:persons].expand(frames, persons) + 0.2 * torch.sin(t)[:, None]
    pos = torch.zeros(frames, persons, 3, dtype=torch.float64)
    pos[..., 0] = torch.tensor([-0.5, 0.5])[:persons] + 0.3 * torch.sin(t)[:, None]
    pos[..., 1] = 0.93
    pos[..., 2] = 0.2 * t[:, None]
    betas = torch.from_numpy(rng.normal(0, 0.5, (persons, 10)))[None].expand(frames, persons, 10)
    return pack_sequence(betas, body, None, yaw_matrix(yaw), pos, torch.zeros(frames, persons, 21))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "tiny_dataset.hdf5"
    with HDF5Writer(path) as w:
        for i in range(3):
            w.add("test", f"clip{i}", _clip(i))
        w.add("train", "train0", _clip(9, frames=40))
    return path


def _make(dataset: Path, out: Path, noise: float, *, drift: float = 0.0, task: str = "joint", context: int = 32,
          samples: int = 3) -> Path:
    make_perturbed_outputs(dataset, "test", out, num_samples=samples, noise=noise, seed=0, root_drift=drift,
                           context=context, task=task)
    return out


@pytest.fixture(scope="module")
def noisy_dir(dataset, tmp_path_factory) -> Path:
    return _make(dataset, tmp_path_factory.mktemp("noisy"), 0.05, drift=0.05)


@pytest.fixture(scope="module")
def fixed_result(noisy_dir):
    """The default (fixed-mode) evaluation of ``noisy_dir`` and the bytes of its YAML file."""
    result = evaluate_directory(noisy_dir)
    return result, (noisy_dir / "eval_dict_c.yaml").read_bytes()


def _arrays(S: int = 2, T: int = 12, P: int = 2) -> dict:
    rng = np.random.default_rng(0)
    quat = rng.normal(size=(1 + S, T, P, 21, 4))
    root = np.concatenate([rng.normal(size=(1 + S, T, P, 4)), rng.normal(size=(1 + S, T, P, 3))], axis=-1)
    return {"betas": rng.normal(size=(1 + S, T, P, 10)), "T_world_root": root, "body_joint_rotations": quat,
            "context_timesteps": 4, "timesteps": T, "gt_timesteps": T - 2, "mode": "joint"}


# ------------------------------------------------------------------------------------------------ npz IO
def test_npz_roundtrip(tmp_path):
    a = _arrays()
    path = write_output_npz(tmp_path / "c.npz", **a, joint_phase_start_timesteps=-1)
    clip = load_output_npz(path)
    assert clip.name == "c" and (clip.num_samples, clip.num_frames, clip.num_persons) == (2, 12, 2)
    np.testing.assert_array_equal(clip.body_joint_rotations, a["body_joint_rotations"].astype(np.float32))
    assert clip.hand_joint_rotations.shape == (3, 12, 2, 30, 4) and not clip.hand_joint_rotations.any()
    assert (clip.context_timesteps, clip.timesteps, clip.gt_timesteps, clip.gt_end) == (4, 12, 10, 10)
    assert clip.mode == "joint" and clip.joint_phase_start_timesteps == -1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.npz"]  # no temporary file left


def _write_raw(path: Path, **arrays) -> Path:
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)
    return path


@pytest.mark.parametrize("change, words", [
    (lambda a: a.pop("T_world_root"), ["'T_world_root' is missing"]),
    (lambda a: a.pop("timesteps"), ["'timesteps' is missing"]),
    (lambda a: a.update(betas=a["betas"][:, :, :, :9]), ["'betas'", "shape"]),
    (lambda a: a.update(body_joint_rotations=a["body_joint_rotations"][:, :11]), ["'body_joint_rotations'", "agree"]),
    (lambda a: a["T_world_root"].__setitem__((1, 3, 0, 5), np.nan), ["'T_world_root'", "NaN", "row 1", "frame 3"]),
    (lambda a: a["body_joint_rotations"].__setitem__((2, 0, 1, 4), 0.0), ["'body_joint_rotations'", "zero quat"]),
    (lambda a: a.update(context_timesteps=10), ["context_timesteps=10"]),
    (lambda a: a.update(gt_timesteps=13), ["gt_timesteps=13"]),
])
def test_npz_validation_errors(tmp_path, change, words):
    a = _arrays()
    a["hand_joint_rotations"] = np.zeros((3, 12, 2, 30, 4))
    change(a)
    path = _write_raw(tmp_path / "bad.npz", **a)
    with pytest.raises(DataError) as err:
        load_output_npz(path)
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg
    for w in words:
        assert w in msg


def test_npz_needs_a_sample_and_a_real_file(tmp_path):
    a = _arrays(S=0)
    with pytest.raises(DataError, match="at least one sample"):
        write_output_npz(tmp_path / "x.npz", **a)
    assert not (tmp_path / "x.npz").exists()
    (tmp_path / "junk.npz").write_text("not a zip")
    with pytest.raises(DataError, match="not a readable npz"):
        load_output_npz(tmp_path / "junk.npz")


# ------------------------------------------------------------------------------------------ frames / FK
def test_select_frames_modes(tmp_path):
    a = _arrays(S=4, T=50)
    clip = ClipOutput(path=tmp_path / "c.npz", betas=a["betas"], T_world_root=a["T_world_root"],
                      body_joint_rotations=a["body_joint_rotations"], hand_joint_rotations=np.zeros((5, 50, 2, 30, 4)),
                      context_timesteps=10, timesteps=50, gt_timesteps=40)
    s = select_frames(clip, sample_num=2)
    assert (s.rows, s.gen_start, s.gen_end, s.gt_end) == ((1, 2), 10, 40, 40)
    s = select_frames(clip, whole_seq=True, sample_num=2)
    assert (s.rows, s.gen_end, s.gt_end) == ((1, 2), 50, 40)
    s = select_frames(clip, whole_seq=True, sample_num=2, reference=True)  # the reference ignores sample_num here
    assert s.rows == (1, 2, 3, 4)
    s = select_frames(clip, seq_len=30)
    assert (s.gen_end, s.gt_end) == (30, 30)
    s = select_frames(clip, seq_len=45)
    assert (s.gen_end, s.gt_end) == (45, 40)
    with pytest.raises(ConfigError, match="exclusive"):
        select_frames(clip, whole_seq=True, seq_len=30)
    with pytest.raises(ConfigError, match="only 4 samples"):
        select_frames(clip, sample_num=5)
    assert select_frames(clip, sample_num=5, reference=True).rows == (1, 2, 3, 4)
    with pytest.raises(DataError, match="at least 2"):
        select_frames(clip, seq_len=11)


def test_example_gt_row_matches_dataset(dataset, tmp_path):
    _make(dataset, tmp_path, 0.0, task="joint", context=16)
    clip = load_output_npz(tmp_path / "clip1.npz")
    assert (clip.num_samples, clip.num_frames, clip.num_persons, clip.context_timesteps) == (3, 60, 2, 16)
    x = torch.from_numpy(read_sequence(dataset, "test", "clip1")).double()
    body = default_body_model()
    want = world_joints(x, body)  # [T, P, 22, 3] from the packed 6D / 9D data
    got = forward_joints(body, clip.betas[0], clip.T_world_root[0], clip.body_joint_rotations[0])
    assert torch.allclose(got, want, atol=2e-5)
    for key in ("betas", "T_world_root", "body_joint_rotations"):  # noise 0: samples == GT exactly
        arr = getattr(clip, key)
        assert np.array_equal(arr[1:], np.broadcast_to(arr[:1], arr[1:].shape))
    cfg = yaml.safe_load((tmp_path / "inf_cfg.yaml").read_text())
    assert cfg["sampling_task"] == "joint" and cfg["smpl_path"] is None


def test_example_partner_task_keeps_person0(dataset, tmp_path):
    _make(dataset, tmp_path, 0.1, drift=0.1, task="partner_prediction")
    clip = load_output_npz(tmp_path / "clip0.npz")
    r = clip.T_world_root
    assert np.array_equal(r[1:, :, 0], np.broadcast_to(r[:1, :, 0], r[1:, :, 0].shape))
    assert np.array_equal(r[1:, :32], np.broadcast_to(r[:1, :32], r[1:, :32].shape))  # context untouched
    assert np.abs(r[1:, 32:, 1] - r[:1, 32:, 1]).max() > 1e-3


def test_example_finds_the_dataset_and_writes_nothing_on_error(dataset, tmp_path):
    from magnet.evaluation.make_example import main

    root = tmp_path / "data"  # the layout of python -m magnet.data.synthetic --out data
    (root / "tiny").mkdir(parents=True)
    (root / "tiny" / "tiny_dataset.hdf5").write_bytes(dataset.read_bytes())
    assert main(["--data", str(root), "--out", str(tmp_path / "ok"), "--num-samples", "1"]) == 0
    assert sorted(p.name for p in (tmp_path / "ok").iterdir()) == ["clip0.npz", "clip1.npz", "clip2.npz",
                                                                     "inf_cfg.yaml"]
    with pytest.raises(DataError, match="need at least context"):  # every clip is checked before writing
        make_perturbed_outputs(dataset, "test", tmp_path / "short", context=59)
    assert not (tmp_path / "short").exists()
    with pytest.raises(DataError, match="dataset file not found"):
        make_perturbed_outputs(tmp_path / "none.hdf5", "test", tmp_path / "none")


# ------------------------------------------------------------------------------------------ evaluation
def test_end_to_end_outputs(noisy_dir, fixed_result):
    result = fixed_result[0]
    files = {p.name for p in noisy_dir.iterdir()}
    assert set(EVAL_FILES) <= files and not any(".tmp-" in f for f in files)
    data = yaml.safe_load((noisy_dir / "eval_dict_c.yaml").read_text())
    assert list(data) == ["body", "baseline", "meta"]
    body = data["body"]
    assert list(body) == ["g", "k", "mpjpe_mm", "mpjpe_best_list_mm", "mpjve_mm_per_s", "mpjve_best_list_mm_per_s"]
    assert list(body["g"]) == ["solo", "solo_seq", "corr_gt", "corr_gen", "foot_skate_gt", "foot_skate_gen",
                               "penetration_gt", "penetration_gen"]
    assert list(body["k"]) == ["solo", "solo_seq", "corr_gt", "corr_gen"]
    assert set(body["g"]["solo"]) == {"fd", "div_sample"} and body["g"]["solo"]["fd"] > 0
    assert body["g"]["solo_seq"]["fd"] is None  # 28 evaluated frames < one 30-frame window
    assert set(body["g"]["penetration_gen"]) == {"avg_total_penetration", "avg_max_depth", "overall_max_depth",
                                                 "penetrating_frames", "total_frames", "penetration_ratio"}
    assert body["g"]["penetration_gen"]["total_frames"] == 3 * 3 * 28
    assert len(body["mpjpe_best_list_mm"]) == 3
    curve = body["mpjpe_best_list_mm"]
    assert curve[0] >= curve[1] >= curve[2] > 0
    meta = data["meta"]
    assert (meta["clips"], meta["samples_per_clip"], meta["gt_frames"], meta["seed"]) == (3, 3, 84, 0)
    assert meta["body_model"] == "default skeleton" and meta["mode"] == "fixed"
    assert data["baseline"]["g"]["solo"]["div_sample"] == 0.0 and data["baseline"]["g"]["solo"]["fd"] > 0
    assert data["baseline"]["mpjpe_mm"] > 0  # holding the last context frame
    lines = (noisy_dir / "eval_dict_c.csv").read_text().splitlines()
    assert len(lines) == 3 and [ln.split(",")[0] for ln in lines] == ["split", "gt", "gen"]
    assert len({len(ln.split(",")) for ln in lines}) == 1
    keys = lines[0].split(",")
    assert "g.solo.fd" in keys and "mpjpe_mm" in keys and "g.corr" in keys
    assert "g.penetration.total_frames" not in keys  # integers are skipped
    gen = dict(zip(keys, lines[2].split(",")))
    assert float(gen["mpjpe_mm"]) == body["mpjpe_mm"]
    summary = (noisy_dir / "eval_summary.md").read_text()
    assert summary == result.summary
    for word in ("| metric | unit | generated | GT baseline | baseline is |", "| mm |", "| mm/s |", "m^2",
                 "default skeleton", "seed: 0", "samples per clip: 3", "GT vs GT (1)", "alternating 1-second blocks",
                 "last context frame held (2)"):
        assert word in summary


def test_identical_samples_give_zero_error(dataset, tmp_path):
    _make(dataset, tmp_path, 0.0)
    body = evaluate_directory(tmp_path, write=False)["body"]
    assert body["mpjpe_mm"] == 0.0 and body["mpjve_mm_per_s"] == 0.0
    assert body["mpjpe_best_list_mm"] == [0.0, 0.0, 0.0]
    assert abs(body["g"]["solo"]["fd"]) < 1e-4 and abs(body["k"]["solo"]["fd"]) < 1e-3
    assert body["g"]["solo"]["div_sample"] == 0.0
    assert body["g"]["corr_gen"] == pytest.approx(body["g"]["corr_gt"], abs=1e-9)
    assert body["g"]["penetration_gen"]["penetration_ratio"] == body["g"]["penetration_gt"]["penetration_ratio"]


def test_mpjpe_grows_with_noise(dataset, tmp_path):
    values = []
    for noise in (0.02, 0.05, 0.12):
        out = _make(dataset, tmp_path / f"n{noise}", noise)
        values.append(evaluate_directory(out, write=False)["body"]["mpjpe_mm"])
    assert 0 < values[0] < values[1] < values[2]


def test_reference_vs_fixed_units_and_persons(dataset, tmp_path, noisy_dir, fixed_result):
    fixed = fixed_result[0]
    ref = evaluate_directory(noisy_dir, mode="reference")
    assert (noisy_dir / "eval_dict_c_reference.yaml").is_file()
    assert "mpjpe" in ref["body"] and "mpjpe_mm" not in ref["body"]
    assert fixed["body"]["mpjpe_mm"] == pytest.approx(1000 * ref["body"]["mpjpe"], rel=1e-12)
    assert fixed["body"]["g"]["solo"]["fd"] == pytest.approx(ref["body"]["g"]["solo"]["fd"], rel=1e-12)
    assert set(ref["body"]["g"]["foot_skate_gen"]) == {"foot_sliding_ratio", "avg_foot_sliding_vel"}
    assert ref["meta"]["length_unit"] == "m" and "| m |" in ref.summary

    # partner prediction: person 0 is GT in every sample, person 1 is generated
    pp = _make(dataset, tmp_path / "pp", 0.08, task="partner_prediction")
    fixed = evaluate_directory(pp, write=False)
    ref = evaluate_directory(pp, mode="reference", write=False)
    assert fixed["meta"]["evaluated_persons"].startswith("generated") and ref["meta"]["evaluated_persons"] == "all"
    # fixed averages person 1 only; the reference also averages in the zero error of person 0
    assert fixed["body"]["mpjpe_mm"] == pytest.approx(2000 * ref["body"]["mpjpe"], rel=1e-9)
    # the reference only evaluates the last person when sampling_cfg.task_mode (never written) says so
    (pp / "inf_cfg.yaml").write_text("sampling_cfg:\n  task_mode: partner_prediction\nsmpl_path: null\n")
    ref_last = evaluate_directory(pp, mode="reference", write=False)
    assert ref_last["meta"]["evaluated_persons"] == "last"
    assert fixed["body"]["mpjpe_mm"] == pytest.approx(1000 * ref_last["body"]["mpjpe"], rel=1e-9)
    # ... while fixed mode reads sampling_task and also accepts task_mode
    fixed2 = evaluate_directory(pp, write=False)
    assert fixed2["body"]["mpjpe_mm"] == pytest.approx(fixed["body"]["mpjpe_mm"], rel=1e-12)


def test_yaml_is_deterministic(noisy_dir, fixed_result):
    evaluate_directory(noisy_dir)
    assert (noisy_dir / "eval_dict_c.yaml").read_bytes() == fixed_result[1]
    assert b"seed: 0" in fixed_result[1]
    other = evaluate_directory(noisy_dir, seed=3, write=False)  # the seed only moves the GT-half baseline
    assert other["body"] == fixed_result[0]["body"] and other["meta"]["seed"] == 3


def test_options_suffixes_test_set_and_body_model(dataset, noisy_dir, tmp_path):
    sys.path.insert(0, str(Path(__file__).parent))
    from smplx_fixture import make_synthetic_smplx_npz

    out = _make(dataset, tmp_path / "run", 0.05)
    res = evaluate_directory(out, seq_len=50, sample_num=2)
    assert res.files["yaml"].name == "eval_dict_c_seq_50.yaml" and res["meta"]["samples_per_clip"] == 2
    assert len(res["body"]["mpjpe_best_list_mm"]) == 2 and res["meta"]["gt_frames"] == 3 * 18
    res = evaluate_directory(out, whole_seq=True, write=False, baselines=False)
    assert res.files["yaml"].name == "eval_dict_c_whole_seq.yaml"
    assert res["baseline"]["g"]["solo"]["fd"] is None and res["baseline"]["mpjpe_mm"] is None
    test_set = tmp_path / "test_set.yaml"
    test_set.write_text("test: [clip2, clip0]\n")
    res = evaluate_directory(out, test_set=test_set, write=False)
    assert res["meta"]["clips"] == 2 and res.files["csv"].name == "eval_dict_c_test_set.csv"

    smplx = make_synthetic_smplx_npz(tmp_path / "SMPLX_NEUTRAL.npz")
    (out / "inf_cfg.yaml").write_text(f"sampling_task: joint\nsmpl_path: {smplx}\n")
    res = evaluate_directory(out, write=False)
    assert res["meta"]["body_model"] == str(smplx) and str(smplx) in res.summary
    (out / "inf_cfg.yaml").write_text(f"sampling_task: joint\nsmpl_path: {tmp_path / 'missing.npz'}\n")
    with pytest.raises(BodyModelError, match="missing.npz"):
        evaluate_directory(out, write=False)
    res = evaluate_directory(out, write=False, body_model=default_body_model())  # an explicit model wins
    assert res["meta"]["body_model"] == "default skeleton"
    with pytest.raises(ConfigError, match="only 3 samples"):
        evaluate_directory(out, sample_num=4, body_model=default_body_model())


def test_mixed_person_counts(tmp_path):
    write_output_npz(tmp_path / "duo.npz", **_arrays(S=2, T=12, P=2))
    write_output_npz(tmp_path / "solo.npz", **_arrays(S=2, T=14, P=1))
    res = evaluate_directory(tmp_path, allow_missing_config=True, write=False)
    assert res["meta"]["persons_per_clip"] == [1, 2] and res["meta"]["inf_cfg"] is None
    assert res["body"]["g"]["penetration_gen"]["total_frames"] == 2 * (8 + 6)  # rows of both clips
    assert -1.0 <= res["body"]["g"]["corr_gen"] <= 1.0  # from the 2-person clip only


def _mixed_dataset(path: Path) -> Path:
    with HDF5Writer(path) as w:
        w.add("test", "clip0", _clip(0))
        w.add("test", "clip1", _clip(1, persons=1))
        w.add("test", "clip2", _clip(2))
    return path


def test_reference_mode_evaluates_each_person_count_as_a_group(tmp_path, monkeypatch, capsys):
    """The README's commands on an example with 1- and 2-person clips: reference mode reports one group per
    person count, each equal to evaluating only those clips; fixed mode pools them as before."""
    out = _make(_mixed_dataset(tmp_path / "mixed_dataset.hdf5"), tmp_path / "run", 0.05, drift=0.05)
    monkeypatch.chdir(tmp_path)
    assert _run_entry([f"run_dir={out}", "mode=reference"], monkeypatch, summary=True) == 0
    printed = capsys.readouterr().out
    assert "Evaluation summary" in printed and "eval_dict_c_reference.yaml" in printed
    data = yaml.safe_load((out / "eval_dict_c_reference.yaml").read_text())
    assert list(data) == ["groups", "meta"] and list(data["groups"]) == ["persons_1", "persons_2"]
    assert data["meta"]["clips"] == 3 and data["meta"]["persons_per_clip"] == [1, 2]
    assert data["groups"]["persons_2"]["meta"]["clips"] == 2 and data["groups"]["persons_1"]["meta"]["clips"] == 1
    duo = data["groups"]["persons_2"]
    assert list(duo) == ["body", "baseline", "meta"] and "corr_gen" in duo["body"]["g"]
    assert "corr_gen" not in data["groups"]["persons_1"]["body"]["g"]  # one person: no correlation
    # each group is exactly the evaluation of its clips alone
    (tmp_path / "duos.yaml").write_text("test: [clip0, clip2]\n")
    alone = evaluate_directory(out, mode="reference", test_set=tmp_path / "duos.yaml", write=False)
    assert yaml.safe_dump(alone["body"]) == yaml.safe_dump(duo["body"])
    assert yaml.safe_dump(alone["baseline"]) == yaml.safe_dump(duo["baseline"])
    # the CSV keeps the reference's columns with a gt and a gen row per group
    lines = (out / "eval_dict_c_reference.csv").read_text().splitlines()
    assert [ln.split(",")[0] for ln in lines] == ["split", "gt_persons_1", "gen_persons_1", "gt_persons_2",
                                                  "gen_persons_2"]
    assert len({len(ln.split(",")) for ln in lines}) == 1
    keys = lines[0].split(",")
    gen2 = dict(zip(keys, lines[4].split(",")))
    assert float(gen2["mpjpe"]) == duo["body"]["mpjpe"] and gen2["g.corr"] != ""
    assert dict(zip(keys, lines[2].split(",")))["g.corr"] == ""
    summary = (out / "eval_summary_reference.md").read_text()
    assert "| generated (1 person) | GT baseline (1 person) | generated (2 persons) | GT baseline (2 persons) |" \
        in summary and "each person count is evaluated as its own group" in summary
    # fixed mode still pools every clip into one result
    fixed = evaluate_directory(out, write=False)
    assert "groups" not in fixed and fixed["meta"]["persons_per_clip"] == [1, 2]


def test_reference_inf_cfg_with_omegaconf_path_tags(noisy_dir, tmp_path, monkeypatch, capsys):
    """The reference writes inf_cfg.yaml with OmegaConf, whose paths carry !!python/object/apply:pathlib tags: such
    a folder evaluates as it is, in both modes; any other Python tag is refused and nothing runs."""
    from omegaconf import OmegaConf

    sys.path.insert(0, str(Path(__file__).parent))
    from smplx_fixture import make_synthetic_smplx_npz

    smplx = make_synthetic_smplx_npz(tmp_path / "body_model" / "SMPLX_NEUTRAL.npz")
    run = _copy_dir(noisy_dir, tmp_path / "reference_run")
    cfg = OmegaConf.create({
        "output_dir": Path("outputs/dfot"), "checkpoint_dir": Path("./dfot/tiny/v0"),
        "sampling_cfg": {"context_seq_len": 32, "sampling_task": "joint", "sampling_steps": 50},
        "dataset_path": Path("./data/dd100_dataset.hdf5"), "smpl_path": smplx, "random_seed": 1111,
    })
    OmegaConf.save(cfg, run / "inf_cfg.yaml")  # as the reference's inference does
    text = (run / "inf_cfg.yaml").read_text()
    assert "!!python/object/apply:pathlib.PosixPath" in text
    with pytest.raises(yaml.YAMLError):
        yaml.safe_load(text)
    cfg_read = read_inference_config(run)
    assert cfg_read.smpl_path == str(smplx) and cfg_read.sampling_task == "joint"
    assert load_yaml(text)["dataset_path"] == "data/dd100_dataset.hdf5"
    monkeypatch.chdir(tmp_path)
    for mode, name in (("fixed", "eval_dict_c.yaml"), ("reference", "eval_dict_c_reference.yaml")):
        assert _run_entry([f"run_dir={run}", f"mode={mode}"], monkeypatch) == 0, capsys.readouterr().err
        assert yaml.safe_load((run / name).read_text())["meta"]["body_model"] == str(smplx)
    # any other Python tag is an error, and nothing is executed
    marker = tmp_path / "executed"
    bad = _copy_dir(noisy_dir, tmp_path / "bad_tag")
    (bad / "inf_cfg.yaml").write_text(f"smpl_path: !!python/object/apply:os.system ['touch {marker}']\n")
    assert _run_entry([f"run_dir={bad}"], monkeypatch) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "inf_cfg.yaml" in err and "os.system" in err
    assert not marker.exists() and _no_eval_files(bad)


def test_unknown_task_names_are_refused(dataset, noisy_dir, tmp_path, monkeypatch, capsys):
    from magnet.evaluation.make_example import main

    assert main(["--data", str(dataset), "--out", str(tmp_path / "typo"), "--task", "partner_predictoin"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "'partner_predictoin'" in err
    assert "partner_prediction" in err and "motion_control_live" in err  # the known tasks are listed
    assert not (tmp_path / "typo").exists()
    with pytest.raises(ConfigError, match="known tasks"):
        make_perturbed_outputs(dataset, "test", tmp_path / "typo2", task="jiont")
    assert not (tmp_path / "typo2").exists()
    monkeypatch.chdir(tmp_path)
    for text in ("sampling_task: partner_predictoin\nsmpl_path: null\n",
                 "sampling_cfg:\n  sampling_task: jiont\nsmpl_path: null\n",
                 "sampling_cfg:\n  task_mode: partner_predictoin\nsmpl_path: null\n"):
        run = _copy_dir(noisy_dir, tmp_path / f"cfg{len(list(tmp_path.iterdir()))}")
        (run / "inf_cfg.yaml").write_text(text)
        for mode in ("fixed", "reference"):
            with pytest.raises(ConfigError, match="unknown sampling task") as exc:
                evaluate_directory(run, mode=mode, write=False)
            assert "inf_cfg.yaml" in str(exc.value) and "pp2joint" in str(exc.value)
        assert _run_entry([f"run_dir={run}"], monkeypatch) == 2
        assert "unknown sampling task" in capsys.readouterr().err
        assert _no_eval_files(run)
    assert read_inference_config(noisy_dir).sampling_task in SAMPLING_TASKS


def test_windowed_fd_pooling_matches_metric():
    gen = [torch.randn(3, 45, 2, 2, dtype=torch.float64), torch.randn(3, 20, 2, 2, dtype=torch.float64),
           torch.randn(3, 61, 2, 2, dtype=torch.float64)]
    gt = [g[:1] + 0.3 for g in gen]
    got = _fd(_fd_sums(gt, True), _fd_sums(gen, True), True)
    assert got == pytest.approx(windowed_frechet_distance(gt, gen), rel=1e-10)
    assert _fd_sums([gen[1]], True) is None  # 20 frames: no 30-frame window


def test_gt_vs_gt_baseline_alternates_one_second_blocks():
    x = torch.arange(90, dtype=torch.float64).reshape(1, 90, 1, 1).expand(1, 90, 1, 2)  # frame index as feature
    h0, h1 = _block_half_sums([x], False, 30, [0])
    assert (float(h0[0]), float(h1[0])) == (60, 30)  # blocks [0, 30) and [60, 90) vs [30, 60)
    assert float(h0[1][0]) == sum(range(30)) + sum(range(60, 90)) and float(h1[1][0]) == sum(range(30, 60))
    h0, h1 = _block_half_sums([x], False, 30, [1])  # the other phase swaps the halves
    assert (float(h0[0]), float(h1[0])) == (30, 60)
    # windows (start 0, 10, ..., 60) go to the half of the block holding their first frame: 0-20, 60 | 30-50
    h0, h1 = _block_half_sums([x], True, 30, [0])
    assert (float(h0[0]), float(h1[0])) == (4, 3) and h0[1].shape == (60,)
    assert float(h1[1][0]) == 30 + 40 + 50  # first value of each window = its start frame
    # a clip that repeats every second: both halves hold the same frames, the baseline FD is ~0
    period = torch.randn(1, 30, 2, 3, dtype=torch.float64)
    rep = period.repeat(1, 4, 1, 1)
    halves = _block_half_sums([rep], False, 30, [0])
    assert abs(_fd(halves[0], halves[1], False)) < 1e-5
    # one clip is enough (the old clip-halves baseline needed two), a 1-block clip gives no baseline
    assert _fd(*_block_half_sums([x[:, :20]], False, 30, [0]), False) is None


def test_csv_lines_follow_reference_rules():
    body = {"g": {"solo": {"fd": 1.5, "div_sample": 0.25}, "corr_gt": 0.1, "corr_gen": 0.2,
                  "foot_skate_gt": {"foot_sliding_ratio": 0.3, "sliding_frames": 4},
                  "foot_skate_gen": {"foot_sliding_ratio": 0.4}},
            "mpjpe": 0.05, "mpjpe_best_list": [0.06, 0.05], "extra": None}
    assert to_csv_lines(body) == [
        "split,g.solo.fd,g.solo.div_sample,g.corr,g.foot_skate.foot_sliding_ratio,mpjpe",
        "gt,,,0.1,0.3,",
        "gen,1.5,0.25,0.2,0.4,0.05",
    ]


# ------------------------------------------------------------------------------------------ entry point
def _run_entry(args: list[str], monkeypatch, summary: bool = False) -> int:
    """Run evaluate.py as ``__main__`` in this process (no interpreter start-up); returns the exit code."""
    monkeypatch.setattr(sys, "argv", ["evaluate.py", *args, f"print_summary={str(summary).lower()}"])
    try:
        runpy.run_path(str(REPO / "evaluate.py"), run_name="__main__")
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def _copy_dir(src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True)
    for p in src.iterdir():
        if p.suffix == ".npz" or p.name == "inf_cfg.yaml":
            (dst / p.name).write_bytes(p.read_bytes())
    return dst


def _no_eval_files(d: Path) -> bool:
    return not any(p.name.startswith("eval_") for p in d.iterdir())


def test_entry_point_bad_inputs(noisy_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    cases = {}
    cases["missing"] = (tmp_path / "nope", "run directory not found")
    (tmp_path / "empty").mkdir()
    empty_hint = (f"no *.npz outputs in {tmp_path / 'empty'}; sample into it first with python sample.py "
                  f"ckpt=<training run dir> out_dir={tmp_path / 'empty'}")
    cases["empty"] = (tmp_path / "empty", empty_hint)
    d = _copy_dir(noisy_dir, tmp_path / "keys")
    with np.load(d / "clip1.npz") as z:
        arrays = {k: z[k] for k in z.files if k != "body_joint_rotations"}
    _write_raw(d / "clip1.npz", **arrays)
    cases["keys"] = (d, "'body_joint_rotations' is missing")
    d = _copy_dir(noisy_dir, tmp_path / "shape")
    with np.load(d / "clip0.npz") as z:
        arrays = {k: z[k] for k in z.files}
    arrays["betas"] = arrays["betas"][:, :, :1]
    _write_raw(d / "clip0.npz", **arrays)
    cases["shape"] = (d, "agree")
    d = _copy_dir(noisy_dir, tmp_path / "nocfg")
    (d / "inf_cfg.yaml").unlink()
    cases["nocfg"] = (d, "allow_missing_config=true")
    for name, (path, words) in cases.items():
        code = _run_entry([f"run_dir={path}"], monkeypatch)
        err = capsys.readouterr().err.strip()
        assert code == 2, name
        assert err.startswith("error: ") and "\n" not in err and words in err, (name, err)
        if path.is_dir():
            assert _no_eval_files(path), name
    assert _run_entry([], monkeypatch) == 2 and "run_dir is required" in capsys.readouterr().err
    # values of the wrong type are refused by name, not cast (whole_seq=abc would read as true)
    for arg, words in (("whole_seq=abc", "whole_seq must be true or false"), ("seed=abc", "seed must be an integer"),
                       ("fps=0", "fps must be a number > 0"), ("seq_len=1.5", "seq_len must be an integer")):
        assert _run_entry([f"run_dir={noisy_dir}", arg], monkeypatch) == 2, arg
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "\n" not in err and words in err, (arg, err)
    assert _run_entry([f"run_dir={noisy_dir}", "body_model=/no/SMPLX_NEUTRAL.npz"], monkeypatch) == 2
    assert "/no/SMPLX_NEUTRAL.npz" in capsys.readouterr().err
    # the same directory evaluates with allow_missing_config=true; the summary table is printed
    cfg_dir = cases["nocfg"][0]
    assert _run_entry([f"run_dir={cfg_dir}", "allow_missing_config=true"], monkeypatch, summary=True) == 0
    out = capsys.readouterr().out
    assert "Evaluation summary" in out and "GT baseline" in out and "MPJPE" in out
    assert all((cfg_dir / f).is_file() for f in EVAL_FILES)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "keys", "nocfg", "shape"]  # Hydra wrote nothing


def test_evaluate_py_subprocess(noisy_dir, tmp_path):
    nan_dir = _copy_dir(noisy_dir, tmp_path / "nan")
    with np.load(nan_dir / "clip2.npz") as z:
        arrays = {k: z[k] for k in z.files}
    arrays["body_joint_rotations"][2, 40, 1, 3, 0] = np.nan
    _write_raw(nan_dir / "clip2.npz", **arrays)
    cmd = [sys.executable, str(REPO / "evaluate.py"), f"run_dir={nan_dir}"]
    proc = subprocess.run(cmd, check=False, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "NaN" in err[0] and "clip2.npz" in err[0]
    assert _no_eval_files(nan_dir)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nan"]  # nothing written in the cwd


def test_fps_comes_from_inf_cfg_unless_given(noisy_dir, fixed_result, tmp_path):
    """fps=None reads the run's inf_cfg.yaml (sample.py writes the dataset's rate): velocities scale with it."""
    out = tmp_path / "run60"
    shutil.copytree(noisy_dir, out)
    cfg = yaml.safe_load((out / "inf_cfg.yaml").read_text())
    assert cfg["fps"] == 30
    cfg["fps"] = 60
    (out / "inf_cfg.yaml").write_text(yaml.safe_dump(cfg))
    base = fixed_result[0]["body"]["k"]["solo"]["fd"]
    res = evaluate_directory(out, write=False, baselines=False)
    assert res["meta"]["fps"] == 60
    assert res["body"]["k"]["solo"]["fd"] == pytest.approx(4 * base, rel=1e-3)  # velocities x2 -> FD x4 (sqrtm tolerance)
    forced = evaluate_directory(out, write=False, baselines=False, fps=30)
    assert forced["meta"]["fps"] == 30 and forced["body"]["k"]["solo"]["fd"] == pytest.approx(base, rel=1e-9)
