"""Audit and repair for real on the single-host mirror: seed differences on the
destination, the audit finds exactly them, the repair re-posts through the broker
and the copiers fix them, the re-audit finds nothing. And the reconcile crontab."""

import json
import os
import shutil
import subprocess
import time

import pytest

INVENTORY = os.path.dirname(os.environ["MOLECULE_INVENTORY_FILE"])
testinfra_hosts = ["broker-local"]

USER = "opsmtest"
PRIMARY = "/var/tmp/hpc_mirror_molecule/primary"
SECONDARY = "/var/tmp/hpc_mirror_molecule/secondary"
FLOW = "mirror_primary_to_secondary"
REPORT = os.path.expanduser("~/.cache/hpc_mirror/audit/%s_differences.jsonl" % FLOW)
BASE = "audit_test"


def as_user(host, script):
    result = host.run("runuser -u %s -- bash -c %s", USER, script)
    assert result.rc == 0, result.stderr
    return result


def playbook(name, *extra):
    return subprocess.run(["ansible-playbook", "-i", INVENTORY, "sr3.hpc_mirror." + name] + list(extra),
                          capture_output=True, text=True, check=False, env=dict(os.environ))


def reported():
    """(path, category) of every difference of the last audit."""
    with open(REPORT, "rb") as fh:
        return sorted((d["path"], d["category"]) for d in map(json.loads, fh))


def wait_for(host, path, timeout=60):
    deadline = time.time() + timeout
    while not host.file(path).exists:
        assert time.time() < deadline, "%s never arrived" % path
        time.sleep(1)


def test_audit_finds_exactly_the_seeded_differences_and_repair_converges(host):
    # Files of our own, mirrored by the flow first (the hold is 3 s).
    as_user(host, "mkdir -p {p}/{b}/sub && echo one > {p}/{b}/sub/gone.txt && "
                  "echo 'two two' > {p}/{b}/changed.txt && echo keep > {p}/{b}/keep.txt".format(p=PRIMARY, b=BASE))
    for name in ("sub/gone.txt", "changed.txt", "keep.txt"):
        wait_for(host, "%s/%s/%s" % (SECONDARY, BASE, name))
    time.sleep(5)  # let the copies finish their metadata
    result = playbook("audit")
    assert result.returncode == 0, result.stdout[-3000:]

    # Seed: a missing file, a content difference (same size) and an extra file on the destination.
    as_user(host, "rm {s}/{b}/sub/gone.txt && "
                  "touch -r {s}/{b}/changed.txt /tmp/{b}.ref && printf 'TWO TWO\\n' > {s}/{b}/changed.txt && "
                  "touch -r /tmp/{b}.ref {s}/{b}/changed.txt && rm /tmp/{b}.ref && "
                  "echo stray > {s}/{b}/extra.txt".format(s=SECONDARY, b=BASE))
    result = playbook("audit")
    assert result.returncode != 0
    assert "The mirror differs: 3 differences" in result.stdout + result.stderr
    assert reported() == [(BASE + "/changed.txt", "content"), (BASE + "/extra.txt", "extra"),
                          (BASE + "/sub/gone.txt", "missing")]

    # Repair without delete: the missing and changed files come back through the flow, the extra stays.
    result = playbook("audit", "-e", "audit_repair=true", "-e", "audit_repair_interval=3",
                      "-e", "audit_repair_timeout=90", "-e", "audit_max_differences=1")
    assert result.returncode == 0, result.stdout[-4000:]
    assert "repair: 2 paths posted again" in result.stdout
    assert "2 paths converged, 0 still to repair (converged)" in result.stdout
    assert reported() == [(BASE + "/extra.txt", "extra")]
    assert host.file("%s/%s/changed.txt" % (SECONDARY, BASE)).content_string == "two two\n"
    assert host.file("%s/%s/sub/gone.txt" % (SECONDARY, BASE)).content_string == "one\n"
    assert host.file("%s/%s/extra.txt" % (SECONDARY, BASE)).exists

    # With audit_repair_delete the extra goes too; then the audit is clean.
    result = playbook("audit", "-e", "audit_repair=true", "-e", "audit_repair_delete=true",
                      "-e", "audit_repair_interval=3", "-e", "audit_repair_timeout=60")
    assert result.returncode == 0, result.stdout[-4000:]
    assert "1 paths converged, 0 still to repair (converged)" in result.stdout
    assert not host.file("%s/%s/extra.txt" % (SECONDARY, BASE)).exists
    result = playbook("audit", "-e", "audit_mode=metadata")
    assert result.returncode == 0, result.stdout[-3000:]
    assert "The mirror matches: 0 differences" in result.stdout
    as_user(host, "rm -r %s/%s" % (PRIMARY, BASE))


@pytest.fixture(scope="module")
def crontab():
    """The cron module needs the crontab command (Debian package cron; its daemon is not started)."""
    if shutil.which("crontab") is None:
        subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", "cron"], check=True,
                       env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"), capture_output=True)
    return shutil.which("crontab")


def test_reconcile_crontab_entry(host, crontab):
    assert crontab
    result = playbook("reconcile", "-e", "reconcile_inventory=%s" % os.path.abspath(INVENTORY))
    assert result.returncode == 0, result.stdout[-3000:]
    crontab = host.check_output("crontab -l")
    assert "#Ansible: hpc_mirror reconcile primary_to_secondary" in crontab
    line = [entry for entry in crontab.splitlines() if "sr3.hpc_mirror.audit" in entry][0]
    assert line.startswith("17 * * * * flock -n ")
    assert "-e audit_mode=metadata -e audit_repair=true -e audit_repair_delete=false" in line
    # the job as cron would run it (cron's minimal PATH aside) works: a metadata audit + repair
    job = line.split(None, 5)[5]
    run = subprocess.run(["bash", "-c", job], capture_output=True, text=True, check=False, cwd=os.environ["HOME"],
                         env={"PATH": "/usr/bin:/bin", "HOME": os.environ["HOME"]})
    assert run.returncode == 0, run.stderr
    log = host.file(os.path.expanduser("~/.cache/hpc_mirror/reconcile_primary_to_secondary.log")).content_string
    assert "The mirror matches: 0 differences" in log
    result = playbook("reconcile", "-e", "reconcile_state=absent")
    assert result.returncode == 0, result.stdout[-3000:]
    assert "hpc_mirror reconcile" not in host.run("crontab -l").stdout
