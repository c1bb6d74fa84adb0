"""The training loop calls its callback in a fixed order, and a callback can stop training early."""

from __future__ import annotations

import re

from explorer_pipeline.cache import ExplorationCache
from tianshou_integration import build_setup, describe_env
from tianshou_integration.callbacks import Callback, CallbackList, Checkpointing
from tianshou_integration.training import train

from .test_training import small


class Recorder(Callback):
    """Writes down every hook the loop calls; says False from the ``stop_at``-th ``on_step`` on."""

    def __init__(self, stop_at: int | None = None) -> None:
        self.calls: list[tuple] = []
        self.stop_at = stop_at
        self.steps_asked = 0

    def on_training_start(self, loop):
        self.calls.append(("start", loop.env_step))

    def on_step(self, loop):
        self.steps_asked += 1
        self.calls.append(("step", loop.env_step))
        return self.stop_at is None or self.steps_asked < self.stop_at

    def on_stop(self, loop):
        self.calls.append(("stop", loop.env_step))

    def on_train_episode(self, env_step, episode_return):
        self.calls.append(("episode", env_step))

    def on_collect_end(self, loop):
        self.calls.append(("collect", loop.env_step))

    def on_eval(self, env_step, mean_return):
        self.calls.append(("eval", env_step))

    def on_training_end(self, loop):
        self.calls.append(("end", loop.result.env_steps))


class SaveLog:
    """A checkpoint writer that is due every ``every`` env steps and records what it saved."""

    def __init__(self, every: int) -> None:
        self.every = every
        self.saved: list[int] = []

    def due(self, env_step: int) -> bool:
        return env_step % self.every == 0

    def save(self, state) -> None:
        self.saved.append(state.env_step)


def cartpole_setup():
    info = describe_env("CartPole-v1")
    config = small("dqn", info, seed=2, test_envs=1, train_envs=1, **{"algorithm.collect_per_step": 32,
                                                                       "algorithm.random_warmup_steps": 0})
    return build_setup(config, info, cache=ExplorationCache(info.spec))


def shape(calls: list[tuple]) -> str:
    """The calls as one letter each (episodes folded away), e.g. ``S(sc)(sce)...E``."""
    letters = {"start": "S", "step": "s", "stop": "x", "collect": "c", "eval": "e", "end": "E"}
    return "".join(letters[name] for name, _ in calls if name != "episode")


def test_callbacks_are_called_in_order():
    setup = cartpole_setup()
    recorder = Recorder()
    result = train(setup, steps=320, eval_every=160, eval_episodes=1, progress=False, callback=recorder)
    setup.close()
    assert not result.interrupted
    # start; 10 iterations of step + collect, an evaluation after the 5th; a final evaluation; end
    assert re.fullmatch(r"S(sc){4}sce(sc){5}eE", shape(recorder.calls)), shape(recorder.calls)
    assert recorder.calls[0] == ("start", 0) and recorder.calls[-1] == ("end", 320)
    evals = [step for name, step in recorder.calls if name == "eval"]
    assert evals == [160, 320] == [step for step, _ in result.eval_history]
    episodes = [step for name, step in recorder.calls if name == "episode"]
    assert len(episodes) == result.episodes > 0 and episodes == sorted(episodes)
    # each episode is reported during the collect that ended it, before that collect's on_collect_end
    for i, (name, step) in enumerate(recorder.calls):
        if name == "episode":
            following = next(c for c in recorder.calls[i:] if c[0] == "collect")
            assert step <= following[1]


def test_a_callback_stops_training_early_with_a_last_checkpoint():
    setup = cartpole_setup()
    recorder = Recorder(stop_at=4)
    saves = SaveLog(every=64)
    result = train(setup, steps=320, eval_every=1000, eval_episodes=1, progress=False,
                   callback=CallbackList([recorder, Checkpointing(saves)]))
    setup.close()
    assert result.interrupted and result.final_eval_return is None and result.eval_history == []
    assert shape(recorder.calls) == "SscscscsxE"  # no collect after the stop, no final evaluation
    assert ("stop", 96) in recorder.calls and result.env_steps == 96
    assert saves.saved == [0, 64, 96]  # due at 0 and 64, and a last one where training stopped


def test_a_stop_where_a_checkpoint_is_due_writes_it_once():
    setup = cartpole_setup()
    saves = SaveLog(every=64)
    result = train(setup, steps=320, eval_every=1000, eval_episodes=1, progress=False,
                   callback=CallbackList([Checkpointing(saves), Recorder(stop_at=3)]))
    setup.close()
    assert result.interrupted and result.env_steps == 64
    assert saves.saved == [0, 64]
