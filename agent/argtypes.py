"""Argument types of the command line: a value is checked as it is parsed, and refused with a message the parser
prefixes with the option's name (``hoststamp send: argument --to: ...``, exit 2)."""

from __future__ import annotations

import argparse
import math

from .errors import ConfigError
from .transport.uri import parse_endpoint

__all__ = ["leaf_index", "probe_list", "seconds", "send_target"]


def probe_list(text: str) -> list[str]:
    if text.strip().lower() == "none":
        return []
    names = [p.strip() for p in text.split(",") if p.strip()]
    if not names:  # an empty list is more likely an unset shell variable than a wish for no probes
        raise argparse.ArgumentTypeError("no probe named (to run none, say 'none')")
    return names


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"expected seconds (a number above 0), got {text!r}")
    return value


def leaf_index(text: str) -> int:
    if not text.isascii() or not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a leaf index (0 or more), got {text!r}")
    return int(text)


def send_target(text: str) -> str:
    """A stream endpoint to connect to (``send --to``), checked before any input is read."""
    try:
        parse_endpoint(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(exc.reason) from None
    return text
