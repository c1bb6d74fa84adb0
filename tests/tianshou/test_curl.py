"""CURL (``--algo curl``) on real ALE games: augmentation, momentum encoder, contrastive loss,
guided exploration, the run through the CLI, and resume after SIGKILL.

Sized for CI: frames come from a few hundred steps of real Pong / Breakout, runs are a couple of
thousand env steps with few gradient steps.
"""

from __future__ import annotations

import json
import re
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from tianshou.algorithm.optim import AdamOptimizerFactory
from tianshou.utils.torch_utils import policy_within_training_step

from explorer_pipeline.cache import ExplorationCache
from explorer_pipeline.types import ExplorationUpdate, Provenance
from tianshou_integration import EnvStepCounter, EpisodeTap, build_setup, describe_env
from tianshou_integration.atari import make_atari_env
from tianshou_integration.checkpoint import complete_checkpoints
from tianshou_integration.cli import train as train_command
from tianshou_integration.config import ConfigError, make_config
from tianshou_integration.curl import CURL, CurlQNetwork, KeyEncoder, info_nce, momentum_update, random_shift
from tianshou_integration.discrete import GuidedC51Policy
from tianshou_integration.tianshou_state import algorithm_state, restore_algorithm
from tianshou_integration.training import train

from .test_resume import assert_same_run, newest_checkpoint, run, sigkill_after_checkpoint

PONG, BREAKOUT = "ALE/Pong-v5", "ALE/Breakout-v5"


# --------------------------------------------------------------------------- real frames
@pytest.fixture(scope="module")
def pong_frames() -> np.ndarray:
    """48 stacks ``(4, 84, 84)`` uint8 from random play in Pong, 12 steps apart."""
    env = make_atari_env(PONG)
    rng = np.random.default_rng(0)
    obs, _ = env.reset(seed=0)
    stacks = []
    for t in range(48 * 12):
        obs, _, terminated, truncated, _ = env.step(int(rng.integers(env.action_space.n)))
        if terminated or truncated:
            obs, _ = env.reset()
        if t % 12 == 11:
            stacks.append(np.array(obs))
    env.close()
    return np.stack(stacks)


ATARI_100K = ("Alien", "Amidar", "Assault", "Asterix", "BankHeist", "BattleZone", "Boxing", "Breakout",
              "ChopperCommand", "CrazyClimber", "DemonAttack", "Freeway", "Frostbite", "Gopher", "Hero", "Jamesbond",
              "Kangaroo", "Krull", "KungFuMaster", "MsPacman", "Pong", "PrivateEye", "Qbert", "RoadRunner", "Seaquest",
              "UpNDown")


@pytest.fixture(scope="module")
def atari_100k_frames() -> np.ndarray:
    """One stack from each of the 26 Atari-100k games, after 30 random steps.

    Stacks of one game differ in about 1 % of their pixels, less than a 4-pixel shift changes;
    telling them apart takes CURL thousands of steps. Different games can be told apart in a few
    dozen, which is what a unit test can afford.
    """
    stacks = []
    for game in ATARI_100K:
        env = make_atari_env(f"ALE/{game}-v5")
        rng = np.random.default_rng(0)
        obs, _ = env.reset(seed=0)
        for _ in range(30):
            obs, _, terminated, truncated, _ = env.step(int(rng.integers(env.action_space.n)))
            if terminated or truncated:
                obs, _ = env.reset()
        stacks.append(np.array(obs))
        env.close()
    return np.stack(stacks)


def small_curl(n_actions: int = 6, *, momentum: float = 0.999, lr: float = 1e-4, hidden: int = 64,
               latent_dim: int = 32) -> CURL:
    import gymnasium as gym

    torch.set_num_threads(1)  # as training runs do (torch_threads: 1)
    torch.manual_seed(0)
    net = CurlQNetwork((4, 84, 84), n_actions, num_atoms=11, hidden=hidden, latent_dim=latent_dim)
    policy = GuidedC51Policy(model=net, action_space=gym.spaces.Discrete(n_actions), num_atoms=11)
    return CURL(policy=policy, optim=AdamOptimizerFactory(lr=lr), n_step_return_horizon=3, target_update_freq=100,
                momentum=momentum)


# --------------------------------------------------------------------------- augmentation
def reference_shift(frames: torch.Tensor, a_r: int, s_r: int, a_c: int, s_c: int, pad: int = 4) -> torch.Tensor:
    """The CURL authors' pipeline on one stack, written out: crop, replicate-pad, crop."""
    _, h, w = frames.shape
    crop = frames[:, a_r:a_r + h - pad, a_c:a_c + w - pad].float()
    padded = F.pad(crop[None], (pad, pad, pad, pad), mode="replicate")[0]
    return padded[:, s_r:s_r + h, s_c:s_c + w].to(frames.dtype)


def shift_index(first: int, second: int, size: int = 84, pad: int = 4) -> torch.Tensor:
    """Source row (or column) of each output row after crop at ``first``, pad, crop at ``second``."""
    return first + (torch.arange(size) + second - pad).clamp(0, size - pad - 1)


def test_augmentation_keeps_dtype_shape_and_the_stacks_frames_aligned(pong_frames):
    frames = torch.as_tensor(pong_frames)
    out = random_shift(frames)
    assert out.dtype == torch.uint8 and out.shape == frames.shape and not torch.equal(out, frames)
    # frames 0 and 1 of each stack replaced by their row and column numbers, 2 and 3 are Pong's
    grid = torch.arange(84, dtype=torch.uint8)
    coded = frames.clone()
    coded[:, 0], coded[:, 1] = grid[:, None], grid[None, :]
    out = random_shift(coded)
    rows, cols = out[:, 0, :, 0].long(), out[:, 1, 0, :].long()
    assert torch.equal(out[:, 0], rows[:, :, None].expand(-1, -1, 84).to(torch.uint8))
    assert torch.equal(out[:, 1], cols[:, None, :].expand(-1, 84, -1).to(torch.uint8))
    candidates = {(a, s): shift_index(a, s) for a in range(5) for s in range(5)}
    found = []
    for i in range(len(coded)):
        # all four frames moved by the same rows and columns
        assert torch.equal(out[i], coded[i][:, rows[i]][:, :, cols[i]])
        row_shift = [k for k, index in candidates.items() if torch.equal(rows[i], index)]
        col_shift = [k for k, index in candidates.items() if torch.equal(cols[i], index)]
        assert row_shift and col_shift, f"stack {i} is not a crop/pad/crop of its input"
        # and that is exactly the CURL authors' crop, replicate-pad, crop
        (a_r, s_r), (a_c, s_c) = row_shift[0], col_shift[0]
        assert torch.equal(out[i], reference_shift(coded[i], a_r, s_r, a_c, s_c))
        found.append((tuple(rows[i].tolist()), tuple(cols[i].tolist())))
    assert len(set(found)) > 10  # offsets are drawn per stack
    assert torch.equal(random_shift(frames, pad=0), frames)


def test_augmentation_offsets_cover_every_position():
    frames = torch.arange(84, dtype=torch.uint8).repeat(84, 1)[None, None].repeat(2000, 1, 1, 1)
    out = random_shift(frames)
    # column 42 sits away from the borders: it shows source column 42 + a + s - 4, a and s in [0, 4]
    shifts = (out[:, 0, 0, 42].long() - 42).unique().tolist()
    assert shifts == list(range(-4, 5))


# --------------------------------------------------------------------------- contrastive learning
def positives_first(algorithm: CURL, batch: np.ndarray) -> float:
    """Fraction of anchors whose positive scores above every negative of the batch (fresh shifts)."""
    with torch.no_grad():
        _, logits = algorithm.contrastive_loss(batch)
    negatives = logits.masked_fill(torch.eye(len(batch), dtype=torch.bool), float("-inf")).max(dim=1).values
    return (logits.diagonal() > negatives).float().mean().item()


def test_contrastive_loss_falls_on_a_fixed_batch_and_positives_score_above_negatives(atari_100k_frames):
    batch = atari_100k_frames
    algorithm = small_curl(lr=2e-3, hidden=256, latent_dim=128)  # the presets' sizes
    before = positives_first(algorithm, batch)
    losses = []
    for _ in range(60):
        loss, _ = algorithm.contrastive_loss(batch)
        algorithm.optim.step(loss)
        algorithm.key_encoder.update(algorithm.query, algorithm.momentum)
        losses.append(loss.item())
    assert np.mean(losses[-5:]) < 0.3 * np.mean(losses[:5]), losses
    after = positives_first(algorithm, batch)
    assert before < 0.3 and after >= 0.75, (before, after)


def test_info_nce_is_the_cross_entropy_of_bilinear_scores():
    torch.manual_seed(0)
    q, k, W = torch.randn(8, 5), torch.randn(8, 5), torch.randn(5, 5)
    loss, logits = info_nce(q, k, W)
    raw = q @ W @ k.T
    expected = F.cross_entropy(raw * 0.1, torch.arange(8))  # the row shift does not change the loss
    torch.testing.assert_close(loss, expected)
    assert torch.all(logits.max(dim=1).values == 0)


# --------------------------------------------------------------------------- momentum encoder
def test_momentum_update_matches_its_formula_exactly():
    algorithm = small_curl(momentum=0.9)
    key, query = algorithm.key_encoder, algorithm.query
    keys = list(key.parameters())
    queries = KeyEncoder.query_parameters(query)
    assert all(torch.equal(k, q) for k, q in zip(keys, queries, strict=True))  # starts as a copy
    assert not any(k.requires_grad for k in keys)
    optimised = {id(p) for group in algorithm.optim._optim.param_groups for p in group["params"]}
    assert not optimised & {id(k) for k in keys} and id(query.W) in optimised
    with torch.no_grad():
        for q in queries:
            q.add_(torch.randn_like(q))
    before = [k.detach().clone() for k in keys]
    key.update(query, 0.9)
    for k, k_old, q in zip(keys, before, queries, strict=True):
        assert torch.equal(k, 0.9 * k_old + (1 - 0.9) * q)
        assert not torch.equal(k, k_old)
    with pytest.raises(ValueError, match="2 key parameters but 1"):
        momentum_update(keys[:2], queries[:1], 0.5)


def test_a_gradient_step_trains_query_w_and_rl_head_and_then_moves_the_key(pong_frames):
    info = describe_env(PONG)
    config = make_config(PONG, "curl", {"steps": 300, "algorithm.buffer_size": 1000, "algorithm.batch_size": 16,
                                        "test_envs": 1, "eval.episodes": 1}, describe=lambda _: info)
    setup = build_setup(config, info, cache=None)
    algorithm = setup.algorithm
    assert isinstance(algorithm, CURL) and algorithm.n_step == 20 and algorithm.momentum == 0.999
    assert algorithm.contrastive_coef == 0.01  # Pong: the authors' smaller weight
    tap = EpisodeTap(None, PONG, info.spec)
    train(setup, steps=64, eval_episodes=1, tap=tap, progress=False)  # fills the buffer (learning starts at 1600)
    query, key = algorithm.query, algorithm.key_encoder
    queries_before = [q.detach().clone() for q in KeyEncoder.query_parameters(query)]
    keys_before = [k.detach().clone() for k in key.parameters()]
    W_before, head_before = query.W.detach().clone(), query.advantage[0].mu_W.detach().clone()
    with policy_within_training_step(setup.policy):
        stats = algorithm.update(buffer=setup.buffer, sample_size=16)
    setup.close()
    assert np.isfinite(stats.rl_loss) and np.isfinite(stats.contrastive_loss) and stats.contrastive_loss > 0
    assert not torch.equal(W_before, query.W) and not torch.equal(head_before, query.advantage[0].mu_W)
    m = algorithm.momentum
    for k, k_old, q in zip(key.parameters(), keys_before, KeyEncoder.query_parameters(query), strict=True):
        assert torch.equal(k, m * k_old + (1 - m) * q)  # after the step, from the updated query
    assert any(not torch.equal(q_old, q) for q_old, q in zip(queries_before, KeyEncoder.query_parameters(query),
                                                             strict=True))


# --------------------------------------------------------------------------- configuration
def test_presets_carry_the_authors_settings():
    info = describe_env(BREAKOUT)
    paper = make_config(BREAKOUT, "curl", preset="paper", describe=lambda _: info)
    hp = paper.algorithm
    assert (paper.steps, paper.episodes, hp.n_step, hp.batch_size, hp.learning_starts) == (310_000, 500, 20, 32, 1600)
    assert (hp.target_update_freq, hp.updates_per_step, hp.buffer_size, hp.adam_eps) == (2000, 1.0, 100_000, 1.5e-4)
    assert (hp.epsilon.schedule, hp.epsilon.start, hp.epsilon.end) == ("multiplicative", 0.5, 0.1)
    assert hp.prioritized.enabled and (hp.prioritized.alpha, hp.prioritized.beta) == (0.5, 0.4)
    assert (hp.curl.momentum, hp.curl.loss_coef, hp.curl.latent_dim, hp.curl.max_grad_norm) == (0.999, 1.0, 128, 10.0)
    assert paper.network.hidden_sizes == (256,)
    default = make_config(BREAKOUT, "curl", describe=lambda _: info)
    assert default.steps == 100_000 and default.algorithm.n_step == 20 and default.algorithm.batch_size == 32
    with pytest.raises(ConfigError, match=re.escape("algorithm.curl.momentum must be < 1")):
        make_config(BREAKOUT, "curl", {"algorithm.curl.momentum": 1.0}, describe=lambda _: info)


def test_curl_on_an_env_without_frames_exits_2_with_the_reason(tmp_path):
    result = CliRunner().invoke(train_command, ["--env", "CartPole-v1", "--algo", "curl", "--out",
                                                str(tmp_path / "run")])
    assert result.exit_code == 2, result.output
    assert "curl learns from stacked frames" in result.output and "(4,)" in result.output
    assert not (tmp_path / "run").exists()


# --------------------------------------------------------------------------- end to end
def test_curl_on_pong_explores_from_the_cache_and_learns():
    """The guided draw covers Pong's six actions in the cache's proportions while CURL trains."""
    info = describe_env(PONG)
    config = make_config(PONG, "curl", {
        "algorithm.epsilon.schedule": "linear", "algorithm.epsilon.start": 1.0, "algorithm.epsilon.end": 1.0,
        "algorithm.buffer_size": 2000, "algorithm.learning_starts": 700, "algorithm.updates_per_step": 0.1,
        "test_envs": 1, "eval.episodes": 1, "algorithm.epsilon.eval": 1.0}, describe=lambda _: info)
    cache, counter = ExplorationCache(info.spec), EnvStepCounter()
    setup = build_setup(config, info, cache=cache, counter=counter)
    probs = (0.05, 0.05, 0.1, 0.2, 0.25, 0.35)
    cache.publish(ExplorationUpdate(version=1, kind=info.spec.update_kind, values=probs,
                                    provenance=Provenance(source_episode=0)))
    W_before = setup.algorithm.query.W.detach().clone()
    tap = EpisodeTap(None, PONG, info.spec, counter=counter)
    result = train(setup, steps=900, eval_episodes=1, tap=tap, progress=False)
    setup.close()
    assert result.env_steps >= 900 and result.gradient_steps >= 15 and not result.interrupted
    assert not torch.equal(W_before, setup.algorithm.query.W)
    actions = setup.buffer.act[setup.buffer.sample_indices(0)]
    counts = np.bincount(actions, minlength=6) / len(actions)
    assert np.allclose(counts, probs, atol=0.05), counts
    assert cache.applied_at(1) is not None


def test_curl_runs_through_the_cli_with_the_scripted_provider(tmp_path):
    out = tmp_path / "pong"
    result = CliRunner().invoke(train_command, [
        "--env", PONG, "--algo", "curl", "--steps", "1200", "--provider", "scripted", "--mode", "blocking",
        "--set", "algorithm.learning_starts=900", "--set", "algorithm.updates_per_step=0.1",
        "--set", "algorithm.buffer_size=2000", "--set", "eval.episodes=1", "--set", "algorithm.epsilon.eval=1.0",
        "--set", "test_envs=1", "--out", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["algo"] == "curl" and summary["env_steps"] >= 1200 and summary["gradient_steps"] >= 25
    assert summary["episodes"] >= 1 and summary["updates_applied"] >= 1
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["algorithm"]["curl"]["loss_coef"] == 0.01
    assert manifest["config"]["algorithm"]["n_step"] == 20


# --------------------------------------------------------------------------- resume
STEPS = 1200
RUN = ["--env", BREAKOUT, "--algo", "curl", "--steps", str(STEPS), "--seed", "3", "--provider", "scripted",
       "--mode", "blocking", "--eval-episodes", "1", "--set", "eval.every=600", "--set", "test_envs=1",
       "--set", "algorithm.epsilon.eval=1.0", "--set", "algorithm.learning_starts=300",
       "--set", "algorithm.updates_per_step=0.1", "--set", "algorithm.buffer_size=2000",
       "--set", "checkpoint.every_steps=300"]  # 90 gradient steps: several between checkpoints, at CI cost


def test_a_sigkilled_curl_run_resumes_to_the_uninterrupted_runs_results(tmp_path):
    reference = tmp_path / "reference"
    result = run(*RUN, "--out", str(reference), timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((reference / "summary.json").read_text())
    assert summary["gradient_steps"] >= 80 and summary["updates_applied"] >= 2, summary

    out = tmp_path / "killed"
    proc = sigkill_after_checkpoint(RUN, out, 600, checkpoint_s=400, rows_s=200)
    step = newest_checkpoint(out)
    assert proc.returncode == -signal.SIGKILL and not (out / "summary.json").exists()
    assert complete_checkpoints(out)[0].meta["buffer"] is True

    result = run("--resume", str(out), timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert_same_run(reference, out)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["resumes"][-1]["from_step"] == step and manifest["resumes"][-1]["exact"] is True


def test_the_checkpoint_holds_the_key_encoder_w_and_the_optimiser(tmp_path):
    a, b = small_curl(), small_curl()
    with torch.no_grad():
        for p in [*a.key_encoder.parameters(), a.query.W]:
            p.add_(1.0)
    loss, _ = a.contrastive_loss(np.zeros((4, 4, 84, 84), dtype=np.uint8) + np.arange(4, dtype=np.uint8)[:, None,
                                                                                                       None, None])
    a.optim.step(loss)
    state = algorithm_state(a)
    assert any(k.startswith("key_encoder.") for k in state["state_dict"])
    path = Path(tmp_path) / "state.pt"
    torch.save(state, path)
    restore_algorithm(b, torch.load(path, weights_only=False))
    for name, tensor in a.state_dict().items():
        if name != "_optimizers":
            assert torch.equal(tensor, b.state_dict()[name]), name
    assert b.optim._optim.state_dict()["state"]  # Adam's moments came back
    assert torch.equal(b.key_encoder.encoder.convs[0].weight, a.key_encoder.encoder.convs[0].weight)
