"""An agent in a guest signs its own ``hostid``, ``hostreceivedat`` and ``sequence``; the host's agent
overwrites them and keeps the guest's values, so that ``hoststamp verify`` checks both signatures on the
host's event (the issue: "so an auditor can check both")."""

from __future__ import annotations

from pathlib import Path

import orjson

from agent.model import Reading
from agent.pipeline import SequenceStore, Stamper
from agent.signing.event import sign_event
from agent.signing.keys import generate_keypair, load_signing_key
from tests.helpers import run_cli
from tests.ops.agentproc import AgentProcess


def test_the_guest_agents_signature_checks_out_on_the_host_agents_event(tmp_path: Path) -> None:
    guest_key = generate_keypair(tmp_path / "guest")
    generate_keypair(tmp_path / "keys")
    # what a hoststamp agent in the guest sends: its readings, stamped and signed by it
    guest = Stamper(guest_key, "guest-vm-7", SequenceStore(None))
    sent = [guest.stamp(Reading(probe="lve", subject=f"lve-{i}", output={"i": i})).body for i in range(3)]
    claimed = [orjson.loads(b) for b in sent]
    assert all("hostid" in orjson.loads(b)["signedextattrs"] for b in sent)
    sock, out = tmp_path / "rx.sock", tmp_path / "out.ndjson"
    (tmp_path / "c.toml").write_text(
        f'[agent]\nstate_dir = "{tmp_path / "state"}"\n'
        f'[[listeners]]\nuri = "unix:{sock}"\nguest_signatures = "require"\n'
        f'trusted_keys = ["{tmp_path / "guest" / "host.pub"}"]\n'
        f'[[sinks]]\nuri = "file:{out}"\n')
    with AgentProcess(tmp_path, tmp_path / "c.toml", run_args=("--probes", "none", "--key", "keys/host.key")) as agent:
        agent.wait_ready()
        res = run_cli(["send", "--to", f"unix:{sock}", "--timeout", "20"], cwd=tmp_path,
                      stdin=b"".join(b + b"\n" for b in sent))
        assert res.returncode == 0, res.stderr.decode()
        assert agent.stop() == 0
    events = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert len(events) == 3
    for ev, said in zip(events, claimed, strict=True):
        assert ev["hostid"] != "guest-vm-7" and ev["hostpeer"].startswith("unix:uid=")  # the host's, always
        assert (ev["guesthostid"], ev["guesthostreceivedat"], ev["guestsequence"]) == (
            said["hostid"], said["hostreceivedat"], said["sequence"])
        assert ev["guestdssematerial"] == said["dssematerial"]
    both = run_cli(["verify", "--pub", "keys/host.pub", "--guest-pub", "guest/host.pub", str(out)], cwd=tmp_path)
    report = both.stdout.decode() + both.stderr.decode()
    assert both.returncode == 0, report
    assert "not checked" not in report and "OK: 3 events, 3 verified, 0 problems" in report, report
    assert "guest signature verified with a --guest-pub key (3 events" in report, report
    # the guest's signature is really checked: the host's event with a guest value changed and then re-signed
    # by the host (a host that lies about what its guest said) fails it
    forged = dict(events[0])
    forged["guestsequence"] = str(int(forged["guestsequence"]) + 1)
    names = forged.pop("signedextattrs").split(",")
    forged.pop("dssematerial")
    sign_event(forged, load_signing_key(tmp_path / "keys" / "host.key"), names)
    (tmp_path / "forged.ndjson").write_bytes(orjson.dumps(forged) + b"\n")
    lied = run_cli(["verify", "--pub", "keys/host.pub", "--guest-pub", "guest/host.pub", "forged.ndjson"],
                   cwd=tmp_path)
    assert lied.returncode == 1 and b"guest signature" in lied.stdout + lied.stderr
