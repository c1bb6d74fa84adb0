"""The episode tap: finished training episodes -> :class:`EpisodeRecord` -> the explorer runtime.

Pass the tap as the training collector's ``on_episode_done_hook`` and its :meth:`EpisodeTap.on_step`
as ``on_step_hook``::

    tap = EpisodeTap(runtime, env_id, spec, counter=counter)
    collector = Collector(algorithm, train_envs, buffer, exploration_noise=True,
                          on_episode_done_hook=tap, on_step_hook=tap.on_step)

Tianshou reads each finished episode back from the replay buffer, so every env's sub-buffer
must hold a full episode (``buffer_size / num_envs >= max episode length``), or the record's
actions, return and length cover only the episode's tail.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Literal

import numpy as np

from explorer_pipeline.types import ActionSpec, EpisodeRecord

from .counter import EnvStepCounter

log = logging.getLogger(__name__)

__all__ = ["EpisodeTap"]


class EpisodeTap:
    """An ``on_episode_done_hook`` that hands each finished episode to the explorer.

    :param runtime: an :class:`~explorer_pipeline.runtime.ExplorerRuntime` (anything with
        ``submit`` and ``submit_and_wait``), or None to only count episodes and steps.
    :param env_id: the gymnasium id written into every record.
    :param spec: the action spec; decides how actions are converted (ints or float tuples).
    :param mode: ``"async"`` (``submit``: never blocks) or ``"blocking"`` (paper parity:
        ``submit_and_wait`` before the collector takes its next step).
    :param timeout_s: how long blocking mode waits for an update.
    :param counter: the env-step counter; :meth:`on_step` advances it.
    :param on_record: optional callbacks called with each record (e.g. metrics), on the
        training thread. Exceptions are logged and swallowed.

    The tap never raises into the collector: a failure is logged and counted in ``errors``.
    Continuous actions are recorded as the env received them in normalised units (clipped to
    ``[-1, 1]``), the same action the replay buffer stores.
    """

    def __init__(
        self,
        runtime: Any | None,
        env_id: str,
        spec: ActionSpec,
        *,
        mode: Literal["async", "blocking"] = "async",
        timeout_s: float | None = 120.0,
        counter: EnvStepCounter | None = None,
        on_record: tuple[Callable[[EpisodeRecord], None], ...] | list = (),
    ) -> None:
        if mode not in ("async", "blocking"):
            raise ValueError(f"mode must be 'async' or 'blocking', got {mode!r}")
        self.runtime = runtime
        self.env_id = env_id
        self.spec = spec
        self.mode = mode
        self.timeout_s = timeout_s
        self.counter = counter if counter is not None else EnvStepCounter()
        self.on_record = list(on_record)
        self.episodes = 0
        self.errors = 0
        self.blocking_timeouts = 0
        self.last_record: EpisodeRecord | None = None

    # ------------------------------------------------------------------ collector hooks
    def on_step(self, action_batch: Any, rollout_batch: Any) -> None:
        """``on_step_hook``: advance the env-step counter by the number of envs that stepped."""
        self.counter.value += len(rollout_batch)

    def __call__(self, episode_batch: Any) -> None:
        """``on_episode_done_hook``. Returns None (adds nothing to the buffer)."""
        try:
            record = self.to_record(episode_batch)
        except Exception:
            self.errors += 1
            log.exception("episode tap could not read a finished episode")
            return None
        self.episodes += 1
        self.last_record = record
        for callback in self.on_record:
            try:
                callback(record)
            except Exception:
                self.errors += 1
                log.exception("episode record callback %r raised", callback)
        if self.runtime is not None:
            try:
                if self.mode == "blocking":
                    if self.runtime.submit_and_wait(record, self.timeout_s) is None:
                        self.blocking_timeouts += 1
                else:
                    self.runtime.submit(record)
            except Exception:
                self.errors += 1
                log.exception("explorer runtime refused an episode record")
        return None

    # ------------------------------------------------------------------ conversion
    def to_record(self, episode_batch: Any) -> EpisodeRecord:
        """Convert one episode batch (Tianshou ``Batch`` with ``rew`` and ``act``) to a record."""
        # a reward-clipping replay buffer (Atari) keeps the game's own rewards in ``raw_rew``
        raw = episode_batch.raw_rew if "raw_rew" in episode_batch else episode_batch.rew
        rewards = np.asarray(raw, dtype=np.float64)
        actions = np.asarray(episode_batch.act)
        if self.spec.is_discrete:
            action_tuple = tuple(actions.astype(np.int64).reshape(-1).tolist())
        else:
            flat = np.clip(actions.astype(np.float64).reshape(len(actions), -1), -1.0, 1.0)
            action_tuple = tuple(tuple(row) for row in flat.tolist())
        return EpisodeRecord(
            episode_return=float(rewards.sum()),
            length=len(rewards),
            env_id=self.env_id,
            episode_index=self.episodes,
            actions=action_tuple,
            env_step=self.counter.value,
        )
