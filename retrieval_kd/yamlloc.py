"""YAML with positions: map a pydantic error location (a path of keys and indices) to a line.

``yaml.compose`` keeps each node's start mark; :func:`locate` walks that node tree along a
location path and returns the line of the deepest key it reaches. Parts that name no key
(a union's tag, a field that is missing) are skipped, so a missing field points at the
mapping that should hold it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from retrieval_kd.errors import DataError


def load_yaml(path: str | Path) -> tuple[Any, Node | None]:
    """Parse a YAML file into (data, node tree); syntax errors and duplicate keys name the line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise DataError(path, f"cannot read: {e.strerror or e}") from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise DataError(path, f"invalid YAML: {getattr(e, 'problem', None) or e}",
                        mark.line + 1 if mark else None) from None
    if node is not None:
        _check_duplicates(path, node)
    return data, node


def _check_duplicates(path: Path, node: Node) -> None:
    if isinstance(node, MappingNode):
        seen: dict[str, int] = {}
        for k, v in node.value:
            if isinstance(k, ScalarNode):
                line = k.start_mark.line + 1
                if k.value in seen:
                    raise DataError(path, f"duplicate key '{k.value}' (first at line {seen[k.value]})",
                                    line)
                seen[k.value] = line
            _check_duplicates(path, v)
    elif isinstance(node, SequenceNode):
        for v in node.value:
            _check_duplicates(path, v)


def locate(node: Node | None, loc: tuple | list) -> int | None:
    """1-based line of the deepest key (or list item) of ``loc`` present in the tree."""
    if node is None:
        return None
    line = node.start_mark.line + 1
    cur = node
    for part in loc:
        if isinstance(cur, MappingNode):
            for k, v in cur.value:
                if isinstance(k, ScalarNode) and k.value == str(part):
                    line, cur = k.start_mark.line + 1, v
                    break
        elif isinstance(cur, SequenceNode) and isinstance(part, int) and 0 <= part < len(cur.value):
            cur = cur.value[part]
            line = cur.start_mark.line + 1
    return line
