"""The README's own examples run as printed, against what the README's main command (crn-demo on
its defaults) leaves behind."""

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from .shown_commands import pages, shown_commands, without_optional_parts

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # the demo's real defaults: about a minute on two cores
def test_the_readme_snippet_and_example_command_run_after_crn_demo(tmp_path):
    readme = (ROOT / "README.md").read_text()
    snippet = re.search(r"```python\n(.*?)```", readme, re.S).group(1)
    command = re.search(r"^    (python examples/simulation_loop\.py .+)$", readme, re.M).group(1)
    demo = subprocess.run([sys.executable, "-m", "crn_deploy.cli.demo"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=600)
    assert demo.returncode == 0, demo.stderr
    result = subprocess.run([sys.executable, "-c", snippet], cwd=tmp_path, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:2] == ["(540, 960, 3) (2, 540, 960, 3) True", "(540, 960, 3)"]
    argv = shlex.split(command)  # "python examples/..." with the README's artifact path, relative to the demo folder
    example = subprocess.run([sys.executable, str(ROOT / argv[1]), *argv[2:]], cwd=tmp_path, capture_output=True,
                             text=True, timeout=300)
    assert example.returncode == 0, example.stderr
    assert "frames" in example.stdout


def _as_argv(text: str) -> list[str]:
    text = without_optional_parts(text)
    return [token for token in shlex.split(text.split("&&")[0]) if not token.startswith("@")]  # @recipe files


def test_every_command_shown_in_readme_and_docs_parses():
    import importlib

    scripts = dict(re.findall(r'^(crn-[a-z]+) = "([\w.:]+)"$', (ROOT / "pyproject.toml").read_text(), re.M))
    shown = shown_commands()
    assert len(shown) > 20  # the README's command list alone holds more
    for page, text in shown:
        argv = _as_argv(text)
        prog = Path(argv[0]).name
        assert prog in scripts, f"{page}: {text!r} names no crn-deploy command"
        module = importlib.import_module(scripts[prog].split(":")[0])
        try:
            module.build_parser().parse_args(argv[1:])
        except SystemExit:
            pytest.fail(f"{page}: {text!r} does not parse as {prog}'s arguments")


def test_every_relative_link_in_readme_and_docs_resolves():
    broken = [f"{page.relative_to(ROOT)}: {link}" for page in pages()
              for link in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text())
              if not (page.parent / link).exists()]
    assert broken == []


def test_committed_results_and_docs_name_no_scratch_path_of_the_machine_that_made_them():
    """Results and docs name paths relative to their own folder (the suites rewrite theirs as their last step,
    benchmarks/suites/relative_paths.py): an absolute path under /tmp, /root, /home or /work is some machine's."""
    scratch = re.compile(r"(?<![\w.])/(tmp|root|home|work)/")
    places = [ROOT / "README.md", ROOT / "benchmarks" / "README.md", *(ROOT / "docs").rglob("*.md"),
              *(p for p in (ROOT / "benchmarks" / "results").rglob("*") if p.is_file())]
    found = [f"{p.relative_to(ROOT)}:{n}" for p in places for n, line in enumerate(
        p.read_text(errors="replace").splitlines(), 1) if scratch.search(line)]
    assert found == []


def test_relative_paths_rewrites_a_results_folder_and_leaves_other_words_alone(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("relative_paths", ROOT / "benchmarks/suites/relative_paths.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    results, work = tmp_path / "results" / "suite", tmp_path / "engines" / "suite"
    results.mkdir(parents=True)
    (results / "run.log").write_text(f"wrote {work}/a.onnx and {results}/bench.json; suite-wide suites/x\n")
    (results / "picture.png").write_bytes(b"\x89PNG" + str(work).encode())  # not text: left alone
    module.rewrite(results, {**module.spellings(str(results)), **module.spellings(str(work))})
    expected = "wrote ../../engines/suite/a.onnx and ./bench.json; suite-wide suites/x\n"
    assert (results / "run.log").read_text() == expected
    assert str(work).encode() in (results / "picture.png").read_bytes()
