# -*- coding: utf-8 -*-
# Copyright: sr3.hpc_mirror contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""settle_conflicts.yml and failback.yml's refusal, run for real on local hosts
against a conflict area as failover.yml stage 2 leaves it (generation 4, the
mirror still running secondary_to_primary). The flow itself is in the failover
molecule scenario."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
OLD = 1_700_000_000


def conflict(area, rel, data, reason):
    path = area / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(str(path), (OLD, OLD))
    return {"path": rel, "kept": ".hpc_mirror/conflicts/4/" + rel, "reason": reason,
            "recovering": {"mtime_ns": OLD * 10 ** 9, "size": len(data)}, "incoming": None, "time": OLD + 10,
            "host": "hpc1n1"}


@pytest.fixture
def bed(tmp_path):
    primary = tmp_path / "primary"
    area = primary / ".hpc_mirror" / "conflicts" / "4"
    records = [conflict(area, "fo/f3", b"primary's f3", "changed in the outage window"),
               conflict(area, "fo/late/l1", b"late", "exists only on the recovering side"),
               conflict(area, "fo/ren-new.txt", b"renamed", "exists only on the recovering side")]
    (area / "conflicts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (primary / "fo").mkdir(exist_ok=True)
    (primary / "fo" / "f3").write_bytes(b"secondary's f3")
    record = tmp_path / "direction.json"
    record.write_text('{"direction": "secondary_to_primary", "generation": 4, "since": %d}\n' % OLD)
    host = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(json.dumps({"all": {
        "vars": {"hpc_mirror_direction_file": str(record), "hpc_mirror_primary_dir": str(primary),
                 "hpc_mirror_secondary_dir": str(tmp_path / "secondary"), "hpc_mirror_broker_host": "b",
                 "hpc_mirror_broker_user": "u", "hpc_mirror_broker_password": "p",
                 "hpc_mirror_sr3_command": os.path.join(os.path.dirname(sys.executable), "sr3")},
        "children": {"mirror_broker": {"hosts": {"b": host}}, "mirror_primary": {"hosts": {"p": host}},
                     "mirror_secondary": {"hosts": {"s": host}}}}}))

    def run(playbook, *extra):
        env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"),
                   HOME=str(tmp_path), PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
        result = subprocess.run(["ansible-playbook", "-i", str(inventory), playbook] + list(extra),
                                capture_output=True, text=True, env=env, cwd=ROOT, check=False)
        return result.returncode, " ".join((result.stdout + result.stderr).split())
    return primary, area, run


def test_failback_refuses_then_settle_keeps_and_discards(bed):
    primary, area, run = bed
    rc, out = run("failback.yml")
    assert rc != 0 and "3 conflicts of the outage window (generation 4" in out, out[-3000:]
    assert "settle_conflicts.yml" in out and "hpc_mirror_failback_ignore_conflicts=true" in out

    rc, out = run("settle_conflicts.yml")
    assert rc == 0, out[-3000:]
    assert "/.hpc_mirror/conflicts/*: 3 kept, 3 unsettled" in out
    assert "fo/f3: kept as .hpc_mirror/conflicts/4/fo/f3; changed in the outage window; recovering side" in out
    assert "other side none" in out

    paths = json.dumps({"hpc_mirror_conflict_paths": ["fo/f3", "fo/late/l1"]})
    rc, out = run("settle_conflicts.yml", "--check", "-e", "hpc_mirror_conflict_decision=keep", "-e", paths)
    assert rc == 0 and "fo/f3: to be put back at failback" in out and "check mode" in out, out[-3000:]
    assert not (area / "settled.jsonl").exists()

    rc, out = run("settle_conflicts.yml", "-e", "hpc_mirror_conflict_decision=keep", "-e", paths)
    assert rc == 0 and "fo/late/l1: to be put back at failback" in out, out[-3000:]
    # Still running secondary_to_primary: nothing goes back into the tree yet.
    assert (primary / "fo" / "f3").read_bytes() == b"secondary's f3" and (area / "fo" / "late" / "l1").exists()
    assert "2 to put back at failback" in out

    rc, out = run("settle_conflicts.yml", "-e", "hpc_mirror_conflict_decision=discard")
    assert rc == 0 and "fo/ren-new.txt: discarded" in out and " 0 unsettled" in out, out[-3000:]
    assert not (area / "fo" / "ren-new.txt").exists() and (area / "fo" / "f3").exists()
    settled = [json.loads(x) for x in (area / "settled.jsonl").read_text().splitlines()]
    assert sorted((s["path"], s["decision"]) for s in settled) == [
        ("fo/f3", "keep"), ("fo/late/l1", "keep"), ("fo/ren-new.txt", "discard")]

    rc, out = run("settle_conflicts.yml", "-e", "hpc_mirror_conflict_decision=discard")
    assert rc == 0 and "nothing to settle" in out, out[-3000:]
    assert len((area / "settled.jsonl").read_text().splitlines()) == 3

    rc, out = run("settle_conflicts.yml", "-e", "hpc_mirror_conflict_decision=maybe")
    assert rc != 0 and "hpc_mirror_conflict_decision must be keep or discard" in out
