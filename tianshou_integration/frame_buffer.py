"""Replay buffers for Atari-sized observations, built on Tianshou's vector buffers.

``make_replay_buffer(size, num_envs, frame_stack=4, clip_rewards=True)`` gives a buffer that

* stores each frame once, as uint8: the collector hands it stacked observations
  ``(4, 84, 84)``; it keeps only the newest frame of each (Tianshou's ``save_only_last_obs``, no
  ``obs_next`` copy), i.e. ``84*84`` bytes per transition instead of ``2*4*84*84``. Samples
  come back stacked, ``obs`` and ``obs_next`` of shape ``(B, 4, 84, 84)`` uint8, equal to what
  the env returned: padded with the episode's first frame at its start, like gymnasium's
  ``FrameStackObservation``. The newest frame of the last ``obs_next`` of every episode, and of
  the newest transition of every sub-buffer, is kept aside so that those ``obs_next`` are exact
  too;
* optionally stores sign-clipped rewards (``np.sign``) for learning, since Tianshou's n-step
  targets read ``buffer.rew``. The returns :meth:`add` hands back to the collector, and hence
  the training returns it reports, stay the game's unclipped score. Every batch read from the
  buffer carries the unclipped rewards as ``raw_rew`` next to ``rew``;
* stores a step flagged ``info["life_lost"]`` (``make_atari_env(terminal_on_life_loss=True)``)
  as terminal for learning (no bootstrapping across a lost life), while the episode the
  collector sees, its return, length and start, is still the whole game, and the frame stack
  runs on across the lost life as the env's did;
* skips Tianshou's full-buffer NaN scan (``hasnull`` returns False; see ``FastVectorReplayBuffer``).

Two small things the plain Tianshou buffers get wrong are handled here: if a sub-buffer's
episode is cut off without ``done`` (the collector reset its env mid-episode), the last stored
transition of the cut episode is marked truncated; and transitions whose earlier frames have been
overwritten (the oldest few of a full sub-buffer) are not sampled.

Every env's sub-buffer (``size / num_envs``) should hold a whole episode: the collector reads a
finished episode back from the buffer (``buffer[indices]``, stacked, about 56 kB per step) for
its statistics and ``on_episode_done_hook``; a longer episode is read back as its newest
``size / num_envs - 1`` steps (its reported return and length still cover all of it). A hook
that wants the game's score sums ``raw_rew``, not ``rew``.

Not supported with ``frame_stack``: ``save_hdf5``/``load_hdf5``, ``update`` and ``set_batch``
(the kept-aside frames and episode bookkeeping live outside Tianshou's storage).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from tianshou.data import Batch, PrioritizedVectorReplayBuffer, VectorReplayBuffer

__all__ = ["FrameReplayBuffer", "PrioritizedFrameReplayBuffer", "make_replay_buffer"]

_RESAMPLE_TRIES = 16


class _FrameBufferMixin:
    """What both buffers add to Tianshou's; placed before the Tianshou class in the bases.

    Attributes it relies on come from Tianshou's ``ReplayBufferManager``: ``buffer_num``,
    ``maxsize``, ``last_index``, ``_lengths``, ``_meta``.
    """

    frame_stack: int | None
    clip_rewards: bool

    # ------------------------------------------------------------------ set-up
    def _init_extras(self, frame_stack: int | None, clip_rewards: bool) -> None:
        if frame_stack is not None and frame_stack < 1:
            raise ValueError(f"frame_stack must be at least 1 (or None), got {frame_stack}")
        self.frame_stack = frame_stack
        self.clip_rewards = clip_rewards
        self._sub_size = self.maxsize // self.buffer_num
        self._raw_rew = np.zeros(self.maxsize, dtype=np.float64)
        # frames: how many earlier frames of the same episode each transition's stack uses
        self._depth = np.zeros(self.maxsize, dtype=np.int16)
        # newest frame of obs_next where it is not the next transition's frame
        self._has_tail = np.zeros(self.maxsize, dtype=bool)
        self._tails: dict[int, np.ndarray] = {}
        n = self.buffer_num
        self._pending: list[np.ndarray | None] = [None] * n  # obs_next of each sub-buffer's newest transition
        self._last_slot = np.full(n, -1, dtype=np.int64)  # newest transition, -1 after a reset
        self._last_depth = np.zeros(n, dtype=np.int64)
        self._game_return = np.zeros(n, dtype=np.float64)
        self._game_len = np.zeros(n, dtype=np.int64)
        self._game_start = np.zeros(n, dtype=np.int64)
        self._game_open = np.zeros(n, dtype=bool)  # an episode has transitions in this sub-buffer

    def hasnull(self) -> bool:
        """Skip the full-buffer NaN scan the trainer runs after every collect (see module docstring)."""
        return False

    def reset(self, keep_statistics: bool = False) -> None:
        """Empty the buffer. With ``keep_statistics`` a running episode's return and length go on."""
        super().reset(keep_statistics=keep_statistics)  # type: ignore[misc]
        self._has_tail[:] = False
        self._tails.clear()
        self._last_slot[:] = -1
        self._game_open[:] = False  # the next transition's slot becomes the episode's start
        if not keep_statistics:
            self._game_return[:] = 0.0
            self._game_len[:] = 0

    # ------------------------------------------------------------------ adding
    def add(
        self,
        batch: Any,
        buffer_ids: np.ndarray | list[int] | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Add one transition per env, as Tianshou's collector does.

        Returns ``(indices, episode_returns, episode_lengths, episode_starts)`` like Tianshou's
        buffers; returns and lengths are zero for unfinished episodes, and returns are unclipped.
        """
        ids = np.arange(self.buffer_num) if buffer_ids is None else np.asarray(buffer_ids, dtype=np.int64)
        rows = len(ids)
        raw = np.asarray(batch.rew, dtype=np.float64).reshape(rows)
        terminated = np.asarray(batch.terminated, dtype=bool).reshape(rows)
        truncated = np.asarray(batch.truncated, dtype=bool).reshape(rows)
        env_done = terminated | truncated
        life_lost = self._life_lost_flags(batch, rows) & ~env_done
        frames = self.frame_stack is not None
        obs = np.asarray(batch.obs) if frames else None
        obs_next = np.asarray(batch.obs_next) if frames else None

        # episodes cut off without done: the collector reset the env mid-episode
        continues = np.zeros(rows, dtype=bool)
        for j, b in enumerate(ids):
            if self._pending[b] is None:
                continue
            if frames and not np.array_equal(obs[j], self._pending[b]):
                self._close_cut_episode(int(b))
            else:
                continues[j] = True

        to_add = Batch()
        for key in batch.get_keys():
            to_add.__dict__[key] = batch[key]
        to_add.rew = np.sign(raw) if self.clip_rewards else raw
        to_add.terminated = terminated | life_lost
        indices, _, _, _ = super().add(to_add, buffer_ids=ids)  # type: ignore[misc]

        ep_returns = np.zeros(rows, dtype=np.float64)
        ep_lens = np.zeros(rows, dtype=np.int64)
        ep_starts = np.zeros(rows, dtype=np.int64)
        for j, b in enumerate(ids):
            b = int(b)
            i = int(indices[j])
            self._drop_tail(i)  # the slot was overwritten
            self._raw_rew[i] = raw[j]
            if frames:
                self._store_frames(b, i, obs_next[j], bool(continues[j]))
                self._pending[b] = None if env_done[j] else obs_next[j].copy()
            self._last_slot[b] = i
            if not self._game_open[b]:
                self._game_open[b] = True
                self._game_start[b] = i
            self._game_return[b] += raw[j]
            self._game_len[b] += 1
            ep_starts[j] = self._episode_start(b, i)
            if env_done[j]:
                ep_returns[j], ep_lens[j] = self._game_return[b], self._game_len[b]
                self._game_return[b], self._game_len[b], self._game_open[b] = 0.0, 0, False
        return indices, ep_returns, ep_lens, ep_starts

    @staticmethod
    def _life_lost_flags(batch: Any, rows: int) -> np.ndarray:
        info = batch.get("info", None) if isinstance(batch, Batch) else getattr(batch, "info", None)
        flags = getattr(info, "life_lost", None) if info is not None else None
        if flags is None:
            return np.zeros(rows, dtype=bool)
        return np.asarray(flags, dtype=bool).reshape(rows)

    def _store_frames(self, b: int, i: int, obs_next: np.ndarray, continues: bool) -> None:
        """Record the new transition's stack depth and keep its obs_next frame aside.

        Every sub-buffer's newest transition keeps that frame until its successor arrives (whose
        obs is the same stack); an episode's last transition has no successor and keeps it.
        """
        k = self.frame_stack or 1
        prev = int(self._last_slot[b])
        if continues:
            self._depth[i] = min(int(self._last_depth[b]) + 1, k - 1)
            if prev >= 0:
                self._drop_tail(prev)  # its obs_next is now this transition's obs
        else:
            self._depth[i] = 0
        self._last_depth[b] = int(self._depth[i])
        self._tails[i] = obs_next[-1].copy()
        self._has_tail[i] = True

    def _drop_tail(self, i: int) -> None:
        if self._has_tail[i]:
            self._has_tail[i] = False
            self._tails.pop(i, None)

    def _close_cut_episode(self, b: int) -> None:
        """Mark sub-buffer ``b``'s newest transition truncated: its episode will not continue."""
        prev = int(self._last_slot[b])
        if prev >= 0:
            self._meta.truncated[prev] = True  # type: ignore[attr-defined]
            self._meta.done[prev] = True  # type: ignore[attr-defined]
        self._pending[b] = None
        self._game_return[b], self._game_len[b], self._game_open[b] = 0.0, 0, False

    def _episode_start(self, b: int, i: int) -> int:
        """The episode's first stored slot; only its newest ``size - 1`` steps if it is longer."""
        size = self._sub_size
        if self._game_len[b] < size:
            return int(self._game_start[b])
        offset = b * size
        return offset + (i - offset + 2) % size

    # ------------------------------------------------------------------ sampling
    def sample_indices(self, batch_size: int | None) -> np.ndarray:
        """Tianshou's sampling, minus transitions whose earlier frames were overwritten."""
        indices = super().sample_indices(batch_size)  # type: ignore[misc]
        if self.frame_stack is None or self.frame_stack == 1 or not batch_size or batch_size < 0 or len(indices) == 0:
            return indices
        for _ in range(_RESAMPLE_TRIES):
            bad = ~self._complete(indices)
            if not bad.any():
                break
            indices = indices.copy()
            indices[bad] = super().sample_indices(int(bad.sum()))  # type: ignore[misc]
        return indices

    def _complete(self, indices: np.ndarray) -> np.ndarray:
        """True where every frame a transition's stack needs is still stored."""
        size = self._sub_size
        b = indices // size
        local = indices - b * size
        full = self._lengths[b] >= size  # type: ignore[attr-defined]
        oldest = np.where(full, (self.last_index[b] - b * size + 1) % size, 0)  # type: ignore[attr-defined]
        stored_before = (local - oldest) % size
        return self._depth[indices] <= stored_before

    # ------------------------------------------------------------------ reading
    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, int | np.integer):
            return self[np.array([index])][0]
        if isinstance(index, slice):
            indices = self.sample_indices(0) if index == slice(None) else self._indices[: len(self)][index]  # type: ignore[attr-defined]
        else:
            indices = np.asarray(index)
        batch = super().__getitem__(indices)  # type: ignore[misc]
        if self.frame_stack is not None and len(indices) > 0:
            obs = self._stack(indices)
            batch.obs = obs
            batch.obs_next = self._stack_next(indices, obs)
        batch.raw_rew = self._raw_rew[indices]
        return batch

    def _stack(self, indices: np.ndarray) -> np.ndarray:
        """Stacked observations ``(B, k, H, W)`` of the transitions at ``indices``."""
        k = self.frame_stack or 1
        frames = self._meta.obs  # type: ignore[attr-defined]
        size = self._sub_size
        offset = (indices // size) * size
        local = indices - offset
        depth = self._depth[indices]
        out = np.empty((len(indices), k, *frames.shape[1:]), dtype=frames.dtype)
        for back in range(k):
            src = offset + (local - np.minimum(back, depth)) % size
            out[:, k - 1 - back] = frames[src]
        return out

    def _stack_next(self, indices: np.ndarray, obs: np.ndarray) -> np.ndarray:
        """``obs_next``: the successor's stack, or ``obs`` shifted by one kept-aside frame."""
        size = self._sub_size
        offset = (indices // size) * size
        successor = offset + (indices - offset + 1) % size
        out = self._stack(successor)
        tailed = np.flatnonzero(self._has_tail[indices])
        if len(tailed):
            out[tailed, :-1] = obs[tailed, 1:]
            out[tailed, -1] = np.stack([self._tails[int(indices[r])] for r in tailed])
        return out


def _tianshou_options(frame_stack: int | None, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Tianshou's storage options: only the newest frame of each obs, no obs_next; we stack."""
    if frame_stack is None:
        return kwargs
    if kwargs.get("stack_num", 1) != 1 or kwargs.get("sample_avail"):
        raise ValueError("frame_stack replaces Tianshou's stack_num/sample_avail; do not pass them as well")
    return {**kwargs, "save_only_last_obs": True, "ignore_obs_next": True}


class FrameReplayBuffer(_FrameBufferMixin, VectorReplayBuffer):
    """Uniform replay (see the module docstring).

    :param total_size: transitions over all envs (split evenly, rounded up).
    :param buffer_num: number of envs (one sub-buffer each).
    :param frame_stack: frames per observation for stacked-frame envs (store each frame once);
        None stores observations as they come (plain Tianshou layout).
    :param clip_rewards: store ``sign(reward)`` for learning; reported returns stay unclipped.
    """

    def __init__(
        self,
        total_size: int,
        buffer_num: int,
        *,
        frame_stack: int | None = None,
        clip_rewards: bool = False,
        **kwargs: Any,
    ) -> None:
        kwargs = _tianshou_options(frame_stack, kwargs)
        super().__init__(total_size, buffer_num, **kwargs)
        self._init_extras(frame_stack, clip_rewards)


def set_buffer_beta(buffer: PrioritizedVectorReplayBuffer, beta: float) -> None:
    """Set the importance-sampling exponent that weights sampled transitions.

    Tianshou 2.0.1's ``PrioritizedVectorReplayBuffer.set_beta`` sets it only on the sub-buffers,
    while the weights of a sample come from the vector buffer's own ``_beta``: annealing never
    took effect.
    """
    PrioritizedVectorReplayBuffer.set_beta(buffer, beta)
    buffer._beta = beta


class PrioritizedFrameReplayBuffer(_FrameBufferMixin, PrioritizedVectorReplayBuffer):
    """Prioritized replay (Rainbow) with the same storage as :class:`FrameReplayBuffer`.

    :param alpha: prioritization exponent.
    :param beta: importance-sampling exponent (``set_beta`` anneals it).
    """

    def set_beta(self, beta: float) -> None:
        """Set the importance-sampling exponent so that the next samples use it."""
        set_buffer_beta(self, beta)

    def __init__(
        self,
        total_size: int,
        buffer_num: int,
        *,
        alpha: float = 0.6,
        beta: float = 0.4,
        frame_stack: int | None = None,
        clip_rewards: bool = False,
        **kwargs: Any,
    ) -> None:
        kwargs = _tianshou_options(frame_stack, kwargs)
        super().__init__(total_size, buffer_num, alpha=alpha, beta=beta, **kwargs)
        self._init_extras(frame_stack, clip_rewards)


def make_replay_buffer(
    size: int,
    num_envs: int,
    *,
    prioritized: bool = False,
    alpha: float = 0.6,
    beta: float = 0.4,
    frame_stack: int | None = None,
    clip_rewards: bool = False,
) -> FrameReplayBuffer | PrioritizedFrameReplayBuffer:
    """A vector replay buffer for ``num_envs`` envs holding ``size`` transitions in all.

    :param prioritized: prioritized replay with exponents ``alpha`` and ``beta``.
    :param frame_stack: the env's stack depth for stacked-frame observations (Atari: 4), so each
        frame is stored once; None for ordinary observations.
    :param clip_rewards: store sign-clipped rewards for learning (Atari); reported returns and
        ``raw_rew`` stay unclipped.
    """
    if size < 2 * num_envs:
        raise ValueError(f"buffer size {size} must be at least twice the number of envs ({num_envs})")
    if prioritized:
        return PrioritizedFrameReplayBuffer(
            size, num_envs, alpha=alpha, beta=beta, frame_stack=frame_stack, clip_rewards=clip_rewards
        )
    return FrameReplayBuffer(size, num_envs, frame_stack=frame_stack, clip_rewards=clip_rewards)
