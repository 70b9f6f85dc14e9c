"""The crn-* command lines README.md and docs/ show, as a reader sees them."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def shown_commands(page: Path | None = None) -> list[tuple[str, str]]:
    """(page name, command) for every crn-* line of a code block (four-space indent) in README and docs, in order;
    continued lines as one."""
    found = []
    for path in [page] if page else pages():
        joined = re.sub(r"\\\n\s*", " ", path.read_text())
        for line in joined.splitlines():
            text = line.strip()
            if line.startswith("    ") and text.startswith(("crn-", ".venv/bin/crn-")):
                found.append((path.name, text))
    return found


def without_optional_parts(text: str) -> str:
    """The command without a trailing ``# comment`` and without its ``[optional]`` parts, nested ones too."""
    text = re.sub(r"\s+#\s.*$", "", text)
    while re.search(r"\[[^\[\]]*\]", text):
        text = re.sub(r"\s*\[[^\[\]]*\]", "", text)
    return text
