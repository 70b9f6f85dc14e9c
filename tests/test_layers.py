"""The layers of shared/notes/style.md are enforced, not hoped for: each layer folder's ruff.toml bans
every higher layer (ruff's banned-api, TID251, relative imports included), and import-linter checks
the same order over the whole import graph (lazy imports too)."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "crn_deploy"
ORDER = ["", "data", "backends", "runtime", "measure", "artifacts", "training", "cli"]  # lowest first; "" contract
SIBLINGS = {"models": "artifacts", "scale": "measure"}


def _ruff(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    if ruff is None:
        pytest.fail("ruff is not installed: pip install -e '.[test]'")
    return subprocess.run([ruff, *args], input=stdin, capture_output=True, text=True, cwd=ROOT)


def test_every_layer_folder_has_its_bans():
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert folders <= set(ORDER) | set(SIBLINGS) | {"assets"}, "a new package needs a place in the layers"
    for folder in ["", *folders - {"assets"}]:
        assert (PACKAGE / folder / "ruff.toml").is_file(), f"crn_deploy/{folder} has no ruff.toml"


def test_the_package_keeps_its_layers():
    result = _ruff("check", "--select", "TID251", "crn_deploy")
    assert result.returncode == 0, result.stdout


@pytest.mark.parametrize("folder", ORDER)
def test_an_upward_import_is_refused_and_a_downward_one_allowed(folder):
    level = ORDER.index(folder)
    path = f"crn_deploy/{folder}/probe.py" if folder else "crn_deploy/probe.py"
    dots = "." if not folder else ".."
    for other in ORDER[level + 1 :]:
        result = _ruff("check", "--select", "TID251", "--stdin-filename", path, "-",
                       stdin=f"from {dots}{other} import anything\n")
        assert result.returncode == 1 and "TID251" in result.stdout, f"{folder or 'contract'} may import {other}"
    for other in ORDER[1:level]:
        result = _ruff("check", "--select", "TID251", "--stdin-filename", path, "-",
                       stdin=f"from {dots}{other} import anything\n")
        assert result.returncode == 0, result.stdout


def test_import_linter_sees_the_same_layers_in_the_whole_graph():
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    if lint is None:
        pytest.fail("import-linter is not installed: pip install -e '.[test]'")
    result = subprocess.run([lint], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0 and "1 kept, 0 broken" in result.stdout, result.stdout
