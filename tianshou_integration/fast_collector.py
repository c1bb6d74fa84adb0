"""The training collector: Tianshou's ``Collector`` with a leaner loop for step-count collection.

Tianshou 2.0.1's ``Collector._collect`` does per vector step what any collector must (act, step
the envs, add the transitions to the buffer, reset finished envs, call the hooks), and on top of
that builds ``Batch`` objects through ``Batch``'s general conversion, which turns the array of info
dicts into a ``Batch`` one dict at a time (about 150 µs a vector step, the largest single cost
of collecting after the policy and the envs), shallow-copies four objects, and keeps per-step
statistics of the policy's action distribution. :class:`FastCollector` overrides ``_collect``,
the method Tianshou's ``BaseCollector`` leaves to its subclasses, for the case the training loop
uses (``collect(n_step=...)``, no rendering): the same steps in the same order, with the same
calls on the policy, the envs, the random action spaces, the buffer and the hooks, so a seeded run
writes the same replay buffer and the same ``metrics.csv``
(``tests/tianshou/test_speed_invariance.py``); its batches are built directly from their arrays.

Two things differ, neither read by anything here: the ``CollectStats`` hold the steps, episodes,
returns and lengths, not the standard deviations of the action distribution that Tianshou gathers
for stochastic policies; and the step batch handed to the ``on_step_hook`` has no ``dist`` field
(Tianshou drops it before the buffer too; the action batch still carries it). Episode-count
collection (evaluation), rendering, and the plain path (``LLM_EXPLORER_FAST=0``) run Tianshou's
own loop.
"""

from __future__ import annotations

from copy import copy
from typing import Any

import numpy as np
from tianshou.data import Batch, Collector, CollectStats
from tianshou.data.collector import _dict_of_arr_to_arr_of_dicts
from tianshou.data.utils.converter import to_numpy

from . import fast
from .fast import direct_batch

__all__ = ["FastCollector"]


def _info(info_array: np.ndarray) -> Any:
    """The per-step info as the step batch stores it: built directly when the infos are flat dicts
    of scalars, else the array of dicts for ``Batch`` to convert."""
    flat = fast.flat_info_batch(info_array)
    return flat if flat is not None else info_array


class FastCollector(Collector):
    """A ``Collector`` whose step-count collection skips ``Batch``'s general conversions (see the
    module's docstring). Constructed, configured and checkpointed exactly like Tianshou's."""

    def _collect(self, n_step: int | None = None, n_episode: int | None = None, random: bool = False,
                 render: float | None = None, gym_reset_kwargs: dict[str, Any] | None = None) -> CollectStats:
        if (not fast.enabled() or n_step is None or render or self.env.is_async
                or self._pre_collect_obs_RO is None or self._pre_collect_info_R is None):
            return super()._collect(n_step=n_step, n_episode=n_episode, random=random, render=render,
                                    gym_reset_kwargs=gym_reset_kwargs)
        ready = np.arange(self.env_num)
        stats = self.collect_stats_class()
        last_obs, last_info = self._pre_collect_obs_RO, self._pre_collect_info_R
        last_hidden = self._pre_collect_hidden_state_RH
        while True:
            act, act_normalized, policy_entry, dist, hidden = self._act(random, ready, last_obs, last_info,
                                                                        last_hidden)
            obs_next, rew, terminated, truncated, info = self.env.step(act_normalized, ready)
            if isinstance(info, dict):  # EnvPool: a dict of arrays
                info = _dict_of_arr_to_arr_of_dicts(info)
            done = np.logical_or(terminated, truncated)
            step = direct_batch({"obs": last_obs, "act": act, "policy": policy_entry, "obs_next": obs_next,
                                 "rew": rew, "terminated": terminated, "truncated": truncated, "done": done,
                                 "info": _info(info)})
            if self._on_step_hook is not None:
                action_batch = direct_batch({"act": act, "act_normalized": act_normalized,
                                             "policy_entry": policy_entry, "dist": dist, "hidden_state": hidden})
                self.run_on_step_hook(action_batch, step)
            stats.n_collected_steps += len(ready)
            inserted, ep_return, _, ep_start = self.buffer.add(step, buffer_ids=ready)
            # the next step's inputs, modified in place below: copies, as Tianshou's collector makes
            last_obs, last_info, last_hidden = copy(obs_next), copy(info), copy(hidden)
            if done.any():
                finished = np.flatnonzero(done)
                obs_reset, info_reset = self.env.reset(env_id=ready[finished], **(gym_reset_kwargs or {}))
                self._reset_hidden_state_based_on_type(finished, last_hidden)
                for local in finished:
                    start, stop = int(ep_start[local]), int(inserted[local] + 1)
                    episode = self.buffer[self.buffer.get_buffer_indices(start, stop)]
                    if self.run_on_episode_done(episode) is not None:
                        raise ValueError("an on_episode_done_hook that returns values to add to the buffer "
                                         "needs episode-count collection (n_episode)")
                    stats.update_at_episode_done(episode_batch=episode, episode_return=ep_return[local])
                last_obs[finished] = obs_reset
                last_info[finished] = info_reset
            if stats.n_collected_steps >= n_step:
                break
        self.collect_step += stats.n_collected_steps
        self.collect_episode += stats.n_collected_episodes
        self._pre_collect_obs_RO, self._pre_collect_info_R = last_obs, last_info
        self._pre_collect_hidden_state_RH = last_hidden
        return stats

    def _act(self, random: bool, ready: np.ndarray, obs: np.ndarray, info: np.ndarray,
             hidden: Any) -> tuple[Any, Any, Batch, Any, Any]:
        """Tianshou's ``_compute_action_policy_hidden`` without the ``Batch`` around its result:
        (action, normalised action, the policy's buffer entry, its distribution, hidden state)."""
        if random:
            computed = self._compute_action_policy_hidden(random=True, ready_env_ids_R=ready, last_obs_RO=obs,
                                                          last_info_R=info, last_hidden_state_RH=hidden)
            return computed.act, computed.act_normalized, computed.policy_entry, None, None
        obs_batch = direct_batch({"obs": obs, "info": fast.policy_info_batch(info)})
        result = self.policy(obs_batch, hidden)
        act = to_numpy(result.act)
        if self.exploration_noise:
            act = self.policy.add_exploration_noise(act, obs_batch)
        act_normalized = self.policy.map_action(act)
        policy_entry = result.get("policy", Batch())
        if not isinstance(policy_entry, Batch):
            raise RuntimeError(f"The policy result should be a {Batch}, but got {type(policy_entry)}")
        state = result.get("state", None)
        if state is not None:
            policy_entry.hidden_state = state  # stored in the buffer, as Tianshou's collector does
        return act, act_normalized, policy_entry, result.get("dist"), state
