"""Atari environments with the standard DQN preprocessing, built from gymnasium's own wrappers.

``make_atari_env("ALE/Breakout-v5")`` gives observations of shape ``(4, 84, 84)``, dtype uint8:

* ALE's v5 environment is made with ``frameskip=1`` and ``AtariPreprocessing(frame_skip=4)``
  repeats each action for 4 frames and max-pools the last two (v5's own skip returns only the
  last frame, so sprites that flicker between frames can vanish). Sticky actions (p = 0.25) act
  per frame inside ALE either way;
* ``AtariPreprocessing``: up to ``noop_max`` no-op *frames* on reset (30 frames, not 30 agent
  steps of 4 frames), grey 84×84, not scaled;
* :class:`FireOnReset` presses FIRE after every reset in games whose actions include FIRE
  (Breakout and friends do not start without it; gymnasium has no such wrapper);
* :class:`LifeLossSignal` (optional) marks the step where a life is lost in ``info["life_lost"]``.
  The episode goes on, so reported returns are whole games; the frame replay buffer
  (:mod:`.frame_buffer`) stores that step as terminal for learning;
* ``FrameStackObservation``: the last 4 frames, padded with the reset frame at an episode start.

Rewards are *not* clipped here: the returns the collector reports must stay the game's score.
Clipping for learning happens in the replay buffer (``make_replay_buffer(clip_rewards=True)``).

ale_py is imported on first use, so this module imports without the ``[atari]`` extra.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import gymnasium as gym

from explorer_pipeline.errors import UsageError

__all__ = [
    "FireOnReset",
    "LifeLossSignal",
    "action_labels",
    "is_atari",
    "make_atari_env",
    "register_ale",
]

_INSTALL_HINT = "Atari environments need ale-py: pip install 'llm-explorer[atari]'"


def is_atari(env_id: str) -> bool:
    """True for ids in ALE's gymnasium namespace, e.g. ``ALE/Breakout-v5``."""
    return env_id.startswith("ALE/")


@cache
def register_ale() -> None:
    """Register ALE's environments with gymnasium (idempotent).

    :raises UsageError: ale_py is not installed.
    """
    try:
        import ale_py
    except ImportError:
        raise UsageError(_INSTALL_HINT) from None
    gym.register_envs(ale_py)


def _make_base(env_id: str, **make_kwargs: Any) -> gym.Env:
    register_ale()
    try:
        return gym.make(env_id, **make_kwargs)
    except gym.error.Error as exc:  # NameNotFound, VersionNotFound, ...
        raise UsageError(f"unknown Atari environment {env_id!r}: {exc}") from None


def _fire_action(env: gym.Env) -> int | None:
    meanings = env.unwrapped.get_action_meanings()
    return meanings.index("FIRE") if "FIRE" in meanings else None


class FireOnReset(gym.Wrapper):
    """Press FIRE once after every reset (games such as Breakout wait for it to start).

    Use only on games whose action meanings include ``FIRE``. If the FIRE step happens to end
    the episode, the env is reset again (without another FIRE). The FIRE step's reward is
    dropped; it is zero in every game we know of.
    """

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        action = _fire_action(env)
        if action is None:
            raise ValueError(f"{env.spec.id if env.spec else env} has no FIRE action")
        self.fire_action = action

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        """Reset, then press FIRE (resetting again if that ended the episode)."""
        self.env.reset(**kwargs)
        obs, _reward, terminated, truncated, info = self.env.step(self.fire_action)
        if terminated or truncated:
            obs, info = self.env.reset(**kwargs)
        return obs, info


class LifeLossSignal(gym.Wrapper):
    """Add ``info["life_lost"]`` (bool) to every reset and step; True where a life was lost.

    The episode itself continues until the game is over. The frame replay buffer turns these
    steps into terminal transitions for learning (no bootstrapping across a lost life) while
    episode returns and lengths still describe whole games.
    """

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self._lives = 0

    def _ale_lives(self) -> int:
        return int(self.env.unwrapped.ale.lives())

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        """Reset; ``info["life_lost"]`` is False."""
        obs, info = self.env.reset(**kwargs)
        self._lives = self._ale_lives()
        return obs, {**info, "life_lost": False}

    def step(self, action: Any) -> tuple[Any, Any, bool, bool, dict[str, Any]]:
        """Step; ``info["life_lost"]`` says whether this step lost a life."""
        obs, reward, terminated, truncated, info = self.env.step(action)
        lives = self._ale_lives()
        lost = lives < self._lives
        self._lives = lives
        return obs, reward, terminated, truncated, {**info, "life_lost": bool(lost)}


def make_atari_env(
    env_id: str,
    *,
    frame_stack: int = 4,
    screen_size: int = 84,
    noop_max: int = 30,
    terminal_on_life_loss: bool = False,
    frame_skip: int = 4,
    **make_kwargs: Any,
) -> gym.Env:
    """Make an ALE v5 environment with the standard DQN preprocessing (see the module docstring).

    :param env_id: an ``ALE/...`` id, e.g. ``ALE/Pong-v5``.
    :param frame_stack: frames per observation; observations are ``(frame_stack, screen_size,
        screen_size)`` uint8.
    :param screen_size: side of the square grey frame.
    :param noop_max: at most this many no-op actions after a reset (0 turns it off).
    :param terminal_on_life_loss: report lost lives in ``info["life_lost"]``, which the frame
        replay buffer stores as terminal transitions (learning only; the game goes on).
    :param frame_skip: frames per agent step, the last two max-pooled (``AtariPreprocessing``).
    :param make_kwargs: passed to ``gym.make`` (e.g. ``repeat_action_probability=0.0``,
        ``max_episode_steps``). ALE's own ``frameskip`` is 1 unless given here; given larger, ALE
        skips and ``frame_skip`` is not applied on top (no pooling).
    :raises UsageError: ale_py is missing or the id is unknown.
    """
    if not is_atari(env_id):
        raise UsageError(f"{env_id!r} is not an Atari id; use ALE's namespace, e.g. 'ALE/Breakout-v5'")
    if frame_stack < 1:
        raise UsageError(f"frame_stack must be at least 1, got {frame_stack}")
    # AtariPreprocessing reads the screen from ALE itself; a grey base observation is cheaper (~9 %)
    if frame_skip < 1:
        raise UsageError(f"frame_skip must be at least 1, got {frame_skip}")
    make_kwargs.setdefault("obs_type", "grayscale")
    make_kwargs.setdefault("frameskip", 1)  # the wrapper skips, and max-pools the last two frames
    env = _make_base(env_id, **make_kwargs)
    env = gym.wrappers.AtariPreprocessing(
        env,
        noop_max=noop_max,
        frame_skip=frame_skip if make_kwargs["frameskip"] == 1 else 1,
        screen_size=screen_size,
        terminal_on_life_loss=False,  # its version ends the episode and restarts the game
        grayscale_obs=True,
        scale_obs=False,
    )
    if _fire_action(env) is not None:
        env = FireOnReset(env)
    if terminal_on_life_loss:
        env = LifeLossSignal(env)
    return gym.wrappers.FrameStackObservation(env, stack_size=frame_stack)


def action_labels(env_id: str, **make_kwargs: Any) -> tuple[str, ...]:
    """ALE's meanings of the env's actions (the minimal action set unless ``full_action_space``).

    E.g. ``("NOOP", "FIRE", "RIGHT", "LEFT")`` for ``ALE/Breakout-v5``.
    """
    env = _make_base(env_id, **make_kwargs)
    try:
        return tuple(str(m) for m in env.unwrapped.get_action_meanings())
    finally:
        env.close()
