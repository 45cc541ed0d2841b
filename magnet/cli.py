"""Shared glue for the entry points (train.py, sample.py, evaluate.py): clear one-line failures.

Hydra reports a misspelt config choice over several lines and Hydra's ``instantiate`` wraps our errors in its own
exception; both are turned into ``error: <one line>`` on stderr and exit code 2 here.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from magnet.errors import MagnetError

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
EXIT_USER_ERROR = 2


def in_slurm_batch_job() -> bool:
    """Whether this process is a task of a SLURM batch job (not an interactive allocation: job name bash or
    interactive), as Lightning's ``SLURMEnvironment.detect`` decides."""
    import os

    return ("SLURM_NTASKS" in os.environ and os.environ.get("SLURM_JOB_NAME") not in ("bash", "interactive")
            and bool(os.environ.get("SLURM_JOB_ID")))


def run_stamp(pattern: str = "%Y-%m-%d_%H-%M-%S") -> str:
    """The last part of a run directory (``${run_stamp:}`` in conf/train.yaml): the time now in ``pattern``, or in a
    SLURM batch job ``slurm-<job id>`` (``slurm-<array job id>_<task id>`` in an array), so that every task of a
    multi-GPU job writes into one directory and a requeued job finds its run, and the checkpoint it resumes from,
    again. An interactive allocation (``srun --pty bash``, job name bash / interactive) counts as no job, as
    Lightning's ``SLURMEnvironment.detect`` has it."""
    import datetime
    import os

    if in_slurm_batch_job():
        array_job, array_task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
        if array_job and array_task:
            return f"slurm-{array_job}_{array_task}"
        return f"slurm-{os.environ['SLURM_JOB_ID']}"
    return datetime.datetime.now().strftime(pattern)


def sweep_only(mode: Any, value: Any) -> Any:
    """``value`` in a multirun (``mode`` is Hydra's ``hydra.mode``), else None: ``${sweep_only:${hydra.mode},.hydra}``
    gives each sweep job of sample.py / evaluate.py a ``.hydra/`` folder with its resolved config while a single run
    writes none into the working directory."""
    return value if str(mode).rsplit(".", 1)[-1] == "MULTIRUN" else None


def register_resolvers() -> None:
    """Register the OmegaConf resolvers the configs use (``run_stamp``, ``sweep_only``); safe to call again."""
    from omegaconf import OmegaConf

    OmegaConf.register_new_resolver("run_stamp", run_stamp, use_cache=True, replace=True)
    OmegaConf.register_new_resolver("sweep_only", sweep_only, replace=True)


register_resolvers()


def one_line_warnings() -> None:
    """Print Python warnings as ``warning: <message>`` on one line (no source line echo)."""
    import warnings

    def _format(message, category, filename, lineno, line=None):
        return f"warning: {' '.join(str(message).split())}\n"

    warnings.formatwarning = _format


class _DropLightningTip:
    """A logging filter dropping Lightning's advert (``💡 Tip: ... litlogger ...``) printed when a Trainer starts."""

    @staticmethod
    def filter(record) -> bool:
        return "litlogger" not in record.getMessage()


def quiet_lightning_notices() -> None:
    """Silence the notices every training run would print that say nothing about the run: Lightning's tip to
    install its cloud logger, torch's FutureWarning about ``isinstance(treespec, LeafSpec)``, which Lightning's own
    code triggers, and under DDP Lightning's false "use sync_dist=True" hint for the validation metrics. Everything
    else Lightning reports is kept."""
    import logging
    import warnings

    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated", category=FutureWarning)
    # Under DDP Lightning suggests sync_dist=True for every value logged at epoch level; the validation values are
    # torchmetrics results that compute() has already synchronised across ranks (Lightning issue #20153).
    warnings.filterwarnings("ignore", message=r"It is recommended to use `self.log\('val(_metrics|_samples)?/")
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logging.getLogger(name).addFilter(_DropLightningTip)  # the class itself: adding it twice is a no-op


def fail(message: str) -> None:
    """Print ``error: message`` (one line) to stderr and exit with code 2."""
    print(f"error: {' '.join(str(message).split())}", file=sys.stderr)
    raise SystemExit(EXIT_USER_ERROR)


def group_choices(group: str, conf_dir: Path = CONF_DIR) -> list[str]:
    """The option names of a config group (``conf/<group>/*.yaml``)."""
    return sorted(p.stem for p in (conf_dir / group).glob("*.yaml"))


def _override_choices(arg: str, groups: set[str]) -> tuple[str, list[str] | Any] | None:
    """``(group, values)`` of a command-line override of one of ``groups``, parsed with Hydra's own override
    grammar: a plain ``dataset=dd100``, a comma list or ``choice(...)`` / ``shuffle(...)`` / ``sort(...)`` /
    ``range(...)`` (the values as strings), or ``glob(...)`` (the :class:`hydra...Glob` itself). None for anything
    else, including what Hydra cannot parse (Hydra reports that itself)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import Glob
    from hydra.errors import HydraException

    try:
        override = OverridesParser.create().parse_override(arg)
    except HydraException:
        return None
    if override.key_or_group not in groups or override.is_delete():
        return None
    value = override.value()
    if isinstance(value, Glob):
        return override.key_or_group, value
    if override.is_interval_sweep():  # interval(a, b) is for numeric sweeper keys, not a group choice
        return None
    if override.is_sweep_override():
        return override.key_or_group, [str(v) for v in override.sweep_iterator()]
    if value is None:
        return None
    return override.key_or_group, [value if isinstance(value, str) else override.get_value_element_as_str()]


def check_choices(argv: Sequence[str], groups: Iterable[str], conf_dir: Path = CONF_DIR) -> None:
    """Fail with one line if a command-line choice such as ``dataset=foo`` names no file of its group.

    Every Hydra sweep syntax is understood (``-m``): comma lists ``dataset=dd100,duobox``, ``choice(...)``,
    ``shuffle(...)``, ``sort(...)``, ``range(...)`` (each value is checked) and ``glob(...)`` (it must match at
    least one option).
    """
    groups = set(groups)
    for arg in argv:
        if arg.startswith("-") or "=" not in arg:
            continue
        parsed = _override_choices(arg, groups)
        if parsed is None:
            continue
        key, values = parsed
        options = group_choices(key, conf_dir)
        hint = f"choose from: {', '.join(options)}; files in conf/{key}/"
        if not isinstance(values, list):  # a glob
            if not values.filter(options):
                fail(f"{key}={arg.split('=', 1)[1]} matches no {key} ({hint})")
            continue
        for choice in values:
            if choice not in options and choice not in ("", "null"):
                fail(f"unknown {key} '{choice}' ({hint})")


# Keys of a stage config (conf/stage/*.yaml) that are the run's, not the LightningModule's: conf/train.yaml hands
# them to the datamodule and the Trainer. A key the module's __init__ takes goes to the module even if listed here
# (the DFoT's num_persons is both).
RUN_KEYS = ("name", "num_persons", "sequence_len", "batch_size", "batch_scope", "grad_clip", "val_every_n_steps",
            "val_batches")


def check_run_settings(stage: Any) -> None:
    """One-line :class:`ConfigError` for a run setting of a stage config (:data:`RUN_KEYS`) that the datamodule or
    Lightning would accept and misuse (a negative gradient clip trains unclipped) or fail on with a traceback
    (``val_every_n_steps=0``). The datamodule and the Trainer check the others themselves."""
    from magnet.utils import require_number

    if stage.get("grad_clip") is not None:
        require_number("grad_clip", stage.grad_clip, minimum=0.0,
                       hint="set it with stage.grad_clip=<value> (null: no clipping)")
    require_number("val_every_n_steps", stage.val_every_n_steps, integer=True, minimum=1,
                   hint="set it with stage.val_every_n_steps=<value>")


def instantiate_stage(stage: Any) -> Any:
    """The LightningModule of a stage config (``conf/stage/<name>.yaml``): the ``_target_`` class (Hydra's
    ``get_class``) called with every key of the node that its ``__init__`` takes, as plain Python values (so the hyper-parameters saved in checkpoints load
    with ``weights_only=True``). The other keys must be run settings (:data:`RUN_KEYS`); anything else is a one-line
    :class:`ConfigError` (a key added with ``+stage.<key>=`` that nothing reads)."""
    import inspect

    from hydra.utils import get_class
    from omegaconf import OmegaConf

    from magnet.errors import ConfigError

    node = OmegaConf.to_container(stage, resolve=True) if OmegaConf.is_config(stage) else dict(stage)
    target = node.pop("_target_", None)
    if not target:
        raise ConfigError("the stage config names no LightningModule (_target_); see conf/stage/vqvae.yaml")
    cls = get_class(target)
    params = inspect.signature(cls).parameters
    kwargs = {k: v for k, v in node.items() if k in params}
    unknown = sorted(k for k in node if k not in params and k not in RUN_KEYS)
    if unknown:
        raise ConfigError(f"stage key(s) {unknown} are neither arguments of {cls.__name__} nor run settings "
                          f"({', '.join(RUN_KEYS)}); remove them or fix the spelling")
    return cls(**kwargs)


def unwrap_user_error(exc: BaseException) -> MagnetError | None:
    """The user error behind ``exc`` (itself, or a cause Hydra's instantiate wrapped), else None: a
    :class:`MagnetError`, or Lightning's ``MisconfigurationException`` (an impossible Trainer or callback setting
    such as ``trainer.devices=0``), returned as a :class:`ConfigError` with Lightning's message."""
    from magnet.errors import ConfigError

    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, MagnetError):
            return exc
        if type(exc).__name__ == "MisconfigurationException":  # no lightning import here (entry points stay fast)
            return ConfigError(f"Lightning refuses the trainer/callback settings: {exc}")
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def run_guarded(fn: Callable[..., Any], *args: Any, cleanup_dir: Path | None = None, **kwargs: Any) -> Any:
    """Call ``fn``; a user error (possibly wrapped by Hydra) becomes one line on stderr and exit code 2.

    ``cleanup_dir``: a run directory to delete on a user error if nothing worth keeping (no ``checkpoints/``)
    was written into it yet, so a failed start leaves no partial output.
    """
    try:
        return fn(*args, **kwargs)
    except Exception as exc:
        err = unwrap_user_error(exc)
        if err is None:
            raise
        if cleanup_dir is not None and cleanup_dir.is_dir() and not (cleanup_dir / "checkpoints").exists():
            import logging
            import shutil

            logging.shutdown()  # release Hydra's log file before removing the directory
            shutil.rmtree(cleanup_dir, ignore_errors=True)
            for parent in list(cleanup_dir.parents)[:2]:  # <stage>/<dataset>/ folders left empty
                with contextlib.suppress(OSError):
                    parent.rmdir()
        fail(str(err))


class OneLineArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose usage errors are one line (``error: <what> (see --help)``) and exit 2,
    like every other user error of the project."""

    def error(self, message: str) -> None:  # type: ignore[override]
        fail(f"{self.prog}: {message} (see {self.prog} --help)")
