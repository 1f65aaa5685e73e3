"""The README's "Verifying an event by hand" recipe, run as written on events the agent makes."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from agent.model import Reading
from agent.pipeline import SequenceStore, Stamper
from agent.signing.event import sign_event
from agent.signing.keys import SigningKey

README = Path(__file__).resolve().parents[2] / "README.md"


def _digest_recipe() -> str:
    text = README.read_text()
    section = text[text.index("## Verifying an event by hand"):]
    block = re.search(r"```python\n(.*?)```", section, re.S)
    assert block is not None
    return "\n".join(line[3:] if line.startswith("   ") else line for line in block.group(1).splitlines())


def _events() -> list[dict[str, Any]]:
    host, guest = SigningKey.generate(), SigningKey.generate()
    st = Stamper(host, "host-1", SequenceStore(None))
    probe = st.stamp(Reading(probe="cgroup", subject="/system.slice/a", output={"n": 1, "f": 0.5}))
    plain = {"specversion": "1.0", "id": "g-1", "source": "guest://vm/app", "type": "t.v1", "data": {"x": [1, 2]},
             "tenant": "blue", "attempt": 3, "retried": True}
    signed = sign_event(dict(plain, id="g-2", time="2026-11-22T03:00:00.5+01:00"), guest, ["tenant", "attempt"])
    got = st.stamp_guests([plain, signed], "unix:uid=0,pid=1")
    return [orjson.loads(probe.body)] + [orjson.loads(e.body) for e in got]  # type: ignore[union-attr]


@pytest.mark.parametrize("index", [0, 1, 2])
def test_the_recipe_recomputes_the_signed_digest(tmp_path: Path, index: int) -> None:
    ev = _events()[index]
    (tmp_path / "one.json").write_text(json.dumps(ev))
    res = subprocess.run([sys.executable, "-c", _digest_recipe()], cwd=tmp_path, capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0, res.stderr
    env = json.loads(base64.b64decode(ev["dssematerial"]))
    assert res.stdout.strip() == env["payload"]
