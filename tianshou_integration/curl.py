"""CURL: contrastive unsupervised representations on data-efficient Rainbow, for Atari.

Srinivas, Laskin and Abbeel, *CURL: Contrastive Unsupervised Representations for Reinforcement
Learning* (ICML 2020), on the data-efficient Rainbow of van Hasselt, Hessel and Aslanides, *When
to use parametric models in reinforcement learning?* (NeurIPS 2019). The structure and the
constants follow the CURL authors' Atari code (``aravindsrinivas/curl_rainbow``), which
LLM-Explorer's authors reuse unchanged for their CURL and CURL+LLM runs
(``haohaoqian/LLM-Explorer``, ``atari_code/CURL*``):

* **Encoder** (:class:`DataEfficientTorso`): data-efficient Rainbow's two convolutions, 32 5×5
  stride 5 and 64 5×5 stride 5 with ReLU; 576 features for an 84×84 stack of 4 frames.
* **Q head**: dueling, distributional (C51 atoms) and noisy, as our Rainbow's
  (:class:`~tianshou_integration.networks.ResampledNoisyLinear`: fresh noise on every forward pass
  in train mode, mean weights in eval mode).
* **Contrastive head** (:class:`ContrastiveHead`) on the same encoder features: linear,
  LayerNorm, ReLU, linear to a 128-dimensional code, LayerNorm; the bilinear matrix ``W``.
* **Key encoder** (:class:`KeyEncoder`): a copy of the encoder and the contrastive head, never
  trained by gradient; after every gradient step ``θ_k ← m θ_k + (1 − m) θ_q`` (MoCo), m = 0.999.
* **Augmentation** (:func:`random_shift`): of each uint8 stack of frames, a random 80×80 crop,
  replicate-padded by 4 pixels and cropped at random back to 84×84; one pair of offsets per
  stack, so its four frames stay aligned. Query and key see two independent shifts of the same
  stacks.
* **Loss** (:class:`CURL`): InfoNCE over the batch with bilinear similarity ``q·W·kᵀ`` (logits
  shifted by their row maximum and scaled by 0.1, as in the authors' code) added to the
  distributional RL loss, both importance-weighted, in one Adam step with the gradient norm
  clipped (10). The RL loss sees the frames as stored, not augmented. The priorities of
  prioritised replay are the per-transition sum of both, as in the authors' code.

:class:`CURL` subclasses :class:`~tianshou_integration.distributional.NStepRainbowDQN`, so the
n-step target (data-efficient Rainbow: n = 20) bootstraps from the right state. Exploration is
the guided ε-greedy of the other DQN-family algorithms (:class:`~tianshou_integration.discrete.
GuidedC51Policy`) plus the noisy layers.

The key encoder is a sub-module of the algorithm and ``W`` one of the Q-network, so the
algorithm's ``state_dict`` (what checkpoints save) holds both; the key encoder has no optimiser.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tianshou.algorithm.algorithm_base import Algorithm, TrainingStats
from tianshou.algorithm.optim import OptimizerFactory
from tianshou.data import to_torch_as
from tianshou.data.types import RolloutBatchProtocol
from tianshou.utils.net.common import ActionReprNetWithVectorOutput
from torch import nn

from explorer_pipeline.cache import ExplorationCache
from explorer_pipeline.errors import UsageError

from . import fast
from .counter import EnvStepCounter
from .discrete import GuidedC51Policy
from .distributional import NStepRainbowDQN
from .networks import FrameTorso, ResampledNoisyLinear

__all__ = [
    "CROP_PAD",
    "CURL",
    "LOGIT_SCALE",
    "ContrastiveHead",
    "CurlQNetwork",
    "CurlTrainingStats",
    "DataEfficientTorso",
    "KeyEncoder",
    "build_curl",
    "info_nce",
    "momentum_update",
    "random_shift",
]

CROP_PAD = 4
"""Pixels of the shift augmentation: crop ``size - 4``, replicate-pad 4, crop ``size`` (the CURL
authors' ``RandomCrop((80, 80)), ReplicationPad2d(4), RandomCrop((84, 84))``)."""

LOGIT_SCALE = 0.1
"""Factor on the InfoNCE logits after the row maximum is subtracted (the CURL authors' code)."""


# --------------------------------------------------------------------------- augmentation
def random_shift(frames: torch.Tensor, pad: int = CROP_PAD, generator: torch.Generator | None = None) -> torch.Tensor:
    """Randomly shifted copies of ``frames`` ``(B, C, H, W)``, same dtype and shape.

    For each of the B stacks: crop ``(H - pad, W - pad)`` at a random offset, pad every side by
    ``pad`` pixels repeating the border, and crop ``(H, W)`` at a random offset. The C frames of a
    stack share the offsets. Offsets are uniform over the ``pad + 1`` positions of each crop
    (``torch`` 's generator, or ``generator``). Works on any dtype (uint8 stays uint8).
    """
    if frames.dim() != 4:
        raise ValueError(f"expected frames (B, C, H, W), got shape {tuple(frames.shape)}")
    b, c, h, w = frames.shape
    if pad == 0:
        return frames.clone()
    if pad < 0 or pad >= min(h, w):
        raise ValueError(f"pad must be in [0, {min(h, w) - 1}], got {pad}")
    device = frames.device
    # first crop's offset (a) and second crop's offset (s) per stack and axis, each in [0, pad]
    offsets = torch.randint(0, pad + 1, (4, b), generator=generator).to(device)
    rows = _shifted_index(offsets[0], offsets[1], h, pad)
    cols = _shifted_index(offsets[2], offsets[3], w, pad)
    out = torch.gather(frames, 2, rows[:, None, :, None].expand(b, c, h, w))
    return torch.gather(out, 3, cols[:, None, None, :].expand(b, c, h, w))


def _shifted_index(first: torch.Tensor, second: torch.Tensor, size: int, pad: int) -> torch.Tensor:
    """Source index of each output position: ``first + clamp(i + second - pad, 0, size - pad - 1)``."""
    i = torch.arange(size, device=first.device)
    inner = (i[None, :] + second[:, None] - pad).clamp(0, size - pad - 1)
    return first[:, None] + inner


# --------------------------------------------------------------------------- networks
class DataEfficientTorso(FrameTorso):
    """Data-efficient Rainbow's convolutions on uint8 frames ``(B, C, H, W)``: conv 32 5×5/5,
    ReLU, conv 64 5×5/5, ReLU, flattened (576 features for 84×84)."""

    @staticmethod
    def layers(in_channels: int) -> list[nn.Module]:
        """Two 5×5 convolutions with stride 5, each followed by ReLU."""
        return [nn.Conv2d(in_channels, 32, kernel_size=5, stride=5), nn.ReLU(inplace=True),
                nn.Conv2d(32, 64, kernel_size=5, stride=5), nn.ReLU(inplace=True)]


class ContrastiveHead(nn.Module):
    """Encoder features to the contrastive code: ``LN(relu(LN(x W_h + b_h)) W_c + b_c)``.

    Initialised as in the CURL authors' code: weights uniform on [0, 1), biases zero.
    """

    def __init__(self, in_dim: int, hidden: int, latent_dim: int) -> None:
        super().__init__()
        self.W_h = nn.Parameter(torch.rand(in_dim, hidden))
        self.b_h = nn.Parameter(torch.zeros(hidden))
        self.norm1 = nn.LayerNorm(hidden)
        self.W_c = nn.Parameter(torch.rand(hidden, latent_dim))
        self.b_c = nn.Parameter(torch.zeros(latent_dim))
        self.norm2 = nn.LayerNorm(latent_dim)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """The code ``(B, latent_dim)`` of encoder features ``(B, in_dim)``."""
        h = F.relu(self.norm1(features @ self.W_h + self.b_h))
        return self.norm2(h @ self.W_c + self.b_c)


def _noisy_mlp(in_dim: int, hidden: int, out_dim: int, noisy_std: float) -> nn.Sequential:
    return nn.Sequential(ResampledNoisyLinear(in_dim, hidden, noisy_std), nn.ReLU(inplace=True),
                         ResampledNoisyLinear(hidden, out_dim, noisy_std))


class CurlQNetwork(ActionReprNetWithVectorOutput[Any]):
    """The query side: encoder, dueling noisy distributional Q head, contrastive head and ``W``.

    ``forward(obs)`` gives the probabilities ``(B, n_actions, num_atoms)`` that ``C51Policy``
    expects; :meth:`embed` gives the contrastive code of (augmented) frames.

    :param obs_shape: ``(frames, height, width)``.
    :param n_actions: number of discrete actions.
    :param num_atoms: atoms of the return distribution.
    :param hidden: width of each Q stream's hidden layer and of the contrastive head's.
    :param latent_dim: size of the contrastive code.
    :param noisy_std: σ0 of the noisy layers.
    """

    def __init__(self, obs_shape: Sequence[int], n_actions: int, *, num_atoms: int = 51, hidden: int = 256,
                 latent_dim: int = 128, noisy_std: float = 0.1) -> None:
        if len(obs_shape) != 3:
            raise ValueError(f"expected an observation shape (frames, height, width), got {tuple(obs_shape)}")
        super().__init__(output_dim=n_actions * num_atoms)
        self.n_actions, self.num_atoms = int(n_actions), int(num_atoms)
        c, h, w = (int(x) for x in obs_shape)
        self.encoder = DataEfficientTorso(c, h, w)
        dim = self.encoder.output_dim
        self.value = _noisy_mlp(dim, hidden, self.num_atoms, noisy_std)
        self.advantage = _noisy_mlp(dim, hidden, self.n_actions * self.num_atoms, noisy_std)
        self.head = ContrastiveHead(dim, hidden, latent_dim)
        self.W = nn.Parameter(torch.rand(latent_dim, latent_dim))

    def forward(self, obs: np.ndarray | torch.Tensor, state: Any = None, info: Any = None) -> tuple[torch.Tensor, Any]:
        """Map uint8 frames ``(B, C, H, W)`` to probabilities ``(B, n, atoms)``; ``state`` is passed through."""
        features = self.encoder(self._frames(obs))
        value = self.value(features).view(-1, 1, self.num_atoms)
        advantage = self.advantage(features).view(-1, self.n_actions, self.num_atoms)
        logits = value + advantage - advantage.mean(dim=1, keepdim=True)
        return logits.softmax(dim=-1), state

    def embed(self, frames: torch.Tensor) -> torch.Tensor:
        """The contrastive code (query) of ``frames``."""
        return self.head(self.encoder(self._frames(frames)))

    def _frames(self, obs: np.ndarray | torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(obs, device=self.W.device)


class KeyEncoder(nn.Module):
    """The momentum (key) encoder: copies of a :class:`CurlQNetwork`'s encoder and contrastive
    head, updated only by :meth:`update`; its parameters need no gradient."""

    def __init__(self, query: CurlQNetwork) -> None:
        super().__init__()
        self.encoder = copy.deepcopy(query.encoder)
        self.head = copy.deepcopy(query.head)
        for param in self.parameters():
            param.requires_grad_(False)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """The contrastive code (key) of ``frames``."""
        return self.head(self.encoder(frames))

    @staticmethod
    def query_parameters(query: CurlQNetwork) -> list[nn.Parameter]:
        """The query-side parameters the key encoder follows, in the order of its own."""
        return [*query.encoder.parameters(), *query.head.parameters()]

    def update(self, query: CurlQNetwork, momentum: float) -> None:
        """``θ_k ← m θ_k + (1 − m) θ_q`` for every parameter (:func:`momentum_update`)."""
        momentum_update(list(self.parameters()), self.query_parameters(query), momentum)


@torch.no_grad()
def momentum_update(keys: Sequence[torch.Tensor], queries: Sequence[torch.Tensor], momentum: float) -> None:
    """Set every ``k`` in ``keys`` to ``momentum * k + (1 - momentum) * q`` (MoCo's update)."""
    if len(keys) != len(queries):
        raise ValueError(f"{len(keys)} key parameters but {len(queries)} query parameters")
    for k, q in zip(keys, queries, strict=True):
        k.copy_(momentum * k + (1.0 - momentum) * q)


def info_nce(anchor: torch.Tensor, positive: torch.Tensor, W: torch.Tensor,
             scale: float = LOGIT_SCALE) -> tuple[torch.Tensor, torch.Tensor]:
    """InfoNCE with bilinear similarity: ``(per-batch loss, logits (B, B))``.

    ``logits[i, j] = anchor_i · W · positive_j``, shifted by each row's maximum and multiplied by
    ``scale``; the positive of anchor ``i`` is ``positive_i`` and every other ``positive_j`` of
    the batch is a negative. The loss is the mean cross-entropy of picking the positive.
    """
    logits = anchor @ (W @ positive.T)
    logits = (logits - logits.max(dim=1, keepdim=True).values) * scale
    labels = torch.arange(logits.shape[0], device=logits.device)
    return F.cross_entropy(logits, labels), logits


# --------------------------------------------------------------------------- algorithm
@dataclass(kw_only=True)
class CurlTrainingStats(TrainingStats):
    """One gradient step of :class:`CURL`: the loss minimised and its two parts (unweighted means)."""

    loss: float
    rl_loss: float
    contrastive_loss: float


class CURL(NStepRainbowDQN):
    """Data-efficient Rainbow plus CURL's contrastive loss, in one optimiser step (see the module
    docstring). Takes :class:`~tianshou_integration.distributional.NStepRainbowDQN`'s arguments and:

    :param momentum: m of the key encoder's update after every gradient step.
    :param contrastive_coef: weight of the InfoNCE loss added to the RL loss.
    :param max_grad_norm: clip of the gradient's L2 norm (None: no clipping).
    :param pad: pixels of the shift augmentation (:func:`random_shift`).
    """

    def __init__(
        self,
        *,
        policy: GuidedC51Policy,
        optim: OptimizerFactory,
        gamma: float = 0.99,
        n_step_return_horizon: int = 20,
        target_update_freq: int = 2000,
        momentum: float = 0.999,
        contrastive_coef: float = 1.0,
        max_grad_norm: float | None = 10.0,
        pad: int = CROP_PAD,
    ) -> None:
        if not isinstance(policy.model, CurlQNetwork):
            raise TypeError(f"CURL needs a policy whose model is a CurlQNetwork, got {type(policy.model).__name__}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        self.max_grad_norm = max_grad_norm  # read by _create_policy_optimizer during super().__init__
        super().__init__(policy=policy, optim=optim, gamma=gamma, n_step_return_horizon=n_step_return_horizon,
                         target_update_freq=target_update_freq)
        self.momentum = momentum
        self.contrastive_coef = contrastive_coef
        self.pad = pad
        self.key_encoder = KeyEncoder(policy.model)

    def _create_policy_optimizer(self, optim: OptimizerFactory) -> Algorithm.Optimizer:
        return self._create_optimizer(self.policy, optim, max_grad_norm=self.max_grad_norm)

    @property
    def query(self) -> CurlQNetwork:
        """The query side (the policy's Q-network)."""
        return self.policy.model  # type: ignore[return-value]

    def contrastive_loss(self, obs: np.ndarray | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """InfoNCE of two random shifts of ``obs`` (query: trained encoder, key: momentum encoder);
        returns ``(loss, logits)``."""
        frames = torch.as_tensor(obs, device=self.query.W.device)
        anchor = self.query.embed(random_shift(frames, self.pad))
        with torch.no_grad():
            positive = self.key_encoder(random_shift(frames, self.pad))
        return info_nce(anchor, positive, self.query.W)

    def _update_with_batch(self, batch: RolloutBatchProtocol) -> CurlTrainingStats:  # type: ignore[override]
        self._sample_noise(self.policy.model)
        if self.use_target_network:
            assert self.model_old is not None
            self._sample_noise(self.model_old)
        self._periodically_update_lagged_network_weights()
        with torch.no_grad():
            target_dist = self._target_dist(batch)
        weight = batch.pop("weight", 1.0)
        curr_dist = self.policy(batch).logits
        act = batch.act
        curr_dist = curr_dist[np.arange(len(act)), act, :]
        cross_entropy = -(target_dist * torch.log(curr_dist + 1e-8)).sum(1)
        contrastive, _ = self.contrastive_loss(batch.obs)
        total = cross_entropy + self.contrastive_coef * contrastive
        loss = (total * to_torch_as(weight, total)).mean()
        batch.weight = total.detach()  # priorities (prioritised replay), as in the authors' code
        self.optim.step(loss)
        self.key_encoder.update(self.query, self.momentum)
        return CurlTrainingStats(loss=loss.item(), rl_loss=cross_entropy.mean().item(),
                                 contrastive_loss=contrastive.item())


# --------------------------------------------------------------------------- builder
def build_curl(config: Any, env: Any, space: Any, cache: ExplorationCache | None, rng: np.random.Generator,
               counter: EnvStepCounter, device: str) -> tuple[CURL, None]:
    """``algo: curl`` from a resolved run configuration (the ``_BUILDERS`` signature of
    :mod:`tianshou_integration.algorithms`)."""
    if len(env.obs_shape) != 3:
        raise UsageError(f"curl learns from stacked frames (an Atari env such as ALE/Pong-v5); "
                         f"{env.env_id} has observations of shape {tuple(env.obs_shape)}")
    hp = config.algorithm
    n = int(space.n)
    net = CurlQNetwork(env.obs_shape, n, num_atoms=hp.num_atoms, hidden=config.network.hidden_sizes[-1],
                       latent_dim=hp.curl.latent_dim, noisy_std=hp.noisy_std).to(device)
    policy = GuidedC51Policy(model=net, action_space=space, num_atoms=hp.num_atoms, v_min=hp.v_min,
                             v_max=hp.v_max, eps_training=hp.epsilon.start, eps_inference=hp.epsilon.eval)
    if cache is not None:
        policy.attach_explorer(cache, rng, counter)
    algorithm = CURL(policy=policy, optim=fast.adam(hp.lr, hp.adam_eps, fused=hp.fused_adam), gamma=hp.gamma,
                     n_step_return_horizon=hp.n_step, target_update_freq=hp.target_update_freq,
                     momentum=hp.curl.momentum, contrastive_coef=hp.curl.loss_coef,
                     max_grad_norm=hp.curl.max_grad_norm)
    return algorithm, None
