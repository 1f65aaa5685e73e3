"""Shared fixtures: a host key on disk, the anyio backend."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.signing.keys import SigningKey, generate_keypair


@pytest.fixture
def keydir(tmp_path: Path) -> Path:
    d = tmp_path / "keys"
    generate_keypair(d)
    return d


@pytest.fixture
def host_key(keydir: Path) -> SigningKey:
    from agent.signing.keys import load_signing_key

    return load_signing_key(keydir / "host.key")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
