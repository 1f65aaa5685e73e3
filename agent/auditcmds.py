"""The auditor's verbs: ``verify`` (a file, stdin, an archive or a proof bundle) and ``prove``.

What an event holds is printed escaped; stdout has one line per problem and the verdict, notes go to stderr.
"""

from __future__ import annotations

import argparse
import errno
import io
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import orjson

from .errors import EXIT_FAIL, EXIT_OK, SigningError, UsageError, shown
from .model import escape_text
from .signing.keys import VerifyKey, load_verify_keys
from .signing.ndjson import Problem, bounded_lines, verify_lines

__all__ = ["DEFAULT_PUB", "cmd_prove", "cmd_verify", "print_report", "printable", "trusted_keys"]

DEFAULT_PUB = "keys/host.pub"


def trusted_keys(pubs: Sequence[str]) -> dict[str, VerifyKey]:
    if pubs:
        return _keys_of("--pub", pubs)
    if Path(DEFAULT_PUB).exists():
        return load_verify_keys([DEFAULT_PUB], public_only="--pub")
    raise UsageError(f"hoststamp verify: no public key given and {DEFAULT_PUB} does not exist; pass --pub FILE")


def _keys_of(option: str, paths: Sequence[str]) -> dict[str, VerifyKey]:
    """The public keys the command line gave with ``option``; one that cannot be used is named with it
    (``--pub keys/x.pub: ...``)."""
    keys: dict[str, VerifyKey] = {}
    for path in paths:
        try:
            keys.update(load_verify_keys([path], public_only=option))
        except SigningError as exc:
            raise SigningError(f"{option} {exc}") from None
    return keys


class _Report(Protocol):
    """What every verification report offers: file, archive and proof checks alike."""

    @property
    def ok(self) -> bool: ...

    @property
    def problems(self) -> Sequence[object]: ...

    def verdict(self) -> str: ...

    def note_lines(self) -> list[str]: ...

    def as_dict(self) -> Mapping[str, object]: ...


class OutputClosed(BrokenPipeError):
    """The reader of the report went away (``| head``): the exit status is still the verdict's."""

    def __init__(self, code: int) -> None:
        super().__init__(errno.EPIPE, "the reader of the output went away")
        self.code = code


def print_report(report: _Report, as_json: bool) -> int:
    code = EXIT_OK if report.ok else EXIT_FAIL
    try:
        if as_json:
            sys.stdout.buffer.write(orjson.dumps(report.as_dict()) + b"\n")
        else:
            # stdout: one line per problem, then the verdict; notes (no failure) go to stderr
            for line in report.note_lines():
                print(printable(line), file=sys.stderr)
            for prob in report.problems:
                print(printable(str(prob)))
            print(printable(report.verdict()))
        sys.stdout.flush()
    except BrokenPipeError:
        raise OutputClosed(code) from None
    return code


def printable(text: str) -> str:
    """``text`` as one line that shows what it holds: what an event holds (an id, a file name) cannot forge a
    line of the report, or reorder one."""
    return shown(escape_text(text, attribute=True))


def cmd_verify(args: argparse.Namespace) -> int:
    try:
        keys = trusted_keys(args.pub)
        guest_keys = _keys_of("--guest-pub", args.guest_pub)
    except SigningError as exc:
        raise UsageError(f"hoststamp verify: {exc}") from None
    if args.proof:
        from .archive.proof import verify_proof_file

        if args.path is not None:  # a bundle carries its own event: a PATH beside it would go unchecked
            raise UsageError("hoststamp verify: --proof FILE checks the bundle alone; give either it or PATH")
        if not os.access(args.proof, os.R_OK) or os.path.isdir(args.proof):  # as a PATH that cannot be read
            raise UsageError(f"hoststamp verify: {args.proof}: cannot read the proof bundle")
        return print_report(verify_proof_file(args.proof, keys), args.json)
    if args.path is None:
        raise UsageError("hoststamp verify: PATH is required (a file, '-' for stdin, or an archive directory)")
    if args.path == "-":
        if sys.stdin is None:  # closed when the command started (``<&-``)
            raise UsageError("hoststamp verify: standard input is closed; nothing to verify")
        # its first two bytes are read whole (a pipe may hand them over one at a time) to tell gzip by them
        stdin = io.BufferedReader(_Prefixed(sys.stdin.buffer))
        return _verify_stream(stdin, "<stdin>", keys, guest_keys, args.json)
    path = Path(args.path)
    if path.is_dir():
        from .archive.verify import verify_archive

        return print_report(verify_archive(path, keys, guest_keys), args.json)
    try:
        f = path.open("rb")
    except OSError as exc:
        raise UsageError(f"hoststamp verify: {path}: {exc.strerror or exc}") from None
    with f:
        return _verify_stream(f, str(path), keys, guest_keys, args.json)


def _verify_stream(f: io.BufferedReader[Any], name: str, keys: Mapping[str, VerifyKey],
                   guest_keys: Mapping[str, VerifyKey], as_json: bool) -> int:
    """Verify the NDJSON events of a file or of stdin, plain or gzip (told by its magic bytes)."""
    if f.peek(2)[:2] != b"\x1f\x8b":
        return print_report(verify_lines(bounded_lines(f), keys, name=name, guest_keys=guest_keys), as_json)
    # gzip (an archive's closed segment, a rotated log): read through it; damage ends the reading, a problem
    failed: list[str] = []
    report = verify_lines(_gunzip_lines(f, failed), keys, name=name, guest_keys=guest_keys)
    for why in failed:
        report.add(Problem(name, f"not readable as gzip after what was read: {why}"))
    return print_report(report, as_json)


class _Prefixed(io.RawIOBase):
    """A stream whose first two bytes were read whole when it was made: a buffered reader over it can peek
    at both even where the stream hands out one byte at a time."""

    def __init__(self, stream: BinaryIO) -> None:
        super().__init__()
        self._stream = stream
        self._head = stream.read(2)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._head:
            data, self._head = self._head[:len(buffer)], self._head[len(buffer):]
        else:
            data = self._stream.read(len(buffer))
        n = len(data)
        buffer[:n] = data
        return n


def _gunzip_lines(f: BinaryIO, failed: list[str]) -> Iterator[bytes]:
    """The lines of gzip data; what stops the decompression is put in ``failed``, and the lines end there."""
    import gzip
    import zlib

    try:
        with gzip.GzipFile(fileobj=f) as gz:
            yield from bounded_lines(gz)  # type: ignore[arg-type]
    except (OSError, EOFError, zlib.error) as exc:
        failed.append(str(exc) or type(exc).__name__)


def cmd_prove(args: argparse.Namespace) -> int:
    from .archive.proof import write_proof

    archive = Path(args.archive)
    if not archive.is_dir():
        what = "no such directory" if not archive.exists() else "not a directory"
        raise UsageError(f"hoststamp prove: {archive}: {what} (ARCHIVE is an archive: sink's directory)")
    copies: list[int] = []
    data = write_proof(archive, args.event_id, source=args.source, at=args.index, copies=copies)
    if len(copies) > 1:
        chosen = copies[0] if args.index is None else args.index
        print(f"note: {len(copies)} copies of {args.event_id} are archived (leaves "
              f"{', '.join(map(str, copies))}); this proves leaf {chosen} (--index picks another)", file=sys.stderr)
    if args.output:
        try:
            Path(args.output).write_bytes(data)
        except OSError as exc:
            raise UsageError(f"hoststamp prove: -o {args.output}: {exc.strerror or exc}") from None
    else:
        sys.stdout.buffer.write(data)
    return EXIT_OK
