"""The package's public names: exactly what __all__ says, all importable."""

from __future__ import annotations

import agent
from agent import errors


def test_all_names_exist() -> None:
    for name in agent.__all__:
        assert hasattr(agent, name), name


def test_all_is_unique_and_public_names_are_listed() -> None:
    assert len(set(agent.__all__)) == len(agent.__all__)
    exported = {n for n in vars(agent) if not n.startswith("_") and not isinstance(getattr(agent, n), type(agent))}
    assert exported <= set(agent.__all__)


def test_every_error_derives_from_the_root() -> None:
    for name in errors.__all__:
        cls = getattr(errors, name)
        assert issubclass(cls, errors.AgentError)
    assert issubclass(errors.ParseError, errors.ProbeError)
    assert issubclass(errors.FramingError, errors.TransportError)
    assert issubclass(errors.VerifyError, errors.SigningError)


def test_config_error_names_file_and_key() -> None:
    e = errors.ConfigError("unknown key", key="probes.x", file="/etc/h.toml")
    assert str(e) == "/etc/h.toml: probes.x: unknown key"
