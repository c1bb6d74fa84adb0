"""C51 and Rainbow whose n-step targets bootstrap from the right state.

Tianshou 2.0.1's ``C51._target_dist`` evaluates the next-state distribution at ``batch.obs_next``,
the observation after the *first* step of the sampled transition, while ``batch.returns``
(Tianshou's ``compute_nstep_return`` with ``_target_q`` = the support) already holds the sum of
``n`` discounted rewards plus ``γⁿ·z``. With ``n > 1`` the target becomes
``r_t + γ r_{t+1} + … + γⁿ Z(s_{t+1})`` instead of ``… + γⁿ Z(s_{t+n})``: the value of a state
``n − 1`` steps too early is discounted as if it were ``n`` steps away. DQN and QR-DQN are not
affected (their ``_target_q`` reads the buffer at the right index).

:class:`NStepTargetMixin` fixes this where the batch is prepared, which is the only place that
knows the buffer: it replaces the batch's ``obs_next`` with the ``obs_next`` of the transition
``n − 1`` steps later in the same episode, found with the buffer's own ``next`` exactly as
``compute_nstep_return`` finds the index whose target it adds (an episode that ends earlier
stops at its last transition, where ``returns`` already holds no bootstrap term when it was
terminated). With ``n = 1`` nothing changes.

Use :class:`NStepC51` and :class:`NStepRainbowDQN` exactly like Tianshou's ``C51`` and
``RainbowDQN``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from tianshou.algorithm import C51, RainbowDQN
from tianshou.data import ReplayBuffer

__all__ = ["NStepC51", "NStepRainbowDQN", "NStepTargetMixin", "indices_after"]


def indices_after(buffer: ReplayBuffer, indices: np.ndarray, steps: int) -> np.ndarray:
    """The buffer indices ``steps`` transitions after ``indices`` within their episodes (an
    episode's last stored transition when it ends sooner), as Tianshou's n-step return walks them."""
    last = np.asarray(indices)
    for _ in range(steps):
        last = buffer.next(last)
    return last


class NStepTargetMixin:
    """Put before ``C51`` (or a subclass such as ``RainbowDQN``) in the bases: the target
    distribution is evaluated at the state ``n_step`` steps after the sampled one."""

    def _preprocess_batch(self, batch: Any, buffer: ReplayBuffer, indices: np.ndarray) -> Any:
        batch = super()._preprocess_batch(batch, buffer, indices)  # type: ignore[misc]
        n = int(self.n_step)  # type: ignore[attr-defined]
        if n > 1:
            batch.obs_next = buffer[indices_after(buffer, indices, n - 1)].obs_next
        return batch


class NStepC51(NStepTargetMixin, C51):
    """Tianshou's ``C51`` with n-step targets that bootstrap from ``s_{t+n}``."""


class NStepRainbowDQN(NStepTargetMixin, RainbowDQN):
    """Tianshou's ``RainbowDQN`` with n-step targets that bootstrap from ``s_{t+n}``."""
