"""Convolutional Q-networks for Atari: the Nature DQN torso under the DQN family's heads.

``build_atari_q_network(algo, obs_shape, n_actions)`` returns a module whose
``forward(obs, state=None, info=None)`` gives ``(output, state)`` as Tianshou 2.0's policies expect:

==================  ====================================  =====================================
algo                output                                policy
==================  ====================================  =====================================
dqn, double-dqn     Q values ``(B, n)``                   ``DiscreteQLearningPolicy``
rnd-dqn, icm-dqn    Q values ``(B, n)``                   ``DiscreteQLearningPolicy``
noisy-dqn           Q values, noisy head                  ``DiscreteQLearningPolicy``
dueling-dqn         Q = V + A - mean(A), ``(B, n)``       ``DiscreteQLearningPolicy``
c51                 probabilities ``(B, n, atoms)``       ``C51Policy``
qrdqn               quantiles ``(B, n, N)``               ``QRDQNPolicy``
rainbow             dueling, noisy, probabilities         ``C51Policy`` (``RainbowDQN``)
==================  ====================================  =====================================

Observations are uint8 frames ``(B, C, 84, 84)`` (numpy or torch); the network scales them by
1/255 itself, so the replay buffer can keep uint8. The torso is the Nature DQN one (Mnih et al.
2015): conv 32 8×8/4, conv 64 4×4/2, conv 64 3×3/1, each with ReLU. The plain and distributional
heads put one 512-unit layer on top; the dueling heads (dueling-dqn, rainbow) give the value and
the advantage stream a 512-unit layer each, as in Wang et al. 2016 and Tianshou's ``RainbowNet``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from tianshou.utils.net.common import ActionReprNetWithVectorOutput
from tianshou.utils.net.discrete import NoisyLinear
from torch import nn

__all__ = [
    "ATARI_Q_ALGOS",
    "AtariQNetwork",
    "NatureTorso",
    "ResampledNoisyLinear",
    "build_atari_q_network",
]

ATARI_Q_ALGOS = ("dqn", "double-dqn", "dueling-dqn", "c51", "qrdqn", "rainbow", "noisy-dqn", "rnd-dqn",
                 "icm-dqn")


class ResampledNoisyLinear(NoisyLinear):
    """Tianshou's factorised-Gaussian ``NoisyLinear`` that draws fresh noise on every forward in
    train mode; eval mode uses the mean weights only.

    Being a ``NoisyLinear``, ``RainbowDQN`` still finds it and resamples it before each update.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The layer's output, with fresh noise in train mode."""
        if self.training:
            with torch.no_grad():
                self.sample()
        return super().forward(x)


class FrameTorso(nn.Module):
    """Convolutions on uint8 frames ``(B, C, H, W)`` scaled to [0, 1], flattened; subclasses give
    the layers (:meth:`layers`). ``output_dim`` is measured on a blank frame of the given size."""

    def __init__(self, in_channels: int, height: int = 84, width: int = 84) -> None:
        super().__init__()
        self.convs = nn.Sequential(*self.layers(in_channels), nn.Flatten())
        with torch.no_grad():
            self.output_dim = int(self.convs(torch.zeros(1, in_channels, height, width)).shape[1])

    @staticmethod
    def layers(in_channels: int) -> list[nn.Module]:
        """The convolutions and activations, before flattening."""
        raise NotImplementedError

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """Convolution features of ``frames`` (uint8 scaled to [0, 1])."""
        if frames.dtype == torch.uint8:  # a fresh float tensor: scaled in place, one pass less (same values)
            return self.convs(frames.float().div_(255.0))
        return self.convs(frames.float() / 255.0)


class NatureTorso(FrameTorso):
    """The Nature DQN convolutions on uint8 frames ``(B, C, H, W)``; output ``(B, conv_dim)``.

    :param in_channels: stacked frames per observation.
    :param height, width: frame size (84×84 gives ``conv_dim`` 3136).
    """

    @staticmethod
    def layers(in_channels: int) -> list[nn.Module]:
        """Nature DQN: conv 32 8×8/4, conv 64 4×4/2, conv 64 3×3/1, each followed by ReLU."""
        return [nn.Conv2d(in_channels, 32, kernel_size=8, stride=4), nn.ReLU(inplace=True),
                nn.Conv2d(32, 64, kernel_size=4, stride=2), nn.ReLU(inplace=True),
                nn.Conv2d(64, 64, kernel_size=3, stride=1), nn.ReLU(inplace=True)]


def _mlp(in_dim: int, hidden: int, out_dim: int, noisy_std: float | None) -> nn.Sequential:
    def linear(a: int, b: int) -> nn.Module:
        return nn.Linear(a, b) if noisy_std is None else ResampledNoisyLinear(a, b, noisy_std)

    return nn.Sequential(linear(in_dim, hidden), nn.ReLU(inplace=True), linear(hidden, out_dim))


class AtariQNetwork(ActionReprNetWithVectorOutput[Any]):
    """Nature torso plus a Q head. Use :func:`build_atari_q_network` rather than this directly.

    :param obs_shape: ``(frames, height, width)``.
    :param n_actions: number of discrete actions.
    :param num_atoms: outputs per action: 1 gives ``(B, n)``; more gives ``(B, n, num_atoms)``
        (C51/Rainbow atoms or QRDQN quantiles).
    :param softmax: softmax over the atoms (C51, Rainbow).
    :param dueling: separate value and advantage streams, combined as V + A - mean(A).
    :param noisy_std: sigma0 of noisy linear layers in the head; None for plain linear layers.
    :param features: width of the hidden layer of each stream.
    """

    def __init__(
        self,
        obs_shape: Sequence[int],
        n_actions: int,
        *,
        num_atoms: int = 1,
        softmax: bool = False,
        dueling: bool = False,
        noisy_std: float | None = None,
        features: int = 512,
    ) -> None:
        if len(obs_shape) != 3:
            raise ValueError(f"expected an observation shape (frames, height, width), got {tuple(obs_shape)}")
        if num_atoms < 1:
            raise ValueError(f"num_atoms must be at least 1, got {num_atoms}")
        super().__init__(output_dim=n_actions * num_atoms)
        self.n_actions, self.num_atoms = int(n_actions), int(num_atoms)
        self.softmax, self.dueling = softmax, dueling
        c, h, w = (int(x) for x in obs_shape)
        self.torso = NatureTorso(c, h, w)
        conv_dim = self.torso.output_dim
        self.advantage = _mlp(conv_dim, features, self.n_actions * self.num_atoms, noisy_std)
        self.value = _mlp(conv_dim, features, self.num_atoms, noisy_std) if dueling else None

    def forward(
        self,
        obs: np.ndarray | torch.Tensor,
        state: Any = None,
        info: Any = None,
    ) -> tuple[torch.Tensor, Any]:
        """Map uint8 frames ``(B, C, H, W)`` to ``(B, n)`` or ``(B, n, atoms)``; ``state`` is passed through."""
        device = next(self.parameters()).device
        frames = torch.as_tensor(obs, device=device)
        hidden = self.torso(frames)
        out = self.advantage(hidden).view(-1, self.n_actions, self.num_atoms)
        if self.value is not None:
            value = self.value(hidden).view(-1, 1, self.num_atoms)
            out = value + out - out.mean(dim=1, keepdim=True)
        if self.softmax:
            out = out.softmax(dim=-1)
        if self.num_atoms == 1:
            out = out.squeeze(-1)
        return out, state


def build_atari_q_network(
    algo: str,
    obs_shape: Sequence[int],
    n_actions: int,
    *,
    num_atoms: int = 51,
    num_quantiles: int = 200,
    noisy_std: float = 0.1,
    features: int = 512,
    device: str | torch.device = "cpu",
) -> AtariQNetwork:
    """The Q-network for ``algo`` (one of :data:`ATARI_Q_ALGOS`), on ``device``.

    :param num_atoms: atoms of the C51/Rainbow support (the policy needs the same number).
    :param num_quantiles: quantiles of QRDQN (the algorithm needs the same number).
    :param noisy_std: sigma0 of the noisy layers of Rainbow and noisy-dqn.
    :param features: hidden width of the head.
    """
    kwargs: dict[str, Any]
    if algo in ("dqn", "double-dqn", "rnd-dqn", "icm-dqn"):
        kwargs = {}
    elif algo == "noisy-dqn":
        kwargs = {"noisy_std": noisy_std}
    elif algo == "dueling-dqn":
        kwargs = {"dueling": True}
    elif algo == "c51":
        kwargs = {"num_atoms": num_atoms, "softmax": True}
    elif algo == "qrdqn":
        kwargs = {"num_atoms": num_quantiles}
    elif algo == "rainbow":
        kwargs = {"num_atoms": num_atoms, "softmax": True, "dueling": True, "noisy_std": noisy_std}
    else:
        raise ValueError(f"no Atari network for algorithm {algo!r}; available: {', '.join(ATARI_Q_ALGOS)}")
    return AtariQNetwork(obs_shape, n_actions, features=features, **kwargs).to(device)
