# -*- coding: utf-8 -*-
# Copyright: sr3.hpc_mirror contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""audit.yml with audit_keep_extras (failover.yml stage 2's audit) on local hosts and
local trees, without repair: what exists only on the recovering primary and its
newer versions go to the conflict area, the conflicts are reported, the conflict
area and the copiers' temporary names stay out of the audit."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
OLD = 1_700_000_000


def write(path, data, mtime=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if mtime:
        os.utime(str(path), (mtime, mtime))


def test_stage_two_audit_keeps_the_window_aside(tmp_path):
    primary, secondary = tmp_path / "primary", tmp_path / "secondary"
    write(secondary / "fo" / "same", b"same", OLD)
    write(primary / "fo" / "same", b"same", OLD)
    write(secondary / "fo" / "f3", b"secondary", OLD)
    write(primary / "fo" / "f3", b"primary, newer", OLD + 60)
    write(primary / "fo" / "late" / "l1", b"only on the primary")
    write(primary / "fo" / ".hpc_mirror~0123456789ab", b"a copier's temporary file")
    write(primary / ".hpc_mirror" / "conflicts" / "1" / "old", b"an older generation's area")
    record = tmp_path / "direction.json"
    # A window that starts after everything here: the extras wait for removals first.
    record.write_text(json.dumps({"direction": "secondary_to_primary", "generation": 2, "since": time.time() + 3600}))
    host = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
    inventory = tmp_path / "hosts.json"
    inventory.write_text(json.dumps({"all": {
        "vars": {"hpc_mirror_direction_file": str(record), "hpc_mirror_primary_dir": str(primary),
                 "hpc_mirror_secondary_dir": str(secondary), "hpc_mirror_broker_host": "b",
                 "hpc_mirror_broker_user": "u", "hpc_mirror_broker_password": "p", "hpc_mirror_hold": 1},
        "children": {"mirror_broker": {"hosts": {"b": host}}, "mirror_primary": {"hosts": {"p": host}},
                     "mirror_secondary": {"hosts": {"s": host}}}}}))
    env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"),
               PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    result = subprocess.run(
        ["ansible-playbook", "-i", str(inventory), "playbooks/audit.yml", "-e", "audit_keep_extras=true",
         "-e", "audit_repair_interval=1", "-e", "audit_report_dir=%s" % (tmp_path / "report"),
         "-e", "audit_remote_dir=%s" % (tmp_path / "remote")],
        capture_output=True, text=True, env=env, cwd=ROOT, check=False)
    out = " ".join((result.stdout + result.stderr).split())
    # No repair here: f3, kept aside, is missing until a repair brings the secondary's.
    assert result.returncode != 0 and "The mirror differs: 1 differences" in out, out[-3000:]
    assert "missing: fo/f3" in out and "Wait for removals still on their way" in out
    area = primary / ".hpc_mirror" / "conflicts" / "2"
    assert (area / "fo" / "f3").read_bytes() == b"primary, newer"
    assert (area / "fo" / "late" / "l1").read_bytes() == b"only on the primary"
    assert not (primary / "fo" / "late").exists() and (primary / "fo" / ".hpc_mirror~0123456789ab").exists()
    records = dict((r["path"], r) for r in map(json.loads, (area / "conflicts.jsonl").read_text().splitlines()))
    assert records["fo/f3"]["reason"] == "newer than the version the other side has"
    assert records["fo/f3"]["incoming"] == {"mtime_ns": OLD * 10 ** 9, "size": 9}
    assert records["fo/late/l1"]["reason"] == "exists only on the recovering side"
    assert set(records) == {"fo/f3", "fo/late/l1"}
    report = (tmp_path / "report" / "mirror_secondary_to_primary_conflicts.txt").read_text()
    assert "/.hpc_mirror/conflicts/2: 2 kept, 2 unsettled" in report
    assert "fo/late/l1: kept as .hpc_mirror/conflicts/2/fo/late/l1; exists only on the recovering side" in report
