"""The environment-step counter shared by the episode tap and the exploration plug-ins."""

from __future__ import annotations


class EnvStepCounter:
    """One mutable int: the number of training env steps collected so far.

    The episode tap's step hook (or the training loop) advances it; the exploration plug-ins
    read it when they first apply a new update, to record *when* an update took effect.
    Reads and writes happen on the training thread only.
    """

    __slots__ = ("value",)

    def __init__(self, value: int = 0) -> None:
        self.value = value

    def __repr__(self) -> str:
        return f"EnvStepCounter({self.value})"
