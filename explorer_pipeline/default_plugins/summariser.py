"""The default trajectory summariser: the paper's input plus what helps a model reason."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..state import Stateless
from ..types import ActionSpec, EpisodeRecord


def sample_evenly(actions: Sequence[Any], m: int) -> list[Any]:
    """``m`` actions at even intervals over the episode (all of them when it is shorter)."""
    if m < 1:
        raise ValueError(f"the number of sampled actions must be >= 1, got {m}")
    length = len(actions)
    if length <= m:
        return list(actions)
    idx = np.linspace(0, length - 1, m).round().astype(int)
    return [actions[i] for i in idx]


def _format_action(action: Any) -> str:
    if isinstance(action, (tuple, list)):
        return "[" + ", ".join(f"{float(a):.2f}" for a in action) + "]"
    return str(int(action)) if isinstance(action, (int, np.integer)) else f"{float(action):.2f}"


def describe_trend(returns: Sequence[float]) -> str:
    """'improving', 'declining' or 'flat', with the least-squares slope per episode."""
    if len(returns) < 3:
        return "not enough episodes yet to tell a trend"
    slope = float(np.polyfit(np.arange(len(returns)), np.asarray(returns, dtype=float), 1)[0])
    scale = max(float(np.std(returns)), 1e-9)
    word = "flat" if abs(slope) * len(returns) < 0.5 * scale else ("improving" if slope > 0 else "declining")
    return f"{word} ({slope:+.2f} per episode over the last {len(returns)} episodes)"


class DefaultSummariser(Stateless):
    """Episode reward, ``m`` evenly spaced actions, recent returns and trend, action histogram.

    :param m: number of sampled actions (paper default 100).
    :param window: how many recent episode returns to show.
    """

    def __init__(self, m: int = 100, window: int = 10) -> None:
        if m < 1 or window < 1:
            raise ValueError(f"m and window must be >= 1, got m={m}, window={window}")
        self.m, self.window = int(m), int(window)

    def summarise(self, record: EpisodeRecord, history: Sequence[EpisodeRecord], spec: ActionSpec) -> dict[str, str]:
        """The episode variables of the prompts (see :data:`~explorer_pipeline.prompts.EPISODE_VARIABLES`)."""
        sampled = sample_evenly(record.actions, self.m)
        returns = [h.episode_return for h in history[-self.window:]] or [record.episode_return]
        return {
            "episode_index": str(record.episode_index),
            "episode_return": f"{record.episode_return:.2f}",
            "episode_length": str(record.length),
            "sampled_actions": "[" + ", ".join(_format_action(a) for a in sampled) + "]",
            "num_sampled": str(len(sampled)),
            "action_histogram": self._histogram(record.actions, spec),
            "recent_returns": ", ".join(f"{r:.1f}" for r in returns),
            "return_trend": describe_trend(returns),
            "n_actions": str(spec.n),
            "action_list": "\n".join(f"{i}: {label}" for i, label in enumerate(spec.labels)),
        }

    @staticmethod
    def _histogram(actions: Sequence[Any], spec: ActionSpec) -> str:
        if not actions:
            return "no actions recorded"
        if spec.is_discrete:
            counts = np.bincount(np.asarray(actions, dtype=int).clip(0, spec.n - 1), minlength=spec.n)
            shares = counts / counts.sum()
            return ", ".join(f"{i} ({spec.labels[i]}): {s:.0%}" for i, s in enumerate(shares))
        arr = np.asarray(actions, dtype=float).reshape(len(actions), -1)
        return ", ".join(
            f"{spec.labels[d]}: mean {arr[:, d].mean():+.2f}, std {arr[:, d].std():.2f}"
            for d in range(min(arr.shape[1], spec.n))
        )
