"""The command line split by role (agent/cli.py: parsing, exit codes; agent/runcmds.py: the agent's verbs):
both entry points still run it, and the module stays within the house's soft cap."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.helpers import ROOT, run_cli

SOFT_CAP = 400


def test_the_cli_module_is_within_the_soft_cap() -> None:
    lines = (ROOT / "agent" / "cli.py").read_text().count("\n")
    assert lines <= SOFT_CAP, f"agent/cli.py has {lines} lines"


def test_both_entry_points_run_the_split_verbs(tmp_path: Path) -> None:
    script = Path(sys.executable).with_name("hoststamp")
    console = subprocess.run([str(script), "run", "--key", "nope.key", "--probes", "none", "--sink", "stdout:"],
                             cwd=tmp_path, capture_output=True, timeout=60, check=False)
    module = run_cli(["run", "--key", "nope.key", "--probes", "none", "--sink", "stdout:"], cwd=tmp_path)
    for res in (console, module):
        assert res.returncode == 2
        assert res.stderr.decode().startswith("hoststamp: key error: --key nope.key: cannot read private key")
