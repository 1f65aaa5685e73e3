"""Fixtures for archive tests: one host key per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.signing.keys import SigningKey, VerifyKey


@pytest.fixture(scope="session")
def key() -> SigningKey:
    return SigningKey.generate()


@pytest.fixture(scope="session")
def keys(key: SigningKey) -> dict[str, VerifyKey]:
    vk = key.verify_key()
    return {vk.keyid: vk}


@pytest.fixture
def archive_dir(tmp_path: Path) -> Path:
    return tmp_path / "archive"
