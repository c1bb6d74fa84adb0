"""The pure-speed paths (tianshou_integration.fast) compute what the plain path computes.

A seeded run in blocking mode with the scripted provider writes the same metrics.csv, updates.jsonl
and exchanges.jsonl with the fast paths on as with them off (``LLM_EXPLORER_FAST=0``), for DQN, C51,
Rainbow, TD3 and SAC; and each fast piece gives the same numbers as the code it stands in for.
Nothing here times anything.
"""

from __future__ import annotations

import json
import os
import subprocess
import sysconfig
from copy import deepcopy
from pathlib import Path

import numpy as np
import pytest
import torch
from tianshou.algorithm import DQN
from tianshou.algorithm.algorithm_base import _nstep_return
from tianshou.data import Collector
from tianshou.utils.torch_utils import policy_within_training_step

from tianshou_integration import fast
from tianshou_integration.algorithms import build_setup
from tianshou_integration.config import resolve
from tianshou_integration.envs import describe_env

ROOT = Path(__file__).resolve().parents[2]
LLM_EXPLORER = Path(sysconfig.get_path("scripts")) / "llm-explorer"
WALL_CLOCK = {"t_s", "latency_s", "time"}

RUNS = {
    "dqn": ["--env", "CartPole-v1", "--steps", "800"],
    "c51": ["--env", "CartPole-v1", "--steps", "800"],
    "rainbow": ["--env", "CartPole-v1", "--steps", "800"],
    "td3": ["--env", "Pendulum-v1", "--steps", "800", "--set", "train_envs=2",
            "--set", "algorithm.random_warmup_steps=200"],
    "sac": ["--env", "Pendulum-v1", "--steps", "800", "--set", "train_envs=2",
            "--set", "algorithm.random_warmup_steps=200"],
}
COMMON = ["--seed", "5", "--provider", "scripted", "--mode", "blocking", "--k", "2", "--eval-episodes", "2",
          "--set", "eval.every=500", "--set", "algorithm.learning_starts=200", "--set", "network.hidden_sizes=[64,64]",
          "--set", "checkpoint.enabled=false",
          # fused Adam is a setting, not a pure-speed path (it rounds differently): off in both arms
          "--set", "algorithm.fused_adam=false"]


def train(out: Path, algo: str, fast_paths: bool) -> Path:
    env = {**os.environ, "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1",
           fast.ENV_VAR: "1" if fast_paths else "0"}
    result = subprocess.run([str(LLM_EXPLORER), "train", "--algo", algo, *RUNS[algo], *COMMON, "--out", str(out)],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def jsonl(path: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k not in WALL_CLOCK}
            for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.parametrize("algo", list(RUNS))
def test_fast_paths_leave_a_seeded_run_unchanged(tmp_path, algo):
    plain = train(tmp_path / "plain", algo, fast_paths=False)
    quick = train(tmp_path / "fast", algo, fast_paths=True)
    metrics = (plain / "metrics.csv").read_bytes()
    assert len(metrics.splitlines()) > 5  # episodes and evaluations were written
    assert (quick / "metrics.csv").read_bytes() == metrics
    assert jsonl(quick / "updates.jsonl") == jsonl(plain / "updates.jsonl")
    assert jsonl(quick / "exchanges.jsonl") == jsonl(plain / "exchanges.jsonl")
    summaries = [json.loads((d / "summary.json").read_text()) for d in (plain, quick)]
    assert summaries[0]["updates_applied"] >= 1
    assert summaries[0]["gradient_steps"] == summaries[1]["gradient_steps"] > 0


# --------------------------------------------------------------------------- the pieces
def setup_for(algo: str, env_id: str, monkeypatch, *, fast_paths: bool, fused_adam: bool = False):
    monkeypatch.setenv(fast.ENV_VAR, "1" if fast_paths else "0")
    config = resolve(overrides=[(("env",), env_id, "test"), (("algo",), algo, "test"),
                                (("network", "hidden_sizes"), [32, 32], "test"),
                                (("algorithm", "fused_adam"), fused_adam, "test")])
    return build_setup(config, describe_env(env_id), cache=None)


def filled(setup, steps: int = 400):
    collector = Collector(setup.algorithm, setup.train_envs, setup.buffer, exploration_noise=True)
    collector.reset()
    with policy_within_training_step(setup.policy):
        collector.collect(n_step=steps, random=True)
    return setup.buffer


def test_plain_dqn_target_skips_only_the_unused_forward_pass(monkeypatch):
    setup = setup_for("dqn", "CartPole-v1", monkeypatch, fast_paths=True)
    algorithm = setup.algorithm
    assert isinstance(algorithm, DQN) and not algorithm.is_double and algorithm.use_target_network
    assert type(algorithm)._target_q is not DQN._target_q
    buffer = filled(setup)
    torch.nn.init.normal_(next(algorithm.policy.model.parameters()))  # online and target nets now differ
    indices = buffer.sample_indices(64)
    with torch.no_grad():
        assert torch.equal(algorithm._target_q(buffer, indices), DQN._target_q(algorithm, buffer, indices))


def test_double_dqn_keeps_the_stock_target(monkeypatch):
    setup = setup_for("double-dqn", "CartPole-v1", monkeypatch, fast_paths=True)
    buffer = filled(setup)
    indices = buffer.sample_indices(64)
    with torch.no_grad():
        assert torch.equal(setup.algorithm._target_q(buffer, indices), DQN._target_q(setup.algorithm, buffer, indices))


def test_mode_switches_are_skipped_only_for_mode_insensitive_networks(monkeypatch):
    dqn = setup_for("dqn", "CartPole-v1", monkeypatch, fast_paths=True)
    assert not fast.mode_sensitive(dqn.algorithm)
    dqn.algorithm.train(False)
    dqn.policy.train(False)
    assert all(m.training for m in dqn.policy.model.modules())  # nothing was switched
    rainbow = setup_for("rainbow", "CartPole-v1", monkeypatch, fast_paths=True)  # noisy layers
    assert fast.mode_sensitive(rainbow.algorithm)
    rainbow.algorithm.train(False)
    assert not any(m.training for m in rainbow.policy.model.modules())  # Tianshou's own switch
    plain = setup_for("dqn", "CartPole-v1", monkeypatch, fast_paths=False)
    plain.algorithm.train(False)
    assert not any(m.training for m in plain.policy.model.modules())


def test_adam_kernel_follows_the_setting_on_the_fast_path_only(monkeypatch):
    foreach = setup_for("td3", "Pendulum-v1", monkeypatch, fast_paths=True)
    fused = setup_for("td3", "Pendulum-v1", monkeypatch, fast_paths=True, fused_adam=True)
    plain = setup_for("td3", "Pendulum-v1", monkeypatch, fast_paths=False, fused_adam=True)
    for optim in (foreach.algorithm.policy_optim, foreach.algorithm.critic_optim, foreach.algorithm.critic2_optim):
        assert optim._optim.defaults["foreach"] is True and not optim._optim.defaults["fused"]
    for optim in (fused.algorithm.policy_optim, fused.algorithm.critic_optim, fused.algorithm.critic2_optim):
        assert optim._optim.defaults["fused"] is True
    assert plain.algorithm.policy_optim._optim.defaults["foreach"] is None
    assert not plain.algorithm.policy_optim._optim.defaults["fused"]
    assert resolve(overrides=[(("env",), "CartPole-v1", "test"), (("algo",), "dqn", "test")]).algorithm.fused_adam


def _train_beside_the_loop(factory, steps: int):
    """Two equal nets trained on the same data, one by torch's default Adam, one by ``factory``'s;
    returns the nets and the first net's starting parameters."""
    torch.manual_seed(0)
    nets = [torch.nn.Sequential(torch.nn.Linear(3, 32), torch.nn.ReLU(), torch.nn.Linear(32, 2)) for _ in range(2)]
    nets[1].load_state_dict(nets[0].state_dict())
    optims = [torch.optim.Adam(nets[0].parameters(), lr=1e-3, eps=1e-8),
              factory(lr=1e-3, eps=1e-8)._create_optimizer_for_params(nets[1].parameters())]
    start = [p.detach().clone() for p in nets[0].parameters()]
    for _ in range(steps):
        x, y = torch.randn(16, 3), torch.randn(16, 2)
        for net, optim in zip(nets, optims, strict=True):
            optim.zero_grad()
            ((net(x) - y) ** 2).mean().backward()
            optim.step()
    return nets, start


def test_fused_adam_matches_the_loop_up_to_rounding():
    """Not bit-identical (hence a setting), but the same update: 200 steps stay within float32 rounding."""
    nets, start = _train_beside_the_loop(fast.FusedAdamOptimizerFactory, 200)
    moved = max((a - s).abs().max().item() for a, s in zip(nets[0].parameters(), start, strict=True))
    gap = max((a - b).abs().max().item() for a, b in zip(nets[0].parameters(), nets[1].parameters(), strict=True))
    assert moved > 0.05  # the weights travelled ...
    assert gap < 1e-4 * moved  # ... and the two kernels agree to rounding


def test_foreach_adam_steps_are_bit_identical_to_the_loop():
    nets, _ = _train_beside_the_loop(fast.ForeachAdamOptimizerFactory, 50)
    assert all(torch.equal(a, b) for a, b in zip(nets[0].parameters(), nets[1].parameters(), strict=True))


def test_lean_adam_zero_grad_sets_the_gradients_to_none_as_torchs_does():
    nets, _ = _train_beside_the_loop(fast.ForeachAdamOptimizerFactory, 1)
    optim = fast.ForeachAdamOptimizerFactory(lr=1e-3, eps=1e-8)._create_optimizer_for_params(nets[1].parameters())
    assert isinstance(optim, fast.LeanAdam)
    nets[1](torch.randn(4, 3)).sum().backward()
    assert all(p.grad is not None for p in nets[1].parameters())
    optim.zero_grad()
    assert all(p.grad is None for p in nets[1].parameters())
    nets[1](torch.randn(4, 3)).sum().backward()
    optim.zero_grad(set_to_none=False)  # torch's own path: zeroed tensors
    assert all(p.grad is not None and not p.grad.any() for p in nets[1].parameters())


def test_numba_cached_n_step_return_equals_the_numpy_code():
    assert fast.enable_numba_cache()
    rng = np.random.default_rng(0)
    size, batch = 500, 64
    rew = rng.normal(size=size)
    done = rng.random(size) < 0.05
    target_q = rng.normal(size=(batch, 1)).astype(np.float32)
    first = rng.integers(0, size, batch)
    for n in (1, 3):
        stacked = np.stack([(first + k) % size for k in range(n)])
        compiled = _nstep_return(rew, done, target_q, stacked, 0.99, n)
        python = _nstep_return.py_func(rew, done, target_q, stacked, 0.99, n)
        np.testing.assert_array_equal(compiled, python)


def test_foreach_polyak_update_is_bit_identical_to_tianshous(monkeypatch):
    from tianshou.utils.lagged_network import polyak_parameter_update

    quick = setup_for("td3", "Pendulum-v1", monkeypatch, fast_paths=True)
    lagged = quick.algorithm._lagged_networks
    assert type(lagged).polyak_parameter_update is fast._ForeachPolyak.polyak_parameter_update
    torch.manual_seed(0)
    pairs = lagged._lagged_network_pairs
    copies = []
    for pair in pairs:
        for p in pair.source.parameters():
            torch.nn.init.normal_(p)
        copies.append([p.detach().clone() for p in pair.target.parameters()])
    expected = []
    for pair, copy in zip(pairs, copies, strict=True):
        target = deepcopy(pair.target)
        for p, c in zip(target.parameters(), copy, strict=True):
            p.data.copy_(c)
        for _ in range(3):
            polyak_parameter_update(target, pair.source, 0.005)
        expected.append([p.detach().clone() for p in target.parameters()])
    for _ in range(3):
        lagged.polyak_parameter_update(0.005)
    for pair, want in zip(pairs, expected, strict=True):
        got = list(pair.target.parameters())
        assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True))
        assert not all(torch.equal(a, b) for a, b in zip(got, pair.source.parameters(), strict=True))


def test_target_networks_skip_eval_switches_only_when_mode_insensitive(monkeypatch):
    from tianshou.utils.lagged_network import EvalModeModuleWrapper

    quick = setup_for("td3", "Pendulum-v1", monkeypatch, fast_paths=True)
    wrappers = [m for m in quick.algorithm.modules() if isinstance(m, EvalModeModuleWrapper)]
    assert wrappers and all(type(m) is not EvalModeModuleWrapper for m in wrappers)
    actor_old = quick.algorithm.actor_old
    actor_old.module.train(True)
    actor_old(np.zeros((2, 3), dtype=np.float32))
    assert actor_old.module.training  # no switch: nothing in it computes differently
    rainbow = setup_for("rainbow", "CartPole-v1", monkeypatch, fast_paths=True)
    assert not any(isinstance(m, fast._NoEvalSwitch) for m in rainbow.algorithm.modules())  # noisy layers


def test_device_lookup_reads_the_first_parameter_and_follows_its_data():
    from tianshou.utils.torch_utils import torch_device

    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    assert fast.torch_device(net) == torch_device(net) == torch.device("cpu")
    assert fast._FIRST_PARAMETER[net] is net[0].weight
    net.to(torch.float64)  # parameters change their data in place: the remembered one follows
    assert fast._FIRST_PARAMETER[net].dtype == torch.float64
    assert fast.torch_device(torch.nn.ReLU()) == torch.device("cpu")  # no parameters


@pytest.mark.parametrize("algo", ["td3", "sac"])
def test_actor_critic_target_reads_obs_next_alone_with_the_same_result(monkeypatch, algo):
    from tianshou.algorithm.modelfree.ddpg import ActorCriticOffPolicyAlgorithm

    setup = setup_for(algo, "Pendulum-v1", monkeypatch, fast_paths=True)
    algorithm = setup.algorithm
    assert type(algorithm)._target_q is not ActorCriticOffPolicyAlgorithm._target_q
    buffer = filled(setup)
    indices = buffer.sample_indices(64)
    results = []
    for target_q in (algorithm._target_q, lambda b, i: ActorCriticOffPolicyAlgorithm._target_q(algorithm, b, i)):
        torch.manual_seed(3)  # TD3's target smoothing noise and SAC's action samples
        with torch.no_grad():
            results.append(target_q(buffer, indices))
    assert results[0].shape[0] == 64
    assert torch.equal(results[0], results[1])


INFOS = {
    # numpy integers, as Tianshou's collector passes them
    "env ids": [{"env_id": np.int64(0)}, {"env_id": np.int64(1)}, {"env_id": np.int64(2)}],
    "python ints": [{"env_id": 0}, {"env_id": 1}, {"env_id": 2}],
    "several scalar types": [{"env_id": i, "x": 0.5 * i, "flag": i == 1} for i in range(3)],
    "empty": [{}, {}],
    "some empty": [{}, {"env_id": 1}],
    "mixed types in a key": [{"a": 1}, {"a": 2.5}],
    "numpy scalars": [{"a": np.float32(1.0), "b": np.bool_(True)}, {"a": np.float32(2.0), "b": np.bool_(False)}],
    "numpy and python ints": [{"a": np.int64(1)}, {"a": 2}],
    "nested": [{"a": {"b": 1}}, {"a": {"b": 2}}],
    "different keys": [{"a": 1}, {"b": 2}],
}


@pytest.mark.parametrize("case", list(INFOS))
def test_collector_info_batch_equals_tianshous(monkeypatch, case):
    from tianshou.data import collector

    stock = fast._stock_info_batch  # Tianshou's function, taken before fast patches the collector
    assert stock.__module__ == collector.__name__
    monkeypatch.setenv(fast.ENV_VAR, "1")
    infos = np.array(INFOS[case], dtype=object)
    ours, theirs = fast.policy_info_batch(infos.copy()), stock(infos.copy())
    assert sorted(ours.keys()) == sorted(theirs.keys())
    # built directly, without Tianshou's function
    if case in ("env ids", "python ints", "several scalar types", "numpy scalars"):
        monkeypatch.setattr(fast, "_stock_info_batch", None)  # would fail if called
        assert sorted(fast.policy_info_batch(infos.copy()).keys()) == sorted(theirs.keys())
    for key in theirs.keys():  # noqa: SIM118 (iterating a Batch yields its rows)
        if isinstance(theirs[key], np.ndarray):
            assert ours[key].dtype == theirs[key].dtype
            assert np.array_equal(ours[key], theirs[key])
        else:
            assert ours[key] == theirs[key]


def test_td3_critics_step_together_with_the_same_parameters_as_tianshous_update(monkeypatch):
    from tianshou.algorithm.modelfree.td3 import TD3

    setup = setup_for("td3", "Pendulum-v1", monkeypatch, fast_paths=True, fused_adam=True)
    quick = setup.algorithm
    assert isinstance(quick, fast._FastTD3UpdateMixin)
    buffer = filled(setup)
    stock = deepcopy(quick)
    before = [p.detach().clone() for p in quick.parameters()]
    with policy_within_training_step(quick.policy), policy_within_training_step(stock.policy):
        for _ in range(3):  # the first also updates the actor and the target networks
            indices = buffer.sample_indices(32)
            batch = quick._preprocess_batch(buffer[indices], buffer, indices)
            ours = quick._update_with_batch(deepcopy(batch))
            theirs = TD3._update_with_batch(stock, deepcopy(batch))
            assert (ours.critic1_loss, ours.critic2_loss, ours.actor_loss) == \
                (theirs.critic1_loss, theirs.critic2_loss, theirs.actor_loss)
    after = list(quick.parameters())
    assert len(after) > 10 and all(not torch.equal(a, b) for a, b in zip(after, before, strict=True))  # all trained
    for a, b in zip(after, stock.parameters(), strict=True):  # critics, actor and the three target networks
        assert torch.equal(a, b)
    for ours_optim, their_optim in ((quick.critic_optim, stock.critic_optim),
                                    (quick.critic2_optim, stock.critic2_optim)):
        for p, q in zip(ours_optim._optim.param_groups[0]["params"], their_optim._optim.param_groups[0]["params"],
                        strict=True):
            assert torch.equal(ours_optim._optim.state[p]["exp_avg_sq"], their_optim._optim.state[q]["exp_avg_sq"])


def test_td3_with_clipped_critic_gradients_keeps_tianshous_update(monkeypatch):
    setup = setup_for("td3", "Pendulum-v1", monkeypatch, fast_paths=False)
    setup.algorithm.critic_optim._max_grad_norm = 1.0
    assert not fast._td3_critics_separable(setup.algorithm)
