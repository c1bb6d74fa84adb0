"""Environments: resolve a gymnasium id, describe its action space, build vector envs.

Everything the CLI needs to reject bad input early lives here, with messages that name the bad
value and what is allowed.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from explorer_pipeline.errors import UsageError
from explorer_pipeline.types import ActionSpec

from .atari import is_atari


@dataclass(frozen=True)
class EnvInfo:
    """What the rest of the integration needs to know about one environment.

    :param env_id: the id as the user gave it (``CartPole-v1``, ``mymodule:MyEnv-v0``).
    :param spec: the action spec the LLM is asked about.
    :param obs_shape: shape of one observation (``obs`` part for dict observations with a mask).
    :param max_episode_steps: the time limit, when the env has one.
    :param reward_threshold: gymnasium's "solved" threshold, when the env declares one.
    :param has_mask: observations are dicts ``{"obs": ..., "mask": ...}`` (action masking).
    """

    env_id: str
    spec: ActionSpec
    obs_shape: tuple[int, ...]
    max_episode_steps: int | None
    reward_threshold: float | None
    has_mask: bool = False

    @property
    def is_atari(self) -> bool:
        """An ``ALE/*`` environment: preprocessed frames, convolutional networks."""
        return is_atari(self.env_id)

    @property
    def is_discrete(self) -> bool:
        """The environment has a discrete action space."""
        return self.spec.is_discrete



def make_env(env_id: str, **kwargs: object) -> gym.Env:
    """``gym.make`` with one-line errors: unknown ids and missing modules become UsageError.

    ``module:EnvId`` imports ``module`` first (gymnasium's own convention), so a custom env
    registers itself on import. A discrete observation space (FrozenLake, CliffWalking, Taxi) is
    one-hot encoded with gymnasium's ``FlattenObservation``, so the Q network sees a vector
    instead of a cell index.
    """
    if ":" in env_id:
        module = env_id.split(":", 1)[0]
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise UsageError(f"cannot import the module of environment {env_id!r}: {exc}") from None
    if is_atari(env_id):
        from .atari import register_ale

        register_ale()
    try:
        env = gym.make(env_id, **kwargs)
    except gym.error.Error as exc:  # NameNotFound, VersionNotFound, NamespaceNotFound, ...
        raise UsageError(f"unknown environment {env_id!r}: {exc}") from None
    except ImportError as exc:  # e.g. Box2D/MuJoCo extras missing
        raise UsageError(f"environment {env_id!r} needs a package that is not installed: {exc}") from None
    if isinstance(env.observation_space, gym.spaces.Discrete):
        env = gym.wrappers.FlattenObservation(env)
    return env


def describe_env(env_id: str, atari: Any = None) -> EnvInfo:
    """Make the env once and describe it. Raises UsageError for unsupported action spaces.

    Atari environments are described as the agent sees them (``atari``: the run's
    :class:`~tianshou_integration.config.AtariConfig`, default settings if None): stacked grey
    frames, and ALE's action meanings as the action labels.
    """
    env = _make_for(env_id, atari, training=False) if is_atari(env_id) else make_env(env_id)
    try:
        space = env.action_space
        obs_space = env.observation_space
        has_mask = isinstance(obs_space, gym.spaces.Dict) and {"obs", "mask"} <= set(obs_space.spaces)
        if has_mask:
            obs_space = obs_space["obs"]
        if isinstance(space, gym.spaces.Discrete):
            spec = ActionSpec.discrete(int(space.n))
            if is_atari(env_id):
                from .atari import action_labels

                spec = ActionSpec(spec.kind, spec.n, tuple(action_labels(env_id)), spec.low, spec.high)
        elif isinstance(space, gym.spaces.Box) and len(space.shape) == 1:
            if not (np.all(np.isfinite(space.low)) and np.all(np.isfinite(space.high))):
                raise UsageError(f"environment {env_id!r} has an unbounded Box action space; bounds are needed")
            spec = ActionSpec.continuous(space.low.tolist(), space.high.tolist())
        else:
            raise UsageError(
                f"environment {env_id!r} has action space {space}; supported: Discrete, 1-D Box"
            )
        if obs_space.shape is None:
            raise UsageError(f"environment {env_id!r} has an observation space without a shape: {obs_space}")
        gym_spec = env.spec
        return EnvInfo(
            env_id=env_id,
            spec=spec,
            obs_shape=tuple(obs_space.shape),
            max_episode_steps=gym_spec.max_episode_steps if gym_spec else None,
            reward_threshold=gym_spec.reward_threshold if gym_spec else None,
            has_mask=has_mask,
        )
    finally:
        env.close()


def _make_for(env_id: str, atari: Any, *, training: bool) -> gym.Env:
    """An Atari env preprocessed as ``atari`` (an ``AtariConfig``) says."""
    from .atari import make_atari_env

    if atari is None:
        from .config import AtariConfig

        atari = AtariConfig()
    from .atari import register_ale

    register_ale()
    try:
        return make_atari_env(env_id, frame_stack=atari.frame_stack, screen_size=atari.screen_size,
                              noop_max=atari.noop_max,
                              terminal_on_life_loss=atari.terminal_on_life_loss and training)
    except gym.error.Error as exc:  # NameNotFound, VersionNotFound, ...
        raise UsageError(f"unknown environment {env_id!r}: {exc}") from None


def env_factory(env_id: str, config: Any = None, *, training: bool = True) -> Callable[[], gym.Env]:
    """A factory for Tianshou's vector envs; ``config`` (a ``RunConfig``) sets Atari preprocessing."""

    def make() -> gym.Env:
        if is_atari(env_id):
            return _make_for(env_id, config.atari if config is not None else None, training=training)
        return make_env(env_id)

    return make
