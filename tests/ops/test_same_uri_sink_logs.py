"""Two sinks with the same URI are told apart in the log as in /metrics and the status: the second (and any
later one) by its label, ``URI #2``."""

from __future__ import annotations

from pathlib import Path

from tests.helpers import run_cli
from tests.ops.agentproc import config_text


def test_the_startup_line_and_each_sinks_summary_name_it_by_its_label(tmp_path: Path) -> None:
    assert run_cli(["keys", "generate", "--dir", "keys"], cwd=tmp_path).returncode == 0
    out = f"file:{tmp_path / 'z.ndjson'}"
    (tmp_path / "c.toml").write_text(config_text([out, out], metrics=False))
    res = run_cli(["run", "--config", "c.toml", "--once"], cwd=tmp_path)
    assert res.returncode == 0, res.stderr.decode()
    log = res.stderr.decode()
    assert f"sinks={out},{out} #2 " in log, log
    assert f"sink {out}: sent=" in log and f"sink {out} #2: sent=" in log, log
