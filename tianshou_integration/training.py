"""The training loop: collect, update, evaluate greedily; a progress bar; Ctrl-C stops cleanly.

A plain loop over Tianshou's low-level pieces (``Collector.collect``, ``Algorithm.update``)
rather than ``OffPolicyTrainer``: evaluation happens at fixed env-step intervals, the
gradient-step ratio is honoured exactly (fractional credit carries over), and nothing scans the
replay buffer for NaNs.

Between two iterations the loop can write a checkpoint (``checkpoints``: a
:class:`~tianshou_integration.checkpoint.Checkpointer`) and can start from one (``resume``: the
:class:`LoopState` a checkpoint saved), so a resumed run goes on exactly where the checkpoint was
taken. A stop request (``stop_requested``, e.g. a first Ctrl-C) is honoured there too: a last
checkpoint, then the loop ends as interrupted.

Before the first step the policy is prepared so that exploration means what it should:
continuous policies store the action their environment executed
(:func:`~tianshou_integration.continuous.store_executed_actions`), and DQN-family policies with
noisy layers (Rainbow) explore with them while collecting for training but not during greedy
evaluation (:func:`~tianshou_integration.discrete.enable_noisy_collection`).
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numpy as np
from tianshou.algorithm.algorithm_base import Policy
from tianshou.algorithm.modelfree.ddpg import ContinuousPolicyWithExplorationNoise
from tianshou.algorithm.modelfree.dqn import DiscreteQLearningPolicy
from tianshou.data import Collector
from tianshou.utils.torch_utils import policy_within_training_step

from . import fast
from .algorithms import AlgoSetup
from .continuous import store_executed_actions
from .counter import EnvStepCounter
from .discrete import enable_noisy_collection
from .tap import EpisodeTap
from .tianshou_state import collector_state, restore_collector

log = logging.getLogger(__name__)

__all__ = ["CheckpointHook", "LoopState", "TrainResult", "evaluate", "prepare_policy", "train"]


@dataclass
class TrainResult:
    """What a training run produced.

    :param eval_history: ``(env_step, mean greedy return)`` per evaluation.
    :param threshold_step: first evaluation step whose mean reached the env's reward threshold.
    :param interrupted: training stopped early on Ctrl-C (no final evaluation then).
    """

    env_steps: int = 0
    episodes: int = 0
    gradient_steps: int = 0
    wall_s: float = 0.0
    eval_history: list[tuple[int, float]] = field(default_factory=list)
    final_eval_return: float | None = None
    best_eval_return: float | None = None
    threshold_step: int | None = None
    interrupted: bool = False

    @property
    def steps_per_s(self) -> float:
        """Env steps per second of training wall time."""
        return self.env_steps / self.wall_s if self.wall_s > 0 else 0.0


@dataclass
class LoopState:
    """Where the training loop stands between two iterations: what a checkpoint saves of the
    loop, and what a resumed run starts from.

    :param result: the result so far (``wall_s``: training time so far, over every session).
    :param credit: the fractional gradient step carried to the next collect.
    :param next_eval: the env step of the next greedy evaluation.
    :param collector: the training collector's observations, infos and hidden states of the
        episodes in progress (None: start fresh episodes).
    """

    env_step: int
    credit: float
    next_eval: int
    last_eval: float | None
    last_return: list[float]
    result: TrainResult
    collector: dict[str, Any] | None


class CheckpointHook(Protocol):
    """What the loop asks of a checkpoint writer (:class:`~tianshou_integration.checkpoint.Checkpointer`)."""

    def due(self, env_step: int) -> bool:
        """Whether a checkpoint should be written before the iteration that starts at ``env_step``."""
        ...

    def save(self, state: LoopState) -> None:
        """Write a checkpoint of the run at ``state``."""
        ...


def prepare_policy(policy: Policy) -> Policy:
    """Fix what Tianshou's collector would otherwise get wrong for ``policy``; returns it.

    Continuous policies with exploration noise store the executed (clipped) action instead of the
    unclipped noisy one; DQN-family policies keep their noisy layers active while collecting for
    training. Other policies, and policies already prepared, are left as they are.
    """
    if isinstance(policy, ContinuousPolicyWithExplorationNoise):
        return store_executed_actions(policy)
    if isinstance(policy, DiscreteQLearningPolicy):
        return enable_noisy_collection(policy)
    return policy


def evaluate(setup: AlgoSetup, collector: Collector, episodes: int) -> float:
    """Mean return of ``episodes`` greedy episodes (no exploration noise, eps_inference, and the
    mean weights of noisy layers: evaluation runs outside a training step)."""
    collector.reset(reset_stats=False)
    with policy_within_training_step(setup.policy, enabled=False), fast.acting():
        stats = collector.collect(n_episode=episodes)
    return float(np.mean(stats.returns)) if len(stats.returns) else float("nan")


def train(
    setup: AlgoSetup,
    *,
    steps: int | None = None,
    episodes: int | None = None,
    eval_every: int | None = None,
    eval_episodes: int = 10,
    tap: EpisodeTap | None = None,
    counter: EnvStepCounter | None = None,
    on_train_episode: Callable[[int, float], None] | None = None,
    on_eval: Callable[[int, float], None] | None = None,
    after_collect: Callable[[int], None] | None = None,
    progress: bool | None = None,
    progress_info: Callable[[], dict[str, Any]] | None = None,
    checkpoints: CheckpointHook | None = None,
    resume: LoopState | None = None,
    stop_requested: Callable[[], bool] | None = None,
) -> TrainResult:
    """Train ``setup`` for ``steps`` env steps or ``episodes`` training episodes, whichever comes
    first (default: the setup's budget, ``config.steps`` and ``config.episodes``).

    :param tap: the episode tap (``on_episode_done_hook``); one that talks to no runtime is
        made if None. Its counter is the env-step counter.
    :param on_train_episode: ``(env_step, return)`` for each finished training episode.
    :param on_eval: ``(env_step, mean return)`` after each greedy evaluation.
    :param after_collect: ``(env_step)`` after each collect (e.g. to write applied updates).
    :param progress: show a tqdm bar (None: only on a terminal).
    :param progress_info: extra fields for the bar, e.g. LLM updates applied and fallbacks.
    :param checkpoints: asked before every iteration whether a checkpoint is due, and given the
        loop's state to save.
    :param resume: start from this saved state instead of from scratch: no warm-up, no env
        reset (unless its ``collector`` is None), the buffer as it is. The caller restores
        everything outside the loop (networks, buffer, envs, generators, tap, counter) first.
    :param stop_requested: checked before every iteration; True ends training there as
        interrupted, after a last checkpoint.

    The policy is prepared first (:func:`prepare_policy`).

    Ctrl-C (KeyboardInterrupt) ends the loop; the result says ``interrupted`` and the caller
    finishes writing what exists. The envs are not closed here.
    """
    hp = setup.hp
    steps = int(steps if steps is not None else setup.config.steps)
    episodes = episodes if episodes is not None else setup.config.episodes
    eval_every = int(eval_every if eval_every is not None else setup.config.eval.every)
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if eval_every < 1:
        raise ValueError(f"eval_every must be >= 1, got {eval_every}")
    if episodes is not None and episodes < 1:
        raise ValueError(f"episodes must be >= 1 or None, got {episodes}")
    prepare_policy(setup.policy)
    if tap is None:
        tap = EpisodeTap(None, setup.env.env_id, setup.env.spec, counter=counter)
    counter = tap.counter
    result = TrainResult()
    last_return: list[float] = []

    def record_episode(record: Any) -> None:
        last_return[:] = [record.episode_return]
        if on_train_episode is not None:
            on_train_episode(record.env_step, record.episode_return)

    tap.on_record.append(record_episode)
    train_collector = Collector(setup.algorithm, setup.train_envs, setup.buffer, exploration_noise=True,
                                on_episode_done_hook=tap, on_step_hook=tap.on_step)
    # evaluation ε (DQN family) acts through add_exploration_noise outside a training step; continuous
    # policies evaluate without noise
    eval_eps = setup.config.algorithm.epsilon.eval if setup.is_discrete else 0.0
    test_collector = Collector(setup.algorithm, setup.test_envs, setup.eval_buffer(), exploration_noise=eval_eps > 0)
    threshold = setup.env.reward_threshold
    n_envs = len(setup.train_envs)

    def run_eval(env_step: int) -> float:
        mean = evaluate(setup, test_collector, eval_episodes)
        result.eval_history.append((env_step, mean))
        if math.isfinite(mean):
            result.best_eval_return = mean if result.best_eval_return is None else max(result.best_eval_return, mean)
            if threshold is not None and result.threshold_step is None and mean >= threshold:
                result.threshold_step = env_step
        if on_eval is not None:
            on_eval(env_step, mean)
        return mean

    bar = _progress_bar(steps, progress)
    started = time.perf_counter()
    env_step = 0
    credit = 0.0
    next_eval = eval_every
    last_eval: float | None = None
    wall_before = 0.0

    def snapshot() -> LoopState:
        done = replace(result, eval_history=list(result.eval_history),
                       wall_s=wall_before + time.perf_counter() - started)
        return LoopState(env_step=env_step, credit=credit, next_eval=next_eval, last_eval=last_eval,
                         last_return=list(last_return), result=done, collector=collector_state(train_collector))

    try:
        if resume is None:
            train_collector.reset()
            tap.forget_open_episodes()
            counter.value = 0
            if hp.random_warmup_steps > 0:
                warm = _round_up(min(hp.random_warmup_steps, steps), n_envs)
                with policy_within_training_step(setup.policy), fast.acting():
                    stats = train_collector.collect(n_step=warm, random=True)
                env_step = counter.value = int(stats.n_collected_steps)
        else:
            env_step, credit, next_eval, last_eval = resume.env_step, resume.credit, resume.next_eval, resume.last_eval
            last_return[:] = resume.last_return
            saved = resume.result
            result.gradient_steps, result.eval_history = saved.gradient_steps, list(saved.eval_history)
            result.best_eval_return, result.threshold_step = saved.best_eval_return, saved.threshold_step
            wall_before = saved.wall_s
            if resume.collector is None:
                train_collector.reset_env()  # fresh episodes; the buffer keeps what it holds
                tap.forget_open_episodes()
            else:
                restore_collector(train_collector, resume.collector)
            counter.value = env_step
        bar.update(env_step)
        def budget_spent() -> bool:
            return env_step >= steps or (episodes is not None and tap.episodes >= episodes)

        while not budget_spent():
            stop = stop_requested is not None and stop_requested()
            if checkpoints is not None and (stop or checkpoints.due(env_step)):
                checkpoints.save(snapshot())
            if stop:
                result.interrupted = True
                log.warning("stopped at env step %d", env_step)
                break
            setup.on_env_step(env_step)
            n = _round_up(min(hp.collect_per_step, steps - env_step), n_envs)
            with policy_within_training_step(setup.policy), fast.acting():
                stats = train_collector.collect(n_step=n)
            collected = int(stats.n_collected_steps)
            env_step += collected
            counter.value = env_step
            if env_step >= hp.learning_starts and len(setup.buffer) >= hp.batch_size:
                credit += hp.updates_per_step * collected
                n_updates = int(credit)
                credit -= n_updates
                with policy_within_training_step(setup.policy):
                    for _ in range(n_updates):
                        setup.algorithm.update(buffer=setup.buffer, sample_size=hp.batch_size)
                result.gradient_steps += n_updates
            if after_collect is not None:
                after_collect(env_step)
            if env_step >= next_eval and not budget_spent():
                last_eval = run_eval(env_step)
                while next_eval <= env_step:
                    next_eval += eval_every
            bar.update(collected)
            _postfix(bar, last_return, last_eval, progress_info)
        if not result.interrupted:
            result.final_eval_return = last_eval = run_eval(env_step)
            _postfix(bar, last_return, last_eval, progress_info)
    except KeyboardInterrupt:
        result.interrupted = True
        log.warning("interrupted at env step %d", env_step)
    finally:
        bar.close()
        result.wall_s = wall_before + time.perf_counter() - started
        result.env_steps = max(env_step, counter.value)
        result.episodes = tap.episodes
        if record_episode in tap.on_record:
            tap.on_record.remove(record_episode)
    return result


def _round_up(n: int, multiple: int) -> int:
    return max(multiple, math.ceil(n / multiple) * multiple)


class _NoBar:
    def update(self, n: int) -> None: ...
    def set_postfix(self, *args: Any, **kwargs: Any) -> None: ...
    def close(self) -> None: ...


def _progress_bar(total: int, progress: bool | None) -> Any:
    if progress is False:
        return _NoBar()
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return _NoBar()
    return tqdm(total=total, unit="step", dynamic_ncols=True, disable=None if progress is None else not progress,
                desc="training")


def _postfix(bar: Any, last_return: list[float], last_eval: float | None,
             progress_info: Callable[[], dict[str, Any]] | None) -> None:
    fields: dict[str, Any] = {}
    if last_return:
        fields["ret"] = f"{last_return[0]:.1f}"
    if last_eval is not None:
        fields["eval"] = f"{last_eval:.1f}"
    if progress_info is not None:
        with contextlib.suppress(Exception):  # the bar must never stop training
            fields.update(progress_info())
    bar.set_postfix(fields, refresh=False)
