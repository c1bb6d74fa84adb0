"""Tiny gymnasium environments for the Tianshou integration tests.

Importing this module registers them, so ``tests.tianshou.envs:MaskedChoice-v0`` works as an
``--env`` value (gymnasium's ``module:EnvId`` convention).
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium.envs.classic_control import CartPoleEnv


class MaskedChoiceEnv(gym.Env):
    """Four actions; observations are ``{"obs": ..., "mask": ...}`` with ``LEGAL`` actions legal.

    Reward 1 for action 3, episodes last ``LENGTH`` steps.
    """

    LEGAL = (0, 1, 1, 1)
    LENGTH = 20

    def __init__(self) -> None:
        self.action_space = gym.spaces.Discrete(4)
        self.observation_space = gym.spaces.Dict({
            "obs": gym.spaces.Box(-1.0, 1.0, shape=(4,), dtype=np.float32),
            "mask": gym.spaces.MultiBinary(4),
        })
        self._t = 0

    def _obs(self) -> dict:
        return {"obs": np.full(4, self._t / self.LENGTH, dtype=np.float32), "mask": np.array(self.LEGAL, dtype=np.int8)}

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._t = 0
        return self._obs(), {}

    def step(self, action):
        if not self.LEGAL[int(action)]:
            raise AssertionError(f"illegal action {action} taken")
        self._t += 1
        return self._obs(), float(int(action) == 3), False, self._t >= self.LENGTH, {}


class InterruptingCartPole(CartPoleEnv):
    """CartPole that raises KeyboardInterrupt once ``BUDGET`` steps were taken by all instances."""

    BUDGET = 200
    steps_taken = 0

    def step(self, action):
        type(self).steps_taken += 1
        if type(self).steps_taken > type(self).BUDGET:
            raise KeyboardInterrupt
        return super().step(action)


gym.register(id="MaskedChoice-v0", entry_point=MaskedChoiceEnv, max_episode_steps=MaskedChoiceEnv.LENGTH)
gym.register(id="InterruptingCartPole-v0", entry_point=InterruptingCartPole, max_episode_steps=500)
gym.register(id="Undescribed-v0", entry_point="gymnasium.envs.classic_control:CartPoleEnv", max_episode_steps=50)
