"""Pure-speed paths for training: the same computation as Tianshou's stock path, with less overhead.

Each of these leaves what a run computes unchanged (``metrics.csv`` of a seeded run is the same
byte for byte; ``tests/tianshou/test_speed_invariance.py`` checks it against the plain path):

* :func:`enable_numba_cache`: Tianshou compiles its numba kernels (n-step return, GAE, the
  vector buffer's index walks, the sum tree) in every process, several seconds of LLVM before the
  first step. Their dispatchers get numba's on-disk cache, so only the first run on a machine
  compiles; later ones load the machine code.
* :func:`accelerate`: the algorithm and its policy skip ``nn.Module.train()`` mode switches when
  no module in them behaves differently in train and eval mode (no dropout, batch norm or noisy
  layers): Tianshou switches the whole module tree twice per gradient step and twice per collect.
  Plain DQN (no double Q) also stops computing the online network's forward pass on
  ``s_{t+n}`` that only double Q-learning reads, and reads ``obs_next`` alone from the buffer
  instead of a whole transition batch.
* :func:`adam`: Adam's ``foreach`` implementation (one multi-tensor kernel per step
  instead of a Python loop over parameters); bit-identical to the loop on CPU. The run
  configuration's ``algorithm.fused_adam`` (on by default) asks for the fused kernel instead,
  which is faster still but rounds differently: a setting, compared over seeds in
  docs/benchmarks.md, not one of these pure-speed paths.
* :class:`LeanAdam` (the Adam of both factories): ``zero_grad()`` without torch's per-call
  wrappers, the same effect (the gradients set to None).
* :func:`acting`: forward passes for acting run under ``torch.no_grad()``: no autograd graph
  is built for actions that are never differentiated.
* In :func:`accelerate` too: target networks (Tianshou's ``EvalModeModuleWrapper``) stop
  switching their module to eval mode on every forward pass when nothing in it depends on the
  mode; soft target updates (Polyak averaging) run as multi-tensor ``torch._foreach_*`` kernels
  (the same elementwise operations in the same order: bit-identical); and the networks' device
  lookup (Tianshou's ``torch_device``: a walk of the whole parameter tree on every forward pass)
  remembers the module's first parameter and reads its device. DDPG, TD3 and SAC read
  ``obs_next`` alone for their targets instead of a whole transition batch, and the collector's
  per-step ``info`` batch is built directly when the infos are flat dicts of scalars.

The training collector's own loop (:class:`~tianshou_integration.fast_collector.FastCollector`)
is another such path, in its own module; it reads :func:`enabled` too.

Set the environment variable ``LLM_EXPLORER_FAST=0`` to run the plain path instead (what the
invariance test compares against).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import weakref
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from tianshou.algorithm.optim import AdamOptimizerFactory
from tianshou.data import Batch, ReplayBuffer
from tianshou.data.collector import _HACKY_create_info_batch as _stock_info_batch
from tianshou.utils.lagged_network import EvalModeModuleWrapper, LaggedNetworkCollection
from tianshou.utils.net.discrete import NoisyLinear
from torch import nn

log = logging.getLogger(__name__)

__all__ = [
    "ENV_VAR",
    "ForeachAdamOptimizerFactory",
    "FusedAdamOptimizerFactory",
    "accelerate",
    "acting",
    "adam",
    "enable_numba_cache",
    "enabled",
    "mode_sensitive",
]

ENV_VAR = "LLM_EXPLORER_FAST"
"""``0``: run every pure-speed path the plain way (for comparisons); anything else or unset: fast."""

#: modules whose forward pass depends on ``training``
_MODE_SENSITIVE: tuple[type[nn.Module], ...] = (
    nn.modules.dropout._DropoutNd,
    nn.modules.batchnorm._NormBase,  # batch and instance norm
    nn.RNNBase,  # dropout between layers
    nn.MultiheadAttention,
    NoisyLinear,
)


def enabled() -> bool:
    """Whether the pure-speed paths are on (``LLM_EXPLORER_FAST`` is not ``0``)."""
    return os.environ.get(ENV_VAR, "1").strip() not in ("0", "false", "no", "off")


# --------------------------------------------------------------------------- numba
_numba_cache_done = False


def enable_numba_cache() -> bool:
    """Give Tianshou's numba kernels numba's on-disk cache (in ``__pycache__`` beside Tianshou, or
    numba's user cache directory when that is not writable; ``NUMBA_CACHE_DIR`` overrides both).

    Must run before the first kernel is compiled in this process (kernels already compiled keep
    their in-memory code and are left alone). Returns whether caching is on.
    """
    global _numba_cache_done
    if _numba_cache_done:
        return True
    if not enabled():
        return False
    from numba.core.dispatcher import Dispatcher
    from tianshou.algorithm import algorithm_base
    from tianshou.data.buffer import manager
    from tianshou.data.utils import segtree

    for module in (algorithm_base, manager, segtree):
        for name, value in vars(module).items():
            if isinstance(value, Dispatcher) and not value.signatures:
                try:
                    value.enable_caching()
                except Exception:  # an unwritable cache only costs the compile
                    log.debug("numba cache not enabled for %s.%s", module.__name__, name, exc_info=True)
    _numba_cache_done = True
    return True


# --------------------------------------------------------------------------- optimiser
class LeanAdam(torch.optim.Adam):
    """``torch.optim.Adam`` whose ``zero_grad()`` sets the gradients to None directly, which is
    what torch's does by default (``set_to_none=True``), without the dynamo-disabling wrapper and
    the profiler range around it (tens of microseconds a call, three calls per TD3 gradient step)."""

    def zero_grad(self, set_to_none: bool = True) -> None:
        if not set_to_none:
            super().zero_grad(set_to_none=False)
            return
        for group in self.param_groups:
            for param in group["params"]:
                param.grad = None


class ForeachAdamOptimizerFactory(AdamOptimizerFactory):
    """Tianshou's Adam factory with ``foreach=True``: the same arithmetic as the per-parameter
    loop torch picks on CPU (bit-identical results), in one multi-tensor kernel per operation."""

    def _create_optimizer_for_params(self, params: Any) -> torch.optim.Optimizer:
        return LeanAdam(params, lr=self.lr, betas=self.betas, eps=self.eps, weight_decay=self.weight_decay,
                        foreach=True)


class FusedAdamOptimizerFactory(AdamOptimizerFactory):
    """Tianshou's Adam factory with ``fused=True``: one kernel per parameter tensor for the whole
    update. Not bit-identical to the loop (float rounding differs), hence a setting
    (``algorithm.fused_adam``) rather than a pure-speed path."""

    def _create_optimizer_for_params(self, params: Any) -> torch.optim.Optimizer:
        return LeanAdam(params, lr=self.lr, betas=self.betas, eps=self.eps, weight_decay=self.weight_decay,
                        fused=True)


def adam(lr: float, eps: float, *, fused: bool = False) -> AdamOptimizerFactory:
    """Adam for the algorithms: fused when asked (the run configuration's ``algorithm.fused_adam``),
    else :class:`ForeachAdamOptimizerFactory` on the fast path; torch's default on the plain path."""
    if not enabled():
        return AdamOptimizerFactory(lr=lr, eps=eps)
    return (FusedAdamOptimizerFactory if fused else ForeachAdamOptimizerFactory)(lr=lr, eps=eps)


# --------------------------------------------------------------------------- replay sampling
class FastSamplingMixin:
    """Put before ``VectorReplayBuffer`` in the bases: Tianshou's ``sample_indices`` and
    ``__getitem__`` with less Python per batch, returning the same arrays.

    ``sample_indices`` draws from the same generators in the same order as Tianshou's
    ``ReplayBufferManager.sample_indices``: ``RandomState.choice(k, n, p=...)`` is the
    searchsorted of ``random_sample(n)`` in the cumulative probabilities, and a sub-buffer's
    ``choice(size, m)`` is ``randint(0, size, m)`` (without ``choice``'s argument checks, which
    cost more than the draws). ``__getitem__`` puts the arrays it reads into the batch directly
    instead of through ``Batch.__init__``'s per-value type dispatch, which keeps them as they are.
    """

    def sample_indices(self, batch_size: int | None) -> np.ndarray:
        """Tianshou's sampler, the same draws; other cases (frame stacks, all indices) are Tianshou's."""
        if (not enabled() or batch_size is None or batch_size <= 0
                or (self._sample_avail and self.stack_num > 1)):  # type: ignore[attr-defined]
            return super().sample_indices(batch_size)  # type: ignore[misc]
        lengths = self._lengths  # type: ignore[attr-defined]
        cdf = (lengths / lengths.sum()).cumsum()
        cdf /= cdf[-1]
        buffer_idx = cdf.searchsorted(self._random_state.random_sample(batch_size), side="right")  # type: ignore[attr-defined]
        sample_num = np.bincount(buffer_idx, minlength=self.buffer_num)  # type: ignore[attr-defined]
        parts = []
        for offset, buf, n in zip(self._offset, self.buffers, sample_num.tolist(), strict=True):  # type: ignore[attr-defined]
            if n == 0:  # Tianshou asks the sub-buffer for -1 indices: none
                continue
            if buf.stack_num == 1 or not buf._sample_avail:
                parts.append(buf._random_state.randint(0, buf._size, size=n) + offset)
            else:
                parts.append(buf.sample_indices(n) + offset)
        return np.concatenate(parts)

    def __getitem__(self, index: Any) -> Any:
        """``buffer[indices]`` for an index array; slices and other buffers are Tianshou's."""
        if not enabled() or not isinstance(index, np.ndarray) or self.stack_num != 1:  # type: ignore[attr-defined]
            return super().__getitem__(index)  # type: ignore[misc]
        get = self.get  # type: ignore[attr-defined]
        obs_next = (get(index, "obs_next", Batch()) if self._save_obs_next  # type: ignore[attr-defined]
                    else get(self.next(index), "obs", Batch()))  # type: ignore[attr-defined]
        keys = self._meta.__dict__  # type: ignore[attr-defined]
        values = {"obs": get(index, "obs"), "act": keys["act"][index], "rew": keys["rew"][index],
                  "terminated": keys["terminated"][index], "truncated": keys["truncated"][index],
                  "done": keys["done"][index], "obs_next": obs_next, "info": get(index, "info", Batch()),
                  "policy": get(index, "policy", Batch())}
        for key in keys.keys() - set(self._input_keys):  # type: ignore[attr-defined]
            values[key] = keys[key][index]
        return direct_batch(values)


# --------------------------------------------------------------------------- batches
_KEPT_AS_IS = (np.bool_, np.number)


def direct_batch(values: dict[str, Any]) -> Batch:
    """``Batch(values)``, without ``Batch``'s per-value conversion for the values it keeps as they
    are (numeric arrays, tensors, batches, None); anything else goes through that conversion."""
    batch = Batch()
    fields = batch.__dict__
    for key, value in values.items():
        kind = type(value)
        if (value is None or kind is Batch or kind is torch.Tensor
                or (kind is np.ndarray and issubclass(value.dtype.type, _KEPT_AS_IS))):
            fields[key] = value
        else:
            setattr(batch, key, value)  # Batch's own conversion
    return batch


# --------------------------------------------------------------------------- acting
@contextlib.contextmanager
def acting() -> Iterator[None]:
    """Context for collecting: no autograd graph for the actions (plain path: unchanged)."""
    if not enabled():
        yield
        return
    with torch.no_grad():
        yield


# --------------------------------------------------------------------------- mode switches
def mode_sensitive(module: nn.Module) -> bool:
    """Whether some submodule of ``module`` computes differently in train and eval mode."""
    return any(isinstance(m, _MODE_SENSITIVE) for m in module.modules())


class _NoModeSwitch:
    """Put before an ``nn.Module`` class: ``train(mode)`` leaves every mode as it is.

    Only for module trees that :func:`mode_sensitive` finds insensitive, where a switch changes
    nothing that is computed (it costs a walk over the tree setting an attribute on every module).
    """

    def train(self, mode: bool = True) -> Any:
        return self


class _FastDQNTargetMixin:
    """Plain DQN's target ``max_a Q_target(s_{t+n}, a)`` without the online network's forward pass
    on ``s_{t+n}`` (Tianshou's ``DQN._target_q`` computes it for double Q-learning, and discards it
    otherwise), reading ``obs_next`` alone from the buffer."""

    def _target_q(self, buffer: ReplayBuffer, indices: np.ndarray) -> torch.Tensor:
        if self.is_double or not self.use_target_network:  # type: ignore[attr-defined]
            return super()._target_q(buffer, indices)  # type: ignore[misc]
        obs_next_batch = _obs_batch(_obs_next(buffer, indices))
        target_q = self.policy(obs_next_batch, model=self.model_old).logits  # type: ignore[attr-defined]
        return target_q.max(dim=1)[0]


def _obs_batch(obs: Any) -> Batch:
    """``Batch(obs=obs, info=[None] * len(obs))`` without ``Batch.__init__``'s conversions (the
    list becomes the same object array of Nones)."""
    batch = Batch()
    info = np.empty(len(obs), dtype=object)  # filled with None
    if type(obs) is np.ndarray and obs.dtype.kind in "biuf":
        batch.__dict__.update(obs=obs, info=info)
    else:
        batch.obs, batch.info = obs, info
    return batch


class _FastActorCriticTargetMixin:
    """Tianshou's actor-critic target (DDPG, TD3, SAC: ``ActorCriticOffPolicyAlgorithm._target_q``)
    reading ``obs_next`` alone from the buffer instead of building a whole transition batch to
    take one field of it; the action and value functions are the algorithm's own."""

    def _target_q(self, buffer: ReplayBuffer, indices: np.ndarray) -> torch.Tensor:
        obs_next_batch = _obs_batch(_obs_next(buffer, indices))
        act_batch = self._target_q_compute_action(obs_next_batch)  # type: ignore[attr-defined]
        return self._target_q_compute_value(obs_next_batch, act_batch)  # type: ignore[attr-defined, no-any-return]


class _FastTD3UpdateMixin:
    """TD3's update with both critics' losses backpropagated together: one backward pass over
    ``loss1 + loss2`` instead of one per critic. The critics share no parameter, so each one's
    gradient is exactly its own loss's (the sum passes 1.0 to each, as a lone ``backward()``
    does), and each critic's Adam step is the one Tianshou takes; critic 2's forward pass does not
    depend on critic 1's step. The actor update is Tianshou's. Only without gradient clipping on
    the critics (:func:`accelerate` checks)."""

    def _update_with_batch(self, batch: Any) -> Any:
        from tianshou.algorithm.modelfree.td3 import TD3TrainingStats

        weight = getattr(batch, "weight", 1.0)
        target_q = batch.returns.flatten()
        td1 = self.critic(batch.obs, batch.act).flatten() - target_q  # type: ignore[attr-defined]
        critic1_loss = (td1.pow(2) * weight).mean()
        td2 = self.critic2(batch.obs, batch.act).flatten() - target_q  # type: ignore[attr-defined]
        critic2_loss = (td2.pow(2) * weight).mean()
        optims = (self.critic_optim._optim, self.critic2_optim._optim)  # type: ignore[attr-defined]
        for optim in optims:
            optim.zero_grad()
        (critic1_loss + critic2_loss).backward()
        for optim in optims:
            optim.step()
        batch.weight = (td1 + td2) / 2.0  # prio-buffer
        if self._cnt % self.update_actor_freq == 0:  # type: ignore[attr-defined]
            actor_loss = -self.critic(batch.obs, self.policy(batch, eps=0.0).act).mean()  # type: ignore[attr-defined]
            self._last = actor_loss.item()
            self.policy_optim.step(actor_loss)  # type: ignore[attr-defined]
            self._update_lagged_network_weights()  # type: ignore[attr-defined]
        self._cnt += 1
        return TD3TrainingStats(actor_loss=self._last, critic1_loss=critic1_loss.item(),
                                critic2_loss=critic2_loss.item())


def _td3_critics_separable(algorithm: Any) -> bool:
    """The critics share no parameter and neither optimiser clips gradients."""
    optims = (algorithm.critic_optim, algorithm.critic2_optim)
    if any(getattr(o, "_max_grad_norm", None) is not None or not hasattr(o, "_optim") for o in optims):
        return False
    first = {id(p) for p in algorithm.critic.parameters()}
    return not any(id(p) in first for p in algorithm.critic2.parameters())


class _OneStepReturnMixin:
    """Tianshou's ``compute_nstep_return`` for ``n_step == 1`` without building the end flags of
    the whole buffer (a copy of ``done`` and every sub-buffer's unfinished index, every batch):
    with one step the kernel reads no end flag that changes its result (it would set the discount
    exponent to 1, which it is, and zero a return that is still zero), so it gets ``done`` as it
    is. Same kernel, same arithmetic; ``n_step > 1`` is Tianshou's."""

    @staticmethod
    def compute_nstep_return(batch: Any, buffer: ReplayBuffer, indices: np.ndarray, target_q_fn: Any,
                             gamma: float = 0.99, n_step: int = 1) -> Any:
        from tianshou.algorithm.algorithm_base import Algorithm, _nstep_return
        from tianshou.data import to_numpy, to_torch_as

        if n_step != 1 or not enabled():
            return Algorithm.compute_nstep_return(batch, buffer, indices, target_q_fn, gamma, n_step)
        with torch.no_grad():
            target_q_torch = target_q_fn(buffer, indices)
        target_q = to_numpy(target_q_torch.reshape(len(indices), -1))
        target_q *= Algorithm.value_mask(buffer, indices).reshape(-1, 1)
        returns = _nstep_return(buffer.rew, buffer.done, target_q, indices.reshape(1, -1), gamma, n_step)
        batch.returns = to_torch_as(returns, target_q_torch)
        if hasattr(batch, "weight"):
            batch.weight = to_torch_as(batch.weight, target_q_torch)
        return batch


def _obs_next(buffer: ReplayBuffer, indices: np.ndarray) -> Any:
    """``buffer[indices].obs_next`` without building the rest of the batch (stock buffers only)."""
    if type(buffer).__getitem__ not in (ReplayBuffer.__getitem__, FastSamplingMixin.__getitem__):
        return buffer[indices].obs_next  # e.g. frame stacks built on read
    if buffer._save_obs_next:
        return buffer.get(indices, "obs_next", Batch())
    return buffer.get(buffer.next(indices), "obs", Batch())


class _NoEvalSwitch:
    """Put before ``EvalModeModuleWrapper`` (with :class:`_NoModeSwitch`): the target network's
    forward pass without switching its module to eval mode first (only for mode-insensitive modules,
    where that is a no-op walk)."""

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.module(*args, **kwargs)  # type: ignore[attr-defined]


class _ForeachPolyak:
    """Put before ``LaggedNetworkCollection``: Tianshou's soft update
    ``tgt = tau * src + (1 - tau) * tgt`` for all parameters of a pair at once with ``torch._foreach_*``
    (the same two products, one sum and one copy per tensor, so the same bits). The parameter lists
    are read once: Tianshou's update pairs the two modules' ``parameters()`` on every call."""

    def polyak_parameter_update(self, tau: float) -> None:
        for pair in self._lagged_network_pairs:  # type: ignore[attr-defined]
            params = vars(pair).get("_fast_params")
            if params is None:
                params = pair._fast_params = (list(pair.target.parameters()), list(pair.source.parameters()))
                if len(params[0]) != len(params[1]):
                    raise ValueError(f"target and source networks differ: {len(params[0])} and "
                                     f"{len(params[1])} parameters")
            tgt, src = params
            with torch.no_grad():
                tgt_data = [p.data for p in tgt]
                mixed = torch._foreach_mul([p.data for p in src], tau)
                torch._foreach_add_(mixed, torch._foreach_mul(tgt_data, 1 - tau))
                torch._foreach_copy_(tgt_data, mixed)


# --------------------------------------------------------------------------- collector info batches
_NP_SCALARS = (np.integer, np.floating, np.bool_)


def flat_info_batch(info_array: np.ndarray) -> Batch | None:
    """The ``Batch`` that Tianshou's conversion of an array of info dicts gives, built directly,
    when every dict is non-empty, has the same string keys, and holds scalars (Python's or numpy's)
    of one type per key (Tianshou's vector envs add ``env_id``, a numpy integer, to every info);
    None for anything else (and on the plain path)."""
    if enabled() and len(info_array):
        first = info_array[0]
        if type(first) is dict and first and all(type(d) is dict and d.keys() == first.keys() for d in info_array):
            values = {}
            for key, value in first.items():
                kind = type(value)
                if not isinstance(key, str) or not (kind in (int, float, bool) or issubclass(kind, _NP_SCALARS)):
                    return None
                column = [d[key] for d in info_array]
                if any(type(v) is not kind for v in column):
                    return None
                values[key] = np.array(column)
            batch = Batch()
            batch.__dict__.update(values)
            return batch
    return None


def policy_info_batch(info_array: np.ndarray) -> Batch:
    """Tianshou's ``_HACKY_create_info_batch`` (the collector's per-step ``info`` batch for the
    policy): :func:`flat_info_batch` where it applies (the same ``Batch`` of arrays), Tianshou's
    function for anything else and on the plain path."""
    batch = flat_info_batch(info_array)
    return batch if batch is not None else _stock_info_batch(info_array)


def _patch_info_batches() -> None:
    """Point Tianshou's collector at :func:`policy_info_batch` (which defers to the stock function)."""
    from tianshou.data import collector

    if collector._HACKY_create_info_batch is _stock_info_batch:
        collector._HACKY_create_info_batch = policy_info_batch


# --------------------------------------------------------------------------- device lookups
_FIRST_PARAMETER: weakref.WeakKeyDictionary[nn.Module, nn.Parameter] = weakref.WeakKeyDictionary()


def torch_device(module: nn.Module) -> torch.device:
    """Tianshou's ``torch_device`` (the device of the module's first parameter, CPU when it has
    none) without walking the module tree on every call: the first parameter is looked up once and
    its ``device`` read each time, so moving the module (``.to()`` changes the parameters' data in
    place) is still seen. Replacing that parameter object by assignment is not."""
    param = _FIRST_PARAMETER.get(module)
    if param is None:
        param = next(module.parameters(), None)
        if param is None:
            return torch.device("cpu")
        _FIRST_PARAMETER[module] = param
    return param.device


def _patch_device_lookups() -> None:
    """Point the network modules of Tianshou that call ``torch_device`` at :func:`torch_device`."""
    from tianshou.utils import torch_utils

    for name in ("tianshou.utils.net.common", "tianshou.utils.net.continuous", "tianshou.utils.net.discrete",
                 "tianshou.env.atari.atari_network"):
        module = sys.modules.get(name)
        if module is not None and getattr(module, "torch_device", None) is torch_utils.torch_device:
            module.torch_device = torch_device  # type: ignore[attr-defined]


_CLASSES: dict[tuple[type, ...], type] = {}


def _subclass(cls: type, *mixins: type) -> type:
    key = (cls, *mixins)
    if key not in _CLASSES:
        _CLASSES[key] = type(cls.__name__, (*mixins, cls), {"__module__": cls.__module__,
                                                             "__qualname__": cls.__qualname__})
    return _CLASSES[key]


def accelerate(algorithm: nn.Module) -> bool:
    """Switch ``algorithm`` (and its ``policy``) to the fast subclasses of their own classes where
    that computes the same thing: soft target updates as multi-tensor kernels and the networks'
    device lookup without a tree walk (every algorithm); and, for mode-insensitive networks only, no
    mode switches (the algorithm's, the policy's, the target networks'), plain DQN's target without
    the unused online forward pass, and the one-step return without the end flags. Returns whether
    anything changed.

    Done once, right after the algorithm is built; the objects keep their state and their
    ``isinstance`` relations (the new classes derive from the old ones).
    """
    if not enabled():
        return False
    _patch_device_lookups()
    _patch_info_batches()
    lagged = getattr(algorithm, "_lagged_networks", None)
    if type(lagged) is LaggedNetworkCollection:
        lagged.__class__ = _subclass(LaggedNetworkCollection, _ForeachPolyak)
    from tianshou.algorithm import DQN
    from tianshou.algorithm.algorithm_base import Algorithm
    from tianshou.algorithm.modelfree.ddpg import ActorCriticOffPolicyAlgorithm
    from tianshou.algorithm.modelfree.td3 import TD3

    mixins: list[type] = []
    if getattr(type(algorithm), "_target_q", None) is ActorCriticOffPolicyAlgorithm._target_q:
        mixins.append(_FastActorCriticTargetMixin)
    if isinstance(algorithm, TD3) and type(algorithm)._update_with_batch is TD3._update_with_batch \
            and _td3_critics_separable(algorithm):
        mixins.append(_FastTD3UpdateMixin)
    sensitive = mode_sensitive(algorithm)
    if not sensitive:
        if type(algorithm) is DQN:  # subclasses may compute their targets differently
            mixins.append(_FastDQNTargetMixin)
        if getattr(type(algorithm), "compute_nstep_return", None) is Algorithm.compute_nstep_return:
            mixins.append(_OneStepReturnMixin)  # only where nothing overrides it
        mixins.append(_NoModeSwitch)
    if mixins:
        algorithm.__class__ = _subclass(type(algorithm), *mixins)
    if sensitive:
        return True
    policy = algorithm.policy  # type: ignore[attr-defined]
    policy.__class__ = _subclass(type(policy), _NoModeSwitch)
    for module in algorithm.modules():
        if type(module) is EvalModeModuleWrapper:
            module.__class__ = _subclass(EvalModeModuleWrapper, _NoEvalSwitch, _NoModeSwitch)
    return True
