"""The agent's verbs: ``run`` and ``probe``, with what they share: the configuration with the command line's
additions, the host key and the state directory, each refused (as ``config check`` refuses it) before anything
starts. :mod:`agent.cli` parses the command line and turns what these raise into messages and exit codes.
"""

from __future__ import annotations

import argparse
import errno
import functools
import logging
import os
import sys
from pathlib import Path

import anyio

from . import config as config_mod
from .errors import EXIT_FAIL, EXIT_OK, ConfigError, SigningError, UsageError
from .signals import ignore_until_handled
from .signing.keys import SigningKey, load_signing_key
from .stdio import same_terminal

__all__ = ["DEFAULT_KEY", "cmd_probe", "cmd_run", "host_key", "load_config", "setup_logging"]

DEFAULT_KEY = "keys/host.key"

log = logging.getLogger("hoststamp")


def setup_logging(fmt: str | None, verbose: bool, level: str = "info") -> None:
    from .logs import configure

    configure(fmt or "human", logging.DEBUG if verbose else logging.getLevelName(level.upper()))


def load_config(path: str | None) -> config_mod.Config:
    return config_mod.load(path) if path else config_mod.default_config()


def host_key(arg: str | None, cfg: config_mod.Config) -> SigningKey:
    """The host key of ``--key`` (named as such when it cannot be used), else of the configuration
    (``HOSTSTAMP_KEY`` or ``[agent] key``, named as such), else the default. ``run`` loads it with this at start
    and checks it with this on each reload."""
    try:
        return load_signing_key(_key_path(arg, cfg))
    except SigningError as exc:
        if arg:
            raise SigningError(f"--key {exc}") from None
        if not cfg.agent.key:
            raise
        if os.environ.get(config_mod.ENV_KEY):
            raise ConfigError(f"{config_mod.ENV_KEY}: {exc}") from None
        raise ConfigError(str(exc), key="agent.key", file=cfg.path) from None


def _state_dir(cfg: config_mod.Config) -> Path:
    """The configured state directory, made if missing; one that cannot be made or written is a configuration
    error naming ``agent.state_dir`` (not an error of the command's output)."""
    from .configcheck import STATE_DIR

    _refuse_what_is_in_the_way(cfg, spools=False)
    state = Path(cfg.agent.state_dir)
    try:
        state.mkdir(parents=True, exist_ok=True)
        if not os.access(state, os.W_OK | os.X_OK):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
    except OSError as exc:
        raise ConfigError(f"{STATE_DIR.format(cfg.agent.state_dir)}: {exc.strerror or exc}", key="agent.state_dir",
                          file=cfg.path) from None
    return state


def _refuse_what_is_in_the_way(cfg: config_mod.Config, *, spools: bool) -> None:
    """Refuse the state directory (and each sink's spool) where something other than a directory is in the way,
    before anything is made, with the message of ``config check``: the same function looks."""
    from .configcheck import SPOOL, STATE_DIR, directory_problem

    wanted = [(cfg.agent.state_dir, "agent.state_dir", STATE_DIR)]
    if spools:
        wanted += [(ep.common.spool, ep.key if ep.key.startswith("--") else f"{ep.key.rpartition('.')[0]}.spool",
                    SPOOL) for ep in cfg.sinks if ep.common.spool]
    for path, key, what in wanted:
        if (reason := directory_problem(path, what)) is not None:
            raise ConfigError(reason, key=key, file=cfg.path)


def _refuse_blocked_sockets(cfg: config_mod.Config, from_file: int) -> None:
    """Refuse a listener whose socket file cannot be made (something other than a socket at its path, its
    directory missing or no directory), with the message of ``config check``: the same function looks. The first
    ``from_file`` listeners are the file's (``listeners[N].uri``), the others ``--listen``'s."""
    from .configcheck import socket_problem

    for i, opts in enumerate(cfg.listeners):
        if (reason := socket_problem(opts.uri)) is not None:
            if i < from_file:
                raise ConfigError(reason, key=f"listeners[{i}].uri", file=cfg.path)
            raise ConfigError(reason, key="--listen")


def _run_config(args: argparse.Namespace, *, starting: bool = False) -> config_mod.Config:
    """The file (or the default) with the command line's additions; read again on SIGHUP. ``starting``: the
    listeners are about to listen, and one whose socket file cannot be made is refused now (on a reload such a
    listener fails alone, and the rest of the configuration runs)."""
    cfg = load_config(args.config)
    from_file = len(cfg.listeners)
    if args.probes is not None:
        cfg = cfg.with_probes(args.probes)
    cfg = cfg.with_sinks(args.sink).with_listeners(args.listen)
    if not cfg.sinks:
        raise ConfigError("no sinks configured: add [[sinks]] to the config or pass --sink URI", key="sinks",
                          file=cfg.path)
    _refuse_what_is_in_the_way(cfg, spools=True)
    if starting:
        _refuse_blocked_sockets(cfg, from_file)
    return cfg


def _reload_config(args: argparse.Namespace, started: SigningKey, started_path: str) -> config_mod.Config:
    """What a reload switches to: refused (the running configuration kept) as ``run`` would refuse it, a host key
    file other than the one the agent started with too. The running agent keeps signing with the key it loaded
    (another key takes effect at the next start, which is said); the file it loaded it from having a problem
    now is only warned of."""
    cfg = _run_config(args)
    path = _key_path(args.key, cfg)
    try:
        key = host_key(args.key, cfg)
    except (SigningError, ConfigError) as exc:
        if os.path.realpath(path) != os.path.realpath(started_path):
            raise
        log.warning("reload: the host key file has a problem now (signing goes on with the key loaded at start; "
                    "the next start would refuse it): %s", exc)
    else:
        if key.keyid != started.keyid:
            log.warning("reload: the host key %s is another key (keyid %s) than the one signing (keyid %s), which "
                        "signs until the next restart", path, key.keyid[:16], started.keyid[:16])
    return _warn(cfg)


def _key_path(arg: str | None, cfg: config_mod.Config) -> str:
    return arg or cfg.agent.key or DEFAULT_KEY


def _warn(cfg: config_mod.Config) -> config_mod.Config:
    """Log what runs but does nothing, as `config check` warns of it (at start and on each reload)."""
    for what, reason in cfg.warnings():
        log.warning("%s: %s: %s", cfg.path or "configuration", what, reason)
    return cfg


def cmd_run(args: argparse.Namespace) -> int:
    # first: a SIGTERM while the rest is imported and built stops the agent once it is up, rather than ending it
    # by default with nothing said (--once has no signal handling to hand it to: there the default stays)
    ignore_until_handled(note_stops=not args.once)
    from .app import Agent
    from .pipeline.stats import sink_label
    from .status import StatusLine

    cfg = _run_config(args, starting=not args.once)
    # [agent] log_format and log_level, unless the command line said otherwise
    json_logs = (args.log_format or cfg.agent.log_format) == "json"
    setup_logging(args.log_format or cfg.agent.log_format, args.verbose, cfg.agent.log_level)
    _warn(cfg)
    key = host_key(args.key, cfg)
    _state_dir(cfg)
    agent = Agent(cfg, key, once=args.once,
                  reload_config=functools.partial(_reload_config, args, key, _key_path(args.key, cfg)))
    status = StatusLine(agent.stats, [(ep.uri, q) for ep, q in zip(cfg.sinks, agent.queues, strict=True)])
    if status.live and any(ep.scheme == "stdout" for ep in cfg.sinks) and same_terminal(sys.stdout, sys.stderr):
        status.live = False  # events on the terminal: a status line rewritten between them would garble them
    # said once every listener is listening (a listener that cannot listen ends the agent before it)
    agent.announce = functools.partial(status.startup, [pc.name for pc, _ in agent.probes],
                                       [sink_label(k) for k in agent.gen.sink_keys],
                                       [lo.uri for lo in cfg.listeners], key.keyid,
                                       as_log=json_logs)
    anyio.run(agent.run, None if args.once else status)
    if args.once and agent.undelivered:
        n = agent.undelivered
        what = (f"{n} event{'s' if n != 1 else ''} not delivered to every sink (counted for each sink that missed "
                "them; dropped, or not confirmed: see the log above)")
        if json_logs:
            log.error("run --once: %s", what)
        else:
            print(f"hoststamp run --once: {what}", file=sys.stderr)
        return EXIT_FAIL
    return EXIT_OK


def cmd_probe(args: argparse.Namespace) -> int:
    from .app import build_probe, host_id
    from .pipeline import SequenceStore, Stamper
    from .pipeline.runner import ProbeRunner
    from .pipeline.stats import ProbeStats

    cfg = load_config(args.config)
    try:
        pc = cfg.probe(args.name)
    except KeyError:
        known = ", ".join(p.name for p in cfg.probes)
        raise UsageError(f"hoststamp probe: unknown probe {args.name!r} (known: {known})") from None
    key = host_key(args.key, cfg)
    state = _state_dir(cfg)
    # the agent's own sequence when no agent holds it, so that numbers rise across runs and probes alike; while
    # one runs, numbers borrowed above its own (docs/operating.md)
    seqs = SequenceStore(state / "sequences.json")
    stamper = Stamper(key, host_id(cfg.agent.host_id), seqs)
    probe = build_probe(pc, state)

    failed: list[str] = []
    made: list[int] = []

    async def one() -> None:
        runner = ProbeRunner(probe, pc, _noop_submit, ProbeStats())
        try:
            readings = await runner.collect_once()
        finally:
            await probe.aclose()
        out = sys.stdout.buffer
        for r in readings:
            out.write(stamper.stamp_or_error(r)[0].body + b"\n")
        out.flush()
        made.append(len(readings))
        if readings and all(r.error for r in readings):  # nothing was read: printed, and a failure (exit 1)
            failed.extend(dict.fromkeys(r.error or "" for r in readings))

    try:
        anyio.run(one)
    finally:
        seqs.close()
    if failed:
        print(f"hoststamp probe {args.name}: nothing could be read: {'; '.join(failed)}", file=sys.stderr)
        return EXIT_FAIL
    if made == [0]:  # no failure: nothing to report here (no interface the link probe includes, say)
        print(f"hoststamp probe {args.name}: no readings (nothing here that it reports on: docs/probes.md)",
              file=sys.stderr)
    return EXIT_OK


async def _noop_submit(_readings: object) -> None:
    return None
