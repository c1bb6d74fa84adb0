"""The exploration baselines noisy-dqn (NoisyNet-DQN), rnd-dqn (RND-DQN) and icm-dqn (ICM-DQN) on
real environments: RND's intrinsic reward, NoisyNet's noise while collecting and in evaluation, the
intrinsic rewards reaching the n-step targets, a real ALE game end to end with the scripted provider
(and the guided draw where there is one), and resume of a killed run.
"""

from __future__ import annotations

import copy
import itertools
import json
import signal

import numpy as np
import pytest
import torch
from tianshou.data import Batch, Collector
from tianshou.utils.net.discrete import NoisyLinear
from tianshou.utils.torch_utils import policy_within_training_step, torch_train_mode

from explorer_pipeline.cache import ExplorationCache
from explorer_pipeline.types import ExplorationUpdate, Provenance
from tianshou_integration import EnvStepCounter, EpisodeTap, build_setup, describe_env
from tianshou_integration.atari import make_atari_env
from tianshou_integration.config import make_config
from tianshou_integration.rnd import build_rnd
from tianshou_integration.training import evaluate, prepare_policy, train

from .test_atari import SMALL_ATARI, invoke, read_jsonl
from .test_resume import assert_same_run, copy_of, newest_checkpoint, run, sigkill_after_checkpoint

BREAKOUT = "ALE/Breakout-v5"


def frames(env_id: str, n: int, seed: int) -> np.ndarray:
    """``n`` stacked-frame observations of a real ALE game under random actions."""
    env = make_atari_env(env_id)
    env.action_space.seed(seed)
    obs, _ = env.reset(seed=seed)
    out = []
    while len(out) < n:
        out.append(np.asarray(obs))
        obs, _, terminated, truncated, _ = env.step(env.action_space.sample())
        if terminated or truncated:
            obs, _ = env.reset()
    env.close()
    return np.stack(out)


# --------------------------------------------------------------------------- RND
def test_rnd_reward_falls_for_states_seen_repeatedly_and_not_for_new_ones():
    torch.set_num_threads(1)
    torch.manual_seed(0)
    breakout = frames(BREAKOUT, 96, seed=0)
    seen, unseen = breakout[:48:2], breakout[1:48:2]  # frames of the same stretch of play, every other one
    new = frames("ALE/Pong-v5", 24, seed=0)  # another game: never seen
    rnd = build_rnd((4, 84, 84), atari=True, hidden_sizes=(512,))
    for frame in breakout[:48]:  # what collection does, one vector step at a time
        rnd.observe(frame[None])
    before = {name: rnd.intrinsic_reward(x).mean() for name, x in (("seen", seen), ("new", new))}
    optim = torch.optim.Adam(rnd.predictor.parameters(), lr=1e-4)  # the presets' rate
    for _ in range(60):
        loss = rnd.error(seen).mean()
        optim.zero_grad()
        loss.backward()
        optim.step()
    after = {name: rnd.intrinsic_reward(x).mean() for name, x in (("seen", seen), ("new", new), ("unseen", unseen))}
    assert after["seen"] < 0.2 * before["seen"]  # states seen over and over are no longer novel
    assert after["new"] > 0.5 * before["new"]  # another game's stay about as novel as they were
    assert after["new"] > 5 * after["seen"]
    assert after["unseen"] < 0.5 * after["new"]  # nearby frames of the same play generalise


def test_rnd_normalisers_use_the_newest_frame_and_round_trip_through_the_state_dict():
    info = describe_env(BREAKOUT)
    rnd = build_rnd(info.obs_shape, atari=True, hidden_sizes=(512,))
    stack = np.stack([np.full((4, 84, 84), v, np.uint8) for v in (0, 50, 100)])
    stack[:, -1] = np.arange(3)[:, None, None] * 20  # the newest frame differs from the others
    rnd.observe(stack)
    assert rnd.obs_norm.mean.shape == (1, 84, 84)
    assert rnd.obs_norm.mean[0, 0, 0] == pytest.approx(20.0)  # the mean of 0, 20, 40: the newest frames only
    state = {k: v for k, v in rnd.state_dict().items()}
    other = build_rnd(info.obs_shape, atari=True, hidden_sizes=(512,))
    assert other.obs_norm.count == 0
    other.load_state_dict(state)
    assert other.obs_norm.count == rnd.obs_norm.count == 3
    assert np.array_equal(other.obs_norm.mean, rnd.obs_norm.mean)
    assert np.array_equal(other.get_state()["returns"], rnd.get_state()["returns"])
    assert np.allclose(other.intrinsic_reward(stack), rnd.intrinsic_reward(stack))


def test_rnd_dqn_learns_from_the_intrinsic_n_step_return():
    """The learning target is DQN's n-step return plus coef x the n-step intrinsic return, and the
    predictor takes a step on every update; the buffer keeps the game's rewards."""
    info = describe_env("CartPole-v1")
    config = make_config("CartPole-v1", "rnd-dqn", {"network.hidden_sizes": [32, 32], "algorithm.n_step": 3,
                                                    "algorithm.rnd.coef": 2.0, "train_envs": 2})
    setup = build_setup(config, info, cache=None)
    algorithm = setup.algorithm
    collector = Collector(algorithm, setup.train_envs, setup.buffer, exploration_noise=True)
    collector.reset()
    with policy_within_training_step(setup.policy):
        collector.collect(n_step=300)
    assert algorithm.rnd.obs_norm.count == 300  # every collected observation was observed
    assert set(np.unique(setup.buffer.rew[setup.buffer.sample_indices(0)])) == {1.0}  # CartPole's own rewards
    batch, indices = setup.buffer.sample(64)
    with policy_within_training_step(setup.policy):
        plain = algorithm.compute_nstep_return(batch=copy.deepcopy(batch), buffer=setup.buffer, indices=indices,
                                               target_q_fn=algorithm._target_q, gamma=algorithm.gamma, n_step=3)
        mixed = algorithm._preprocess_batch(copy.deepcopy(batch), setup.buffer, indices)
    first = algorithm.rnd.intrinsic_reward(batch.obs_next)
    intrinsic = algorithm.intrinsic_nstep_return(first, setup.buffer, indices)
    assert np.allclose(mixed.returns.flatten().numpy(), plain.returns.flatten().numpy() + 2.0 * intrinsic, atol=1e-4)
    assert (intrinsic > 0).all()
    # more than one step of intrinsic reward unless the transition ends its episode (or is the newest one)
    end = setup.buffer.done.copy()
    end[setup.buffer.unfinished_index()] = True
    ends = end[indices]
    assert np.allclose(intrinsic[ends], first[ends])
    assert (intrinsic[~ends] > first[~ends]).all()
    weights = [p.detach().clone() for p in algorithm.rnd.predictor.parameters()]
    target = [p.detach().clone() for p in algorithm.rnd.target.parameters()]
    with policy_within_training_step(setup.policy):
        algorithm.update(buffer=setup.buffer, sample_size=64)
    assert any(not torch.equal(a, b) for a, b in zip(weights, algorithm.rnd.predictor.parameters(), strict=True))
    assert all(torch.equal(a, b) for a, b in zip(target, algorithm.rnd.target.parameters(), strict=True))
    setup.close()


# --------------------------------------------------------------------------- ICM
def test_icm_dqn_curiosity_reward_reaches_the_n_step_targets_where_tianshous_wrapper_drops_it():
    from tianshou.algorithm.modelbased.icm import ICMOffPolicyWrapper

    info = describe_env("CartPole-v1")
    config = make_config("CartPole-v1", "icm-dqn", {"network.hidden_sizes": [32, 32], "algorithm.n_step": 3,
                                                    "algorithm.icm.reward_scale": 1.0, "train_envs": 2})
    setup = build_setup(config, info, cache=None)
    algorithm = setup.algorithm
    dqn = algorithm.wrapped_algorithm
    collector = Collector(algorithm, setup.train_envs, setup.buffer, exploration_noise=True)
    collector.reset()
    with policy_within_training_step(setup.policy):
        collector.collect(n_step=300)
    batch, indices = setup.buffer.sample(64)
    with policy_within_training_step(setup.policy):
        plain = dqn.compute_nstep_return(batch=copy.deepcopy(batch), buffer=setup.buffer, indices=indices,
                                         target_q_fn=dqn._target_q, gamma=dqn.gamma, n_step=3)
        stock = ICMOffPolicyWrapper._preprocess_batch(algorithm, copy.deepcopy(batch), setup.buffer, indices)
        mixed = algorithm._preprocess_batch(copy.deepcopy(batch), setup.buffer, indices)
    # Tianshou's wrapper adds the curiosity reward to batch.rew, which the n-step return never reads
    assert (stock.rew > batch.rew).all()
    assert torch.allclose(stock.returns, plain.returns)
    with torch.no_grad():
        first = algorithm.model(batch.obs, batch.act, batch.obs_next)[0].numpy()
    intrinsic = algorithm.intrinsic_nstep_return(first.astype(np.float64), setup.buffer, indices)
    assert (intrinsic > 0).all()
    assert np.allclose(mixed.returns.flatten().numpy(), plain.returns.flatten().numpy() + intrinsic, atol=1e-4)
    assert set(np.unique(setup.buffer.rew[setup.buffer.sample_indices(0)])) == {1.0}  # the game's rewards kept
    weights = [p.detach().clone() for p in algorithm.model.parameters()]
    with policy_within_training_step(setup.policy):
        algorithm.update(buffer=setup.buffer, sample_size=64)
    assert any(not torch.equal(a, b) for a, b in zip(weights, algorithm.model.parameters(), strict=True))
    setup.close()


# --------------------------------------------------------------------------- NoisyNet
def test_noisy_dqn_noise_differs_between_collection_steps_and_is_off_in_evaluation():
    info = describe_env("CartPole-v1")
    config = make_config("CartPole-v1", "noisy-dqn", {"network.hidden_sizes": [32, 32], "train_envs": 2,
                                                      "test_envs": 2, "explorer.provider": "scripted"})
    assert config.algorithm.epsilon.start == config.algorithm.epsilon.end == 0.0  # no epsilon-greedy
    cache = ExplorationCache(info.spec)
    setup = build_setup(config, info, cache=cache)
    policy = prepare_policy(setup.policy)
    assert policy._explorer_cache is None  # nothing for the LLM to steer: the guided draw is a no-op
    layers = [m for m in policy.model.modules() if isinstance(m, NoisyLinear)]
    assert len(layers) == 3  # every layer of the MLP
    seen: list[tuple[bool, torch.Tensor]] = []
    layers[0].register_forward_hook(lambda m, _i, _o: seen.append((m.training, m.eps_p.detach().clone())))
    collector = Collector(setup.algorithm, setup.train_envs, setup.buffer, exploration_noise=True)
    collector.reset()
    with policy_within_training_step(policy):
        collector.collect(n_step=10)  # five vector steps
    assert len(seen) == 5 and all(training for training, _ in seen)
    assert all(not torch.equal(a, b) for (_, a), (_, b) in itertools.pairwise(seen))
    seen.clear()
    test_collector = Collector(setup.algorithm, setup.test_envs, setup.eval_buffer())
    returns = []
    for _ in range(2):
        setup.test_envs.seed(5)
        returns.append(evaluate(setup, test_collector, 2))
    assert seen and not any(training for training, _ in seen)  # mean weights only
    assert returns[0] == returns[1]
    obs = Batch(obs=np.asarray(setup.buffer.obs[:8]), info=Batch())
    with torch.no_grad(), torch_train_mode(policy, enabled=False):
        greedy = [policy(obs).logits for _ in range(2)]
        with policy_within_training_step(policy):
            exploring = [policy(obs).logits for _ in range(2)]
    assert torch.equal(greedy[0], greedy[1]) and not torch.equal(exploring[0], exploring[1])
    setup.close()


# --------------------------------------------------------------------------- a real ALE game
@pytest.mark.parametrize("algo", ["noisy-dqn", "rnd-dqn", "icm-dqn"])
def test_each_baseline_trains_on_breakout_with_the_scripted_provider(algo, tmp_path):
    out = tmp_path / algo
    sets = [a for key, value in {**SMALL_ATARI, "algorithm.learning_starts": 500}.items()
            for a in ("--set", f"{key}={value}")]
    result = invoke("--env", BREAKOUT, "--algo", algo, "--preset", "paper", "--steps", "700",
                    "--provider", "scripted", "--mode", "blocking", *sets, "--out", str(out))
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["env_steps"] >= 700 and summary["gradient_steps"] > 0 and summary["episodes"] >= 1
    assert summary["final_eval_return"] is not None and summary["llm_requests"] >= 1
    config = json.loads((out / "manifest.json").read_text())["config"]["algorithm"]
    if algo == "noisy-dqn":
        assert config["noisy_std"] == 1.0 and config["epsilon"]["start"] == 0.0
        assert summary["updates_applied"] == 0  # the LLM answered, and nothing used it
    else:
        assert config["rnd"]["coef"] == 0.1 if algo == "rnd-dqn" else config["icm"]["reward_scale"] == 0.01
        assert summary["updates_applied"] >= 1
        assert [u for u in read_jsonl(out / "updates.jsonl") if u["source"] == "llm"]


def test_rnd_dqn_guided_draw_follows_the_cache_on_breakout():
    info = describe_env(BREAKOUT)
    config = make_config(BREAKOUT, "rnd-dqn", {**SMALL_ATARI, "algorithm.epsilon.schedule": "linear",
                                               "algorithm.epsilon.start": 1.0, "algorithm.epsilon.end": 1.0,
                                               "algorithm.learning_starts": 400, "test_envs": 1},
                         preset="paper", describe=lambda _: info)
    cache = ExplorationCache(info.spec)
    counter = EnvStepCounter()
    setup = build_setup(config, info, cache=cache, counter=counter)
    probs = (0.1, 0.2, 0.3, 0.4)
    cache.publish(ExplorationUpdate(version=1, kind=info.spec.update_kind, values=probs,
                                    provenance=Provenance(source_episode=0)))
    result = train(setup, steps=600, eval_episodes=1, tap=EpisodeTap(None, BREAKOUT, info.spec, counter=counter),
                   progress=False)
    assert result.env_steps >= 600 and result.gradient_steps > 0
    actions = setup.buffer.act[setup.buffer.sample_indices(0)]
    assert np.allclose(np.bincount(actions, minlength=4) / len(actions), probs, atol=0.06)
    assert cache.applied_at(1) is not None
    rnd = setup.algorithm.rnd
    assert rnd.obs_norm.count >= 600 and rnd.obs_norm.mean.shape == (1, 84, 84)
    setup.close()


# --------------------------------------------------------------------------- resume of a killed run
STEPS = 1600


def run_args(algo: str) -> list[str]:
    return ["--env", "CartPole-v1", "--algo", algo, "--steps", str(STEPS), "--seed", "4", "--provider", "scripted",
            "--mode", "blocking", "--eval-episodes", "2", "--set", "eval.every=800",
            "--set", "network.hidden_sizes=[32,32]", "--set", "checkpoint.every_steps=400"]


@pytest.mark.parametrize("algo", ["noisy-dqn", "rnd-dqn", "icm-dqn"])
def test_a_killed_run_resumes_to_the_uninterrupted_runs_results(algo, tmp_path):
    reference = tmp_path / "reference"
    done = run(*run_args(algo), "--out", str(reference))
    assert done.returncode == 0, done.stderr[-3000:]
    killed = tmp_path / "killed"
    proc = sigkill_after_checkpoint(run_args(algo), killed, 800)
    step = newest_checkpoint(killed)
    assert proc.returncode == -signal.SIGKILL and not (killed / "summary.json").exists()
    out = copy_of(killed, tmp_path / "resumed")
    resumed = run("--resume", str(out))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_run(reference, out)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["resumes"][-1]["from_step"] == step and manifest["resumes"][-1]["exact"] is True
