"""Strict YAML reading that remembers where each value came from.

PyYAML silently keeps the last of two equal mapping keys; here that is an error. The composed
node tree is kept so a validation error can name the line and column of the offending key.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import yaml

__all__ = ["Position", "YamlDocument", "YamlError", "read_yaml"]


class YamlError(ValueError):
    """Unreadable YAML or a duplicate key. ``position`` is where the problem is."""

    def __init__(self, message: str, position: Position | None) -> None:
        super().__init__(message)
        self.position = position

    def where(self, source: object) -> str:
        """``source:line:column`` (just ``source`` without a position), to head a message."""
        if self.position is None:
            return str(source)
        return f"{source}:{self.position.line}:{self.position.column}"


@dataclass(frozen=True)
class Position:
    """A 1-based line and column in the source file."""

    line: int
    column: int

    @classmethod
    def of(cls, mark: yaml.Mark) -> Position:
        """The position of a PyYAML mark (which counts from 0)."""
        return cls(mark.line + 1, mark.column + 1)


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate mapping keys."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, yaml.Node] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                first = Position.of(seen[key].start_mark)
                raise YamlError(f"duplicate key {key!r} (first given at line {first.line})",
                                Position.of(key_node.start_mark))
            seen[key] = key_node
        return super().construct_mapping(node, deep=deep)


@dataclass(frozen=True)
class YamlDocument:
    """A parsed YAML document: ``data`` plus the node tree to locate paths in it."""

    data: Any
    root: yaml.Node | None

    def locate(self, path: Sequence[str | int]) -> Position | None:
        """Where ``path`` (mapping keys and sequence indices) is; the deepest existing part of it
        when the rest is missing (a missing field is reported at its parent). Path parts that do
        not match the document (pydantic's union tags, for example) are skipped."""
        node = self.root
        if node is None:
            return None
        found: yaml.Node = node
        mark = node.start_mark
        for part in path:
            child, child_mark = _child(found, part)
            if child is None:
                continue
            found, mark = child, child_mark
        return Position.of(mark)


def _child(node: yaml.Node, part: str | int) -> tuple[yaml.Node | None, yaml.Mark | None]:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.value == str(part):
                return value_node, key_node.start_mark
    elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
        child = node.value[part]
        return child, child.start_mark
    return None, None


def read_yaml(text: str) -> YamlDocument:
    """Parse one YAML document. Raises :class:`YamlError` with a position."""
    loader = _StrictLoader(text)
    try:
        root = loader.get_single_node()
        data = loader.construct_document(root) if root is not None else None
    except YamlError:
        raise
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or str(exc)
        raise YamlError(f"not valid YAML: {problem}", Position.of(mark) if mark else None) from None
    except yaml.YAMLError as exc:
        raise YamlError(f"not valid YAML: {exc}", None) from None
    finally:
        loader.dispose()
    return YamlDocument(data, root)
