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
    """Silence the two notices every training run would print that say nothing about the run: Lightning's tip to
    install its cloud logger, and torch's FutureWarning about ``isinstance(treespec, LeafSpec)``, which Lightning's
    own code triggers. Everything else Lightning reports is kept."""
    import logging
    import warnings

    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated", category=FutureWarning)
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logging.getLogger(name).addFilter(_DropLightningTip)  # the class itself: adding it twice is a no-op


def fail(message: str) -> None:
    """Print ``error: message`` (one line) to stderr and exit with code 2."""
    print(f"error: {' '.join(str(message).split())}", file=sys.stderr)
    raise SystemExit(EXIT_USER_ERROR)


def group_choices(group: str, conf_dir: Path = CONF_DIR) -> list[str]:
    """The option names of a config group (``conf/<group>/*.yaml``)."""
    return sorted(p.stem for p in (conf_dir / group).glob("*.yaml"))


def check_choices(argv: Sequence[str], groups: Iterable[str], conf_dir: Path = CONF_DIR) -> None:
    """Fail with one line if a command-line choice such as ``dataset=foo`` names no file of its group."""
    groups = set(groups)
    for arg in argv:
        if arg.startswith("-") or "=" not in arg:
            continue
        key, value = arg.split("=", 1)
        key = key.lstrip("+~")
        if key not in groups or value in ("", "null"):
            continue
        options = group_choices(key, conf_dir)
        for choice in value.split(","):  # multirun sweeps: dataset=dd100,duobox
            if choice not in options:
                fail(f"unknown {key} '{choice}' (choose from: {', '.join(options)}; files in conf/{key}/)")


def unwrap_user_error(exc: BaseException) -> MagnetError | None:
    """The :class:`MagnetError` behind ``exc`` (itself, or a cause Hydra's instantiate wrapped), else None."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, MagnetError):
            return exc
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
