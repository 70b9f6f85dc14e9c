"""Which names of an external API our source uses: attribute chains rooted at known receivers."""

from __future__ import annotations

import ast
from pathlib import Path


def _chain(node: ast.AST) -> list[str]:
    """a.b(x).c -> ['a', 'b', 'c']: names from the root, through calls and subscripts."""
    names = []
    while True:
        if isinstance(node, ast.Attribute):
            names.append(node.attr)
            node = node.value
        elif isinstance(node, (ast.Call, ast.Subscript)):
            node = node.func if isinstance(node, ast.Call) else node.value
        elif isinstance(node, ast.Name):
            names.append(node.id)
            return names[::-1]
        else:
            return []


def used_names(source: str, receivers: set[str]) -> set[str]:
    """Attribute names reached from a receiver (a bare name, or ``self.<name>``), dunders excluded."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Attribute) or isinstance(getattr(node, "parent", None), ast.Attribute):
            continue
        chain = _chain(node)
        if chain[:1] == ["self"]:
            chain = chain[1:]
        for i, name in enumerate(chain[:-1]):
            if name in receivers:
                found.update(n for n in chain[i + 1 :] if not n.startswith("__"))
                break
    return found


def used_in_files(paths: list[Path], receivers: set[str]) -> set[str]:
    return set().union(*(used_names(p.read_text(), receivers) for p in paths))
