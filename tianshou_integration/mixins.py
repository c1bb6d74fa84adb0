"""The error raised when a policy lacks the mixin a function needs.

Guided policies are explicit "mixin first" subclasses of Tianshou's policy classes, written out
in :mod:`.discrete` and :mod:`.continuous`; a policy object never changes class at run time. A
function that needs a mixin checks for it and raises the :class:`TypeError` built here, which
names the class to construct instead and gives the one-line recipe for any other policy class.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["missing_mixin"]


def missing_mixin(function: str, policy: object, mixin: type, ready: Mapping[type, type], prefix: str) -> TypeError:
    """The error for ``function`` called with ``policy``, whose class lacks ``mixin``.

    :param ready: Tianshou policy class -> the explicit subclass with ``mixin`` that mirrors it.
    :param prefix: the name prefix of the recipe's subclass (``Guided``, ``Clipped``).
    """
    cls = type(policy).__name__
    head = f"{function} needs a policy whose class has {mixin.__name__} (from tianshou_integration), got {cls}: "
    instead = ready.get(type(policy))
    if instead is not None:
        return TypeError(f"{head}construct {instead.__name__} instead (same arguments); for another policy class "
                         f"MyPolicy, define `class {prefix}MyPolicy({mixin.__name__}, MyPolicy): pass`")
    return TypeError(f"{head}define `class {prefix}{cls}({mixin.__name__}, {cls}): pass` and construct that "
                     "instead (same arguments)")
