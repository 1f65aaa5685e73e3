"""``/proc/lve/list`` parsing and the original collector's net-accounting semantics."""

from __future__ import annotations

from pathlib import Path

from agent.hostfs import HostFS, net_acct, parse_lve_list
from agent.hostfs.lve import DEFAULT_LVE

HOSTS = Path(__file__).resolve().parents[1] / "fixtures" / "hosts"


def table(scenario: str) -> str:
    return HostFS(HOSTS / scenario).read_text("/proc/lve/list")


def test_v10_tab_separated_with_blank_cell() -> None:
    t = parse_lve_list(table("cloudlinux-8"))
    assert t.version == 10 and t.has_net and t.columns[0] == "LVE"
    ids = [(r.lvp, r.uid) for r in t.rows]
    assert ids == [(0, 0), (0, DEFAULT_LVE), (0, 1004), (0, 1010), (0, 1020), (1004, 2001)]
    root = t.rows[0]
    assert root.values["lCPU"] == 0 and root.values["lCPUW"] == 100  # blank cell kept its column
    assert t.rows[2].values["CPU"] == 59560034260019
    assert t.skipped == 3  # short row, bad id, non-numeric NETO


def test_v10_net_acct_excludes_root_default_and_skipped_users() -> None:
    t = parse_lve_list(table("cloudlinux-8"))
    assert net_acct(t).as_output() == {
        "net_acct_kernel_supported": 1,
        "net_acct_lves_total": 4,
        "net_acct_lves_with_traffic": 3,
        "net_acct_total_neto_bytes": 108667620 + 67733257 + 4096,
        "net_acct_total_neti_bytes": 577163539 + 559251101,
    }
    skipped = net_acct(t, skip_user_ids={1010, 2001}).as_output()
    assert skipped["net_acct_lves_total"] == 2 and skipped["net_acct_lves_with_traffic"] == 1
    assert skipped["net_acct_total_neto_bytes"] == 108667620


def test_header_without_version_and_bare_uids() -> None:
    t = parse_lve_list(table("cloudlinux-noversion"))
    assert t.version is None and [r.lvp for r in t.rows] == [0] * 5
    out = net_acct(t).as_output()
    assert out["net_acct_lves_total"] == 3 and out["net_acct_lves_with_traffic"] == 2
    assert (out["net_acct_total_neto_bytes"], out["net_acct_total_neti_bytes"]) == (2048, 1536)


def test_without_net_columns_is_unsupported_and_zero() -> None:
    t = parse_lve_list(table("cloudlinux-legacy"))
    assert t.version == 6 and len(t.rows) == 3 and not t.has_net
    assert set(net_acct(t).as_output().values()) == {0}


def test_empty_file_and_headerless_text() -> None:
    assert set(net_acct(parse_lve_list(table("cloudlinux-empty"))).as_output().values()) == {0}
    t = parse_lve_list("10:FOO\tNETO\tNETI\n0,1\t5\t5\n")  # no LVE column: nothing to key on
    assert t.rows == () and t.skipped == 1
    assert net_acct(t).as_output()["net_acct_kernel_supported"] == 1
    assert net_acct(t).as_output()["net_acct_lves_total"] == 0


def test_only_plain_decimal_cells_count() -> None:
    head = "10:LVE\tEP\tNETO\tNETI\n"
    good = "1004\t1\t100\t200\n"
    bad = ["1005\t1\t-5\t0\n", "1006\t1\t+7\t0\n", "1007\t1\t1_000\t0\n", "1008\t1\t\u0663\t0\n", "-1009\t1\t5\t0\n",
           "+1010\t1\t5\t0\n", "1,-1011\t1\t5\t0\n"]
    t = parse_lve_list(head + good + "".join(bad))
    assert [(r.uid, r.values["NETO"]) for r in t.rows] == [(1004, 100)]
    assert t.skipped == len(bad)
    assert net_acct(t).as_output()["net_acct_total_neto_bytes"] == 100


def test_an_lve_listed_twice_counts_once() -> None:
    t = parse_lve_list("10:LVE\tEP\tNETO\tNETI\n1004\t1\t100\t200\n1004\t1\t999\t999\n0,1004\t1\t5\t5\n2001\t1\t1\t1\n")
    assert [(r.lvp, r.uid, r.values["NETO"]) for r in t.rows] == [(0, 1004, 100), (0, 2001, 1)]
    assert t.skipped == 2


def test_a_counter_of_more_than_1000_digits_skips_its_row() -> None:
    """As a cgroup file's counter: 1000 digits are read, more make the row one that does not parse."""
    head = "8:LVE\tEP\tNETO\tNETI\n"
    ok = parse_lve_list(head + f"1004\t0\t{'9' * 1000}\t1\n1010\t0\t5\t1\n")
    assert ok.skipped == 0 and ok.rows[0].values["NETO"] == int("9" * 1000)
    over = parse_lve_list(head + f"1004\t0\t{'9' * 1001}\t1\n1010\t0\t5\t1\n")
    assert over.skipped == 1 and [(r.uid, r.values["NETO"]) for r in over.rows] == [(1010, 5)]
