"""The ``send`` verb: NDJSON CloudEvents on stdin, shipped framed to ``--to URI``; what it says to the user.

A ``--to`` that is not a URI a client can connect to, and a standard input that cannot be read as a stream (closed,
a directory), are usage errors (exit 2); events not acknowledged are a runtime failure (exit 1).
"""

from __future__ import annotations

import argparse
import sys

import anyio

from .errors import EXIT_FAIL, EXIT_OK, UsageError
from .stdio import stdin_problem

__all__ = ["cmd_send"]


def cmd_send(args: argparse.Namespace) -> int:
    from .transport.send import SendReport, send_ndjson

    problem = stdin_problem()
    if problem is not None:
        raise UsageError(f"hoststamp send: standard input is {problem}; send reads the events to ship from it")
    stdin = sys.stdin.buffer

    def say(lineno: int, reason: str) -> None:  # at once: with the host away, the end may be far off
        print(f"hoststamp send: line {lineno}: {reason}", file=sys.stderr, flush=True)

    async def send() -> SendReport:
        return await send_ndjson(args.to, stdin, timeout=args.timeout, on_problem=say)

    report = anyio.run(send)
    if report.error:
        print(f"hoststamp send: {report.error}", file=sys.stderr)
    unsent = "" if report.unsent_from is None else f"; the input from line {report.unsent_from} on was not sent"
    print(f"hoststamp send: {report.acked} of {report.sent} events acknowledged by {args.to}{unsent}",
          file=sys.stderr)
    return EXIT_OK if report.ok else EXIT_FAIL
