"""The episode tap: finished training episodes -> :class:`EpisodeRecord` -> the explorer runtime.

Pass the tap as the training collector's ``on_episode_done_hook`` and its :meth:`EpisodeTap.on_step`
as ``on_step_hook``::

    tap = EpisodeTap(runtime, env_id, spec, counter=counter)
    collector = Collector(algorithm, train_envs, buffer, exploration_noise=True,
                          on_episode_done_hook=tap, on_step_hook=tap.on_step)

The record's return and length are the collector's own: :meth:`EpisodeTap.on_step` sums each
env's rewards (as the env gave them, unclipped) and counts its steps, so they are right however
long the episode. Its sampled actions are read back from the replay buffer, which holds at most
``buffer_size / num_envs`` steps per env: an episode longer than that is described by the
actions of its newest steps.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from typing import Any, Literal, Protocol

import numpy as np

from explorer_pipeline.types import ActionSpec, EpisodeRecord, ExplorationUpdate, RequestFailure

from .counter import EnvStepCounter

log = logging.getLogger(__name__)

__all__ = ["EpisodeTap"]


class EpisodeSink(Protocol):
    """Where the tap hands finished episodes: an :class:`~explorer_pipeline.runtime.ExplorerRuntime`."""

    def submit(self, record: EpisodeRecord) -> None:
        """Hand over an episode without waiting (async mode)."""
        ...

    def submit_and_wait(self, record: EpisodeRecord,
                        timeout: float | None = None) -> ExplorationUpdate | RequestFailure | None:
        """Hand over an episode and wait for the update it asks for (blocking mode)."""
        ...


class EpisodeTap:
    """An ``on_episode_done_hook`` that hands each finished episode to the explorer.

    :param runtime: an :class:`~explorer_pipeline.runtime.ExplorerRuntime` (anything with
        ``submit`` and ``submit_and_wait``: :class:`EpisodeSink`), or None to only count episodes and steps.
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
        runtime: EpisodeSink | None,
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
        # per env id (index): return and steps of the episode in progress, and whether one is
        self._return = np.zeros(0, dtype=np.float64)
        self._steps = np.zeros(0, dtype=np.int64)
        self._running = np.zeros(0, dtype=bool)
        self._finished: deque[tuple[float, int]] = deque(maxlen=1024)  # ended, record not made yet

    # ------------------------------------------------------------------ collector hooks
    def on_step(self, action_batch: Any, rollout_batch: Any) -> None:
        """``on_step_hook``: advance the env-step counter by the number of envs that stepped, and
        add each env's reward to its episode in progress (one array operation for all envs)."""
        rewards = np.asarray(rollout_batch.rew, dtype=np.float64).reshape(-1)
        n = len(rewards)
        self.counter.value += n
        done = np.logical_or(np.asarray(rollout_batch.terminated), np.asarray(rollout_batch.truncated)).reshape(n)
        info = rollout_batch.info if "info" in rollout_batch else None
        ids = np.asarray(info.env_id if info is not None and "env_id" in info else np.arange(n)).reshape(n)
        ids = ids.astype(np.int64, copy=False)
        if n and ids.max() >= len(self._return):
            self._grow(int(ids.max()) + 1)
        self._return[ids] += rewards  # an env steps at most once per vector step: no repeated ids
        self._steps[ids] += 1
        self._running[ids] = True
        if done.any():  # the collector calls the episode hook for these next, in this order
            for env_id in ids[done].tolist():
                self._finished.append((float(self._return[env_id]), int(self._steps[env_id])))
            self._end(ids[done])

    def _grow(self, size: int) -> None:
        extra = size - len(self._return)
        self._return = np.concatenate([self._return, np.zeros(extra, dtype=np.float64)])
        self._steps = np.concatenate([self._steps, np.zeros(extra, dtype=np.int64)])
        self._running = np.concatenate([self._running, np.zeros(extra, dtype=bool)])

    def _end(self, ids: Any) -> None:
        self._return[ids] = 0.0
        self._steps[ids] = 0
        self._running[ids] = False

    def forget_open_episodes(self) -> None:
        """The envs were reset: the episodes in progress will not finish."""
        self._end(slice(None))
        self._finished.clear()

    def get_state(self) -> dict[str, Any]:
        """What a checkpoint keeps: counts, the last record, and the episodes in progress."""
        running = np.flatnonzero(self._running).tolist()
        return {"episodes": self.episodes, "errors": self.errors, "blocking_timeouts": self.blocking_timeouts,
                "last_record": self.last_record,
                "open": {i: [float(self._return[i]), int(self._steps[i])] for i in running},
                "finished": list(self._finished)}

    def set_state(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`get_state`'s output."""
        self.episodes, self.errors = state["episodes"], state["errors"]
        self.blocking_timeouts, self.last_record = state["blocking_timeouts"], state["last_record"]
        self._end(slice(None))
        for key, (episode_return, steps) in state["open"].items():
            env_id = int(key)
            if env_id >= len(self._return):
                self._grow(env_id + 1)
            self._return[env_id], self._steps[env_id], self._running[env_id] = float(episode_return), int(steps), True
        self._finished = deque(((float(r), int(n)) for r, n in state["finished"]), maxlen=1024)

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
        if self._finished:  # the whole episode's sums from on_step; the buffer may hold only its newest steps
            episode_return, length = self._finished.popleft()
        else:  # used without on_step: what the buffer holds
            episode_return, length = float(rewards.sum()), len(rewards)
        actions = np.asarray(episode_batch.act)
        if self.spec.is_discrete:
            action_tuple = tuple(actions.astype(np.int64).reshape(-1).tolist())
        else:
            flat = np.clip(actions.astype(np.float64).reshape(len(actions), -1), -1.0, 1.0)
            action_tuple = tuple(tuple(row) for row in flat.tolist())
        return EpisodeRecord(
            episode_return=episode_return,
            length=length,
            env_id=self.env_id,
            episode_index=self.episodes,
            actions=action_tuple,
            env_step=self.counter.value,
        )
