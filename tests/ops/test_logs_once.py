"""OncePerKey: the first problem per peer is logged, the rest counted, and memory stays bounded."""

from __future__ import annotations

import logging

import pytest

from agent.logs import JsonFormatter, OncePerKey


def test_first_occurrence_per_key_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("test.once")
    once = OncePerKey(log, max_keys=8)
    with caplog.at_level(logging.WARNING, logger="test.once"):
        assert once(("10.0.0.1", "json"), "bad frame from %s", "10.0.0.1")
        assert not once(("10.0.0.1", "json"), "bad frame from %s", "10.0.0.1")
        assert once(("10.0.0.1", "depth"), "too deep from %s", "10.0.0.1")
        assert once(("10.0.0.2", "json"), "bad frame from %s", "10.0.0.2")
    assert [r.getMessage().split(" (")[0] for r in caplog.records] == [
        "bad frame from 10.0.0.1", "too deep from 10.0.0.1", "bad frame from 10.0.0.2"]
    assert once.count(("10.0.0.1", "json")) == 2


def test_memory_is_bounded_and_least_recent_forgotten() -> None:
    once = OncePerKey(logging.getLogger("test.once"), max_keys=3)
    for peer in range(1000):
        once.first(peer)
    assert len(once) == 3
    assert once.count(999) == 1 and once.count(0) == 0
    # a key seen again moves to the back: it survives the next evictions
    once.first(997)
    once.first(1000)
    once.first(1001)
    assert once.count(997) == 2
    assert once.first(998)  # forgotten, so it counts as new again


def test_max_keys_must_be_positive() -> None:
    with pytest.raises(ValueError):
        OncePerKey(logging.getLogger("x"), max_keys=0)


def test_json_log_lines_carry_the_message() -> None:
    rec = logging.LogRecord("hoststamp", logging.WARNING, __file__, 1, "peer %s refused", ("vsock:7",), None)
    line = JsonFormatter().format(rec)
    import orjson

    doc = orjson.loads(line)
    assert doc["level"] == "warning" and doc["msg"] == "peer vsock:7 refused" and doc["ts"].endswith("Z")


def test_every_module_logger_follows_the_configured_format(capsys: pytest.CaptureFixture[str]) -> None:
    import orjson

    from agent.logs import configure

    names = ("hoststamp", "agent")
    saved = {n: (logging.getLogger(n).handlers[:], logging.getLogger(n).level, logging.getLogger(n).propagate)
             for n in names}
    try:
        configure("json", logging.INFO)
        logging.getLogger("agent.transport.sender").warning("unix:/x: cannot connect")
        logging.getLogger("hoststamp.sink").warning("sink down")
    finally:
        for n, (handlers, level, propagate) in saved.items():
            lg = logging.getLogger(n)
            lg.handlers[:], lg.level, lg.propagate = handlers, level, propagate
    lines = capsys.readouterr().err.splitlines()
    docs = [orjson.loads(line) for line in lines]
    assert [(d["logger"], d["msg"]) for d in docs] == [
        ("agent.transport.sender", "unix:/x: cannot connect"),
        ("hoststamp.sink", "sink down"),
    ]
