"""Callbacks of the training loop (:func:`~tianshou_integration.training.train`), in the manner of
Stable-Baselines3's ``BaseCallback`` and ``CallbackList``.

The loop takes one :class:`Callback` (a :class:`CallbackList` to combine several) and calls it
in this order::

    on_training_start(loop)          once: after the warm-up (or the restored state), before the first iteration
    per iteration:
        on_step(loop) -> bool        before the collect; False stops training here (the run is interrupted)
        on_stop(loop)                only when an on_step said False, before the loop ends
        on_train_episode(step, ret)  for each training episode the collect finishes
        on_collect_end(loop)         after the collect and its gradient steps
        on_eval(step, mean)          after a greedy evaluation (the final one too)
    on_training_end(loop)            once, always (also after Ctrl-C), with ``loop.result`` complete

``loop`` is the running :class:`~tianshou_integration.training.TrainingLoop`: callbacks read
``loop.env_step``, ``loop.result``, ``loop.last_eval`` and take ``loop.snapshot()``.

The steps and episodes budgets are not callbacks: they end a run normally (with its final
evaluation), while a callback that returns False interrupts it.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .rundir import RunDir
    from .training import CheckpointHook, TrainingLoop

log = logging.getLogger(__name__)

__all__ = ["Callback", "CallbackList", "Checkpointing", "ExplorationUpdates", "MetricsLogging", "ProgressBar",
           "StopOnSignal"]


class Callback:
    """A training-loop callback: override the hooks you need (each does nothing by default)."""

    def on_training_start(self, loop: TrainingLoop) -> None:
        """Before the first iteration; ``loop.env_step`` is where training starts (after a warm-up
        or at a resumed checkpoint)."""

    def on_step(self, loop: TrainingLoop) -> bool:
        """Before each iteration's collect; return False to stop training here (as interrupted)."""
        return True

    def on_stop(self, loop: TrainingLoop) -> None:
        """Training stops early at ``loop.env_step`` because an :meth:`on_step` returned False."""

    def on_train_episode(self, env_step: int, episode_return: float) -> None:
        """A training episode ended at ``env_step`` (called during the collect, in episode order)."""

    def on_collect_end(self, loop: TrainingLoop) -> None:
        """After each collect and the gradient steps it earned."""

    def on_eval(self, env_step: int, mean_return: float) -> None:
        """After each greedy evaluation: its mean return at ``env_step``."""

    def on_training_end(self, loop: TrainingLoop) -> None:
        """Training ended (budget spent, stopped, or Ctrl-C); ``loop.result`` is complete."""

    def progress_fields(self) -> dict[str, Any]:
        """Extra fields for the progress bar (e.g. LLM updates applied)."""
        return {}


class CallbackList(Callback):
    """Several callbacks as one, called in order. Every callback's :meth:`on_step` is asked;
    training stops when any of them returns False."""

    def __init__(self, callbacks: Iterable[Callback | None] = ()) -> None:
        self.callbacks = [c for c in callbacks if c is not None]

    def on_training_start(self, loop: TrainingLoop) -> None:
        """Each callback's, in order."""
        for callback in self.callbacks:
            callback.on_training_start(loop)

    def on_step(self, loop: TrainingLoop) -> bool:
        """Asks every callback; False when any of them says False."""
        keep_going = True
        for callback in self.callbacks:
            keep_going = callback.on_step(loop) and keep_going
        return keep_going

    def on_stop(self, loop: TrainingLoop) -> None:
        """Each callback's, in order."""
        for callback in self.callbacks:
            callback.on_stop(loop)

    def on_train_episode(self, env_step: int, episode_return: float) -> None:
        """Each callback's, in order."""
        for callback in self.callbacks:
            callback.on_train_episode(env_step, episode_return)

    def on_collect_end(self, loop: TrainingLoop) -> None:
        """Each callback's, in order."""
        for callback in self.callbacks:
            callback.on_collect_end(loop)

    def on_eval(self, env_step: int, mean_return: float) -> None:
        """Each callback's, in order."""
        for callback in self.callbacks:
            callback.on_eval(env_step, mean_return)

    def on_training_end(self, loop: TrainingLoop) -> None:
        """Each callback's, in order."""
        for callback in self.callbacks:
            callback.on_training_end(loop)

    def progress_fields(self) -> dict[str, Any]:
        """Every callback's fields, later ones winning."""
        fields: dict[str, Any] = {}
        for callback in self.callbacks:
            fields.update(callback.progress_fields())
        return fields


class Checkpointing(Callback):
    """Writes a checkpoint (``checkpoints``: a :class:`~tianshou_integration.checkpoint.Checkpointer`)
    before each iteration it says is due, and a last one when training is stopped (unless one was
    just written at that step)."""

    def __init__(self, checkpoints: CheckpointHook) -> None:
        self.checkpoints = checkpoints
        self._saved_at: int | None = None

    def on_step(self, loop: TrainingLoop) -> bool:
        """A checkpoint when one is due."""
        self._saved_at = None
        if self.checkpoints.due(loop.env_step):
            self.checkpoints.save(loop.snapshot())
            self._saved_at = loop.env_step
        return True

    def on_stop(self, loop: TrainingLoop) -> None:
        """A last checkpoint, unless :meth:`on_step` has just written one."""
        if self._saved_at != loop.env_step:
            self.checkpoints.save(loop.snapshot())


class StopOnSignal(Callback):
    """Used as a context manager around training: the first Ctrl-C (SIGINT) or SIGTERM asks the
    loop to stop before its next iteration (after a last checkpoint, with :class:`Checkpointing`);
    a second one stops at once (KeyboardInterrupt). SIGTERM is what a scheduler sends before it
    preempts a job (SLURM, Kubernetes, a Ray cancellation of the ablation runner). Only on the
    main thread (elsewhere signals are left alone)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopOnSignal:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        log.warning("%s: stopping after the current step with a checkpoint (a second signal stops at once)", name)

    def __exit__(self, *exc: object) -> None:
        for sig, previous in self._previous.items():
            default = signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL
            signal.signal(sig, previous if previous is not None else default)
        self._previous = {}

    def on_step(self, loop: TrainingLoop) -> bool:
        """False once a signal has asked to stop."""
        return not self.requested


class MetricsLogging(Callback):
    """Training-episode returns and greedy evaluations to the run directory (``metrics.csv``,
    TensorBoard)."""

    def __init__(self, rundir: RunDir) -> None:
        self.rundir = rundir

    def on_train_episode(self, env_step: int, episode_return: float) -> None:
        """A ``metrics.csv`` row (:meth:`RunDir.log_train_episode`)."""
        self.rundir.log_train_episode(env_step, episode_return)

    def on_eval(self, env_step: int, mean_return: float) -> None:
        """A ``metrics.csv`` row (:meth:`RunDir.log_eval`)."""
        self.rundir.log_eval(env_step, mean_return)


class ExplorationUpdates(Callback):
    """After each collect, writes the LLM exploration updates the collector has started to use
    (``updates.jsonl``); shows how many were applied, how many were informative and the fallbacks
    on the progress bar."""

    def __init__(self, rundir: RunDir) -> None:
        self.rundir = rundir

    def on_collect_end(self, loop: TrainingLoop) -> None:
        """Write the updates applied so far (:meth:`RunDir.poll`)."""
        self.rundir.poll(loop.env_step)

    def progress_fields(self) -> dict[str, Any]:
        """``upd`` (applied), ``inf`` (informative) and ``fb`` (fallbacks)."""
        rundir = self.rundir
        return {"upd": rundir.updates_applied, "inf": rundir.updates_informative, "fb": rundir.fallbacks}


class ProgressBar(Callback):
    """A tqdm bar over the env steps with the last training return, the last evaluation and the
    ``fields`` of the other callbacks.

    :param enabled: None: only on a terminal.
    """

    def __init__(self, total: int, enabled: bool | None = None,
                 fields: Callable[[], dict[str, Any]] | None = None) -> None:
        self.bar = _progress_bar(total, enabled)
        self.fields = fields
        self._loop: TrainingLoop | None = None
        self._shown = 0

    def on_training_start(self, loop: TrainingLoop) -> None:
        """Show the steps already done (warm-up, or the resumed run's)."""
        self._loop = loop
        self._advance(loop)

    def on_collect_end(self, loop: TrainingLoop) -> None:
        """Advance the bar and refresh its fields."""
        self._advance(loop)
        self._postfix(loop)

    def on_eval(self, env_step: int, mean_return: float) -> None:
        """Show the new evaluation."""
        if self._loop is not None:
            self._postfix(self._loop)

    def on_training_end(self, loop: TrainingLoop) -> None:
        """Close the bar."""
        self.bar.close()

    def _advance(self, loop: TrainingLoop) -> None:
        self.bar.update(loop.env_step - self._shown)
        self._shown = loop.env_step

    def _postfix(self, loop: TrainingLoop) -> None:
        fields: dict[str, Any] = {}
        if loop.last_return:
            fields["ret"] = f"{loop.last_return[0]:.1f}"
        if loop.last_eval is not None:
            fields["eval"] = f"{loop.last_eval:.1f}"
        if self.fields is not None:
            with contextlib.suppress(Exception):  # the bar must never stop training
                fields.update(self.fields())
        self.bar.set_postfix(fields, refresh=False)


class _NoBar:
    def update(self, n: int) -> None: ...
    def set_postfix(self, *args: Any, **kwargs: Any) -> None: ...
    def close(self) -> None: ...


def _progress_bar(total: int, progress: bool | None) -> Any:
    if progress is False:
        return _NoBar()
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return _NoBar()
    return tqdm(total=total, unit="step", dynamic_ncols=True, disable=None if progress is None else not progress,
                desc="training")
