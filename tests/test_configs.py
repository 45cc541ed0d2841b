"""The Hydra configs compose for every option, loggers instantiate offline, the SLURM launcher composes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

REPO = Path(__file__).resolve().parent.parent
CONF = REPO / "conf"

DATASETS = sorted(p.stem for p in (CONF / "dataset").glob("*.yaml"))
PERSONS = {"synthetic": 2, "dd100": 2, "duobox": 2, "embody3d_duo": 2, "embody3d_trio": 3, "embody3d_quad": 4,
           "embody3d_multi": 4, "interx": 2}


def _compose(overrides):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


def test_every_dataset_is_listed_with_its_person_count():
    assert set(DATASETS) == set(PERSONS)
    for name in DATASETS:
        cfg = _compose([f"dataset={name}", "paths.data_dir=/data"])
        assert cfg.dataset.person_num == PERSONS[name]
        for entry in cfg.dataset.datasets:
            assert entry.dir.startswith("/data")
        assert cfg.data.person_num == 1  # stage 1 always sees one person per window


def test_vqvae_stage_has_the_reference_recipe():
    cfg = _compose(["stage=vqvae", "dataset=dd100"])
    s = cfg.stage
    assert (s.batch_size, s.lr, s.weight_decay, s.total_steps, s.warmup_steps, s.grad_clip, s.sequence_len) == (
        256, 2e-4, 1e-4, 100_000, 15_000, 0.5, 64)
    assert cfg.seed == 1111 and s.min_lr_ratio == 0.05
    assert dict(s.loss_weights) == {
        "geo_body_joint_rotations": 1.0, "geo_canonical_root_rotations": 0.5, "canonical_root_translations": 0.5,
        "body_joint_rotations": 0.0, "canonical_root_rotations": 0.0, "commit_loss": 0.3}
    assert cfg.dataset.datasets[0].name == "dd100"
    assert cfg.data.batch_size == 256 and cfg.data.batch_scope == "global" and cfg.trainer.max_steps == 100_000
    assert cfg.trainer.gradient_clip_val == 0.5 and cfg.stage._target_.endswith("VQVAEModule")


def test_loggers_instantiate_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = _compose(["logger=many"])
    assert set(cfg.logger) == {"csv", "tensorboard", "wandb"}
    assert cfg.logger.wandb.offline is True
    for name, lcfg in cfg.logger.items():
        lcfg.save_dir = str(tmp_path / name)
        logger = instantiate(lcfg)
        logger.log_metrics({"x": 1.0}, step=0)
        logger.finalize("success")
    assert (tmp_path / "csv").exists() and (tmp_path / "tensorboard").exists()
    assert any((tmp_path / "wandb").rglob("*offline*"))


def test_slurm_launcher_composes():
    res = subprocess.run([sys.executable, "train.py", "hydra/launcher=slurm",
                          "--cfg", "hydra"], cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "SlurmLauncher" in res.stdout and "timeout_min: 4320" in res.stdout


@pytest.mark.parametrize("experiment", ["demo_vqvae", "demo_dfot"])
def test_demo_experiments_compose(experiment):
    cfg = _compose([f"experiment={experiment}"])
    assert cfg.model.name == "tiny" and cfg.trainer.accelerator == "cpu"


def test_documented_make_targets_exist():
    """Every `make <target>` that the README, the internals or pyproject.toml name is a Makefile target."""
    import re

    targets = set(re.findall(r"^([a-z][\w-]*):", (REPO / "Makefile").read_text(), flags=re.MULTILINE))
    for doc in ("README.md", "docs/internals.md", "pyproject.toml"):
        named = set(re.findall(r"(?:^|`)make ([a-z][\w-]*)", (REPO / doc).read_text(), flags=re.MULTILINE))
        assert named <= targets, (doc, sorted(named - targets))


def test_paths_config_describes_the_run_directories():
    """conf/paths/default.yaml states where runs write; it must be what conf/train.yaml configures."""
    import yaml

    hydra_cfg = yaml.safe_load((CONF / "train.yaml").read_text())["hydra"]  # the raw interpolation strings
    names = {"${paths.output_root}": "<output_root>", "${stage.name}": "<stage>", "${dataset.name}": "<dataset>",
             "${hydra.job.num}": "<job number>"}

    def described(pattern: str) -> str:
        for key, name in names.items():
            pattern = pattern.replace(key, name)
        for stamp in ("${now:%Y-%m-%d_%H-%M-%S}", "${run_stamp:%Y-%m-%d_%H-%M-%S}"):
            pattern = pattern.replace(stamp, "<timestamp>")
        return pattern

    text = (CONF / "paths" / "default.yaml").read_text()
    assert described(hydra_cfg["run"]["dir"]) + "/" in text
    assert f"{described(hydra_cfg['sweep']['dir'])}/{described(str(hydra_cfg['sweep']['subdir']))}/" in text


def test_gitignore_ignores_no_tracked_file():
    res = subprocess.run(["git", "ls-files", "--cached", "--ignored", "--exclude-standard"], cwd=REPO,
                         capture_output=True, text=True, check=False)
    if res.returncode != 0:
        pytest.skip("not a git checkout")
    assert res.stdout.split() == []


def test_reference_switches_are_in_the_differences_table():
    """Every stage switch that restores the reference's behaviour (``reference_*``) is named in the README's
    "Differences from the reference code" table, with the command-line override that sets it."""
    import re

    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## Differences from the reference code"):]
    section = section[:section.index("\n## ", 1)]
    switches = set()
    for path in (CONF / "stage").glob("*.yaml"):
        switches |= set(re.findall(r"^(reference_\w+):", path.read_text(), flags=re.MULTILINE))
    assert switches == {"reference_averaging", "reference_partner_targets"}
    for key in switches:
        assert f"`stage.{key}=true`" in section, key
    assert "per GPU" in section and "void persons' slots" in section
