"""Real scenario sets, recorded once per session from short real training runs (CPU)."""

from __future__ import annotations

import pytest


def _record(tmp_path_factory, env_id: str, algo: str, steps: int, every: int, **settings):
    from tianshou_integration.config import make_config
    from tianshou_integration.experiment import run_experiment
    from tianshou_integration.scenarios import record_scenarios

    root = tmp_path_factory.mktemp(f"{env_id}-{algo}")
    config = make_config(env_id, algo, {"steps": steps, "seed": 0, "explorer.provider": "none",
                                        "checkpoint.every_steps": every, "checkpoint.every_minutes": None,
                                        "checkpoint.keep": 100, "checkpoint.include_buffer": "never",
                                        "eval.episodes": 1, **settings})
    run_experiment(config, root / "run", progress=False)
    record_scenarios(root / "run", root / "set", episodes=1, max_states=64)
    return root / "set"


@pytest.fixture(scope="session")
def cartpole_set(tmp_path_factory):
    """CartPole-v1 with dqn: 4000 env steps, a checkpoint every 1000 (3 scenarios and the reference)."""
    return _record(tmp_path_factory, "CartPole-v1", "dqn", 4000, 1000)


@pytest.fixture(scope="session")
def pendulum_set(tmp_path_factory):
    """Pendulum-v1 with td3: 5000 env steps, a checkpoint every 1000."""
    return _record(tmp_path_factory, "Pendulum-v1", "td3", 5000, 1000)
