"""The layers are enforced, not hoped for: each layer folder's ruff.toml bans every higher and sibling layer
(ruff's banned-api, TID251, relative imports included), every one of those bans is probed here, and
import-linter checks the same order over the whole import graph (lazy imports too), with no exception."""

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "crn_deploy"
# lowest first; folders in one tuple are siblings ("" is the contract's top-level modules, families is its package)
LAYERS = [("", "families"), ("data",), ("backends",), ("runtime",), ("graph",), ("models",), ("measure", "scale"),
          ("artifacts",), ("training",), ("cli",)]
LEVEL = {folder: i for i, layer in enumerate(LAYERS) for folder in layer}
FOLDERS = [f for layer in LAYERS for f in layer if f]


def _ruff(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    if ruff is None:
        pytest.fail("ruff is not installed: pip install -e '.[test]'")
    return subprocess.run([ruff, *args], input=stdin, capture_output=True, text=True, cwd=ROOT)


def test_every_layer_folder_has_its_bans():
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert folders == set(FOLDERS), "a new package needs a place in the layers (and the old ones theirs)"
    for folder in ["", *FOLDERS]:
        assert (PACKAGE / folder / "ruff.toml").is_file(), f"crn_deploy/{folder} has no ruff.toml"


def test_the_package_keeps_its_layers():
    result = _ruff("check", "--select", "TID251", "crn_deploy")
    assert result.returncode == 0, result.stdout


@pytest.mark.parametrize("folder", ["", *FOLDERS])
def test_every_higher_or_sibling_import_is_refused_and_every_lower_one_allowed(folder):
    path = f"crn_deploy/{folder}/probe.py" if folder else "crn_deploy/probe.py"
    dots = "." if not folder else ".."
    for other in FOLDERS:
        if other == folder:
            continue
        result = _ruff("check", "--select", "TID251", "--stdin-filename", path, "-",
                       stdin=f"from {dots}{other} import anything\n")
        refused = result.returncode == 1 and "TID251" in result.stdout
        upward_or_sibling = LEVEL[other] >= LEVEL[folder] and LEVEL[other] > 0
        assert refused == upward_or_sibling, f"{folder or 'contract'} importing {other}: refused={refused}"


def test_import_linter_has_the_same_layers_and_no_exceptions():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    (contract,) = config["contracts"]
    assert "ignore_imports" not in contract
    declared = [re.split(r"\s*[|:]\s*", layer) for layer in reversed(contract["layers"])]
    assert [set(layer) for layer in declared[1:]] == [set(layer) for layer in LAYERS[1:]]
    assert "families" in declared[0] and "|" in next(layer for layer in contract["layers"] if "measure" in layer)


def test_import_linter_sees_the_same_layers_in_the_whole_graph():
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    if lint is None:
        pytest.fail("import-linter is not installed: pip install -e '.[test]'")
    result = subprocess.run([lint], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0 and "1 kept, 0 broken" in result.stdout, result.stdout
