"""What LLM-guided exploration costs the training thread.

Measures, on this machine:

1. one ``add_exploration_noise`` call (DQN, a batch of 10 envs): Tianshou's uniform epsilon-greedy
   vs the guided mixin reading the exploration cache;
2. one noise draw (DDPG/TD3, 10 x act_dim): ``GaussianNoise`` vs ``GuidedGaussianNoise``;
3. collection throughput on CartPole (10 Dummy envs, eps = 1, no gradient steps): stock policy,
   guided policy without a runtime, guided policy + episode tap + a live ``ExplorerRuntime``
   whose handler answers instantly (async mode), and the same in blocking mode.

Run: ``python benchmarks/bench_overhead.py [--steps 20000] [--repeat 3]``. Prints a table; the
median of ``--repeat`` runs is reported. Timings depend on machine load: compare rows of one
invocation only.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import gymnasium as gym
import numpy as np
import torch
from tianshou.algorithm.modelfree.dqn import DiscreteQLearningPolicy
from tianshou.data import Batch, Collector, VectorReplayBuffer
from tianshou.env import DummyVectorEnv
from tianshou.exploration import GaussianNoise
from tianshou.utils.net.common import Net
from tianshou.utils.torch_utils import policy_within_training_step

from explorer_pipeline.cache import ExplorationCache
from explorer_pipeline.runtime import ExplorerRuntime
from explorer_pipeline.types import ActionSpec, ExplorationUpdate
from tianshou_integration import EpisodeTap, GuidedDQNPolicy, GuidedGaussianNoise


class InstantHandler:
    """A pipeline that answers at once with the same distribution."""

    async def handle(self, record, history, version):
        return ExplorationUpdate(version, "distribution", (0.3, 0.7))


def per_call_us(fn: Callable[[], object], n: int) -> float:
    fn()
    started = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - started) / n * 1e6


def micro(n: int) -> list[tuple[str, float]]:
    torch.manual_seed(0)
    space = gym.spaces.Discrete(4)
    batch = Batch(obs=np.zeros((10, 4), dtype=np.float32), info=Batch())
    act = np.zeros(10, dtype=np.int64)
    stock = DiscreteQLearningPolicy(model=Net(state_shape=4, action_shape=4), action_space=space, eps_training=0.1)
    guided = GuidedDQNPolicy(model=Net(state_shape=4, action_shape=4), action_space=space, eps_training=0.1)
    cache = ExplorationCache(ActionSpec.discrete(4))
    cache.publish(ExplorationUpdate(1, "distribution", (0.1, 0.2, 0.3, 0.4)))
    guided.attach_explorer(cache, np.random.default_rng(0))
    rows = []
    with policy_within_training_step(stock), policy_within_training_step(guided):
        rows.append(("add_exploration_noise, stock eps-greedy (10 envs), us",
                     per_call_us(lambda: stock.add_exploration_noise(act.copy(), batch), n)))
        rows.append(("add_exploration_noise, guided (10 envs), us",
                     per_call_us(lambda: guided.add_exploration_noise(act.copy(), batch), n)))
    bias_cache = ExplorationCache(ActionSpec.continuous([-1.0] * 6, [1.0] * 6))
    bias_cache.publish(ExplorationUpdate(1, "bias", (0.1, -0.2, 0.0, 0.3, 0.0, -0.1)))
    gaussian, guided_noise = GaussianNoise(sigma=0.1), GuidedGaussianNoise(bias_cache, 0.1, np.random.default_rng(0))
    rows.append(("GaussianNoise (10 x 6), us", per_call_us(lambda: gaussian((10, 6)), n)))
    rows.append(("GuidedGaussianNoise (10 x 6), us", per_call_us(lambda: guided_noise((10, 6)), n)))
    return rows


def collect_rate(variant: str, steps: int) -> float:
    torch.manual_seed(0)
    envs = DummyVectorEnv([lambda: gym.make("CartPole-v1") for _ in range(10)])
    envs.seed(0)
    space = gym.spaces.Discrete(2)
    cls = DiscreteQLearningPolicy if variant == "stock" else GuidedDQNPolicy
    policy = cls(model=Net(state_shape=4, action_shape=2, hidden_sizes=(64, 64)), action_space=space,
                 eps_training=1.0)
    cache = ExplorationCache(ActionSpec.discrete(2))
    runtime = None
    if variant != "stock":
        policy.attach_explorer(cache, np.random.default_rng(0))
    if variant in ("tap+runtime async", "tap+runtime blocking"):
        runtime = ExplorerRuntime(InstantHandler(), cache).start()
    mode = "blocking" if variant.endswith("blocking") else "async"
    tap = EpisodeTap(runtime, "CartPole-v1", cache.spec, mode=mode, timeout_s=10.0) if runtime else None
    collector = Collector(policy, envs, VectorReplayBuffer(steps + 1000, 10), exploration_noise=True,
                          on_episode_done_hook=tap, on_step_hook=tap.on_step if tap else None)
    collector.reset()
    started = time.perf_counter()
    with policy_within_training_step(policy):
        collector.collect(n_step=steps)
    elapsed = time.perf_counter() - started
    if runtime is not None:
        runtime.close()
    envs.close()
    return steps / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20_000, help="env steps per collection run")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--calls", type=int, default=20_000, help="calls per micro-benchmark")
    args = parser.parse_args()
    torch.set_num_threads(1)
    runs = [dict(micro(args.calls)) for _ in range(args.repeat)]
    rows = [(name, statistics.median(run[name] for run in runs)) for name in runs[0]]
    for variant in ("stock", "guided", "tap+runtime async", "tap+runtime blocking"):
        rate = statistics.median(collect_rate(variant, args.steps) for _ in range(args.repeat))
        rows.append((f"CartPole collect, 10 envs, {variant}, env steps/s", rate))
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value:10.1f}")


if __name__ == "__main__":
    main()
