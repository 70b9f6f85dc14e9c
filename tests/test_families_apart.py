"""Families come apart: in a copy of the package without one family's two files (``families/<name>.py`` and
``models/<name>.py``), the rest imports and passes the quick conformance suite. What several families share lives
outside any one family's files (``spade_trunk``, ``models/shared.py``), and nothing else names a family."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from crn_deploy.families import FAMILIES

ROOT = Path(__file__).resolve().parents[1]
IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc")


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_the_rest_passes_the_conformance_suite_without_one_familys_two_files(name, tmp_path):
    copy = tmp_path / "repo"
    shutil.copytree(ROOT / "crn_deploy", copy / "crn_deploy", ignore=IGNORE)
    shutil.copytree(ROOT / "tests", copy / "tests", ignore=IGNORE)
    shutil.copy(ROOT / "pyproject.toml", copy)
    for side in ("families", "models"):
        (copy / "crn_deploy" / side / f"{name}.py").unlink()
    env = {**os.environ, "PYTHONPATH": str(copy)}
    where = subprocess.run([sys.executable, "-c", "import crn_deploy.families as f, crn_deploy.models.registry as r; "
                            "print(f.__file__); print(' '.join(sorted(r.model_families())))"],
                           cwd=copy, env=env, capture_output=True, text=True, timeout=120)
    assert where.returncode == 0, where.stderr[-2000:]
    package, families = where.stdout.splitlines()
    assert package.startswith(str(copy)) and families.split() == sorted(set(FAMILIES) - {name})
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not slow",
                          "tests/test_conformance.py"], cwd=copy, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:]
    assert f"[{name}]" not in run.stdout and " passed" in run.stdout
