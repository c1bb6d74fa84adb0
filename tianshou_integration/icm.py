"""ICM-DQN: DQN with the Intrinsic Curiosity Module (Pathak et al., ICML 2017), ``--algo icm-dqn``,
an exploration baseline built on Tianshou's ``ICMOffPolicyWrapper``.

The module learns features ``phi`` with an inverse model (which action led from ``s`` to ``s'``)
and a forward model (``phi(s'))`` from ``phi(s)`` and the action); the forward model's error
``0.5 * ||phi_hat(s') - phi(s')||^2`` times ``icm.reward_scale`` is the intrinsic reward. Its loss,
``(1 - beta) * inverse + beta * forward`` (``beta``: ``icm.forward_loss_weight``), times
``icm.lr_scale``, takes one Adam step per gradient step, as in Tianshou's wrapper.

A fix over the stock wrapper: it adds the intrinsic reward to ``batch.rew``, but Tianshou 2.0.1's
n-step return reads the rewards from the replay buffer (``compute_nstep_return`` ->
``buffer.rew``), so for DQN the curiosity reward never reaches the learning target.
:class:`ICMDQN` adds it to the n-step returns itself, discounted and cut at episode ends like the
game's reward. The replay buffer and the reported returns keep the game's rewards.

A second fix: the wrapper's ``state_dict`` holds the wrapped DQN's optimiser under a key Tianshou's
``load_state_dict`` rejects; :meth:`ICMDQN.load_state_dict` loads it (checkpoints and ``--resume``).

Exploration is DQN's ε-greedy, guided like DQN's when an LLM is configured.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from tianshou.algorithm.modelbased.icm import ICMOffPolicyWrapper
from tianshou.data import ReplayBuffer, to_numpy
from tianshou.data.types import RolloutBatchProtocol
from tianshou.utils.net.common import MLP
from tianshou.utils.net.discrete import IntrinsicCuriosityModule

from .networks import NatureTorso

__all__ = ["ICMDQN", "build_icm"]


def build_icm(obs_shape: Sequence[int], n_actions: int, *, atari: bool, hidden_sizes: Sequence[int],
              device: str | torch.device = "cpu") -> IntrinsicCuriosityModule:
    """Tianshou's ``IntrinsicCuriosityModule`` with the Nature DQN convolutions as features for Atari
    frames (scaled from uint8 inside), an MLP of ``hidden_sizes`` for vectors; forward and inverse
    models with one hidden layer of ``hidden_sizes[-1]`` units."""
    if atari:
        c, h, w = (int(v) for v in obs_shape)
        features: torch.nn.Module = NatureTorso(c, h, w)
        dim = features.output_dim  # type: ignore[assignment]
    else:
        dim = int(hidden_sizes[-1])
        features = MLP(input_dim=int(np.prod(obs_shape)), output_dim=dim, hidden_sizes=list(hidden_sizes[:-1]))
    return IntrinsicCuriosityModule(feature_net=features, feature_dim=int(dim), action_dim=n_actions,
                                    hidden_sizes=[int(hidden_sizes[-1])]).to(device)


class ICMDQN(ICMOffPolicyWrapper):
    """Tianshou's ICM wrapper around DQN whose curiosity reward reaches the n-step targets (see the
    module docstring), and whose ``state_dict`` loads back. Takes the wrapper's arguments."""

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False) -> Any:
        """Tianshou's ``Algorithm.load_state_dict`` takes only its own optimisers' states out of
        ``state_dict``; the wrapped DQN's (``wrapped_algorithm._optimizers``, which ``state_dict``
        writes) would be an unexpected key. They are loaded into the wrapped DQN's optimiser here."""
        state = dict(state_dict)
        inner = state.pop(f"wrapped_algorithm.{self._STATE_DICT_KEY_OPTIMIZERS}", None)
        result = super().load_state_dict(state, strict=strict, assign=assign)
        if inner is not None:
            for optim, optim_state in zip(self.wrapped_algorithm._optimizers, inner, strict=True):
                optim.load_state_dict(optim_state)
        return result

    def _preprocess_batch(self, batch: RolloutBatchProtocol, buffer: ReplayBuffer,
                          indices: np.ndarray) -> RolloutBatchProtocol:
        self._icm_preprocess_batch(batch)  # the ICM forward pass (with its graph, for the ICM loss)
        out = self.wrapped_algorithm._preprocess_batch(batch, buffer, indices)
        if self.reward_scale > 0:
            first = to_numpy(batch.policy.mse_loss).astype(np.float64) * self.reward_scale
            extra = self.intrinsic_nstep_return(first, buffer, indices)
            returns = out.returns  # type: ignore[attr-defined]
            out.returns = returns + torch.as_tensor(extra, dtype=returns.dtype,  # type: ignore[attr-defined]
                                                    device=returns.device).reshape(returns.shape)
        return out

    def intrinsic_nstep_return(self, first: np.ndarray, buffer: ReplayBuffer, indices: np.ndarray) -> np.ndarray:
        """``sum_{i < n} gamma^i r_int(t+i)``, cut at episode ends as Tianshou cuts the extrinsic
        n-step return; ``first`` is ``r_int(t)`` of the sampled transitions."""
        algo = self.wrapped_algorithm
        n_step, gamma = algo.n_step, algo.gamma  # type: ignore[attr-defined]
        stacked = [indices]
        for _ in range(n_step - 1):
            stacked.append(buffer.next(stacked[-1]))
        end = buffer.done.copy()
        end[buffer.unfinished_index()] = True
        total = np.zeros(len(indices))
        for n in range(n_step - 1, -1, -1):
            now = stacked[n]
            total[end[now] > 0] = 0.0
            if n == 0:
                reward = first
            else:
                step = buffer[now]
                with torch.no_grad():
                    error, _ = self.model(step.obs, step.act, step.obs_next)
                reward = to_numpy(error).astype(np.float64) * self.reward_scale
            total = reward + gamma * total
        return total
