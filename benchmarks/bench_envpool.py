"""EnvPool's Atari against ours: the frames for a recorded action sequence, and env steps/s.

Issue 16 asks for vectorised environments that scale. This compares EnvPool (C++ threads, its own
preprocessing) with our gymnasium preprocessing (``tianshou_integration.atari.make_atari_env``) in
Tianshou's in-process and worker-process vector envs (``env_workers``):

* frames: one env each, sticky actions and reset no-ops off in both (both random), FIRE on reset,
  84x84 grey, 4-frame stacks, frame skip 4 with the last two frames max-pooled; the same recorded
  random action sequence; per step, whether the stacks are equal, and the pixel differences;
* speed: random actions, ``--envs`` environments, env steps/s of each backend (interleaved).

EnvPool is a benchmark-only dependency (``pip install -c constraints.txt -e '.[envpool]'``).

    .venv/bin/python benchmarks/bench_envpool.py --game Breakout --steps 2000 --envs 1,8
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from tianshou_integration.atari import make_atari_env


def envpool_env(game: str, n: int, seed: int):
    import envpool

    return envpool.make_gymnasium(f"{game}-v5", num_envs=n, batch_size=n, seed=seed, stack_num=4, frame_skip=4,
                                  noop_max=1, repeat_action_probability=0.0, episodic_life=False,
                                  reward_clip=False, use_fire_reset=True, img_height=84, img_width=84,
                                  gray_scale=True, max_episode_steps=27_000)


def ours_env(game: str):
    return make_atari_env(f"ALE/{game}-v5", noop_max=0, repeat_action_probability=0.0, max_episode_steps=27_000)


def compare_frames(game: str, steps: int, seed: int) -> dict:
    """Step both with the same actions; a terminated episode resets both."""
    ours, pool = ours_env(game), envpool_env(game, 1, seed)
    actions = np.random.default_rng(seed).integers(0, ours.action_space.n, size=steps)
    obs_a, _ = ours.reset(seed=seed)
    obs_b = pool.reset()[0][0]
    equal, diffs, rewards_equal, ends_equal, episodes = [], [], 0, 0, 0
    for act in actions:
        equal.append(bool(np.array_equal(obs_a, obs_b)))
        diffs.append(np.abs(obs_a.astype(np.int16) - obs_b.astype(np.int16)))
        obs_a, rew_a, term_a, trunc_a, _ = ours.step(int(act))
        obs_b, rew_b, term_b, trunc_b, _ = pool.step(np.array([act]))
        obs_b, done_b = obs_b[0], bool(term_b[0] or trunc_b[0])
        rewards_equal += float(rew_a) == float(rew_b[0])
        ends_equal += (term_a or trunc_a) == done_b
        if term_a or trunc_a or done_b:
            episodes += 1
            obs_a, _ = ours.reset()
            obs_b = pool.reset()[0][0]
    ours.close()
    pool.close()
    d = np.stack(diffs)
    return {"steps": steps, "stacks_equal": float(np.mean(equal)), "first_unequal_step": equal.index(False)
            if False in equal else None, "pixels_differing": float((d > 0).mean()),
            "mean_abs_diff": float(d.mean()), "max_abs_diff": int(d.max()),
            "rewards_equal": rewards_equal / steps, "episode_ends_equal": ends_equal / steps,
            "episodes": episodes}


def speed(game: str, backend: str, n: int, steps: int, seed: int) -> float:
    """Env steps/s with random actions (resets of finished envs included)."""
    if backend == "envpool":
        env = envpool_env(game, n, seed)
        actions = env.action_space.n
    else:
        from tianshou.env import DummyVectorEnv, ShmemVectorEnv

        cls = {"dummy": DummyVectorEnv, "shmem": ShmemVectorEnv}[backend]
        env = cls([lambda: make_atari_env(f"ALE/{game}-v5") for _ in range(n)])
        env.seed(seed)
        actions = env.action_space[0].n
    env.reset()
    acts = np.random.default_rng(seed).integers(0, actions, size=(steps // n + 1, n))
    start = time.perf_counter()
    for act in acts:
        _, _, term, trunc, _ = env.step(act)
        done = np.flatnonzero(term | trunc)
        if len(done):
            env.reset(done)
    elapsed = time.perf_counter() - start
    env.close()
    return len(acts) * n / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--game", default="Breakout")
    parser.add_argument("--steps", type=int, default=2000, help="env steps per measurement")
    parser.add_argument("--envs", default="1,8", help="comma-separated numbers of envs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reps", type=int, default=2, help="interleaved repetitions of the speed runs")
    args = parser.parse_args()
    frames = compare_frames(args.game, min(args.steps, 1000), args.seed)
    print(json.dumps({"frames": frames}))
    for n in (int(x) for x in args.envs.split(",")):
        results: dict[str, list[float]] = {"dummy": [], "shmem": [], "envpool": []}
        for rep in range(args.reps):
            for backend in results:
                results[backend].append(speed(args.game, backend, n, args.steps, args.seed + rep))
        print(json.dumps({"envs": n, **{k: [round(v, 1) for v in vals] for k, vals in results.items()},
                          "median_ratio_envpool_dummy": round(float(np.median(results["envpool"]) /
                                                                    np.median(results["dummy"])), 2),
                          "median_ratio_shmem_dummy": round(float(np.median(results["shmem"]) /
                                                                  np.median(results["dummy"])), 2)}))


if __name__ == "__main__":
    main()
