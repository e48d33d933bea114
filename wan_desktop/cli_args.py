"""What every ``wan-desktop`` subcommand module shares: the parser class and the argument types.

The layout of a subcommand module (``cli.py``'s generate / export / inspect, ``model_manager_cli.py``,
``bench.py``): ``add_parser(subparsers) -> None`` registers the command, ``run(args) -> int`` runs
the parsed namespace and returns the exit status; ``cli.main`` dispatches by the command's name.
Argument errors are one line on stderr and exit status 2, like every other user error.
"""

from __future__ import annotations

import argparse
import math
from typing import NoReturn


class Parser(argparse.ArgumentParser):
    """An argparse parser whose errors are one line (argparse prints the usage too), exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message}\n")


def size(text: str) -> tuple[int, int]:
    """``WIDTHxHEIGHT`` (``832x480``, ``832*480``) as ``(width, height)``."""
    try:
        w, h = text.lower().replace("*", "x").split("x")
        return int(w), int(h)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"size must be WIDTHxHEIGHT, e.g. 832x480, got {text!r}") from None


def positive_float(text: str) -> float:
    """A finite number ≥ 0 (guidance 0 is allowed; the request rules say what else is)."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"not a finite number: {text!r}")
    if v < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {text!r}")
    return v
