"""Checkpoints beyond Lightning's periodic ``ModelCheckpoint``: one when training is interrupted, and optional ones
on a training-time interval.

Interruption uses Lightning's own machinery. On SIGTERM Lightning sets ``trainer.received_sigterm`` and raises
``SIGTERMException`` at the next step boundary (after the optimiser step and any validation due, on every DDP rank
together: rank 0's flag is broadcast); :class:`InterruptCheckpoint` writes the checkpoint of that step in
``on_exception``, so resuming from it continues exactly where the run stopped. Ctrl-C (SIGINT) is handed to the
same path: the first one stops the run at the end of the current step with a checkpoint, a second one stops it at
once without one (Lightning's KeyboardInterrupt handling).

On SLURM (Lightning's ``SLURMEnvironment`` with auto-requeue) the checkpoint is written under Lightning's HPC name
``<default_root_dir>/hpc_ckpt_<n>.ckpt``, which a requeued job resumes from automatically; elsewhere it is
``<dirpath>/last.ckpt``, the file to pass as ``ckpt_path=`` to resume. Lightning's auto-requeue handler (SIGUSR1,
sent by SLURM before the time limit: write ``hpc_ckpt_<n>.ckpt``, then ``scontrol requeue``) runs from the signal
handler itself, in the middle of whatever the process is doing: a signal that lands while a periodic checkpoint is
being written breaks that write, and a checkpoint taken in the middle of a step does not resume exactly. So the
signal is deferred to the same step boundary, where Lightning's handler then runs unchanged.
"""

from __future__ import annotations

import datetime
import signal
import threading
from pathlib import Path
from typing import Any

from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import Checkpoint, ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException
from lightning.pytorch.utilities.rank_zero import rank_zero_info

from magnet.errors import ConfigError


class InterruptCheckpoint(Checkpoint):
    """Write a checkpoint of the current step when training is stopped by SIGTERM or Ctrl-C.

    ``dirpath``: where ``last.ckpt`` goes (the run's ``checkpoints/``). ``handle_sigint``: route the first Ctrl-C to
    Lightning's SIGTERM handling (stop after the current step, with a checkpoint). After an interruption,
    ``signal`` is the signal number (SIGTERM or SIGINT) and ``path`` the checkpoint written (None otherwise).
    """

    def __init__(self, dirpath: str | Path, handle_sigint: bool = True):
        super().__init__()
        self.dirpath = Path(dirpath)
        self.handle_sigint = bool(handle_sigint)
        self.signal: int | None = None
        self.path: Path | None = None
        self._trainer: Trainer | None = None
        self._requeue_signal: int | None = None
        self._requeue_handler: Any = None

    @property
    def state_key(self) -> str:
        return f"{type(self).__name__}[dirpath={self.dirpath}]"

    # -------------------------------------------------------------------------------------------------- signals

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # Lightning has registered its handlers by now (Trainer._run, after on_fit_start) and puts back the ones it
        # found, SIGINT's included, when fit ends.
        self._trainer = trainer
        if threading.current_thread() is not threading.main_thread():
            return
        if self.handle_sigint:
            signal.signal(signal.SIGINT, self._on_sigint)
        env = trainer._accelerator_connector.cluster_environment  # as Lightning's own signal connector reads it
        if isinstance(env, SLURMEnvironment) and env.auto_requeue and env.requeue_signal is not None:
            handler = signal.getsignal(env.requeue_signal)
            if callable(handler):  # Lightning's auto-requeue handler, registered when fit started
                self._requeue_signal, self._requeue_handler = env.requeue_signal, handler
                signal.signal(env.requeue_signal, self._on_requeue_signal)

    @staticmethod
    def _stop_after_this_step(signum: int, frame: Any) -> None:
        handler = signal.getsignal(signal.SIGTERM)
        if callable(handler):  # Lightning's: sets trainer.received_sigterm and forwards the signal to its children
            handler(signum, frame)
        else:
            raise KeyboardInterrupt

    def _on_sigint(self, signum: int, frame: Any) -> None:
        self.signal = signal.SIGINT
        signal.signal(signal.SIGINT, signal.default_int_handler)  # a second Ctrl-C: KeyboardInterrupt, at once
        trainer = self._trainer
        if trainer is not None and trainer.is_global_zero:
            print("\ninterrupt: stopping after this step with a checkpoint (Ctrl-C again to stop at once, without one)",
                  flush=True)
        self._stop_after_this_step(signum, frame)

    def _on_requeue_signal(self, signum: int, frame: Any) -> None:
        self.signal = signum
        self._stop_after_this_step(signum, frame)

    # ---------------------------------------------------------------------------------------------- the save

    def checkpoint_path(self, trainer: Trainer) -> Path:
        """Where the interruption checkpoint of ``trainer`` goes (see the module docstring)."""
        env = trainer._accelerator_connector.cluster_environment
        if isinstance(env, SLURMEnvironment) and env.auto_requeue:
            return Path(trainer._checkpoint_connector.hpc_save_path(trainer.default_root_dir))
        return self.dirpath / "last.ckpt"

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        if not isinstance(exception, SIGTERMException):
            return
        if self.signal is None:
            self.signal = signal.SIGTERM
        path = self.checkpoint_path(trainer)
        if self.signal == self._requeue_signal:
            # SLURM's time-limit signal: Lightning's auto-requeue (write hpc_ckpt_<n>.ckpt = `path`, then requeue the
            # job), now at the step boundary
            self._requeue_handler(self.signal, None)
            self.path = path
            return
        if trainer.is_global_zero and path.is_symlink():  # ModelCheckpoint(save_last="link") writes a link
            path.unlink()
        trainer.save_checkpoint(path)  # every rank takes part; rank 0 writes
        self.path = path
        rank_zero_info(f"interrupted at step {trainer.global_step}: wrote {path}")


def time_checkpoint(dirpath: str | Path, minutes: float | None = None) -> ModelCheckpoint | None:
    """A ``ModelCheckpoint`` saving every ``minutes`` of training time (Lightning's ``train_time_interval``; rank 0's
    clock decides for every DDP rank) into ``dirpath/time-step<step>.ckpt``, only the latest one kept (resume from
    the newer of it and ``last.ckpt``, which the step-based checkpoints update); None (no callback) when ``minutes``
    is None."""
    if minutes is None:
        return None
    if isinstance(minutes, bool) or not isinstance(minutes, (int, float)) or minutes <= 0:
        raise ConfigError(f"callbacks.time_checkpoint.minutes must be a positive number or null, got {minutes!r}")
    return ModelCheckpoint(dirpath=dirpath, filename="time-step{step:07d}", auto_insert_metric_name=False,
                           train_time_interval=datetime.timedelta(minutes=float(minutes)), save_top_k=1,
                           save_last=False, save_on_train_epoch_end=False)
