"""Usual mistakes on the command line: one line naming the problem and the fix, exit 2, and found
before minutes of work rather than after."""

import pytest

from crn_deploy.cli.bench import main as bench_main
from crn_deploy.cli.build import main as build_main
from crn_deploy.cli.run import main as run_main


def test_crn_run_refuses_an_output_it_cannot_write(tiny_artifacts, tmp_path, capsys):
    artifact = str(tiny_artifacts["fp32"].artifact_path)
    assert run_main([artifact, "--input", "synthetic", "--frames", "2", "--output", str(tmp_path / "o.gif")]) == 2
    assert "cannot write '.gif'" in capsys.readouterr().err and not (tmp_path / "o.gif").exists()


def test_crn_bench_checks_its_output_folders_before_measuring(tiny_artifacts, tmp_path, capsys):
    (tmp_path / "a-file").write_text("")
    folder = str(tiny_artifacts["fp32"].path.parent)
    for flag, target in (("--report", "a-file"), ("--json", "a-file/r.json")):
        assert bench_main([folder, flag, str(tmp_path / target)]) == 2
        out, err = capsys.readouterr()
        assert "cannot create output folder" in err and "p50" not in out


def test_crn_build_names_a_missing_onnx_not_its_manifest(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_main([str(tmp_path / "missing.onnx")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "missing.onnx not found" in err and "missing.json" not in err
