"""How an exploration update scores against a reference, one scenario at a time.

Discrete (a distribution ``p`` over ``n`` actions, Q_ref an ``N x n`` array over the states the
learner visits next), with A(s, a) = Q_ref(s, a) - mean_a Q_ref(s, a):

* ``advantage``: E_s sum_a p(a) A(s, a) / E_s std_a Q_ref(s, a). 0 for the uniform draw
  (the algorithm's own ε-exploration), positive when the advice puts mass on actions the
  reference values, negative when it favours the ones it does not; in units of the reference's
  spread over actions (1 = one standard deviation better than a uniformly random action).
* ``greedy_mass``: E_s p(argmax_a Q_ref(s, a)) * n: the mass on the reference's greedy action
  relative to uniform's 1/n (1 for uniform, n for all mass on it).
* ``kl_uniform``: KL(p || uniform) in nats, how far from uniform the advice is at all.

Continuous (a bias ``b`` per dimension in normalised units, the learner's action pi(s) and the
reference's pi_ref(s), both in [-1, 1]):

* ``q_gain``: E_s [Q_ref(s, clip(pi(s) + b)) - Q_ref(s, pi(s))] / E_s spread(s), where spread(s)
  is the standard deviation of Q_ref(s, a) over uniformly drawn actions: whether the bias moves
  the learner's actions towards ones the reference values more (0 for no bias).
* ``cosine``: E_s cos(b, pi_ref(s) - pi(s)): whether the bias points where the reference would
  act (0 for no bias, or in a state where the learner already acts as the reference).

The ``score`` of a scenario is ``advantage`` (discrete) or ``q_gain`` (continuous). Ratios of means,
not means of ratios: a state where every action is worth the same adds nothing rather than
dividing by zero.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

__all__ = ["continuous_scores", "discrete_scores"]

QFunction = Callable[[np.ndarray, np.ndarray], np.ndarray]


def _ratio(num: float, den: float) -> float:
    return float(num / den) if den > 1e-12 else 0.0


def discrete_scores(p: Sequence[float], q_ref: np.ndarray) -> dict[str, float]:
    """The scores of distribution ``p`` against Q-values ``q_ref`` (N x n)."""
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q_ref, dtype=np.float64)
    n = q.shape[1]
    if p.shape != (n,):
        raise ValueError(f"the distribution has {p.size} values, the reference {n} actions")
    adv = q - q.mean(axis=1, keepdims=True)
    greedy = q.argmax(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        kl = float(np.sum(np.where(p > 0, p * np.log(p * n), 0.0)))
    advantage = _ratio(float((adv @ p).mean()), float(q.std(axis=1).mean()))
    return {"score": advantage, "advantage": advantage, "greedy_mass": float(p[greedy].mean() * n),
            "kl_uniform": kl}


def continuous_scores(b: Sequence[float], states: np.ndarray, pi: np.ndarray, pi_ref: np.ndarray,
                      q_pi: np.ndarray, spread: np.ndarray, q_ref: QFunction) -> dict[str, float]:
    """The scores of bias ``b`` (normalised units); ``q_ref(states, actions)`` gives Q_ref row by row."""
    b = np.asarray(b, dtype=np.float64)
    pi = np.asarray(pi, dtype=np.float64)
    if b.shape != pi.shape[1:]:
        raise ValueError(f"the bias has {b.size} values, the actions {pi.shape[1]} dimensions")
    moved = np.clip(pi + b, -1.0, 1.0)
    gain = np.asarray(q_ref(states, moved), dtype=np.float64) - np.asarray(q_pi, dtype=np.float64)
    q_gain = _ratio(float(gain.mean()), float(np.mean(spread)))
    towards = np.asarray(pi_ref, dtype=np.float64) - pi
    norms = np.linalg.norm(towards, axis=1) * np.linalg.norm(b)
    with np.errstate(divide="ignore", invalid="ignore"):
        cos = np.where(norms > 1e-12, towards @ b / norms, 0.0)
    return {"score": q_gain, "q_gain": q_gain, "cosine": float(cos.mean())}
