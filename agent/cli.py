"""Command line: argv -> Config -> app. The only place that prints to the user or picks exit codes.

Exit codes: 0 ok; 1 a failure found (verify) or a runtime failure; 2 bad usage
or bad configuration (the message names the file and the key).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson

from . import config as config_mod
from .argtypes import leaf_index, probe_list, seconds, send_target
from .auditcmds import OutputClosed, cmd_prove, cmd_verify
from .errors import EXIT_FAIL, EXIT_OK, EXIT_USAGE, AgentError, ConfigError, SigningError, UsageError
from .logs import JsonFormatter
from .runcmds import DEFAULT_KEY, cmd_probe, cmd_run, load_config, setup_logging
from .sendcmd import cmd_send
from .signing.keys import generate_keypair
from .stdio import guard_standard_fds, silence_stdout

__all__ = ["main"]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}")


def _logging_options(p: argparse.ArgumentParser, fmt: Any, verbose: Any) -> None:
    p.add_argument("--log-format", choices=("human", "json"), default=fmt, help="log line format (default: human)")
    p.add_argument("-v", "--verbose", action="store_true", default=verbose, help="debug logging")


def _build_parser() -> argparse.ArgumentParser:
    from . import __version__

    p = _Parser(prog="hoststamp", description="Host telemetry as signed, verifiable CloudEvents.")
    p.add_argument("--version", action="version", version=f"hoststamp {__version__}")
    _logging_options(p, None, False)
    sub = p.add_subparsers(dest="verb", metavar="VERB", parser_class=_Parser)
    sub.required = True

    run = sub.add_parser("run", help="run the agent", description="Run the agent: probes -> signed events -> sinks.")
    run.add_argument("--config", metavar="FILE", help="TOML configuration (default: the embedded default)")
    run.add_argument("--once", action="store_true",
                     help="one round of every selected probe, flush every sink, exit (1 if a sink missed an event)")
    run.add_argument("--probes", metavar="LIST", type=probe_list, help="comma-separated probe names, or 'none'")
    run.add_argument("--sink", metavar="URI", action="append", default=[], help="add a sink (repeatable)")
    run.add_argument("--listen", metavar="URI", action="append", default=[], help="add a listener (repeatable)")
    run.add_argument("--key", metavar="FILE", help=f"host private key (default: {DEFAULT_KEY})")

    probe = sub.add_parser("probe", help="one reading of one probe as signed NDJSON on stdout")
    probe.add_argument("name", metavar="NAME")
    probe.add_argument("--config", metavar="FILE")
    probe.add_argument("--key", metavar="FILE")

    keys = sub.add_parser("keys", help="manage the host key")
    keys_sub = keys.add_subparsers(dest="keys_verb", metavar="ACTION", parser_class=_Parser)
    keys_sub.required = True
    gen = keys_sub.add_parser("generate", help="write DIR/host.key (0600) and DIR/host.pub; print the key id")
    gen.add_argument("--dir", default="keys", help="directory (default: keys/)")
    gen.add_argument("--force", action="store_true", help="replace an existing key")

    ver = sub.add_parser(
        "verify",
        help="verify an NDJSON event file, stdin (-), or an archive directory",
        description="Verify events offline. Prints one line per problem and a summary. "
        "Exit 0: all verified; 1: a problem was found; 2: usage error.",
    )
    ver.add_argument("path", metavar="PATH|-", nargs="?")
    ver.add_argument("--pub", metavar="FILE", action="append", default=[],
                     help="a trusted host public key (repeatable; default keys/host.pub)")
    ver.add_argument("--guest-pub", metavar="FILE", action="append", default=[],
                     help="a guest's public key: checks the guest signatures events carry, and nothing else "
                          "(repeatable)")
    ver.add_argument("--json", action="store_true", help="machine-readable report on stdout")
    ver.add_argument("--proof", metavar="FILE", help="check an inclusion proof bundle instead")

    send = sub.add_parser("send", help="ship NDJSON CloudEvents from stdin, framed, to URI")
    send.add_argument("--to", metavar="URI", required=True, type=send_target,
                      help="the receiver: unix:PATH, vsock:CID:PORT or fcvsock:UDS_PATH:PORT")
    send.add_argument("--timeout", type=seconds, default=None,
                      help="give up after this many seconds without room to send or, at the end, without every "
                           "acknowledgement (default: wait however long the receiver is away)")

    prove = sub.add_parser("prove", help="write an inclusion proof bundle for one archived event")
    prove.add_argument("archive", metavar="DIR")
    prove.add_argument("event_id", metavar="EVENT_ID")
    prove.add_argument("-o", "--output", metavar="FILE", help="write here instead of stdout")
    prove.add_argument("--source", metavar="URI", help="the event's source, when its id is not unique in the archive")
    prove.add_argument("--index", metavar="N", type=leaf_index,
                       help="the leaf index of the copy to prove, when the event was archived more than once "
                            "(default: the first)")

    cfg = sub.add_parser("config", help="configuration tools")
    cfg_sub = cfg.add_subparsers(dest="config_verb", metavar="ACTION", parser_class=_Parser)
    cfg_sub.required = True
    check = cfg_sub.add_parser("check", help="check a configuration file (exit 0 valid, 2 invalid)")
    check.add_argument("file", metavar="FILE")

    st = sub.add_parser("status", help="per-probe and per-sink health of the running agent (exit 1 if unhealthy)")
    st.add_argument("--config", metavar="FILE", help="read state_dir from this configuration")
    st.add_argument("--state-dir", metavar="DIR", help="the agent's state_dir (default: from the configuration)")
    st.add_argument("--json", action="store_true", help="print the raw status document")
    # the logging options go before the verb or after it alike (``hoststamp run --log-format json``)
    for verb in sub.choices.values():
        _logging_options(verb, argparse.SUPPRESS, argparse.SUPPRESS)
        for action in verb._subparsers._group_actions if verb._subparsers is not None else ():
            for second in getattr(action, "choices", {}).values():  # ``keys generate``, ``config check``
                _logging_options(second, argparse.SUPPRESS, argparse.SUPPRESS)
    return p


# --- verbs (``run`` and ``probe``: agent/runcmds.py) -------------------------------------------------


def _cmd_keys(args: argparse.Namespace) -> int:
    key = generate_keypair(args.dir, overwrite=args.force)
    print(key.keyid)
    return EXIT_OK


def _cmd_config(args: argparse.Namespace) -> int:
    from .configcheck import Problem, check_document

    if sys.stdin is None and args.file in ("-", "/dev/stdin", "/dev/fd/0", "/proc/self/fd/0"):
        raise UsageError(f"hoststamp config check: {args.file}: standard input is closed; nothing to check")
    try:  # read once: the file may be a pipe (``config check /dev/stdin``)
        doc = config_mod.read_document(args.file)
        problems = check_document(doc, file=args.file)
    except ConfigError as exc:
        problems = [Problem(args.file, None, exc.reason)]
    for prob in problems:
        print(prob, file=sys.stderr)
    errors = sum(p.severity == "error" for p in problems)
    if errors:
        print(f"{args.file}: {errors} problem{'s' if errors != 1 else ''}", file=sys.stderr)
        return EXIT_USAGE
    cfg = config_mod.parse(doc, file=args.file)
    enabled = ",".join(p.name for p in cfg.enabled_probes()) or "none"
    print(f"{args.file}: OK (probes: {enabled}; sinks: {len(cfg.sinks)}; listeners: {len(cfg.listeners)})")
    return EXIT_OK


def _status_dir(config: str | None) -> str:
    """The ``state_dir`` of ``config``, even of a file with a problem elsewhere (a refused reload's): said too."""
    try:
        return load_config(config).agent.state_dir
    except ConfigError as exc:
        agent = config_mod.read_document(config).get("agent", {}) if config and exc.key != "agent.state_dir" else 0
        state = agent.get("state_dir", config_mod.AgentSettings().state_dir) if isinstance(agent, dict) else None
        if not isinstance(state, str) or not state:
            raise exc from None
        print(f"hoststamp status: {exc} (the status is read all the same)", file=sys.stderr)
        return state


def _cmd_status(args: argparse.Namespace) -> int:
    from .health import STATUS_FILE, read_status, render

    state = args.state_dir or _status_dir(args.config)
    path = Path(state) / STATUS_FILE
    try:
        doc = read_status(path)
    except (OSError, ValueError) as exc:
        print(f"hoststamp status: no status at {path} ({getattr(exc, 'strerror', None) or exc}); "
              "is the agent running with this state_dir?", file=sys.stderr)
        return EXIT_FAIL
    if args.json:
        sys.stdout.buffer.write(orjson.dumps(doc) + b"\n")
        return EXIT_OK
    report = render(doc)
    print(report.text)
    return EXIT_OK if report.healthy else EXIT_FAIL


_VERBS: dict[str, Callable[[argparse.Namespace], int]] = {
    "run": cmd_run,
    "probe": cmd_probe,
    "keys": _cmd_keys,
    "verify": cmd_verify,
    "send": cmd_send,
    "prove": cmd_prove,
    "config": _cmd_config,
    "status": _cmd_status,
}


def _fatal(text: str) -> None:
    """Say why the command failed: a log record where logs are JSON (one object per line, as promised), else a
    plain line on stderr."""
    if any(isinstance(h.formatter, JsonFormatter) for h in logging.getLogger("hoststamp").handlers):
        logging.getLogger("hoststamp").error(text)
    else:
        print(text, file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    guard_standard_fds()
    parser = _build_parser()
    args: argparse.Namespace | None = None
    try:
        args, extra = parser.parse_known_args(argv)
        if extra:  # said by the verb's name (and its action's), which argparse leaves to the top level
            action = getattr(args, f"{args.verb}_verb", None)
            prog = f"hoststamp {args.verb}" + (f" {action}" if action else "")
            raise UsageError(f"{prog}: unrecognized arguments: {' '.join(extra)} (see {prog} --help)")
        setup_logging(args.log_format, args.verbose)
        code = _VERBS[args.verb](args)
        sys.stdout.flush()  # a write error (a full disk behind a redirect) is reported here, not lost at exit
        return code
    except UsageError as exc:
        _fatal(str(exc))
        return EXIT_USAGE
    except ConfigError as exc:
        _fatal(f"hoststamp: configuration error: {exc}")
        return EXIT_USAGE
    except SigningError as exc:
        # an unusable host key is a set-up problem, like a bad config
        _fatal(f"hoststamp: key error: {exc}")
        return EXIT_USAGE if args is not None and args.verb in ("run", "probe", "keys") else EXIT_FAIL
    except AgentError as exc:
        _fatal(f"hoststamp: {exc}")
        return EXIT_FAIL
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError as exc:  # a reader that had enough (``| head``): the verdict still counts (verify)
        silence_stdout()
        return exc.code if isinstance(exc, OutputClosed) else EXIT_OK
    except OSError as exc:  # writing the output failed: said plainly, never a traceback
        where = f" ({exc.filename})" if exc.filename else " (standard output)"
        _fatal(f"hoststamp: cannot write the output{where}: {exc.strerror or exc}")
        silence_stdout()
        return EXIT_FAIL


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
