"""Rewrite a results folder's text files so that the paths they name are relative to that folder, as committed
results must be: the results folder itself, and each work folder the suite wrote artifacts to, however they were
spelled when the suite ran (absolute, or relative to where it ran). Every suite runs it as its last step.

    python benchmarks/suites/relative_paths.py RESULTS_DIR [WORK_DIR ...] [--was OLD=NEW ...]

``--was OLD=NEW``: a folder a run used (OLD, absolute) that now stands for NEW (for results made before the suites
ran this: a scratch folder in place of the suite's default work folder).
"""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path

TEXT_SUFFIXES = {".txt", ".log", ".json", ".csv", ".md"}


def rewrite(results: Path, folders: dict[str, Path]) -> list[Path]:
    """Replace every spelling in ``folders`` (spelling -> the folder it names) by that folder relative to
    ``results``, in every text file below ``results``; returns the files changed."""
    replacements = sorted(((spelling.rstrip("/"), _relative(folder, results)) for spelling, folder in folders.items()),
                          key=lambda pair: -len(pair[0]))  # the longest first: a folder inside another
    changed = []
    for path in sorted(p for p in results.rglob("*") if p.suffix in TEXT_SUFFIXES and p.is_file()):
        text = original = path.read_text()
        for spelling, relative in replacements:  # where the spelling starts a path, not inside another one
            text = re.sub(rf"(?<![\w./-]){re.escape(spelling)}(?![\w.-])", relative.replace("\\", "/"), text)
        if text != original:
            path.write_text(text)
            changed.append(path)
    return changed


def _relative(folder: Path, results: Path) -> str:
    return os.path.relpath(folder.resolve(), results.resolve())


def spellings(folder: str) -> dict[str, Path]:
    """The ways a run may have named ``folder``: as given, and absolute."""
    path = Path(folder)
    return {folder: path, str(path.resolve()): path}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("results", type=Path)
    p.add_argument("work", nargs="*", help="work folders the suite wrote artifacts to")
    p.add_argument("--was", action="append", default=[], metavar="OLD=NEW")
    args = p.parse_args()
    folders = {**spellings(str(args.results))}
    for work in args.work:
        folders.update(spellings(work))
    for pair in args.was:
        old, _, new = pair.partition("=")
        folders[old] = Path(new)
    for path in rewrite(args.results, folders):
        print(f"relative paths: {path}")


if __name__ == "__main__":
    main()
