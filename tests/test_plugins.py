"""Families are plugins: a family's name (or its config and model types) appears in a condition only in its own
two files, so that nothing else branches on which family it holds; every family module registers itself."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from crn_deploy.families import FAMILIES

PACKAGE = Path(__file__).resolve().parents[1] / "crn_deploy"


def _own_files(name: str) -> set[Path]:
    return {PACKAGE / "families" / f"{name}.py", PACKAGE / "models" / f"{name}.py"}


def _marks(name: str) -> re.Pattern:
    """The family's name as a string literal, or its config or generator class by name."""
    fam = FAMILIES[name]
    types = {fam.config_type.__name__}
    return re.compile(rf"""(['"]{re.escape(name)}['"]|\b(?:{'|'.join(map(re.escape, types))})\b)""")


def _conditions(tree: ast.AST):
    """The source of every condition: if/elif/while/ternary tests, match subjects, comprehension filters,
    comparisons and isinstance calls anywhere."""
    for node in ast.walk(tree):
        if isinstance(node, (ast.If, ast.While, ast.IfExp)):
            yield node.test
        elif isinstance(node, ast.comprehension):
            yield from node.ifs
        elif isinstance(node, ast.Match):
            yield node.subject
        elif isinstance(node, ast.Compare):
            yield node
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) in ("isinstance", "issubclass"):
            yield node


def branches_on_a_family(path: Path) -> list[str]:
    source = path.read_text()
    tree = ast.parse(source)
    conditions = [(c.lineno, ast.unparse(c)) for c in _conditions(tree)]  # (get_source_segment: 10x slower)
    found = {}
    for name in FAMILIES:
        if path in _own_files(name):
            continue
        marks = _marks(name)
        for lineno, text in conditions:
            if marks.search(text):
                found[lineno] = f"{path.relative_to(PACKAGE.parent)}:{lineno}: {text}"
    return [found[line] for line in sorted(found)]


def test_no_family_name_in_a_condition_outside_its_own_files():
    found = [hit for path in sorted(PACKAGE.rglob("*.py")) for hit in branches_on_a_family(path)]
    assert found == [], "\n".join(found)


def test_the_check_finds_a_branch_on_a_family(tmp_path):
    probe = PACKAGE / "probe_for_the_test.py"
    probe.write_text('def f(manifest, config):\n    if manifest.family_name == "spade":\n        return 1\n'
                     '    return [c for c in config if isinstance(c, PosGenConfig)]\n')
    try:
        hits = branches_on_a_family(probe)
    finally:
        probe.unlink()
    assert len(hits) == 2 and "spade" in hits[0] and "PosGenConfig" in hits[1]


def test_every_family_module_registers_one_family_with_a_torch_side():
    from crn_deploy.models.registry import model_families

    modules = {p.stem for p in (PACKAGE / "families").glob("*.py")} - {"__init__", "base"}
    own = {type(fam).__module__.rsplit(".", 1)[-1] for fam in FAMILIES.values()}
    assert own == set(FAMILIES) == set(model_families())  # each family in the module of its name
    for shared in modules - own:  # the rest is what several families build on (spade_trunk), registering none
        users = [p.stem for p in (PACKAGE / "families").glob("*.py") if f"from .{shared} import" in p.read_text()]
        assert len(users) >= 2, f"families/{shared}.py registers no family and is not shared by two"
