"""The Hydra configs compose for every option, loggers instantiate offline, the SLURM launcher composes."""

from __future__ import annotations

import re
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


# ------------------------------------------------------------------------------------------ the config is the record


def _stage_params(cfg):
    """The stage node's keys that reach the LightningModule, and the module's __init__ parameters."""
    import inspect

    from hydra.utils import get_class

    params = inspect.signature(get_class(cfg.stage._target_)).parameters
    return {k for k in cfg.stage if k in params}, params


@pytest.mark.parametrize("name", ["paper", "tiny"])
def test_model_configs_spell_out_every_field(name):
    """conf/model/<name>.yaml holds every VQVAEConfig / DFoTConfig field, with the Python presets' values."""
    import dataclasses

    from magnet.models.dfot import DFOT_PRESETS, DFoTConfig
    from magnet.models.vqvae import VQVAE_PRESETS, VQVAEConfig

    cfg = _compose([f"model={name}"])
    for key, cls, presets in (("vqvae", VQVAEConfig, VQVAE_PRESETS), ("dfot", DFoTConfig, DFOT_PRESETS)):
        node = OmegaConf.to_container(cfg.model[key])
        assert list(node) == [f.name for f in dataclasses.fields(cls)], key
        assert cls.from_dict(node) == presets[name], key
    # the stage's module gets the whole dict: the run's .hydra/config.yaml shows every dimension
    stage = OmegaConf.to_container(cfg.stage, resolve=True)
    assert stage["model"] == OmegaConf.to_container(cfg.model.vqvae)


def test_model_override_without_plus_and_misspelt_key():
    from hydra.errors import ConfigCompositionException

    from magnet.cli import instantiate_stage

    cfg = _compose(["model=tiny", "model.vqvae.codebook_size=512", "model.vqvae.r_min=1.0", "stage.lr=1e-3",
                    "body_model=null"])
    module = instantiate_stage(cfg.stage)
    assert module.model.config.codebook_size == 512 and module.model.config.r_min == 1.0
    assert tuple(module.model.quantizer.codebook.shape) == (512, 64)
    assert module.hparams.lr == 1e-3 and module.hparams.model["codebook_size"] == 512
    with pytest.raises(ConfigCompositionException) as err:  # Hydra's own message
        _compose(["model.vqvae.code_nb=512"])
    assert "Could not override 'model.vqvae.code_nb'" in str(err.value)
    assert "Key 'code_nb' is not in struct" in str(err.value.__cause__)


@pytest.mark.parametrize("stage", ["vqvae", "dfot"])
def test_every_stage_hyper_parameter_is_written_once(stage):
    """No stage key mirrors another stage key; every module argument that is a hyper-parameter is a stage key (so
    the record is complete) and every stage key is a module argument or a run setting."""
    from magnet.cli import RUN_KEYS

    text = (CONF / "stage" / f"{stage}.yaml").read_text()
    assert "${stage." not in text
    cfg = _compose([f"stage={stage}"])
    passed, params = _stage_params(cfg)
    not_hyper = {"self", "stats", "vqvae_config", "vqvae"}  # data, restore-only and the old name of vqvae_ckpt
    assert set(params) - not_hyper <= passed, set(params) - not_hyper - passed
    assert set(cfg.stage) - {"_target_"} <= set(params) | set(RUN_KEYS)
    # the datamodule and the Trainer read the run settings from the stage (one key each)
    assert cfg.data.batch_size == cfg.stage.batch_size and cfg.trainer.max_steps == cfg.stage.total_steps
    assert cfg.trainer.gradient_clip_val == cfg.stage.grad_clip and cfg.data.person_num == cfg.stage.num_persons


def test_unknown_stage_key_is_one_line():
    from magnet.cli import instantiate_stage
    from magnet.errors import ConfigError

    cfg = _compose(["model=tiny", "+stage.learning_rate=1e-3", "body_model=null"])
    with pytest.raises(ConfigError, match=r"stage key\(s\) \['learning_rate'\] are neither arguments of VQVAEModule"):
        instantiate_stage(cfg.stage)


def test_old_dfot_hyper_parameters_still_build():
    """Checkpoints written before the stage config was flattened store vqvae= (not vqvae_ckpt=) in their
    hyper-parameters; DFoTModule still takes it."""
    import inspect

    from magnet.training.dfot_module import DFoTModule

    assert "vqvae" in inspect.signature(DFoTModule).parameters
    assert next(iter(inspect.signature(DFoTModule).parameters)) == "vqvae_ckpt"


def test_dataset_fps_reaches_the_validation_metrics():
    assert _compose(["dataset=interx"]).callbacks.validation_metrics.fps == 30
    assert _compose(["dataset.fps=25"]).callbacks.validation_metrics.fps == 25


def _resolved(config_name, overrides):
    """The composed config with every interpolation resolved (Hydra's runtime values set as in a real run)."""
    from hydra.core.hydra_config import HydraConfig

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=overrides, return_hydra_config=True)
    cfg.hydra.runtime.output_dir = "/tmp/run"
    HydraConfig.instance().set_config(cfg)
    return OmegaConf.to_container(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]), resolve=True)


@pytest.mark.parametrize("stage", ["vqvae", "dfot"])
@pytest.mark.parametrize("dataset", DATASETS)
def test_every_dataset_and_stage_composes(dataset, stage):
    cfg = _resolved("train", [f"dataset={dataset}", f"stage={stage}", "paths.data_dir=/data"])
    persons = 1 if stage == "vqvae" else PERSONS[dataset]
    assert cfg["data"]["person_num"] == persons and cfg["stage"]["num_persons"] == persons
    assert cfg["callbacks"]["validation_metrics"]["num_persons"] == persons
    assert cfg["callbacks"]["model_checkpoint"]["dirpath"] == "/tmp/run/checkpoints"
    assert all(d["dir"].startswith("/data") for d in cfg["data"]["datasets"])


TASKS = sorted(p.stem for p in (CONF / "task").glob("*.yaml"))
SCHEDULES = sorted(p.stem for p in (CONF / "schedule").glob("*.yaml"))


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("task", TASKS)
def test_every_task_and_schedule_composes(task, schedule):
    """Every task x schedule composes into a valid SamplingConfig (sample.py's own translation)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("sample_entry", REPO / "sample.py")
    sample = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sample)
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="sample", overrides=[f"task={task}", f"schedule={schedule}"])
    config = sample.sampling_config(cfg)
    assert config.task == cfg.task.task
    assert config.sampling_schedule == (cfg.task.schedule if schedule == "task_default" else schedule)


PAPER_EXPERIMENTS = [f"{d}_{s}" for d in DATASETS if d != "synthetic" for s in ("vqvae", "dfot")]


def test_paper_experiments_exist_for_every_dataset():
    have = {p.stem for p in (CONF / "experiment").glob("*.yaml")}
    assert have == set(PAPER_EXPERIMENTS) | {"demo_vqvae", "demo_dfot"}


@pytest.mark.parametrize("experiment", PAPER_EXPERIMENTS)
def test_paper_experiments_are_one_override_away(experiment):
    dataset, stage = experiment.rsplit("_", 1)
    cfg = _compose([f"experiment={experiment}"])
    assert (cfg.dataset.name, cfg.stage.name, cfg.model.name, cfg.trainer.accelerator) == (
        dataset, stage, "paper", "gpu")
    assert cfg.stage.batch_size == 256 and cfg.stage.lr == 2e-4  # the reference recipe (spec 2.5 / 3.5)
    assert cfg.stage.num_persons == (1 if stage == "vqvae" else PERSONS[dataset])
    # a group given on the command line still wins over the experiment's choice
    assert _compose([f"experiment={experiment}", "trainer=ddp"]).trainer.strategy == "ddp"


# ------------------------------------------------------------------------------------------ sweeps, SLURM


def test_slurm_launcher_has_the_cluster_settings():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        full = compose(config_name="train", return_hydra_config=True,
                       overrides=["hydra/launcher=slurm", "trainer=ddp", "trainer.num_nodes=2",
                                  "hydra.launcher.gpus_per_node=4", "hydra.launcher.partition=gpu",
                                  "hydra.launcher.account=proj"])
    launcher = OmegaConf.to_container(full.hydra.launcher, resolve=True)
    assert launcher["_target_"].endswith("SlurmLauncher")
    assert (launcher["nodes"], launcher["gpus_per_node"], launcher["tasks_per_node"]) == (2, 4, 4)
    assert (launcher["partition"], launcher["account"], launcher["cpus_per_task"], launcher["mem_gb"]) == (
        "gpu", "proj", 8, 64)
    assert launcher["timeout_min"] == 4320 and launcher["array_parallelism"] == 16
    assert launcher["additional_parameters"] == {"signal": "USR1@120", "requeue": True}


def test_optuna_sweeper_example_composes():
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        full = compose(config_name="train", return_hydra_config=True, overrides=["hydra/sweeper=optuna_search"])
    sweeper = full.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper") and sweeper.sampler._target_.endswith("TPESampler")
    assert sweeper.direction == "minimize" and sweeper.sampler.seed == 1111
    assert set(sweeper.params) == {"stage.lr", "stage.warmup_steps", "stage.weight_decay"}


@pytest.mark.parametrize("arg", [
    "model=choice(tiny,paper)", "model=tiny,paper", "dataset=glob(*)", "dataset=glob(embody3d_*,exclude=*multi)",
    "model=shuffle(tiny,paper)", "model=sort(paper,tiny)", "+model=tiny", "~model", "stage.lr=interval(1e-4,1e-3)",
    "seed=range(1,3)", "hydra/launcher=slurm", "model='tiny'", "model=tag(small,choice(tiny))", "stage=null",
])
def test_check_choices_accepts_every_sweep_syntax(arg):
    from magnet.cli import check_choices

    check_choices([arg], ("stage", "dataset", "model"))  # returns, no exit


@pytest.mark.parametrize("arg, needle", [
    ("model=papr", "unknown model 'papr'"),
    ("model=choice(tiny,papr)", "unknown model 'papr'"),
    ("model=tiny,papr", "unknown model 'papr'"),
    ("dataset=glob(nope*)", "dataset=glob(nope*) matches no dataset"),
    ("stage=range(1,3)", "unknown stage '1'"),
])
def test_check_choices_typo_is_one_line(arg, needle, capsys):
    from magnet.cli import check_choices

    with pytest.raises(SystemExit) as exit_:
        check_choices([arg], ("stage", "dataset", "model"))
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and needle in err[0]
    assert "choose from:" in err[0]


def test_run_stamp_names_slurm_runs_by_their_job(monkeypatch):
    from magnet.cli import run_stamp, sweep_only

    for var in ("SLURM_NTASKS", "SLURM_JOB_ID", "SLURM_JOB_NAME", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID"):
        monkeypatch.delenv(var, raising=False)
    assert len(run_stamp("%Y-%m-%d_%H-%M-%S")) == 19
    monkeypatch.setenv("SLURM_NTASKS", "4")
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    monkeypatch.setenv("SLURM_JOB_NAME", "train")
    assert run_stamp() == "slurm-77"
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "70")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    assert run_stamp() == "slurm-70_3"
    monkeypatch.setenv("SLURM_JOB_NAME", "bash")  # an interactive allocation is no batch job
    assert run_stamp("%Y") != "slurm-70_3"
    assert sweep_only("MULTIRUN", ".hydra") == ".hydra" and sweep_only("RunMode.RUN", ".hydra") is None


def test_make_help_lists_every_target():
    import re

    makefile = (REPO / "Makefile").read_text()
    phony = set(makefile.split(".PHONY:", 1)[1].split("\n", 1)[0].split())
    wanted = {"install", "test", "lint", "demo", "bench", "train-vqvae", "train-dfot", "sample", "evaluate", "render",
              "view", "sweep", "clean", "help"}
    assert wanted <= phony
    res = subprocess.run(["make", "-s", "help"], cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode == 0, res.stderr
    listed = set(re.findall(r"^  ([a-z][\w-]*) ", res.stdout, flags=re.MULTILINE))
    assert listed == phony


@pytest.mark.parametrize("target, variables, expected", [
    ("train-vqvae", ["DATASET=dd100", "TRAINER=gpu"], "train.py stage=vqvae paths.data_dir=data dataset=dd100"),
    ("train-dfot", ["VQVAE_CKPT=v.safetensors", "MODEL=tiny"], "stage.vqvae_ckpt=v.safetensors model=tiny"),
    ("sample", ["CKPT=run", "TASK=joint", "SCHEDULE=autoregressive", "SAMPLING=fast"],
     "ckpt=run task=joint schedule=autoregressive sampling=fast"),
    ("evaluate", ["RUN=out", "ARGS=mode=reference"], "evaluate.py run_dir=out mode=reference"),
    ("render", ["RUN=out"], "-m magnet.visualize.render out"),
    ("view", ["RUN=out"], "-m magnet.visualize.view out"),
    ("sweep", ["LAUNCHER=submitit_local"], ("train.py -m paths.data_dir=data experiment=demo_vqvae "
                                           "'stage.lr=choice(5e-4,1e-3)' hydra/launcher=submitit_local")),
])
def test_make_targets_are_thin_wrappers(target, variables, expected):
    res = subprocess.run(["make", "-n", target, *variables], cwd=REPO, capture_output=True, text=True, timeout=60,
                         check=False)
    assert res.returncode == 0, res.stderr
    assert expected in " ".join(res.stdout.replace("\\\n", " ").split()), res.stdout


# ------------------------------------------------------------------------------------------ bad values: one line


@pytest.mark.parametrize("override, needle", [
    ("stage.lr=abc", "lr must be a number > 0, got 'abc'"),
    ("stage.lr=0", "lr must be a number > 0, got 0"),
    ("stage.lr=true", "lr must be a number > 0, got True"),
    ("stage.total_steps=0", "total_steps must be an integer >= 1, got 0"),
    ("stage.total_steps=1.5", "total_steps must be an integer >= 1, got 1.5"),
    ("stage.warmup_steps=-1", "warmup_steps must be an integer >= 0, got -1"),
    ("stage.weight_decay=-1e-4", "weight_decay must be a number >= 0"),
    ("stage.min_lr_ratio=2", "min_lr_ratio must be a number >= 0 and <= 1, got 2"),
    ("stage.adam_betas=[0.9]", "adam_betas must be two numbers in [0, 1), got [0.9]"),
    ("stage.adam_betas=[0.9,1.0]", "adam_betas[1] must be a number >= 0 and < 1, got 1.0"),
])
@pytest.mark.parametrize("stage", ["vqvae", "dfot"])
def test_bad_stage_values_are_one_line(stage, override, needle):
    from magnet.cli import instantiate_stage
    from magnet.errors import ConfigError

    cfg = _compose([f"stage={stage}", "model=tiny", "body_model=null", override])
    with pytest.raises(ConfigError) as err:
        instantiate_stage(cfg.stage)
    assert needle in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("override, needle", [
    ("stage.grad_clip=-1", "grad_clip must be a number >= 0, got -1"),
    ("stage.val_every_n_steps=0", "val_every_n_steps must be an integer >= 1, got 0"),
    ("stage.val_every_n_steps=abc", "val_every_n_steps must be an integer >= 1, got 'abc'"),
])
def test_bad_run_settings_are_one_line(override, needle):
    from magnet.cli import check_run_settings
    from magnet.errors import ConfigError

    check_run_settings(_compose([]).stage)  # the defaults pass
    with pytest.raises(ConfigError, match=re.escape(needle)):
        check_run_settings(_compose([override]).stage)


@pytest.mark.parametrize("override, needle", [
    ("stage.batch_size=-4", "batch_size must be an integer >= 1, got -4"),
    ("stage.sequence_len=0", "sequence_len must be an integer >= 1, got 0"),
    ("data.num_workers=-1", "num_workers must be an integer >= 0, got -1"),
    ("+data.epoch_length=0", "epoch_length must be an integer >= 1, got 0"),
    ("stage.batch_scope=per_gpu", "batch_scope='per_gpu' is unknown"),
])
def test_bad_data_values_are_one_line(override, needle):
    from magnet.cli import unwrap_user_error

    cfg = _compose(["paths.data_dir=/nonexistent", override])
    with pytest.raises(Exception) as err:  # Hydra wraps the ConfigError; unwrapped below
        instantiate(cfg.data)
    user = unwrap_user_error(err.value)
    assert user is not None and needle in str(user) and "\n" not in str(user)


def test_lightning_misconfiguration_is_a_user_error():
    import lightning.pytorch as pl

    from magnet.cli import unwrap_user_error

    with pytest.raises(Exception) as err:  # Lightning's MisconfigurationException
        pl.callbacks.ModelCheckpoint(every_n_train_steps=-1)
    user = unwrap_user_error(err.value)
    assert user is not None and "every_n_train_steps=-1" in str(user)
    assert unwrap_user_error(RuntimeError("a bug")) is None  # everything else stays a traceback
