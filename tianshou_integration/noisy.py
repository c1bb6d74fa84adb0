"""NoisyNet-DQN (Fortunato et al., ICLR 2018): ``--algo noisy-dqn``, an exploration baseline.

DQN whose Q-network has factorised-Gaussian noisy linear layers (Tianshou's ``NoisyLinear``)
instead of ε-greedy: the presets set ε to 0, so every action is the greedy action of a freshly
perturbed network. The noise is

* resampled for every forward pass made while collecting for training, by
  :class:`~tianshou_integration.discrete.NoisyCollectionMixin` (a base of the guided policy
  used here), i.e. once per vector step;
* resampled before every gradient step, independently for the online and the target network
  (:class:`NoisyDQN`, as Tianshou's ``RainbowDQN`` does: the target network keeps its noise on);
* off in greedy evaluation, which uses the mean weights and is deterministic.

There is no ε-random draw for an LLM to steer, so the guided draw is a no-op for this algorithm:
the builder never attaches the exploration cache (an LLM configured for it is asked, but its
answers change nothing). It is a baseline arm: compare it with the LLM-guided arms of the other
DQN-family algorithms. Setting ``algorithm.epsilon`` above 0 adds Tianshou's uniform ε-greedy on
top (the authors' ``Noisy_DQN.py`` did that, with ε from 1 down to 0.1).
"""

from __future__ import annotations

from tianshou.algorithm import DQN
from tianshou.algorithm.modelfree.reinforce import SimpleLossTrainingStats
from tianshou.data.types import RolloutBatchProtocol
from tianshou.utils.lagged_network import EvalModeModuleWrapper
from tianshou.utils.net.discrete import NoisyLinear
from torch import nn

__all__ = ["NoisyDQN", "sample_noise"]


def sample_noise(model: nn.Module) -> int:
    """Draw fresh noise in every ``NoisyLinear`` layer of ``model``; returns how many there are."""
    layers = [m for m in model.modules() if isinstance(m, NoisyLinear)]
    for layer in layers:
        layer.sample()
    return len(layers)


class NoisyDQN(DQN):
    """Tianshou's DQN for a Q-network with ``NoisyLinear`` layers.

    Takes DQN's arguments. The target network is kept out of Tianshou's eval-mode wrapper so that
    its noisy layers perturb the bootstrap target, and both networks get fresh noise before each
    gradient step (NoisyNet-DQN's independent ε and ε′).
    """

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        if isinstance(self.model_old, EvalModeModuleWrapper):
            self.model_old = self.model_old.module  # type: ignore[assignment]
            self.model_old.train()  # the wrapper put it in eval mode, where noisy layers are off

    def _update_with_batch(self, batch: RolloutBatchProtocol) -> SimpleLossTrainingStats:
        sample_noise(self.policy.model)
        if self.model_old is not None:
            sample_noise(self.model_old)
        return super()._update_with_batch(batch)
