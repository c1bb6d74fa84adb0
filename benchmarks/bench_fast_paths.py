"""CPU time of one gradient step and one vector-env step with the pure-speed paths on and off.

Each arm runs in its own process (``LLM_EXPLORER_FAST=1`` / ``0``): build the algorithm from the
``default`` preset, fill the buffer with 2 000 random steps, then time 300 ``algorithm.update``
calls and 300 collects of one step per env with ``time.process_time`` (CPU time of this process,
which hardly depends on what else runs on the machine).

    .venv/bin/python benchmarks/bench_fast_paths.py                      # DQN CartPole-v1, TD3 Pendulum-v1
    .venv/bin/python benchmarks/bench_fast_paths.py --work Pendulum-v1:sac
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time


def worker(env_id: str, algo: str, reps: int) -> None:
    from tianshou.utils.torch_utils import policy_within_training_step

    from tianshou_integration import fast
    from tianshou_integration.algorithms import build_setup
    from tianshou_integration.config import resolve
    from tianshou_integration.envs import describe_env
    from tianshou_integration.fast_collector import FastCollector  # Tianshou's loop when the paths are off
    from tianshou_integration.training import prepare_policy

    config = resolve(overrides=[(("env",), env_id, "bench"), (("algo",), algo, "bench")])
    setup = build_setup(config, describe_env(config.env), cache=None)
    prepare_policy(setup.policy)
    collector = FastCollector(setup.algorithm, setup.train_envs, setup.buffer, exploration_noise=True)
    collector.reset()
    with policy_within_training_step(setup.policy), fast.acting():
        collector.collect(n_step=2000, random=True)

    def update() -> None:
        with policy_within_training_step(setup.policy):
            setup.algorithm.update(buffer=setup.buffer, sample_size=config.algorithm.batch_size)

    def collect() -> None:
        with policy_within_training_step(setup.policy), fast.acting():
            collector.collect(n_step=len(setup.train_envs))

    for name, fn in (("gradient step", update), ("vector env step", collect)):
        fn()
        started = time.process_time()
        for _ in range(reps):
            fn()
        ms = (time.process_time() - started) / reps * 1e3
        print(f"| {algo} {env_id} | {name} | {'on' if fast.enabled() else 'off'} | {ms:.2f} |", flush=True)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(sys.argv[2], sys.argv[3], int(sys.argv[4]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", default="CartPole-v1:dqn,Pendulum-v1:td3", help="ENV:ALGO, comma-separated")
    parser.add_argument("--reps", type=int, default=300)
    args = parser.parse_args()
    print("| work | what | fast paths | CPU ms each |")
    print("| --- | --- | --- | --- |")
    for item in args.work.split(","):
        env_id, algo = item.split(":")
        for flag in ("1", "0"):
            subprocess.run([sys.executable, __file__, "--worker", env_id, algo, str(args.reps)], check=True,
                           env={**os.environ, "LLM_EXPLORER_FAST": flag})


if __name__ == "__main__":
    main()
