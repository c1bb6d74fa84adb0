"""This project against Stable-Baselines3 on the same work, interleaved in one run.

Each row trains the same algorithm, network, batch size, replay buffer, number of envs and
gradient steps per env step in both libraries, one torch thread each, ``--provider none`` and
evaluation disabled on our side (``--set eval.every=10000000 --eval-episodes 1``). The peers
alternate (ours, SB3, ours, SB3, ... one separate process each, started from this one), so load
drifts on a shared machine hit both alike; read the ratio of the medians, or the per-pair ratios.

    .venv/bin/pip install -c constraints.txt -e '.[bench]'      # stable-baselines3
    .venv/bin/python benchmarks/bench_peers.py                  # all rows, 20 000 steps, seeds 0 1
    .venv/bin/python benchmarks/bench_peers.py --rows dqn-cartpole --steps 20000 --seeds 0,1,2
    .venv/bin/python benchmarks/bench_peers.py --rows dqn-atari --seeds 0

Rows:

dqn-cartpole  DQN, CartPole-v1, our ``default`` preset: 8 envs, MLP [256, 256], batch 128, buffer
              100 000, 256 env steps then 128 gradient steps (0.5 per env step), learning from 1 000.
td3-pendulum  TD3, Pendulum-v1, our ``default`` preset: 4 envs, [128, 128], batch 128, buffer 20 000,
              one step of every env then 2 gradient steps (0.5 per env step), uniform random actions
              for the first 1 000 steps, learning from 1 000.
dqn-atari     DQN, ALE/Breakout-v5, the ``paper`` preset's Nature-CNN and batch (256), 1 env, buffer
              10 000, one gradient step per env step: the learning phase only (learning from step
              256, the ``--atari-steps`` default is 768), ε ≈ 1 in both (the preset's multiplicative
              decay barely moves in so few steps). SB3 gets our own Atari env (same preprocessing).

Per run: env steps/s of training (ours: ``steps / (train_wall_s - eval_wall_s)`` from
summary.json, i.e. the training loop without its final greedy evaluation episode, which SB3's
timed part does not run either; SB3: ``steps / (time of model.learn)``), process wall time, gradient steps, final
greedy return (one episode; ours: the final evaluation, SB3: ``evaluate_policy(deterministic=True)``
after the timed part), and the CPU seconds (user + system) of the whole process, start-up included:
on a machine shared with other work, env steps per CPU second hardly depend on the load, while env
steps/s do. Prints a table per row and one JSON object at the end.

What differs unavoidably: SB3's DQN clips gradients (max norm 10) and skips the forward pass when it
explores; it syncs the target net every N env steps where we sync every N gradient steps (the same
count of syncs per run within a few); the random-action warm-up draws from different generators.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CLI = str(Path(sys.executable).with_name("llm-explorer"))
OURS_COMMON = ["--provider", "none", "--set", "eval.every=10000000", "--eval-episodes", "1"]

ROWS: dict[str, dict] = {
    "dqn-cartpole": {
        "env": "CartPole-v1", "algo": "dqn", "preset": "default", "ours_extra": [],
    },
    "td3-pendulum": {
        "env": "Pendulum-v1", "algo": "td3", "preset": "default", "ours_extra": [],
    },
    "dqn-atari": {
        "env": "ALE/Breakout-v5", "algo": "dqn", "preset": "paper",
        # the learning phase: a full batch first, then one gradient step per env step
        "ours_extra": ["--set", "algorithm.learning_starts=256", "--device", "cpu"],
    },
}


# --------------------------------------------------------------------------- our side
def run_ours(row: str, seed: int, steps: int, workdir: Path, *, plain: bool = False) -> dict:
    """One ``llm-explorer train`` process; ``plain``: with the pure-speed paths off (``LLM_EXPLORER_FAST=0``)."""
    spec = ROWS[row]
    out = workdir / f"ours-{row}-s{seed}-{time.monotonic_ns()}"
    env = {**os.environ, "TQDM_DISABLE": "1", "LLM_EXPLORER_FAST": "0" if plain else "1"}
    cmd = [CLI, "train", "--env", spec["env"], "--algo", spec["algo"], "--preset", spec["preset"],
           "--steps", str(steps), "--seed", str(seed), "--out", str(out), *OURS_COMMON, *spec["ours_extra"]]
    started, cpu_before = time.perf_counter(), children_cpu_s()
    subprocess.run(cmd, check=True, capture_output=True, env=env)
    process_s, cpu_s = time.perf_counter() - started, children_cpu_s() - cpu_before
    summary = json.loads((out / "summary.json").read_text())
    training_s = summary["train_wall_s"] - summary["eval_wall_s"]  # SB3's timed part evaluates nothing either
    return {"peer": "ours-plain" if plain else "ours", "seed": seed, "env_steps": summary["env_steps"],
            "steps_per_s": summary["env_steps"] / training_s, "process_s": process_s, "cpu_s": cpu_s,
            "gradient_steps": summary["gradient_steps"], "final_return": summary["final_eval_return"]}


# --------------------------------------------------------------------------- SB3 side (a child process)
def sb3_worker(row: str, seed: int, steps: int) -> dict:
    """Train SB3 on ``row`` configured to the same work as our preset; runs in a child process."""
    import numpy as np
    import torch
    from stable_baselines3 import DQN, TD3
    from stable_baselines3.common.evaluation import evaluate_policy
    from stable_baselines3.common.noise import NormalActionNoise
    from stable_baselines3.common.vec_env import DummyVecEnv

    from tianshou_integration.config import resolve
    from tianshou_integration.envs import env_factory

    spec = ROWS[row]
    torch.set_num_threads(1)
    overrides = [(("env",), spec["env"], "bench"), (("algo",), spec["algo"], "bench"), (("steps",), steps, "bench")]
    config = resolve(overrides=overrides, preset=spec["preset"])
    hp, n_envs = config.algorithm, config.train_envs
    hidden = list(config.network.hidden_sizes)
    env = DummyVecEnv([env_factory(config.env, config, training=True) for _ in range(n_envs)])
    eval_env = DummyVecEnv([env_factory(config.env, config, training=False)])
    env.seed(seed)
    eval_env.seed(seed + 10_000)
    rollout = max(1, hp.collect_per_step // n_envs)  # env steps of each env between updates
    grad_steps = max(1, round(hp.updates_per_step * rollout * n_envs))
    if row == "dqn-cartpole":
        model = DQN("MlpPolicy", env, learning_rate=hp.lr, buffer_size=hp.buffer_size,
                    learning_starts=hp.learning_starts, batch_size=hp.batch_size, gamma=hp.gamma,
                    train_freq=(rollout, "step"), gradient_steps=grad_steps,
                    # ours syncs every N gradient steps; at 0.5 per env step that is 2N env steps
                    target_update_interval=int(hp.target_update_freq / hp.updates_per_step),
                    exploration_fraction=hp.epsilon.decay_steps / steps, exploration_initial_eps=hp.epsilon.start,
                    exploration_final_eps=hp.epsilon.end,
                    policy_kwargs={"net_arch": hidden, "optimizer_kwargs": {"eps": hp.adam_eps}},
                    seed=seed, device="cpu", verbose=0)
    elif row == "dqn-atari":
        model = DQN("CnnPolicy", env, learning_rate=hp.lr, buffer_size=hp.buffer_size,
                    learning_starts=256, batch_size=hp.batch_size, gamma=hp.gamma,
                    train_freq=(rollout, "step"), gradient_steps=grad_steps,
                    target_update_interval=hp.target_update_freq,
                    exploration_fraction=1.0, exploration_initial_eps=1.0,
                    exploration_final_eps=hp.epsilon.factor ** steps,
                    optimize_memory_usage=True, replay_buffer_kwargs={"handle_timeout_termination": False},
                    policy_kwargs={"net_arch": [], "features_extractor_kwargs": {"features_dim": hidden[-1]},
                                   "optimizer_kwargs": {"eps": hp.adam_eps}},
                    seed=seed, device="cpu", verbose=0)
    elif row == "td3-pendulum":
        act_dim = env.action_space.shape[0]
        noise = NormalActionNoise(np.zeros(act_dim), hp.noise.sigma * np.ones(act_dim))
        model = TD3("MlpPolicy", env, learning_rate=hp.lr, buffer_size=hp.buffer_size,
                    learning_starts=hp.random_warmup_steps, batch_size=hp.batch_size, gamma=hp.gamma,
                    tau=hp.tau, train_freq=(rollout, "step"), gradient_steps=grad_steps,
                    action_noise=noise, policy_delay=hp.update_actor_freq, target_policy_noise=hp.policy_noise,
                    target_noise_clip=hp.noise_clip,
                    policy_kwargs={"net_arch": hidden, "optimizer_kwargs": {"eps": hp.adam_eps}},
                    seed=seed, device="cpu", verbose=0)
    else:
        raise ValueError(row)
    started = time.perf_counter()
    model.learn(total_timesteps=steps)
    learn_s = time.perf_counter() - started
    mean, _ = evaluate_policy(model, eval_env, n_eval_episodes=1, deterministic=True)
    env.close()
    eval_env.close()
    return {"peer": "sb3", "seed": seed, "env_steps": int(model.num_timesteps),
            "steps_per_s": model.num_timesteps / learn_s, "gradient_steps": int(model._n_updates),
            "final_return": float(mean)}


def children_cpu_s() -> float:
    """User + system CPU seconds of the child processes that have ended so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_sb3(row: str, seed: int, steps: int) -> dict:
    started, cpu_before = time.perf_counter(), children_cpu_s()
    proc = subprocess.run([sys.executable, __file__, "--sb3-worker", row, str(seed), str(steps)], check=True,
                          capture_output=True, text=True)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["process_s"], result["cpu_s"] = time.perf_counter() - started, children_cpu_s() - cpu_before
    return result


# --------------------------------------------------------------------------- report
def report(row: str, runs: list[dict]) -> dict:
    ours = [r for r in runs if r["peer"] == "ours"]
    sb3 = [r for r in runs if r["peer"] == "sb3"]
    plain = [r for r in runs if r["peer"] == "ours-plain"]
    print(f"\n## {row}")
    print("| peer | seed | env steps | env steps/s | process s | process CPU s | env steps per CPU s | gradient steps "
          "| final greedy return |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in runs:
        print(f"| {r['peer']} | {r['seed']} | {r['env_steps']} | {r['steps_per_s']:.0f} | {r['process_s']:.1f} | "
              f"{r['cpu_s']:.1f} | {r['env_steps'] / r['cpu_s']:.0f} | {r['gradient_steps']} | "
              f"{r['final_return']:.1f} |")
    cpu = {peer: statistics.median(r["env_steps"] / r["cpu_s"] for r in runs if r["peer"] == peer)
           for peer in ("ours", "sb3", "ours-plain") if any(r["peer"] == peer for r in runs)}
    print("median env steps per process CPU second (whole process, start-up included): "
          + ", ".join(f"{peer} {v:.0f}" for peer, v in cpu.items())
          + f"; ours / SB3 {cpu['ours'] / cpu['sb3']:.2f}"
          + (f", plain / SB3 {cpu['ours-plain'] / cpu['sb3']:.2f}" if "ours-plain" in cpu else ""))
    pairs = [o["steps_per_s"] / s["steps_per_s"] for o, s in zip(ours, sb3, strict=True)]
    med_o = statistics.median(r["steps_per_s"] for r in ours)
    med_s = statistics.median(r["steps_per_s"] for r in sb3)
    print(f"median env steps/s: ours {med_o:.0f}, SB3 {med_s:.0f}; ratio {med_o / med_s:.2f} "
          f"(per pair: {', '.join(f'{p:.2f}' for p in pairs)}); load now: {os.getloadavg()[0]:.1f}")
    out = {"row": row, "ours_median": med_o, "sb3_median": med_s, "ratio": med_o / med_s, "pair_ratios": pairs,
           "steps_per_cpu_s": cpu, "runs": runs}
    if plain:
        med_p = statistics.median(r["steps_per_s"] for r in plain)
        plain_pairs = [p["steps_per_s"] / s["steps_per_s"] for p, s in zip(plain, sb3, strict=True)]
        print(f"plain path (LLM_EXPLORER_FAST=0): {med_p:.0f} env steps/s, ratio to SB3 {med_p / med_s:.2f} "
              f"(per pair: {', '.join(f'{p:.2f}' for p in plain_pairs)}); fast / plain {med_o / med_p:.2f}")
        out.update(plain_median=med_p, plain_ratio=med_p / med_s)
    return out


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--sb3-worker":
        row, seed, steps = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
        print(json.dumps(sb3_worker(row, seed, steps)))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated, of {', '.join(ROWS)}")
    parser.add_argument("--steps", type=int, default=20_000, help="env steps of the CartPole and Pendulum rows")
    parser.add_argument("--atari-steps", type=int, default=768, help="env steps of the Atari row")
    parser.add_argument("--seeds", default="0,1", help="comma-separated seeds; one ours/SB3 pair per seed")
    parser.add_argument("--plain", action="store_true",
                        help="also run ours with the pure-speed paths off (LLM_EXPLORER_FAST=0) in every repetition")
    args = parser.parse_args()
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        parser.error(f"unknown row(s) {', '.join(unknown)}; available: {', '.join(ROWS)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-peers-") as tmp:
        for row in rows:
            steps = args.atari_steps if row == "dqn-atari" else args.steps
            runs: list[dict] = []
            arms = ["ours", "sb3", *(["ours-plain"] if args.plain else [])]
            for i, seed in enumerate(seeds):
                # rotate which peer goes first so none always runs right after another
                order = arms[i % len(arms):] + arms[:i % len(arms)]
                for arm in order:
                    if arm == "sb3":
                        r = run_sb3(row, seed, steps)
                    else:
                        r = run_ours(row, seed, steps, Path(tmp), plain=arm == "ours-plain")
                    runs.append(r)
                    print(f"{row} seed {seed} {r['peer']}: {r['steps_per_s']:.0f} steps/s", file=sys.stderr, flush=True)
            results.append(report(row, runs))
    print(json.dumps({"steps": args.steps, "atari_steps": args.atari_steps, "rows": results}))


if __name__ == "__main__":
    main()
