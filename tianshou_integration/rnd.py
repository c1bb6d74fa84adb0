"""RND-DQN: DQN with a random-network-distillation intrinsic reward (Burda et al., "Exploration by
Random Network Distillation", 2018): ``--algo rnd-dqn``, an exploration baseline.

A fixed, randomly initialised *target* network maps an observation to a feature vector; a
*predictor* network learns to reproduce it. Its error is small on observations like those it has
been trained on and large on new ones: that error is the intrinsic reward. As in the RND paper:

* observations are normalised with a running mean and standard deviation per element and clipped
  to ``[-obs_clip, obs_clip]`` (±5) before either network sees them; Atari frames are reduced to
  the newest frame of the stack (the paper's input);
* the intrinsic reward is divided by a running standard deviation of the discounted *intrinsic
  returns* (discount ``rnd.gamma``, 0.99), accumulated per training environment along the
  collected trajectories, so its scale does not depend on the environment.

How it fits an off-policy learner (the RND paper used PPO): the running statistics are updated
while collecting for training (:class:`RNDDQNPolicy` hands every observation it acts on to
:meth:`RandomNetworkDistillation.observe`; greedy evaluation does not), and at each gradient step
the sampled transitions get the predictor's *current* error on their next observation, scaled as
above, as intrinsic reward. The learning target is the n-step return of
``r_extrinsic + rnd.coef * r_intrinsic`` (Tianshou's n-step return reads the rewards from the
replay buffer, so the intrinsic part is added here with the same discounting and episode ends);
the predictor takes one Adam step on the same batch. The replay buffer, the training returns and
what the LLM reads keep the game's own rewards.

Exploration is still ε-greedy, so an LLM can guide the ε-random draw exactly as for DQN
(:class:`RNDDQNPolicy` is a :class:`~tianshou_integration.discrete.GuidedDQNPolicy`).

Checkpoints: the networks and the predictor's optimiser are in the algorithm's ``state_dict``; the
running normalisers and the per-environment intrinsic returns travel as the module's extra state
(:meth:`RandomNetworkDistillation.get_extra_state`, built from :meth:`RunningNormaliser.get_state`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from tianshou.algorithm import DQN
from tianshou.algorithm.modelfree.reinforce import SimpleLossTrainingStats
from tianshou.algorithm.optim import OptimizerFactory
from tianshou.data import ReplayBuffer
from tianshou.data.types import BatchWithReturnsProtocol, RolloutBatchProtocol
from tianshou.utils.net.common import Net
from tianshou.utils.statistics import RunningMeanStd
from torch import nn

from .discrete import GuidedDQNPolicy
from .networks import NatureTorso

__all__ = [
    "RNDDQN",
    "RNDDQNPolicy",
    "RandomNetworkDistillation",
    "RunningNormaliser",
    "build_rnd",
]


class RunningNormaliser(RunningMeanStd):
    """Tianshou's ``RunningMeanStd`` (parallel-variance updates, optional clipping) whose whole state
    is explicit: :meth:`get_state` / :meth:`set_state` (for checkpoints)."""

    def get_state(self) -> dict[str, Any]:
        """Mean, variance and count (copies)."""
        return {"mean": np.copy(self.mean), "var": np.copy(self.var), "count": self.count}

    def set_state(self, state: dict[str, Any]) -> None:
        """Put back what :meth:`get_state` returned."""
        self.mean, self.var, self.count = np.copy(state["mean"]), np.copy(state["var"]), state["count"]

    @property
    def std(self) -> np.ndarray:
        """The running standard deviation (with the ε that ``norm`` uses)."""
        return np.sqrt(self.var + self.eps)


class _ConvFeatures(nn.Module):
    """The Nature DQN convolutions on normalised float frames, then a fully connected head."""

    def __init__(self, in_channels: int, height: int, width: int, hidden: Sequence[int], out_dim: int) -> None:
        super().__init__()
        torso = NatureTorso(in_channels, height, width)
        self.convs = torso.convs  # not the torso's forward, which divides by 255
        layers: list[nn.Module] = []
        last = torso.output_dim
        for width_ in hidden:
            layers += [nn.Linear(last, width_), nn.ReLU(inplace=True)]
            last = width_
        layers.append(nn.Linear(last, out_dim))
        self.head = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.convs(x))


class _MLPFeatures(nn.Module):
    """Tianshou's ``Net`` as a plain ``x -> features`` module."""

    def __init__(self, in_dim: int, hidden: Sequence[int], out_dim: int) -> None:
        super().__init__()
        self.net = Net(state_shape=in_dim, action_shape=out_dim, hidden_sizes=list(hidden))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)[0]


class RandomNetworkDistillation(nn.Module):
    """Target and predictor networks with the RND paper's normalisations.

    :param target: the fixed random network (its parameters are frozen here).
    :param predictor: the network trained to reproduce ``target``'s output.
    :param frames: for stacked frames ``(B, C, H, W)``, use only the newest frame (``C`` = 1 after
        selection); False: observations are flattened to vectors.
    :param gamma: discount of the intrinsic returns whose running std scales the reward.
    :param obs_clip: normalised observations are clipped to ``[-obs_clip, obs_clip]``.
    """

    def __init__(self, target: nn.Module, predictor: nn.Module, *, frames: bool, gamma: float = 0.99,
                 obs_clip: float = 5.0) -> None:
        super().__init__()
        self.target, self.predictor = target, predictor
        for p in self.target.parameters():
            p.requires_grad_(False)
        self.frames = frames
        self.gamma = float(gamma)
        self.obs_norm = RunningNormaliser(clip_max=obs_clip)
        self.return_norm = RunningNormaliser(clip_max=None)
        self._returns: np.ndarray | None = None  # running intrinsic return of each training env

    # ------------------------------------------------------------------ observations
    def select(self, obs: Any) -> np.ndarray:
        """What RND looks at: the newest frame ``(B, 1, H, W)`` of stacked frames, else the
        observation flattened to ``(B, D)``; float64."""
        x = np.asarray(obs)
        if self.frames:
            return x[:, -1:].astype(np.float64)
        return x.reshape(len(x), -1).astype(np.float64)

    def _normalised(self, obs: Any) -> torch.Tensor:
        x = self.obs_norm.norm(self.select(obs))
        device = next(self.predictor.parameters()).device
        return torch.as_tensor(x, dtype=torch.float32, device=device)

    def error(self, obs: Any) -> torch.Tensor:
        """Mean squared prediction error per observation, shape ``(B,)``, with a graph to the
        predictor (the training loss is its mean)."""
        x = self._normalised(obs)
        with torch.no_grad():
            wanted = self.target(x)
        return (self.predictor(x) - wanted).pow(2).mean(dim=1)

    def scale(self) -> float:
        """The running standard deviation of the intrinsic returns (the reward's divisor)."""
        return float(self.return_norm.std) if self.return_norm.count else 1.0

    def intrinsic_reward(self, obs: Any) -> np.ndarray:
        """The normalised intrinsic reward of arriving at ``obs``: prediction error / running
        std of the intrinsic returns. Shape ``(B,)``; changes nothing."""
        with torch.no_grad():
            err = self.error(obs).cpu().numpy().astype(np.float64)
        return err / self.scale()

    def observe(self, obs: Any) -> None:
        """A vector step's observations, one per training env, while collecting: update the
        observation normaliser with them, then each env's discounted intrinsic return with its
        error, then the return normaliser with those returns."""
        x = self.select(obs)
        self.obs_norm.update(x)
        with torch.no_grad():
            err = self.error(obs).cpu().numpy().astype(np.float64)
        if self._returns is None or len(self._returns) != len(err):
            self._returns = np.zeros(len(err))
        self._returns = self._returns * self.gamma + err
        self.return_norm.update(self._returns)

    # ------------------------------------------------------------------ state
    def get_state(self) -> dict[str, Any]:
        """The running statistics (not the networks): both normalisers and the per-env returns."""
        return {"obs_norm": self.obs_norm.get_state(), "return_norm": self.return_norm.get_state(),
                "returns": None if self._returns is None else np.copy(self._returns)}

    def set_state(self, state: dict[str, Any]) -> None:
        """Put back what :meth:`get_state` returned."""
        self.obs_norm.set_state(state["obs_norm"])
        self.return_norm.set_state(state["return_norm"])
        self._returns = None if state["returns"] is None else np.copy(state["returns"])

    def get_extra_state(self) -> dict[str, Any]:
        """PyTorch's hook: :meth:`get_state` travels in ``state_dict`` (so in every checkpoint)."""
        return self.get_state()

    def set_extra_state(self, state: dict[str, Any]) -> None:
        """PyTorch's hook: ``load_state_dict`` restores :meth:`get_state`."""
        self.set_state(state)


def build_rnd(obs_shape: Sequence[int], *, atari: bool, hidden_sizes: Sequence[int], out_dim: int = 512,
              gamma: float = 0.99, obs_clip: float = 5.0,
              device: str | torch.device = "cpu") -> RandomNetworkDistillation:
    """The RND module for observations of ``obs_shape``.

    Atari frames ``(C, H, W)``: the Nature DQN convolutions on the newest frame under a linear
    layer (target) or three (predictor, 512 units wide: the RND paper's deeper predictor).
    Vectors: Tianshou ``Net`` MLPs of ``hidden_sizes`` (target) and one more layer (predictor).
    """
    if atari:
        _, h, w = (int(v) for v in obs_shape)
        target: nn.Module = _ConvFeatures(1, h, w, (), out_dim)
        predictor: nn.Module = _ConvFeatures(1, h, w, (512, 512), out_dim)
    else:
        in_dim = int(np.prod(obs_shape))
        hidden = list(hidden_sizes)
        target = _MLPFeatures(in_dim, hidden, out_dim)
        predictor = _MLPFeatures(in_dim, [*hidden, hidden[-1]], out_dim)
    return RandomNetworkDistillation(target, predictor, frames=atari, gamma=gamma, obs_clip=obs_clip).to(device)


class RNDDQNPolicy(GuidedDQNPolicy):
    """The guided DQN policy that hands every observation it acts on while collecting for training
    to ``observer`` (RND's running statistics). Evaluation and gradient steps do not.

    The hook is ``add_exploration_noise``, which Tianshou's collector calls once per vector step
    with the observations acted on, and only there (not in gradient steps, whatever the modules'
    train/eval mode); outside a training step (evaluation) nothing is observed.
    """

    observer: Callable[[Any], None] | None = None

    def add_exploration_noise(self, act: Any, batch: Any) -> Any:
        """``observer(batch.obs)`` while collecting for training, then the guided ε-greedy."""
        if self.is_within_training_step and self.observer is not None:
            self.observer(batch.obs)
        return super().add_exploration_noise(act, batch)


class RNDDQN(DQN):
    """Tianshou's DQN learning from ``r + coef * r_intrinsic`` (see the module docstring).

    :param rnd: the RND module (a sub-module: saved with the algorithm).
    :param rnd_optim: optimiser factory for the predictor.
    :param intrinsic_coef: weight of the normalised intrinsic reward.
    The other arguments are DQN's; ``policy`` must be an :class:`RNDDQNPolicy`.
    """

    def __init__(self, *, policy: RNDDQNPolicy, rnd: RandomNetworkDistillation, rnd_optim: OptimizerFactory,
                 intrinsic_coef: float, **kwargs: Any) -> None:
        super().__init__(policy=policy, **kwargs)
        self.rnd = rnd
        self.rnd_optim = self._create_optimizer(rnd.predictor, rnd_optim)
        self.intrinsic_coef = float(intrinsic_coef)
        policy.observer = rnd.observe
        self._rnd_loss: torch.Tensor | None = None

    def _preprocess_batch(self, batch: RolloutBatchProtocol, buffer: ReplayBuffer,
                          indices: np.ndarray) -> BatchWithReturnsProtocol:
        out = super()._preprocess_batch(batch, buffer, indices)  # n-step return of the extrinsic rewards
        error = self.rnd.error(batch.obs_next)
        self._rnd_loss = error.mean()
        if self.intrinsic_coef > 0:
            first = error.detach().cpu().numpy().astype(np.float64) / self.rnd.scale()
            intrinsic = self.intrinsic_nstep_return(first, buffer, indices)
            returns = out.returns
            out.returns = returns + torch.as_tensor(self.intrinsic_coef * intrinsic, dtype=returns.dtype,
                                                    device=returns.device).reshape(returns.shape)
        return out

    def intrinsic_nstep_return(self, first: np.ndarray, buffer: ReplayBuffer, indices: np.ndarray) -> np.ndarray:
        """``sum_{i < n} gamma^i r_int(t+i)``, cut at episode ends exactly as Tianshou cuts the
        extrinsic n-step return; ``first`` is ``r_int(t)`` of the sampled transitions."""
        stacked = [indices]
        for _ in range(self.n_step - 1):
            stacked.append(buffer.next(stacked[-1]))
        end = buffer.done.copy()
        end[buffer.unfinished_index()] = True
        total = np.zeros(len(indices))
        for n in range(self.n_step - 1, -1, -1):
            now = stacked[n]
            total[end[now] > 0] = 0.0
            reward = first if n == 0 else self.rnd.intrinsic_reward(buffer[now].obs_next)
            total = reward + self.gamma * total
        return total

    def _update_with_batch(self, batch: RolloutBatchProtocol) -> SimpleLossTrainingStats:
        stats = super()._update_with_batch(batch)
        if self._rnd_loss is not None:
            self.rnd_optim.step(self._rnd_loss)
            self._rnd_loss = None
        return stats
