"""Algorithm names, importable without torch (the CLI validates against them before training)."""

from __future__ import annotations

DISCRETE_ALGOS = ("dqn", "double-dqn", "dueling-dqn", "c51", "qrdqn", "rainbow", "curl", "noisy-dqn", "rnd-dqn",
                  "icm-dqn")
"""DQN family: LLM-guided epsilon-greedy (a distribution over actions)."""

EXPLORATION_BASELINES = ("noisy-dqn", "rnd-dqn", "icm-dqn")
"""DQN with another exploration method (NoisyNet, random network distillation, the intrinsic
curiosity module): noisy-dqn and rnd-dqn are the paper's baselines. noisy-dqn has no
epsilon-random draw, so an LLM cannot guide it."""

PIXEL_ALGOS = ("curl",)
"""Algorithms that learn only from stacked frames (Atari): CURL's augmentation crops images."""

CONTINUOUS_ALGOS = ("ddpg", "td3", "sac")
"""Actor-critic: LLM-guided Gaussian noise (a bias per action dimension)."""

ALGORITHMS = DISCRETE_ALGOS + CONTINUOUS_ALGOS

PRESETS = ("default", "paper")
"""Presets shipped in the wheel (``tianshou_integration/presets/NAME.yaml``)."""
