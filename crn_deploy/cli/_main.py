"""What every command shares: the project's errors become one line on stderr and an exit code."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from ..errors import CrnError


def run_command(prog: str, body: Callable[[], int]) -> int:
    try:
        return body()
    except CrnError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130


def parse_or_exit(parser: argparse.ArgumentParser, argv: list[str] | None, convert: Callable | None = None):
    """argparse, plus our own value checks reported the argparse way (usage line, exit 2)."""
    args = parser.parse_args(argv)
    if convert is not None:
        try:
            convert(args)
        except CrnError as e:
            parser.error(str(e))
    return args


def log(message: str) -> None:
    print(message, flush=True)
