"""``hoststamp verify DIR``, ``prove`` and ``verify --proof`` end to end, through the real CLI."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from agent.archive import layout
from agent.signing.keys import SigningKey, generate_keypair
from tests.archive.archive_helpers import events, write_archive
from tests.helpers import run_cli


def _three_segments(tmp_path: Path) -> tuple[SigningKey, str, Path, list[bytes]]:
    """A key, its public key's path, and an archive of 30 events in three segments."""
    key = generate_keypair(tmp_path / "keys")
    root = tmp_path / "archive"
    evs = events(key, 1, 30)
    write_archive(root, key, [evs[:10], evs[10:20], evs[20:]], segment_max_bytes=9000)
    return key, str(tmp_path / "keys" / "host.pub"), root, evs


def test_verify_prove_and_check_a_proof(tmp_path: Path) -> None:
    _key, pub, root, _evs = _three_segments(tmp_path)

    ok = run_cli(["verify", "--pub", pub, str(root)], cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.decode().strip().splitlines()[-1].startswith("OK: 30 events")

    as_json = run_cli(["verify", "--json", "--pub", pub, str(root)], cwd=tmp_path)
    doc = orjson.loads(as_json.stdout)
    assert as_json.returncode == 0 and doc["ok"] is True and doc["summary"]["sealed"] == 30

    proof = tmp_path / "p.json"
    made = run_cli(["prove", str(root), "ev-cgroup-12", "-o", str(proof)], cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    checked = run_cli(["verify", "--pub", pub, "--proof", str(proof)], cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout
    bundle = orjson.loads(proof.read_bytes())
    bundle["index"] += 1
    proof.write_bytes(orjson.dumps(bundle))
    assert run_cli(["verify", "--pub", pub, "--proof", str(proof)], cwd=tmp_path).returncode == 1

    missing = run_cli(["prove", str(root), "no-such-id"], cwd=tmp_path)
    assert missing.returncode == 1 and b"no sealed event" in missing.stderr

    seg = layout.events_path(root, 2)
    seg.write_bytes(b"\n".join(seg.read_bytes().splitlines()[::-1]) + b"\n")
    bad = run_cli(["verify", "--pub", pub, str(root)], cwd=tmp_path)
    out = bad.stdout.decode()
    assert bad.returncode == 1 and "root-mismatch" in out and out.strip().splitlines()[-1].startswith("FAILED")


def test_verify_json_of_a_file_and_of_an_archive_share_their_common_members(tmp_path: Path) -> None:
    """An auditor's script reads ``kind``, ``path``, ``ok``, ``events``, ``verified`` and each problem's
    ``where`` and ``message`` the same way whatever it verified."""
    _key, pub, root, evs = _three_segments(tmp_path)
    (tmp_path / "ev.ndjson").write_bytes(b"\n".join(evs) + b"\n{not json\n")
    seg = layout.events_path(root, 2)
    seg.write_bytes(b"\n".join(seg.read_bytes().splitlines()[::-1]) + b"\n")
    docs = {}
    for kind, path in (("file", str(tmp_path / "ev.ndjson")), ("archive", str(root))):
        res = run_cli(["verify", "--json", "--pub", pub, path], cwd=tmp_path)
        assert res.returncode == 1, res.stderr
        doc = docs[kind] = orjson.loads(res.stdout)
        assert (doc["kind"], doc["path"], doc["ok"]) == (kind, path, False)
        assert {"events", "verified", "problems", "notes", "omitted"} <= set(doc)
        assert doc["problems"] and all(type(p["where"]) is str and type(p["message"]) is str for p in doc["problems"])
    assert (docs["file"]["events"], docs["file"]["verified"]) == (31, 30)  # every line read counts
    assert (docs["archive"]["events"], docs["archive"]["verified"]) == (30, 30)
    assert any("not JSON" in p["message"] for p in docs["file"]["problems"])


def test_prove_a_copy_of_an_event_archived_twice(tmp_path: Path) -> None:
    from tests.archive.archive_helpers import make_event

    key = generate_keypair(tmp_path / "keys")
    root = tmp_path / "archive"
    write_archive(root, key, [[make_event(key, 7), make_event(key, 8)], [make_event(key, 7, pad=1)]])
    first = run_cli(["prove", str(root), "ev-cgroup-7"], cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert orjson.loads(first.stdout)["index"] == 0
    assert b"2 copies of ev-cgroup-7 are archived (leaves 0, 2); this proves leaf 0" in first.stderr
    second = run_cli(["prove", str(root), "ev-cgroup-7", "--index", "2"], cwd=tmp_path)
    assert second.returncode == 0 and orjson.loads(second.stdout)["index"] == 2
    wrong = run_cli(["prove", str(root), "ev-cgroup-7", "--index", "1"], cwd=tmp_path)
    assert wrong.returncode == 1 and b"leaf 1 is not event" in wrong.stderr
    bad = run_cli(["prove", str(root), "ev-cgroup-7", "--index", "-1"], cwd=tmp_path)
    assert bad.returncode == 2 and b"leaf index" in bad.stderr


def test_prove_refuses_what_it_cannot_prove_and_bad_paths_with_a_message(tmp_path: Path) -> None:
    key, pub, root, evs = _three_segments(tmp_path)
    (tmp_path / "file").write_text("x")
    for args, words in (([str(tmp_path / "nope"), "ev-cgroup-3"], b"no such directory"),
                        ([str(tmp_path / "file"), "ev-cgroup-3"], b"not a directory"),
                        ([str(root), "ev-cgroup-3", "-o", str(tmp_path / "no" / "dir" / "p.json")],
                         b"No such file or directory")):
        out = run_cli(["prove", *args], cwd=tmp_path)
        assert out.returncode == 2 and words in out.stderr and b"Traceback" not in out.stderr, out.stderr
    # an archive changed after it was sealed: no proof of it can verify, so none is written
    seg = layout.events_path(root, 2)
    lines = seg.read_bytes().splitlines(keepends=True)
    lines[1] = lines[1].replace(b'"specversion"', b'"evil":"x","specversion"', 1)
    seg.write_bytes(b"".join(lines))
    made = run_cli(["prove", str(root), "ev-cgroup-3", "-o", str(tmp_path / "p.json")], cwd=tmp_path)
    assert made.returncode == 1 and b"do not match the checkpoint" in made.stderr
    assert not (tmp_path / "p.json").exists()
    # and a bundle is checked alone: a PATH beside it is a usage error, not silently skipped
    ok_root = tmp_path / "ok"
    write_archive(ok_root, key, [evs[:10]])
    assert run_cli(["prove", str(ok_root), "ev-cgroup-3", "-o", str(tmp_path / "p.json")],
                   cwd=tmp_path).returncode == 0
    both = run_cli(["verify", "--pub", pub, "--proof", str(tmp_path / "p.json"), str(seg)], cwd=tmp_path)
    assert both.returncode == 2 and b"either" in both.stderr


def test_verify_reads_gzip_on_stdin_through_as_it_does_a_gz_file(tmp_path: Path) -> None:
    """``gzip -c events.ndjson | hoststamp verify -``: stdin is told to be gzip by its magic bytes."""
    import gzip

    _key, pub, _root, evs = _three_segments(tmp_path)
    packed = gzip.compress(b"\n".join(evs) + b"\n")
    res = run_cli(["verify", "--pub", pub, "-"], cwd=tmp_path, stdin=packed)
    assert res.returncode == 0 and res.stdout.decode().splitlines()[-1].startswith("OK: 30 events"), (
        res.stdout + res.stderr)
    res = run_cli(["verify", "--pub", pub, "-"], cwd=tmp_path, stdin=packed[: len(packed) // 2])
    assert res.returncode == 1 and b"not readable as gzip after what was read" in res.stdout, res.stdout
    plain = run_cli(["verify", "--pub", pub, "-"], cwd=tmp_path, stdin=b"\n".join(evs) + b"\n")
    assert plain.returncode == 0, plain.stdout


def test_stdin_handed_out_a_byte_at_a_time_is_still_told_gzip() -> None:
    import gzip
    import io

    from agent.auditcmds import _Prefixed

    class OneByte(io.RawIOBase):
        def __init__(self, data: bytes) -> None:
            self.data = data

        def readable(self) -> bool:
            return True

        def readinto(self, buffer: Any) -> int:
            if not self.data:
                return 0
            buffer[0], self.data = self.data[0], self.data[1:]
            return 1

    packed = gzip.compress(b"line\n")
    stream = io.BufferedReader(_Prefixed(io.BufferedReader(OneByte(packed), buffer_size=1)))
    assert stream.peek(2)[:2] == b"\x1f\x8b"
    assert stream.read() == packed


def test_prove_names_a_segment_of_another_archive_copied_in(tmp_path: Path) -> None:
    import shutil

    key, _pub, root, evs = _three_segments(tmp_path)
    other = tmp_path / "other"
    write_archive(other, key, [evs[:5]])
    n = max(layout.scan(root).numbers()) + 1  # put in as the next segment
    for src, dst in ((layout.log_path(other, 1), layout.log_path(root, n)),
                     (layout.events_path(other, 1), layout.events_path(root, n))):
        shutil.copy(src, dst)
    out = run_cli(["prove", str(root), "ev-cgroup-12"], cwd=tmp_path)
    assert out.returncode == 1 and b"Traceback" not in out.stderr, out.stderr
    assert f"segment {layout.seg_stem(n)} belongs to another archive".encode() in out.stderr
    assert b"run verify" in out.stderr
    assert out.stdout == b""
