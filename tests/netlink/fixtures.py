"""Captured kernel replies under ``tests/fixtures/netlink/`` and the facts recorded with them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "netlink"


def fixture(name: str) -> tuple[bytes, dict[str, Any]]:
    """``(bytes of NAME.bin, facts of NAME.json)``."""
    return (FIX / f"{name}.bin").read_bytes(), json.loads((FIX / f"{name}.json").read_text())
