"""The training loop: collect, update, evaluate greedily; a progress bar; Ctrl-C stops cleanly.

A plain loop over Tianshou's low-level pieces (``Collector.collect``, ``Algorithm.update``)
rather than ``OffPolicyTrainer``: evaluation happens at fixed env-step intervals, the
gradient-step ratio is honoured exactly (fractional credit carries over), and nothing scans the
replay buffer for NaNs.

What happens around the loop is a callback (:mod:`tianshou_integration.callbacks`, as
Stable-Baselines3's): between two iterations it can write a checkpoint
(:class:`~tianshou_integration.callbacks.Checkpointing`) or stop the run (an ``on_step`` that
returns False, e.g. after a first Ctrl-C: a last checkpoint, then the loop ends as interrupted).
The loop can start from a checkpoint (``resume``: the :class:`LoopState` it saved), so a resumed
run goes on exactly where the checkpoint was taken.

Before the first step the policy is prepared so that exploration means what it should:
continuous policies store the action their environment executed
(:func:`~tianshou_integration.continuous.store_executed_actions`), and DQN-family policies with
noisy layers (Rainbow) explore with them while collecting for training but not during greedy
evaluation (:func:`~tianshou_integration.discrete.enable_noisy_collection`).
"""

from __future__ import annotations

import logging
import math
import time
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
from .callbacks import Callback, CallbackList, ProgressBar
from .continuous import store_executed_actions
from .counter import EnvStepCounter
from .discrete import enable_noisy_collection
from .fast_collector import FastCollector
from .tap import EpisodeTap
from .tianshou_state import collector_state, restore_collector

log = logging.getLogger(__name__)

__all__ = ["CheckpointHook", "LoopState", "TrainResult", "TrainingLoop", "evaluate", "prepare_policy", "train"]


@dataclass
class TrainResult:
    """What a training run produced.

    :param eval_history: ``(env_step, mean greedy return)`` per evaluation.
    :param threshold_step: first evaluation step whose mean reached the env's reward threshold.
    :param interrupted: training stopped early on Ctrl-C (no final evaluation then).
    :param eval_wall_s: the part of ``wall_s`` spent in greedy evaluations.
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
    eval_wall_s: float = 0.0  # a class default too: checkpoints written before it existed read 0.0

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
    callback: Callback | None = None,
    progress: bool | None = None,
    resume: LoopState | None = None,
) -> TrainResult:
    """Train ``setup`` for ``steps`` env steps or ``episodes`` training episodes, whichever comes
    first (default: the setup's budget, ``config.steps`` and ``config.episodes``).

    :param tap: the episode tap (``on_episode_done_hook``); one that talks to no runtime is
        made if None. Its counter is the env-step counter.
    :param callback: told what happens (episodes, collects, evaluations, start and end) and asked
        before every iteration whether to go on (:mod:`tianshou_integration.callbacks`: e.g. a
        :class:`~tianshou_integration.callbacks.CallbackList` of checkpointing, run-directory
        logging and a stop on SIGINT/SIGTERM).
    :param progress: show a tqdm bar (None: only on a terminal), with the callback's
        ``progress_fields``.
    :param resume: start from this saved state instead of from scratch: no warm-up, no env
        reset (unless its ``collector`` is None), the buffer as it is. The caller restores
        everything outside the loop (networks, buffer, envs, generators, tap, counter) first.

    The policy is prepared first (:func:`prepare_policy`).

    Ctrl-C (KeyboardInterrupt) ends the loop; the result says ``interrupted`` and the caller
    finishes writing what exists. The envs are not closed here.
    """
    callback = callback if callback is not None else Callback()
    loop = TrainingLoop(setup, steps=steps, episodes=episodes, eval_every=eval_every, eval_episodes=eval_episodes,
                        tap=tap, counter=counter)
    bar = ProgressBar(loop.steps, progress, fields=callback.progress_fields)
    return loop.run(CallbackList([callback, bar]), resume)


class TrainingLoop:
    """One run of the loop: collect, update, evaluate when due. What callbacks read of it:
    ``env_step``, ``result``, ``last_eval``, ``last_return``, ``steps`` and :meth:`snapshot`."""

    def __init__(self, setup: AlgoSetup, *, steps: int | None, episodes: int | None, eval_every: int | None,
                 eval_episodes: int, tap: EpisodeTap | None, counter: EnvStepCounter | None) -> None:
        self.setup = setup
        self.steps = int(steps if steps is not None else setup.config.steps)
        self.episodes = episodes if episodes is not None else setup.config.episodes
        self.eval_every = int(eval_every if eval_every is not None else setup.config.eval.every)
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if self.eval_every < 1:
            raise ValueError(f"eval_every must be >= 1, got {self.eval_every}")
        if self.episodes is not None and self.episodes < 1:
            raise ValueError(f"episodes must be >= 1 or None, got {self.episodes}")
        prepare_policy(setup.policy)
        self.tap = tap if tap is not None else EpisodeTap(None, setup.env.env_id, setup.env.spec, counter=counter)
        self.counter = self.tap.counter
        self.eval_episodes = eval_episodes
        self.result = TrainResult()
        self.last_return: list[float] = []
        self.env_step = 0
        self.credit = 0.0
        self.next_eval = self.eval_every
        self.last_eval: float | None = None
        self._wall_before = 0.0
        self._started = time.perf_counter()
        self._callback: Callback = Callback()
        self.train_collector = FastCollector(setup.algorithm, setup.train_envs, setup.buffer, exploration_noise=True,
                                             on_episode_done_hook=self.tap, on_step_hook=self.tap.on_step)
        # evaluation ε (DQN family) acts through add_exploration_noise outside a training step; continuous
        # policies evaluate without noise
        eval_eps = setup.config.algorithm.epsilon.eval if setup.is_discrete else 0.0
        self.test_collector = Collector(setup.algorithm, setup.test_envs, setup.eval_buffer(),
                                        exploration_noise=eval_eps > 0)

    def run(self, callback: Callback, resume: LoopState | None = None) -> TrainResult:
        """Train until the budget is spent, a callback stops the loop, or Ctrl-C; returns the result."""
        self._callback = callback
        self.tap.on_record.append(self._record_episode)
        self._started = time.perf_counter()
        try:
            self._start_fresh() if resume is None else self._restore(resume)
            callback.on_training_start(self)
            while not self.budget_spent():
                if not callback.on_step(self):
                    callback.on_stop(self)
                    self.result.interrupted = True
                    log.warning("stopped at env step %d", self.env_step)
                    break
                self._collect_and_update()
                callback.on_collect_end(self)
                if self.env_step >= self.next_eval and not self.budget_spent():
                    self._evaluate()
                    while self.next_eval <= self.env_step:
                        self.next_eval += self.eval_every
            if not self.result.interrupted:
                self.result.final_eval_return = self._evaluate()
        except KeyboardInterrupt:
            self.result.interrupted = True
            log.warning("interrupted at env step %d", self.env_step)
        finally:
            self._finish()
            callback.on_training_end(self)
        return self.result

    def budget_spent(self) -> bool:
        """The steps or the episodes budget is reached."""
        return self.env_step >= self.steps or (self.episodes is not None and self.tap.episodes >= self.episodes)

    def snapshot(self) -> LoopState:
        """The loop's state now, for a checkpoint."""
        done = replace(self.result, eval_history=list(self.result.eval_history), wall_s=self._wall_s())
        return LoopState(env_step=self.env_step, credit=self.credit, next_eval=self.next_eval,
                         last_eval=self.last_eval, last_return=list(self.last_return), result=done,
                         collector=collector_state(self.train_collector))

    def _start_fresh(self) -> None:
        """Fresh episodes, and the random warm-up the algorithm asks for."""
        self.train_collector.reset()
        self.tap.forget_open_episodes()
        self.counter.value = 0
        hp = self.setup.hp
        if hp.random_warmup_steps > 0:
            warm = _round_up(min(hp.random_warmup_steps, self.steps), len(self.setup.train_envs))
            with policy_within_training_step(self.setup.policy), fast.acting():
                stats = self.train_collector.collect(n_step=warm, random=True)
            self.env_step = self.counter.value = int(stats.n_collected_steps)

    def _restore(self, resume: LoopState) -> None:
        """Go on from a checkpoint's loop state."""
        self.env_step, self.credit, self.next_eval = resume.env_step, resume.credit, resume.next_eval
        self.last_eval = resume.last_eval
        self.last_return[:] = resume.last_return
        saved, result = resume.result, self.result
        result.gradient_steps, result.eval_history = saved.gradient_steps, list(saved.eval_history)
        result.best_eval_return, result.threshold_step = saved.best_eval_return, saved.threshold_step
        result.eval_wall_s = saved.eval_wall_s
        self._wall_before = saved.wall_s
        if resume.collector is None:
            self.train_collector.reset_env()  # fresh episodes; the buffer keeps what it holds
            self.tap.forget_open_episodes()
        else:
            restore_collector(self.train_collector, resume.collector)
        self.counter.value = self.env_step

    def _collect_and_update(self) -> None:
        """One collect, then the gradient steps it earned (fractional credit carries over)."""
        setup, hp = self.setup, self.setup.hp
        setup.on_env_step(self.env_step)
        n = _round_up(min(hp.collect_per_step, self.steps - self.env_step), len(setup.train_envs))
        with policy_within_training_step(setup.policy), fast.acting():
            stats = self.train_collector.collect(n_step=n)
        collected = int(stats.n_collected_steps)
        self.env_step += collected
        self.counter.value = self.env_step
        if self.env_step >= hp.learning_starts and len(setup.buffer) >= hp.batch_size:
            self.credit += hp.updates_per_step * collected
            n_updates = int(self.credit)
            self.credit -= n_updates
            with policy_within_training_step(setup.policy):
                for _ in range(n_updates):
                    setup.algorithm.update(buffer=setup.buffer, sample_size=hp.batch_size)
            self.result.gradient_steps += n_updates

    def _evaluate(self) -> float:
        """A greedy evaluation now, recorded in the result (best return, threshold step)."""
        started = time.perf_counter()
        mean = evaluate(self.setup, self.test_collector, self.eval_episodes)
        result, threshold = self.result, self.setup.env.reward_threshold
        result.eval_wall_s += time.perf_counter() - started
        result.eval_history.append((self.env_step, mean))
        if math.isfinite(mean):
            result.best_eval_return = mean if result.best_eval_return is None else max(result.best_eval_return, mean)
            if threshold is not None and result.threshold_step is None and mean >= threshold:
                result.threshold_step = self.env_step
        self.last_eval = mean
        self._callback.on_eval(self.env_step, mean)
        return mean

    def _record_episode(self, record: Any) -> None:
        self.last_return[:] = [record.episode_return]
        self._callback.on_train_episode(record.env_step, record.episode_return)

    def _finish(self) -> None:
        result = self.result
        result.wall_s = self._wall_s()
        result.env_steps = max(self.env_step, self.counter.value)
        result.episodes = self.tap.episodes
        if self._record_episode in self.tap.on_record:
            self.tap.on_record.remove(self._record_episode)

    def _wall_s(self) -> float:
        return self._wall_before + time.perf_counter() - self._started


def _round_up(n: int, multiple: int) -> int:
    return max(multiple, math.ceil(n / multiple) * multiple)
