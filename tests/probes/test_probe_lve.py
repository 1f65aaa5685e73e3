"""The ``lve`` probe: the seed's five metrics, missing files, per-LVE readings with deltas and top-N."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from agent import schema
from agent.errors import ConfigError
from agent.model import Reading
from agent.probes import registry
from agent.probes.lve import LveOptions, LveProbe

HOSTS = Path(__file__).resolve().parents[1] / "fixtures" / "hosts"
CL8 = HOSTS / "cloudlinux-8" / "proc" / "lve" / "list"

ZEROS = {
    "net_acct_kernel_supported": 0,
    "net_acct_lves_total": 0,
    "net_acct_lves_with_traffic": 0,
    "net_acct_total_neto_bytes": 0,
    "net_acct_total_neti_bytes": 0,
}


def collect(probe: LveProbe) -> list[Reading]:
    return list(asyncio.run(probe.collect()))


def seed_part(r: Reading) -> dict[str, int]:
    return {k: v for k, v in r.output.items() if k.startswith("net_acct_")}


def test_registered_under_its_name() -> None:
    assert registry.get("lve") is LveProbe


def test_summary_from_fixture() -> None:
    (r,) = collect(LveProbe(LveOptions(path=str(CL8))))
    assert r.subject == "net_acct" and r.error is None and r.inputs == (str(CL8),)
    assert seed_part(r) == {
        "net_acct_kernel_supported": 1,
        "net_acct_lves_total": 4,
        "net_acct_lves_with_traffic": 3,
        "net_acct_total_neto_bytes": 176404973,
        "net_acct_total_neti_bytes": 1136414640,
    }
    assert r.output["format_version"] == 10 and r.output["rows_skipped"] == 3


def test_skip_user_ids() -> None:
    (r,) = collect(LveProbe(LveOptions(path=str(CL8), skip_user_ids=(1004, 1020))))
    assert r.output["net_acct_lves_total"] == 2 and r.output["net_acct_total_neti_bytes"] == 559251101


@pytest.mark.parametrize("scenario", ["cloudlinux-empty", "cloudlinux-legacy"])
def test_unsupported_is_zeros(scenario: str) -> None:
    (r,) = collect(LveProbe(LveOptions(path=str(HOSTS / scenario / "proc/lve/list"), per_lve=True)))
    assert r.error is None and seed_part(r) == ZEROS


def test_missing_file_is_zeros_and_unavailable(tmp_path: Path) -> None:
    opts = LveOptions(path=str(tmp_path / "list"))
    (r,) = collect(LveProbe(opts))
    assert seed_part(r) == ZEROS
    assert "does not exist" in (LveProbe.unavailable(opts) or "")
    assert LveProbe.unavailable(LveOptions(path=str(CL8))) is None


def test_a_relative_path_is_read_from_the_working_directory(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """As a relative cgroup root or mount table is (it was read from /, and a missing file reads as zeros)."""
    (tmp_path / "fx").mkdir()
    shutil.copy(CL8, tmp_path / "fx" / "list")
    monkeypatch.chdir(tmp_path)
    opts = LveOptions(path="fx/list")
    assert LveProbe.unavailable(opts) is None
    (r,) = collect(LveProbe(opts))
    assert r.output["net_acct_lves_total"] == 4 and r.inputs == ("fx/list",)


def test_per_lve_deltas_and_top_n(tmp_path: Path) -> None:
    path = tmp_path / "list"
    shutil.copy(CL8, path)
    probe = LveProbe(LveOptions(path=str(path), per_lve=True, top_n=2))
    first = collect(probe)
    # before any delta: ranked by cumulative traffic
    assert [r.subject for r in first[1:]] == ["lve/0,1004", "lve/0,1010"]
    assert first[1].output["deltas"] is None and first[1].output["rank"] == 1
    # LVE 1020 starts talking; the heavy ones stand still
    quiet = "\t1200" + "\t0" * 11 + "\n"
    talking = "\t1200" + "\t0" * 9 + "\t700\t300\n"
    text = path.read_text().replace(quiet, talking)
    assert text != path.read_text()
    path.write_text(text)
    second = collect(probe)
    top = second[1]
    assert top.subject == "lve/0,1020" and top.output["uid"] == 1020 and top.output["lvp"] == 0
    assert top.output["deltas"]["neto_bytes"] == 700 and top.output["deltas"]["neti_bytes"] == 300
    assert top.output["neto_bytes"] == 700
    assert second[0].output["net_acct_lves_with_traffic"] == 4
    assert len(second) == 3


def test_per_lve_all_when_top_n_is_zero() -> None:
    readings = collect(LveProbe(LveOptions(path=str(CL8), per_lve=True)))
    assert sorted(r.subject for r in readings[1:]) == ["lve/0,1004", "lve/0,1010", "lve/0,1020", "lve/1004,2001"]


def test_options_from_toml_table() -> None:
    o = schema.build(LveOptions, {"path": "/x", "skip_user_ids": [5, 6], "per_lve": True, "top_n": 3},
                     prefix="probes.lve", file="t.toml")
    assert o.skip_user_ids == (5, 6) and o.top_n == 3
    with pytest.raises(ConfigError, match="top_n"):
        schema.build(LveOptions, {"top_n": -1}, prefix="probes.lve", file="t.toml")
