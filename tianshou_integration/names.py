"""Algorithm names, importable without torch (the CLI validates against them before training)."""

from __future__ import annotations

DISCRETE_ALGOS = ("dqn", "double-dqn", "dueling-dqn", "c51", "qrdqn", "rainbow")
"""DQN family: LLM-guided epsilon-greedy (a distribution over actions)."""

CONTINUOUS_ALGOS = ("ddpg", "td3", "sac")
"""Actor-critic: LLM-guided Gaussian noise (a bias per action dimension)."""

ALGORITHMS = DISCRETE_ALGOS + CONTINUOUS_ALGOS

PRESETS = ("default", "paper")
"""Presets shipped in the wheel (``tianshou_integration/presets/NAME.yaml``)."""
