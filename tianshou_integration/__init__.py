"""Tianshou integration of LLM-Explorer: guided exploration, the episode tap, training runs.

Attach the explorer to your own Tianshou objects in a few lines. Build the policy from a guided
class (it takes the arguments of the Tianshou class it mirrors)::

    from tianshou_integration import EpisodeTap, GuidedDQNPolicy, GuidedGaussianNoise, attach_discrete

    policy = GuidedDQNPolicy(model=net, action_space=space)       # DQN family
    attach_discrete(policy, explorer.cache, rng)
    noise = GuidedGaussianNoise(explorer.cache, 0.1, rng)         # DDPG / TD3 / SAC
    tap = EpisodeTap(explorer.runtime, "CartPole-v1", spec)       # the collector's episode hook
    Collector(algorithm, envs, buffer, exploration_noise=True,
              on_episode_done_hook=tap, on_step_hook=tap.on_step)

For a policy class without a guided twin, write one: ``class GuidedX(GuidedEpsGreedyMixin, X): pass``
(DQN family) or ``class ClippedX(ClipNoisyActionMixin, X): pass`` (continuous).

Importing the package is cheap: torch and Tianshou load on first use of a name below.
"""

from __future__ import annotations

import importlib
from typing import Any

from .names import ALGORITHMS, CONTINUOUS_ALGOS, DISCRETE_ALGOS

_LAZY = {
    "EnvStepCounter": ".counter",
    "EpisodeTap": ".tap",
    "GuidedEpsGreedyMixin": ".discrete",
    "GuidedDQNPolicy": ".discrete",
    "GuidedC51Policy": ".discrete",
    "GuidedQRDQNPolicy": ".discrete",
    "attach_discrete": ".discrete",
    "GuidedGaussianNoise": ".continuous",
    "ClipNoisyActionMixin": ".continuous",
    "GuidedSACPolicy": ".continuous",
    "ClippedContinuousDeterministicPolicy": ".continuous",
    "store_executed_actions": ".continuous",
    "NoisyCollectionMixin": ".discrete",
    "enable_noisy_collection": ".discrete",
    "attach_continuous": ".continuous",
    "AlgoSetup": ".algorithms",
    "build_setup": ".algorithms",
    "RunConfig": ".config",
    "resolve": ".config",
    "dump_config": ".config",
    "FastVectorReplayBuffer": ".algorithms",
    "EnvInfo": ".envs",
    "describe_env": ".envs",
    "TrainResult": ".training",
    "train": ".training",
    "RunDir": ".rundir",
    "run_experiment": ".experiment",
}

__all__ = ["ALGORITHMS", "CONTINUOUS_ALGOS", "DISCRETE_ALGOS", *sorted(_LAZY)]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
