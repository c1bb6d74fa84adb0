"""The one module that reads and writes Tianshou's private attributes (for checkpoints).

Tianshou 2 has no public way to save a collector's episodes in progress, a replay buffer's
sampler, or an algorithm's Python counters, so checkpoints reach into them here and nowhere
else. Every private name used is listed in the constants below; ``tests/tianshou/test_tianshou_state.py``
builds real Tianshou objects and fails when one of them is renamed or removed, instead of a
resumed run silently drifting from an uninterrupted one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from tianshou.data import Batch, Collector, ReplayBuffer

__all__ = [
    "ALGORITHM_COUNTERS",
    "BUFFER_ATTRIBUTES",
    "COLLECTOR_FIELDS",
    "VECTOR_BUFFER_ATTRIBUTES",
    "algorithm_state",
    "buffer_nbytes",
    "children_detached",
    "collector_state",
    "cut_open_episodes",
    "link_children",
    "restore_algorithm",
    "restore_collector",
    "restore_sampler",
    "sampler_state",
    "seed_sampler",
]

COLLECTOR_FIELDS = ("_pre_collect_obs_RO", "_pre_collect_info_R", "_pre_collect_hidden_state_RH")
"""A collector's view of the episodes in progress: their last observations, infos, hidden states."""
BUFFER_ATTRIBUTES = ("_random_state", "_meta", "_insertion_idx", "_ep_return", "_ep_len", "_ep_start_idx")
"""A replay buffer's sampler, storage, write position and the episode being written."""
VECTOR_BUFFER_ATTRIBUTES = ("buffers", "_offset", "_set_batch_for_children")
"""A vector buffer's sub-buffers, where each starts in the shared storage, and how they are linked to it."""
ALGORITHM_COUNTERS = {"DQN": ("_iter",), "TD3": ("_cnt", "_last"), "SAC": ()}
"""Python counters of Tianshou's algorithms that ``state_dict`` does not hold (what
:func:`algorithm_state` must find); SAC's automatic α keeps its optimiser in ``alpha._optim``."""


# --------------------------------------------------------------------------- the collector
def collector_state(collector: Collector) -> dict[str, Any]:
    """The collector's view of the episodes in progress (their last observations and infos)."""
    return {name: getattr(collector, name) for name in COLLECTOR_FIELDS}


def restore_collector(collector: Collector, state: dict[str, Any]) -> None:
    """Continue the episodes in progress that :func:`collector_state` saved."""
    for name in COLLECTOR_FIELDS:
        setattr(collector, name, state[name])


# --------------------------------------------------------------------------- the replay buffer
def _children(buffer: Any) -> list[Any]:
    """A vector buffer's sub-buffers (Tianshou keeps them in an object array); none for a plain buffer."""
    children = getattr(buffer, "buffers", None)
    return [] if children is None else list(children)


def seed_sampler(buffer: ReplayBuffer, seed: int) -> None:
    """Seed the buffer's samplers from the run's seed.

    Tianshou gives every buffer its own ``RandomState(42)``. A vector buffer picks how many
    transitions each env's sub-buffer gives with its own generator, and each sub-buffer picks
    positions with *its* generator, so seeding only the top one would leave every run, whatever
    its seed, drawing positions from the same streams (with one training env, exactly the same
    positions). Each sub-buffer gets a generator of its own derived from ``seed``.
    """
    buffer._random_state = np.random.RandomState(seed)
    for i, child in enumerate(_children(buffer)):
        child_seed = int(np.random.SeedSequence([seed, i + 1]).generate_state(1)[0])
        child._random_state = np.random.RandomState(child_seed)


def sampler_state(buffer: ReplayBuffer) -> Any:
    """The states of the generators the buffer (and its sub-buffers) sample with."""
    children = _children(buffer)
    return {"top": buffer._random_state.get_state(), "children": [c._random_state.get_state() for c in children]}


def restore_sampler(buffer: ReplayBuffer, state: Any) -> None:
    """Put :func:`sampler_state`'s result back."""
    buffer._random_state.set_state(state["top"])
    children = _children(buffer)
    for child, child_state in zip(children, state["children"], strict=True):
        child._random_state.set_state(child_state)


def buffer_nbytes(buffer: Any) -> int:
    """Bytes held by the replay buffer's arrays (sub-buffers' views of them not counted twice)."""
    seen: set[int] = set()

    def size(value: Any, depth: int) -> int:
        if id(value) in seen or depth > 6:
            return 0
        seen.add(id(value))
        if isinstance(value, np.ndarray):
            return int(value.nbytes) if value.dtype != object else sum(size(v, depth + 1) for v in value.flat)
        if isinstance(value, dict):
            return sum(size(v, depth + 1) for v in value.values())
        if isinstance(value, list | tuple):
            return sum(size(v, depth + 1) for v in value)
        if hasattr(value, "__dict__") and type(value).__module__.startswith(("tianshou", "tianshou_integration")):
            return sum(size(v, depth + 1) for k, v in vars(value).items() if k != "buffers")
        return 0

    return size(buffer, 0)


@contextlib.contextmanager
def children_detached(buffer: Any) -> Iterator[None]:
    """A vector buffer's sub-buffers hold views of its storage; pickling them would store every
    transition twice. They are detached while pickling and linked again on load (:func:`link_children`)."""
    children = list(getattr(buffer, "buffers", ()))
    saved = [child._meta for child in children]
    try:
        for child in children:
            child._meta = Batch()
        yield
    finally:
        for child, meta in zip(children, saved, strict=True):
            child._meta = meta


def link_children(buffer: Any) -> None:
    """Point an unpickled vector buffer's sub-buffers at its storage again."""
    if getattr(buffer, "buffers", None) is not None and len(buffer._meta.get_keys()) > 0:
        buffer._set_batch_for_children()


def cut_open_episodes(buffer: Any) -> None:
    """After fresh env resets: end each sub-buffer's unfinished episode at its last transition
    (truncated), so no return or n-step target runs across the reset."""
    children = getattr(buffer, "buffers", None)
    if children is None or len(buffer._meta.get_keys()) == 0:
        return
    for offset, child in zip(buffer._offset, children, strict=True):
        if len(child) == 0:
            continue
        last = int(offset + (child._insertion_idx - 1) % child.maxsize)
        if not buffer._meta.done[last]:
            buffer._meta.truncated[last] = True
            buffer._meta.done[last] = True
        child._ep_return, child._ep_len, child._ep_start_idx = 0.0, 0, child._insertion_idx


# --------------------------------------------------------------------------- the algorithm
_SCALARS = (int, float, bool)


def algorithm_state(algorithm: torch.nn.Module) -> dict[str, Any]:
    """``state_dict`` (networks, target networks, the optimisers Tianshou lists) plus every
    module's plain counters (``_iter`` of DQN, ``_cnt`` of TD3, ...: :data:`ALGORITHM_COUNTERS`)
    and optimisers kept in a module's attributes (SAC's automatic α). Tianshou keeps these as
    private attributes of its modules and lists them nowhere, so every module's scalar
    attributes are saved."""
    scalars: dict[str, dict[str, Any]] = {}
    optimizers: dict[str, Any] = {}
    for name, module in algorithm.named_modules():
        values = {k: v for k, v in vars(module).items() if type(v) in _SCALARS}
        if values:
            scalars[name] = values
        for attr, value in vars(module).items():
            if isinstance(value, torch.optim.Optimizer):
                optimizers[f"{name}:{attr}"] = value.state_dict()
    return {"state_dict": algorithm.state_dict(), "scalars": scalars, "optimizers": optimizers}


def restore_algorithm(algorithm: torch.nn.Module, state: dict[str, Any]) -> None:
    """Put :func:`algorithm_state`'s result back into a freshly built algorithm of the same kind."""
    algorithm.load_state_dict(dict(state["state_dict"]))
    modules = dict(algorithm.named_modules())
    for name, values in state["scalars"].items():
        module = modules.get(name)
        if module is None:
            raise ValueError(f"the checkpoint has counters of module {name!r}, which this algorithm lacks")
        for attr, value in values.items():
            setattr(module, attr, value)
    for key, optim_state in state["optimizers"].items():
        name, attr = key.rsplit(":", 1)
        getattr(modules[name], attr).load_state_dict(optim_state)
